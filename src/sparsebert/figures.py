"""`sparsebert figures`: the paper's figures from a finished run (PNG + PDF each, under --out).

    masks             every fixed mask variant and the learned DAM masks of the first seed, one panel per head
                      (with the rows where binarization fell back on the most probable key)
    importance        importance analysis: keep probability of the diagonal vs the other positions over the
                      DAM search's steps, every head of every seed (the paper: the diagonal is dropped first)
    dam_u_snapshots   DAM_u keep probabilities (mean over heads, first seed) at snapshots during the search
    score_vs_sparsity average downstream score (mean over seeds, 95 % interval) vs measured sparsity per
                      variant, beside the paper's points
    loss_curves       pretraining loss per variant, mean over seeds (+ loss_curves.csv, wide, for `dvc plots`)
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from sparsebert import masks, paper  # noqa: E402
from sparsebert.io import load_params  # noqa: E402
from sparsebert.report import pretrained_dir, seeds_of, split_diagonal, variant_kind  # noqa: E402

log = logging.getLogger(__name__)
KIND_STYLE = {"fixed": ("tab:blue", "o"), "dam_s": ("tab:red", "s"), "dam_u": ("tab:green", "^")}


def save(fig, out: Path, name: str, tight: bool = True) -> None:
    if tight:
        fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out / f"{name}.{ext}", dpi=130)
    plt.close(fig)


def mask_panels(results: Path, p: dict, out: Path) -> None:
    """Row(s) of fixed masks (identical across heads), then one row of heads per learned DAM mask."""
    L = p["seq_len"]
    # In the order of the variants (the params JSON has sorted keys).
    fixed = {name: masks.build_mask(name, L, **p["masks"][name]) for name in p["variants"] if name in p["masks"]}
    learned, fallback, seed = {}, {}, seeds_of(p)[0]
    for run in p["dam_runs"]:
        folder = pretrained_dir(results, p, run, seed)
        learned[run] = load_file(str(folder / "mask.safetensors"))["keep"].bool()  # (H, L, L)
        # Rows with no key at p >= 0.5, given their most probable key by binarization (DAM.binarize).
        fallback[run] = json.loads((folder / "summary.json").read_text()).get("fallback_rows") or []
    cols = max([5] + [k.shape[0] for k in learned.values()])
    fixed_rows = -(-len(fixed) // cols)
    rows = fixed_rows + len(learned)
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, m) in zip(axes.flat, fixed.items()):
        ax.imshow((m[0] if m.dim() == 3 else m).numpy(), cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{name}\n{100 * masks.sparsity(m):.1f}% sparse", fontsize=7)
    for r, (run, keep) in enumerate(learned.items(), start=fixed_rows):
        for h in range(keep.shape[0]):
            ax = axes[r, h]
            ax.imshow(keep[h].numpy(), cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
            rows = fallback[run][h] if h < len(fallback[run]) else 0
            note = f", {rows} fallback rows" if rows else ""
            ax.set_title(f"{run} s{seed} head {h}\n{100 * masks.sparsity(keep[h]):.1f}% sparse{note}", fontsize=7)
    fig.suptitle(f"Attention masks at L={L} (black = may attend); learned DAM masks per head, seed {seed}\n"
                 "(a fallback row had no key at p >= 0.5 and keeps its most probable one)", fontsize=8)
    save(fig, out, "masks")


def importance(results: Path, p: dict, out: Path) -> None:
    runs = p["dam_runs"]
    n = max(1, len(runs))
    fig, axes = plt.subplots(1, n, figsize=(max(6.0, 3.6 * n), 3.2), squeeze=False)
    if not runs:
        axes[0, 0].text(0.5, 0.5, "no DAM search configured", ha="center", va="center")
        axes[0, 0].axis("off")
    for ax, run in zip(axes[0], runs):
        snaps = [np.load(pretrained_dir(results, p, run, seed) / "snapshots.npz") for seed in seeds_of(p)]
        steps = snaps[0]["steps"]
        # Every seed's heads side by side: (T, seeds x H, L) offsets (dam_s) or (T, seeds x H, L, L) (dam_u).
        keep = np.concatenate([snap["keep_prob"] for snap in snaps], axis=1)
        diag, off = split_diagonal(keep, variant_kind(run))
        diag, off_mean = diag.mean(-1) if diag.ndim == 3 else diag, off.mean(-1)  # (T, seeds x H)
        for h in range(diag.shape[1]):
            ax.plot(steps, diag[:, h], color="tab:red", lw=1, alpha=0.8, label="diagonal" if h == 0 else None)
            ax.plot(steps, off_mean[:, h], color="tab:blue", lw=1, alpha=0.8,
                    label="off-diagonal (mean)" if h == 0 else None)
        lo, hi = off.min(-1).min(-1), off.max(-1).max(-1)
        ax.fill_between(steps, lo, hi, color="tab:blue", alpha=0.12, label="off-diagonal range")
        ax.axhline(0.5, color="grey", lw=0.5, ls="--")
        ax.set(title=f"{run} ({len(snaps)} seed(s))", xlabel="pretraining step", ylabel="keep probability")
        ax.legend(fontsize=7)
    fig.suptitle("Importance analysis: keep probability during the DAM search (one line per head and seed)", fontsize=9)
    save(fig, out, "importance")


def dam_u_snapshots(results: Path, p: dict, out: Path, shown: int = 5) -> None:
    runs = [r for r in p["dam_runs"] if variant_kind(r) == "dam_u"]
    fig, axes = plt.subplots(max(1, len(runs)), shown, figsize=(2.2 * shown, 2.3 * max(1, len(runs))), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if not runs:
        axes[0, 0].text(0.5, 0.5, "no DAM_u search configured", ha="left", va="center")
    seed = seeds_of(p)[0]
    snaps = {run: np.load(pretrained_dir(results, p, run, seed) / "snapshots.npz") for run in runs}
    # A colour scale centred on the initial 0.5 and as wide as the largest move: short searches move little.
    dev = max([float(np.abs(s["keep_prob"].mean(1) - 0.5).max()) for s in snaps.values()] + [1e-3])
    for row, (run, snap) in zip(axes, snaps.items()):
        picks = np.unique(np.linspace(0, len(snap["steps"]) - 1, shown).round().astype(int))
        for ax, i in zip(row, picks):
            im = ax.imshow(snap["keep_prob"][i].mean(0), cmap="RdBu", vmin=0.5 - dev, vmax=0.5 + dev)
            ax.set_title(f"{run} s{seed}\nstep {snap['steps'][i]}", fontsize=7)
    fig.subplots_adjust(left=0.02, right=0.86, top=0.88, bottom=0.04, hspace=0.35)
    if runs:
        cax = fig.add_axes([0.89, 0.15, 0.015, 0.7])
        fig.colorbar(im, cax=cax, label="keep probability (mean over heads)")
    save(fig, out, "dam_u_snapshots", tight=False)


def score_vs_sparsity(results: Path, p: dict, out: Path) -> None:
    metrics = json.loads((results / "tables" / "metrics.json").read_text())
    fig, (ours, theirs) = plt.subplots(1, 2, figsize=(10, 4))
    for v, m in metrics["variants"].items():
        if m["avg"] is None:
            continue
        color, marker = KIND_STYLE[m["kind"]]
        lo, hi = m.get("intervals", {}).get("avg", [None, None])
        if lo is not None and hi is not None:  # 95 % interval over seeds and eval examples
            ours.errorbar(m["sparsity"], m["avg"], yerr=[[m["avg"] - lo], [hi - m["avg"]]], color=color, lw=0.8)
        ours.scatter(m["sparsity"], m["avg"], color=color, marker=marker)
        ours.annotate(v, (m["sparsity"], m["avg"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    what = "PROXY tasks" if metrics["proxy"] else "GLUE/SQuAD/SWAG dev"
    ours.set(title=f"this run ({what})", xlabel="measured sparsity (%)", ylabel="average score (%)")
    for v, row in paper.GLUE.items():
        color, marker = KIND_STYLE[variant_kind(v)]
        theirs.scatter(row["sparsity"], row["avg"], color=color, marker=marker)
        theirs.annotate(v, (row["sparsity"], row["avg"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    theirs.set(title="paper (published, BERT-base, GLUE avg)", xlabel="sparsity (%)", ylabel="GLUE average (%)")
    for k, (color, marker) in KIND_STYLE.items():
        ours.scatter([], [], color=color, marker=marker, label={"fixed": "hand-designed / dense"}.get(k, k.upper()))
    ours.legend(fontsize=7)
    fig.suptitle(f"Score vs sparsity. Ours: {p['scale']}", fontsize=8)
    save(fig, out, "score_vs_sparsity")


def loss_curves(results: Path, p: dict, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    curves = {}
    for v in p["variants"]:
        per_seed = []
        for seed in seeds_of(p):
            log_file = pretrained_dir(results, p, v, seed) / "log.jsonl"
            records = [json.loads(line) for line in log_file.read_text().splitlines() if line]
            # MLM + NSP without a DAM search's L1 term, so that every curve measures the same thing.
            per_seed.append(pd.Series({r["step"]: r["mlm_loss"] + r["nsp_loss"] for r in records}))
        curve = pd.concat(per_seed, axis=1).mean(axis=1).rename(v)  # mean over seeds
        curves[v] = curve
        fixed = variant_kind(v) == "fixed"
        color, _ = KIND_STYLE[variant_kind(v)]
        ax.plot(curve.index, curve.values, lw=1, label=v, color=None if fixed else color, ls="-" if fixed else "--")
    ax.set(xlabel="step", ylabel="training loss (MLM + NSP)",
           title=f"Pretraining loss per variant (mean over {len(seeds_of(p))} seed(s))")
    ax.legend(fontsize=6, ncol=2)
    save(fig, out, "loss_curves")
    table = pd.DataFrame(curves)
    table.index.name = "step"
    table.to_csv(out / "loss_curves.csv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, default=Path("results"), help="the run's results directory")
    parser.add_argument("--params", required=True, help="JSON/YAML: scale, seq_len, masks, dam_runs, variants")
    parser.add_argument("--out", type=Path, required=True, help="directory for the PNG/PDF files")


def run(args: argparse.Namespace) -> None:
    p = load_params(args.params)
    args.out.mkdir(parents=True, exist_ok=True)
    for draw in (mask_panels, importance, dam_u_snapshots, score_vs_sparsity, loss_curves):
        draw(args.results, p, args.out)
        log.info("figures: %s", draw.__name__)
