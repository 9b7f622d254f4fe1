"""tables + findings.md on hand-made result trees: the verdict of each claim follows from the numbers (supported,
contradicted, inconclusive), every verdict line carries its effect, interval, seeds and examples, and the
tables show the mean and its interval over seeds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import _keep_trajectories as trajectories
from sparsebert import findings as findings_module
from sparsebert.findings import data_line, write_findings
from sparsebert.io import UserError
from sparsebert.metrics import task_metrics
from sparsebert.report import write_tables
from sparsebert.data.tasks import TASKS

N = 300  # eval examples per task
SEEDS = [0, 1, 2]
VARIANTS = ["dense", "no_diagonal", "longformer", "dam_s_0.001"]
SPARSITY = {"dense": 0.0, "no_diagonal": 3.1, "longformer": 88.0, "dam_s_0.001": 90.0}


def classification(accuracy: float | None, seed: int):
    """proxy_pair predictions: right on the first `accuracy` share of the examples (the same for every run);
    None: one class for every example."""
    refs = np.random.default_rng(7).integers(0, 3, N)
    if accuracy is None:
        return [0] * N, refs.tolist()
    right = np.arange(N) < round(accuracy * N)
    shuffle = np.random.default_rng(100 + seed).permutation(N)  # which examples a seed gets right
    preds = np.where(right[shuffle], refs, (refs + 1) % 3)
    return preds.tolist(), refs.tolist()


def span(accuracy: float | None, seed: int):
    golds = {f"q{i}": ([] if i % 5 == 0 else [f"word{i}"]) for i in range(N)}
    if accuracy is None:
        return {q: "" for q in golds}, golds
    right = np.random.default_rng(200 + seed).permutation(N) < round(accuracy * N)
    preds = {q: ((golds[q] or [""])[0] if ok else "wrong") for q, ok in zip(golds, right)}
    return preds, golds


def snapshots(order: str, heads: int = 2, L: int = 6):
    """steps and DAM_s keep probabilities where the diagonal (offset 0) drops first, last, or nothing drops."""
    steps = np.array([0, 10, 20, 30])
    keep = np.full((4, heads, L), 0.5001)
    keep[1:] = 0.8
    if order == "first":
        keep[1:, :, 0] = 0.2  # the diagonal below 0.5 from step 10; offsets 1-2 from step 20; the rest never
        keep[2:, :, 1:3] = 0.3
    elif order == "last":
        keep[1:, :, 1:] = 0.2  # every other offset drops at step 10, the diagonal never
    return steps, keep


def build(root, accuracies: dict, order: str, seeds=tuple(SEEDS)):
    """A results tree: accuracies[variant] = per-seed accuracies (proxy_pair; proxy_qa the same)."""
    tasks = ["proxy_pair", "proxy_qa"]
    records = [{"name": v, "kind": "dam_s" if v.startswith("dam") else "fixed",
                "role": "search" if v.startswith("dam") else "fixed",
                "pretrained": str(root / "pretrained" / v / "s{seed}"),
                "finetuned": str(root / "finetuned" / v / "s{seed}" / "{task}")}
               for v in VARIANTS]  # fmt: skip
    p = {"scale": "hand-made", "proxy": True, "variants": records, "seeds": list(seeds), "tasks": tasks,
         "report": {"bootstrap_samples": 400}}  # fmt: skip
    for v in VARIANTS:
        for s, seed in enumerate(seeds):
            folder = root / "pretrained" / v / f"s{seed}"
            folder.mkdir(parents=True)
            summary = {"sparsity": SPARSITY[v] / 100, "val_mlm_acc": 0.1 + 0.02 * s, "val_unigram_mlm_acc": 0.05,
                       "val_nsp_acc": 0.75, "seed": seed}
            if v.startswith("dam"):
                steps, keep = snapshots(order)
                np.savez(folder / "snapshots.npz", steps=steps, keep_prob=keep)
                summary["fallback_rows"] = [0, 1]
            (folder / "summary.json").write_text(json.dumps(summary))
            for task, make in (("proxy_pair", classification), ("proxy_qa", span)):
                preds, refs = make(accuracies[v][s], seed)
                out = root / "finetuned" / v / f"s{seed}" / task
                out.mkdir(parents=True)
                (out / "predictions.json").write_text(json.dumps({"validation": {"predictions": preds, "references": refs}}))
                metrics = {"eval": {"validation": task_metrics(TASKS[task], preds, refs)}, "seed": 0}
                (out / "metrics.json").write_text(json.dumps(metrics))
    return p


def verdicts(text: str) -> list[str]:
    return re.findall(r"^Verdict: \*\*(\w+) at this scale\*\*", text, re.M)


def tables_and_findings(tmp_path, p) -> str:
    write_tables(p, tmp_path / "tables")
    return write_findings(p, tmp_path / "tables/metrics.json", tmp_path / "tables/bootstrap.npz", tmp_path / "findings.md")


def findings(tmp_path, accuracies, order):
    p = build(tmp_path, accuracies, order)
    return tables_and_findings(tmp_path, p), p


def test_every_claim_supported(tmp_path):
    acc = {"dense": [0.60, 0.62, 0.61], "no_diagonal": [0.60, 0.62, 0.61], "longformer": [0.50, 0.52, 0.51],
           "dam_s_0.001": [0.70, 0.71, 0.72]}  # fmt: skip
    text, _ = findings(tmp_path, acc, "first")
    assert verdicts(text) == ["supported", "supported", "supported"], text
    # Each verdict line: the effect, its interval, the seeds and the examples it rests on.
    claim2 = next(line for line in text.splitlines() if line.startswith("Verdict") and "margin" in line)
    assert "+0.00 points, 95 % interval [+0.00, +0.00]" in claim2 and "3 seeds" in claim2 and f"{2 * N} eval" in claim2
    assert "mean rank of the diagonal by area below 0.25 0.000" in text and "vs longformer (88.0 %): +" in text
    assert "{" not in text and "3 of 36 query rows had no key" in text  # every number filled in
    # What pretraining learned, beside the unigram floor: MLM (10 + 12 + 14) / 3 = 12 % vs 5 %.
    assert "dense validation MLM accuracy 12.0 % (mean over seeds) vs 5.0 % for always predicting" in text
    assert "(2.4x); NSP 75.0 %" in text


def test_every_claim_contradicted(tmp_path):
    acc = {"dense": [0.80, 0.81, 0.82], "no_diagonal": [0.50, 0.52, 0.51], "longformer": [0.70, 0.71, 0.72],
           "dam_s_0.001": [0.40, 0.41, 0.42]}  # fmt: skip
    text, _ = findings(tmp_path, acc, "last")
    assert verdicts(text) == ["contradicted", "contradicted", "contradicted"], text


# Seeds that disagree (a difference of +-10 points): every claim's interval straddles its boundaries.
SEEDS_DISAGREE = {"dense": [0.60, 0.60, 0.60], "no_diagonal": [0.70, 0.50, 0.61], "longformer": [0.60, 0.60, 0.60],
                  "dam_s_0.001": [0.70, 0.50, 0.61]}  # fmt: skip


def test_every_claim_inconclusive(tmp_path):
    """Seeds that disagree: intervals straddle every boundary; nothing drops."""
    text, _ = findings(tmp_path, SEEDS_DISAGREE, "none")
    assert verdicts(text) == ["inconclusive", "inconclusive", "inconclusive"], text
    assert "mean rank of the diagonal by area below 0.25 0.500" in text


def test_a_claim_s_random_draws_do_not_move_another_claim_s_interval(tmp_path, monkeypatch):
    """Each claim bootstraps from its own seeded stream: claim 1 drawing more (a changed method, more DAM runs)
    leaves the intervals of claims 2 and 3 as they were. With one shared stream they moved (by a few tenths of a
    point on the default run when claim 1's interval stopped resampling heads)."""
    before, p = findings(tmp_path, SEEDS_DISAGREE, "none")
    claim_1 = findings_module.claim_diagonal_dropped_first

    def drawing_more(p, cfg, rng):
        rng.random(12345)
        return claim_1(p, cfg, rng)

    monkeypatch.setattr(findings_module, "claim_diagonal_dropped_first", drawing_more)
    after = write_findings(p, tmp_path / "tables/metrics.json", tmp_path / "tables/bootstrap.npz", tmp_path / "again.md")
    claims_2_and_3 = before[before.index("## 2."):]
    assert "95 % interval [-" in claims_2_and_3 and after[after.index("## 2."):] == claims_2_and_3


def test_each_section_bootstraps_from_its_own_seeded_stream(tmp_path, monkeypatch):
    """The dense-vs-constant section and each claim get a generator of their own, seeded from the config: the
    same first draw in two writes (reproducible bytes), a different one in each section (no shared stream)."""
    _, p = findings(tmp_path, SEEDS_DISAGREE, "none")
    first_draws = []

    def spy(*args, returns=()):
        first_draws.append(next(a for a in args if isinstance(a, np.random.Generator)).random())
        return type(returns)(returns)

    monkeypatch.setattr(findings_module, "dense_vs_constant", lambda *args: spy(*args, returns={}))
    for name in ("claim_diagonal_dropped_first", "claim_no_diagonal_matches_bert", "claim_dam_beats_designed"):
        monkeypatch.setattr(findings_module, name, lambda *args: spy(*args, returns=[]))
    for out in ("a.md", "b.md"):
        write_findings(p, tmp_path / "tables/metrics.json", tmp_path / "tables/bootstrap.npz", tmp_path / out)
    assert first_draws[:4] == first_draws[4:] and len(set(first_draws[:4])) == 4, first_draws


def test_two_constant_predictors_are_not_evidence_of_equivalence(tmp_path):
    """dense and no_diagonal both predict one output everywhere: their difference is exactly 0, and claim 2 must
    not call that a match; the other variants still separate on these tasks."""
    acc = {"dense": [None] * 3, "no_diagonal": [None] * 3, "longformer": [0.50, 0.52, 0.51],
           "dam_s_0.001": [0.70, 0.71, 0.72]}  # fmt: skip
    text, _ = findings(tmp_path, acc, "first")
    assert verdicts(text)[1] == "inconclusive", text
    assert "Left out: proxy_pair, proxy_qa, where dense and no_diagonal both predict one constant" in text


def test_one_seed_cannot_decide_a_claim(tmp_path):
    """The same clear differences as in the supported case, but one pretraining seed: the intervals see the
    eval examples only (claim 1's: the heads), so every verdict is inconclusive and says what those alone gave."""
    acc = {"dense": [0.60], "no_diagonal": [0.60], "longformer": [0.50], "dam_s_0.001": [0.70]}
    p = build(tmp_path, acc, "first", seeds=[0])
    text = tables_and_findings(tmp_path, p)
    assert verdicts(text) == ["inconclusive", "inconclusive", "inconclusive"], text
    lines = [line for line in text.splitlines() if line.startswith("Verdict")]
    assert sum("ignores seed variance" in line for line in lines) == 3
    assert sum("(the eval examples alone: supported; one seed cannot decide)" in line for line in lines) == 1
    assert sum("(the heads alone: supported; one seed cannot decide)" in line for line in lines) == 1  # claim 1
    assert "-> inconclusive (the eval examples alone: supported; one seed cannot decide)" in text


def test_tables_show_mean_and_interval_over_seeds(tmp_path):
    acc = {"dense": [0.60, 0.62, 0.64], "no_diagonal": [0.60, 0.62, 0.61], "longformer": [0.50, 0.52, 0.51],
           "dam_s_0.001": [0.70, 0.71, 0.72]}  # fmt: skip
    p = build(tmp_path, acc, "first")
    summary = write_tables(p, tmp_path / "tables")
    glue = pd.read_csv(tmp_path / "tables/glue.csv", index_col="variant")
    assert glue.loc["dense", "proxy_pair"] == pytest.approx(62.0, abs=0.01)  # the mean over seeds
    lo, hi = summary["variants"]["dense"]["intervals"]["proxy_pair"]
    assert lo < 62.0 < hi and summary["variants"]["dense"]["sparsity"] == 0.0
    assert glue.loc["dense", ["proxy_pair_lo", "proxy_pair_hi"]].tolist() == pytest.approx([lo, hi], abs=0.005)
    assert {"avg_lo", "avg_hi"} <= set(glue.columns)
    assert f"| 62.0 [{lo:.1f}, {hi:.1f}] |" in (tmp_path / "tables/glue.md").read_text()
    long = pd.read_csv(tmp_path / "tables/all_metrics.csv")
    assert sorted(long["seed"].unique()) == SEEDS


def test_runs_evaluated_on_different_examples_cannot_be_paired(tmp_path):
    acc = {v: [0.6, 0.6, 0.6] for v in VARIANTS}
    p = build(tmp_path, acc, "first")
    path = tmp_path / "finetuned/longformer/s1/proxy_pair/predictions.json"
    data = json.loads(path.read_text())
    data["validation"]["references"][0] = (data["validation"]["references"][0] + 1) % 3
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="different eval examples"):
        write_tables(p, tmp_path / "tables")


def test_dense_is_compared_with_the_best_constant_predictor(tmp_path):
    refs = np.random.default_rng(7).integers(0, 3, N)  # classification()'s references
    majority = 100 * np.bincount(refs).max() / N  # by hand: the best single label's accuracy
    unanswerable = 100 * sum(i % 5 == 0 for i in range(N)) / N  # span(): "no answer" everywhere scores this F1
    good = {v: [0.8, 0.82, 0.78] for v in VARIANTS}
    text, _ = findings(tmp_path / "good", good, "first")
    pair = re.search(r"^- proxy_pair \(accuracy\): dense ([\d.]+) vs constant ([\d.]+): .*: (.*)$", text, re.M)
    qa = re.search(r"^- proxy_qa \(f1\): dense ([\d.]+) vs constant ([\d.]+): .*: (.*)$", text, re.M)
    assert float(pair[2]) == pytest.approx(majority, abs=0.05) and float(qa[2]) == pytest.approx(unanswerable, abs=0.05)
    assert pair[3] == qa[3] == "beats it"
    assert "Dense beats the constant predictor on 2 of 2 tasks." in text
    flat = {**good, "dense": [None, None, None]}  # dense predicts one class / "no answer" for everything
    text, _ = findings(tmp_path / "flat", flat, "first")
    assert "Dense beats the constant predictor on 0 of 2 tasks." in text
    assert len(re.findall(r"^- proxy_\w+ \(\w+\): .*: does not beat it$", text, re.M)) == 2


# ---------------------------------------------------------------------------------------------------------
# Issue 17, round 3: each claim's text on hand-made scores (no tables run). Every (variant, column) has one
# point and draws point + spread * UNIT for every seed; UNIT's 2.5 % / 97.5 % quantiles are -0.95 / +0.95, so
# the interval of a difference b - a is (point_b - point_a) +- 0.95 * (spread_b - spread_a), whatever the seed
# draws (identical seeds: the seed level adds nothing).

from sparsebert.findings import (  # noqa: E402
    claim_dam_beats_designed,
    claim_diagonal_dropped_first,
    claim_no_diagonal_matches_bert,
    dense_vs_constant,
    learned_line,
    tasks_line,
)
from sparsebert.report import Column, Scores  # noqa: E402

UNIT = np.linspace(-1.0, 1.0, 41)
ACC = Column("sst2", "sst2", "validation", "accuracy", True, True)
SPAN = Column("squad_v1", "squad_v1", "validation", "f1", True, False)
SPAN_EM = Column("squad_v1_em", "squad_v1", "validation", "exact_match", False, False)
CORR = Column("stsb", "stsb", "validation", "spearmanr", True, True)
KINDS = {"dense": "fixed", "no_diagonal": "fixed", "longformer": "fixed", "star": "fixed", "bigbird": "fixed",
         "dam_s": "dam_s", "dam_u": "dam_u"}  # fmt: skip


def hand_scores(table: dict, columns: list, n_seeds: int = 2, sparsity: dict | None = None,
                examples: list | None = None) -> Scores:
    """table[variant] = [(point, spread) per column]; sparsity[variant] = per-seed sparsity in percent."""
    variants = list(table)
    points = np.array([[[pt for pt, _ in table[v]]] * n_seeds for v in variants], dtype=float)  # (V, S, C)
    draws = np.array([[[pt + sp * UNIT for pt, sp in table[v]]] * n_seeds for v in variants])  # (V, S, C, B)
    spars = np.array([(sparsity or {}).get(v, [0.0] * n_seeds) for v in variants], dtype=float)
    V, C = len(variants), len(columns)
    return Scores(variants, list(range(n_seeds)), list(columns), points, draws, spars, np.zeros((V, n_seeds)),
                  np.array(examples or [30] * C), np.zeros((V, n_seeds, C), dtype=bool), np.zeros(C),
                  np.zeros((C, len(UNIT))))  # fmt: skip


def run_params(variants, proxy: bool = True) -> dict:
    return {"proxy": proxy, "variants": [{"name": v, "kind": KINDS[v], "role": "fixed" if KINDS[v] == "fixed"
                                          else "search"} for v in variants]}  # fmt: skip


CLAIM3 = {"similar_sparsity": 5.0}
BASIS2 = "2 seeds per variant (two-way bootstrap over seed pairs and eval examples)"
CLAIM3_COUNTS = "(each effect with its 95 % interval above)"


def claim3(table, columns, sparsity, n_seeds=2, proxy=True) -> list[str]:
    s = hand_scores(table, columns, n_seeds, {v: [x] * n_seeds for v, x in sparsity.items()})
    return claim_dam_beats_designed(s, run_params(table, proxy), CLAIM3, np.random.default_rng(0))


def test_claim_3_states_its_rule_and_what_it_averages():
    table = {"dense": [(70, 0)], "longformer": [(60, 0)], "dam_s": [(70, 1)]}
    sparsity = {"dense": 0.0, "longformer": 85.0, "dam_s": 80.0}
    lines = claim3(table, [ACC], sparsity)
    assert lines[:4] == [
        "## 3. DAM masks beat hand-designed sparse masks at similar or higher sparsity", "",
        "Effect = DAM - hand-designed mask on the GLUE average (the GLUE-shaped proxy tasks) over its informative "
        "columns, for every hand-designed mask at most 5 sparsity points sparser than the DAM mask (config "
        "report.similar_sparsity; sparsity = mean over seeds); DAM rows are the searched models fine-tuned with "
        "their binarized masks (the official protocol). A pair is supported if its 95 % interval lies above 0, "
        "contradicted below 0. The claim is supported if more than half of the pairs are supported and none is "
        "contradicted, contradicted if more than half are contradicted, inconclusive otherwise.", ""]  # fmt: skip
    real = claim3(table, [ACC], sparsity, proxy=False)
    assert real[2].startswith("Effect = DAM - hand-designed mask on the GLUE average (the paper's 9 columns) over its")


def test_claim_3_without_glue_columns_averages_the_other_tasks():
    """Only a SQuAD-shaped column: the claim must use it (not look for GLUE columns and find none)."""
    table = {"dense": [(70, 0), (60, 0)], "longformer": [(60, 0), (50, 0)], "dam_s": [(70, 1), (60, 0)]}
    sparsity = {"dense": 0.0, "longformer": 85.0, "dam_s": 80.0}
    lines = claim3(table, [SPAN, SPAN_EM], sparsity)
    assert lines[2].startswith("Effect = DAM - hand-designed mask on the average score (no GLUE-shaped task "
                               "configured) over its informative columns")  # fmt: skip
    assert lines[5] == "  - vs longformer (85.0 %): +10.00 points, 95 % interval [+9.05, +10.95] on squad_v1 -> supported"


def test_claim_3_compares_each_dam_run_with_the_designed_masks_at_most_5_points_sparser():
    """dam_s at 80 %: longformer exactly 5 points sparser counts (+10 +- 9.5: supported), star 4 points
    sparser too (+5 +- 9.5: inconclusive), bigbird 5.5 points sparser does not, nor do dense and no_diagonal
    (baselines) or dam_u (not hand-designed). dam_u at 70 % has no rival. 1 of 2 pairs supported: inconclusive.
    Only the GLUE column counts (on squad_v1 dam_s is 10 points worse than every mask)."""
    table = {"dense": [(70, 0), (50, 0)], "no_diagonal": [(70, 0), (50, 0)], "longformer": [(60, 0), (50, 0)],
             "star": [(65, 0), (50, 0)], "bigbird": [(40, 0), (50, 0)], "dam_s": [(70, 10), (40, 0)],
             "dam_u": [(70, 0), (50, 0)]}  # fmt: skip
    sparsity = {"dense": 0.0, "no_diagonal": 3.0, "longformer": 85.0, "star": 84.0, "bigbird": 85.5, "dam_s": 80.0,
                "dam_u": 70.0}  # fmt: skip
    lines = claim3(table, [ACC, SPAN], sparsity)
    assert lines[4:] == [
        "- dam_s (sparsity 80.0 %): 2 hand-designed mask(s) at most 5 points sparser:",
        "  - vs longformer (85.0 %): +10.00 points, 95 % interval [+0.50, +19.50] on sst2 -> supported",
        "  - vs star (84.0 %): +5.00 points, 95 % interval [-4.50, +14.50] on sst2 -> inconclusive",
        "- dam_u (sparsity 70.0 %): no hand-designed mask at similar or higher sparsity.", "",
        f"Verdict: **inconclusive at this scale**: 1 of 2 pairs supported, 0 contradicted, 1 inconclusive "
        f"{CLAIM3_COUNTS}; {BASIS2}; 1 column(s) (sst2), 30 eval examples.", ""]  # fmt: skip


def test_claim_3_sparsity_is_the_mean_over_seeds():
    table = {"dense": [(70, 0)], "longformer": [(60, 0)], "dam_s": [(70, 10)]}
    s = hand_scores(table, [ACC], 2, {"longformer": [84.0, 86.0], "dam_s": [79.0, 81.0]})
    lines = claim_dam_beats_designed(s, run_params(table), CLAIM3, np.random.default_rng(0))
    assert lines[4] == "- dam_s (sparsity 80.0 %): 1 hand-designed mask(s) at most 5 points sparser:"
    assert lines[5].startswith("  - vs longformer (85.0 %): +10.00 points")
    assert lines[-2].startswith("Verdict: **supported at this scale**: 1 of 1 pairs supported, 0 contradicted, 0 ")


def test_claim_3_contradicted_when_most_pairs_are_below_zero():
    table = {"dense": [(70, 0)], "longformer": [(80, 0)], "dam_s": [(70, 1)]}
    lines = claim3(table, [ACC], {"longformer": 85.0, "dam_s": 80.0})
    assert lines[5] == "  - vs longformer (85.0 %): -10.00 points, 95 % interval [-10.95, -9.05] on sst2 -> contradicted"
    assert lines[-2].startswith("Verdict: **contradicted at this scale**: 0 of 1 pairs supported, 1 contradicted, 0 "
                                "inconclusive")  # fmt: skip


def test_claim_3_with_one_seed_says_what_the_examples_alone_gave():
    table = {"dense": [(70, 0)], "longformer": [(60, 0)], "dam_s": [(70, 10)]}
    lines = claim3(table, [ACC], {"longformer": 85.0, "dam_s": 80.0}, n_seeds=1)
    assert lines[5] == ("  - vs longformer (85.0 %): +10.00 points, 95 % interval [+0.50, +19.50] on sst2 -> "
                        "inconclusive (the eval examples alone: supported; one seed cannot decide)")  # fmt: skip
    assert lines[-2] == (f"Verdict: **inconclusive at this scale**: 0 of 1 pairs supported, 0 contradicted, 1 "
                         f"inconclusive {CLAIM3_COUNTS}; 1 seed per variant: the interval covers the eval examples "
                         f"only and ignores seed variance; 1 column(s) (sst2), 30 eval examples.")  # fmt: skip


def test_claim_3_pair_of_constant_predictors_is_inconclusive():
    table = {"dense": [(70, 0)], "longformer": [(60, 0)], "dam_s": [(50, 0)]}
    s = hand_scores(table, [ACC], 2, {"longformer": [85.0] * 2, "dam_s": [80.0] * 2})
    s.constant[1:, :, 0] = True  # longformer and dam_s: one output for every example
    lines = claim_dam_beats_designed(s, run_params(table), CLAIM3, np.random.default_rng(0))
    assert lines[4:] == [
        "- dam_s (sparsity 80.0 %): 1 hand-designed mask(s) at most 5 points sparser:",
        "  - vs longformer (85.0 %): both predict a constant on every column -> inconclusive", "",
        f"Verdict: **inconclusive at this scale**: 0 of 1 pairs supported, 0 contradicted, 1 inconclusive "
        f"{CLAIM3_COUNTS}; no pair has a usable column.", ""]  # fmt: skip


def test_claim_3_goes_on_after_a_pair_of_constant_predictors():
    """longformer and dam_s predict a constant, star does not: dam_s vs star is still compared (-10 +- 0.95)."""
    table = {"dense": [(70, 0)], "longformer": [(60, 0)], "star": [(60, 1)], "dam_s": [(50, 0)]}
    s = hand_scores(table, [ACC], 2, {"longformer": [85.0] * 2, "star": [84.0] * 2, "dam_s": [80.0] * 2})
    s.constant[[1, 3], :, 0] = True
    lines = claim_dam_beats_designed(s, run_params(table), CLAIM3, np.random.default_rng(0))
    assert lines[4:7] == [
        "- dam_s (sparsity 80.0 %): 2 hand-designed mask(s) at most 5 points sparser:",
        "  - vs longformer (85.0 %): both predict a constant on every column -> inconclusive",
        "  - vs star (84.0 %): -10.00 points, 95 % interval [-10.95, -9.05] on sst2 -> contradicted"]  # fmt: skip
    assert lines[-2] == (f"Verdict: **inconclusive at this scale**: 0 of 2 pairs supported, 1 contradicted, 1 "
                         f"inconclusive {CLAIM3_COUNTS}; {BASIS2}; 1 column(s) (sst2), 30 eval examples.")  # fmt: skip


def test_claim_3_averages_every_informative_glue_column():
    """dam_s - longformer: +10 +- 1.9 on sst2, +20 on stsb: +15 +- 0.95 on their average."""
    table = {"dense": [(70, 0), (10, 0)], "longformer": [(60, 0), (0, 0)], "dam_s": [(70, 2), (20, 0)]}
    lines = claim3(table, [ACC, CORR], {"longformer": 85.0, "dam_s": 80.0})
    assert lines[5] == ("  - vs longformer (85.0 %): +15.00 points, 95 % interval [+14.05, +15.95] on sst2, stsb -> "
                        "supported")  # fmt: skip
    assert lines[-2].endswith(f"; {BASIS2}; 2 column(s) (sst2, stsb), 60 eval examples.")


def test_claim_3_dam_less_sparse_than_every_designed_mask_has_nothing_to_compare():
    table = {"dense": [(70, 0)], "longformer": [(60, 0)], "dam_s": [(50, 0)]}
    lines = claim3(table, [ACC], {"longformer": 85.0, "dam_s": 79.9})
    assert lines[4:] == [
        "- dam_s (sparsity 79.9 %): no hand-designed mask at similar or higher sparsity.", "",
        "Verdict: **inconclusive at this scale**: the learned masks are less sparse than every hand-designed mask: "
        "no comparison at similar or higher sparsity.", ""]  # fmt: skip


@pytest.mark.parametrize("variants", [["dense", "no_diagonal", "dam_s"], ["dense", "no_diagonal", "longformer"]])
def test_claim_3_needs_a_dam_run_and_a_designed_mask(variants):
    table = {v: [(60 + i, 0)] for i, v in enumerate(variants)}
    lines = claim3(table, [ACC], {})
    assert lines[4:] == ["Verdict: **inconclusive at this scale**: needs DAM runs and hand-designed masks in the "
                         "config.", ""]  # fmt: skip


def test_claim_3_when_no_column_varies_says_so():
    table = {v: [(60, 1), (50, 1), (40, 0)] for v in ("dense", "longformer", "dam_s")}
    lines = claim3(table, [ACC, SPAN, CORR], {"longformer": 85.0, "dam_s": 80.0})
    assert lines[4:] == ["Verdict: **inconclusive at this scale**: every variant and seed scores the same on every "
                         "task (sst2, stsb): nothing separates the masks.", ""]  # fmt: skip


# Claim 2: no_diagonal - dense within +-margin.

MLM = {"variants": {"dense": {"val_mlm_acc": 12.5}, "no_diagonal": {"val_mlm_acc": 11.0}}}


def claim2(table, columns, n_seeds=2, margin=0.5, constant=None, examples=None) -> list[str]:
    s = hand_scores(table, columns, n_seeds, examples=examples)
    for v, c in constant or []:
        s.constant[s.index(v), :, c] = True
    versus = dense_vs_constant(s, np.random.default_rng(1))  # the constant predictor scores 0: dense beats it
    return claim_no_diagonal_matches_bert(s, MLM, {"equivalence_margin": margin}, np.random.default_rng(0), versus)


def test_claim_2_states_its_rule_with_the_margin():
    lines = claim2({"dense": [(70, 0)], "no_diagonal": [(70, 0)]}, [ACC], margin=0.5)
    assert lines[:4] == [
        "## 2. BERT without diagonal attention matches BERT", "",
        "Effect = no_diagonal - dense on the average score over the informative task columns (GLUE, SQuAD, SWAG "
        "shapes), paired on the eval examples and the seeds. Supported if its 95 % interval lies inside +-0.5 "
        "points (config report.equivalence_margin), contradicted if it lies entirely outside, inconclusive "
        "otherwise.", ""]  # fmt: skip


def test_claim_2_effect_per_column_and_overall_leaves_out_constant_pairs():
    """sst2: +0.2 +- 0.38, squad_v1: -0.1 exactly; their mean +0.05 +- 0.19 lies inside +-0.5: supported. stsb
    varies (longformer) but dense and no_diagonal both predict a constant there: left out."""
    table = {"dense": [(70, 0), (50, 0), (10, 0)], "no_diagonal": [(70.2, 0.4), (49.9, 0), (10, 0)],
             "longformer": [(60, 0), (40, 0), (30, 0)]}  # fmt: skip
    lines = claim2(table, [ACC, SPAN, CORR], constant=[("dense", 2), ("no_diagonal", 2)], examples=[30, 20, 7])
    assert lines[4:] == [
        "- Left out: stsb, where dense and no_diagonal both predict one constant output in every seed.", "",
        "- Per column: sst2 +0.2 [-0.2, +0.6], squad_v1 -0.1 [-0.1, -0.1].",
        "- Pretraining validation MLM accuracy (mean over seeds): dense 12.5, no_diagonal 11.0.", "",
        f"Verdict: **supported at this scale**: effect +0.05 points, 95 % interval [-0.14, +0.24] (margin +-0.5); "
        f"{BASIS2}; 2 column(s) (sst2, squad_v1), 50 eval examples.", ""]  # fmt: skip


def test_claim_2_says_when_pretraining_evaluated_nothing():
    """eval_examples 0: the tables hold no MLM accuracy (None in metrics.json), and the line says so."""
    s = hand_scores({"dense": [(70, 0)], "no_diagonal": [(65, 1)]}, [ACC], 2)
    unevaluated = {"variants": {"dense": {"val_mlm_acc": None}, "no_diagonal": {"val_mlm_acc": 11.0}}}
    lines = claim_no_diagonal_matches_bert(s, unevaluated, {"equivalence_margin": 0.5}, np.random.default_rng(0),
                                           dense_vs_constant(s, np.random.default_rng(1)))
    assert "- Pretraining validation MLM accuracy (mean over seeds): dense not evaluated, no_diagonal 11.0." in lines


def test_claim_2_effect_outside_the_margin_is_contradicted():
    lines = claim2({"dense": [(70, 0)], "no_diagonal": [(65, 1)]}, [ACC], margin=1.0)
    assert lines[-2] == (f"Verdict: **contradicted at this scale**: effect -5.00 points, 95 % interval [-5.95, -4.05] "
                         f"(margin +-1); {BASIS2}; 1 column(s) (sst2), 30 eval examples.")  # fmt: skip


def test_claim_2_with_one_seed_says_what_the_examples_alone_gave():
    lines = claim2({"dense": [(70, 0)], "no_diagonal": [(65, 1)]}, [ACC], n_seeds=1, margin=1.0)
    assert lines[-2] == ("Verdict: **inconclusive at this scale**: effect -5.00 points, 95 % interval [-5.95, -4.05] "
                         "(margin +-1); 1 seed per variant: the interval covers the eval examples only and ignores "
                         "seed variance; 1 column(s) (sst2), 30 eval examples (the eval examples alone: "
                         "contradicted; one seed cannot decide).")  # fmt: skip


def test_claim_2_needs_dense_and_no_diagonal():
    lines = claim2({"dense": [(70, 0)], "longformer": [(65, 1)]}, [ACC])
    assert lines[4:] == ["Verdict: **inconclusive at this scale**: needs both `dense` and `no_diagonal` in the "
                         "config.", ""]  # fmt: skip


def test_claim_2_without_a_separating_column_is_inconclusive():
    table = {"dense": [(70, 0), (50, 0)], "no_diagonal": [(70, 0), (50, 0)], "longformer": [(70, 0), (40, 0)]}
    lines = claim2(table, [ACC, SPAN], constant=[("dense", 1), ("no_diagonal", 1)])
    assert lines[4:] == [
        "- Left out: squad_v1, where dense and no_diagonal both predict one constant output in every seed.", "",
        "Verdict: **inconclusive at this scale**: no task column separates the models: every variant scores the "
        "same, both predict a constant, or dense does not beat the best constant predictor.", ""]  # fmt: skip


def test_claim_2_leaves_out_the_tasks_on_which_dense_does_not_beat_the_constant_predictor():
    """dense and no_diagonal score 50.0 and 50.1 on sst2, where the best constant predictor scores 50 too (a
    task nothing learned): a match there shows nothing, and alone it would be 'supported' (+0.1 inside +-0.5);
    on stsb dense scores exactly the constant's 20 (interval [0, 0]: not beaten either). On squad_v1, which dense
    learned, if barely (10.5 vs 10: a lower end of +0.5), no_diagonal loses 5: contradicted on that column alone."""
    s = hand_scores({"dense": [(50, 1), (10.5, 0), (20, 0)], "no_diagonal": [(50.1, 1), (5.5, 1), (20.2, 0)]},
                    [ACC, SPAN, CORR])  # fmt: skip
    s.baseline_points[:] = [50.0, 10.0, 20.0]
    s.baseline_draws[:] = np.array([50.0, 10.0, 20.0])[:, None]
    versus = dense_vs_constant(s, np.random.default_rng(1))
    assert versus[0][1] < 0 < versus[1][1] == 0.5 and versus[2][1] == 0  # sst2, stsb not beaten; squad_v1 is
    lines = claim_no_diagonal_matches_bert(s, MLM, {"equivalence_margin": 0.5}, np.random.default_rng(0), versus)
    assert lines[4:7] == ["- Left out: sst2, stsb, where dense does not beat the best constant predictor (its 95 % "
                          "interval above): a match there would show nothing.", "",
                          "- Per column: squad_v1 -5.0 [-6.0, -4.0]."]  # fmt: skip  (-5 +- 0.95)
    assert lines[-2].startswith("Verdict: **contradicted at this scale**: effect -5.00 points")
    s.baseline_points[:] = [50.0, 20.0, 20.0]  # squad_v1 not learned either: nothing left to compare
    s.baseline_draws[:] = np.array([50.0, 20.0, 20.0])[:, None]
    versus = dense_vs_constant(s, np.random.default_rng(1))
    lines = claim_no_diagonal_matches_bert(s, MLM, {"equivalence_margin": 0.5}, np.random.default_rng(0), versus)
    assert lines[4] == ("- Left out: sst2, squad_v1, stsb, where dense does not beat the best constant predictor "
                        "(its 95 % interval above): a match there would show nothing.")  # fmt: skip
    assert lines[-2].startswith("Verdict: **inconclusive at this scale**: no task column separates the models")


# Claim 1: the diagonal's rank by area below 0.25, from hand-made snapshots whose drop steps are given.

INF = np.inf
FIRST = [10, 20, INF, INF]  # DAM_s offsets: the diagonal below 0.25 from step 10, before every other offset: rank 0
LAST = [INF, 10, 10, 10]  # every other offset dropped, the diagonal never: rank 1
DAM_U = [[10, 10, 20], [10, INF, INF], [20, INF, 20]]  # rows 1/4, 3/4, 1/4: rank 5/12


def write_search(folder, drop, fallback):
    """snapshots.npz at steps 0, 10, 20: keep probability 0.5 at step 0, then 0.2 from `drop`'s step on, 0.8
    before it. Area below 0.25 (trapezoids, / 20 steps): dropped at 10 -> (0.025 * 10 + 0.05 * 10) / 20 =
    0.0375, at 20 -> 0.0125, never -> 0: earlier drop, larger area, lower rank."""
    drop = np.asarray(drop, dtype=float)
    folder.mkdir(parents=True)
    keep = np.stack([np.full(drop.shape, 0.5), np.where(drop <= 10, 0.2, 0.8), np.where(drop <= 20, 0.2, 0.8)])
    np.savez(folder / "snapshots.npz", steps=np.array([0, 10, 20]), keep_prob=keep)
    (folder / "summary.json").write_text(json.dumps({} if fallback is None else {"fallback_rows": fallback}))


def searches(tmp_path, runs: dict, seeds=(0, 1), writer=write_search) -> dict:
    """runs[name] = per seed (what `writer` turns into snapshots.npz, fallback rows) -> run parameters with
    those DAM searches (`kind` = the part of the name before any "/")."""
    for name, per_seed in runs.items():
        for seed, (drop, fallback) in zip(seeds, per_seed):
            writer(tmp_path / name / str(seed), drop, fallback)
    return {"seeds": list(seeds), "variants": [
        {"name": "dense", "kind": "fixed", "role": "fixed", "pretrained": str(tmp_path / "dense" / "{seed}")},
        *({"name": name, "kind": name.split("-")[0], "role": "search", "pretrained": str(tmp_path / name / "{seed}")}
          for name in runs)]}  # fmt: skip


def claim1(p) -> list[str]:
    return claim_diagonal_dropped_first(p, {"bootstrap_samples": 200}, np.random.default_rng(0))


METHOD = (
    "Measured on the DAM searches' keep-probability snapshots, from step 0 to the end of the search. For every "
    "position (DAM_s: an offset |i - j|, 0 = the diagonal; DAM_u: an entry (i, j)), its area below 0.25: the "
    "integral over the steps of max(0, 0.25 - keep probability) (trapezoids between snapshots) divided by the "
    "steps searched, i.e. how far and for how long the search held it below 0.25. Per head and seed, the "
    "diagonal's rank is the fraction of the other positions with a larger area (ties count half; DAM_u: each "
    "query row against its own other keys, rows averaged): 0 = the diagonal is dropped most, 0.5 = no "
    "preference, 1 = least. This rank decides: supported if the 95 % interval of its mean over DAM runs x seeds "
    "x heads lies below 0.5, contradicted if above 0.5, inconclusive otherwise; the runs share their seeds (the "
    "same initial weights and batches), so the interval resamples the seeds jointly across the runs, each seed "
    "as the mean of its heads (a seed's mean already carries its heads' spread: resampling the heads as well "
    "would count it twice and widen the interval). Why: 0.25 lies far outside the "
    "noise around the initial 0.5 of a slow search (+-0.005 measured at dam_lr 0.005), so a position it has not "
    "moved has an area of exactly 0: when nothing has moved, every position ties and the rank is 0.5, not a draw "
    "of the noise. A faster search (dam_lr 0.05) random-walks unlearned positions below 0.25 too, but that "
    "noise treats the diagonal like any other position, so it leaves the rank centred on 0.5. And the area "
    "counts both how early and how deep a position fell, whatever the snapshot interval. Beside it, "
    "not deciding: the diagonal's rank by final keep probability (the fraction of the other positions that end "
    "lower, same ties and intervals), which noise orders when the search has hardly moved.")


def test_claim_1_per_run_and_overall_rank(tmp_path):
    """dam_s: 3 heads, each drops the diagonal first (area rank 0); final keep: diagonal 0.2, offsets 0.2 (tie),
    0.8, 0.8 -> rank 1/6, others' mean 0.6. dam_u: area rank 5/12 in its one head; final keep
    [[.2, .2, .2], [.2, .8, .8], [.2, .8, .2]]: rows 1/2, 3/4, 1/4 -> 1/2; diagonal mean 0.4 (not below 0.25),
    off-diagonal mean 0.4. The runs weigh equally: (0 + 5/12) / 2 = 0.208; every head and seed the same, so
    every interval is a point."""
    p = searches(tmp_path, {"dam_s": [([FIRST] * 3, [1, 2]), ([FIRST] * 3, [3])],
                            "dam_u": [([DAM_U], [2]), ([DAM_U], None)]})  # fmt: skip
    lines = claim1(p)
    assert lines[:4] == ["## 1. The diagonal is the least important attention position during pretraining", "",
                         METHOD, ""]  # fmt: skip
    assert lines[4:] == [
        "- dam_s (20 steps, 2 seed(s) x 3 heads): rank by area below 0.25 0.000, 95 % interval [0.000, 0.000] "
        "(supported); rank by final keep probability 0.167, 95 % interval [0.167, 0.167]; final keep probability, "
        "mean over head-seeds: diagonal 0.200, other positions 0.600; the diagonal ended below 0.25 in 6 of 6 "
        "head-seeds and was dropped most (rank 0: every other position had a smaller area) in 6. Binarized masks: "
        "6 of 24 query rows had no key at p >= 0.5 and keep their most probable key instead.",
        "- dam_u (20 steps, 2 seed(s) x 1 heads): rank by area below 0.25 0.417, 95 % interval [0.417, 0.417] "
        "(supported); rank by final keep probability 0.500, 95 % interval [0.500, 0.500]; final keep probability, "
        "mean over head-seeds: diagonal (mean of its entries) 0.400, other positions 0.400; the diagonal ended "
        "below 0.25 in 0 of 2 head-seeds and was dropped most (rank 0: every other position had a smaller area) in 0. "
        "Binarized masks: 2 of 6 query rows had no key at p >= 0.5 and keep their most probable key instead.", "",
        "Verdict: **supported at this scale**: mean rank of the diagonal by area below 0.25 0.208 (no preference: "
        "0.5), 95 % interval [0.208, 0.208]; 2 DAM run(s), 8 head-seeds; 2 seeds shared by the runs (resampled "
        "jointly for every run, each as the mean of its heads).", ""]  # fmt: skip


def test_claim_1_interval_is_clipped_to_the_range_of_a_rank(tmp_path):
    """Seed 0 drops the diagonal first, seed 1 last: mean 0.5. With 2 seeds the seed level scales the deviation
    of the drawn seeds' mean by 9.2 (t with 1 degree of freedom): a quarter of the draws sit at 0.5 - 4.6, a
    quarter at 0.5 + 4.6; the interval is clipped to [0, 1]. The same holds for the rank by final keep
    probability printed beside it: seed 0 ends [.2, .2, .8, .8] (rank 1/6), seed 1 [.8, .2, .2, .2] (rank 1),
    mean 7/12 = 0.583, draws at 7/12 -+ 9.2 * 5/12 = -3.2 and 4.4, clipped to [0, 1] as well."""
    p = searches(tmp_path, {"dam_s": [([FIRST] * 3, None), ([LAST] * 3, None)]})
    lines = claim1(p)
    assert lines[4].startswith("- dam_s (20 steps, 2 seed(s) x 3 heads): rank by area below 0.25 0.500, 95 % interval "
                               "[0.000, 1.000] (inconclusive); rank by final keep probability 0.583, 95 % interval "
                               "[0.000, 1.000]; ")  # fmt: skip
    assert ("the diagonal ended below 0.25 in 3 of 6 head-seeds and was dropped most (rank 0: every other position "
            "had a smaller area) in 3. Binarized masks: 0 of 24 query") in lines[4]  # seed 0's 3 heads
    assert lines[-2] == ("Verdict: **inconclusive at this scale**: mean rank of the diagonal by area below 0.25 0.500 "
                         "(no preference: 0.5), 95 % interval [0.000, 1.000]; 1 DAM run(s), 6 head-seeds; 2 seeds "
                         "shared by the runs (resampled jointly for every run, each as the mean of its heads).")



def test_claim_1_one_search_entered_several_times_adds_no_evidence(tmp_path):
    """The DAM runs share their seeds (same initial weights and batches), so the seed is resampled once for
    every run: the same search entered 3 or 8 times gives the interval of one run (inconclusive). Resampled per
    run, the copies counted as independent samples of the seed effect and the interval narrowed by ~sqrt(R) to
    supported ([0.000, 0.470] for 3 copies). Ranks per seed (3 heads): [0, 0, 1/6], [1/3, 1/6, 0], [2/3, 1/3, 0];
    seed means 1/18, 1/6, 1/3, mean 5/27 = 0.185. A draw of three seeds is 5/27 + c (its mean - 5/27), c =
    sqrt(3/2) t_2 / z = 2.689 (stats.seed_scale); all three the last seed (1/27 = 3.7 % of draws, past the 2.5 %
    tail) is the top: 5/27 + c 4/27 = 0.584; all three the first, 5/27 - c 7/54 < 0, is clipped to 0."""
    dropped_second = [20, 10, INF, INF]  # diagonal after offset 1, before the rest: rank 1/3
    tied_with_offset_1 = [20, 20, INF, INF]  # rank 1/6
    after_offset_1 = [INF, 10, INF, INF]  # never dropped, offset 1 dropped: rank 2/3
    per_seed = [([FIRST, FIRST, tied_with_offset_1], None), ([dropped_second, tied_with_offset_1, FIRST], None),
                ([after_offset_1, dropped_second, FIRST], None)]  # fmt: skip
    for copies in (1, 3, 8):
        runs = {"dam_s" if i == 0 else f"dam_s-{i}": per_seed for i in range(copies)}
        lines = claim1(searches(tmp_path / str(copies), runs, seeds=(0, 1, 2)))
        assert lines[-2].startswith("Verdict: **inconclusive at this scale**: mean rank of the diagonal by area "
                                    "below 0.25 0.185 (no preference: 0.5), 95 % interval [0.000, 0.584]; "
                                    f"{copies} DAM run(s), {9 * copies} head-seeds; ")
        if copies == 1:  # one run: its own line prints the verdict's interval, not a second draw of it
            assert "rank by area below 0.25 0.185, 95 % interval [0.000, 0.584] (inconclusive)" in lines[4]


def test_claim_1_one_run_prints_the_verdict_s_interval_with_many_seeds(tmp_path):
    """8 seeds of one search, seed means from 0 to 2/3: the percentile interval then depends on which seeds the
    draws pick (with 3 seeds its ends are the extreme picks, the same in any draw), so a second draw for the
    run's own line would print other bounds than the verdict's."""
    dropped_second = [20, 10, INF, INF]  # rank 1/3
    after_offset_1 = [INF, 10, INF, INF]  # rank 2/3
    heads = [[FIRST] * 3, [FIRST, FIRST, dropped_second], [FIRST, dropped_second, dropped_second],
             [dropped_second] * 3, [dropped_second, dropped_second, after_offset_1],
             [dropped_second, after_offset_1, after_offset_1], [after_offset_1] * 3, [FIRST, after_offset_1, FIRST]]
    lines = claim1(searches(tmp_path, {"dam_s": [(h, None) for h in heads]}, seeds=tuple(range(8))))
    own = lines[4].split("rank by area below 0.25 ")[1].split(" (")[0]
    assert lines[-2].split("(no preference: 0.5), ")[1].startswith(own.split(", ", 1)[1]), (own, lines[-2])


def test_claim_1_diagonal_dropped_last_is_contradicted(tmp_path):
    p = searches(tmp_path, {"dam_s": [([LAST] * 3, None), ([LAST] * 3, None)]})
    lines = claim1(p)
    assert "rank by area below 0.25 1.000, 95 % interval [1.000, 1.000] (contradicted)" in lines[4]
    assert lines[-2].startswith("Verdict: **contradicted at this scale**: mean rank of the diagonal by area below "
                                "0.25 1.000")  # fmt: skip


def test_claim_1_with_one_seed_says_what_the_heads_alone_gave(tmp_path):
    p = searches(tmp_path, {"dam_s": [([FIRST] * 3, None)]}, seeds=(0,))
    lines = claim1(p)
    assert lines[4].startswith("- dam_s (20 steps, 1 seed(s) x 3 heads): rank by area below 0.25 0.000, 95 % "
                               "interval [0.000, 0.000] (the heads alone: supported; one seed cannot decide)")
    assert lines[-2] == ("Verdict: **inconclusive at this scale**: mean rank of the diagonal by area below 0.25 0.000 "
                         "(no preference: 0.5), 95 % interval [0.000, 0.000]; 1 DAM run(s), 3 head-seeds; 1 seed per "
                         "run: the interval resamples heads only and ignores seed variance (the heads alone: "
                         "supported; one seed cannot decide).")  # fmt: skip


def test_claim_1_without_a_dam_search_measures_nothing(tmp_path):
    lines = claim1(searches(tmp_path, {}))
    assert lines[4:] == ["Verdict: **inconclusive at this scale**: no DAM search in this config, nothing was measured.",
                         ""]  # fmt: skip


def write_trajectory(folder, keep, fallback):
    folder.mkdir(parents=True)
    np.savez(folder / "snapshots.npz", steps=trajectories.STEPS, keep_prob=keep)
    (folder / "summary.json").write_text("{}")


@pytest.mark.parametrize(("case", "expected"), [("early", "supported"), ("noise", "inconclusive"),
                                                ("dips", "inconclusive"), ("highest", "contradicted")])  # fmt: skip
def test_claim_1_on_synthetic_searches_with_known_answers(tmp_path, case, expected):
    """Issue 22's failure modes of the first-crossing-of-0.5 statistic, DAM_s and DAM_u runs of 3 seeds x 4 heads
    (tests/_keep_trajectories.py): every position below 0.5 before the first snapshot and the diagonal ending
    far lowest (that statistic: a tie, 0.5) -> supported; noise within 0.5 +- 0.005 (that statistic: whatever the
    noise gives; "dips": rank 0, supported) -> inconclusive at exactly 0.5; the diagonal ending highest ->
    contradicted."""
    rng = np.random.default_rng(5)
    name = "noise" if case == "dips" else case
    runs = {kind: [(getattr(trajectories, kind)(name, rng, diagonal_dips_first=case == "dips"), None)
                   for _ in range(3)] for kind in ("dam_s", "dam_u")}  # fmt: skip
    lines = claim1(searches(tmp_path, runs, seeds=(0, 1, 2), writer=write_trajectory))
    rank = {"supported": "0.000", "inconclusive": "0.500", "contradicted": "1.000"}[expected]
    assert lines[-2].startswith(f"Verdict: **{expected} at this scale**: mean rank of the diagonal by area below "
                                f"0.25 {rank} (no preference: 0.5), 95 % interval [{rank}, {rank}]; 2 DAM run(s), "
                                "24 head-seeds; 3 seeds shared by the runs")  # fmt: skip
    for line, kind in zip(lines[4:6], ("dam_s", "dam_u")):
        assert line.startswith(f"- {kind} (1000 steps, 3 seed(s) x 4 heads): rank by area below 0.25 {rank}, 95 % "
                               f"interval [{rank}, {rank}] ({expected}); rank by final keep probability ")


def write_ending_at_threshold(folder, heads, fallback):
    """DAM_s snapshots at steps 0, 10, 20 of `heads` heads x 4 offsets: every offset stays at 0.5 but the
    diagonal, which ends at exactly 0.25 (0.375 at step 10)."""
    folder.mkdir(parents=True)
    keep = np.full((3, heads, 4), 0.5)
    keep[1:, :, 0] = [[0.375], [0.25]]
    np.savez(folder / "snapshots.npz", steps=np.array([0, 10, 20]), keep_prob=keep)
    (folder / "summary.json").write_text("{}")


def test_claim_1_diagonal_ending_exactly_at_the_threshold_is_not_below_it(tmp_path):
    """A keep probability of exactly 0.25 is not below 0.25 (the threshold counts as kept, as in the area
    below it, max(0, 0.25 - p) = 0): the diagonal ended below 0.25 in 0 of 2 seeds x 3 heads. Its area is 0 like
    every other offset's (rank 0.5); by final keep it is the lowest (rank 0)."""
    p = searches(tmp_path, {"dam_s": [(3, None), (3, None)]}, writer=write_ending_at_threshold)
    line = claim1(p)[4]
    assert line.startswith("- dam_s (20 steps, 2 seed(s) x 3 heads): rank by area below 0.25 0.500, 95 % interval "
                           "[0.500, 0.500] (inconclusive); rank by final keep probability 0.000, ")  # fmt: skip
    assert ("diagonal 0.250, other positions 0.500; the diagonal ended below 0.25 in 0 of 6 head-seeds and was "
            "dropped most (rank 0: every other position had a smaller area) in 0.") in line  # every area 0: rank 0.5


# The dense model vs the best constant predictor, and what pretraining learned.


def test_tasks_line_compares_dense_with_the_constant_predictor_per_averaged_column():
    """sst2: dense 60 +- 9.5 vs 50: beats it; squad_v1: 10 vs 20, -10 (a difference may be negative);
    stsb: 0 vs 0, interval [0, 0]: a lower end of exactly 0 does not beat it; squad_v1_em is not averaged."""
    s = hand_scores({"no_diagonal": [(99, 0)] * 4, "dense": [(60, 10), (5, 0), (10, 0), (0, 0)]},
                    [ACC, SPAN_EM, SPAN, CORR])  # fmt: skip
    s.baseline_points[:] = [50, 1, 20, 0]
    s.baseline_draws[:] = np.array([50, 1, 20, 0])[:, None]
    assert tasks_line(s, dense_vs_constant(s, np.random.default_rng(0))) == [
        "## Can the tasks separate anything? Dense vs the best constant predictor", "",
        "Per task: the dense model's score minus that of the best single output (label, mean score or \"no answer\") "
        "chosen with the eval labels, with its 95 % interval (seeds and eval examples resampled).", "",
        "- sst2 (accuracy): dense 60.0 vs constant 50.0: +10.0 points, 95 % interval [+0.5, +19.5]: beats it",
        "- squad_v1 (f1): dense 10.0 vs constant 20.0: -10.0 points, 95 % interval [-10.0, -10.0]: does not beat it",
        "- stsb (spearmanr): dense 0.0 vs constant 0.0: +0.0 points, 95 % interval [+0.0, +0.0]: does not beat it",
        "", "Dense beats the constant predictor on 1 of 3 tasks.", ""]  # fmt: skip


def test_tasks_line_needs_dense():
    s = hand_scores({"longformer": [(60, 0)]}, [ACC])
    assert dense_vs_constant(s, np.random.default_rng(0)) == {} and tasks_line(s, {}) == []


def pretrained(tmp_path, summaries: list[dict], variants=("dense", "longformer")) -> dict:
    for seed, summary in enumerate(summaries):
        (tmp_path / "dense" / str(seed)).mkdir(parents=True)
        (tmp_path / "dense" / str(seed) / "summary.json").write_text(json.dumps(summary))
    return {"variants": [{"name": v, "pretrained": str(tmp_path / v / "{seed}")} for v in variants]}


def test_learned_line_sets_dense_mlm_beside_the_unigram_floor(tmp_path):
    """MLM (10 + 14) / 2 = 12 %, floor (4 + 6) / 2 = 5 %: 2.4x; NSP (70 + 80) / 2 = 75 %."""
    p = pretrained(tmp_path, [{"val_mlm_acc": 0.10, "val_unigram_mlm_acc": 0.04, "val_nsp_acc": 0.7},
                              {"val_mlm_acc": 0.14, "val_unigram_mlm_acc": 0.06, "val_nsp_acc": 0.8}])  # fmt: skip
    assert learned_line(p, [0, 1]) == [
        "What pretraining learned: dense validation MLM accuracy 12.0 % (mean over seeds) vs 5.0 % for always "
        "predicting the most frequent masked token (2.4x); NSP 75.0 % (chance 50 %).", ""]  # fmt: skip


def test_learned_line_without_nsp_prints_nan_and_without_a_floor_nothing(tmp_path):
    p = pretrained(tmp_path, [{"val_mlm_acc": 0.10, "val_unigram_mlm_acc": 0.05},
                              {"val_mlm_acc": 0.10, "val_unigram_mlm_acc": 0.05, "val_nsp_acc": 0.8}])  # fmt: skip
    assert learned_line(p, [0, 1])[0].endswith("(2.0x); NSP nan % (chance 50 %).")
    assert learned_line(p, [0]) == [
        "What pretraining learned: dense validation MLM accuracy 10.0 % (mean over seeds) vs 5.0 % for always "
        "predicting the most frequent masked token (2.0x); NSP nan % (chance 50 %).", ""]  # fmt: skip
    (tmp_path / "dense/1/summary.json").write_text(json.dumps({"val_mlm_acc": 0.10}))  # no unigram floor
    assert learned_line(p, [0, 1]) == []
    (tmp_path / "dense/0/summary.json").write_text(json.dumps({"val_unigram_mlm_acc": 0.05}))  # no MLM accuracy
    assert learned_line(p, [0]) == []
    assert learned_line({"variants": p["variants"][1:]}, [0, 1]) == []  # no dense model


@pytest.mark.filterwarnings("error")  # numpy's "invalid value encountered in scalar divide" for 0 / 0
def test_learned_line_gives_the_ratio_for_a_floor_under_one_percent(tmp_path):
    p = pretrained(tmp_path, [{"val_mlm_acc": 0.02, "val_unigram_mlm_acc": 0.005, "val_nsp_acc": 0.5}])
    assert "vs 0.5 % for always predicting the most frequent masked token (4.0x)" in learned_line(p, [0])[0]


def test_learned_line_with_a_floor_of_zero_gives_no_ratio(tmp_path):
    """A toy run's validation set can be two examples, on which even the most frequent token scores 0 %: no
    "nanx" or "infx" ratio then."""
    p = pretrained(tmp_path, [{"val_mlm_acc": 0.0, "val_unigram_mlm_acc": 0.0, "val_nsp_acc": 0.5}])
    assert learned_line(p, [0])[0].endswith("0.0 % for always predicting the most frequent masked token (no ratio: "
                                            "the floor is 0); NSP 50.0 % (chance 50 %).")


# findings.md as a whole, from a saved bootstrap.npz.


def findings_inputs(tmp_path, n_seeds=2, proxy=True):
    """dense, no_diagonal and longformer (no DAM search); sst2 separates them, squad_v1 and stsb do not (on
    stsb every model predicts a constant)."""
    table = {"dense": [(70, 2), (50, 0), (10, 0)], "no_diagonal": [(69, 3), (50, 0), (10, 0)],
             "longformer": [(60, 1), (50, 0), (10, 0)]}  # fmt: skip
    s = hand_scores(table, [ACC, SPAN, CORR], n_seeds)
    s.draws[0, -1] += 1.0  # dense's last seed one point higher: the seed level, and so the rng, matters
    s.constant[:, :, 2] = True
    s.constant[0, 0, 1] = True  # squad_v1: one model predicts a constant, not all
    s.save(tmp_path / "bootstrap.npz")
    (tmp_path / "metrics.json").write_text(json.dumps(MLM))
    p = pretrained(tmp_path, [{"val_mlm_acc": 0.1, "val_unigram_mlm_acc": 0.05, "val_nsp_acc": 0.6}] * n_seeds,
                   variants=list(table))  # fmt: skip
    for r in p["variants"]:
        r.update(kind="fixed", role="fixed")
    return {**p, "scale": "hand-made", "proxy": proxy, "seeds": list(range(n_seeds)), "report": {"bootstrap_samples": 100}}


def test_findings_md_states_scale_seeds_and_method_then_every_section(tmp_path):
    p = findings_inputs(tmp_path)
    text = write_findings(p, tmp_path / "metrics.json", tmp_path / "bootstrap.npz", tmp_path / "findings.md")
    lines = text.splitlines()
    assert lines[:4] == [
        "# Findings: the paper's three claims, checked at this run's scale", "",
        "Scale: hand-made. Pretraining seeds: 0, 1 (2 per variant), each model fine-tuned once per task with the "
        "task's fine-tuning seed. All downstream tasks are PROXY tasks built from the corpus, not GLUE/SQuAD/SWAG. "
        "Scores in percent, from results/tables/. Every verdict below follows from the effect size and its 95 % "
        "interval (100 bootstrap draws: seeds and eval examples resampled, sparsebert/stats.py) by the rule stated "
        "with it.", ""]  # fmt: skip
    assert lines[4].startswith("What pretraining learned: dense validation MLM accuracy 10.0 %")
    assert [line for line in lines if line.startswith("#")] == [
        lines[0], "## Can the tasks separate anything? Dense vs the best constant predictor",
        "## 1. The diagonal is the least important attention position during pretraining",
        "## 2. BERT without diagonal attention matches BERT",
        "## 3. DAM masks beat hand-designed sparse masks at similar or higher sparsity"]  # fmt: skip
    assert lines[-1] == (
        "Note: every variant and seed scores the same on squad_v1, stsb; on stsb every fine-tuned model predicts one "
        "constant output. These tasks do not separate the variants at this scale, so claims 2 and 3 rest on the "
        "other tasks only.")  # fmt: skip
    assert text == (tmp_path / "findings.md").read_text()
    again = write_findings(p, tmp_path / "metrics.json", tmp_path / "bootstrap.npz", tmp_path / "again.md")
    assert again == text  # the bootstrap draws come from seeded streams: the same bytes every time


def test_findings_md_with_one_seed_on_real_tasks(tmp_path):
    p = findings_inputs(tmp_path, n_seeds=1, proxy=False)
    text = write_findings(p, tmp_path / "metrics.json", tmp_path / "bootstrap.npz", tmp_path / "findings.md")
    assert text.splitlines()[2] == (
        "Scale: hand-made. Pretraining seeds: 0 (1 per variant), each model fine-tuned once per task with the task's "
        "fine-tuning seed. Scores in percent, from results/tables/. Every verdict below follows from the effect size "
        "and its 95 % interval (100 bootstrap draws: eval examples resampled; with one seed the intervals ignore seed "
        "variance) by the rule stated with it.")  # fmt: skip


@pytest.mark.parametrize("constant, why", [
    ([1, 2], "; on squad_v1, stsb every fine-tuned model predicts one constant output"), ([], "")])
def test_findings_md_note_names_the_flat_columns_where_every_model_is_constant(tmp_path, constant, why):
    p = findings_inputs(tmp_path)
    s = Scores.load(tmp_path / "bootstrap.npz")
    s.constant[:] = False
    s.constant[:, :, constant] = True
    s.save(tmp_path / "bootstrap.npz")
    text = write_findings(p, tmp_path / "metrics.json", tmp_path / "bootstrap.npz", tmp_path / "findings.md")
    assert text.splitlines()[-1] == (f"Note: every variant and seed scores the same on squad_v1, stsb{why}. These tasks "
                                     f"do not separate the variants at this scale, so claims 2 and 3 rest on the other "
                                     f"tasks only.")  # fmt: skip


def test_findings_md_without_flat_columns_has_no_note(tmp_path):
    p = findings_inputs(tmp_path)
    s = Scores.load(tmp_path / "bootstrap.npz")
    s.points[2, :, 1:] += 5.0  # longformer differs on squad_v1 and stsb too
    s.save(tmp_path / "bootstrap.npz")
    text = write_findings(p, tmp_path / "metrics.json", tmp_path / "bootstrap.npz", tmp_path / "findings.md")
    assert "Note:" not in text


def test_findings_command_line_needs_every_file_and_prints_findings_md(tmp_path, capsys):
    import argparse

    from sparsebert import findings as module

    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    for option, text in (("--params", "JSON/YAML: the run as `sparsebert tables` gets it"),
                         ("--metrics", "the tables' metrics.json"), ("--bootstrap", "the tables' bootstrap.npz"),
                         ("--out", "the findings.md to write")):  # fmt: skip
        assert f"{option} {option.upper()[2:]} {text}" in help_text
        with pytest.raises(SystemExit):  # every option is required
            parser.parse_args([a for o in ("--params", "--metrics", "--bootstrap", "--out") if o != option
                               for a in (o, "x")])  # fmt: skip
    p = findings_inputs(tmp_path)
    (tmp_path / "p.json").write_text(json.dumps(p))
    args = parser.parse_args(["--params", str(tmp_path / "p.json"), "--metrics", str(tmp_path / "metrics.json"),
                              "--bootstrap", str(tmp_path / "bootstrap.npz"), "--out", str(tmp_path / "f.md")])  # fmt: skip
    assert all(isinstance(getattr(args, name), Path) for name in ("metrics", "bootstrap", "out"))
    module.run(args)
    assert capsys.readouterr().out == (tmp_path / "f.md").read_text() + "\n"


def test_the_data_line_groups_the_tasks_by_where_they_were_read():
    glue = "0123456789abcdef" * 2 + "01234567"
    metrics = {"data": {"mnli": {"path": "nyu-mll/glue", "name": "mnli", "revision": glue},
                        "proxy_qa": {"path": "data/x/tasks/proxy_qa", "sha256": {"dev.json": "ab"}},
                        "rte": {"path": "nyu-mll/glue", "name": "rte", "revision": glue},
                        "proxy_pair": {"path": "data/x/tasks/proxy_pair", "sha256": {"dev.tsv": "cd"}},
                        "swag": {"path": "/data/swag_hub_copy", "name": None, "revision": None}}}
    assert data_line(metrics) == [
        "Task data, the same for every variant and seed: mnli, rte from nyu-mll/glue at commit 0123456789ab; "
        "proxy_qa, proxy_pair from local files in data/x/tasks/ (sha256 in each fine-tuning's metrics.json); "
        "swag from /data/swag_hub_copy (no commit).", ""]
    assert data_line({}) == [] and data_line({"data": {}}) == []


def write_diverged(folder, heads, fallback):
    """DAM_s snapshots whose last keep probability of the diagonal is NaN (a search that diverged)."""
    folder.mkdir(parents=True)
    keep = np.full((3, heads, 4), 0.5)
    keep[2, 0, 0] = np.nan
    np.savez(folder / "snapshots.npz", steps=np.array([0, 10, 20]), keep_prob=keep)
    (folder / "summary.json").write_text("{}")


def test_claim_1_refuses_snapshots_that_are_not_finite(tmp_path):
    """A NaN keep probability compares as no area at all: the diagonal would rank 0, "dropped most", and claim 1
    read supported. One clear error naming the file instead."""
    p = searches(tmp_path, {"dam_s": [(3, None), (3, None)]}, writer=write_diverged)
    with pytest.raises(UserError, match=r"dam_s/0/snapshots.npz: keep probabilities that are not finite"):
        claim1(p)
