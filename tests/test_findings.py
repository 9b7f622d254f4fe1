"""tables + findings.md on hand-made result trees: the verdict of each claim follows from the numbers (supported,
contradicted, inconclusive), every verdict line carries its effect, interval, seeds and examples, and the
tables show mean +- half-width over seeds."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from sparsebert.findings import write_findings
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
    assert "mean drop rank of the diagonal 0.000" in text and "vs longformer (88.0 %): +" in text
    assert "{" not in text and "3 of 36 query rows had no key" in text  # every number filled in
    # What pretraining learned, beside the unigram floor: MLM (10 + 12 + 14) / 3 = 12 % vs 5 %.
    assert "dense validation MLM accuracy 12.0 % (mean over seeds) vs 5.0 % for always predicting" in text
    assert "(2.4x); NSP 75.0 %" in text


def test_every_claim_contradicted(tmp_path):
    acc = {"dense": [0.80, 0.81, 0.82], "no_diagonal": [0.50, 0.52, 0.51], "longformer": [0.70, 0.71, 0.72],
           "dam_s_0.001": [0.40, 0.41, 0.42]}  # fmt: skip
    text, _ = findings(tmp_path, acc, "last")
    assert verdicts(text) == ["contradicted", "contradicted", "contradicted"], text


def test_every_claim_inconclusive(tmp_path):
    """Seeds that disagree (a difference of +-10 points): intervals straddle every boundary; nothing drops."""
    acc = {"dense": [0.60, 0.60, 0.60], "no_diagonal": [0.70, 0.50, 0.61], "longformer": [0.60, 0.60, 0.60],
           "dam_s_0.001": [0.70, 0.50, 0.61]}  # fmt: skip
    text, _ = findings(tmp_path, acc, "none")
    assert verdicts(text) == ["inconclusive", "inconclusive", "inconclusive"], text
    assert "mean drop rank of the diagonal 0.500" in text


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
    eval examples only, so every verdict is inconclusive and says what the examples alone gave."""
    acc = {"dense": [0.60], "no_diagonal": [0.60], "longformer": [0.50], "dam_s_0.001": [0.70]}
    p = build(tmp_path, acc, "first", seeds=[0])
    text = tables_and_findings(tmp_path, p)
    assert verdicts(text) == ["inconclusive", "inconclusive", "inconclusive"], text
    lines = [line for line in text.splitlines() if line.startswith("Verdict")]
    assert sum("ignores seed variance" in line for line in lines) == 3
    assert sum("(the eval examples alone: supported; one seed cannot decide)" in line for line in lines) == 2
    assert "-> inconclusive (the eval examples alone: supported; one seed cannot decide)" in text


def test_tables_show_mean_and_half_width_over_seeds(tmp_path):
    acc = {"dense": [0.60, 0.62, 0.64], "no_diagonal": [0.60, 0.62, 0.61], "longformer": [0.50, 0.52, 0.51],
           "dam_s_0.001": [0.70, 0.71, 0.72]}  # fmt: skip
    p = build(tmp_path, acc, "first")
    summary = write_tables(p, tmp_path / "tables")
    glue = pd.read_csv(tmp_path / "tables/glue.csv", index_col="variant")
    assert glue.loc["dense", "proxy_pair"] == pytest.approx(62.0, abs=0.01)  # the mean over seeds
    assert {"proxy_pair_pm", "avg_pm"} <= set(glue.columns) and (glue["proxy_pair_pm"] > 0).all()
    assert "62.0 ± " in (tmp_path / "tables/glue.md").read_text()
    lo, hi = summary["variants"]["dense"]["intervals"]["proxy_pair"]
    assert lo < 62.0 < hi and summary["variants"]["dense"]["sparsity"] == 0.0
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
