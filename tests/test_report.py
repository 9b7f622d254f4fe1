"""The tables compare like with like: the paper's metric in each column, and the paper's averaging."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sparsebert import paper, stats
from sparsebert.data.tasks import TASKS
from sparsebert.findings import Effect, compare, gated_note, informative, seed_gated, usable, verdict_line
from sparsebert.report import (
    Column,
    Scores,
    build_table,
    constant_predictions,
    diagonal_comparison,
    eval_columns,
    interval,
    is_constant,
    score_columns,
    summarize,
    task_columns,
)

GLUE_TASKS = ["mnli", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc", "rte"]


def test_paper_columns_are_the_papers_metrics():
    """MRPC and QQP are F1, STS-B Spearman (BERT's GLUE table convention), MNLI reports m and mm separately."""
    assert {t: TASKS[t].main_metric for t in GLUE_TASKS} == {
        "mnli": "accuracy", "qqp": "f1", "qnli": "accuracy", "sst2": "accuracy", "cola": "matthews_correlation",
        "stsb": "spearmanr", "mrpc": "f1", "rte": "accuracy"}  # fmt: skip
    mnli = {"eval": {"validation_matched": {"accuracy": 0.8}, "validation_mismatched": {"accuracy": 0.7}}}
    assert task_columns("mnli", mnli) == pytest.approx({"mnli_m": 80.0, "mnli_mm": 70.0})
    mrpc = {"eval": {"validation": {"accuracy": 0.9, "f1": 0.8, "combined_score": 0.85}}}
    assert task_columns("mrpc", mrpc) == pytest.approx({"mrpc": 80.0})


def paper_frame() -> pd.DataFrame:
    rows = {v: {"kind": "fixed", "sparsity": r["sparsity"], **{c: r[c] for c in paper.GLUE_COLUMNS}}
            for v, r in paper.GLUE.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def test_averaging_reproduces_every_published_average():
    """Our GLUE table, fed the paper's own per-task numbers, gives the paper's Avg for every row: the mean of 9
    numbers (MNLI-m and MNLI-mm separately). The published cells are rounded to 0.1, so the mean of the rounded
    cells differs from the published (rounded) Avg by at most 0.05 + 0.05; averaging MNLI first (8 numbers)
    misses by up to 0.3 and fails."""
    frame = paper_frame()
    cols = score_columns(frame, GLUE_TASKS, glue=True)
    assert sorted(cols) == sorted(paper.GLUE_COLUMNS)
    table = build_table(frame, cols, proxy=False, with_paper=True)
    for variant, row in paper.GLUE.items():
        assert table.loc[variant, "avg"] == pytest.approx(row["avg"], abs=0.1 + 1e-9), variant
        assert abs(table.loc[variant, "delta_avg"]) <= 0.1 + 1e-9
        for c in paper.GLUE_COLUMNS:
            assert table.loc[variant, f"delta_{c}"] == 0.0


# ---------------------------------------------------------------------------------------------------------
# Issue 17: the building blocks of the claim verdicts (report.py, findings.py) on hand-made scores, with
# hand-computed expected values: columns and their bounds, bootstrap intervals, per-variant summaries, effects,
# the columns a comparison may use, the one-seed gate (tests/test_findings.py runs them end to end).

B = 41
RAMP = np.linspace(-300.0, 300.0, B)  # step 15: np.quantile puts the 2.5 % / 97.5 % points at -285 / +285

ACC = Column("sst2", "sst2", "validation", "accuracy", True, True)
CORR = Column("stsb", "stsb", "validation", "spearmanr", True, True)
SPAN = Column("squad_v1", "squad_v1", "validation", "f1", True, False)
SPAN_EM = Column("squad_v1_em", "squad_v1", "validation", "exact_match", False, False)


def scores(points, draws, columns, variants=("dense", "no_diagonal"), constant=None, examples=None) -> Scores:
    points, draws = np.asarray(points, dtype=float), np.asarray(draws, dtype=float)
    V, S, C = points.shape
    return Scores(list(variants), list(range(S)), list(columns), points, draws, np.zeros((V, S)), np.zeros((V, S)),
                  np.asarray(examples if examples is not None else [10] * C),
                  np.zeros((V, S, C), dtype=bool) if constant is None else np.asarray(constant),
                  np.zeros(C), np.zeros((C, draws.shape[-1])))  # fmt: skip


def test_eval_columns_name_splits_and_exact_match_columns():
    cols = eval_columns(["mnli", "squad_v1", "squad_v2", "proxy_regression"])
    assert [(c.name, c.task, c.split, c.metric, c.averaged, c.glue) for c in cols] == [
        ("mnli_m", "mnli", "validation_matched", "accuracy", True, True),
        ("mnli_mm", "mnli", "validation_mismatched", "accuracy", True, True),
        ("squad_v1", "squad_v1", "validation", "f1", True, False),
        ("squad_v1_em", "squad_v1", "validation", "exact_match", False, False),
        ("squad_v2", "squad_v2", "validation", "f1", True, False),
        ("squad_v2_em", "squad_v2", "validation", "exact", False, False),
        ("proxy_regression", "proxy_regression", "validation", "combined_score", True, True),
    ]
    metrics = {"eval": {"validation": {"f1": 81.5, "exact_match": 70.0}}}  # SQuAD metrics are in percent already
    assert task_columns("squad_v1", metrics) == {"squad_v1": 81.5, "squad_v1_em": 70.0}


def test_interval_is_clipped_to_the_range_of_the_score_or_of_a_difference():
    """Accuracy lies in [0, 100], a correlation in [-100, 100]; a difference of two in twice that width; the
    range of an average over columns is the average of their ranges."""
    assert interval(RAMP, [ACC]) == (0.0, 100.0)
    assert interval(RAMP, [ACC], difference=True) == (-100.0, 100.0)
    assert interval(RAMP, [CORR]) == (-100.0, 100.0)
    assert interval(RAMP, [CORR], difference=True) == (-200.0, 200.0)
    assert interval(RAMP, [ACC, CORR]) == (-50.0, 100.0)
    assert interval(RAMP, [ACC, CORR], difference=True) == (-150.0, 150.0)
    assert interval(RAMP / 10, [ACC, CORR], difference=True) == pytest.approx((-28.5, 28.5))
    assert Column("proxy_regression", "proxy_regression", "validation", "combined_score", True, True).bounds == (-100, 100)
    assert Column("mrpc", "mrpc", "validation", "combined_score", True, True).bounds == (0, 100)


def test_summarize_means_over_seeds_and_averages_inside_each_draw():
    """Two seeds with the same draws (the seed level then adds nothing): the mean is over seeds, the averages
    over the averaged columns only (not the exact-match one), their intervals from the averaged draws."""
    ramp = np.linspace(70.0, 90.0, B)  # quantiles 70.5 and 89.5
    draws_one = np.stack([ramp, ramp - 20, ramp - 60])  # (C, B): sst2, squad_v1, squad_v1_em
    points = [[[80.0, 60.0, 50.0], [70.0, 50.0, 40.0]], [[60.0, 40.0, 30.0], [60.0, 40.0, 30.0]]]
    s = scores(points, np.broadcast_to(draws_one, (2, 2, 3, B)), [ACC, SPAN, SPAN_EM])
    means, halves, intervals = summarize(s, np.random.default_rng(0))
    assert means.loc["dense"].to_dict() == pytest.approx({"sst2": 75.0, "squad_v1": 55.0, "squad_v1_em": 45.0,
                                                          "avg_glue": 75.0, "avg_squad_swag": 55.0, "avg": 65.0})
    assert means.loc["no_diagonal", "avg"] == pytest.approx(50.0)
    assert intervals["dense"]["sst2"] == pytest.approx((70.5, 89.5))
    assert intervals["dense"]["squad_v1"] == pytest.approx((50.5, 69.5))
    assert intervals["dense"]["avg"] == pytest.approx((60.5, 79.5))  # mean of the two averaged columns' draws
    assert intervals["dense"]["avg_squad_swag"] == pytest.approx((50.5, 69.5))
    assert halves.loc["dense", "avg"] == pytest.approx(9.5) and halves.loc["no_diagonal", "sst2"] == pytest.approx(9.5)
    only_span = scores(np.zeros((2, 1, 1)), np.zeros((2, 1, 1, B)), [SPAN])
    means, halves, intervals = summarize(only_span, np.random.default_rng(0))
    assert np.isnan(means.loc["dense", "avg_glue"]) and np.isnan(halves.loc["dense", "avg_glue"])
    assert np.isnan(intervals["dense"]["avg_glue"][0]) and np.isnan(intervals["dense"]["avg_glue"][1])


def test_compare_is_b_minus_a_over_the_chosen_columns():
    """Two seeds with equal draws: effect = mean over seeds and the chosen columns of b - a; the interval is
    that of the per-draw difference of column means, clipped to the difference range."""
    a_draws = np.stack([np.full(B, 50.0), np.full(B, 0.0), np.full(B, 40.0)])
    b_draws = np.stack([50.0 + np.linspace(-10, 10, B), np.full(B, 99.0), 40.0 + np.linspace(-30, 10, B)])
    points = [[[50.0, 0.0, 40.0], [52.0, 0.0, 44.0]], [[48.0, 99.0, 30.0], [50.0, 99.0, 30.0]]]
    s = scores(points, np.stack([np.broadcast_to(a_draws, (2, 3, B)), np.broadcast_to(b_draws, (2, 3, B))]),
               [ACC, CORR, SPAN], examples=[100, 7, 20])
    effect = compare(s, "dense", "no_diagonal", [0, 2], np.random.default_rng(0))
    # b - a per seed: seed 0 (-2 - 10) / 2, seed 1 (-2 - 14) / 2 -> mean -7; per draw: (ramp(-10, 10) + ramp(-30,
    # 10)) / 2 = ramp(-20, 10), quantiles -19.25 and +9.25
    assert (effect.point, effect.lo, effect.hi) == pytest.approx((-7.0, -19.25, 9.25))
    assert (effect.seeds, effect.columns, effect.examples) == (2, ["sst2", "squad_v1"], 120)
    reverse = compare(s, "no_diagonal", "dense", [0, 2], np.random.default_rng(0))
    assert (reverse.point, reverse.lo, reverse.hi) == pytest.approx((7.0, -9.25, 19.25))


def test_informative_columns_vary_somewhere_and_usable_ones_are_not_constant_for_both():
    points = np.zeros((2, 2, 4))
    points[1, 0, 1] = 0.5  # column 1 varies by half a point: informative
    points[0, 1, 2] = 3.0  # column 2 (not averaged) varies but is never used
    points[:, :, 3] = 42.0  # column 3: every variant and seed the same
    cols = [ACC, SPAN, SPAN_EM, CORR]
    s = scores(points, np.zeros((2, 2, 4, B)), cols)
    assert informative(s) == ([1], ["sst2", "stsb"])
    assert informative(s, glue_only=True) == ([], ["sst2", "stsb"])
    constant = np.zeros((2, 2, 4), dtype=bool)
    constant[:, :, 0] = True  # both always constant: unusable
    constant[0, :, 1] = True  # only dense: usable
    constant[0, :, 3] = constant[1, 0, 3] = True  # no_diagonal constant in one seed only: usable
    s = scores(points, np.zeros((2, 2, 4, B)), cols, constant=constant)
    assert usable(s, "dense", "no_diagonal", [0, 1, 2, 3]) == [1, 2, 3]


def test_one_seed_gates_every_verdict_to_inconclusive_and_says_so():
    assert seed_gated(stats.SUPPORTED, 1) == stats.INCONCLUSIVE
    assert seed_gated(stats.CONTRADICTED, 2) == stats.CONTRADICTED
    assert gated_note(stats.SUPPORTED, stats.SUPPORTED) == ""
    assert gated_note(stats.SUPPORTED, stats.INCONCLUSIVE) == (
        f" (the eval examples alone: {stats.SUPPORTED}; one seed cannot decide)")
    assert verdict_line("supported", "because.") == ["Verdict: **supported at this scale**: because.", ""]


def test_effect_prints_its_numbers_and_basis():
    e = Effect(1.0, -0.5, 2.254, 2, ["rte", "mrpc"], 300)
    assert e.numbers() == "+1.00 points, 95 % interval [-0.50, +2.25]"
    assert e.basis() == ("2 seeds per variant (two-way bootstrap over seed pairs and eval examples); 2 column(s) "
                         "(rte, mrpc), 300 eval examples")
    one = Effect(0.0, 0.0, 0.0, 1, ["rte"], 50)
    assert one.basis() == ("1 seed per variant: the interval covers the eval examples only and ignores seed "
                           "variance; 1 column(s) (rte), 50 eval examples")


def test_constant_predictors_by_hand():
    assert is_constant([1, 1, 1]) and not is_constant([1, 0, 1]) and is_constant([])
    assert is_constant({"q1": "a", "q2": "a"}) and not is_constant({"q1": "a", "q2": "b"})
    assert constant_predictions(TASKS["squad_v2"], "f1", {"q1": ["x"], "q2": []}) == {"q1": "", "q2": ""}
    assert constant_predictions(TASKS["stsb"], "spearmanr", [1.0, 2.0, 4.5]) == [2.5, 2.5, 2.5]
    # accuracy: the majority label (1); F1 of class 1: predicting 1 everywhere (F1 = 2/3 > 0) even though 0 is
    # the majority; Matthews: every constant scores 0, the first (smallest) label wins the tie.
    assert constant_predictions(TASKS["sst2"], "accuracy", [0, 1, 1]) == [1, 1, 1]
    assert constant_predictions(TASKS["mrpc"], "f1", [0, 0, 1]) == [1, 1, 1]
    assert constant_predictions(TASKS["cola"], "matthews_correlation", [1, 0, 1]) == [0, 0, 0]


def test_diagonal_comparison_table_by_hand():
    points = [[[80.0], [70.0]], [[76.0], [68.0]]]  # dense 75, no_diagonal 72 -> -3
    d_draws = np.broadcast_to(np.full(B, 75.0), (2, 1, B))
    n_draws = np.broadcast_to(75.0 + np.linspace(-10.0, 0.0, B), (2, 1, B))  # differences ramp(-10, 0)
    s = scores(points, np.stack([d_draws, n_draws]), [ACC])
    text = diagonal_comparison(s, ["sst2"], np.random.default_rng(0))
    assert text.splitlines() == [
        "## BERT (dense) vs BERT without diagonal", "",
        "Difference no_diagonal - dense with its 95 % interval (2 seed(s) each; paired on the eval examples and the "
        "seeds).", "",
        "| task | dense | no_diagonal | difference | 95 % interval |", "|---|---|---|---|---|",
        "| sst2 | 75.0 | 72.0 | -3.0 | [-9.8, -0.2] |"]  # fmt: skip
    assert s.index("no_diagonal") == 1 and s.col("sst2") == 0
    missing = scores(points, np.stack([d_draws, n_draws]), [ACC], variants=("dense", "star"))
    assert diagonal_comparison(missing, ["sst2"], np.random.default_rng(0)).startswith("BERT vs BERT without")
    assert diagonal_comparison(s, [], np.random.default_rng(0)).startswith("BERT vs BERT without")


def test_drop_ranks_and_what_the_report_says_beside_them(tmp_path):
    """Claim 1's inputs by hand, for a DAM_s run (2 seeds) and a DAM_u run (1 seed); snapshots at steps 0, 10, 20.
    DAM_s, per offset: head 0 drops the diagonal at 10, offset 1 at 20, offsets 2-3 never: rank 0; head 1 never
    drops the diagonal, offset 1 at 10: rank 1/3 + 0.5 * 2/3 = 2/3. DAM_u drop steps (symmetric)
    [[10, 10, 20], [10, inf, inf], [20, inf, 20]]: rows 0.25, 0.75, 0.25 -> 5/12; its diagonal fell below 0.5 at
    some entry (10)."""
    from sparsebert.findings import drop_ranks

    def write(folder, drop, fallback):
        folder.mkdir(parents=True)
        steps = np.array([0, 10, 20])
        keep = np.stack([np.full(drop.shape, 0.5), np.where(drop <= 10, 0.2, 0.8), np.where(drop <= 20, 0.2, 0.8)])
        np.savez(folder / "snapshots.npz", steps=steps, keep_prob=keep)
        (folder / "summary.json").write_text("{}" if fallback is None else f'{{"fallback_rows": {fallback}}}')

    inf = np.inf
    for seed, fallback in ((0, [1, 2]), (1, None)):
        write(tmp_path / "s" / str(seed), np.array([[10, 20, inf, inf], [inf, 10, inf, inf]]), fallback)
    write(tmp_path / "u" / "0", np.array([[[10, 10, 20], [10, inf, inf], [20, inf, 20]]]), [2])
    p = {"seeds": [0, 1], "variants": [
        {"name": "dam_s", "kind": "dam_s", "role": "search", "pretrained": str(tmp_path / "s" / "{seed}")},
        {"name": "dam_u", "kind": "dam_u", "role": "search", "pretrained": str(tmp_path / "u" / "{seed}")}]}
    ranks, info = drop_ranks(p, "dam_s")
    assert ranks.flatten().tolist() == pytest.approx([0.0, 2 / 3, 0.0, 2 / 3])  # (seeds, heads)
    assert info == {"dropped": 2, "heads": 4, "steps": 20, "fallback": 3, "rows": 16}
    ranks, info = drop_ranks({**p, "seeds": [0]}, "dam_u")
    assert ranks.shape == (1, 1) and ranks[0, 0] == pytest.approx(5 / 12)
    assert info == {"dropped": 1, "heads": 1, "steps": 20, "fallback": 2, "rows": 3}
