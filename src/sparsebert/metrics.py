"""Downstream metrics with the names the GLUE / SQuAD / SWAG leaderboards use.

Scales follow each benchmark's own convention so numbers compare directly with published ones:
GLUE and SWAG metrics are fractions in [0, 1] (as HF `evaluate`'s glue metric reports them), SQuAD metrics
are percentages in [0, 100] (as the official v1.1 / v2.0 evaluation scripts report them).

SQuAD scoring (our own implementation of the official rules):
- answers are normalized: lowercase, punctuation removed, articles a/an/the removed, whitespace collapsed;
- exact match and token F1 are taken against every gold answer and the best one counts;
- v2.0: a question with no gold answer is scored against the empty string, so predicting "" there scores
  1 (EM and F1) and any non-empty prediction scores 0; HasAns/NoAns report the two halves separately.
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


def squad_exact(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 after normalization; if either side is empty, 1 only when both are."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def best_of_gold(score, prediction: str, golds: Sequence[str]) -> float:
    """Max of `score` over gold answers; no gold answer means the question is unanswerable (gold = "")."""
    golds = [g for g in golds if normalize_answer(g)] or [""]
    return max(score(prediction, g) for g in golds)


def _check_ids(predictions: Mapping, references: Mapping) -> None:
    missing = set(references) - set(predictions)
    if missing:
        raise ValueError(f"{len(missing)} question ids have no prediction, e.g. {sorted(missing)[:3]}")


def squad_v1(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict:
    """SQuAD v1.1: exact_match and f1 in percent, averaged over the reference questions."""
    _check_ids(predictions, references)
    em = [best_of_gold(squad_exact, predictions[qid], golds) for qid, golds in references.items()]
    f = [best_of_gold(squad_f1, predictions[qid], golds) for qid, golds in references.items()]
    return {"exact_match": 100 * float(np.mean(em)), "f1": 100 * float(np.mean(f))}


def squad_v2(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict:
    """SQuAD v2.0: exact and f1 overall, then over answerable (HasAns) and unanswerable (NoAns) questions."""
    _check_ids(predictions, references)
    em, f, has_answer = [], [], []
    for qid, golds in references.items():
        em.append(best_of_gold(squad_exact, predictions[qid], golds))
        f.append(best_of_gold(squad_f1, predictions[qid], golds))
        has_answer.append(any(normalize_answer(g) for g in golds))
    em, f, has_answer = np.array(em), np.array(f), np.array(has_answer, dtype=bool)
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
