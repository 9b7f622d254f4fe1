"""`sparsebert examples`: BERT pretraining examples (masked LM + next sentence prediction) from the corpus.

The construction of Devlin et al. (2019), which the SparseBERT code inherits, written from its description:

1. Whole documents are held out for validation (so validation text is never seen in training).
2. For each of `dupe_factor` passes over the documents (each pass draws new segment boundaries and masks),
   consecutive sentences are packed into a chunk until it reaches a target length: max_seq_length - 3 (room
   for [CLS] A [SEP] B [SEP]) or, with probability short_seq_prob, a random shorter one, so the model also
   sees the short inputs of fine-tuning. The chunk is cut at a random sentence boundary into A and B.
3. Next sentence prediction: with probability 0.5 B is replaced by text from a random other document (label
   1, the HF convention; 0 = B really follows A), and the chunk's unused sentences go back to start the next
   chunk, so no text is wasted. A one-sentence chunk takes the next sentence as its real B; a document's last
   sentence left alone makes no example (it could only take a random B, which would bias the labels).
4. The pair is trimmed to fit by dropping tokens from the longer segment, at a random end (not always the
   tail, which would bias what the model sees near [SEP]).
5. Masked LM: round(masked_lm_prob * n) of the n non-special positions (at most max_predictions_per_seq;
   whole words when whole_word_mask) are predicted; each is replaced by [MASK] 80% of the time, a random
   token 10%, and kept 10% (so the model cannot assume an unmasked token is correct).

Everything is drawn from numpy generators seeded by (seed, split, pass): the output is a function of the
corpus, tokenizer and params only, whatever the number of processes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
import numpy as np
from tqdm import tqdm

from sparsebert import recipes
from sparsebert.data.corpus import read_corpus
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


# ---------------------------------------------------------------------------------------- tokenization


def tokenize_documents(documents: list[list[str]], tokenizer, batch_size: int = 10_000) -> list[list[np.ndarray]]:
    """Documents of sentences -> documents of int32 token-id arrays (empty sentences and documents dropped)."""
    sentences = [s for document in documents for s in document]
    ids: list[list[int]] = []
    for start in tqdm(range(0, len(sentences), batch_size), desc="examples: tokenizing", unit="batch", mininterval=2):
        batch = sentences[start : start + batch_size]
        ids += tokenizer(batch, add_special_tokens=False, return_attention_mask=False,
                         return_token_type_ids=False)["input_ids"]
    tokenized, position = [], 0
    for document in documents:
        arrays = [np.asarray(ids[i], dtype=np.int32) for i in range(position, position + len(document)) if ids[i]]
        position += len(document)
        if arrays:
            tokenized.append(arrays)
    return tokenized


def split_documents(n_documents: int, validation_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Document indices per split: a seeded random validation_fraction of whole documents is held out."""
    order = np.random.default_rng([seed, 7]).permutation(n_documents)
    n_validation = 0
    if validation_fraction > 0 and n_documents >= 2:
        n_validation = min(n_documents - 1, max(1, round(n_documents * validation_fraction)))
    return {"train": np.sort(order[n_validation:]), "validation": np.sort(order[:n_validation])}


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
    target = target_length(rng, max_num_tokens, short_seq_prob)
    chunk, length, i = [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 and len(chunk) == 1:
            break  # the last sentence alone could only take a random B: skipping it keeps labels 50/50
        if i == len(document) - 1 or length >= target:
            is_random = rng.random() < 0.5
            if len(chunk) == 1 and not is_random and i + 1 < len(document):
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
            target = target_length(rng, max_num_tokens, short_seq_prob)
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


_WORK: dict = {}  # documents per split, inherited by forked workers instead of being pickled to them


def _one_pass(job: tuple[str, int]) -> dict[str, np.ndarray]:
    split, dupe = job
    rng = np.random.default_rng([_WORK["seed"], SPLITS.index(split), dupe])
    return create_examples(_WORK[split], _WORK["vocab"], _WORK["params"], rng)


def build_split_arrays(documents: dict[str, list[list[np.ndarray]]], vocab: Vocab, params: dict,
                       num_proc: int = 1) -> dict[str, dict[str, np.ndarray]]:
    """All passes for every split, concatenated and shuffled (seeded). Validation gets one pass: a fixed
    evaluation set does not need several maskings of the same text."""
    _WORK.update(documents, vocab=vocab, params=params, seed=params["seed"])
    jobs = [("train", d) for d in range(params["dupe_factor"])] + [("validation", 0)]
    if num_proc > 1 and len(jobs) > 1:
        with multiprocessing.get_context("fork").Pool(min(num_proc, len(jobs))) as pool:
            results = list(tqdm(pool.imap(_one_pass, jobs), total=len(jobs), desc="examples: passes", unit="pass"))
    else:
        results = [_one_pass(job) for job in tqdm(jobs, desc="examples: passes", unit="pass")]
    _WORK.clear()
    out = {}
    for split in SPLITS:
        parts = [r for (s, _), r in zip(jobs, results) if s == split]
        arrays = {name: np.concatenate([p[name] for p in parts]) for name in COLUMNS}
        order = np.random.default_rng([params["seed"], SPLITS.index(split), 99]).permutation(len(arrays["input_ids"]))
        out[split] = {name: a[order] for name, a in arrays.items()}
    return out


def to_dataset(arrays: dict[str, np.ndarray]):
    """Arrays -> datasets.Dataset with fixed-length int32 sequence columns (zero-copy through Arrow)."""
    import datasets
    import pyarrow as pa

    columns = {}
    for name, a in arrays.items():
        if a.ndim == 2:
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])
        else:
            columns[name] = pa.array(a)
    return datasets.Dataset(pa.table(columns))


def split_stats(arrays: dict[str, np.ndarray]) -> dict:
    n = len(arrays["input_ids"])
    masked = int((arrays["masked_lm_ids"] != IGNORE_INDEX).sum())
    return {"sequences": n, "tokens": int(arrays["attention_mask"].sum()), "masked_tokens": masked,
            "random_next_fraction": round(float(arrays["next_sentence_label"].mean()), 4) if n else None}


def build_examples(corpus: str | os.PathLike, tokenizer_dir: str | os.PathLike, params: dict,
                   out: str | os.PathLike) -> dict:
    """Corpus + tokenizer -> DatasetDict(train, validation) + stats.json under `out`, atomically."""
    import datasets

    params = check_params(params)
    start = time.time()
    tokenizer = load_tokenizer(tokenizer_dir)
    documents = list(read_corpus(corpus, params["max_documents"]))
    tokenized = tokenize_documents(documents, tokenizer)
    if not tokenized:
        raise UserError(f"{corpus}: no tokens in the corpus, nothing to build examples from")
    split = split_documents(len(tokenized), params["validation_fraction"], params["seed"])
    by_split = {name: [tokenized[i] for i in indices] for name, indices in split.items()}
    num_proc = params["num_proc"] or os.cpu_count() or 1
    arrays = build_split_arrays(by_split, Vocab.from_tokenizer(tokenizer), params, num_proc)
    stats = {name: {"documents": len(by_split[name]), **split_stats(a)} for name, a in arrays.items()}
    if not stats["train"]["sequences"]:
        raise UserError(f"{corpus}: no training examples could be built (too few documents or sentences)")
    with atomic_dir(out) as tmp:
        # An empty split (validation_fraction 0, or too few documents) is left out: `datasets` cannot load
        # back a split saved with zero shards, and readers treat a missing validation split as "none".
        kept = {name: to_dataset(a) for name, a in arrays.items() if stats[name]["sequences"]}
        datasets.DatasetDict(kept).save_to_disk(str(tmp))
        # No timing in outputs: same inputs, same bytes (run times are in logs/benchmarks/).
        stats["params"] = params
        atomic_write_json(tmp / "stats.json", stats)
    for name in SPLITS:
        s = stats[name]
        log.info("examples: %-10s %7d sequences, %9d tokens, %8d masked tokens, %.3f random next, from %d documents",
                 name, s["sequences"], s["tokens"], s["masked_tokens"], s["random_next_fraction"] or 0, s["documents"])
    log.info("examples: done in %.0f s -> %s", time.time() - start, out)
    return stats


def add_arguments(parser) -> None:
    parser.add_argument("--corpus", required=True, help="corpus directory from `sparsebert corpus`")
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory from `sparsebert tokenizer`")
    parser.add_argument("--params", help="JSON/YAML mapping or file: max_seq_length, dupe_factor, seed, ...")
    parser.add_argument("--out", required=True, help="output directory (datasets.DatasetDict), e.g. data/examples")


def run(args) -> None:
    build_examples(args.corpus, args.tokenizer, load_params(args.params), args.out)
