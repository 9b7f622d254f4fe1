"""`sparsebert tables` and `sparsebert findings`: what the run measured, beside what the paper published.

    python -m sparsebert tables   --results results --params P --out results/tables
    python -m sparsebert findings --results results --params P --out results/findings.md

P (from the Snakefile): scale, proxy, variants, dam_runs, tasks. Inputs are the run's own files:
results/pretrain/<variant>/summary.json, results/finetune/<variant>/<task>/metrics.json,
results/dam/<run>/{summary.json,snapshots.npz}. Scores are in percent (GLUE/SWAG metrics x 100; SQuAD already).

tables writes glue.csv/.md (GLUE-shaped tasks), squad_swag.csv/.md (span and multiple-choice tasks, with
BERT vs BERT-without-diagonal), all_metrics.csv (every metric of every split) and metrics.json (per variant:
sparsity and averages; `dvc metrics show` reads it). With proxy tasks the paper's columns are printed for
reference only: the tables say so, and no score delta is computed.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from sparsebert import paper
from sparsebert.dam import DAM_TYPES
from sparsebert.data.tasks import TASKS
from sparsebert.io import UserError, atomic_write_json, atomic_write_text, load_params

log = logging.getLogger(__name__)

# Which table a task belongs to, by the shape of its original distribution format.
GLUE_FORMATS = {"glue_tsv"}
# Short column names for the evaluation splits of tasks with more than one (MNLI: matched / mismatched).
SPLIT_SUFFIX = {"validation_matched": "_m", "validation_mismatched": "_mm"}
DIAGONAL_NOISE = 1.0  # points of average score within which "no_diagonal matches dense" (one seed)
SIMILAR_SPARSITY = 5.0  # points of sparsity within which masks count as "similar sparsity"
KEEP_MARGIN = 0.02  # keep-probability gap below which "the diagonal is kept less" is not claimed


# ------------------------------------------------------------------------------------------ reading


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"missing result file {path} (has its rule run?)")
    return json.loads(path.read_text())


def pretrained_dir(results: Path, p: dict, variant: str) -> Path:
    """A variant's pretraining outputs (summary.json, log.jsonl): the DAM search's own directory for a DAM
    variant (the official protocol), results/pretrain/<variant> otherwise; the Snakefile passes the mapping."""
    return Path(p["pretrained"][variant]) if "pretrained" in p else results / "pretrain" / variant


def variant_kind(variant: str) -> str:
    """"dam_s" / "dam_u" for a DAM variant (named <type>_<lambda> by the Snakefile), else "fixed"."""
    return next((k for k in DAM_TYPES if variant.startswith(k + "_")), "fixed")


def split_diagonal(keep: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Keep probabilities of the diagonal and of every other position, over any leading axes: a DAM_s
    snapshot is (..., L) per offset |i - j| (index 0 = the diagonal), a DAM_u one (..., L, L) per pair."""
    if kind == "dam_s":
        return keep[..., 0], keep[..., 1:]
    eye = np.eye(keep.shape[-1], dtype=bool)
    return keep[..., eye], keep[..., ~eye]


def task_columns(task: str, metrics: dict) -> dict[str, float]:
    """Main metric per evaluation split, in percent; for span tasks also exact match."""
    spec = TASKS[task]
    scale = 1.0 if spec.kind == "span" else 100.0  # SQuAD metrics are already in [0, 100]
    splits = metrics["eval"]
    cols = {}
    for split, values in splits.items():
        name = task + (SPLIT_SUFFIX.get(split, "") if len(splits) > 1 else "")
        cols[name] = scale * values[spec.main_metric]
        if spec.kind == "span":
            exact = values.get("exact_match", values.get("exact"))
            cols[f"{name}_em"] = scale * exact
    return cols


def collect(results: Path, p: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per variant (sparsity, pretraining numbers, score columns) and the long table of every metric."""
    rows, long = [], []
    for variant in p["variants"]:
        summary = read_json(pretrained_dir(results, p, variant) / "summary.json")
        row = {"variant": variant, "kind": variant_kind(variant), "sparsity": 100 * summary["sparsity"],
               "val_mlm_acc": 100 * summary.get("val_mlm_acc", np.nan), "seed": summary.get("seed")}  # fmt: skip
        for task in p["tasks"]:
            metrics = read_json(results / "finetune" / variant / task / "metrics.json")
            row.update(task_columns(task, metrics))
            for split, values in metrics["eval"].items():
                long += [{"variant": variant, "task": task, "split": split, "metric": k, "value": v,
                          "proxy": TASKS[task].proxy, "finetune_seed": metrics.get("seed")}
                         for k, v in values.items()]  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant"), pd.DataFrame(long)


def score_columns(frame: pd.DataFrame, tasks: list[str], glue: bool) -> list[str]:
    """Headline columns of one table (exact-match columns are shown but not averaged)."""
    picked = [t for t in tasks if (TASKS[t].file_format in GLUE_FORMATS) == glue]
    return [c for c in frame.columns if any(c == t or c.startswith(t + "_") for t in picked)]


# ------------------------------------------------------------------------------------------ tables


def build_table(frame: pd.DataFrame, cols: list[str], proxy: bool, with_paper: bool) -> pd.DataFrame:
    averaged = [c for c in cols if not c.endswith("_em")]
    table = frame[["kind", "sparsity", *cols]].copy()
    table["avg"] = frame[averaged].mean(axis=1) if averaged else np.nan
    if with_paper:
        table["paper_sparsity"] = [paper.GLUE.get(v, {}).get("sparsity", np.nan) for v in table.index]
        table["delta_sparsity"] = table["sparsity"] - table["paper_sparsity"]
        same = [] if proxy else [c for c in cols if c in paper.GLUE_COLUMNS]
        for c in same:
            table[f"paper_{c}"] = [paper.GLUE.get(v, {}).get(c, np.nan) for v in table.index]
            table[f"delta_{c}"] = table[c] - table[f"paper_{c}"]
        table["paper_avg"] = [paper.GLUE.get(v, {}).get("avg", np.nan) for v in table.index]
        if not proxy:  # the paper's average covers its 9 columns; only then is the delta meaningful
            table["delta_avg"] = table["avg"] - table["paper_avg"]
    return table.round(2)


def markdown(table: pd.DataFrame, title: str, p: dict, note: str) -> str:
    cols = ["variant", *table.columns]
    lines = [f"# {title}", "", f"Our scale: {p['scale']}.", ""]
    if p["proxy"]:
        lines += ["**PROXY TASKS.** Every task here is a proxy derived from the embedded corpus, not the benchmark. "
                  "The `paper_*` columns are the paper's BERT-base numbers on real GLUE, printed for reference "
                  "only: they are NOT comparable to the proxy scores, so no score delta is given.", ""]  # fmt: skip
    lines += [note, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for variant, row in table.iterrows():
        cells = [variant] + ["" if isinstance(v, float) and np.isnan(v) else f"{v:.1f}" if isinstance(v, float)
                             else str(v) for v in row.values]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def diagonal_comparison(frame: pd.DataFrame, cols: list[str]) -> str:
    if not {"dense", "no_diagonal"} <= set(frame.index) or not cols:
        return "BERT vs BERT without diagonal: needs both `dense` and `no_diagonal` in the config."
    lines = ["## BERT (dense) vs BERT without diagonal", "", "| task | dense | no_diagonal | difference |",
             "|---|---|---|---|"]  # fmt: skip
    for c in cols:
        d, n = frame.loc["dense", c], frame.loc["no_diagonal", c]
        lines.append(f"| {c} | {d:.1f} | {n:.1f} | {n - d:+.1f} |")
    return "\n".join(lines)


def write_tables(results: Path, p: dict, out: Path) -> dict:
    frame, long = collect(results, p)
    note = (f"Scores in percent (main metric per task; span tasks also exact match `_em`), one fine-tuning seed "
            f"per cell; sparsity = 1 - mean(keep) of the mask, measured at our sequence length "
            f"(paper: L=128). Paper: {paper.CITATION}; {paper.SCALE}.")  # fmt: skip
    glue_cols = score_columns(frame, p["tasks"], glue=True)
    other_cols = score_columns(frame, p["tasks"], glue=False)
    glue = build_table(frame, glue_cols, p["proxy"], with_paper=True)
    other = build_table(frame, other_cols, p["proxy"], with_paper=False)
    name = "PROXY tasks (GLUE-shaped)" if p["proxy"] else "GLUE dev"
    other_name = "PROXY tasks (SQuAD/SWAG-shaped)" if p["proxy"] else "SQuAD v1.1 / v2.0 and SWAG dev"
    out.mkdir(parents=True, exist_ok=True)
    for stem, table, title, extra in (
        ("glue", glue, name, diagonal_comparison(frame, glue_cols)),
        ("squad_swag", other, other_name, diagonal_comparison(frame, other_cols)),
    ):
        table.to_csv(out / f"{stem}.csv", index_label="variant")
        atomic_write_text(out / f"{stem}.md", markdown(table, title, p, note) + "\n" + extra + "\n")
    long.to_csv(out / "all_metrics.csv", index=False)
    scores = [c for c in glue_cols + other_cols if not c.endswith("_em")]
    summary = {
        "scale": p["scale"], "proxy": p["proxy"],
        "variants": {v: {"kind": frame.loc[v, "kind"], "sparsity": round(frame.loc[v, "sparsity"], 2),
                         "val_mlm_acc": round(frame.loc[v, "val_mlm_acc"], 2),
                         "avg_glue": _num(glue.loc[v, "avg"]), "avg_squad_swag": _num(other.loc[v, "avg"]),
                         "avg": _num(frame.loc[v, scores].mean()),
                         "scores": {c: _num(frame.loc[v, c]) for c in glue_cols + other_cols}}
                     for v in frame.index},
    }  # fmt: skip
    atomic_write_json(out / "metrics.json", summary)
    log.info("tables: %d variants x %d tasks -> %s", len(frame), len(p["tasks"]), out)
    return summary


def _num(value) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 2)


# ------------------------------------------------------------------------------------------ findings


def diagonal_importance(results: Path, runs: list[str]) -> list[dict]:
    """Per DAM run: keep probability of the diagonal vs the rest at the last snapshot, and where it ranks."""
    found = []
    for run in runs:
        snap = np.load(results / "dam" / run / "snapshots.npz")
        keep = snap["keep_prob"][-1]  # dam_s: (H, L) over offsets; dam_u: (H, L, L)
        diag, off = split_diagonal(keep, variant_kind(run))
        if diag.ndim == 1:  # dam_s: one diagonal offset per head
            rank = (off < diag[:, None]).sum(1)  # offsets less likely kept than the diagonal, per head
            lowest = int((rank == 0).sum())
        else:
            lowest = int((np.quantile(off, 0.05, axis=1) > diag.mean(1)).sum())  # below 95% of the others
        found.append({"run": run, "steps": int(snap["steps"][-1]), "heads": int(keep.shape[0]),
                      "diag_keep": float(diag.mean()), "off_keep": float(off.mean()),
                      "heads_diag_lowest": lowest})  # fmt: skip
    return found


def write_findings(results: Path, p: dict, out: Path) -> str:
    m = read_json(results / "tables" / "metrics.json")
    v = m["variants"]
    seeds = sorted({str(read_json(pretrained_dir(results, p, x) / "summary.json").get("seed")) for x in v})
    lines = ["# Findings: the paper's three claims, checked at this run's scale", "",
             f"Scale: {p['scale']}. Pretraining seed(s): {', '.join(seeds)}; one fine-tuning run per variant and "
             "task, so differences of about a point are within seed noise. "
             + ("All downstream tasks are PROXY tasks built from the corpus, not GLUE/SQuAD/SWAG. " if p["proxy"] else "")
             + "Numbers below are from results/tables/ (scores in percent).", ""]  # fmt: skip

    # Claim 1 --------------------------------------------------------------------------------------
    lines += ["## 1. The diagonal is the least important attention position during pretraining", ""]
    imp = diagonal_importance(results, p["dam_runs"])
    if not imp:
        lines += ["No DAM search in this config: **not shown at this scale**.", ""]
    else:
        for r in imp:
            lines.append(f"- {r['run']} after {r['steps']} steps: diagonal kept with probability {r['diag_keep']:.3f}, "
                         f"other positions {r['off_keep']:.3f} on average; the diagonal is the least likely kept "
                         f"position in {r['heads_diag_lowest']} of {r['heads']} heads.")  # fmt: skip
        heads = sum(r["heads"] for r in imp)
        lowest = sum(r["heads_diag_lowest"] for r in imp)
        below = sum(r["diag_keep"] < r["off_keep"] - KEEP_MARGIN for r in imp)
        if lowest >= heads / 2 and below > len(imp) / 2:
            verdict = "**supported at this scale**: the searches drop the diagonal first in most heads."
        elif below > len(imp) / 2:
            verdict = ("**partly supported at this scale**: the diagonal is kept less often than other positions, "
                       "but it is not the first one dropped in most heads.")  # fmt: skip
        else:
            verdict = (f"**not shown at this scale**: the diagonal's keep probability is not clearly (by more than "
                       f"{KEEP_MARGIN}) below the other positions' in most searches; short searches move the mask "
                       "logits only a little from their initial 0.5.")  # fmt: skip
        lines += ["", f"Verdict: {verdict}", ""]

    # Claims 2 and 3 compare fine-tuning scores; when every variant scores the same, the tasks say nothing.
    averages = [x["avg"] for x in v.values() if x["avg"] is not None]
    spread = max(averages) - min(averages) if averages else 0.0
    # Tasks on which every variant scores the same carry no information about masks (e.g. a fine-tuned model
    # that predicts one class); when they are the majority, the averages are mostly noise.
    scored = [t for t in next(iter(v.values()))["scores"] if not t.endswith("_em")]
    same = [t for t in scored if len({x["scores"][t] for x in v.values()}) == 1]
    flat = spread < DIAGONAL_NOISE or len(same) > len(scored) / 2
    flat_note = (f"**not shown at this scale**: {len(same)} of {len(scored)} tasks give every variant the same "
                 f"score and the averages lie within {spread:.1f} points, so these fine-tuning results cannot "
                 "separate the variants (one seed, differences of a few points are noise).")  # fmt: skip

    # Claim 2 --------------------------------------------------------------------------------------
    lines += ["## 2. BERT without diagonal attention matches BERT", ""]
    if {"dense", "no_diagonal"} <= set(v):
        d, n = v["dense"], v["no_diagonal"]
        diffs = {t: n["scores"][t] - d["scores"][t] for t in d["scores"] if not t.endswith("_em")
                 and d["scores"][t] is not None and n["scores"][t] is not None}  # fmt: skip
        gap = n["avg"] - d["avg"]
        lines += [f"- Average score: dense {d['avg']:.1f}, no_diagonal {n['avg']:.1f} (difference {gap:+.1f}).",
                  "- Per task: " + ", ".join(f"{t} {x:+.1f}" for t, x in diffs.items()) + ".",
                  f"- Pretraining validation MLM accuracy: dense {d['val_mlm_acc']:.1f}, "
                  f"no_diagonal {n['val_mlm_acc']:.1f}.", ""]  # fmt: skip
        if flat:
            verdict = flat_note
        elif gap >= -DIAGONAL_NOISE:
            verdict = (f"**consistent with the claim at this scale**: removing the diagonal costs less than "
                       f"{DIAGONAL_NOISE:.0f} point on average (one seed; this does not prove equality).")
        else:
            verdict = (f"**not shown at this scale**: no_diagonal is {-gap:.1f} points below dense on average, "
                       f"more than the {DIAGONAL_NOISE:.0f}-point noise allowance of a single seed.")
        lines += [f"Verdict: {verdict}", ""]
    else:
        lines += ["Needs both `dense` and `no_diagonal` in the config: **not shown at this scale**.", ""]

    # Claim 3 --------------------------------------------------------------------------------------
    lines += ["## 3. DAM masks beat hand-designed sparse masks at similar or higher sparsity", "",
              "Compared on the GLUE average (" + ("the GLUE-shaped proxy tasks" if p["proxy"] else "the paper's 9 "
              "columns") + "), as in the paper's table; DAM rows are the searched models fine-tuned with their "
              "binarized masks (the official protocol).", ""]
    designed = {k: x for k, x in v.items() if x["kind"] == "fixed" and k not in ("dense", "no_diagonal")}
    wins = total = 0
    glue_avg = lambda x: x["avg_glue"] if x["avg_glue"] is not None else x["avg"]  # noqa: E731
    for run in p["dam_runs"]:
        x = {**v[run], "avg": glue_avg(v[run])}
        # Hand-designed masks at most SIMILAR_SPARSITY points sparser than the DAM mask: DAM is "at similar or
        # higher sparsity" than each of them.
        rivals = {k: {**y, "avg": glue_avg(y)} for k, y in designed.items()
                  if y["sparsity"] <= x["sparsity"] + SIMILAR_SPARSITY}
        # A win needs more than the single-seed noise allowance; smaller differences are ties.
        beaten = [k for k, y in rivals.items() if x["avg"] > y["avg"] + DIAGONAL_NOISE]
        wins, total = wins + len(beaten), total + len(rivals)
        lines.append(f"- {run}: sparsity {x['sparsity']:.1f}%, average {x['avg']:.1f}; beats by > {DIAGONAL_NOISE:.0f} "
                     f"point {len(beaten)} of "
                     f"{len(rivals)} hand-designed masks with sparsity <= {x['sparsity'] + SIMILAR_SPARSITY:.1f}%"
                     + (" (" + ", ".join(f"{k} {y['avg']:.1f}" for k, y in rivals.items()) + ")" if rivals else "")
                     + ".")
    if flat and p["dam_runs"]:
        verdict = flat_note
    elif not p["dam_runs"] or not designed:
        verdict = "needs DAM runs and hand-designed masks in the config: **not shown at this scale**."
    elif total == 0:
        verdict = ("**not shown at this scale**: the learned masks are less sparse than every hand-designed mask, "
                   "so there is no comparison at similar or higher sparsity.")  # fmt: skip
    elif wins > total / 2:
        verdict = f"**supported at this scale**: DAM wins {wins} of {total} comparisons at similar or higher sparsity."
    else:
        verdict = f"**not supported at this scale**: DAM wins only {wins} of {total} comparisons at similar or higher sparsity."
    lines += ["", f"Verdict: {verdict}", ""]
    if same:
        lines += [f"Note: every variant scores the same on {', '.join(same)}; at this scale these tasks do not "
                  "separate the variants (fine-tuned models at a constant prediction), so the averages above rest "
                  "on the other tasks only.", ""]  # fmt: skip
    text = "\n".join(lines)
    atomic_write_text(out, text)
    return text


# ------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # One module serves two subcommands (`tables`, `findings`); the parser's prog says which one runs.
    parser.set_defaults(report=parser.prog.split()[-1])
    parser.add_argument("--results", type=Path, default=Path("results"), help="the run's results directory")
    parser.add_argument("--params", required=True, help="JSON/YAML: scale, proxy, variants, dam_runs, tasks")
    parser.add_argument("--out", type=Path, required=True, help="tables: a directory; findings: a .md file")


def run(args: argparse.Namespace) -> None:
    p = load_params(args.params)
    if args.report == "findings":
        print(write_findings(args.results, p, args.out))
    else:
        write_tables(args.results, p, args.out)
