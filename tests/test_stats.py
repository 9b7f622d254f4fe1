"""sparsebert.stats: bootstrap intervals on hand-made and simulated cases, the drop order of the DAM search's
snapshots, and every verdict rule on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest

from sparsebert import stats
from sparsebert.data.tasks import TASKS
from sparsebert.metrics import task_metrics
from sparsebert.stats import CONTRADICTED, INCONCLUSIVE, SUPPORTED


def paired_difference(runs_a, runs_b, spec, metric, samples=400, seed=0):
    """Point and interval of b - a over seeds, paired on the examples and the seeds."""
    rng = np.random.default_rng(seed)
    points, draws = stats.resampled_scores(spec, metric, [*runs_a, *runs_b], samples, rng, chunk=64)
    (pa, pb), (da, db) = np.split(points, [len(runs_a)]), np.split(draws, [len(runs_a)])
    diff = stats.seed_level(db - da, rng)
    return pb.mean() - pa.mean(), stats.percentile_interval(diff)


@pytest.mark.parametrize("task", ["proxy_pair", "proxy_single", "proxy_regression"])
def test_identical_predictions_give_a_zero_interval(task):
    spec = TASKS[task]
    rng = np.random.default_rng(1)
    refs = rng.normal(size=80) if spec.kind == "regression" else rng.integers(0, 2, 80)
    preds = refs + rng.normal(size=80) if spec.kind == "regression" else rng.integers(0, 2, 80)
    point, (lo, hi) = paired_difference([(preds, refs)], [(preds.copy(), refs)], spec, spec.main_metric)
    assert point == 0.0 and (lo, hi) == (0.0, 0.0)


def test_a_known_accuracy_difference_is_recovered():
    spec = TASKS["proxy_pair"]
    refs = np.random.default_rng(2).integers(0, 3, 500)
    wrong = (refs + 1) % 3
    a = np.where(np.arange(500) < 300, refs, wrong)  # 60 % correct
    b = np.where(np.arange(500) < 350, refs, wrong)  # 70 % correct, right wherever a is
    point, (lo, hi) = paired_difference([(a, refs)], [(b, refs)], spec, "accuracy", samples=1000)
    assert point == pytest.approx(0.1)
    # Paired: b differs from a on 50 examples, all in b's favour; the difference's sd is about 0.013.
    assert 0.07 < lo < 0.1 < hi < 0.13


def test_mean_metrics_on_a_resample_equal_task_metrics_of_that_resample():
    rng = np.random.default_rng(3)
    spec = TASKS["proxy_choice"]
    refs, preds = rng.integers(0, 4, 60), rng.integers(0, 4, 60)
    _, draws = stats.resampled_scores(spec, "accuracy", [(preds, refs)], 5, np.random.default_rng(9))
    idx = np.random.default_rng(9).integers(0, 60, size=(5, 60))  # the same draws
    assert draws[0] == pytest.approx([task_metrics(spec, preds[i], refs[i])["accuracy"] for i in idx])
    # SQuAD v2 (ids are dict keys, so a resample's repeated questions get fresh ids for the reference call).
    spec = TASKS["proxy_qa"]
    golds = {f"q{k}": ([] if k % 3 == 0 else [f"the word {k}", f"word {k}"]) for k in range(30)}
    answers = {q: ("" if k % 4 == 0 else f"word {k}" if k % 2 else "a word") for k, q in enumerate(golds)}
    _, draws = stats.resampled_scores(spec, "f1", [(answers, golds)], 5, np.random.default_rng(9))
    idx = np.random.default_rng(9).integers(0, 30, size=(5, 30))
    ids = list(golds)
    for row, got in zip(idx, draws[0]):
        p = {f"{m}-{ids[i]}": answers[ids[i]] for m, i in enumerate(row)}
        r = {f"{m}-{ids[i]}": golds[ids[i]] for m, i in enumerate(row)}
        assert got == pytest.approx(task_metrics(spec, p, r)["f1"])


def test_seed_scale():
    assert stats.seed_scale(1) == 0.0
    assert stats.seed_scale(3) == pytest.approx(np.sqrt(1.5) * 4.3027 / 1.95996, rel=1e-4)
    assert stats.seed_scale(1000) == pytest.approx(1.0, abs=0.01)


def coverage(seed_sd: float, example_sd: float, seeds: int, n: int = 100, reps: int = 300) -> float:
    """How often the two-way interval of a mean score covers the true mean: scores x[s, i] = seed effect +
    example effect + noise, the same examples for every seed (as in a run)."""
    rng = np.random.default_rng(12345)
    hits = 0
    for _ in range(reps):
        x = (seed_sd * rng.normal(size=(seeds, 1)) + example_sd * rng.normal(size=(1, n))
             + 0.2 * rng.normal(size=(seeds, n)))  # fmt: skip
        idx = rng.integers(0, n, size=(300, n))
        counts = np.stack([np.bincount(row, minlength=n) for row in idx]).T / n
        lo, hi = stats.percentile_interval(stats.seed_level(x @ counts, rng))
        hits += lo <= 0.0 <= hi
    return hits / reps


@pytest.mark.parametrize("seed_sd, example_sd, seeds", [(1.0, 0.05, 3), (0.0, 1.0, 3), (0.3, 1.0, 5), (0.0, 1.0, 1)])
def test_intervals_cover_about_95_percent_in_simulations(seed_sd, example_sd, seeds):
    """Seed noise dominant with 3 seeds (a plain percentile bootstrap of 3 seeds covers about 70 %), example
    noise dominant, both; and one seed without seed noise."""
    assert 0.9 <= coverage(seed_sd, example_sd, seeds) <= 0.995


def test_one_seed_has_no_seed_level():
    draws = np.arange(12.0).reshape(1, 2, 6)
    assert np.array_equal(stats.seed_level(draws, np.random.default_rng(0)), draws[0])


def test_nested_mean_draws_resample_heads_within_seeds():
    rng = np.random.default_rng(0)
    same = np.full((3, 4), 0.25)
    assert np.allclose(stats.nested_mean_draws(same, 200, rng), 0.25)
    lo, hi = stats.percentile_interval(stats.nested_mean_draws(np.array([[0.0, 0.1, 0.2, 0.1]]), 500, rng))
    assert 0.0 <= lo < 0.1 < hi <= 0.2


def test_drop_steps_take_the_first_snapshot_below_half_after_the_initial_one():
    steps = np.array([0, 10, 20, 30])
    keep = np.array([  # (T=4, H=1, L=4): offsets 0..3
        [[0.4999, 0.5001, 0.5, 0.5]],  # initial logits: below 0.5 by chance, ignored
        [[0.6, 0.45, 0.7, 0.55]],
        [[0.4, 0.55, 0.7, 0.52]],  # offset 1 back above 0.5: it was still dropped at step 10
        [[0.3, 0.6, 0.8, 0.49]],
    ])  # fmt: skip
    assert stats.drop_steps(steps, keep).tolist() == [[20.0, 10.0, np.inf, 30.0]]


def test_diagonal_drop_rank_dam_s():
    inf = np.inf
    drop = np.array([
        [10.0, 20.0, 30.0, inf],  # the diagonal first
        [30.0, 10.0, 20.0, 40.0],  # after 2 of 3
        [inf, inf, 10.0, inf],  # never: 1 dropped before it, 2 ties
        [20.0, 20.0, 30.0, 10.0],  # 1 before, 1 tie
    ])  # fmt: skip
    assert stats.diagonal_drop_rank(drop, "dam_s") == pytest.approx([0.0, 2 / 3, 1 / 3 + 1 / 3, 1 / 3 + 1 / 6])


def test_diagonal_drop_rank_dam_u_compares_each_row_with_its_own_keys():
    inf = np.inf
    drop = np.array([[[10.0, 20.0, 30.0],  # row 0: diagonal first -> 0
                      [20.0, 40.0, 30.0],  # row 1: diagonal last -> 1
                      [30.0, 30.0, inf]]])  # row 2: never dropped, both others dropped before it -> 1
    assert stats.diagonal_drop_rank(drop, "dam_u") == pytest.approx([2 / 3])


@pytest.mark.parametrize("lo, hi, expected", [(-0.5, 0.8, SUPPORTED), (1.2, 3.0, CONTRADICTED), (-4.0, -1.5, CONTRADICTED),
                                              (-1.5, 0.2, INCONCLUSIVE), (0.5, 1.5, INCONCLUSIVE)])  # fmt: skip
def test_equivalence_verdict(lo, hi, expected):
    assert stats.equivalence_verdict(lo, hi, margin=1.0) == expected


@pytest.mark.parametrize("lo, hi, expected", [(0.1, 2.0, SUPPORTED), (-2.0, -0.1, CONTRADICTED), (-0.1, 2.0, INCONCLUSIVE)])
def test_superiority_verdict(lo, hi, expected):
    assert stats.superiority_verdict(lo, hi) == expected


@pytest.mark.parametrize("lo, hi, expected", [(0.05, 0.3, SUPPORTED), (0.6, 0.9, CONTRADICTED), (0.3, 0.6, INCONCLUSIVE),
                                              (0.5, 0.5, INCONCLUSIVE)])  # fmt: skip
def test_drop_first_verdict(lo, hi, expected):
    assert stats.drop_first_verdict(lo, hi) == expected


@pytest.mark.parametrize("verdicts, expected", [
    ([SUPPORTED, SUPPORTED, INCONCLUSIVE], SUPPORTED),
    ([SUPPORTED, SUPPORTED, SUPPORTED, CONTRADICTED], INCONCLUSIVE),
    ([CONTRADICTED, CONTRADICTED, SUPPORTED], CONTRADICTED),
    ([SUPPORTED, INCONCLUSIVE], INCONCLUSIVE),
    ([], INCONCLUSIVE),
])  # fmt: skip
def test_majority_verdict(verdicts, expected):
    assert stats.majority_verdict(verdicts) == expected


def test_seed_pairing_cancels_a_shared_seed_effect():
    """Seed s gives every variant the same start: a seed effect shared by a and b drops out of b - a."""
    rng = np.random.default_rng(4)
    shared = 5.0 * rng.normal(size=(3, 1, 1))  # (S, C, B): a large seed effect
    noise = 0.1 * rng.normal(size=(2, 3, 1, 400))
    a, b = shared + noise[0], shared + 1.0 + noise[1]
    lo, hi = stats.percentile_interval(stats.seed_level(b - a, rng)[0])
    assert 0.5 < lo < 1.0 < hi < 1.5
