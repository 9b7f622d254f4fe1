"""Shared fixtures: tiny pretraining examples and a tokenizer written by the tests (no hub, no corpus), and the one
smoke DAG run that the workflow and SLURM tests share."""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
import tqdm
from _runs import snakemake, workdir

# tqdm guards its bars with a lock shared between processes (a POSIX semaphore) by default. Under `make mutants`
# every test process is forked from one parent, and the lock outlived them: after one mutant's test process ended
# inside a tqdm call, every later one waited on the semaphore until mutmut's time limit (seen: the tokenizer's
# mutants all counted "timeout", each of which passed or failed in seconds when run alone). The bars of one test
# process need only a lock between its threads.
tqdm.tqdm.set_lock(threading.RLock())

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]
SEQ, PRED = 32, 5


@pytest.fixture(autouse=True)
def _restore_signal_handlers():
    """Training run in-process routes SIGTERM/SIGUSR1 to its stop flag (sparsebert.preemption); give the
    test process its own handlers back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A test that sets torch's thread count (a probe, a benchmark helper) leaves the next test the count a fresh
    process has: training run in this process is compared bit for bit with runs in subprocesses, and the order of
    a reduction follows the thread count."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def copies(monkeypatch) -> list:
    """The host-to-device copies a test makes, recorded instead of made (no GPU needed): "pin" for each
    pin_memory(), (device, non_blocking) for each .to()."""
    import torch

    made = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: (made.append("pin"), self)[1])
    monkeypatch.setattr(torch.Tensor, "to", lambda self, device, non_blocking=False: (made.append((str(device), non_blocking)), self)[1])
    return made


@pytest.fixture
def preemption_flag_cleared(monkeypatch):
    """No fault injection from the environment, no preemption flag left for the next test (the autouse fixture
    above restores the signal handlers that preemption.install() sets)."""
    from sparsebert import preemption

    monkeypatch.delenv("SPARSEBERT_SIGNAL_AT_STEP", raising=False)
    yield
    preemption._received.clear()


def rewritten_in_place(path):
    """A file (or a folder's first file) one second newer, bytes unchanged: an input rebuilt at the same path."""
    first = path if path.is_file() else next(f for f in sorted(path.rglob("*")) if f.is_file())
    st = first.stat()
    os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def node_down(*args, **kwargs):
    """Stands in for a function the job dies in without a signal (a crashed node): nothing is checkpointed."""
    raise RuntimeError("the node went down")


@contextmanager
def gloo_group(tmp_path):
    """A one-process gloo group, standing in for one rank of torchrun's; destroyed afterwards if the test has not."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        yield dist
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def write_tokenizer(path):
    from transformers import BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    BertTokenizerFast(vocab=str(path / "vocab.txt")).save_pretrained(str(path))
    return path


def make_examples(n: int, seed: int):
    """Sequences with learnable structure, MLM+NSP columns as built by `sparsebert examples`: words are
    Zipf-distributed (a tiny model quickly learns the prior) and each word is repeated (a neighbour
    reveals a masked word)."""
    rng = np.random.default_rng(seed)
    words = np.arange(5, len(VOCAB))
    zipf = 1.0 / np.arange(1, len(words) + 1) ** 1.3
    zipf /= zipf.sum()
    rows = {k: [] for k in ["input_ids", "token_type_ids", "attention_mask", "masked_lm_positions",
                            "masked_lm_ids", "next_sentence_label"]}
    for _ in range(n):
        length = rng.integers(SEQ // 2, SEQ + 1)
        body = np.repeat(rng.choice(words, size=length, p=zipf), 2)[: length - 3].tolist()
        cut = len(body) // 2
        ids = [2] + body[:cut] + [3] + body[cut:] + [3]
        types = [0] * (cut + 2) + [1] * (len(body) - cut + 1)
        nsp = int(rng.random() < 0.5)
        if nsp:  # random second segment
            ids[cut + 2 : -1] = rng.choice(words, size=len(body) - cut).tolist()
        cand = [i for i, t in enumerate(ids) if t not in (2, 3)]
        pos = sorted(rng.choice(cand, size=PRED, replace=False).tolist())
        labels = [ids[p] for p in pos]
        for p in pos:
            ids[p] = 4
        pad = SEQ - len(ids)
        rows["input_ids"].append(ids + [0] * pad)
        rows["token_type_ids"].append(types + [0] * pad)
        rows["attention_mask"].append([1] * len(ids) + [0] * pad)
        rows["masked_lm_positions"].append(pos)
        rows["masked_lm_ids"].append(labels)
        rows["next_sentence_label"].append(nsp)
    return rows


@pytest.fixture(scope="session")
def tiny_pretraining_data(tmp_path_factory):
    """(examples_dir, tokenizer_dir) for a 32-token, 64-word synthetic language."""
    from sparsebert.data.pretraining import write_examples

    root = tmp_path_factory.mktemp("pretraining")
    splits = {"train": make_examples(256, 0), "validation": make_examples(64, 1)}
    write_examples(root / "examples", {split: {k: np.asarray(v) for k, v in rows.items()} for split, rows in splits.items()},
                   vocab_size=len(VOCAB), pad_id=0)
    return root / "examples", write_tokenizer(root / "tokenizer")


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """A finished `snakemake --cores 2 --configfile config/smoke.yaml` (42 jobs, 2-3 min on 2 cores), run once per
    session: the workflow tests read it or work on copies of it, the SLURM test compares its own run with it."""
    wd = workdir(tmp_path_factory.mktemp("smoke"))
    start = time.monotonic()
    snakemake(wd, "--cores", "2", "--configfile", "config/smoke.yaml")
    print(f"smoke DAG: {time.monotonic() - start:.0f} s")
    return wd


TINY_RECIPE = {
    "model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    "lr": 1e-2, "batch_size": 16, "max_steps": 30, "warmup": 0.1, "log_every": 5, "checkpoint_every": 10,
    "snapshot_every": 5, "seed": 0,
    "precision": "fp32",  # the same arithmetic on every CPU; tests/test_precision.py runs bf16
}
