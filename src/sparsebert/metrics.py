"""Downstream metrics with the names the GLUE / SQuAD / SWAG leaderboards use.

Scales follow each benchmark's own convention so numbers compare directly with published ones:
GLUE and SWAG metrics are fractions in [0, 1] (as HF `evaluate`'s glue metric reports them), SQuAD metrics
are percentages in [0, 100] (as the official v1.1 / v2.0 evaluation scripts report them).

SQuAD scoring (our own implementation of the rules of the official evaluate-v1.1.py and evaluate-v2.0.py,
which differ where an answer normalizes to empty; each version is scored by its own script's rules):
- answers are normalized: lowercase, punctuation removed, articles a/an/the removed, whitespace collapsed;
- exact match: the normalized strings are equal; token F1: from the tokens the two have in common (none: 0);
- each question scores its best gold answer;
- v1.1 keeps every gold answer as given: a prediction "" against the gold "The" (both normalize to empty) is
  EM 1 and F1 0 (no common token);
- v2.0 drops gold answers that normalize to empty, and a question left with none (an unanswerable one) is
  scored against the empty string; an empty side scores F1 1 when the other is empty too, else 0. So predicting
  "" there scores 1 (EM and F1) and any non-empty prediction 0. HasAns/NoAns split the questions by whether
  their list of gold answers is empty (as given: a gold "The" makes a HasAns question).
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as skm

# ---------------------------------------------------------------------------------------------------------
# classification / regression


def accuracy(predictions: Sequence, references: Sequence) -> float:
    return float(np.mean(np.asarray(predictions) == np.asarray(references)))


def f1(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Binary F1 of the positive class (label 1), as GLUE reports it for MRPC and QQP."""
    return float(skm.f1_score(references, predictions, pos_label=1, average="binary", zero_division=0.0))


# The correlations below are written with numpy because the report's bootstrap calls them thousands of times:
# sklearn's and scipy's input checks took 3.6 ms (MCC) and 1 ms (Pearson + Spearman) a call, 34 s of the CPU
# default's `tables` job. Each equals its library's value (tests/test_metrics.py, against sklearn and scipy).


def matthews_correlation(predictions: Sequence[int], references: Sequence[int]) -> float:
    """sklearn's `matthews_corrcoef` (Gorodkin's multi-class MCC from the confusion matrix; 0 where it is
    undefined, e.g. a constant prediction)."""
    y, y_hat = np.asarray(references), np.asarray(predictions)
    labels, codes = np.unique(np.concatenate([y, y_hat]), return_inverse=True)
    k, n = len(labels), len(y)
    confusion = np.bincount(codes[:n] * k + codes[n:], minlength=k * k).reshape(k, k).astype(np.float64)
    true, pred = confusion.sum(axis=1), confusion.sum(axis=0)
    cov_true_pred = np.trace(confusion) * n - true @ pred
    cov_pred, cov_true = n * n - pred @ pred, n * n - true @ true
    if cov_pred * cov_true == 0:
        return 0.0
    return float(cov_true_pred / np.sqrt(cov_true * cov_pred))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float(np.clip((a @ b) / np.sqrt((a @ a) * (b @ b)), -1.0, 1.0))


def pearson(predictions: Sequence[float], references: Sequence[float]) -> float:
    """scipy's `pearsonr` statistic. A constant prediction has no defined correlation; report 0 (no signal)
    rather than NaN. ptp, not std: the std of n equal floats can come out as 1e-17 (the mean is rounded)."""
    predictions, references = np.asarray(predictions, dtype=float), np.asarray(references, dtype=float)
    if np.ptp(predictions) == 0 or np.ptp(references) == 0:
        return 0.0
    return _correlation(predictions, references)


def spearmanr(predictions: Sequence[float], references: Sequence[float]) -> float:
    """scipy's `spearmanr` statistic: Pearson's correlation of the ranks, ties given their average rank."""
    predictions, references = np.asarray(predictions, dtype=float), np.asarray(references, dtype=float)
    if np.ptp(predictions) == 0 or np.ptp(references) == 0:
        return 0.0
    return _correlation(stats.rankdata(predictions), stats.rankdata(references))


# ---------------------------------------------------------------------------------------------------------
# SQuAD

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD answer normalization: lowercase, drop punctuation, drop articles, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


SQUAD_VERSIONS = ("v1.1", "v2.0")


def squad_exact(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str, version: str) -> float:
    """Token-overlap F1 after normalization; no common token scores 0. v2.0 only: if either side is empty,
    1 when both are (two empty answers have no common token: v1.1 scores them 0)."""
    if version not in SQUAD_VERSIONS:
        raise ValueError(f"unknown SQuAD version {version!r}; valid: {', '.join(SQUAD_VERSIONS)}")
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if version == "v2.0" and (not pred_tokens or not gold_tokens):
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def best_of_gold(prediction: str, golds: Sequence[str], version: str) -> tuple[float, float]:
    """(exact match, F1) of one question, each the max over its gold answers. v1.1: every gold as given;
    v2.0: the golds that do not normalize to empty, or the empty string if none is left (unanswerable)."""
    if version == "v2.0":
        golds = [g for g in golds if normalize_answer(g)] or [""]
    return max(squad_exact(prediction, g) for g in golds), max(squad_f1(prediction, g, version) for g in golds)


def _check_ids(predictions: Mapping, references: Mapping) -> None:
    missing = set(references) - set(predictions)
    if missing:
        raise ValueError(f"{len(missing)} question ids have no prediction, e.g. {sorted(missing)[:3]}")


def squad_v1(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict:
    """SQuAD v1.1: exact_match and f1 in percent, averaged over the reference questions."""
    _check_ids(predictions, references)
    unanswerable = sorted(qid for qid, golds in references.items() if len(golds) == 0)
    if unanswerable:  # evaluate-v1.1.py would take the max of nothing
        raise ValueError(f"{len(unanswerable)} questions have no gold answer, e.g. {unanswerable[:3]}; SQuAD v1.1 "
                         "has no unanswerable questions (score them as v2.0)")  # fmt: skip
    scores = np.array([best_of_gold(predictions[q], golds, "v1.1") for q, golds in references.items()]).reshape(-1, 2)
    return {"exact_match": 100 * float(np.mean(scores[:, 0])), "f1": 100 * float(np.mean(scores[:, 1]))}


def squad_v2(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict:
    """SQuAD v2.0: exact and f1 overall, then over answerable (HasAns) and unanswerable (NoAns) questions."""
    _check_ids(predictions, references)
    scores = np.array([best_of_gold(predictions[q], golds, "v2.0") for q, golds in references.items()]).reshape(-1, 2)
    em, f = scores[:, 0], scores[:, 1]
    has_answer = np.array([len(golds) > 0 for golds in references.values()], dtype=bool)
    out = {"exact": 100 * float(em.mean()), "f1": 100 * float(f.mean()), "total": int(len(em))}
    for prefix, subset in (("HasAns", has_answer), ("NoAns", ~has_answer)):
        if subset.any():  # the official script omits a half that has no questions
            out[f"{prefix}_exact"] = 100 * float(em[subset].mean())
            out[f"{prefix}_f1"] = 100 * float(f[subset].mean())
            out[f"{prefix}_total"] = int(subset.sum())
    return out


# ---------------------------------------------------------------------------------------------------------
# per task


def glue_classification(metric_names: Sequence[str], predictions, references) -> dict:
    functions = {"accuracy": accuracy, "f1": f1, "matthews_correlation": matthews_correlation}
    out = {name: functions[name](predictions, references) for name in metric_names if name in functions}
    if {"accuracy", "f1"} <= set(out):  # MRPC / QQP: the leaderboard's single number averages the two
        out["combined_score"] = (out["accuracy"] + out["f1"]) / 2
    return out


def glue_regression(predictions, references) -> dict:
    out = {"pearson": pearson(predictions, references), "spearmanr": spearmanr(predictions, references)}
    out["combined_score"] = (out["pearson"] + out["spearmanr"]) / 2
    return out


def task_metrics(spec, predictions, references) -> dict:
    """Metrics of one evaluation split of task `spec` (a `TaskSpec`), named as on its leaderboard.

    classification / multiple_choice: predictions and references are label ids (lists or arrays);
    regression: floats; span: {question id: predicted text ("" = no answer)} and
    {question id: list of gold answer texts (empty = unanswerable)}, see `squad_references`.
    """
    if spec.kind in ("classification", "multiple_choice"):
        return glue_classification(spec.metrics, predictions, references)
    if spec.kind == "regression":
        return glue_regression(np.asarray(predictions, dtype=float), np.asarray(references, dtype=float))
    if spec.kind == "span":
        return squad_v2(predictions, references) if spec.unanswerable else squad_v1(predictions, references)
    raise ValueError(f"unknown task kind {spec.kind!r}")


def squad_references(dataset) -> dict[str, list[str]]:
    """{id: gold answer texts} from a SQuAD-schema `datasets.Dataset` (hub or local, same columns)."""
    return {qid: list(answers["text"]) for qid, answers in zip(dataset["id"], dataset["answers"])}
