"""SQuAD post-processing: from per-window start/end logits back to one answer text per question.

For each question, every window proposes spans (start, end) from its n_best highest start and end logits;
a span is valid when both ends are context tokens, end >= start, it is at most max_answer_length tokens, and
(with overlapping windows) the window is the one that gives the start token its most context
(`token_is_max_context`, as Google's run_squad.py).
Spans from all windows compete on start_logit + end_logit, and the winner's text is cut from the original
context through the offset mapping, so it is exactly the context's characters (case, accents, spacing).

SQuAD v2 null-answer rule: score_null = start_logit[CLS] + end_logit[CLS], the smallest over the
question's windows (the window most sure an answer exists); answer "" when
score_null - best_span_score > null_score_diff_threshold. The differences are returned too, so the
threshold can be tuned on dev as BERT's authors did.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

CLS_INDEX = 0  # featurization puts [CLS] first in every window


@dataclass(frozen=True)
class Span:
    score: float
    char_start: int
    char_end: int


def window_spans(start_logits, end_logits, offsets, n_best_size: int, max_answer_length: int,
                 max_context=None) -> list[Span]:  # fmt: skip
    """Valid answer spans of one window among its n_best start and n_best end positions."""
    starts = np.argsort(start_logits)[::-1][:n_best_size]
    ends = np.argsort(end_logits)[::-1][:n_best_size]
    spans = []
    for s in starts:
        for e in ends:
            if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                continue  # not context: question, [CLS]/[SEP] or padding
            if e < s or e - s + 1 > max_answer_length:
                continue
            if max_context is not None and not max_context[s]:
                continue  # another window sees this start token with more context on both sides
            spans.append(Span(float(start_logits[s] + end_logits[e]), offsets[s][0], offsets[e][1]))
    return spans


def postprocess_predictions(
    examples, features, start_logits, end_logits, n_best_size: int = 20, max_answer_length: int = 30,
    version_2: bool = False, null_score_diff_threshold: float = 0.0,
) -> tuple[dict[str, str], dict[str, float]]:
    """Answer text per question id, and (v2) score_null - best span score per question id.

    examples: rows with "id" and "context" (the task's eval split); features: its featurization with
    "example_id", "offset_mapping" and (optional) "token_is_max_context"; start_logits, end_logits: arrays
    [num_features, L] in feature order.
    """
    start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
    windows_of = collections.defaultdict(list)
    for f, example_id in enumerate(features["example_id"]):
        windows_of[example_id].append(f)
    offsets = features["offset_mapping"]
    columns = getattr(features, "column_names", features)  # a datasets.Dataset or a dict of columns
    max_context = features["token_is_max_context"] if "token_is_max_context" in columns else None

    predictions, null_score_diffs = {}, {}
    for example_id, context in zip(examples["id"], examples["context"]):
        spans, score_null = [], float("inf")
        for f in windows_of[example_id]:
            spans += window_spans(start_logits[f], end_logits[f], offsets[f], n_best_size, max_answer_length,
                                  max_context[f] if max_context is not None else None)  # fmt: skip
            score_null = min(score_null, float(start_logits[f][CLS_INDEX] + end_logits[f][CLS_INDEX]))
        best = max(spans, key=lambda span: span.score, default=None)
        text = context[best.char_start : best.char_end] if best else ""
        if version_2:
            diff = score_null - best.score if best else float("inf")
            null_score_diffs[example_id] = diff
            text = "" if diff > null_score_diff_threshold else text
        predictions[example_id] = text
    return predictions, null_score_diffs
