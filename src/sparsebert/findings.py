"""`sparsebert findings`: findings.md, what this run says about each of the paper's three claims.

    python -m sparsebert findings --params P --metrics T/metrics.json --bootstrap T/bootstrap.npz --out findings.md

One function per claim. Each first computes its effect size and 95 % interval (sparsebert/stats.py) from the
run's files, then applies its rule to the numbers; the verdict line prints the effect, the interval and how
many seeds and eval examples (or heads) it rests on. Inputs: the tables' bootstrap.npz and metrics.json
(written by `sparsebert tables`), and each DAM search's snapshots.npz and summary.json per seed, found through
P's variant records (the same P as `sparsebert tables`, sparsebert/report.py).

Rules (settings from config `report`):
- Claim 1, the DAM search drops the diagonal first: per head and seed, the diagonal's rank among the positions
  by their area below stats.DROPPED = 0.25 (how far and how long each sat below 0.25; ties counting half;
  0 = dropped most, 0.5 = no preference); supported if the 95 % interval of its mean over DAM runs x seeds x
  heads lies below 0.5, contradicted if above, inconclusive otherwise. The runs share their seeds (a block: same
  initial weights and batches), so each bootstrap draw picks one set of seeds for every run
  (stats.pooled_mean_draws); the same run entered twice adds no evidence. The rank by final keep probability is
  printed beside it and does not decide (CLAIM_1_METHOD says why). An earlier version ranked the first snapshot
  below 0.5: noise around the initial 0.5 decided it, and positions that all fell before the first snapshot
  tied (issue 22).
- Claim 2, BERT without the diagonal matches BERT: effect = no_diagonal - dense on the average score;
  supported if its interval lies inside +-equivalence_margin, contradicted if entirely outside, inconclusive
  otherwise.
- Claim 3, DAM beats hand-designed masks at similar or higher sparsity: per DAM run and hand-designed mask
  at most similar_sparsity points sparser, effect = DAM - mask on the GLUE average; a pair is supported if its
  interval lies above 0, contradicted below 0, inconclusive otherwise; the claim is supported if more than half
  of the pairs are supported and none is contradicted, contradicted if more than half are contradicted,
  inconclusive otherwise.
With one pretraining seed per variant every verdict is inconclusive: the intervals then cover the eval
examples (claim 1: the heads) only, not the variation between pretraining runs; the lines still print what the
examples alone would give.
Claims 2 and 3 average only the informative columns of each comparison: a column on which every variant and
seed scores the same, or on which both compared variants predict one constant output in every seed (every
fine-tuned model predicting one class, say), says nothing about masks, and keeping it would pull the difference
and its interval towards 0 and fake an equivalence (the tables still show it). Claim 2, an equivalence, also
leaves out the columns on which dense does not beat the best constant predictor (the tasks section's interval):
a model that learned nothing there matches dense as well as no_diagonal does, so a match there shows nothing
(equivalence trials ask the same of their active control against placebo: assay sensitivity). Without it, a
column where both predict one output but for a handful of examples passed the constant rule and, with its
near-zero difference and narrow interval, could make the claim "supported" alone or pull an average inside the
margin. Claim 3 tests for a difference, which such a column only dilutes.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparsebert import stats
from sparsebert.dam import mean_per_head, split_diagonal
from sparsebert.io import UserError, atomic_write_text, load_params
from sparsebert.report import Scores, interval, pretrained_dir, read_json, searches_of, seeds_of, settings, variants_of

BASELINES = ("dense", "no_diagonal")  # fixed masks that are not "hand-designed sparse" masks


@dataclass
class Effect:
    """A difference of mean scores (b - a) over some columns, with its 95 % interval."""

    point: float
    lo: float
    hi: float
    seeds: int  # per variant
    columns: list[str]
    examples: int  # eval examples behind the columns

    def numbers(self, unit: str = "points") -> str:
        return f"{self.point:+.2f} {unit}, 95 % interval [{self.lo:+.2f}, {self.hi:+.2f}]"

    def basis(self) -> str:
        seeds = (f"{self.seeds} seeds per variant (two-way bootstrap over seed pairs and eval examples)" if self.seeds > 1
                 else "1 seed per variant: the interval covers the eval examples only and ignores seed variance")
        return (f"{seeds}; {len(self.columns)} column(s) ({', '.join(self.columns)}), {self.examples} eval "
                f"examples")  # fmt: skip


def compare(scores: Scores, a: str, b: str, columns: list[int], rng: np.random.Generator) -> Effect:
    """b - a on the mean over `columns`, paired on the eval examples and on the seeds (seed s of b minus seed s
    of a, the seeds resampled: see stats.py)."""
    ia, ib = scores.index(a), scores.index(b)
    diff = (scores.draws[ib][:, columns] - scores.draws[ia][:, columns]).mean(axis=1)  # (S, B): the average
    draws = stats.seed_level(diff, rng)
    point = scores.points[ib][:, columns].mean() - scores.points[ia][:, columns].mean()
    lo, hi = interval(draws, [scores.columns[c] for c in columns], difference=True)
    return Effect(float(point), lo, hi, len(scores.seeds), [scores.columns[c].name for c in columns],
                  int(scores.examples[columns].sum()))  # fmt: skip


def informative(scores: Scores, glue_only: bool = False) -> tuple[list[int], list[str]]:
    """Averaged columns on which some (variant, seed) scores differently from another, and the names of the
    averaged columns on which none does."""
    picked = [c for c, col in enumerate(scores.columns) if col.averaged and (col.glue or not glue_only)]
    varies = [c for c in picked if np.ptp(scores.points[:, :, c]) > 0]
    return varies, [scores.columns[c].name for c in picked if c not in varies]


def usable(scores: Scores, a: str, b: str, columns: list[int]) -> list[int]:
    """The columns of `columns` on which a and b are not both constant predictors in every seed."""
    ia, ib = scores.index(a), scores.index(b)
    return [c for c in columns if not (scores.constant[ia, :, c].all() and scores.constant[ib, :, c].all())]


def verdict_line(verdict: str, detail: str) -> list[str]:
    return [f"Verdict: **{verdict} at this scale**: {detail}", ""]


def seed_gated(verdict: str, n_seeds: int) -> str:
    """With one pretraining seed per variant the intervals see the eval examples (and heads) only, not the
    variation between pretraining runs, which at small scale is the larger one: such an interval cannot decide a
    claim, so anything but inconclusive becomes inconclusive (the line says what the examples alone gave)."""
    return verdict if n_seeds > 1 else stats.INCONCLUSIVE


def gated_note(verdict: str, gated: str, alone: str = "the eval examples") -> str:
    """What the interval gave before seed_gated, named by what it resampled (claim 1: the heads)."""
    return "" if verdict == gated else f" ({alone} alone: {verdict}; one seed cannot decide)"


# ------------------------------------------------------------------------------------------ claim 1


def diagonal_ranks(p: dict, run: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """The diagonal's rank by area below stats.DROPPED and by final keep probability, (S, H) each, of one DAM
    run per seed and head, and what the report says beside them."""
    kind = variants_of(p)[run]["kind"]
    by_area, by_final, diag_end, other_end = [], [], [], []
    info = {"steps": 0, "fallback": 0, "rows": 0}
    for seed in seeds_of(p):
        folder = pretrained_dir(p, run, seed)
        snap = np.load(folder / "snapshots.npz")
        if not np.isfinite(snap["keep_prob"]).all():  # a NaN would compare as no area: "dropped most"
            raise UserError(f"{folder / 'snapshots.npz'}: keep probabilities that are not finite; the search "
                            f"diverged, and claim 1 cannot rank its positions")
        area = stats.area_below(snap["steps"], snap["keep_prob"])  # (H, L) or (H, L, L)
        by_area.append(stats.diagonal_rank(-area, kind))  # more area = more dropped = lower
        by_final.append(stats.diagonal_rank(snap["keep_prob"][-1], kind))
        diag, other = mean_per_head(*split_diagonal(snap["keep_prob"][-1], kind))
        diag_end.append(diag)
        other_end.append(other)
        info["steps"] = int(snap["steps"][-1])
        fallback = read_json(folder / "summary.json").get("fallback_rows")
        info["fallback"] += sum(fallback) if fallback is not None else 0
        info["rows"] += area.shape[0] * area.shape[-1]  # heads x query rows
    diag_end, other_end = np.array(diag_end), np.array(other_end)  # (S, H)
    info.update(diag_end=float(diag_end.mean()), other_end=float(other_end.mean()),
                below=int((diag_end < stats.DROPPED).sum()), heads=int(diag_end.size))  # fmt: skip
    return np.array(by_area), np.array(by_final), info


CLAIM_1_METHOD = (
    "Measured on the DAM searches' keep-probability snapshots, from step 0 to the end of the search. For every "
    "position (DAM_s: an offset |i - j|, 0 = the diagonal; DAM_u: an entry (i, j)), its area below {t:g}: the "
    "integral over the steps of max(0, {t:g} - keep probability) (trapezoids between snapshots) divided by the "
    "steps searched, i.e. how far and for how long the search held it below {t:g}. Per head and seed, the "
    "diagonal's rank is the fraction of the other positions with a larger area (ties count half; DAM_u: each "
    "query row against its own other keys, rows averaged): 0 = the diagonal is dropped most, 0.5 = no "
    "preference, 1 = least. This rank decides: supported if the 95 % interval of its mean over DAM runs x seeds "
    "x heads lies below 0.5, contradicted if above 0.5, inconclusive otherwise; the runs share their seeds (the "
    "same initial weights and batches), so the interval resamples the seeds jointly across the runs, each seed "
    "as the mean of its heads (a seed's mean already carries its heads' spread: resampling the heads as well "
    "would count it twice and widen the interval). Why: {t:g} lies far outside the "
    "noise around the initial 0.5 of a slow search (+-0.005 measured at dam_lr 0.005), so a position it has not "
    "moved has an area of exactly 0: when nothing has moved, every position ties and the rank is 0.5, not a draw "
    "of the noise. A faster search (dam_lr 0.05) random-walks unlearned positions below {t:g} too, but that "
    "noise treats the diagonal like any other position, so it leaves the rank centred on 0.5. And the area "
    "counts both how early and how deep a position fell, whatever the snapshot interval. Beside it, "
    "not deciding: the diagonal's rank by final keep probability (the fraction of the other positions that end "
    "lower, same ties and intervals), which noise orders when the search has hardly moved.")


def claim_diagonal_dropped_first(p: dict, cfg: dict, rng: np.random.Generator) -> list[str]:
    lines = ["## 1. The diagonal is the least important attention position during pretraining", "",
             CLAIM_1_METHOD.format(t=stats.DROPPED), ""]  # fmt: skip
    runs = searches_of(p)
    if not runs:
        return lines + verdict_line(stats.INCONCLUSIVE, "no DAM search in this config, nothing was measured.")
    B, n_seeds, t = cfg["bootstrap_samples"], len(seeds_of(p)), stats.DROPPED
    ranks = {run: diagonal_ranks(p, run) for run in runs}
    # the runs share their seeds, a block: one pick of seeds per draw serves every run (stats.pooled_mean_draws),
    # drawn before the per-run lines so that it does not depend on how many runs there are
    draws = stats.pooled_mean_draws([by_area for by_area, _, _ in ranks.values()], B, rng)
    means, heads = [], 0
    for run, (by_area, by_final, info) in ranks.items():
        # one run: the pooled draws are its own, so its line and the verdict print one interval, not two draws
        own = draws if len(ranks) == 1 else stats.nested_mean_draws(by_area, B, rng)
        lo, hi = stats.percentile_interval(own, bounds=(0.0, 1.0))
        run_verdict = stats.drop_first_verdict(lo, hi)
        if n_seeds == 1:  # the verdict line gates it; this line must not read as a verdict of its own
            run_verdict = f"the heads alone: {run_verdict}; one seed cannot decide"
        f_lo, f_hi = stats.percentile_interval(stats.nested_mean_draws(by_final, B, rng), bounds=(0.0, 1.0))
        means.append(by_area.mean())
        heads += by_area.size
        where = " (mean of its entries)" if variants_of(p)[run]["kind"] == "dam_u" else ""
        lines.append(f"- {run} ({info['steps']} steps, {n_seeds} seed(s) x {by_area.shape[1]} heads): rank by area "
                     f"below {t:g} {by_area.mean():.3f}, 95 % interval [{lo:.3f}, {hi:.3f}] "
                     f"({run_verdict}); rank by final keep probability {by_final.mean():.3f}, "
                     f"95 % interval [{f_lo:.3f}, {f_hi:.3f}]; final keep probability, mean over head-seeds: "
                     f"diagonal{where} {info['diag_end']:.3f}, other positions {info['other_end']:.3f}; the diagonal "
                     f"ended below {t:g} in {info['below']} of {info['heads']} head-seeds and was dropped most "
                     f"(rank 0: every other position had a smaller area) in {int((by_area == 0).sum())}. Binarized "
                     f"masks: {info['fallback']} of {info['rows']} query rows had no key at p >= 0.5 and keep their most "
                     f"probable key instead.")  # fmt: skip
    lo, hi = stats.percentile_interval(draws, bounds=(0.0, 1.0))
    raw = stats.drop_first_verdict(lo, hi)
    verdict = seed_gated(raw, n_seeds)
    seeds = (f"{n_seeds} seeds shared by the runs (resampled jointly for every run, each as the mean of its "
             "heads)" if n_seeds > 1 else
             "1 seed per run: the interval resamples heads only and ignores seed variance")
    return lines + [""] + verdict_line(verdict, f"mean rank of the diagonal by area below {t:g} "
                                                f"{float(np.mean(means)):.3f} (no preference: 0.5), 95 % interval "
                                                f"[{lo:.3f}, {hi:.3f}]; {len(runs)} DAM run(s), {heads} head-seeds; "
                                                f"{seeds}{gated_note(raw, verdict, 'the heads')}.")  # fmt: skip


# ------------------------------------------------------------------------------------------ claim 2


def _evaluated(variant: dict) -> str:
    """A variant's validation MLM accuracy as the tables hold it, or why there is none (eval_examples 0)."""
    return "not evaluated" if variant.get("val_mlm_acc") is None else f"{variant['val_mlm_acc']}"


def claim_no_diagonal_matches_bert(scores: Scores, metrics: dict, cfg: dict, rng: np.random.Generator,
                                   versus: dict[int, tuple[float, float, float]]) -> list[str]:
    """versus: dense_vs_constant. A match on a task where dense does not beat the best constant predictor shows
    nothing (a model that learned nothing there matches dense too): such columns are left out, as equivalence
    trials require the active control to beat placebo (assay sensitivity)."""
    margin = cfg["equivalence_margin"]
    lines = ["## 2. BERT without diagonal attention matches BERT", "",
             f"Effect = no_diagonal - dense on the average score over the informative task columns (GLUE, SQuAD, "
             f"SWAG shapes), paired on the eval examples and the seeds. Supported if its 95 % interval lies inside "
             f"+-{margin:g} points (config report.equivalence_margin), contradicted if it lies entirely outside, "
             f"inconclusive otherwise.", ""]  # fmt: skip
    if not set(BASELINES) <= set(scores.variants):
        return lines + verdict_line(stats.INCONCLUSIVE, "needs both `dense` and `no_diagonal` in the config.")
    columns, flat = informative(scores)
    kept = usable(scores, "dense", "no_diagonal", columns)
    both_constant = [scores.columns[c].name for c in columns if c not in kept]
    unlearned = [scores.columns[c].name for c in kept if versus[c][1] <= 0]
    columns = [c for c in kept if versus[c][1] > 0]
    if both_constant:
        lines += [f"- Left out: {', '.join(both_constant)}, where dense and no_diagonal both predict one constant "
                  "output in every seed.", ""]  # fmt: skip
    if unlearned:
        lines += [f"- Left out: {', '.join(unlearned)}, where dense does not beat the best constant predictor (its "
                  "95 % interval above): a match there would show nothing.", ""]  # fmt: skip
    if not columns:
        return lines + verdict_line(stats.INCONCLUSIVE, "no task column separates the models: every variant scores "
                                                        "the same, both predict a constant, or dense does not beat "
                                                        "the best constant predictor.")  # fmt: skip
    effect = compare(scores, "dense", "no_diagonal", columns, rng)
    per_task = [compare(scores, "dense", "no_diagonal", [c], rng) for c in columns]
    v = metrics["variants"]
    lines += ["- Per column: " + ", ".join(f"{e.columns[0]} {e.point:+.1f} [{e.lo:+.1f}, {e.hi:+.1f}]"
                                           for e in per_task) + ".",
              f"- Pretraining validation MLM accuracy (mean over seeds): dense {_evaluated(v['dense'])}, "
              f"no_diagonal {_evaluated(v['no_diagonal'])}.", ""]  # fmt: skip
    raw = stats.equivalence_verdict(effect.lo, effect.hi, margin)
    verdict = seed_gated(raw, effect.seeds)
    return lines + verdict_line(verdict, f"effect {effect.numbers()} (margin +-{margin:g}); {effect.basis()}"
                                         f"{gated_note(raw, verdict)}.")


# ------------------------------------------------------------------------------------------ claim 3


def claim_dam_beats_designed(scores: Scores, p: dict, cfg: dict, rng: np.random.Generator) -> list[str]:
    similar = cfg["similar_sparsity"]
    glue = any(c.glue and c.averaged for c in scores.columns)
    lines = ["## 3. DAM masks beat hand-designed sparse masks at similar or higher sparsity", "",
             "Effect = DAM - hand-designed mask on the " + ("GLUE average (the GLUE-shaped proxy tasks)" if glue and
             p["proxy"] else "GLUE average (the paper's 9 columns)" if glue else "average score (no GLUE-shaped "
             "task configured)") + f" over its informative columns, for every hand-designed mask at most "
             f"{similar:g} sparsity points sparser than the DAM mask (config report.similar_sparsity; sparsity = "
             "mean over seeds); DAM rows are the searched models fine-tuned with their binarized masks (the "
             "official protocol). A pair is supported if its 95 % interval lies above 0, contradicted below 0. "
             "The claim is supported if more than half of the pairs are supported and none is contradicted, "
             "contradicted if more than half are contradicted, inconclusive otherwise.", ""]  # fmt: skip
    kinds = {name: v["kind"] for name, v in variants_of(p).items()}
    designed = [v for v in scores.variants if kinds[v] == "fixed" and v not in BASELINES]
    if not searches_of(p) or not designed:
        return lines + verdict_line(stats.INCONCLUSIVE, "needs DAM runs and hand-designed masks in the config.")
    columns, flat = informative(scores, glue_only=glue)
    if not columns:
        return lines + verdict_line(stats.INCONCLUSIVE, f"every variant and seed scores the same on every task "
                                                        f"({', '.join(flat)}): nothing separates the masks.")
    sparsity = dict(zip(scores.variants, scores.sparsity.mean(axis=1)))
    verdicts, used = [], set()
    for run in searches_of(p):
        rivals = [m for m in designed if sparsity[m] <= sparsity[run] + similar]
        lines.append(f"- {run} (sparsity {sparsity[run]:.1f} %): " + ("no hand-designed mask at similar or higher "
                     "sparsity." if not rivals else f"{len(rivals)} hand-designed mask(s) at most {similar:g} points "
                     "sparser:"))  # fmt: skip
        for rival in rivals:
            pair = usable(scores, rival, run, columns)
            if not pair:
                verdicts.append(stats.INCONCLUSIVE)
                lines.append(f"  - vs {rival} ({sparsity[rival]:.1f} %): both predict a constant on every column "
                             f"-> {verdicts[-1]}")  # fmt: skip
                continue
            effect = compare(scores, rival, run, pair, rng)
            used.update(pair)
            raw = stats.superiority_verdict(effect.lo, effect.hi)
            verdicts.append(seed_gated(raw, len(scores.seeds)))
            lines.append(f"  - vs {rival} ({sparsity[rival]:.1f} %): {effect.numbers()} on {', '.join(effect.columns)} "
                         f"-> {verdicts[-1]}{gated_note(raw, verdicts[-1])}")  # fmt: skip
    if not verdicts:
        return lines + [""] + verdict_line(stats.INCONCLUSIVE, "the learned masks are less sparse than every "
                                                               "hand-designed mask: no comparison at similar or "
                                                               "higher sparsity.")  # fmt: skip
    counts = {k: verdicts.count(k) for k in (stats.SUPPORTED, stats.CONTRADICTED, stats.INCONCLUSIVE)}
    basis = (Effect(0.0, 0.0, 0.0, len(scores.seeds), [scores.columns[c].name for c in sorted(used)],
                    int(scores.examples[sorted(used)].sum())).basis() if used else "no pair has a usable column")
    detail = (f"{counts[stats.SUPPORTED]} of {len(verdicts)} pairs supported, {counts[stats.CONTRADICTED]} "
              f"contradicted, {counts[stats.INCONCLUSIVE]} inconclusive (each effect with its 95 % interval above); "
              f"{basis}.")  # fmt: skip
    return lines + [""] + verdict_line(stats.majority_verdict(verdicts), detail)


# ------------------------------------------------------------------------------------------ findings.md


def data_line(metrics: dict) -> list[str]:
    """Which data the fine-tunings read (the tables' `data`, report.task_data): each hub repository at its commit,
    local task files by folder (their sha256 are in every fine-tuning's metrics.json)."""
    groups: dict[str, list[str]] = {}
    for task, record in (metrics.get("data") or {}).items():
        if "sha256" in record:
            where = f"local files in {Path(record['path']).parent}/ (sha256 in each fine-tuning's metrics.json)"
        elif record.get("revision"):
            where = f"{record['path']} at commit {record['revision'][:12]}"
        else:
            where = f"{record['path']} (no commit)"
        groups.setdefault(where, []).append(task)
    if not groups:
        return []
    return ["Task data, the same for every variant and seed: "
            + "; ".join(f"{', '.join(tasks)} from {where}" for where, tasks in groups.items()) + ".", ""]


def learned_line(p: dict, seeds) -> list[str]:
    """How much the dense model learned, beside the floor of always predicting the most frequent masked token:
    fine-tuning differences between masks mean little while pretraining sits at that floor."""
    if "dense" not in variants_of(p):
        return []
    runs = [read_json(pretrained_dir(p, "dense", s) / "summary.json") for s in seeds]
    if not all("val_mlm_acc" in r and "val_unigram_mlm_acc" in r for r in runs):
        return []
    mlm = 100 * np.mean([r["val_mlm_acc"] for r in runs])
    unigram = 100 * np.mean([r["val_unigram_mlm_acc"] for r in runs])
    nsp = 100 * np.mean([r.get("val_nsp_acc", np.nan) for r in runs])
    ratio = f"{mlm / unigram:.1f}x" if unigram > 0 else "no ratio: the floor is 0"  # a toy run's few examples
    return [f"What pretraining learned: dense validation MLM accuracy {mlm:.1f} % (mean over seeds) vs {unigram:.1f} % "
            f"for always predicting the most frequent masked token ({ratio}); NSP {nsp:.1f} % "
            f"(chance 50 %).", ""]  # fmt: skip


def dense_vs_constant(scores: Scores, rng: np.random.Generator) -> dict[int, tuple[float, float, float]]:
    """Per averaged column: the dense model's score minus the best constant predictor's (`report.
    constant_predictions`, chosen in hindsight with the eval labels), and its 95 % interval over seeds and eval
    examples, as (point, lo, hi). Empty without dense."""
    if "dense" not in scores.variants:
        return {}
    d, versus = scores.index("dense"), {}
    for c, col in enumerate(scores.columns):
        if col.averaged:
            diff = scores.draws[d][:, c] - scores.baseline_draws[c]  # (S, B)
            lo, hi = interval(stats.seed_level(diff, rng), [col], difference=True)
            versus[c] = (scores.points[d][:, c].mean() - scores.baseline_points[c], lo, hi)
    return versus


def tasks_line(scores: Scores, versus: dict[int, tuple[float, float, float]]) -> list[str]:
    """Can the tasks tell anything? Per task, dense_vs_constant: a task on which dense does not beat the best
    constant predictor cannot separate the masks either."""
    if not versus:
        return []
    d = scores.index("dense")
    lines = ["## Can the tasks separate anything? Dense vs the best constant predictor", "",
             "Per task: the dense model's score minus that of the best single output (label, mean score or "
             "\"no answer\") chosen with the eval labels, with its 95 % interval (seeds and eval examples resampled).",
             ""]  # fmt: skip
    for c, (point, lo, hi) in versus.items():
        col = scores.columns[c]
        lines.append(f"- {col.name} ({col.metric}): dense {scores.points[d][:, c].mean():.1f} vs constant "
                     f"{scores.baseline_points[c]:.1f}: {point:+.1f} points, 95 % interval [{lo:+.1f}, {hi:+.1f}]: "
                     + ("beats it" if lo > 0 else "does not beat it"))  # fmt: skip
    beaten = sum(lo > 0 for _, lo, _ in versus.values())
    lines += ["", f"Dense beats the constant predictor on {beaten} of {len(versus)} tasks.", ""]
    return lines


def write_findings(p: dict, metrics: Path, bootstrap: Path, out: Path) -> str:
    """findings.md from the tables' metrics.json and bootstrap.npz and the DAM searches' files (paths in `p`)."""
    scores = Scores.load(bootstrap)
    metrics = read_json(metrics)
    cfg = settings(p)
    n_seeds = len(scores.seeds)
    lines = ["# Findings: the paper's three claims, checked at this run's scale", "",
             f"Scale: {p['scale']}. Pretraining seeds: {', '.join(map(str, scores.seeds))} ({n_seeds} per variant), "
             "each model fine-tuned once per task with the task's fine-tuning seed. "
             + ("All downstream tasks are PROXY tasks built from the corpus, not GLUE/SQuAD/SWAG. " if p["proxy"] else "")
             + "Scores in percent, from results/tables/. Every verdict below follows from the effect size and its "
             f"95 % interval ({cfg['bootstrap_samples']} bootstrap draws: "
             + ("seeds and eval examples resampled, sparsebert/stats.py" if n_seeds > 1 else
                "eval examples resampled; with one seed the intervals ignore seed variance")
             + ") by the rule stated with it.", ""]  # fmt: skip
    lines += data_line(metrics)
    lines += learned_line(p, scores.seeds)
    # A seeded stream per section: how many draws one takes (its method, its number of runs) moves no other's bounds.
    seed = cfg["bootstrap_seed"]
    versus = dense_vs_constant(scores, np.random.default_rng([seed, 30_000]))
    lines += tasks_line(scores, versus)
    lines += claim_diagonal_dropped_first(p, cfg, np.random.default_rng([seed, 20_000]))
    lines += claim_no_diagonal_matches_bert(scores, metrics, cfg, np.random.default_rng([seed, 20_001]), versus)
    lines += claim_dam_beats_designed(scores, p, cfg, np.random.default_rng([seed, 20_002]))
    _, flat = informative(scores)
    if flat:
        constant = [name for name in flat if scores.constant[:, :, scores.col(name)].all()]
        why = (f"; on {', '.join(constant)} every fine-tuned model predicts one constant output" if constant else "")
        lines += [f"Note: every variant and seed scores the same on {', '.join(flat)}{why}. These tasks do not "
                  "separate the variants at this scale, so claims 2 and 3 rest on the other tasks only.", ""]  # fmt: skip
    text = "\n".join(lines)
    atomic_write_text(out, text)
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", required=True, help="JSON/YAML: the run as `sparsebert tables` gets it")
    parser.add_argument("--metrics", type=Path, required=True, help="the tables' metrics.json")
    parser.add_argument("--bootstrap", type=Path, required=True, help="the tables' bootstrap.npz")
    parser.add_argument("--out", type=Path, required=True, help="the findings.md to write")


def run(args: argparse.Namespace) -> None:
    print(write_findings(load_params(args.params), args.metrics, args.bootstrap, args.out))
