"""sparsebert.stats: bootstrap intervals on hand-made and simulated cases, claim 1's ranks of the diagonal in
the DAM search's snapshots (synthetic trajectories with known answers, tests/_keep_trajectories.py), and every
verdict rule on hand-made inputs."""

from __future__ import annotations

from collections import OrderedDict

import _keep_trajectories as trajectories
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


def coverage(seed_sd: float, example_sd: float, seeds: int, own_sd: float = 0.2, n: int = 100, reps: int = 300
             ) -> float:
    """How often the two-way interval of a mean score covers the true mean: scores x[s, i] = seed effect +
    example effect (shared by every seed) + the seed's own noise on that example, the same examples for every
    seed (as in a run). The per-seed differences of two variants have this form too, their shared example
    effects mostly cancelled: own noise dominant."""
    rng = np.random.default_rng(12345)
    hits = 0
    for _ in range(reps):
        x = (seed_sd * rng.normal(size=(seeds, 1)) + example_sd * rng.normal(size=(1, n))
             + own_sd * rng.normal(size=(seeds, n)))  # fmt: skip
        idx = rng.integers(0, n, size=(300, n))
        counts = np.stack([np.bincount(row, minlength=n) for row in idx]).T / n
        lo, hi = stats.percentile_interval(stats.seed_level(x @ counts, rng))
        hits += lo <= 0.0 <= hi
    return hits / reps


@pytest.mark.parametrize("seed_sd, example_sd, seeds, own_sd", [
    (1.0, 0.05, 3, 0.2), (0.0, 1.0, 3, 0.2), (0.3, 1.0, 5, 0.2), (0.0, 1.0, 1, 0.2), (1.0, 0.05, 2, 0.2),
    (0.0, 0.0, 3, 1.0), (0.0, 0.2, 3, 1.0), (0.1, 0.5, 3, 1.0), (0.0, 0.0, 2, 1.0)])  # fmt: skip
def test_intervals_cover_about_95_percent_in_simulations(seed_sd, example_sd, seeds, own_sd):
    """Seed noise dominant with 3 seeds (a plain percentile bootstrap of 3 seeds covers about 74 %), shared
    example noise dominant, both; one seed without seed noise; each seed's own example noise dominant (a
    difference of two fine-tuned models, each wrong on its own examples: counted on both levels, it was covered
    100 % of the time), alone, beside some shared noise, beside all three, and with 2 seeds."""
    assert 0.9 <= coverage(seed_sd, example_sd, seeds, own_sd) <= 0.985


def test_seeds_with_identical_draws_give_their_example_draws_unchanged():
    """Every seed scores the same on every resample (skewed draws 0, 0, 0, 1): no seed level, and all of the example
    noise is shared, so the two-way draws are the example draws themselves, not their mirror image."""
    draws = np.array([0.0, 0.0, 0.0, 1.0])
    got = stats.seed_level(np.stack([draws, draws, draws]), np.random.default_rng(0))
    assert got == pytest.approx(draws)


def test_shared_share_by_hand():
    """Deviations of 2 seeds on 4 resamples, one column each: (a) the same for both seeds: all shared, factor 1;
    (b) opposite: their mean never moves, factor 0 (0 / 0 taken as 0); (c) own only, at different resamples:
    mean [-.5, .5, -.5, .5] varies by 0.25, each seed by 0.5: v_sh = (0.25 - 0.5 / 2) / (1 / 2) = 0, factor 0;
    (d) shared [-1, 1, -1, 1] plus (c)'s own: var(mean) 2.25, mean(var) 2.5, v_sh = (2.25 - 1.25) / 0.5 = 2,
    factor sqrt(2 / 2.25) = 0.943. Per column: each column's own factor."""
    shared = np.array([-1.0, 1.0, -1.0, 1.0])
    own = np.array([[-1.0, 1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 1.0]])
    examples = np.stack([np.stack([shared, shared]), np.stack([shared, -shared]), own, shared + own], axis=1)
    assert stats.shared_share(examples)[:, 0] == pytest.approx([1.0, 0.0, 0.0, np.sqrt(2 / 2.25)])


def test_own_example_noise_is_counted_once():
    """Seeds scoring own noise only (sd 1 per example, 400 examples): a seed's score on the set has sd 0.05, the
    mean of 3 seeds sd 0.029, and its t-interval is +-4.30 * 0.029 wide at 95 % on average over data sets. The
    interval is about that wide (it was ~1.8x as wide: the example level added the seeds' own noise again)."""
    rng = np.random.default_rng(7)
    widths = []
    for _ in range(40):
        x = rng.normal(size=(3, 400))
        counts = np.stack([np.bincount(row, minlength=400) for row in rng.integers(0, 400, size=(400, 400))]).T / 400
        lo, hi = stats.percentile_interval(stats.seed_level(x @ counts, rng))
        widths.append((hi - lo) / 2)
    t_half = 4.303 * np.mean([x.mean(axis=1).std(ddof=1) for x in [rng.normal(size=(3, 400)) for _ in range(400)]])
    assert 0.8 < np.mean(widths) / (t_half / np.sqrt(3)) < 1.25


def test_one_seed_has_no_seed_level():
    draws = np.arange(12.0).reshape(1, 2, 6)
    assert np.array_equal(stats.seed_level(draws, np.random.default_rng(0)), draws[0])


def test_nested_mean_draws_resample_seeds_and_only_a_single_seed_s_heads():
    """Several seeds: the seeds are resampled, each as the mean of its heads, so seeds whose heads differ but whose
    means agree give the same mean in every draw. One seed: its heads are resampled."""
    rng = np.random.default_rng(0)
    assert np.allclose(stats.nested_mean_draws(np.full((3, 4), 0.25), 200, rng), 0.25)
    same_means = np.array([[0.0, 1.0, 0.5, 0.5], [1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    assert np.allclose(stats.nested_mean_draws(same_means, 200, rng), 0.5)
    assert np.allclose(stats.nested_mean_draws(same_means[:2], 200, rng), 0.5)  # two seeds are a seed level too
    lo, hi = stats.percentile_interval(stats.nested_mean_draws(np.array([[0.0, 0.1, 0.2, 0.1]]), 500, rng))
    assert 0.0 <= lo < 0.1 < hi <= 0.2



@pytest.mark.parametrize("heads", [1, 3])
def test_pooled_mean_draws_resample_the_seeds_jointly_across_runs(heads):
    """Two DAM runs of two shared seeds scoring 0 and 1 (constant over heads; the second run with the same or a
    different head count). One pick of seeds serves both runs, so every draw is a draw of one run: 0.5 and
    0.5 +- c / 2, c = sqrt(2) t_1 / z at 50 % (as in the test above). Seeds resampled per run would also give
    the means of two different picks, 0.5 +- c / 4."""
    c = np.sqrt(2) * 1.0 / 0.6744898
    runs = [np.array([[0.0], [1.0]]), np.repeat(np.array([[0.0], [1.0]]), heads, axis=1)]
    got = np.unique(stats.pooled_mean_draws(runs, 400, np.random.default_rng(0), level=0.5).round(12))
    assert got == pytest.approx([0.5 - c / 2, 0.5, 0.5 + c / 2], rel=1e-6)


def test_pooled_mean_draws_of_one_run_entered_several_times_equal_that_run():
    """The same search entered 8 times carries the evidence of one: the same draws as that run alone (before,
    each copy resampled its own seeds and the pooled interval narrowed by ~sqrt(8))."""
    v = np.random.default_rng(2).normal(0.4, 0.1, size=(3, 12))
    pooled = stats.pooled_mean_draws([v] * 8, 300, np.random.default_rng(0))
    assert pooled == pytest.approx(stats.nested_mean_draws(v, 300, np.random.default_rng(0)), abs=1e-12)


def test_pooled_mean_draws_of_one_seed_resample_each_run_s_heads():
    """One seed, runs of 2 and 3 heads (different heads, nothing to pair): each run's heads are resampled on
    their own and the runs' means averaged. Run means 1/2 and 1/3: the draws average (1/2 + 1/3) / 2 = 0.417
    and spread over the head resamples, from 0 (both runs all zeros) to 1."""
    draws = stats.pooled_mean_draws([np.array([[0.0, 1.0]]), np.array([[0.0, 0.0, 1.0]])], 4000,
                                    np.random.default_rng(0))
    assert draws.mean() == pytest.approx(5 / 12, abs=0.01)
    assert draws.min() == 0.0 and draws.max() == 1.0


def test_pooled_mean_draws_need_one_seed_list():
    with pytest.raises(ValueError, match=r"share one seed list, got seed counts \[3, 2\]"):
        stats.pooled_mean_draws([np.zeros((3, 4)), np.zeros((2, 4))], 10, np.random.default_rng(0))


def test_pooled_interval_covers_a_seed_effect_shared_by_the_runs():
    """4 runs of 3 seeds x 4 heads around a true mean 0.5, a seed effect (sd 0.1) common to the runs, head noise
    0.02: the pooled interval covers 0.5 in about 95 % of 200 simulations (fixed seed: 97 %). Seeds resampled
    per run and the runs' draws averaged (the old scheme) cover 84 % here: the shared effect shrunk by 4."""
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(200):
        shared = 0.1 * rng.normal(size=(3, 1))
        runs = [0.5 + shared + 0.02 * rng.normal(size=(3, 4)) for _ in range(4)]
        lo, hi = stats.percentile_interval(stats.pooled_mean_draws(runs, 200, rng))
        hits += lo <= 0.5 <= hi
    assert 0.9 <= hits / 200 <= 0.995


def head_nested_coverage(seeds: int, head_sd: float, seed_sd: float, reps: int = 400) -> float:
    """How often the interval of `nested_mean_draws` covers the true mean 0.3 of ranks r[s, h] = 0.3 + seed effect
    + head noise (4 heads nested in each seed)."""
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(reps):
        ranks = 0.3 + seed_sd * rng.normal(size=(seeds, 1)) + head_sd * rng.normal(size=(seeds, 4))
        lo, hi = stats.percentile_interval(stats.nested_mean_draws(ranks, 500, rng))
        hits += lo <= 0.3 <= hi
    return hits / reps


@pytest.mark.parametrize("seeds, head_sd, seed_sd", [(3, 0.17, 0.07), (5, 0.17, 0.07), (3, 0.17, 0.0), (3, 0.0, 0.1)])
def test_claim_1_interval_covers_about_95_percent_with_heads_nested_in_seeds(seeds, head_sd, seed_sd):
    """Head noise within a seed and a seed effect of the sizes config/cpu_claim1.yaml's DAM_s search measured (the
    diagonal's rank: sd ~0.17 between the heads of a seed, ~0.07 between seeds), more seeds, no seed effect, no
    head noise: the 95 % interval covers the true mean in 92-98 % of 400 simulations. Resampling the heads
    within each seed as well, before the seeds, covered 100 %, 99.75 % and 100 % here (95 % without head
    noise): a seed's mean already carries its heads' spread, which was counted twice."""
    assert 0.92 <= head_nested_coverage(seeds, head_sd, seed_sd) <= 0.98


def test_area_below_integrates_the_depth_below_the_threshold_over_the_steps():
    """Snapshots at steps 0, 10, 30 (uneven: trapezoids weigh each interval by its width), span 30 steps.
    offset 0: depths 0, 0.05, 0.25 -> (0 + 0.05) / 2 * 10 + (0.05 + 0.25) / 2 * 20 = 0.25 + 3.0 = 3.25 -> /30;
    offset 1: never below 0.25 (0.5 +- noise) -> exactly 0; offset 2: depth 0.25 from step 10 on -> (0.125 * 10 +
    0.25 * 20) / 30; offset 3 at 0.25 exactly: not below -> 0."""
    steps = np.array([0, 10, 30])
    keep = np.array([[[0.5, 0.5002, 0.5, 0.25]],
                     [[0.2, 0.4951, 0.0, 0.25]],
                     [[0.0, 0.5049, 0.0, 0.25]]])  # (T=3, H=1, L=4)  # fmt: skip
    assert stats.area_below(steps, keep, threshold=0.25) == pytest.approx(np.array([[3.25 / 30, 0.0, 6.25 / 30, 0.0]]))
    # Any shape after T (DAM_u's (H, L, L)) and another threshold: offset 0 depths 0, 0, 0.1 -> (0 + 0.1) / 2 * 20.
    assert stats.area_below(steps, keep[..., None], threshold=0.1)[0, 0, 0] == pytest.approx((0.05 * 20) / 30)
    assert stats.DROPPED == 0.25  # the default, well away from the noise around the initial 0.5


def test_diagonal_rank_dam_s():
    value = np.array([
        [0.0, 0.1, 0.2, 0.3],  # the diagonal lowest
        [0.3, 0.1, 0.2, 0.4],  # 2 of 3 lower
        [0.5, 0.5, 0.1, 0.5],  # 1 lower, 2 ties
        [0.2, 0.2, 0.3, 0.1],  # 1 lower, 1 tie
    ])  # fmt: skip
    assert stats.diagonal_rank(value, "dam_s") == pytest.approx([0.0, 2 / 3, 1 / 3 + 1 / 3, 1 / 3 + 1 / 6])


def test_diagonal_rank_dam_u_compares_each_row_with_its_own_keys():
    value = np.array([[[0.1, 0.2, 0.3],  # row 0: diagonal lowest -> 0
                       [0.2, 0.4, 0.3],  # row 1: diagonal highest -> 1
                       [0.3, 0.3, 0.9]]])  # row 2: both others lower -> 1
    assert stats.diagonal_rank(value, "dam_u") == pytest.approx([2 / 3])


def claim_1_verdict(runs: list[np.ndarray], kind: str, by: str = "area") -> tuple[str, float]:
    """Verdict and mean rank over seeds x heads of per-seed snapshots (T, H, ...) at trajectories.STEPS."""
    if by == "area":
        ranks = np.stack([stats.diagonal_rank(-stats.area_below(trajectories.STEPS, keep), kind) for keep in runs])
    else:  # the replaced first-crossing-of-0.5 statistic
        ranks = np.stack([trajectories.first_below_half_rank(trajectories.STEPS, keep, kind) for keep in runs])
    draws = stats.nested_mean_draws(ranks, 400, np.random.default_rng(1))
    return stats.drop_first_verdict(*stats.percentile_interval(draws, bounds=(0.0, 1.0))), float(ranks.mean())


@pytest.mark.parametrize("kind", ["dam_s", "dam_u"])
def test_claim_1_all_positions_below_half_before_the_first_snapshot_diagonal_ends_lowest(kind):
    """Every position crosses 0.5 before the first snapshot: the first-crossing statistic sees one tie (rank
    0.5 in every head, inconclusive). The area below 0.25 sees the diagonal dropped most in every head:
    rank 0 (supported); by final keep probability too."""
    rng = np.random.default_rng(0)
    runs = [getattr(trajectories, kind)("early", rng) for _ in range(3)]  # 3 seeds x 4 heads
    assert claim_1_verdict(runs, kind, by="first crossing") == (INCONCLUSIVE, 0.5)
    assert claim_1_verdict(runs, kind) == (SUPPORTED, 0.0)
    assert all(stats.diagonal_rank(keep[-1], kind).max() == 0.0 for keep in runs)


@pytest.mark.parametrize("kind", ["dam_s", "dam_u"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_claim_1_noise_around_half_is_inconclusive_whatever_the_noise(kind, seed):
    """Probabilities within 0.5 +- 0.005: no position ever reaches 0.25, every area is exactly 0, every
    position ties and the rank is 0.5 in every head and seed: inconclusive, for any draw of the noise."""
    rng = np.random.default_rng(seed)
    runs = [getattr(trajectories, kind)("noise", rng) for _ in range(3)]
    assert claim_1_verdict(runs, kind) == (INCONCLUSIVE, 0.5)


def test_claim_1_random_walk_noise_at_the_search_lr_is_not_read_as_a_drop():
    """The noise of a search at dam_lr 0.05 (random-walk logits, nothing learned) takes many positions below
    0.25, so areas are not 0; the diagonal is exchangeable with the others and its rank stays centred on 0.5:
    over 40 null experiments of 3 seeds x 4 heads at most 2 verdicts say "supported" (2.5 % expected)."""
    rng = np.random.default_rng(7)
    verdicts, reached = [], []
    for _ in range(40):
        runs = [trajectories.walk(rng) for _ in range(3)]
        reached.append(np.mean([(stats.area_below(trajectories.STEPS, keep) > 0).mean() for keep in runs]))
        verdicts.append(claim_1_verdict(runs, "dam_s")[0])
    assert np.mean(reached) > 0.2  # the noise does reach the threshold
    assert verdicts.count(SUPPORTED) <= 2 and verdicts.count(CONTRADICTED) <= 2, verdicts


def test_claim_1_a_learned_drop_under_the_same_noise_is_supported():
    """The same random walk with the diagonal's logit drifting down by 0.005 per step (-5 after 1,000 steps):
    the area ranks it below the typical position in every one of 5 experiments."""
    rng = np.random.default_rng(8)
    for _ in range(5):
        runs = [trajectories.walk(rng, diagonal_drift=0.005) for _ in range(3)]
        assert claim_1_verdict(runs, "dam_s")[0] == SUPPORTED


@pytest.mark.parametrize("kind", ["dam_s", "dam_u"])
def test_claim_1_noise_that_dips_the_diagonal_first_fooled_the_first_crossing(kind):
    """The same noise band, where the diagonal's noise happens to dip below 0.5 at the first snapshot and the
    others' 100 steps later: the first-crossing statistic reads rank 0, supported; the area statistic sees no
    position dropped: 0.5, inconclusive."""
    rng = np.random.default_rng(3)
    runs = [getattr(trajectories, kind)("noise", rng, diagonal_dips_first=True) for _ in range(3)]
    assert max(abs(keep - 0.5).max() for keep in runs) <= 0.005
    assert claim_1_verdict(runs, kind, by="first crossing") == (SUPPORTED, 0.0)
    assert claim_1_verdict(runs, kind) == (INCONCLUSIVE, 0.5)


@pytest.mark.parametrize("kind", ["dam_s", "dam_u"])
def test_claim_1_diagonal_ends_highest_is_contradicted(kind):
    rng = np.random.default_rng(4)
    runs = [getattr(trajectories, kind)("highest", rng) for _ in range(3)]
    # The diagonal never goes below 0.25 (area 0), every other position does: rank 1 in every head.
    assert claim_1_verdict(runs, kind) == (CONTRADICTED, 1.0)
    assert all(stats.diagonal_rank(keep[-1], kind).min() == 1.0 for keep in runs)  # ends above every position


@pytest.mark.parametrize("lo, hi, expected", [(-0.5, 0.8, SUPPORTED), (1.2, 3.0, CONTRADICTED), (-4.0, -1.5, CONTRADICTED),
                                              (-1.5, 0.2, INCONCLUSIVE), (0.5, 1.5, INCONCLUSIVE)])  # fmt: skip
def test_equivalence_verdict(lo, hi, expected):
    assert stats.equivalence_verdict(lo, hi, margin=1.0) == expected


@pytest.mark.parametrize("lo, hi", [(-1.0, 0.5), (-0.5, 1.0), (1.0, 2.0), (-2.0, -1.0)])
def test_equivalence_verdict_an_interval_touching_the_margin_is_inconclusive(lo, hi):
    """Supported needs the interval inside the open band (-margin, margin), contradicted needs it strictly
    above +margin or below -margin: an interval whose end sits exactly on +-margin is neither."""
    assert stats.equivalence_verdict(lo, hi, margin=1.0) == INCONCLUSIVE


@pytest.mark.parametrize("lo, hi, expected", [(0.1, 2.0, SUPPORTED), (-2.0, -0.1, CONTRADICTED), (-0.1, 2.0, INCONCLUSIVE),
                                              (0.0, 1.0, INCONCLUSIVE), (-1.0, 0.0, INCONCLUSIVE),
                                              (-0.5, 0.5, INCONCLUSIVE)])  # fmt: skip
def test_superiority_verdict(lo, hi, expected):
    """An interval with an end exactly at 0 contains 0: inconclusive, on either side; so is one straddling 0."""
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


def test_area_below_without_two_distinct_steps():
    """No snapshot: zeros of one position's shape (H, L). One snapshot (nothing to integrate over): its own
    depth below the threshold, 0.25 - 0.1 = 0.15 and 0 for a position above it; likewise snapshots that all
    sit at the same step (a span of 0 steps)."""
    empty = stats.area_below(np.array([], dtype=int), np.zeros((0, 2, 3), dtype=np.float32))
    assert empty.shape == (2, 3) and not empty.any()
    keep = np.array([[0.1, 0.3]])  # (T=1, L=2)
    assert stats.area_below(np.array([40]), keep) == pytest.approx([0.15, 0.0])
    keep = np.array([[0.2, 0.3], [0.1, 0.3]])  # (T=2, L=2) at steps 40, 40: the last snapshot's depth
    assert stats.area_below(np.array([40, 40]), keep) == pytest.approx([0.15, 0.0])


def test_area_below_two_snapshots_one_step_apart_late_in_the_search():
    """Steps 100 and 101 (span 1, not starting at 0): depths 0 then 0.2 -> one trapezoid (0 + 0.2) / 2 * 1,
    divided by the span 101 - 100 = 1 -> 0.1 (not the last depth 0.2, not divided by 100 + 101)."""
    keep = np.array([[0.25, 0.5], [0.05, 0.5]])  # (T=2, L=2)
    assert stats.area_below(np.array([100, 101]), keep) == pytest.approx([0.1, 0.0])


def test_area_below_float32_snapshots_are_integrated_in_float64():
    """snapshots.npz holds torch's float32 probabilities. Two positions one float32 ulp apart near 0.01 (2^-30)
    must keep their order: 0.25 - p in float32 rounds to its 2^-26 grid and would tie them, changing the
    diagonal's rank from 0 (strictly more dropped) to 0.5. Reference: 0.25 - p in float64 (exact)."""
    p1 = np.float32(0.01)
    p2 = np.nextafter(p1, np.float32(1.0))
    keep = np.array([[p1, p2], [p1, p2]], dtype=np.float32)  # (T=2, L=2): constant between steps 0 and 10
    area = stats.area_below(np.array([0, 10]), keep)
    assert area == pytest.approx([0.25 - float(p1), 0.25 - float(p2)], rel=1e-13, abs=0)
    assert area[0] > area[1]
    assert stats.diagonal_rank(-area[None], "dam_s") == pytest.approx([0.0])


def test_diagonal_rank_dam_u_ranks_each_head_on_its_own():
    """Three heads of (L=3, L=3): head 0 ties its diagonal with every key (0.5), head 1 has each row's diagonal
    highest (1), head 2 lowest (0). The lower and tied fractions must be taken per head and row, not pooled."""
    tied = np.full((3, 3), 0.4)
    highest = 0.1 * np.ones((3, 3)) + 0.8 * np.eye(3)
    lowest = 0.9 * np.ones((3, 3)) - 0.8 * np.eye(3)
    assert stats.diagonal_rank(np.stack([tied, highest, lowest]), "dam_u") == pytest.approx([0.5, 1.0, 0.0])


def test_is_mean_metric():
    """Accuracy and every SQuAD metric are means of per-example scores; F1, Matthews and correlations are not."""
    assert stats.is_mean_metric(TASKS["proxy_pair"], "accuracy")
    assert stats.is_mean_metric(TASKS["proxy_choice"], "accuracy")
    assert not stats.is_mean_metric(TASKS["proxy_single"], "matthews_correlation")
    assert not stats.is_mean_metric(TASKS["proxy_regression"], "pearson")
    assert stats.is_mean_metric(TASKS["proxy_qa"], "f1") and stats.is_mean_metric(TASKS["proxy_qa"], "exact")
    assert stats.is_mean_metric(TASKS["squad_v1"], "exact_match")
    for subset in ("HasAns_f1", "NoAns_exact", "total"):  # means over part of the questions, or a count
        assert not stats.is_mean_metric(TASKS["proxy_qa"], subset)


def test_a_span_metric_over_a_subset_of_the_questions_is_refused_by_name():
    """HasAns_f1 averages the answerable questions only: not a mean over the resampled questions, and SQuAD's
    id-keyed inputs cannot be recomputed on a resample: one clear error (it was a KeyError on the first NoAns
    question)."""
    golds = {"q1": ["word"], "q2": []}
    with pytest.raises(ValueError, match=r"proxy_qa: 'HasAns_f1' cannot be resampled; the span metrics that can"):
        stats.resampled_scores(TASKS["proxy_qa"], "HasAns_f1", [({"q1": "word", "q2": ""}, golds)], 3,
                               np.random.default_rng(0))  # fmt: skip


def test_a_non_mean_metric_is_recomputed_on_every_resample_chunk_by_chunk():
    """Matthews correlation (not a mean of per-example scores) on 7 resamples drawn 3, 3, 1 at a time: each draw
    equals sklearn's Matthews correlation of that resample (every resample filled once, example 0 drawable)."""
    from sklearn.metrics import matthews_corrcoef

    rng = np.random.default_rng(5)
    refs = rng.integers(0, 2, 40)
    preds = np.where(rng.random(40) < 0.7, refs, 1 - refs)
    spec = TASKS["proxy_single"]
    points, draws = stats.resampled_scores(spec, "matthews_correlation", [(preds, refs)], 7, np.random.default_rng(9),
                                           chunk=3)  # fmt: skip
    ref_rng = np.random.default_rng(9)
    idx = np.concatenate([ref_rng.integers(0, 40, size=(k, 40)) for k in (3, 3, 1)])
    assert points[0] == pytest.approx(matthews_corrcoef(refs, preds))
    assert draws[0] == pytest.approx([matthews_corrcoef(refs[i], preds[i]) for i in idx])


@pytest.mark.parametrize("mapping", [dict, OrderedDict])
def test_span_runs_are_paired_by_question_id_whatever_their_order(mapping):
    """Two runs with the same answers to the same questions, their references listed in opposite orders (plain
    dicts, or OrderedDicts, whose == would see them as different): the runs hold the same examples, and the
    resamples pair them by question id, so both get the same point and the same draws."""
    golds = {f"q{k}": ([] if k % 3 == 0 else [f"word {k}"]) for k in range(12)}
    answers = {q: ("" if k % 4 == 0 else f"word {k}" if k % 2 else "a word") for k, q in enumerate(golds)}
    forward = mapping(golds.items())
    backward = mapping(reversed(list(golds.items())))
    points, draws = stats.resampled_scores(TASKS["proxy_qa"], "f1", [(answers, forward), (answers, backward)], 50,
                                           np.random.default_rng(2))  # fmt: skip
    assert points[1] == pytest.approx(points[0])
    assert draws[1] == pytest.approx(draws[0], rel=1e-12)
    assert draws[0].std() > 0  # the resamples do differ, so a misaligned run would show


def test_seed_level_scales_the_resampled_seed_mean_about_the_all_seed_mean():
    """Seeds scoring 0, 0, 1 on every example resample: the all-seed mean is 1/3 and a draw of three seeds has
    k = 0..3 ones, so the draws are 1/3 + c (k/3 - 1/3) with c = sqrt(3/2) t_2 / z at 95 % (t_2 quantile
    (2q - 1) / sqrt(2q(1 - q)) at q = 0.975, z = 1.959964); k = 3 (1/27 per draw) lies furthest above."""
    c = np.sqrt(1.5) * (0.95 / np.sqrt(2 * 0.975 * 0.025)) / 1.959964
    draws = np.repeat(np.array([[0.0], [0.0], [1.0]]), 400, axis=1)  # (S=3, B=400)
    got = np.unique(stats.seed_level(draws, np.random.default_rng(0)).round(12))
    assert got == pytest.approx([1 / 3 + c * (k / 3 - 1 / 3) for k in range(4)], rel=1e-6)


def test_seed_level_and_nested_mean_draws_use_the_level_they_are_given():
    """Two seeds scoring 0 and 1 (one head each): draws 0.5 and 0.5 +- c / 2, c = sqrt(2) t_1 / z at the given
    level. At 50 %: t_1 quantile at 0.75 is tan(pi / 4) = 1, z = 0.6744898 (not the 95 % factor, 9.17)."""
    c = np.sqrt(2) * 1.0 / 0.6744898
    expected = [0.5 - c / 2, 0.5, 0.5 + c / 2]
    two_seeds = np.repeat(np.array([[0.0], [1.0]]), 200, axis=1)  # (S=2, B=200)
    got = np.unique(stats.seed_level(two_seeds, np.random.default_rng(0), level=0.5).round(12))
    assert got == pytest.approx(expected, rel=1e-6)
    nested = stats.nested_mean_draws(np.array([[0.0], [1.0]]), 200, np.random.default_rng(0), level=0.5)
    got = np.unique(nested.round(12))
    assert got == pytest.approx(expected, rel=1e-6)
