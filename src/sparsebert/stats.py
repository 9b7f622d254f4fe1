"""Statistics behind the tables and findings.md: bootstrap intervals of scores and of score differences, the
DAM search's drop order, and the verdict rules. Small pure functions of numpy arrays; every random draw comes
from a seeded `numpy.random.Generator` handed in, so a report is the same bytes for the same results.

The design the intervals describe. Every variant is pretrained once per seed (config `seeds`) and each of those
models is fine-tuned once per task; every (variant, seed) is evaluated on the SAME eval examples (fine-tuning
uses one seed per task, so the eval subset is the same). Two sources of noise are crossed: the seed (which
model training happened to produce) and the eval examples (which test set happened to be drawn). A score's
interval must cover both. A difference between two variants is paired twice: on the examples, and on the
seed, which is a block of the design (seed s gives every fixed-mask variant the same initial weights and the
same batches; a randomised block design, so the variants' seed effects cancel in the difference as far as
they are shared, and nothing is lost where they are not).

Method (a two-way bootstrap: Davison & Hinkley 1997, ch. 3.8; Owen 2007 for crossed factors):
1. Examples. Draw B resamples of each eval column's examples (with replacement), shared by every variant
   and seed, and compute each (variant, seed)'s metric on each resample with `metrics.task_metrics`
   (`resampled_scores`). Sharing the resample pairs the variants on the examples: identical predictions
   give a difference of exactly 0 in every draw.
2. Seeds. In each draw b, resample the seeds with replacement and average their scores on the whole eval
   set (`seed_level`): a variant's own scores for its interval, or the per-seed differences b - a (seed s of b
   minus seed s of a) for a comparison. One draw of seeds applies to every column (a seed is one model).
   With n seeds, the bootstrap spread of a mean of n values is too small: its variance is (n-1)/n of the
   unbiased s^2/n, and its tails are normal-like where a mean of n values has t-tails with n-1 degrees of
   freedom (a percentile interval from 3 seeds covers about 74 %, not 95 %). So the seed-level deviation of
   each draw from the all-seed mean is scaled by sqrt(n / (n-1)) * t_{n-1} / z (`seed_scale`). To it each
   draw adds the part of the example resample's effect that every seed shares (`shared_share`): a seed's own
   errors already move its score on the fixed eval set, and so the spread of the seeds; counted again on the
   example level, they made a difference's interval up to 2x too wide (its shared example effects cancel, so own
   errors are most of its example noise). With seed noise dominant the interval is the t-interval over seeds,
   with shared example noise dominant the paired bootstrap (coverage simulations in tests/test_stats.py). With
   one seed there is no seed level: the interval covers the eval examples only, and the report says that it
   ignores seed variance.
3. The 95 % interval is the 2.5th-97.5th percentile of the B draws (`percentile_interval`). An average over
   columns is averaged inside each draw (each column resampled on its own examples).

Claim 1 (the DAM search drops the diagonal first) uses the snapshots of the keep probabilities:
`area_below` measures how far and how long each position sat below `DROPPED` (0.25, out of reach of the noise
around the initial 0.5), `diagonal_rank` where the diagonal falls among the positions by that area (it decides
the verdict) and by final keep probability (reported beside it), and `nested_mean_draws` bootstraps the mean
over seeds x heads (the seeds, each as the mean of its heads, with the same seed-level scaling; the heads are
resampled only where there is one seed). The mean over several DAM runs (`pooled_mean_draws`) resamples the
seeds jointly across the runs: they share the seeds, a block as above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats

from sparsebert.metrics import task_metrics

LEVEL = 0.95
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
NO_PREFERENCE = 0.5  # rank of a diagonal at a random place in the order, or tied with everything (ties count half)
# Claim 1: a position counts as dropped while its keep probability is below this. The search starts every logit
# at 1e-3 * randn (p = 0.5 +- 0.00025) and, measured on one H200 at dam_lr 0.005, the probabilities wander within
# 0.5 +- 0.005 for ~50 steps before they move: 0.25 (logit -1.1, 50x that wander) is out of that noise's reach.
# At the configs' dam_lr 0.05 the logits of unlearned positions random-walk, and many reach 0.25 within 1,000
# steps; that noise is exchangeable between the diagonal and the other positions, so the rank stays centred on
# 0.5 (tests/test_stats.py: simulated null searches, and a learned drift under the same noise).
DROPPED = 0.25


# ---------------------------------------------------------------------------------------------------------
# Intervals


def percentile_interval(draws: np.ndarray, level: float = LEVEL, bounds: tuple[float, float] | None = None
                        ) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap draws (last axis), intersected with `bounds`, the
    range the estimated quantity can take (the seed-level scaling can carry draws past it; the intersection
    keeps the coverage)."""
    lo, hi = np.quantile(np.asarray(draws, dtype=float), [(1 - level) / 2, (1 + level) / 2], axis=-1)
    if bounds is not None:
        lo, hi = np.clip([lo, hi], *bounds)
    return float(lo), float(hi)


def seed_scale(n: int, level: float = LEVEL) -> float:
    """Factor on the seed-level bootstrap deviation for n seeds: sqrt(n/(n-1)) makes its variance the unbiased
    s^2/n, t_{n-1}/z gives it the t-distribution's tails (n = 3 at 95 %: 1.22 * 4.30 / 1.96 = 2.69). 0 for
    n < 2 (no seed level)."""
    if n < 2:
        return 0.0
    q = (1 + level) / 2
    return math.sqrt(n / (n - 1)) * float(scipy_stats.t.ppf(q, n - 1) / scipy_stats.norm.ppf(q))


def seed_level(draws: np.ndarray, rng: np.random.Generator, level: float = LEVEL) -> np.ndarray:
    """Two-way bootstrap draws of the mean over seeds: `draws` (S, ..., B) are the scores (or the per-seed
    differences of two variants' scores) of S seeds on B example resamples (draw b shares its examples across
    seeds and variants); returns (..., B), each middle entry (a column, an average of columns) on its own.

    A draw is the all-seed mean, plus the seed level: the seeds resampled with replacement (one pick for all
    middle axes: every column of one model) and their mean's deviation scaled by `seed_scale(S)`, plus the
    examples' shared share: the deviation of the seeds' mean on resample b, scaled by `shared_share`. Each seed's
    own example noise (its errors that other models do not share) already moves its score on the fixed eval set,
    and so the spread of the seeds; adding it again on the example level double-counted it, and the interval of a
    difference between two variants, whose shared example effects cancel, came out up to 2x too wide (see
    `shared_share`). Draws that do not vary over the resamples (the DAM searches' per-seed means) add no example
    level."""
    draws = np.asarray(draws, dtype=float)
    S, B = draws.shape[0], draws.shape[-1]
    if S < 2:
        return draws.mean(axis=0)  # (..., B): example level only
    per_seed = draws.mean(axis=-1, keepdims=True)  # (S, ..., 1): a seed's score, its example noise included
    center = per_seed.mean(axis=0)  # (..., 1)
    examples = draws - per_seed  # (S, ..., B): each seed's deviation on each example resample
    pick = rng.integers(0, S, size=(S, B))  # (S, B): the seeds drawn in each draw
    picked = np.take_along_axis(np.broadcast_to(per_seed, draws.shape),
                                pick.reshape((S,) + (1,) * (draws.ndim - 2) + (B,)), axis=0)  # fmt: skip
    common = examples.mean(axis=0)  # (..., B)
    return center + seed_scale(S, level) * (picked.mean(axis=0) - center) + shared_share(examples) * common


def shared_share(examples: np.ndarray) -> np.ndarray:
    """The factor (..., 1) that leaves of the seeds' mean deviation on the example resamples only its part shared
    by every seed. examples (S, ..., B): each seed's deviation from its own mean score per resample. A deviation
    is shared (the resample's examples are easy or hard for every model: variance v_sh) plus the seed's own
    (v_own, independent between seeds): the mean over S seeds varies by v_sh + v_own / S, a single seed by
    v_sh + v_own, so v_sh = (var(mean) - mean(var) / S) / (1 - 1 / S), floored at 0; the factor is
    sqrt(v_sh / var(mean)), between 0 and 1 (a mean's variance is at most the mean of the variances). The seed
    level carries v_own already (a seed's score on the eval set includes its own errors), so the example level
    adds v_sh alone: an interval of seed noise, own example noise and shared example noise, each counted once
    (coverage simulations in tests/test_stats.py, including the case of own noise alone, which the sum of
    both levels covered 100 % of the time)."""
    S = examples.shape[0]
    var_mean = examples.mean(axis=0).var(axis=-1, keepdims=True)
    mean_var = examples.var(axis=-1, keepdims=True).mean(axis=0)
    shared = np.maximum((var_mean - mean_var / S) / (1 - 1 / S), 0.0)
    return np.sqrt(np.divide(shared, var_mean, out=np.zeros_like(var_mean), where=var_mean > 0))


def head_means(values: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Per seed, `samples` means of the seed's H heads resampled with replacement. values (S, H) -> (S, samples).
    `per_seed_draws` uses it for a single seed, where the heads are all there is to resample."""
    values = np.asarray(values, dtype=float)
    S, H = values.shape
    pick = rng.integers(0, H, size=(S, samples, H))
    return np.take_along_axis(values[:, None, :], pick, axis=2).mean(axis=2)


def per_seed_draws(values: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """The seed units of `nested_mean_draws`: values (S, H) -> (S, samples). With 2 or more seeds, each seed's
    mean over its heads, the same in every draw: the seeds are resampled, the heads are not. A seed's mean already
    carries its heads' spread (var = seed variance + head variance / H), so the spread of the seed means holds
    both levels; resampling the heads within each seed as well adds the head variance a second time (Davison &
    Hinkley 1997, ch. 3.8: resample the top level of a nested design). That made a nominal 95 % interval cover
    99.8-100 % (3 seeds x 4 heads, head sd 0.17 and seed sd 0.07 as in config/cpu_claim1.yaml's DAM_s search;
    the coverage test in tests/test_stats.py; 93.5-95.5 % now). With one seed there is no seed level: the heads,
    resampled, are all the interval can see (findings.seed_gated keeps such a verdict inconclusive)."""
    values = np.asarray(values, dtype=float)
    if values.shape[0] > 1:
        return np.repeat(values.mean(axis=1, keepdims=True), samples, axis=1)
    return head_means(values, samples, rng)


def nested_mean_draws(values: np.ndarray, samples: int, rng: np.random.Generator, level: float = LEVEL) -> np.ndarray:
    """Bootstrap draws (samples,) of the mean of `values` (S, H): H units (heads) nested in each of S seeds (a
    head of one seed has nothing to do with the same-numbered head of another). The seeds are resampled as in
    `seed_level`, each as the mean of its heads (`per_seed_draws` says why not the heads too)."""
    return seed_level(per_seed_draws(values, samples, rng), rng, level)


def pooled_mean_draws(runs: Sequence[np.ndarray], samples: int, rng: np.random.Generator, level: float = LEVEL
                      ) -> np.ndarray:
    """Bootstrap draws (samples,) of the mean over runs of each run's mean of `values` (S, H), for runs that
    share their S seeds (the DAM searches of one config: seed s gives every search the same initial weights,
    batches and logit init, so a seed effect is common to all runs). The seed is a block: one pick of seeds
    per draw serves every run (resampling it per run would treat R runs as R independent samples of the seed
    effect and narrow the interval by ~sqrt(R); the same run entered twice would count as twice the evidence).

    Runs with the same head count are averaged per (seed, head) first, then bootstrapped as one run
    (`nested_mean_draws`): head h of seed s holds its searches from the same start. Runs with different head
    counts (different heads) have their per-seed means (`per_seed_draws`) averaged over runs, then the seeds
    resampled once. Runs must hold the same number of seeds (in the same order, as `findings.diagonal_ranks`
    reads them from the config's `seeds`)."""
    runs = [np.asarray(v, dtype=float) for v in runs]
    if not runs or len({v.shape[0] for v in runs}) != 1:
        raise ValueError(f"pooled_mean_draws: the runs must share one seed list, got seed counts "
                         f"{[v.shape[0] for v in runs]}")  # fmt: skip
    if len({v.shape for v in runs}) == 1:
        return nested_mean_draws(np.mean(runs, axis=0), samples, rng, level)
    per_seed = np.mean([per_seed_draws(v, samples, rng) for v in runs], axis=0)  # (S, samples), runs weigh equally
    return seed_level(per_seed, rng, level)


# ---------------------------------------------------------------------------------------------------------
# Metrics on resampled eval examples


SPAN_MEANS = ("exact", "exact_match", "f1")  # the SQuAD scripts' means over every question


def is_mean_metric(spec, metric: str) -> bool:
    """Metrics that are the mean of a per-example score: accuracy, and SQuAD's exact match and F1 (averaged over
    questions by the official scripts). F1 of a class, Matthews and the correlations are not, nor SQuAD v2's
    HasAns_* / NoAns_* (means over a subset of the questions) and `total`."""
    return metric == "accuracy" or (spec.kind == "span" and metric in SPAN_MEANS)


def per_example_scores(spec, metric: str, predictions, references) -> np.ndarray:
    """A mean metric of every example on its own, by `task_metrics` on a one-example split (span: the
    questions in the order of `references`)."""
    if spec.kind == "span":
        return np.array([task_metrics(spec, {qid: predictions[qid]}, {qid: golds})[metric]
                         for qid, golds in references.items()])  # fmt: skip
    predictions, references = np.asarray(predictions), np.asarray(references)
    return np.array([task_metrics(spec, predictions[i : i + 1], references[i : i + 1])[metric]
                     for i in range(len(references))])  # fmt: skip


def resampled_scores(spec, metric: str, runs: Sequence[tuple], samples: int, rng: np.random.Generator,
                     chunk: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """`metric` of every run (predictions, references) of one eval split, on the whole split and on each of
    `samples` bootstrap resamples of its examples: returns points (R,) and draws (R, samples).

    Every run must hold the same examples (equal references; span: the same question ids): each resample
    is drawn once and scored for every run, which pairs the runs on the examples. Mean metrics
    (`is_mean_metric`) are averaged from `per_example_scores` (what `task_metrics` gives on the resample,
    without calling it per resample; SQuAD's id-keyed inputs cannot even hold a resample's repeated
    questions); every other metric calls `task_metrics` on each resample's arrays. Resamples are drawn
    `chunk` at a time (a resample of QQP's 40k examples is 40k indices)."""
    refs0 = runs[0][1]
    order = list(refs0) if spec.kind == "span" else None  # question ids, in the first run's order
    same = (lambda refs: dict(refs) == dict(refs0)) if order else (lambda refs: np.array_equal(refs, refs0))
    if not all(same(refs) for _, refs in runs):
        raise ValueError("the runs hold different eval examples (references differ): they cannot be paired")
    n = len(refs0)
    points, draws = np.empty(len(runs)), np.empty((len(runs), samples))
    if order and not is_mean_metric(spec, metric):  # id-keyed questions cannot hold a resample's repeats
        raise ValueError(f"{spec.name}: {metric!r} cannot be resampled; the span metrics that can: {SPAN_MEANS}")
    if is_mean_metric(spec, metric):
        if order is not None:
            runs = [({q: preds[q] for q in order}, {q: refs[q] for q in order}) for preds, refs in runs]
        scores = np.stack([per_example_scores(spec, metric, preds, refs) for preds, refs in runs])  # (R, n)
        points[:] = scores.mean(axis=1)
        for start in range(0, samples, chunk):
            idx = rng.integers(0, n, size=(min(chunk, samples - start), n))
            counts = np.stack([np.bincount(row, minlength=n) for row in idx], axis=1) / n  # (n, k)
            draws[:, start : start + len(idx)] = scores @ counts
        return points, draws
    arrays = [(np.asarray(preds), np.asarray(refs)) for preds, refs in runs]
    for r, (preds, refs) in enumerate(arrays):
        points[r] = task_metrics(spec, preds, refs)[metric]
    for start in range(0, samples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, samples - start), n))
        for r, (preds, refs) in enumerate(arrays):
            draws[r, start : start + len(idx)] = [task_metrics(spec, preds[i], refs[i])[metric] for i in idx]
    return points, draws


# ---------------------------------------------------------------------------------------------------------
# The DAM search's drop order (claim 1)


def area_below(steps: np.ndarray, keep_prob: np.ndarray, threshold: float = DROPPED) -> np.ndarray:
    """How far and how long each position's keep probability sat below `threshold` during the search: the
    integral over steps of max(0, threshold - p) (trapezoids between snapshots), divided by the steps the
    snapshots span, so a mean depth in probability units (0: never below; threshold: at 0 from the start).

    steps (T,), keep_prob (T, ...) -> (...). A position dropped earlier or deeper collects more; one that never
    leaves the band around the initial 0.5 collects exactly 0, whatever its noise."""
    steps, keep_prob = np.asarray(steps, dtype=float), np.asarray(keep_prob, dtype=float)
    depth = np.clip(threshold - keep_prob, 0.0, None)  # (T, ...)
    span = steps[-1] - steps[0] if len(steps) > 1 else 0.0
    if span <= 0:
        return depth[-1] if len(steps) else np.zeros(keep_prob.shape[1:])
    widths = np.diff(steps).reshape((-1,) + (1,) * (depth.ndim - 1))  # (T-1, 1, ...)
    return ((depth[1:] + depth[:-1]) / 2 * widths).sum(axis=0) / span


def diagonal_rank(value: np.ndarray, kind: str) -> np.ndarray:
    """Per head, the fraction of the other positions whose `value` is strictly lower than the diagonal's, ties
    counting half: 0 = the diagonal is the lowest, 1 = the highest, 0.5 = no preference (what a diagonal at a
    random place in the order, or tied with every position, gives). Lower must mean "more dropped": pass final
    keep probabilities as they are, areas below the threshold negated.

    dam_s: value (H, L) per offset |i - j| (0 = diagonal), the other offsets counted once each (one mask
    parameter each). dam_u: value (H, L, L); each query row compares its diagonal entry with the row's other
    keys, and the rows are averaged."""
    value = np.asarray(value, dtype=float)
    if kind == "dam_s":
        diag, other = value[:, :1], value[:, 1:]  # (H, 1), (H, L-1)
        return (other < diag).mean(axis=1) + 0.5 * (other == diag).mean(axis=1)
    H, L, _ = value.shape
    off = ~np.eye(L, dtype=bool)
    diag = np.diagonal(value, axis1=1, axis2=2)[:, :, None]  # (H, L, 1)
    other = value[:, off].reshape(H, L, L - 1)  # row i without its diagonal entry
    per_row = (other < diag).mean(axis=2) + 0.5 * (other == diag).mean(axis=2)
    return per_row.mean(axis=1)


# ---------------------------------------------------------------------------------------------------------
# Verdict rules


def equivalence_verdict(lo: float, hi: float, margin: float) -> str:
    """Equivalence within +-margin: supported if the interval lies inside (-margin, margin), contradicted if
    it lies entirely outside it (above +margin or below -margin), inconclusive otherwise."""
    if -margin < lo and hi < margin:
        return SUPPORTED
    if lo > margin or hi < -margin:
        return CONTRADICTED
    return INCONCLUSIVE


def superiority_verdict(lo: float, hi: float) -> str:
    """A positive effect: supported if the interval lies above 0, contradicted below 0, inconclusive if it
    contains 0."""
    if lo > 0:
        return SUPPORTED
    if hi < 0:
        return CONTRADICTED
    return INCONCLUSIVE


def drop_first_verdict(lo: float, hi: float) -> str:
    """The diagonal dropped before most positions: supported if the interval of the mean drop rank lies below
    the no-preference 0.5, contradicted if it lies above, inconclusive otherwise."""
    if hi < NO_PREFERENCE:
        return SUPPORTED
    if lo > NO_PREFERENCE:
        return CONTRADICTED
    return INCONCLUSIVE


def majority_verdict(verdicts: Sequence[str]) -> str:
    """Overall verdict of several comparisons: supported if more than half are supported and none is
    contradicted; contradicted if more than half are contradicted; inconclusive otherwise (also for none)."""
    n = len(verdicts)
    supported, contradicted = verdicts.count(SUPPORTED), verdicts.count(CONTRADICTED)
    if n and supported > n / 2 and not contradicted:
        return SUPPORTED
    if n and contradicted > n / 2:
        return CONTRADICTED
    return INCONCLUSIVE
