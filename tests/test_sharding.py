"""Sharded data preparation (corpus -> examples): the same documents and train/validation split whatever the
shard count, deterministic pretraining on sharded examples, and a shard job's memory bounded by its shard."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import VOCAB, write_tokenizer
from test_pretrain import run_pretrain, weights

from sparsebert.data import corpus, pretraining

N_DOCUMENTS = 40
SPECIAL = {VOCAB.index(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")}


def one_word_documents(path):
    """Document d is made of the word w<d> only (sentences of 3-9 words, one per line): any token of an
    example says which document it came from."""
    rng = np.random.default_rng(0)
    documents = ["\n".join(" ".join([f"w{d}"] * int(rng.integers(3, 10))) for _ in range(int(rng.integers(3, 7))))
                 for d in range(N_DOCUMENTS)]
    path.write_text("\n\n".join(documents) + "\n")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """{shards: examples directory} for 1 and 4 shards of the same corpus, and the tokenizer."""
    root = tmp_path_factory.mktemp("sharded")
    one_word_documents(root / "t.txt")
    tokenizer = write_tokenizer(root / "tokenizer")
    out = {}
    for shards in (1, 4):
        corpus.build_corpus({"source": "text_files", "text_files": {"glob": str(root / "t.txt")}, "shards": shards,
                             "num_proc": 1}, root / f"corpus{shards}")
        pretraining.build_examples(root / f"corpus{shards}", tokenizer, {
            "max_seq_length": 32, "max_predictions_per_seq": 5, "dupe_factor": 5, "validation_fraction": 0.25,
            "num_proc": 1}, root / f"examples{shards}")
        out[shards] = root / f"examples{shards}"
    return out, tokenizer


def documents_seen(examples) -> set[int]:
    """The documents whose words fill the unmasked positions of these examples (masked positions may hold a
    random replacement token, so they say nothing)."""
    batch = examples[:]
    ids = batch["input_ids"].clone()
    rows = torch.arange(len(ids))[:, None].expand_as(batch["masked_lm_positions"])
    ids[rows[batch["masked_lm_ids"] != -100], batch["masked_lm_positions"][batch["masked_lm_ids"] != -100]] = 0
    return {int(VOCAB[i][1:]) for i in ids.unique().tolist() if i not in SPECIAL}


def test_one_or_four_shards_give_the_same_documents_and_the_same_disjoint_split(sharded):
    dirs, _ = sharded
    seen = {}
    for shards, path in dirs.items():
        data = pretraining.load_examples(path)
        stats = json.loads((path / "stats.json").read_text())
        assert len(stats["shards"]) == shards
        seen[shards] = {split: documents_seen(data[split]) for split in ("train", "validation")}
        assert stats["train"]["documents"] == len(seen[shards]["train"])
        assert stats["validation"]["documents"] == len(seen[shards]["validation"])
    for shards in (1, 4):
        assert not seen[shards]["train"] & seen[shards]["validation"], f"{shards} shard(s): a document in both splits"
        assert seen[shards]["train"] | seen[shards]["validation"] == set(range(N_DOCUMENTS))
        assert len(seen[shards]["validation"]) >= 4  # a quarter of 40 documents, give or take the hash
    assert seen[1] == seen[4]


@pytest.mark.slow
@pytest.mark.parametrize("shards", [1, 4])
def test_pretraining_on_sharded_examples_is_deterministic(sharded, tmp_path, shards):
    dirs, tokenizer = sharded
    recipe = {"max_steps": 6, "batch_size": 8, "log_every": 2, "checkpoint_every": 100}
    for run in ("a", "b"):
        run_pretrain((dirs[shards], tokenizer), tmp_path / run, recipe=recipe)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[json.loads(line)["loss"] for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
              for run in ("a", "b")]
    assert losses[0] == losses[1] and len(losses[0]) == 3


# ------------------------------------------------------------------------------------------ bounded memory


# The child reports its own high-water mark (VmHWM, per address space, so it starts afresh at exec): the
# ru_maxrss that wait4 gives would include the pytest process it was forked from.
REPORT_PEAK = ("import atexit, runpy, sys\n"
               "atexit.register(lambda: print('VmHWM', next(l.split()[1] for l in open('/proc/self/status')"
               " if l.startswith('VmHWM')), file=sys.stderr))\n"
               "sys.argv[0] = 'sparsebert'\n"
               "runpy.run_module('sparsebert', run_name='__main__')")


def peak_rss_mib(*args: str) -> float:
    """Run `python -m sparsebert ...` and return its peak resident memory in MiB."""
    p = subprocess.run([sys.executable, "-c", REPORT_PEAK, *args], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    return int(p.stderr.rsplit("VmHWM", 1)[1].split()[0]) / 1024


def write_corpus(path, copies: int):
    """`copies` x 1500 distinct documents of about 1,000 words, in one file (so every corpus shard job reads
    the whole file and keeps its own documents: the hard case for memory)."""
    rng = np.random.default_rng(copies)
    words = np.array([f"w{i}" for i in range(59)])
    with open(path, "w") as f:
        for _ in range(copies * 1500):
            f.write("\n".join(" ".join(rng.choice(words, 25)) for _ in range(40)) + "\n\n")


@pytest.mark.slow
def test_a_shard_jobs_peak_memory_follows_its_shard_not_the_corpus(tmp_path):
    """1.5M and 6M words with 2 and 8 shards: every shard holds about 0.75M words. Measured on 2026-11-28:
    corpus jobs 28.7 and 28.7 MiB, examples jobs 224 and 228-230 MiB (most of it the tokenizer's imports). The
    two ways a job could hold the corpus fail here: a corpus job reading its file whole (37.7 -> 65.2 MiB), an
    examples job tokenizing every shard (242 -> 286 MiB)."""
    tokenizer = write_tokenizer(tmp_path / "tokenizer")
    peaks = {}
    for copies, shards in ((1, 2), (4, 8)):
        root = tmp_path / f"x{copies}"
        root.mkdir()
        write_corpus(root / "t.txt", copies)
        params = json.dumps({"source": "text_files", "text_files": {"glob": str(root / "t.txt")}, "shards": shards})
        examples = json.dumps({"max_seq_length": 128, "max_predictions_per_seq": 20, "dupe_factor": 2})
        corpus_dir = str(root / "corpus")
        peaks[copies] = {"corpus": max(peak_rss_mib("corpus", "--params", params, "--out", corpus_dir, "--shard", str(k),
                                                    "--threads", "1") for k in range(shards))}
        peak_rss_mib("corpus", "--params", params, "--out", corpus_dir, "--merge")
        peaks[copies]["examples"] = peak_rss_mib("examples", "--corpus", corpus_dir, "--tokenizer", str(tokenizer),
                                                 "--params", examples, "--out", str(root / "examples"),
                                                 "--shard", "shard-00000")
    for job in ("corpus", "examples"):
        # Tolerance: 5 % + 10 MiB for allocator noise (measured: up to +6 MiB between runs).
        assert peaks[4][job] <= 1.05 * peaks[1][job] + 10, f"{job} job peak RSS (MiB) at 1x and 4x: {peaks}"
