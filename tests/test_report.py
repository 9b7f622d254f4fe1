"""The tables compare like with like: the paper's metric in each column, and the paper's averaging."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sparsebert import paper, stats
from sparsebert.data.tasks import TASKS
from sparsebert import figures
from sparsebert.figures import keep_trajectories, per_offset
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



@pytest.mark.parametrize("drop, add", [(("rte",), ()), (("mnli_mm", "qqp", "qnli", "cola", "stsb", "mrpc", "rte"), ()),
                                       ((), ("wnli",))])  # fmt: skip
def test_delta_avg_only_where_the_average_is_over_the_papers_9_columns(drop, add):
    """The paper's Avg is the mean of its 9 GLUE columns. Fed the paper's own longformer cells, our average over
    all 9 is the mean of the 9 cells, 80.03 (published: 80.1, delta -0.07); over a subset (the paper's
    sst2 91.8 and rte 65.3 alone average 78.55) or with WNLI added it averages other tasks, and a delta with the
    paper's 80.1 would be meaningless (-1.55 for that pair): NaN."""
    frame = paper_frame().loc[["longformer"]].assign(wnli=56.3)
    full = build_table(frame, list(paper.GLUE_COLUMNS), proxy=False, with_paper=True)
    cells = [paper.GLUE["longformer"][c] for c in paper.GLUE_COLUMNS]
    assert full.loc["longformer", "delta_avg"] == pytest.approx(round(sum(cells) / 9 - 80.1, 2))
    cols = [c for c in paper.GLUE_COLUMNS if c not in drop] + list(add)
    assert np.isnan(build_table(frame, cols, proxy=False, with_paper=True).loc["longformer", "delta_avg"])

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
    means, intervals = summarize(s, np.random.default_rng(0))
    assert means.loc["dense"].to_dict() == pytest.approx({"sst2": 75.0, "squad_v1": 55.0, "squad_v1_em": 45.0,
                                                          "avg_glue": 75.0, "avg_squad_swag": 55.0, "avg": 65.0})
    assert means.loc["no_diagonal", "avg"] == pytest.approx(50.0)
    assert intervals["dense"]["sst2"] == pytest.approx((70.5, 89.5))
    assert intervals["dense"]["squad_v1"] == pytest.approx((50.5, 69.5))
    assert intervals["dense"]["avg"] == pytest.approx((60.5, 79.5))  # mean of the two averaged columns' draws
    assert intervals["dense"]["avg_squad_swag"] == pytest.approx((50.5, 69.5))
    assert intervals["no_diagonal"]["sst2"] == pytest.approx((70.5, 89.5))  # the same draws: the same interval
    only_span = scores(np.zeros((2, 1, 1)), np.zeros((2, 1, 1, B)), [SPAN])
    means, intervals = summarize(only_span, np.random.default_rng(0))
    assert np.isnan(means.loc["dense", "avg_glue"])
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
    assert gated_note(stats.CONTRADICTED, stats.INCONCLUSIVE, "the heads") == (  # claim 1 resamples heads
        f" (the heads alone: {stats.CONTRADICTED}; one seed cannot decide)")
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


def test_diagonal_ranks_and_what_the_report_says_beside_them(tmp_path):
    """Claim 1's inputs by hand, for a DAM_s run (2 seeds) and a DAM_u run (1 seed); snapshots at steps 0, 10, 20,
    keep probability 0.2 from the drop step on (area below 0.25 > 0, larger the earlier), 0.8 before.
    DAM_s, per offset: head 0 drops the diagonal at 10, offset 1 at 20, offsets 2-3 never: area rank 0; final
    keep [.2, .2, .8, .8]: rank 1/6. Head 1 never drops the diagonal, offset 1 at 10: area rank 1/3 + 0.5 * 2/3 =
    2/3; final [.8, .2, .8, .8]: 2/3. Final keep, diagonal (.2 + .8) / 2 = .5, others .6 in both heads; below
    0.25 in head 0 of each seed. DAM_u drop steps (symmetric) [[10, 10, 20], [10, inf, inf], [20, inf, 20]]:
    area rows 0.25, 0.75, 0.25 -> 5/12; final [[.2, .2, .2], [.2, .8, .8], [.2, .8, .2]]: rows 1/2, 3/4, 1/4 ->
    1/2; diagonal mean 0.4, off-diagonal mean 0.4."""
    from sparsebert.findings import diagonal_ranks

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
    by_area, by_final, info = diagonal_ranks(p, "dam_s")
    assert by_area.flatten().tolist() == pytest.approx([0.0, 2 / 3, 0.0, 2 / 3])  # (seeds, heads)
    assert by_final.flatten().tolist() == pytest.approx([1 / 6, 2 / 3, 1 / 6, 2 / 3])
    assert info == pytest.approx({"steps": 20, "fallback": 3, "rows": 16, "diag_end": 0.5, "other_end": 0.6,
                                  "below": 2, "heads": 4})  # fmt: skip
    by_area, by_final, info = diagonal_ranks({**p, "seeds": [0]}, "dam_u")
    assert by_area.shape == by_final.shape == (1, 1) and by_area[0, 0] == pytest.approx(5 / 12)
    assert by_final[0, 0] == pytest.approx(0.5)
    assert info == pytest.approx({"steps": 20, "fallback": 2, "rows": 3, "diag_end": 0.4, "other_end": 0.4,
                                  "below": 0, "heads": 1})  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Issue 17, round 3: collect and the table writers on a tiny hand-made results tree whose scores are fixed by
# construction. proxy_pair (4 examples, labels 0 1 2 1): dense and no_diagonal right on all of them (100 % on
# every resample), longformer wrong on all (0 %); the best constant label (1) scores 50 %. proxy_qa (2
# unanswerable questions): dense answers both (F1 0), no_diagonal and longformer answer neither (100, a constant
# output); "no answer" everywhere scores 100.

import json  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

from sparsebert.io import UserError  # noqa: E402
from sparsebert.metrics import task_metrics  # noqa: E402
from sparsebert.report import (  # noqa: E402
    _cell,
    _num,
    collect,
    finetuned_dir,
    markdown,
    pretrained_dir,
    read_json,
    read_predictions,
    searches_of,
    seeds_of,
    settings,
    task_data,
    variants_of,
    write_tables,
)

PAIR_REFS = [0, 1, 2, 1]
QA_REFS = {"q0": [], "q1": []}
TREE_PREDICTIONS = {  # variant -> task -> predictions (every seed the same)
    "dense": {"proxy_pair": PAIR_REFS, "proxy_qa": {"q0": "yes", "q1": "no"}},
    "no_diagonal": {"proxy_pair": PAIR_REFS, "proxy_qa": {"q0": "", "q1": ""}},
    "longformer": {"proxy_pair": [1, 2, 0, 0], "proxy_qa": {"q0": "", "q1": ""}},
}
TREE_SUMMARIES = {  # variant -> per-seed pretraining summary
    "dense": [{"sparsity": 0.0, "val_mlm_acc": 0.1}, {"sparsity": 0.0, "val_mlm_acc": 0.2}],
    "no_diagonal": [{"sparsity": 0.031, "val_mlm_acc": 0.1}, {"sparsity": 0.031, "val_mlm_acc": 0.1}],
    "longformer": [{"sparsity": 0.887}, {"sparsity": 0.88904}],  # 88.7 and 88.904 %: mean 88.802, shown 88.8
}


def tiny_tree(root, tasks=("proxy_pair", "proxy_qa"), seeds=(0, 1), proxy=True, predictions=TREE_PREDICTIONS,
              references=None) -> dict:  # fmt: skip
    references = references or {"proxy_pair": PAIR_REFS, "proxy_qa": QA_REFS}
    records = [{"name": v, "kind": "fixed", "role": "fixed", "pretrained": str(root / v / "s{seed}"),
                "finetuned": str(root / v / "s{seed}" / "{task}")} for v in predictions]  # fmt: skip
    for v in predictions:
        for s, seed in enumerate(seeds):
            (root / v / f"s{seed}").mkdir(parents=True)
            (root / v / f"s{seed}" / "summary.json").write_text(json.dumps(TREE_SUMMARIES[v][s]))
            for task in tasks:
                preds, refs = predictions[v][task], references[task]
                folder = root / v / f"s{seed}" / task
                folder.mkdir()
                (folder / "predictions.json").write_text(json.dumps({"validation": {"predictions": preds,
                                                                                    "references": refs}}))
                metrics = {"eval": {"validation": task_metrics(TASKS[task], preds, refs)}, "seed": 7}
                (folder / "metrics.json").write_text(json.dumps(metrics))
    return {"scale": "hand-made", "proxy": proxy, "seeds": list(seeds), "tasks": list(tasks), "variants": records,
            "report": {"bootstrap_samples": 100}}  # fmt: skip


def test_collect_reads_every_variant_seed_and_column(tmp_path):
    scores, long = collect(tiny_tree(tmp_path))
    assert scores.variants == ["dense", "no_diagonal", "longformer"] and scores.seeds == [0, 1]
    assert [c.name for c in scores.columns] == ["proxy_pair", "proxy_qa", "proxy_qa_em"]
    assert scores.points.tolist() == [[[100.0, 0.0, 0.0]] * 2, [[100.0, 100.0, 100.0]] * 2, [[0.0, 100.0, 100.0]] * 2]
    assert scores.draws.shape == (3, 2, 3, 100)
    assert (scores.draws == scores.points[..., None]).all()  # every resample scores what the whole split does
    assert scores.sparsity.flatten().tolist() == pytest.approx([0.0, 0.0, 3.1, 3.1, 88.7, 88.904])
    assert scores.val_mlm_acc[:2].flatten().tolist() == pytest.approx([10.0, 20.0, 10.0, 10.0])
    assert np.isnan(scores.val_mlm_acc[2]).all()  # no val_mlm_acc in longformer's summaries
    assert scores.examples.tolist() == [4, 2, 2] and scores.examples.dtype.kind == "i"  # counts
    assert scores.constant.dtype == bool
    assert scores.constant[:, :, 0].sum() == 0 and scores.constant[:, :, 1].tolist() == [[False] * 2, [True] * 2,
                                                                                         [True] * 2]  # fmt: skip
    assert scores.baseline_points.tolist() == [50.0, 100.0, 100.0]
    assert (scores.baseline_draws[1:] == 100.0).all() and scores.baseline_draws.shape == (3, 100)
    assert len(long) == 3 * 2 * (1 + 6)  # accuracy; SQuAD v2's exact, f1, total and NoAns_* (no HasAns_*: no answer)
    row = long[(long.variant == "longformer") & (long.seed == 1) & (long.metric == "accuracy")].iloc[0].to_dict()
    assert row == {"variant": "longformer", "seed": 1, "task": "proxy_pair", "split": "validation",
                   "metric": "accuracy", "value": 0.0, "proxy": True, "finetune_seed": 7}  # fmt: skip


def with_data(path: Path, record: dict) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), "data": record}))


def test_task_data_is_the_same_for_every_variant_and_seed(tmp_path):
    """proxy_pair's metrics.json have no record (as if written before records existed): not compared, and the
    task after it in the same run is still read."""
    p = tiny_tree(tmp_path)
    assert task_data(p) == {}
    record = {"path": "nyu-mll/glue", "name": "rte", "revision": "a" * 40}
    files = sorted(tmp_path.glob("*/s*/proxy_qa/metrics.json"))
    for path in files:
        with_data(path, record)
    assert task_data(p) == {"proxy_qa": record} and len(files) == 6
    with_data(files[-1], {**record, "revision": "b" * 40})
    with pytest.raises(UserError, match=rf"^{files[-1]} read proxy_qa from .*'b+'.*, {files[0]} from .*'a+'.*: the "
                                        r"variants would be compared on different data \(pin tasks.hub_revisions, or "
                                        r"rerun the fine-tunings on one copy of the files\)$"):
        task_data(p)


def test_write_tables_names_the_data_of_each_task(tmp_path):
    p = tiny_tree(tmp_path)
    for path in tmp_path.glob("*/s*/proxy_pair/metrics.json"):
        with_data(path, {"path": "data/x/tasks/proxy_pair", "sha256": {"dev.tsv": "ab"}})
    summary = write_tables(p, tmp_path / "tables")
    assert summary["data"] == {"proxy_pair": {"path": "data/x/tasks/proxy_pair", "sha256": {"dev.tsv": "ab"}}}
    with_data(next(tmp_path.glob("longformer/s1/proxy_pair/metrics.json")), {"path": "elsewhere", "sha256": {}})
    with pytest.raises(UserError, match="compared on different data"):
        write_tables(p, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_collect_pairs_the_runs_on_shared_resamples_and_repeats_itself(tmp_path):
    """One resample per column for every run: two runs with the same predictions get the same draws; the
    baseline's draws are those of "label 1 everywhere"; the same files give the same draws."""
    half = {v: {"proxy_pair": [0, 1, 0, 0]} for v in ("dense", "no_diagonal")}  # right on 2 of 4 examples
    p = tiny_tree(tmp_path, tasks=("proxy_pair",), predictions={**half, "longformer": {"proxy_pair": [1] * 4}})
    scores, _ = collect(p)
    assert (scores.draws[0] == scores.draws[1]).all() and scores.draws[0, 0, 0].std() > 0
    assert (scores.draws[2, 0, 0] == scores.baseline_draws[0]).all()
    assert (collect(p)[0].draws == scores.draws).all()


def test_collect_rejects_a_metrics_file_that_the_predictions_do_not_give(tmp_path):
    p = tiny_tree(tmp_path, tasks=("proxy_pair",))
    path = tmp_path / "longformer/s1/proxy_pair/metrics.json"
    path.write_text(json.dumps({"eval": {"validation": {"accuracy": 0.005}}}))  # 0.5 points off the true 0
    with pytest.raises(UserError, match=r"predictions.json: accuracy recomputed from the predictions is 0.0000, "
                                        r"metrics.json says 0.5000"):  # fmt: skip
        collect(p)
    path.write_text(json.dumps({"eval": {"validation": {"accuracy": 1e-9}}}))  # rounding noise: accepted
    collect(p)
    # Relative tolerance 1e-6: 5e-4 points off dense's 100 % is refused (0.5 % of the default 1e-5 would pass it).
    (tmp_path / "dense/s0/proxy_pair/metrics.json").write_text(json.dumps({"eval": {"validation": {"accuracy": 0.999995}}}))
    with pytest.raises(UserError, match="metrics.json says 99.9995"):
        collect(p)


def test_collect_names_the_file_of_runs_on_other_examples(tmp_path):
    p = tiny_tree(tmp_path, tasks=("proxy_pair",))
    path = tmp_path / "dense/s0/proxy_pair/predictions.json"
    path.write_text(json.dumps({"validation": {"predictions": [0, 1, 2], "references": [0, 1, 2]}}))
    with pytest.raises(UserError) as error:
        collect(p)
    assert str(error.value) == (f"proxy_pair validation: the runs hold different eval examples (references differ): "
                                f"they cannot be paired ({path} vs the others: do the fine-tunings use different "
                                f"seeds or max_eval_examples?)")  # fmt: skip


NOTE_2_SEEDS = (f"Scores in percent (main metric per task; span tasks also exact match `_em`): mean over 2 pretraining "
                f"seed(s) (0, 1), each fine-tuned once per task, and its 95 % interval [lo, hi] (two-way "
                f"bootstrap over seeds and eval examples, 100 draws; sparsebert/stats.py). Sparsity = 1 - mean(keep) "
                f"of the mask, measured at our sequence length, mean over seeds (paper: L=128). Paper: "
                f"{paper.CITATION}; {paper.SCALE}.")  # fmt: skip
PROXY_NOTE = ("**PROXY TASKS.** Every task here is a proxy derived from the embedded corpus, not the benchmark. The "
              "`paper_*` columns are the paper's BERT-base numbers on real GLUE, printed for reference only: they are "
              "NOT comparable to the proxy scores, so no score delta is given.")  # fmt: skip


def test_write_tables_metrics_json(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # longformer has no val_mlm_acc: no "mean of empty slice"
        summary = write_tables(tiny_tree(tmp_path), tmp_path / "tables")
    assert json.loads((tmp_path / "tables/metrics.json").read_text()) == summary
    assert {k: summary[k] for k in ("scale", "proxy", "seeds", "interval")} == {
        "scale": "hand-made", "proxy": True, "seeds": [0, 1],
        "interval": "95 % percentile interval, 100 draws of a two-way bootstrap (seeds x eval examples; one seed: "
                    "examples only), sparsebert/stats.py"}  # fmt: skip
    point = lambda x: [x, x]  # noqa: E731 (every resample scores the same: the intervals are points)
    assert summary["variants"]["dense"] == {
        "kind": "fixed", "sparsity": 0.0, "sparsity_per_seed": [0.0, 0.0], "val_mlm_acc": 15.0,
        "avg_glue": 100.0, "avg_squad_swag": 0.0, "avg": 50.0,
        "scores": {"proxy_pair": 100.0, "proxy_qa": 0.0, "proxy_qa_em": 0.0},
        "intervals": {"proxy_pair": point(100.0), "proxy_qa": point(0.0), "proxy_qa_em": point(0.0),
                      "avg_glue": point(100.0), "avg_squad_swag": point(0.0), "avg": point(50.0)}}  # fmt: skip
    longformer = summary["variants"]["longformer"]
    assert (longformer["sparsity"], longformer["sparsity_per_seed"], longformer["val_mlm_acc"]) == (88.8, [88.7, 88.9], None)
    assert (longformer["avg_glue"], longformer["avg_squad_swag"], longformer["avg"]) == (0.0, 100.0, 50.0)
    assert list(summary["variants"]) == ["dense", "no_diagonal", "longformer"]


def test_write_tables_markdown_and_csv(tmp_path):
    write_tables(tiny_tree(tmp_path), tmp_path / "tables")
    glue = (tmp_path / "tables/glue.md").read_text().splitlines()
    assert glue == [
        "# PROXY tasks (GLUE-shaped)", "", "Our scale: hand-made.", "", PROXY_NOTE, "", NOTE_2_SEEDS, "",
        "| variant | kind | sparsity | proxy_pair | avg | paper_sparsity | delta_sparsity | paper_avg |",
        "|---|---|---|---|---|---|---|---|",
        "| dense | fixed | 0.0 | 100.0 [100.0, 100.0] | 100.0 [100.0, 100.0] |  |  |  |",
        "| no_diagonal | fixed | 3.1 | 100.0 [100.0, 100.0] | 100.0 [100.0, 100.0] |  |  |  |",
        "| longformer | fixed | 88.8 | 0.0 [0.0, 0.0] | 0.0 [0.0, 0.0] | 88.7 | 0.1 | 80.1 |", "",
        "## BERT (dense) vs BERT without diagonal", "",
        "Difference no_diagonal - dense with its 95 % interval (2 seed(s) each; paired on the eval examples and the "
        "seeds).", "", "| task | dense | no_diagonal | difference | 95 % interval |", "|---|---|---|---|---|",
        "| proxy_pair | 100.0 | 100.0 | +0.0 | [+0.0, +0.0] |"]  # fmt: skip
    other = (tmp_path / "tables/squad_swag.md").read_text().splitlines()
    assert other[0] == "# PROXY tasks (SQuAD/SWAG-shaped)" and other[4] == PROXY_NOTE
    assert other[8:13] == [
        "| variant | kind | sparsity | proxy_qa | proxy_qa_em | avg |", "|---|---|---|---|---|---|",
        "| dense | fixed | 0.0 | 0.0 [0.0, 0.0] | 0.0 [0.0, 0.0] | 0.0 [0.0, 0.0] |",
        "| no_diagonal | fixed | 3.1 | 100.0 [100.0, 100.0] | 100.0 [100.0, 100.0] | 100.0 [100.0, 100.0] |",
        "| longformer | fixed | 88.8 | 100.0 [100.0, 100.0] | 100.0 [100.0, 100.0] | 100.0 [100.0, 100.0] |"]  # fmt: skip
    assert other[-1] == "| proxy_qa_em | 0.0 | 100.0 | +100.0 | [+100.0, +100.0] |"
    csv = pd.read_csv(tmp_path / "tables/glue.csv", index_col="variant")
    assert list(csv.columns) == ["kind", "sparsity", "proxy_pair", "proxy_pair_lo", "proxy_pair_hi", "avg", "avg_lo",
                                 "avg_hi", "paper_sparsity", "delta_sparsity", "paper_avg"]  # fmt: skip
    assert list(pd.read_csv(tmp_path / "tables/squad_swag.csv", index_col="variant").columns) == [
        "kind", "sparsity", "proxy_qa", "proxy_qa_lo", "proxy_qa_hi", "proxy_qa_em", "proxy_qa_em_lo", "proxy_qa_em_hi",
        "avg", "avg_lo", "avg_hi"]
    long = pd.read_csv(tmp_path / "tables/all_metrics.csv")
    assert len(long) == 42 and list(long.columns) == ["variant", "seed", "task", "split", "metric", "value", "proxy",
                                                      "finetune_seed"]  # fmt: skip
    saved = Scores.load(tmp_path / "tables/bootstrap.npz")
    assert saved.points.tolist() == collect(tiny_tree(tmp_path / "again"))[0].points.tolist()


def test_write_tables_on_real_tasks_with_one_seed(tmp_path):
    """Real task names: the paper's column and its delta are computed; one seed: the note says what the
    interval leaves out. Our average is over sst2 alone, the paper's over 9 columns: no delta_avg (it printed
    0 - 80.1 = -80.1), and the note says why."""
    # answers that are not articles: SQuAD v1.1 normalizes "a" to nothing and scores it F1 0 even when right
    preds = {"dense": {"sst2": [0, 1, 1, 1], "squad_v1": {"q0": "d", "q1": "b"}},
             "longformer": {"sst2": [1, 0, 0, 0], "squad_v1": {"q0": "d", "q1": "c"}}}  # fmt: skip
    refs = {"sst2": [0, 1, 1, 1], "squad_v1": {"q0": ["d"], "q1": ["b"]}}
    p = tiny_tree(tmp_path, tasks=("sst2", "squad_v1"), seeds=(0,), proxy=False, predictions=preds, references=refs)
    write_tables(p, tmp_path / "tables")
    glue = (tmp_path / "tables/glue.md").read_text().splitlines()
    assert glue[:5] == ["# GLUE dev", "", "Our scale: hand-made.", "", glue[4]] and "PROXY" not in "\n".join(glue)
    assert "(bootstrap over the eval examples only: one seed, seed variance not covered, 100 draws;" in glue[4]
    assert glue[4].endswith(" delta_avg is left empty: the paper's Avg is over its 9 GLUE columns (mnli_m, mnli_mm, "
                            "qqp, qnli, sst2, cola, stsb, mrpc, rte), ours over sst2.")  # fmt: skip
    assert glue[6] == ("| variant | kind | sparsity | sst2 | avg | paper_sparsity | delta_sparsity | paper_sst2 | "
                       "delta_sst2 | paper_avg | delta_avg |")  # fmt: skip
    # longformer: sst2 0 %, the paper's 91.8 -> -91.8; avg (sst2 only) not comparable with the paper's 80.1
    assert glue[9] == ("| longformer | fixed | 88.7 | 0.0 [0.0, 0.0] | 0.0 [0.0, 0.0] | 88.7 | 0.0 | 91.8 | -91.8 | 80.1 "
                       "|  |")  # fmt: skip
    assert glue[11] == "BERT vs BERT without diagonal: needs both `dense` and `no_diagonal` in the config."
    other = (tmp_path / "tables/squad_swag.md").read_text().splitlines()
    assert other[0] == "# SQuAD v1.1 / v2.0 and SWAG dev" and "delta_avg" not in other[4]
    # one right answer of two: 50 %, and a bootstrap of 2 examples reaches both ends of [0, 100]
    assert other[9] == "| longformer | fixed | 88.7 | 50.0 [0.0, 100.0] | 50.0 [0.0, 100.0] | 50.0 [0.0, 100.0] |"


@pytest.mark.parametrize("tasks, note", [
    (("sst2", "rte"), " delta_avg is left empty: the paper's Avg is over its 9 GLUE columns (mnli_m, mnli_mm, qqp, "
                      "qnli, sst2, cola, stsb, mrpc, rte), ours over sst2, rte."),
    (("squad_v1",), ""),  # no GLUE task: no average to compare, nothing to explain
])
def test_the_glue_note_says_why_delta_avg_is_empty_only_when_it_is(tmp_path, tasks, note):
    """Real tasks, one seed: the note names every GLUE column our average is over; a run with no GLUE task has
    no GLUE average, and its note says nothing about delta_avg."""
    answers = {"dense": [0, 1, 1, 1], "longformer": [1, 0, 0, 0]}
    preds = {v: {"sst2": a, "rte": a, "squad_v1": {"q0": "d", "q1": "b"}} for v, a in answers.items()}
    refs = {"sst2": [0, 1, 1, 1], "rte": [0, 1, 1, 1], "squad_v1": {"q0": ["d"], "q1": ["b"]}}
    p = tiny_tree(tmp_path, tasks=tasks, seeds=(0,), proxy=False, predictions=preds, references=refs)
    write_tables(p, tmp_path / "tables")
    text = (tmp_path / "tables/glue.md").read_text().splitlines()[4]
    assert text.endswith("README of github.com/han-shi/SparseBERT; paper-scale: BERT-base, seq 128, LAMB global "
                         "batch 65,536 x 7038 steps, BookCorpus+Wikipedia, real GLUE dev." + note)
    assert ("delta_avg" in text) == bool(note)


def test_run_records_give_seeds_variants_searches_and_folders():
    p = {"variants": [{"name": "dense", "role": "fixed", "pretrained": "pre/dense/{seed}",
                       "finetuned": "ft/dense/{seed}/{task}"},
                      {"name": "dam_s", "role": "search", "pretrained": "pre/dam_s/{seed}"}]}  # fmt: skip
    assert seeds_of(p) == [0] and seeds_of({**p, "seeds": None}) == [0] and seeds_of({"seeds": (3, 4)}) == [3, 4]
    assert list(variants_of(p)) == ["dense", "dam_s"] and variants_of(p)["dam_s"]["role"] == "search"
    assert searches_of(p) == ["dam_s"]
    assert str(pretrained_dir(p, "dam_s", 2)) == "pre/dam_s/2"
    assert str(finetuned_dir(p, "dense", 1, "rte")) == "ft/dense/1/rte"


def test_settings_fill_in_the_schema_defaults():
    assert settings({}) == {"equivalence_margin": 1.0, "similar_sparsity": 5.0, "bootstrap_samples": 1000,
                            "bootstrap_seed": 0}  # fmt: skip
    assert settings({"report": None})["bootstrap_samples"] == 1000
    assert settings({"report": {"bootstrap_samples": 200}})["bootstrap_samples"] == 200
    with pytest.raises(UserError, match="bootstrap_samples"):
        settings({"report": {"bootstrap_samples": 10}})  # under the schema's minimum of 100


def test_missing_or_malformed_result_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match=r"missing result file .*nothing.json \(has its rule run\?\)"):
        read_json(tmp_path / "nothing.json")
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert read_json(tmp_path / "ok.json") == {"a": 1}
    with pytest.raises(UserError, match=r"missing result file .*none.npz \(has the tables rule run\?\)"):
        Scores.load(tmp_path / "none.npz")
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps({"validation": {"predictions": [1, 0], "references": [1, 1]}, "test": [1, 2],
                                "old": {"predictions": [1]}}))  # fmt: skip
    assert read_predictions(path, "validation") == ([1, 0], [1, 1])
    for split in ("validation_matched", "test", "old"):
        with pytest.raises(UserError, match=rf"predictions.json: no predictions with references for split "
                                            rf"'{split}' \(written by an older `sparsebert finetune`\? rerun its "
                                            rf"fine-tuning\)"):  # fmt: skip
            read_predictions(path, split)


def test_scores_survive_save_and_load(tmp_path):
    cols = [ACC, SPAN, SPAN_EM]
    rng = np.random.default_rng(0)
    s = Scores(["dense", "dam_s"], [3, 5], cols, rng.random((2, 2, 3)), rng.random((2, 2, 3, 4)),
               rng.random((2, 2)), rng.random((2, 2)), np.array([10, 20, 20]), rng.random((2, 2, 3)) > 0.5,
               rng.random(3), rng.random((3, 4)))  # fmt: skip
    s.save(tmp_path / "bootstrap.npz")
    assert [f.name for f in tmp_path.iterdir()] == ["bootstrap.npz"]  # the temporary file was renamed
    back = Scores.load(tmp_path / "bootstrap.npz")
    assert (back.variants, back.seeds, back.columns) == (["dense", "dam_s"], [3, 5], cols)
    assert all(type(x) is str for x in back.variants) and all(type(x) is int for x in back.seeds)
    assert all(type(c.name) is str and type(c.averaged) is bool and type(c.glue) is bool for c in back.columns)
    for name in ("points", "draws", "sparsity", "val_mlm_acc", "examples", "constant", "baseline_points",
                 "baseline_draws"):  # fmt: skip
        assert np.array_equal(getattr(back, name), getattr(s, name)), name


def test_score_columns_pick_a_tables_tasks_but_no_average_or_bound():
    frame = pd.DataFrame(columns=["kind", "sparsity", "mnli_m", "mnli_mm", "sst2", "sst2_lo", "sst2_hi", "squad_v1",
                                  "squad_v1_em", "avg", "avg_glue", "rte"])  # fmt: skip
    assert score_columns(frame, ["mnli", "sst2", "squad_v1"], glue=True) == ["mnli_m", "mnli_mm", "sst2"]
    assert score_columns(frame, ["mnli", "sst2", "squad_v1"], glue=False) == ["squad_v1", "squad_v1_em"]


def test_build_table_inserts_interval_bounds_and_uses_the_given_average():
    frame = pd.DataFrame({"kind": ["fixed", "dam_s"], "sparsity": [88.0, 91.0], "sst2": [80.0, 90.0],
                          "squad_v1_em": [50.0, 70.0], "avg_glue": [1.0, 2.0]}, index=["longformer", "dam_s_9"])  # fmt: skip
    intervals = {"longformer": {"sst2": (79.0, 83.0), "squad_v1_em": (47.0, 51.0), "avg_glue": (0.5, 1.25)},
                 "dam_s_9": {"sst2": (86.0, 91.0), "squad_v1_em": (66.0, 74.0), "avg_glue": (1.75, 2.5)}}
    table = build_table(frame, ["sst2", "squad_v1_em"], proxy=True, with_paper=False, intervals=intervals,
                        avg="avg_glue")
    assert list(table.columns) == ["kind", "sparsity", "sst2", "sst2_lo", "sst2_hi", "squad_v1_em", "squad_v1_em_lo",
                                   "squad_v1_em_hi", "avg", "avg_lo", "avg_hi"]  # fmt: skip
    assert table["avg"].tolist() == [1.0, 2.0] and table[["avg_lo", "avg_hi"]].values.tolist() == [[0.5, 1.25],
                                                                                                    [1.75, 2.5]]
    assert table[["sst2_lo", "sst2_hi"]].values.tolist() == [[79.0, 83.0], [86.0, 91.0]]
    assert table["squad_v1_em_hi"].tolist() == [51.0, 74.0]
    assert build_table(frame.assign(sst2=[80.064, 90.0]), ["sst2"], True, False)["sst2"].tolist() == [80.06, 90.0]
    # No average column given: the mean of the non-exact-match columns; none: NaN.
    assert build_table(frame, ["sst2", "squad_v1_em"], True, False)["avg"].tolist() == [80.0, 90.0]
    assert build_table(frame, ["squad_v1_em"], True, False)["avg"].isna().all()
    # Proxy tasks: the paper's sparsity and average beside ours, but no score delta.
    proxy = build_table(frame, ["sst2"], proxy=True, with_paper=True)
    assert list(proxy.columns) == ["kind", "sparsity", "sst2", "avg", "paper_sparsity", "delta_sparsity", "paper_avg"]
    assert proxy.loc["longformer", "delta_sparsity"] == pytest.approx(88.0 - 88.7)
    assert np.isnan(proxy.loc["dam_s_9", "paper_sparsity"]) and proxy.loc["longformer", "paper_avg"] == 80.1
    # No variant in the paper's table: its columns are empty (NaN), on real tasks too.
    mine = build_table(frame.loc[["dam_s_9"]], ["sst2"], proxy=False, with_paper=True).iloc[0]
    assert [np.isnan(mine[c]) for c in ("paper_sparsity", "delta_sparsity", "paper_sst2", "delta_sst2", "paper_avg",
                                        "delta_avg")] == [True] * 6  # fmt: skip


def test_markdown_folds_interval_bounds_into_their_cells():
    """An interval need not be centred on the mean (3 seeds: rarely): the cell prints its bounds."""
    table = pd.DataFrame({"kind": ["fixed"], "sparsity": [88.04], "sst2": [80.06], "sst2_lo": [77.96],
                          "sst2_hi": [84.04], "paper_sst2": [np.nan], "n": [3]}, index=["longformer"])  # fmt: skip
    text = markdown(table, "Title", {"scale": "tiny", "proxy": False}, "A note.")
    assert text == ("# Title\n\nOur scale: tiny.\n\nA note.\n\n| variant | kind | sparsity | sst2 | paper_sst2 | n |\n"
                    "|---|---|---|---|---|---|\n| longformer | fixed | 88.0 | 80.1 [78.0, 84.0] |  | 3 |\n")  # fmt: skip


def test_cells_and_json_numbers():
    assert (_cell(80.06), _cell(np.nan), _cell("dam_s"), _cell(3)) == ("80.1", "", "dam_s", "3")
    assert (_num(None), _num(np.nan), _num(80.064), _num(np.float32(2.5))) == (None, None, 80.06, 2.5)
    assert type(_num(np.float64(1.0))) is float


def test_tables_command_line_needs_params_and_out_and_writes_the_tables(tmp_path):
    import argparse
    from pathlib import Path

    from sparsebert import report as module

    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    assert ("--params PARAMS JSON/YAML: scale, proxy, seeds, tasks, report, variants (records with their files' "
            "folders)") in help_text and "--out OUT the tables' directory" in help_text  # fmt: skip
    for args in (["--params", "x"], ["--out", "x"]):
        with pytest.raises(SystemExit):
            parser.parse_args(args)
    (tmp_path / "p.json").write_text(json.dumps(tiny_tree(tmp_path, tasks=("proxy_pair",))))
    args = parser.parse_args(["--params", str(tmp_path / "p.json"), "--out", str(tmp_path / "tables")])
    assert isinstance(args.out, Path)
    module.run(args)
    assert json.loads((tmp_path / "tables/metrics.json").read_text())["variants"]["dense"]["avg"] == 100.0


def test_write_tables_repeats_itself_and_says_what_it_wrote(tmp_path, caplog):
    """Seeds that differ a little (dense right on 30 and on 32 of 40 examples), so the intervals depend on the
    seeded bootstrap of the seeds: the same files give the same tables, into a new nested folder or an existing
    one."""
    refs = PAIR_REFS * 10
    wrong = [(r + 1) % 3 for r in refs]
    preds = {"dense": {"proxy_pair": refs[:30] + wrong[30:]}, "no_diagonal": {"proxy_pair": refs},
             "longformer": {"proxy_pair": wrong}}  # fmt: skip
    p = tiny_tree(tmp_path / "tree", tasks=("proxy_pair",), predictions=preds, references={"proxy_pair": refs})
    folder = tmp_path / "tree/dense/s1/proxy_pair"
    (folder / "predictions.json").write_text(json.dumps({"validation": {"predictions": refs[:32] + wrong[32:],
                                                                        "references": refs}}))  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps({"eval": {"validation": {"accuracy": 0.8}}}))
    first = tmp_path / "a" / "b" / "tables"
    with caplog.at_level("INFO", logger="sparsebert.report"):
        write_tables(p, first)
    assert f"tables: 3 variants x 2 seeds x 1 tasks -> {first}" in caplog.messages
    write_tables(p, first)  # an existing folder
    second = tmp_path / "tables"
    write_tables(p, second)
    for name in ("glue.md", "metrics.json", "glue.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    lo, hi = json.loads((second / "metrics.json").read_text())["variants"]["dense"]["intervals"]["proxy_pair"]
    assert 0.0 < lo < 77.5 < hi  # dense: 75 and 80 %, mean 77.5


def test_diagonal_comparison_of_a_table_without_tasks_does_not_blame_the_variants(tmp_path):
    """A run of GLUE-shaped tasks only: squad_swag.md has no column, but dense and no_diagonal are both there
    (the note used to say that they were missing)."""
    write_tables(tiny_tree(tmp_path, tasks=("proxy_pair",)), tmp_path / "tables")
    other = (tmp_path / "tables/squad_swag.md").read_text().splitlines()
    assert other[-1] == "BERT vs BERT without diagonal: no task of this table in the config."
    glue = (tmp_path / "tables/glue.md").read_text().splitlines()
    assert glue[-1] == "| proxy_pair | 100.0 | 100.0 | +0.0 | [+0.0, +0.0] |"


def test_collect_of_one_variant_and_one_seed(tmp_path):
    """The smallest run: one (variant, seed); the best constant label (1, 2 of 4) scores 50 %."""
    p = tiny_tree(tmp_path, tasks=("proxy_pair",), seeds=(0,), predictions={"dense": TREE_PREDICTIONS["dense"]})
    scores, _ = collect(p)
    assert scores.points.tolist() == [[[100.0]]] and scores.baseline_points.tolist() == [50.0]


# ---------------------------------------------------------------------------------------------------------
# Issue 22: the keep-probability trajectories figure (claim 1's evidence), from a small synthetic run.


def test_per_offset_averages_dam_u_entries_of_each_offset_and_leaves_dam_s_alone():
    keep = np.array([[[0.1, 0.2, 0.3],
                      [0.2, 0.5, 0.6],
                      [0.3, 0.6, 0.9]]])  # (H=1, L=3, L=3)  # fmt: skip
    # offset 0: (0.1 + 0.5 + 0.9) / 3; offset 1: (0.2 + 0.6 + 0.2 + 0.6) / 4; offset 2: (0.3 + 0.3) / 2
    assert per_offset(keep, "dam_u") == pytest.approx(np.array([[0.5, 0.4, 0.3]]))
    assert per_offset(keep[:, 0], "dam_s") is not None and np.array_equal(per_offset(keep[:, 0], "dam_s"), keep[:, 0])


def test_keep_trajectories_figure_is_written_from_a_small_synthetic_run(tmp_path):
    """A DAM_s run (2 seeds x 4 heads, 16 offsets) and a DAM_u run (12 x 12): one PNG and one PDF; without a DAM
    search the figure says so instead of failing."""
    import _keep_trajectories as trajectories

    rng = np.random.default_rng(0)
    variants = []
    for kind in ("dam_s", "dam_u"):
        for seed in (0, 1):
            folder = tmp_path / kind / str(seed)
            folder.mkdir(parents=True)
            keep = getattr(trajectories, kind)("early", rng)
            np.savez(folder / "snapshots.npz", steps=trajectories.STEPS, keep_prob=keep)
        variants.append({"name": kind, "kind": kind, "role": "search", "pretrained": str(tmp_path / kind / "{seed}")})
    out = tmp_path / "figures"
    out.mkdir()
    keep_trajectories({"seeds": [0, 1], "variants": variants}, out)
    for ext in ("png", "pdf"):
        assert (out / f"keep_trajectories.{ext}").stat().st_size > 10_000
    empty = tmp_path / "none"
    empty.mkdir()
    keep_trajectories({"seeds": [0], "variants": [{"name": "dense", "kind": "fixed", "role": "fixed",
                                                   "pretrained": str(tmp_path / "dense/{seed}")}]}, empty)  # fmt: skip
    assert sorted(f.name for f in empty.iterdir()) == ["keep_trajectories.pdf", "keep_trajectories.png"]


# ---------------------------------------------------------------------------------------------------------
# score_vs_sparsity: our panel plots what the paper's panel plots, its GLUE average.


def metrics_json(tmp_path, proxy: bool, avg_glue: list) -> Path:
    """A tables metrics.json of two variants: avg (every task column) 70 and 80, the GLUE average as given."""
    variants = {v: {"kind": "fixed", "sparsity": s, "avg": a, "avg_glue": g,
                    "intervals": {"avg": [a - 1, a + 1], "avg_glue": [None, None] if g is None else [g - 2, g + 3]}}
                for v, s, a, g in zip(("dense", "longformer"), (0.0, 88.0), (70.0, 80.0), avg_glue)}  # fmt: skip
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"proxy": proxy, "variants": variants}))
    return path


@pytest.mark.parametrize("proxy, avg_glue, y, label", [
    (False, [60.0, 65.0], [60.0, 65.0], "GLUE average over this run's GLUE tasks (%)"),
    (True, [60.0, 65.0], [60.0, 65.0], "average of the GLUE-shaped PROXY tasks (%)"),
    (False, [None, None], [70.0, 80.0], "SQuAD/SWAG average (%), no GLUE task: not the paper's GLUE average"),
    (True, [None, None], [70.0, 80.0], "average of the SQuAD/SWAG-shaped PROXY tasks (%)")])  # fmt: skip
def test_score_vs_sparsity_plots_our_glue_average_beside_the_papers(tmp_path, monkeypatch, proxy, avg_glue, y, label):
    """The paper's panel is its GLUE average; ours plotted `avg`, which adds SQuAD and SWAG. Now our panel plots
    avg_glue with its interval (60 - 2 / + 3), and only a run without GLUE(-shaped) tasks falls back on avg
    (interval -+ 1), so labelled."""
    from matplotlib.collections import LineCollection, PathCollection

    saved = {}
    monkeypatch.setattr(figures, "save", lambda fig, out, name, tight=True: saved.update(fig=fig))
    figures.score_vs_sparsity({"scale": "hand-made"}, tmp_path, metrics_json(tmp_path, proxy, avg_glue))
    ours = saved["fig"].axes[0]
    points = [c.get_offsets().tolist() for c in ours.collections if isinstance(c, PathCollection)]
    bars = [[seg.tolist() for seg in c.get_segments()] for c in ours.collections if isinstance(c, LineCollection)]
    low, high = (2, 3) if avg_glue[0] is not None else (1, 1)
    assert [pt for pt in points if pt] == [[[0.0, y[0]]], [[88.0, y[1]]]]  # the legend's entries are empty
    assert bars == [[[[0.0, y[0] - low], [0.0, y[0] + high]]], [[[88.0, y[1] - low], [88.0, y[1] + high]]]]
    assert ours.get_ylabel() == label
