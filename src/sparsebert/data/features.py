"""Featurization of downstream examples into fixed-length BERT inputs, one function for every task kind.

Every sequence is padded to `max_seq_length` (as Google's BERT does) so the attention masks of the
sparse variants, which are built for one length L, apply unchanged.

Output columns (what the fine-tuning loop consumes):
- classification:  input_ids, token_type_ids, attention_mask [L]; labels int64
- regression:      input_ids, token_type_ids, attention_mask [L]; labels float32
- multiple_choice: input_ids, token_type_ids, attention_mask [num_choices, L]; labels int64
- span:            input_ids, token_type_ids, attention_mask [L]; start_positions, end_positions int64
                   (0 = [CLS] when the answer is absent or not inside this window); plus, for decoding,
                   example_id (the question id), offset_mapping [L] of (char_start, char_end) into the
                   context, None for tokens that are not context (question, special tokens, padding), and
                   token_is_max_context [L]: whether this window gives the token its most context.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import datasets
from datasets import Features, List, Value

from sparsebert.io import UserError

log = logging.getLogger(__name__)

_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
# datasets reuses a file-backed split's features (a hub task's) when the hash of the mapped function matches, and
# that hash names this module's functions without their code: an edited featurization would read the old
# features. The module's source, passed to `map` as an argument, is part of the hash.
SOURCE_DIGEST = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def featurize(spec, dataset: datasets.Dataset, tokenizer, max_seq_length: int, doc_stride: int = 128,
              max_query_length: int = 64) -> datasets.Dataset:  # fmt: skip
    """Tokenize one split of task `spec` (a `TaskSpec`); rows of hub-schema `dataset` in, features out.

    doc_stride (span tasks): tokens between the starts of consecutive context windows, as in Google's
    run_squad.py (HF's tokenizer `stride` is the overlap instead, i.e. window length - doc_stride).
    """
    if spec.kind == "span":
        if doc_stride >= max_seq_length - max_query_length - 3:
            log.warning("doc_stride %d >= the shortest window (%d tokens): windows will not overlap and answers "
                        "across a window boundary cannot be learned or found; at max_seq_length %d use a "
                        "doc_stride of about %d", doc_stride, max_seq_length - max_query_length - 3,
                        max_seq_length, max_seq_length // 4)  # fmt: skip
        fn = lambda batch, source: _span_windows(batch, tokenizer, max_seq_length, doc_stride,  # noqa: E731
                                                 max_query_length)
        features = Features({**{k: List(Value("int32")) for k in _INPUTS},
                             "start_positions": Value("int64"), "end_positions": Value("int64"),
                             "example_id": Value("string"), "offset_mapping": List(List(Value("int32"))),
                             "token_is_max_context": List(Value("bool"))})  # fmt: skip
    elif spec.kind == "multiple_choice":
        fn = lambda batch, source: _choices(batch, tokenizer, max_seq_length)  # noqa: E731
        features = Features({**{k: List(List(Value("int32"))) for k in _INPUTS}, "labels": Value("int64")})
    else:
        fn = lambda batch, source: _sentences(spec, batch, tokenizer, max_seq_length)  # noqa: E731
        label = Value("float32") if spec.kind == "regression" else Value("int64")
        features = Features({**{k: List(Value("int32")) for k in _INPUTS}, "labels": label})
    return dataset.map(fn, batched=True, remove_columns=dataset.column_names, features=features,
                       fn_kwargs={"source": SOURCE_DIGEST}, desc=f"featurize {spec.name}")  # fmt: skip


def truncate_pair(a: list, b: list, max_tokens: int) -> tuple[list, list]:
    """Cut a pair to max_tokens by dropping the last token of the longer segment, of B on ties: the rule of
    Google's and NVIDIA's run_classifier (_truncate_seq_pair). The tokenizer's longest_first gives the odd
    token to B instead, so A and B would differ by one token from the original recipe's inputs."""
    a_end, b_end = len(a), len(b)
    while a_end + b_end > max_tokens:
        if a_end > b_end:
            a_end -= 1
        else:
            b_end -= 1
    return a[:a_end], b[:b_end]


def _encode(tokenizer, first, second, max_seq_length: int) -> dict:
    """[CLS] A [SEP] (B [SEP]) [PAD]...: A (or a pair, by truncate_pair) cut to fit, token types 0 for A and
    1 for B and its [SEP], attention 1 on every real token."""
    firsts = tokenizer(first, add_special_tokens=False)["input_ids"]
    seconds = tokenizer(second, add_special_tokens=False)["input_ids"] if second is not None else None
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    out = {k: [] for k in _INPUTS}
    for i, a in enumerate(firsts):
        if seconds is None:
            a, b = a[: max_seq_length - 2], None
        else:
            a, b = truncate_pair(a, seconds[i], max_seq_length - 3)
        ids = [cls, *a, sep] + ([] if b is None else [*b, sep])
        padding = max_seq_length - len(ids)
        out["input_ids"].append(ids + [pad] * padding)
        out["token_type_ids"].append([0] * (len(a) + 2) + [1] * (len(ids) - len(a) - 2) + [0] * padding)
        out["attention_mask"].append([1] * len(ids) + [0] * padding)
    return out


def _sentences(spec, batch: dict, tokenizer, max_seq_length: int) -> dict:
    """Single sentences or sentence pairs (segment A = first text field, segment B = second)."""
    first = batch[spec.text_fields[0]]
    second = batch[spec.text_fields[1]] if len(spec.text_fields) > 1 else None
    return {**_encode(tokenizer, first, second, max_seq_length), "labels": batch["label"]}


def _choices(batch: dict, tokenizer, max_seq_length: int, num_choices: int = 4) -> dict:
    """SWAG: segment A = sent1 (the context), segment B = sent2 + " " + ending_k, for each of the 4 endings
    (a long pair is cut by truncate_pair, the rule of the BERT-era run_swag.py too)."""
    endings = zip(*(batch[f"ending{k}"] for k in range(num_choices)))  # per row: (ending0, ..., ending3)
    first = [sent1 for sent1 in batch["sent1"] for _ in range(num_choices)]
    second = [f"{sent2} {ending}" for sent2, row in zip(batch["sent2"], endings) for ending in row]
    flat = _encode(tokenizer, first, second, max_seq_length)
    grouped = {k: [v[i : i + num_choices] for i in range(0, len(v), num_choices)] for k, v in flat.items()}
    return {**grouped, "labels": batch["label"]}


def context_windows(num_context_tokens: int, window_length: int, doc_stride: int) -> list[tuple[int, int]]:
    """[start, end) token ranges covering the context: windows of `window_length` tokens whose starts are
    `doc_stride` apart, the last one ending at the context's end (an empty context gives one empty window)."""
    windows, start = [], 0
    while True:
        end = min(start + window_length, num_context_tokens)
        windows.append((start, end))
        if end >= num_context_tokens:
            return windows
        start += min(doc_stride, window_length)


def max_context_flags(windows: list[tuple[int, int]]) -> list[list[bool]]:
    """Per window, per context token in it: is this the window where the token has the most context?

    The rule of Google's run_squad.py (a token seen by overlapping windows is scored by its window where
    min(tokens to its left, tokens to its right) + 0.01 x window length is largest, the first on ties);
    decoding lets a window propose only answers that start at such tokens, so a window does not answer
    from a token it sees at its very edge when another window sees it in the middle."""
    best: dict[int, tuple[float, int]] = {}
    for w, (start, end) in enumerate(windows):
        for t in range(start, end):
            score = min(t - start, end - 1 - t) + 0.01 * (end - start)
            if t not in best or score > best[t][0]:
                best[t] = (score, w)
    return [[best[t][1] == w for t in range(start, end)] for w, (start, end) in enumerate(windows)]


def _answer_token_span(offsets: list, char_start: int, char_end: int) -> tuple[int, int] | None:
    """First and last context token overlapping the answer characters [char_start, char_end)."""
    tokens = [t for t, (s, e) in enumerate(offsets) if s < char_end and e > char_start]
    return (tokens[0], tokens[-1]) if tokens else None


def _span_windows(batch: dict, tokenizer, max_seq_length: int, doc_stride: int, max_query_length: int) -> dict:
    """[CLS] question [SEP] context window [SEP] [PAD]..., one row per window of each question."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("span tasks need a fast tokenizer (offset mappings); load it with use_fast=True")
    questions = tokenizer([q.lstrip() for q in batch["question"]], add_special_tokens=False, truncation=True,
                          max_length=max_query_length)["input_ids"]  # fmt: skip
    contexts = tokenizer(batch["context"], add_special_tokens=False, return_offsets_mapping=True)
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    columns = (*_INPUTS, "start_positions", "end_positions", "example_id", "offset_mapping", "token_is_max_context")
    out = {k: [] for k in columns}
    for i, question in enumerate(questions):
        context_ids, context_offsets = contexts["input_ids"][i], contexts["offset_mapping"][i]
        window_length = max_seq_length - len(question) - 3  # [CLS], [SEP], [SEP]
        if window_length <= 0:
            raise UserError(f"max_seq_length {max_seq_length} leaves no room for the context after a "
                            f"{len(question)}-token question; raise it or lower max_query_length")  # fmt: skip
        answers = batch["answers"][i]
        answer = None
        if answers["text"]:  # train on the first gold answer, as run_squad does
            char_start = answers["answer_start"][0]
            answer = _answer_token_span(context_offsets, char_start, char_start + len(answers["text"][0]))
        windows = context_windows(len(context_ids), window_length, doc_stride)
        for (start, end), max_context in zip(windows, max_context_flags(windows)):
            prefix = [cls, *question, sep]
            ids = prefix + context_ids[start:end] + [sep]
            padding = max_seq_length - len(ids)
            out["input_ids"].append(ids + [pad] * padding)
            out["token_type_ids"].append([0] * len(prefix) + [1] * (end - start + 1) + [0] * padding)
            out["attention_mask"].append([1] * len(ids) + [0] * padding)
            offsets = [None] * len(prefix) + [list(o) for o in context_offsets[start:end]]
            out["offset_mapping"].append(offsets + [None] * (max_seq_length - len(offsets)))
            out["token_is_max_context"].append([False] * len(prefix) + max_context + [False] * (padding + 1))
            out["example_id"].append(batch["id"][i])
            inside = answer is not None and start <= answer[0] and answer[1] < end
            out["start_positions"].append(len(prefix) + answer[0] - start if inside else 0)
            out["end_positions"].append(len(prefix) + answer[1] - start if inside else 0)
    return out
