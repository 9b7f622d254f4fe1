"""`sparsebert tables`: what the run measured, beside what the paper published, with 95 % intervals.

    python -m sparsebert tables --params P --out results/<run>/tables

P (from the Snakefile, workflow/rules/common.smk's report_params): scale, proxy, seq_len, seeds, tasks, report
(the statistics' settings) and `variants`: one record per variant in table order (sparsebert/variants.py: name,
kind, role, mask, params, lambda, learned_from) with the folders of its files as patterns, `pretrained` with
{seed} (summary.json, ...) and `finetuned` with {seed} and {task} ({metrics,predictions}.json). The report fills
in those patterns; it never walks a results folder or parses a variant's name. Scores are in percent (GLUE/SWAG metrics x 100;
SQuAD already).

Every score is the mean over the seeds with its 95 % interval (sparsebert/stats.py: a two-way bootstrap
over seeds and eval examples, metrics recomputed on resamples with `metrics.task_metrics`). tables writes
glue.csv/.md (GLUE-shaped tasks), squad_swag.csv/.md (span and multiple-choice tasks, with BERT vs
BERT-without-diagonal), all_metrics.csv (every metric of every split and seed), metrics.json (per variant:
sparsity, means and intervals; `dvc metrics show` reads it) and bootstrap.npz (every (variant, seed)'s score
on every bootstrap resample: findings.md's comparisons are computed from it). With proxy tasks the paper's
columns are printed for reference only: the tables say so, and no score delta is computed.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sparsebert import paper, recipes, stats
from sparsebert.data.tasks import TASKS
from sparsebert.metrics import task_metrics
from sparsebert.variants import SEARCH
from sparsebert.io import UserError, atomic_write_json, atomic_write_text, load_params

log = logging.getLogger(__name__)

# Which table a task belongs to, by the shape of its original distribution format.
GLUE_FORMATS = {"glue_tsv"}
# Short column names for the evaluation splits of tasks with more than one (MNLI: matched / mismatched).
SPLIT_SUFFIX = {"validation_matched": "_m", "validation_mismatched": "_mm"}
CORRELATIONS = {"matthews_correlation", "pearson", "spearmanr"}


# ------------------------------------------------------------------------------------------ reading


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"missing result file {path} (has its rule run?)")
    return json.loads(path.read_text())


def settings(p: dict) -> dict:
    """The statistics' settings: config `report`, checked against its schema definition (which says what each
    one means) and completed with its defaults."""
    return recipes.fill("report", p.get("report") or {})


def seeds_of(p: dict) -> list[int]:
    return list(p.get("seeds") or [0])


def variants_of(p: dict) -> dict[str, dict]:
    """The run's variant records by name, in table order."""
    return {v["name"]: v for v in p["variants"]}


def searches_of(p: dict) -> list[str]:
    """The DAM searches among the variants (their folders hold snapshots.npz and mask.safetensors)."""
    return [v["name"] for v in p["variants"] if v["role"] == SEARCH]


def pretrained_dir(p: dict, variant: str, seed: int) -> Path:
    """A variant's pretraining outputs of one seed (summary.json, log.jsonl, model/; a search's also
    snapshots.npz and mask.safetensors)."""
    return Path(variants_of(p)[variant]["pretrained"].format(seed=seed))


def finetuned_dir(p: dict, variant: str, seed: int, task: str) -> Path:
    """A (variant, seed)'s fine-tuning on `task`: metrics.json, predictions.json."""
    return Path(variants_of(p)[variant]["finetuned"].format(seed=seed, task=task))


@dataclass(frozen=True)
class Column:
    """One score column: the main metric of one eval split of a task (span tasks: also exact match `_em`,
    shown but not averaged)."""

    name: str
    task: str
    split: str
    metric: str
    averaged: bool
    glue: bool

    @property
    def scale(self) -> float:
        return 1.0 if TASKS[self.task].kind == "span" else 100.0  # SQuAD metrics are already in [0, 100]

    @property
    def bounds(self) -> tuple[float, float]:
        """The range of the score in percent (correlations can be negative)."""
        correlation = self.metric in CORRELATIONS or (self.metric == "combined_score" and TASKS[self.task].kind == "regression")
        return (-100.0, 100.0) if correlation else (0.0, 100.0)


def eval_columns(tasks: list[str]) -> list[Column]:
    cols = []
    for task in tasks:
        spec = TASKS[task]
        glue = spec.file_format in GLUE_FORMATS
        for split in spec.eval_splits:
            name = task + (SPLIT_SUFFIX.get(split, "") if len(spec.eval_splits) > 1 else "")
            cols.append(Column(name, task, split, spec.main_metric, True, glue))
            if spec.kind == "span":
                cols.append(Column(f"{name}_em", task, split, "exact" if spec.unanswerable else "exact_match",
                                   False, glue))  # fmt: skip
    return cols


def task_columns(task: str, metrics: dict) -> dict[str, float]:
    """The columns of `task` (`eval_columns`) read from one of its metrics.json, in percent."""
    return {c.name: c.scale * metrics["eval"][c.split][c.metric] for c in eval_columns([task])}


@dataclass
class Scores:
    """Every (variant, seed)'s scores: on the whole eval splits (`points`) and on each bootstrap resample of
    their examples (`draws`, shared by all variants and seeds), in percent; the masks' sparsity per seed."""

    variants: list[str]
    seeds: list[int]
    columns: list[Column]
    points: np.ndarray  # (V, S, C)
    draws: np.ndarray  # (V, S, C, B)
    sparsity: np.ndarray  # (V, S), percent
    val_mlm_acc: np.ndarray  # (V, S), percent
    examples: np.ndarray  # (C,) eval examples per column
    constant: np.ndarray  # (V, S, C) bool: the fine-tuned model predicts one output for every example
    baseline_points: np.ndarray  # (C,) the best constant predictor's score (`constant_predictions`)
    baseline_draws: np.ndarray  # (C, B) ... on the same resamples as `draws`

    def index(self, variant: str) -> int:
        return self.variants.index(variant)

    def col(self, name: str) -> int:
        return [c.name for c in self.columns].index(name)

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        fields = ("name", "task", "split", "metric", "averaged", "glue")
        np.savez_compressed(tmp, variants=np.array(self.variants), seeds=np.array(self.seeds),
                            points=self.points, draws=self.draws, sparsity=self.sparsity,
                            val_mlm_acc=self.val_mlm_acc, examples=self.examples, constant=self.constant,
                            baseline_points=self.baseline_points, baseline_draws=self.baseline_draws,
                            **{f"column_{f}": np.array([getattr(c, f) for c in self.columns]) for f in fields})  # fmt: skip
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Scores:
        if not path.is_file():
            raise UserError(f"missing result file {path} (has the tables rule run?)")
        z = np.load(path)
        columns = [Column(str(n), str(t), str(s), str(m), bool(a), bool(g)) for n, t, s, m, a, g in
                   zip(*(z[f"column_{f}"] for f in ("name", "task", "split", "metric", "averaged", "glue")))]  # fmt: skip
        return cls([str(v) for v in z["variants"]], [int(s) for s in z["seeds"]], columns, z["points"], z["draws"],
                   z["sparsity"], z["val_mlm_acc"], z["examples"], z["constant"], z["baseline_points"],
                   z["baseline_draws"])  # fmt: skip


def read_predictions(path: Path, split: str) -> tuple:
    """(predictions, references) of one eval split of a predictions.json."""
    data = read_json(path)
    if split not in data or not isinstance(data[split], dict) or "references" not in data[split]:
        raise UserError(f"{path}: no predictions with references for split {split!r} (written by an older "
                        f"`sparsebert finetune`? rerun its fine-tuning)")  # fmt: skip
    return data[split]["predictions"], data[split]["references"]


def is_constant(predictions) -> bool:
    """One output for every example (one class, one value, one answer text): a fine-tuned model that learned
    nothing about its inputs."""
    values = predictions.values() if isinstance(predictions, dict) else predictions
    return len({json.dumps(x) for x in values}) <= 1


def constant_predictions(spec, metric: str, references):
    """The best constant predictor of one eval split for `metric`, chosen in hindsight with the eval labels (the
    strongest such baseline): the best single label (classification, multiple choice), the mean score
    (regression: any constant has correlation 0) or "no answer" for every question (span)."""
    if spec.kind == "span":
        return {qid: "" for qid in references}
    if spec.kind == "regression":
        return [float(np.mean(references))] * len(references)
    labels = sorted({int(x) for x in references})
    return max(([label] * len(references) for label in labels),
               key=lambda preds: task_metrics(spec, np.asarray(preds), np.asarray(references))[metric])  # fmt: skip


def collect(p: dict) -> tuple[Scores, pd.DataFrame]:
    """Every (variant, seed)'s sparsity, pretraining accuracy and scores with their bootstrap draws, and the long
    table of every metric. The draws of one column share their resamples (one call per column), so every
    comparison between variants is paired on the eval examples."""
    variants, seeds, cfg = list(variants_of(p)), seeds_of(p), settings(p)
    columns = eval_columns(p["tasks"])
    V, S, C, B = len(variants), len(seeds), len(columns), cfg["bootstrap_samples"]
    sparsity, val_mlm = np.empty((V, S)), np.empty((V, S))
    points, draws, examples = np.empty((V, S, C)), np.empty((V, S, C, B)), np.zeros(C, dtype=int)
    constant = np.zeros((V, S, C), dtype=bool)
    baseline_points, baseline_draws = np.empty(C), np.empty((C, B))
    long, reported = [], {}
    for v, variant in enumerate(variants):
        for s, seed in enumerate(seeds):
            summary = read_json(pretrained_dir(p, variant, seed) / "summary.json")
            sparsity[v, s] = 100 * summary["sparsity"]
            val_mlm[v, s] = 100 * summary.get("val_mlm_acc", np.nan)
            for task in p["tasks"]:
                metrics = read_json(finetuned_dir(p, variant, seed, task) / "metrics.json")
                reported[variant, seed, task] = task_columns(task, metrics)
                for split, values in metrics["eval"].items():
                    long += [{"variant": variant, "seed": seed, "task": task, "split": split, "metric": k, "value": x,
                              "proxy": TASKS[task].proxy, "finetune_seed": metrics.get("seed")}
                             for k, x in values.items()]  # fmt: skip
    for c, col in enumerate(columns):
        files = [(variant, seed, finetuned_dir(p, variant, seed, col.task) / "predictions.json")
                 for variant in variants for seed in seeds]  # fmt: skip
        runs = [read_predictions(path, col.split) for _, _, path in files]
        rng = np.random.default_rng([cfg["bootstrap_seed"], c])
        try:
            baseline = (constant_predictions(TASKS[col.task], col.metric, runs[0][1]), runs[0][1])
            pts, drw = stats.resampled_scores(TASKS[col.task], col.metric, [*runs, baseline], B, rng)
        except ValueError as e:
            raise UserError(f"{col.task} {col.split}: {e} ({files[0][2]} vs the others: do the fine-tunings use "
                            f"different seeds or max_eval_examples?)") from None  # fmt: skip
        baseline_points[c], baseline_draws[c] = col.scale * pts[-1], col.scale * drw[-1]
        pts, drw = pts[:-1], drw[:-1]
        points[:, :, c], draws[:, :, c] = (col.scale * pts).reshape(V, S), (col.scale * drw).reshape(V, S, B)
        examples[c] = len(runs[0][1])
        constant[:, :, c] = np.reshape([is_constant(preds) for preds, _ in runs], (V, S))
        for (variant, seed, path), point in zip(files, col.scale * pts):
            expected = reported[variant, seed, col.task][col.name]
            if not np.isclose(point, expected, rtol=1e-6, atol=1e-6):
                raise UserError(f"{path}: {col.metric} recomputed from the predictions is {point:.4f}, "
                                f"metrics.json says {expected:.4f}")
    scores = Scores(list(variants), seeds, columns, points, draws, sparsity, val_mlm, examples, constant,
                    baseline_points, baseline_draws)  # fmt: skip
    return scores, pd.DataFrame(long)


def task_data(p: dict) -> dict[str, dict]:
    """{task: what its fine-tunings read} (formats.read_task's record in each metrics.json: hub repository and
    commit, or local files' sha256), checked to be the same for every variant and seed: variants compared on
    different examples (a hub commit that landed between two jobs, a task file edited) compare nothing. A
    metrics.json without the record (written before records existed) is not compared."""
    found: dict[str, tuple[Path, dict]] = {}
    for variant in variants_of(p):
        for seed in seeds_of(p):
            for task in p["tasks"]:
                path = finetuned_dir(p, variant, seed, task) / "metrics.json"
                record = read_json(path).get("data")
                if record is None:
                    continue
                first_path, first = found.setdefault(task, (path, record))
                if record != first:
                    raise UserError(f"{path} read {task} from {record}, {first_path} from {first}: the variants would "
                                    "be compared on different data (pin tasks.hub_revisions, or rerun the "
                                    "fine-tunings on one copy of the files)")
    return {task: record for task, (_, record) in found.items()}


# ------------------------------------------------------------------------------------------ tables


def interval(draws: np.ndarray, columns: list[Column], difference: bool = False) -> tuple[float, float]:
    """The 95 % interval of a score (or a difference of scores) averaged over `columns`, within the range it
    can take."""
    lo, hi = np.mean([c.bounds for c in columns], axis=0)
    return stats.percentile_interval(draws, bounds=(lo - hi, hi - lo) if difference else (lo, hi))


def summarize(scores: Scores, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """Per variant: the mean over seeds of every column and of the averages, and their 95 % intervals
    {variant: {column: (lo, hi)}}. The averages (`avg_glue`, `avg_squad_swag`, `avg`) are averaged inside every
    bootstrap draw over the averaged columns."""
    groups = {"avg_glue": [c.averaged and c.glue for c in scores.columns],
              "avg_squad_swag": [c.averaged and not c.glue for c in scores.columns],
              "avg": [c.averaged for c in scores.columns]}  # fmt: skip
    means, intervals = {}, {}
    kept = {name: np.array(picked, dtype=bool) for name, picked in groups.items() if any(picked)}
    for v, variant in enumerate(scores.variants):
        # The averages as further columns: seed_level splits each quantity's example noise on its own.
        averaged = [scores.draws[v][:, picked].mean(axis=1, keepdims=True) for picked in kept.values()]
        per_col = stats.seed_level(np.concatenate([scores.draws[v], *averaged], axis=1), rng)  # (C + averages, B)
        point = scores.points[v].mean(axis=0)  # (C,)
        rows = {c.name: (point[i], per_col[i], [c]) for i, c in enumerate(scores.columns)}
        rows |= {name: (np.nan, None, []) for name in groups}  # an average of no column
        for at, (name, picked) in enumerate(kept.items(), start=len(scores.columns)):
            rows[name] = (point[picked].mean(), per_col[at], [c for c, keep in zip(scores.columns, picked) if keep])
        means[variant] = {k: float(x) for k, (x, _, _) in rows.items()}
        intervals[variant] = {k: interval(d, cols) if d is not None else (np.nan, np.nan)
                              for k, (_, d, cols) in rows.items()}  # fmt: skip
    return pd.DataFrame(means).T, intervals


def score_columns(frame: pd.DataFrame, tasks: list[str], glue: bool) -> list[str]:
    """Headline columns of one table (exact-match columns are shown but not averaged)."""
    picked = [t for t in tasks if (TASKS[t].file_format in GLUE_FORMATS) == glue]
    return [c for c in frame.columns if any(c == t or c.startswith(t + "_") for t in picked)
            and not c.startswith("avg") and not c.endswith(("_lo", "_hi"))]  # fmt: skip


def averages_paper_columns(cols: list[str]) -> bool:
    """Whether the average over the GLUE columns `cols` is over exactly the paper's 9: only then can it be
    subtracted from the paper's Avg (a subset, or WNLI added, averages other tasks)."""
    return sorted(cols) == sorted(paper.GLUE_COLUMNS)


def build_table(frame: pd.DataFrame, cols: list[str], proxy: bool, with_paper: bool,
                intervals: dict | None = None, avg: str | None = None) -> pd.DataFrame:
    """One table: kind, sparsity, the score columns and their average (`avg`: that average's column in `frame`,
    else the mean of the non-`_em` columns), each followed by its 95 % interval `<col>_lo`, `<col>_hi` when
    `intervals` ({variant: {column: (lo, hi)}}) are given; then the paper's numbers and, for real tasks, the
    deltas of our means (`delta_avg` only where the average is over the paper's 9 GLUE columns,
    `averages_paper_columns`; else NaN)."""
    averaged = [c for c in cols if not c.endswith("_em")]
    table = frame[["kind", "sparsity", *cols]].copy()
    if avg is not None:
        table["avg"] = frame[avg]
    else:
        table["avg"] = frame[averaged].mean(axis=1) if averaged else np.nan
    if intervals is not None:  # the bounds, not a half-width: with few seeds an interval is rarely centred
        for c in [*cols, "avg"]:
            key, at = (avg if c == "avg" and avg else c), table.columns.get_loc(c)
            table.insert(at + 1, f"{c}_lo", [intervals[v][key][0] for v in table.index])
            table.insert(at + 2, f"{c}_hi", [intervals[v][key][1] for v in table.index])
    if with_paper:
        table["paper_sparsity"] = [paper.GLUE.get(v, {}).get("sparsity", np.nan) for v in table.index]
        table["delta_sparsity"] = table["sparsity"] - table["paper_sparsity"]
        same = [] if proxy else [c for c in cols if c in paper.GLUE_COLUMNS]
        for c in same:
            table[f"paper_{c}"] = [paper.GLUE.get(v, {}).get(c, np.nan) for v in table.index]
            table[f"delta_{c}"] = table[c] - table[f"paper_{c}"]
        table["paper_avg"] = [paper.GLUE.get(v, {}).get("avg", np.nan) for v in table.index]
        if not proxy:  # the paper's average covers its 9 columns; only an average over the same is comparable
            table["delta_avg"] = table["avg"] - table["paper_avg"] if averages_paper_columns(cols) else np.nan
    return table.round(2)


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.1f}"
    return str(value)


def markdown(table: pd.DataFrame, title: str, p: dict, note: str) -> str:
    """The table with every score as `mean [lo, hi]` (its `_lo` and `_hi` columns folded into it)."""
    shown = [c for c in table.columns if not c.endswith(("_lo", "_hi"))]
    lines = [f"# {title}", "", f"Our scale: {p['scale']}.", ""]
    if p["proxy"]:
        lines += ["**PROXY TASKS.** Every task here is a proxy derived from the embedded corpus, not the benchmark. "
                  "The `paper_*` columns are the paper's BERT-base numbers on real GLUE, printed for reference "
                  "only: they are NOT comparable to the proxy scores, so no score delta is given.", ""]  # fmt: skip
    lines += [note, "", "| " + " | ".join(["variant", *shown]) + " |", "|" + "---|" * (len(shown) + 1)]
    for variant, row in table.iterrows():
        cells = [variant]
        for c in shown:
            lo, hi = row.get(f"{c}_lo", np.nan), row.get(f"{c}_hi", np.nan)
            cells.append(_cell(row[c]) + (f" [{lo:.1f}, {hi:.1f}]" if isinstance(lo, float) and not np.isnan(lo)
                                          else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def diagonal_comparison(scores: Scores, cols: list[str], rng: np.random.Generator) -> str:
    """no_diagonal - dense per column, paired on the eval examples and the seeds, with its 95 % interval."""
    if not {"dense", "no_diagonal"} <= set(scores.variants):
        return "BERT vs BERT without diagonal: needs both `dense` and `no_diagonal` in the config."
    if not cols:
        return "BERT vs BERT without diagonal: no task of this table in the config."
    d, n = scores.index("dense"), scores.index("no_diagonal")
    diff = stats.seed_level(scores.draws[n] - scores.draws[d], rng)  # (C, B)
    lines = ["## BERT (dense) vs BERT without diagonal", "",
             f"Difference no_diagonal - dense with its 95 % interval ({len(scores.seeds)} seed(s) each; "
             "paired on the eval examples and the seeds).", "",
             "| task | dense | no_diagonal | difference | 95 % interval |", "|---|---|---|---|---|"]  # fmt: skip
    for name in cols:
        c = scores.col(name)
        a, b = scores.points[d, :, c].mean(), scores.points[n, :, c].mean()
        lo, hi = interval(diff[c], [scores.columns[c]], difference=True)
        lines.append(f"| {name} | {a:.1f} | {b:.1f} | {b - a:+.1f} | [{lo:+.1f}, {hi:+.1f}] |")
    return "\n".join(lines)


def write_tables(p: dict, out: Path) -> dict:
    scores, long = collect(p)
    data = task_data(p)  # before anything is written: fine-tunings on different data leave no tables behind
    cfg = settings(p)
    rng = np.random.default_rng([cfg["bootstrap_seed"], 10_000])
    means, intervals = summarize(scores, rng)
    frame = means.copy()
    frame.insert(0, "sparsity", scores.sparsity.mean(axis=1))
    frame.insert(0, "kind", [variants_of(p)[v]["kind"] for v in scores.variants])
    n_seeds = len(scores.seeds)
    note = (f"Scores in percent (main metric per task; span tasks also exact match `_em`): mean over {n_seeds} "
            f"pretraining seed(s) ({', '.join(map(str, scores.seeds))}), each fine-tuned once per task, and its 95 % "
            f"interval [lo, hi] ("
            + ("two-way bootstrap over seeds and eval examples" if n_seeds > 1
               else "bootstrap over the eval examples only: one seed, seed variance not covered")
            + f", {cfg['bootstrap_samples']} draws; sparsebert/stats.py). Sparsity = 1 - mean(keep) of the mask, "
            f"measured at our sequence length, mean over seeds (paper: L=128). Paper: {paper.CITATION}; "
            f"{paper.SCALE}.")  # fmt: skip
    glue_cols = score_columns(means, p["tasks"], glue=True)
    other_cols = score_columns(means, p["tasks"], glue=False)
    glue = build_table(frame, glue_cols, p["proxy"], with_paper=True, intervals=intervals, avg="avg_glue")
    other = build_table(frame, other_cols, p["proxy"], with_paper=False, intervals=intervals, avg="avg_squad_swag")
    name = "PROXY tasks (GLUE-shaped)" if p["proxy"] else "GLUE dev"
    other_name = "PROXY tasks (SQuAD/SWAG-shaped)" if p["proxy"] else "SQuAD v1.1 / v2.0 and SWAG dev"
    out.mkdir(parents=True, exist_ok=True)
    glue_note = note + ("" if p["proxy"] or not glue_cols or averages_paper_columns(glue_cols) else
                        f" delta_avg is left empty: the paper's Avg is over its 9 GLUE columns "
                        f"({', '.join(paper.GLUE_COLUMNS)}), ours over {', '.join(glue_cols)}.")  # fmt: skip
    for stem, table, title, cols, text in (("glue", glue, name, glue_cols, glue_note),
                                           ("squad_swag", other, other_name, other_cols, note)):  # fmt: skip
        table.to_csv(out / f"{stem}.csv", index_label="variant")
        extra = diagonal_comparison(scores, cols, rng)
        atomic_write_text(out / f"{stem}.md", markdown(table, title, p, text) + "\n" + extra + "\n")
    long.to_csv(out / "all_metrics.csv", index=False)
    scores.save(out / "bootstrap.npz")
    summary = {
        "scale": p["scale"], "proxy": p["proxy"], "seeds": scores.seeds, "data": data,
        "interval": f"95 % percentile interval, {cfg['bootstrap_samples']} draws of a two-way bootstrap (seeds x eval "
                    f"examples; one seed: examples only), sparsebert/stats.py",
        "variants": {v: {"kind": frame.loc[v, "kind"], "sparsity": round(frame.loc[v, "sparsity"], 2),
                         "sparsity_per_seed": [round(x, 2) for x in scores.sparsity[i]],
                         "val_mlm_acc": _num(np.nanmean(scores.val_mlm_acc[i]) if np.isfinite(scores.val_mlm_acc[i]).any()
                                             else np.nan),
                         "avg_glue": _num(means.loc[v, "avg_glue"]), "avg_squad_swag": _num(means.loc[v, "avg_squad_swag"]),
                         "avg": _num(means.loc[v, "avg"]),
                         "scores": {c: _num(means.loc[v, c]) for c in glue_cols + other_cols},
                         "intervals": {k: [_num(lo), _num(hi)] for k, (lo, hi) in intervals[v].items()}}
                     for i, v in enumerate(scores.variants)},
    }  # fmt: skip
    atomic_write_json(out / "metrics.json", summary)
    log.info("tables: %d variants x %d seeds x %d tasks -> %s", len(scores.variants), n_seeds, len(p["tasks"]), out)
    return summary


def _num(value) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 2)


# ------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", required=True, help="JSON/YAML: scale, proxy, seeds, tasks, report, variants "
                        "(records with their files' folders)")
    parser.add_argument("--out", type=Path, required=True, help="the tables' directory")


def run(args: argparse.Namespace) -> None:
    write_tables(load_params(args.params), args.out)
