"""`sparsebert examples`: BERT pretraining examples (masked LM + next sentence prediction) from the corpus.

The construction of Devlin et al. (2019), which the SparseBERT code inherits, written from its description:

1. Whole documents are held out for validation (so validation text is never seen in training), each by a
   seeded hash of its text (`split_of`).
2. For each of `dupe_factor` passes over the documents (each pass draws new segment boundaries and masks),
   consecutive sentences are packed into a chunk until it reaches a target length: max_seq_length - 3 (room
   for [CLS] A [SEP] B [SEP]) or, with probability short_seq_prob, a random shorter one, so the model also
   sees the short inputs of fine-tuning. The target is drawn once per document (as Google's
   create_pretraining_data.py does): a short document is cut into short chunks throughout. The chunk is cut
   at a random sentence boundary into A and B.
3. Next sentence prediction: with probability 0.5 B is replaced by text from a random other document (label
   1, the HF convention; 0 = B really follows A; the other document is drawn from the same corpus shard and
   split, as in NVIDIA's sharded preparation), and the chunk's unused sentences go back to start the next
   chunk, so no text is wasted. A one-sentence chunk takes the next sentence as its real B; a document's last
   sentence left alone makes no example (it could only take a random B, which would bias the labels).
4. The pair is trimmed to fit by dropping tokens from the longer segment, at a random end (not always the
   tail, which would bias what the model sees near [SEP]).
5. Masked LM: round(masked_lm_prob * n) of the n non-special positions (at most max_predictions_per_seq;
   whole words when whole_word_mask) are predicted; each is replaced by [MASK] 80% of the time, a random
   token 10%, and kept 10% (so the model cannot assume an unmasked token is correct).

Everything is drawn from numpy generators seeded by (seed, split, pass, shard): the output is a function of
the corpus, tokenizer and params only, whatever the number of processes or the order shard jobs run in.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from sparsebert import recipes
from sparsebert.data.corpus import corpus_shards, read_corpus, require_built, text_hash
from sparsebert.data.tokenizer import load_tokenizer
from sparsebert.io import UserError, atomic_dir, atomic_write_json, load_params

log = logging.getLogger(__name__)

DEFAULTS = recipes.defaults("examples")  # keys, ranges and meaning: workflow/schemas/config.schema.yaml
SPLITS = ("train", "validation")
COLUMNS = ("input_ids", "token_type_ids", "attention_mask", "masked_lm_positions", "masked_lm_ids",
           "next_sentence_label")
IGNORE_INDEX = -100  # masked_lm_ids padding: PyTorch cross-entropy's ignore_index


@dataclass(frozen=True)
class Vocab:
    """What the example builder needs to know about the tokenizer's vocabulary."""

    cls_id: int
    sep_id: int
    mask_id: int
    pad_id: int
    random_ids: np.ndarray  # ids that the 10% random replacement draws from: every non-special token
    is_subword: np.ndarray  # bool per id: a "##" continuation piece, joined to the word before it

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "Vocab":
        vocab = tokenizer.get_vocab()
        size = max(vocab.values()) + 1
        special = set(tokenizer.all_special_ids)
        is_subword = np.zeros(size, dtype=bool)
        for token, i in vocab.items():
            is_subword[i] = token.startswith("##")
        random_ids = np.array(sorted(set(vocab.values()) - special), dtype=np.int32)
        return cls(tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id, tokenizer.pad_token_id,
                   random_ids, is_subword)


def check_params(params: dict) -> dict:
    """The examples params checked against their schema definition (a UserError names every bad key and
    value) and completed with its defaults."""
    return recipes.fill("examples", params)


def recorded_params(params: dict) -> dict:
    """The params that make the examples what they are, as stats.json records them (num_proc only says how fast:
    the same bytes either way)."""
    return json.loads(json.dumps({key: value for key, value in params.items() if key != "num_proc"}))


# ---------------------------------------------------------------------------------------- tokenization


def tokenize_documents(documents: list[list[str]], tokenizer, batch_size: int = 10_000) -> list[list[np.ndarray]]:
    """Documents of sentences -> documents of int32 token-id arrays (empty sentences and documents dropped).

    A literal "[SEP]" or "[MASK]" in the text is ordinary text ('[', 'sep', ']'), as for Google's FullTokenizer:
    Hugging Face fast tokenizers would otherwise match special tokens in raw text and give their ids."""
    sentences = [s for document in documents for s in document]
    ids: list[list[int]] = []
    for start in tqdm(range(0, len(sentences), batch_size), desc="examples: tokenizing", unit="batch", mininterval=2):
        batch = sentences[start : start + batch_size]
        ids += tokenizer(batch, add_special_tokens=False, split_special_tokens=True, return_attention_mask=False,
                         return_token_type_ids=False)["input_ids"]
    tokenized, position = [], 0
    for document in documents:
        arrays = [np.asarray(ids[i], dtype=np.int32) for i in range(position, position + len(document)) if ids[i]]
        position += len(document)
        if arrays:
            tokenized.append(arrays)
    return tokenized


# ------------------------------------------------------------------------------------------ segment pairs


def target_length(rng: np.random.Generator, max_num_tokens: int, short_seq_prob: float) -> int:
    if rng.random() < short_seq_prob:
        return int(rng.integers(2, max_num_tokens + 1))
    return max_num_tokens


def truncate_pair(a: np.ndarray, b: np.ndarray, max_num_tokens: int, rng: np.random.Generator):
    """Drop tokens from the longer segment, each from a random end, until the pair fits."""
    a_lo, a_hi, b_lo, b_hi = 0, len(a), 0, len(b)
    while (a_hi - a_lo) + (b_hi - b_lo) > max_num_tokens:
        from_front = rng.random() < 0.5
        if a_hi - a_lo > b_hi - b_lo:
            a_lo, a_hi = (a_lo + 1, a_hi) if from_front else (a_lo, a_hi - 1)
        else:
            b_lo, b_hi = (b_lo + 1, b_hi) if from_front else (b_lo, b_hi - 1)
    return a[a_lo:a_hi], b[b_lo:b_hi]


def document_pairs(documents: list[list[np.ndarray]], index: int, rng: np.random.Generator, max_num_tokens: int,
                   short_seq_prob: float):
    """Yield (tokens_a, tokens_b, is_random_next) for one document (steps 2-4 of the module docstring)."""
    document = documents[index]
    target = target_length(rng, max_num_tokens, short_seq_prob)  # one draw for the whole document
    chunk, length, i = [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 and len(chunk) == 1:
            break  # the last sentence alone could only take a random B: skipping it keeps labels 50/50
        if i == len(document) - 1 or length >= target:
            is_random = rng.random() < 0.5
            if len(chunk) == 1 and not is_random:  # (one sentence alone gets here only before the last one)
                i += 1  # a real continuation needs two sentences: the next one becomes B
                chunk.append(document[i])
            is_random = is_random and len(documents) > 1
            a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
            tokens_a = np.concatenate(chunk[:a_end])
            if is_random:
                other = int(rng.integers(len(documents) - 1))
                other += other >= index  # any document but this one
                segments, b_length = [], 0
                for sentence in documents[other][int(rng.integers(len(documents[other]))):]:
                    segments.append(sentence)
                    b_length += len(sentence)
                    if b_length >= target - len(tokens_a):
                        break
                tokens_b = np.concatenate(segments)
                i -= len(chunk) - a_end  # the unused sentences start the next chunk
            else:
                tokens_b = np.concatenate(chunk[a_end:]) if a_end < len(chunk) else np.zeros(0, np.int32)
            if len(tokens_b):  # empty only in a one-document split (no random B to take)
                yield (*truncate_pair(tokens_a, tokens_b, max_num_tokens, rng), is_random)
            chunk, length = [], 0
        i += 1


# -------------------------------------------------------------------------------------------------- masking


def mask_tokens(tokens: np.ndarray, rng: np.random.Generator, vocab: Vocab, masked_lm_prob: float,
                max_predictions: int, whole_word_mask: bool):
    """Return (masked input ids, sorted masked positions, original ids at those positions) (step 5)."""
    candidates = np.flatnonzero((tokens != vocab.cls_id) & (tokens != vocab.sep_id))
    n_predict = min(max_predictions, max(1, int(round(len(candidates) * masked_lm_prob))))
    if whole_word_mask:
        # A word starts at each candidate that is not a "##" piece directly after another candidate.
        starts = ~vocab.is_subword[tokens[candidates]]
        starts[1:] |= np.diff(candidates) != 1
        starts[0] = True
        words = np.split(candidates, np.flatnonzero(starts)[1:])
        chosen: list[int] = []
        for w in rng.permutation(len(words)):
            if len(chosen) + len(words[w]) <= n_predict:  # skip words that would overshoot the budget
                chosen.extend(words[w])
            if len(chosen) == n_predict:
                break
        if not chosen:  # every word is longer than the budget (tiny max_predictions): mask part of one
            chosen = list(words[int(rng.integers(len(words)))][:n_predict])
        positions = np.sort(np.asarray(chosen, dtype=np.int64))
    else:
        positions = np.sort(rng.permutation(candidates)[:n_predict])
    labels = tokens[positions]
    masked = tokens.copy()
    draw = rng.random(len(positions))
    masked[positions[draw < 0.8]] = vocab.mask_id
    replaced = positions[draw >= 0.9]
    masked[replaced] = rng.choice(vocab.random_ids, size=len(replaced))
    return masked, positions, labels


# ------------------------------------------------------------------------------------------------- examples


def create_examples(documents: list[list[np.ndarray]], vocab: Vocab, params: dict,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One pass over the documents -> fixed-width int arrays, one row per example (columns in COLUMNS)."""
    seq_len, n_pred = params["max_seq_length"], params["max_predictions_per_seq"]
    rows = {name: [] for name in COLUMNS}
    for index in range(len(documents)):
        for tokens_a, tokens_b, is_random in document_pairs(documents, index, rng, seq_len - 3, params["short_seq_prob"]):
            tokens = np.concatenate([[vocab.cls_id], tokens_a, [vocab.sep_id], tokens_b, [vocab.sep_id]]).astype(np.int32)
            masked, positions, labels = mask_tokens(tokens, rng, vocab, params["masked_lm_prob"], n_pred,
                                                    params["whole_word_mask"])
            n, n_a = len(tokens), len(tokens_a) + 2
            input_ids = np.full(seq_len, vocab.pad_id, np.int32)
            input_ids[:n] = masked
            token_type_ids = np.zeros(seq_len, np.int32)
            token_type_ids[n_a:n] = 1
            attention_mask = np.zeros(seq_len, np.int32)
            attention_mask[:n] = 1
            masked_lm_positions = np.zeros(n_pred, np.int32)
            masked_lm_positions[: len(positions)] = positions
            masked_lm_ids = np.full(n_pred, IGNORE_INDEX, np.int32)
            masked_lm_ids[: len(labels)] = labels
            for name, value in zip(COLUMNS, (input_ids, token_type_ids, attention_mask, masked_lm_positions,
                                             masked_lm_ids, int(is_random))):
                rows[name].append(value)
    widths = {"masked_lm_positions": n_pred, "masked_lm_ids": n_pred, "next_sentence_label": None}
    arrays = {}
    for name, values in rows.items():
        width = widths.get(name, seq_len)
        shape = (len(values),) if width is None else (len(values), width)
        arrays[name] = np.array(values, dtype=np.int64 if width is None else np.int32).reshape(shape)
    return arrays


# ----------------------------------------------------------------------------------------- shards on disk
#
# Each corpus shard becomes one examples shard: a directory with train.arrow and validation.arrow (Arrow IPC
# streams, written one dupe pass at a time and memory-mapped when read) and its stats.json. A row stores only
# what cannot be derived, in the narrowest type: the unpadded input ids (uint16 for a vocabulary of up to
# 65,536, as BERT's 30,522), where segment B starts (token types follow), the masked positions and their ids
# (the attention mask and all padding follow from the lengths). Measured on the default run (seq 128, 20
# predictions): 330 bytes a row on disk, against 1,704 for the padded int32 columns that `create_examples`
# returns (`Examples` gives them back padded, as int64).

SHARD_FILES = {split: f"{split}.arrow" for split in SPLITS}


def id_type(vocab_size: int):
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def position_type(seq_len: int):
    return np.uint16 if seq_len <= 2**16 else np.uint32


def storage_format(params: dict, pad_id: int, ids) -> dict:
    """What a reader needs to rebuild the padded columns; every shard of one output must agree on it."""
    return {"seq_len": params["max_seq_length"], "max_predictions": params["max_predictions_per_seq"],
            "pad_id": pad_id, "ids": np.dtype(ids).name}


def _lists(values: np.ndarray, lengths: np.ndarray) -> pa.ListArray:
    """Rows of `lengths` items from the flat `values`. Arrow's list offsets are int32: a pass of one shard with
    2^31 items or more would wrap them silently (Arrow checks them only when asked), so it is one clear error."""
    if len(values) >= 2**31:
        raise UserError(f"one pass of a corpus shard holds {len(values):,} tokens, more than an Arrow list column "
                        f"takes (2^31 - 1): split the corpus into more shards (corpus.shards)")
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def pack(arrays: dict[str, np.ndarray], ids, positions) -> pa.Table:
    """The padded columns of `create_examples` -> the compact rows stored on disk."""
    length = arrays["attention_mask"].sum(1)
    n_masked = (arrays["masked_lm_ids"] != IGNORE_INDEX).sum(1)
    is_masked = np.arange(arrays["masked_lm_ids"].shape[1]) < n_masked[:, None]  # labels fill a prefix
    return pa.table({
        "input_ids": _lists(arrays["input_ids"][arrays["attention_mask"].astype(bool)].astype(ids), length),
        "segment_b": pa.array(arrays["token_type_ids"].argmax(1).astype(positions)),  # B is never empty
        "masked_lm_positions": _lists(arrays["masked_lm_positions"][is_masked].astype(positions), n_masked),
        "masked_lm_ids": _lists(arrays["masked_lm_ids"][is_masked].astype(ids), n_masked),
        "next_sentence_label": pa.array(arrays["next_sentence_label"].astype(np.int8)),
    })


def _padded(column: pa.ChunkedArray, width: int, fill: int) -> tuple[np.ndarray, np.ndarray]:
    """A list column -> (rows x width int64 array padded with fill, row lengths)."""
    lists = column.combine_chunks()
    lengths = lists.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    out = np.full((len(lists), width), fill, dtype=np.int64)
    out[np.arange(width) < lengths[:, None]] = lists.flatten().to_numpy(zero_copy_only=False)
    return out, lengths


def unpack(rows: pa.Table, seq_len: int, max_predictions: int, pad_id: int) -> dict[str, np.ndarray]:
    """Stored rows -> the padded int64 columns of COLUMNS (the model's inputs)."""
    input_ids, length = _padded(rows.column("input_ids"), seq_len, pad_id)
    position = np.arange(seq_len)
    segment_b = rows.column("segment_b").to_numpy().astype(np.int64)
    return {
        "input_ids": input_ids,
        "token_type_ids": ((position >= segment_b[:, None]) & (position < length[:, None])).astype(np.int64),
        "attention_mask": (position < length[:, None]).astype(np.int64),
        "masked_lm_positions": _padded(rows.column("masked_lm_positions"), max_predictions, 0)[0],
        "masked_lm_ids": _padded(rows.column("masked_lm_ids"), max_predictions, IGNORE_INDEX)[0],
        "next_sentence_label": rows.column("next_sentence_label").to_numpy().astype(np.int64),
    }


def split_of(document: list[str], validation_fraction: float, seed: int) -> str:
    """train or validation, by a seeded hash of the document's text: whole documents are held out, the same
    ones whatever the shard count, and identical documents never straddle the two splits."""
    u = text_hash("\n".join(document), f"split-{seed}") / 2.0**64
    return "validation" if u < validation_fraction else "train"


def build_shard(corpus: str | os.PathLike, shard: str, tokenizer_dir: str | os.PathLike, params: dict,
                out: str | os.PathLike) -> dict:
    """One corpus shard (e.g. "shard-00003.txt") -> out/<shard>/{train,validation}.arrow + stats.json,
    atomically. Memory: the shard's documents and one pass of examples, never the corpus."""
    params = check_params(params)
    start = time.time()
    tokenizer = load_tokenizer(tokenizer_dir)
    vocab = Vocab.from_tokenizer(tokenizer)
    ids, positions = id_type(len(vocab.is_subword)), position_type(params["max_seq_length"])
    by_split: dict[str, list[list[str]]] = {name: [] for name in SPLITS}
    for document in read_corpus(corpus, params["max_documents"], shards=[shard]):
        by_split[split_of(document, params["validation_fraction"], params["seed"])].append(document)
    index = int(Path(shard).stem.rsplit("-", 1)[-1])
    name = Path(shard).stem
    stats: dict = {"format": storage_format(params, vocab.pad_id, ids), "params": recorded_params(params)}
    with atomic_dir(Path(out) / name) as tmp:
        for split in SPLITS:
            documents = tokenize_documents(by_split.pop(split), tokenizer)
            passes = params["dupe_factor"] if split == "train" else 1  # a fixed evaluation set needs one masking
            rngs = (np.random.default_rng([params["seed"], SPLITS.index(split), dupe, index]) for dupe in
                    tqdm(range(passes), desc=f"examples: {name} {split}", unit="pass", mininterval=2))
            stats[split] = {"documents": len(documents), **write_split(
                tmp / SHARD_FILES[split], (create_examples(documents, vocab, params, rng) for rng in rngs), ids, positions)}
        # No timing in outputs: same inputs, same bytes (run times are in logs/benchmarks/).
        atomic_write_json(tmp / "stats.json", stats)
    log.info("examples: %s: %d train sequences from %d documents, %d validation (%.0f s)", name,
             stats["train"]["sequences"], stats["train"]["documents"], stats["validation"]["sequences"],
             time.time() - start)
    return stats


def write_split(path: Path, passes: Iterable[dict[str, np.ndarray]], ids, positions) -> dict:
    """Append each pass's examples to one Arrow stream as it comes (one pass in memory at a time)."""
    totals = {"sequences": 0, "tokens": 0, "masked_tokens": 0, "random_next": 0}
    with pa.ipc.new_stream(str(path), SCHEMA(ids, positions)) as writer:
        for arrays in passes:
            writer.write_table(pack(arrays, ids, positions), max_chunksize=65536)
            totals["sequences"] += len(arrays["input_ids"])
            totals["tokens"] += int(arrays["attention_mask"].sum())
            totals["masked_tokens"] += int((arrays["masked_lm_ids"] != IGNORE_INDEX).sum())
            totals["random_next"] += int(arrays["next_sentence_label"].sum())
    return totals


def write_examples(out: str | os.PathLike, splits: dict[str, dict[str, np.ndarray]], vocab_size: int, pad_id: int,
                   params: dict | None = None) -> dict:
    """Padded example arrays per split (as `create_examples` returns) -> a one-shard examples directory, as
    `sparsebert examples` writes it (e.g. examples that were made by other means, such as the tests')."""
    params = check_params({"max_seq_length": splits["train"]["input_ids"].shape[1],
                           "max_predictions_per_seq": splits["train"]["masked_lm_ids"].shape[1], **(params or {})})
    ids, positions = id_type(vocab_size), position_type(params["max_seq_length"])
    stats: dict = {"format": storage_format(params, pad_id, ids), "params": recorded_params(params)}
    with atomic_dir(out) as tmp:
        (tmp / "shard-00000").mkdir()
        for split in SPLITS:
            arrays = splits.get(split, {name: np.zeros((0,) + splits["train"][name].shape[1:], np.int64) for name in COLUMNS})
            stats[split] = {"documents": 0, **write_split(tmp / "shard-00000" / SHARD_FILES[split], [arrays], ids, positions)}
        atomic_write_json(tmp / "shard-00000" / "stats.json", stats)
        return merge_shards(tmp, ["shard-00000"], params)


def SCHEMA(ids, positions) -> pa.Schema:  # noqa: N802 - a constant that depends on the vocabulary and length
    return pa.schema([("input_ids", pa.list_(pa.from_numpy_dtype(ids))), ("segment_b", pa.from_numpy_dtype(positions)),
                      ("masked_lm_positions", pa.list_(pa.from_numpy_dtype(positions))),
                      ("masked_lm_ids", pa.list_(pa.from_numpy_dtype(ids))), ("next_sentence_label", pa.int8())])


def merge_shards(out: str | os.PathLike, names: list[str], params: dict) -> dict:
    """out/stats.json: the shards (one per corpus shard, each checked present and alike) and their totals."""
    params = check_params(params)
    out = Path(out)
    require_built("examples", [out / n / "stats.json" for n in names], "sparsebert examples --shard")
    stats: dict = {"shards": names, "format": None, "params": recorded_params(params),
                   **{split: {} for split in SPLITS}}
    for name in names:
        shard = json.loads((out / name / "stats.json").read_text())
        check_shard_params(out / name / "stats.json", shard, stats["params"])
        if stats["format"] not in (None, shard["format"]):
            raise UserError(f"{out / name}/stats.json: format {shard['format']} differs from the other shards' "
                            f"{stats['format']} (built with another tokenizer or params: rebuild all shards)")
        stats["format"] = shard["format"]
        for split in SPLITS:
            for key, value in shard[split].items():
                stats[split][key] = stats[split].get(key, 0) + value
    for split in SPLITS:
        s = stats[split]
        s["random_next_fraction"] = round(s.pop("random_next") / s["sequences"], 4) if s["sequences"] else None
    if not stats["train"]["sequences"]:
        raise UserError(f"{out}: no training examples could be built (too few documents or sentences)")
    atomic_write_json(out / "stats.json", stats)
    for split in SPLITS:
        s = stats[split]
        log.info("examples: %-10s %9d sequences, %11d tokens, %10d masked tokens, %.3f random next, from %d documents",
                 split, s["sequences"], s["tokens"], s["masked_tokens"], s["random_next_fraction"] or 0, s["documents"])
    return stats


def check_shard_params(path: Path, shard: dict, asked: dict) -> None:
    """A shard must have been built with the params the merge is asked for (`asked`, as `recorded_params` gives
    them): the merged stats.json records them as the examples' (the validation order's seed, the reports), and
    shards of other settings (a rerun of some shards only, `--rerun-triggers mtime`, shards copied in) would mix
    two datasets without a word."""
    if "params" not in shard:
        raise UserError(f"{path}: no record of the params the shard was built with (built by an older sparsebert): "
                        f"rebuild all shards")
    for key in sorted(set(asked) | set(shard["params"])):
        if shard["params"].get(key) != asked.get(key):
            raise UserError(f"{path}: built with {key} = {shard['params'].get(key)!r}, the merge asks for "
                            f"{asked.get(key)!r} (the params changed since: rebuild all shards)")


def _build_shard_job(job: tuple) -> None:
    build_shard(*job)


def build_examples(corpus: str | os.PathLike, tokenizer_dir: str | os.PathLike, params: dict,
                   out: str | os.PathLike) -> dict:
    """Every shard (num_proc side by side) and the merged stats.json, into `out` atomically."""
    params = check_params(params)
    load_tokenizer(tokenizer_dir)  # a missing tokenizer is one clear error before any work
    shards = corpus_shards(corpus)
    num_proc = min(params["num_proc"] or os.cpu_count() or 1, len(shards))
    with atomic_dir(out) as tmp:
        jobs = [(corpus, shard, tokenizer_dir, params, tmp) for shard in shards]
        if num_proc > 1:
            with multiprocessing.get_context("fork").Pool(num_proc) as pool:
                list(pool.imap(_build_shard_job, jobs))
        else:
            for job in jobs:
                _build_shard_job(job)
        return merge_shards(tmp, [Path(s).stem for s in shards], params)


# ----------------------------------------------------------------------------------------------- reading


class Examples:
    """One split of the examples: every shard's Arrow file memory-mapped as one table (nothing is loaded
    until asked for). ex[i], ex[[i, j, ...]], ex[a:b] give padded int64 torch tensors per column of COLUMNS."""

    def __init__(self, table: pa.Table, fmt: dict, order: np.ndarray | None = None):
        self.table, self.format, self.order = table, fmt, order
        self.seq_len, self.max_predictions = fmt["seq_len"], fmt["max_predictions"]
        self.batches = table.to_batches()  # zero-copy views of the mapped files
        self.starts = np.cumsum([0] + [b.num_rows for b in self.batches])

    def take(self, rows: np.ndarray) -> pa.Table:
        """The rows, in order. Each record batch takes its own rows: Table.take over many chunks costs time in
        the table's size (measured 31 ms for 64 rows of 2M in 200 chunks, against 1 ms this way)."""
        batch_of = np.searchsorted(self.starts, rows, side="right") - 1
        order = np.argsort(batch_of, kind="stable")
        parts = [self.batches[b].take(pa.array(rows[order[batch_of[order] == b]] - self.starts[b]))
                 for b in np.unique(batch_of)]
        if not parts:
            return self.table.schema.empty_table()
        grouped = pa.Table.from_batches(parts).combine_chunks()
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        return grouped.take(pa.array(back))

    def __len__(self) -> int:
        return self.table.num_rows if self.order is None else len(self.order)

    def _rows(self, index) -> np.ndarray:
        if isinstance(index, slice):
            index = range(*index.indices(len(self)))
        rows = np.asarray(index, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} examples")
        rows = rows % max(len(self), 1)
        return rows if self.order is None else self.order[rows]

    def __getitem__(self, index) -> dict:
        import torch

        arrays = unpack(self.take(self._rows(index)), self.seq_len, self.max_predictions, self.format["pad_id"])
        batch = {name: torch.from_numpy(a) for name, a in arrays.items()}
        return {name: t[0] for name, t in batch.items()} if np.ndim(index) == 0 and not isinstance(index, slice) else batch

    def select(self, index) -> "Examples":
        return Examples(self.table, self.format, self._rows(index))

    def masked_lm_id_chunks(self):
        """The masked token ids of every row, a record batch at a time (e.g. to count them)."""
        if self.order is None:
            for batch in self.batches:
                yield batch.column("masked_lm_ids").flatten().to_numpy(zero_copy_only=False)
        else:
            for start in range(0, len(self.order), 65536):
                rows = self.take(self.order[start : start + 65536])
                yield rows.column("masked_lm_ids").combine_chunks().flatten().to_numpy(zero_copy_only=False)


def load_examples(path: str | os.PathLike) -> dict[str, Examples]:
    """{split: Examples} of a `sparsebert examples` output; validation in a seeded shuffled order (so its first
    rows, used for evaluation, come from every shard), train in stored order (training draws its own)."""
    path = Path(path)
    if not (path / "stats.json").is_file():
        raise UserError(f"pretraining examples not found at {path} (expected the output of `sparsebert examples`)")
    try:
        stats = json.loads((path / "stats.json").read_text())
        shards, fmt, seed = stats["shards"], stats["format"], stats["params"]["seed"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path}/stats.json: corrupt examples stats ({e})") from None
    data = {}
    for split in SPLITS:
        tables = []
        for shard in shards:
            file = path / shard / SHARD_FILES[split]
            try:
                tables.append(pa.ipc.open_stream(pa.memory_map(str(file))).read_all())
            except (OSError, pa.ArrowInvalid) as e:
                raise UserError(f"{file}: unreadable examples shard ({e}); rebuild it") from None
        table = pa.concat_tables(tables)
        expected = stats[split]["sequences"]
        if table.num_rows != expected:
            raise UserError(f"{path}: {split} holds {table.num_rows} examples, stats.json says {expected} (a shard was "
                            f"replaced or truncated; rebuild)")
        order = np.random.default_rng([seed, SPLITS.index(split), 99]).permutation(len(table)) \
            if split == "validation" else None
        if len(table):
            data[split] = Examples(table, fmt, order)
    return data


def add_arguments(parser) -> None:
    parser.add_argument("--corpus", required=True, help="corpus directory from `sparsebert corpus`")
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory from `sparsebert tokenizer`")
    parser.add_argument("--params", help="JSON/YAML mapping or file: max_seq_length, dupe_factor, seed, ...")
    parser.add_argument("--out", required=True, help="output directory, e.g. data/examples")
    step = parser.add_mutually_exclusive_group()
    step.add_argument("--shard", metavar="NAME", help="build only the examples of this corpus shard, e.g. shard-00003")
    step.add_argument("--merge", action="store_true", help="write stats.json from the built shards")


def run(args) -> None:
    params = load_params(args.params)
    if args.shard is not None:
        build_shard(args.corpus, Path(args.shard).stem + ".txt", args.tokenizer, params, args.out)
    elif args.merge:
        merge_shards(args.out, [Path(s).stem for s in corpus_shards(args.corpus)], params)
    else:
        build_examples(args.corpus, args.tokenizer, params, args.out)
