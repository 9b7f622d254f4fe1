"""`sparsebert figures`: the paper's figures from a finished run (PNG + PDF each, under --out).

    masks             every fixed mask variant and the learned DAM masks of the first seed, one panel per head
                      (with the rows where binarization fell back on the most probable key)
    importance        importance analysis: keep probability of the diagonal vs the other positions over the
                      DAM search's steps, every head of every seed (the paper: the diagonal is dropped first)
    keep_trajectories claim 1: per DAM run and head, the diagonal's keep probability (one bold line per seed)
                      beside bands for offsets 1-8 and beyond 8 (DAM_u: per-offset means), over the steps
    dam_u_snapshots   DAM_u keep probabilities (mean over heads, first seed) at snapshots during the search
    score_vs_sparsity GLUE average (mean over seeds, 95 % interval) vs measured sparsity per variant, beside
                      the paper's GLUE averages (a run without GLUE tasks: its other tasks' average, so labelled)
    loss_curves       pretraining loss per variant, mean over seeds (+ loss_curves.csv, wide, for `dvc plots`)
"""

from __future__ import annotations

import argparse
import json
import logging
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from sparsebert import masks, paper  # noqa: E402
from sparsebert.dam import mean_per_head, split_diagonal  # noqa: E402
from sparsebert.io import load_params  # noqa: E402
from sparsebert.report import pretrained_dir, searches_of, seeds_of, variants_of  # noqa: E402
from sparsebert.stats import DROPPED  # noqa: E402  (findings.md's threshold, drawn in keep_trajectories)
from sparsebert.variants import FIXED  # noqa: E402

log = logging.getLogger(__name__)
KIND_STYLE = {"fixed": ("tab:blue", "o"), "dam_s": ("tab:red", "s"), "dam_u": ("tab:green", "^")}


def suptitle(fig, text: str, fontsize: float) -> None:
    """The figure's title, wrapped to the figure's width: a figure with few panels (a smoke run's two heads) is
    narrower than its longest titles. An average character of this font is about 0.55 of its size wide."""
    chars = int(fig.get_figwidth() * 72 / (0.55 * fontsize))
    fig.suptitle(textwrap.fill(text, width=chars), fontsize=fontsize)


def save(fig, out: Path, name: str, tight: bool = True) -> None:
    if tight:
        fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out / f"{name}.{ext}", dpi=130)
    plt.close(fig)


def mask_grid(blocks: list[list[tuple[str, torch.Tensor]]], cols: int, title: str, fontsize: int = 7):
    """Masks as panels (black = may attend), from blocks of (label, (L, L) keep-mask): a block fills rows of
    `cols` panels, and every block starts a row of its own. The one mask plotter (figures and `sparsebert masks`)."""
    n_rows = [-(-len(block) // cols) for block in blocks]
    fig, axes = plt.subplots(sum(n_rows), cols, figsize=(1.7 * cols, 2.4 * sum(n_rows)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for block, first_row in zip(blocks, np.cumsum([0] + n_rows)):
        for i, (label, keep) in enumerate(block):
            ax = axes[first_row + i // cols, i % cols]
            ax.imshow(keep.numpy(), cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(label, fontsize=fontsize)
    suptitle(fig, title, fontsize=8)
    return fig


def mask_panel(name: str, keep: torch.Tensor, note: str = "") -> tuple[str, torch.Tensor]:
    """A panel of `mask_grid`: the first head of an (H, L, L) mask, titled with its sparsity (over all heads)."""
    return f"{name}\n{100 * masks.sparsity(keep):.1f}% sparse{note}", keep[0] if keep.dim() == 3 else keep


def mask_panels(p: dict, out: Path) -> None:
    """Row(s) of fixed masks (identical across heads), then one row of heads per learned DAM mask."""
    L, seed = p["seq_len"], seeds_of(p)[0]
    fixed = [mask_panel(name, masks.build_mask(v["mask"], L, **v["params"]))
             for name, v in variants_of(p).items() if v["role"] == FIXED]  # fmt: skip
    learned = []
    for run in searches_of(p):
        folder = pretrained_dir(p, run, seed)
        keep = load_file(str(folder / "mask.safetensors"))["keep"].bool()  # (H, L, L)
        # Rows with no key at p >= 0.5, given their most probable key by binarization (DAM.binarize).
        fallback = json.loads((folder / "summary.json").read_text()).get("fallback_rows") or []
        notes = [f", {fallback[h]} fallback rows" if h < len(fallback) and fallback[h] else "" for h in range(len(keep))]
        learned.append([mask_panel(f"{run} s{seed} head {h}", keep[h], notes[h]) for h in range(len(keep))])
    cols = max([5] + [len(heads) for heads in learned])
    fig = mask_grid([fixed, *learned], cols, f"Attention masks at L={L} (black = may attend); learned DAM masks per "
                    f"head, seed {seed}\n(a fallback row had no key at p >= 0.5 and keeps its most probable one)")
    save(fig, out, "masks")


def importance(p: dict, out: Path) -> None:
    runs = searches_of(p)
    n = max(1, len(runs))
    fig, axes = plt.subplots(1, n, figsize=(max(6.0, 3.6 * n), 3.2), squeeze=False)
    if not runs:
        axes[0, 0].text(0.5, 0.5, "no DAM search configured", ha="center", va="center")
        axes[0, 0].axis("off")
    for ax, run in zip(axes[0], runs):
        snaps = [np.load(pretrained_dir(p, run, seed) / "snapshots.npz") for seed in seeds_of(p)]
        steps = snaps[0]["steps"]
        # Every seed's heads side by side: (T, seeds x H, L) offsets (dam_s) or (T, seeds x H, L, L) (dam_u).
        keep = np.concatenate([snap["keep_prob"] for snap in snaps], axis=1)
        diag, off = split_diagonal(keep, variants_of(p)[run]["kind"])
        diag, off_mean = mean_per_head(diag, off)  # (T, seeds x H) each
        for h in range(diag.shape[1]):
            ax.plot(steps, diag[:, h], color="tab:red", lw=1, alpha=0.8, label="diagonal" if h == 0 else None)
            ax.plot(steps, off_mean[:, h], color="tab:blue", lw=1, alpha=0.8,
                    label="off-diagonal (mean)" if h == 0 else None)
        lo, hi = off.min(-1).min(-1), off.max(-1).max(-1)
        ax.fill_between(steps, lo, hi, color="tab:blue", alpha=0.12, label="off-diagonal range")
        ax.axhline(0.5, color="grey", lw=0.5, ls="--")
        ax.set(title=f"{run} ({len(snaps)} seed(s))", xlabel="pretraining step", ylabel="keep probability")
        ax.legend(fontsize=7)
    suptitle(fig, "Importance analysis: keep probability during the DAM search (one line per head and seed)", 9)
    save(fig, out, "importance")


def per_offset(keep: np.ndarray, kind: str) -> np.ndarray:
    """Keep probabilities per offset |i - j| (..., L): DAM_s's are that already; DAM_u's (..., L, L) are averaged
    over the entries of each offset (the diagonal, offset 0, is the mean of the L diagonal entries)."""
    if kind == "dam_s":
        return keep
    L = keep.shape[-1]
    i, j = np.indices((L, L))
    return np.stack([keep[..., np.abs(i - j) == k].mean(axis=-1) for k in range(L)], axis=-1)


NEAR = 8  # offsets 1-8: the neighbourhood that local masks (longformer's window) keep, drawn as its own band


def keep_trajectories(p: dict, out: Path) -> None:
    """Claim 1's evidence as it unfolded: per DAM run (row) and head (column), the diagonal's keep probability
    (bold, one line per seed) beside bands (min to max over offsets and seeds) with mean lines for offsets 1-8 and
    for offsets beyond 8, over the search's steps; the 0.25 line below which findings.md counts a position as
    dropped (stats.DROPPED), and the initial 0.5."""
    runs = searches_of(p)
    heads = max([np.load(pretrained_dir(p, r, seeds_of(p)[0]) / "snapshots.npz")["keep_prob"].shape[1] for r in runs]
                or [1])  # fmt: skip
    fig, axes = plt.subplots(max(1, len(runs)), heads, figsize=(2.9 * heads, 2.5 * max(1, len(runs))), squeeze=False)
    if not runs:
        axes[0, 0].text(0.5, 0.5, "no DAM search configured", ha="center", va="center")
        axes[0, 0].axis("off")
    for row, run in zip(axes, runs):
        kind = variants_of(p)[run]["kind"]
        snaps = [np.load(pretrained_dir(p, run, seed) / "snapshots.npz") for seed in seeds_of(p)]
        steps = snaps[0]["steps"]
        offsets = np.stack([per_offset(snap["keep_prob"], kind) for snap in snaps])  # (S, T, H, L)
        for h, ax in enumerate(row):
            near, far = offsets[:, :, h, 1 : NEAR + 1], offsets[:, :, h, NEAR + 1 :]  # (S, T, offsets)
            for band, color, label in ((far, "tab:blue", f"offsets > {NEAR}"), (near, "tab:green", f"offsets 1-{NEAR}")):
                if band.shape[-1]:
                    ax.fill_between(steps, band.min(axis=(0, 2)), band.max(axis=(0, 2)), color=color, alpha=0.18)
                    ax.plot(steps, band.mean(axis=(0, 2)), color=color, lw=1, label=f"{label} (mean, range)")
            for s in range(len(snaps)):
                ax.plot(steps, offsets[s, :, h, 0], color="tab:red", lw=2.2, label="diagonal" if s == 0 else None)
            ax.axhline(DROPPED, color="black", lw=0.6, ls="--")
            ax.axhline(0.5, color="grey", lw=0.5, ls=":")
            ax.set(ylim=(0, 1), title=f"{run} head {h}", xlabel="search step")
            ax.title.set_fontsize(8)
        row[0].set_ylabel("keep probability")
        row[0].legend(fontsize=6, loc="upper right")
    what = "DAM_u: per-offset means of the entries" if any(variants_of(p)[r]["kind"] == "dam_u" for r in runs) else ""
    suptitle(fig, f"Keep probability of the diagonal (bold, one line per seed) vs the other offsets, {len(seeds_of(p))} "
             f"seed(s); dashed: {DROPPED:g}, below which a position counts as dropped. {what}", 8)
    save(fig, out, "keep_trajectories")


def dam_u_snapshots(p: dict, out: Path, shown: int = 5) -> None:
    runs = [r for r in searches_of(p) if variants_of(p)[r]["kind"] == "dam_u"]
    fig, axes = plt.subplots(max(1, len(runs)), shown, figsize=(2.2 * shown, 2.3 * max(1, len(runs))), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if not runs:
        axes[0, 0].text(0.5, 0.5, "no DAM_u search configured", ha="left", va="center")
    seed = seeds_of(p)[0]
    snaps = {run: np.load(pretrained_dir(p, run, seed) / "snapshots.npz") for run in runs}
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


# Where a point's name may go, in points from the point: the four diagonals, then right, left, above, below,
# at growing distances. The nearest ring clears a scatter marker (6 points wide at matplotlib's default size).
LABEL_OFFSETS = [(d * dx, d * dy) for d in (4, 12, 20, 28)
                 for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1.5), (0, -1.5))]
MARKER_HALF_WIDTH = 3.0  # points


def label_points(ax, named: list[tuple[str, float, float]], fontsize: float = 7) -> list:
    """Name each point (name, x, y) beside it, so that no name covers another name, a marker, the legend or the
    axes' frame: in the order given, each name takes the first of LABEL_OFFSETS where its box is free (one
    farther out than the nearest ring gets a thin leader line), or else the one where it overlaps least. Points
    of equal scores (a small run's variants often tie) so get one name each around them, not names printed over
    each other. Returns the annotations in the order of `named`. Call it once the axes' limits and the figure's
    layout are final: it works in the figure's pixels."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent()
    half = MARKER_HALF_WIDTH * ax.figure.dpi / 72
    taken = [Bbox.from_bounds(px - half, py - half, 2 * half, 2 * half)
             for px, py in ax.transData.transform([(x, y) for _, x, y in named])]
    if ax.get_legend() is not None:
        taken.append(ax.get_legend().get_window_extent())
    texts = []
    for name, x, y in named:
        best = None
        for dx, dy in LABEL_OFFSETS:
            far = max(abs(dx), abs(dy)) > LABEL_OFFSETS[0][0]
            text = ax.annotate(name, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                               ha="left" if dx > 0 else "right" if dx < 0 else "center",
                               va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                               arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"} if far else None)
            text.set_in_layout(False)  # a later tight_layout must not move the axes under the placed names
            box = name_box(text, renderer)
            cost = sum(overlap_area(box, other) for other in taken) + box.width * box.height - overlap_area(box, frame)
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, text, box)
            else:
                text.remove()
            if cost == 0:  # free and inside the frame: the first such place is the name's
                break
        taken.append(best[2])
        texts.append(best[1])
    return texts


def name_box(text, renderer) -> Bbox:
    """The box of an annotation's text alone, in pixels (an Annotation's own extent includes its leader line)."""
    text.update_positions(renderer)
    return Text.get_window_extent(text)


def overlap_area(a: Bbox, b: Bbox) -> float:
    """The area two boxes share (0 when they do not meet)."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(width, 0.0) * max(height, 0.0)


def plotted_average(metrics: dict) -> tuple[str, str]:
    """Which average of the tables' metrics.json score_vs_sparsity plots for this run, and its axis label. The
    paper's panel is its GLUE average, so ours is the GLUE average too (`avg_glue`, over the configured GLUE or
    GLUE-shaped proxy tasks), not `avg`, which adds SQuAD and SWAG. A run without GLUE(-shaped) tasks has no
    GLUE average: then `avg` (its SQuAD/SWAG-shaped tasks), labelled as not the paper's quantity."""
    proxy = metrics["proxy"]
    if any(m.get("avg_glue") is not None for m in metrics["variants"].values()):
        return "avg_glue", ("average of the GLUE-shaped PROXY tasks (%)" if proxy else
                            "GLUE average over this run's GLUE tasks (%)")
    return "avg", ("average of the SQuAD/SWAG-shaped PROXY tasks (%)" if proxy else
                   "SQuAD/SWAG average (%), no GLUE task: not the paper's GLUE average")  # fmt: skip


def score_vs_sparsity(p: dict, out: Path, metrics_json: Path) -> None:
    metrics = json.loads(metrics_json.read_text())
    key, label = plotted_average(metrics)
    fig, (ours, theirs) = plt.subplots(1, 2, figsize=(10, 4))
    ours_named = []
    for v, m in metrics["variants"].items():
        if m.get(key) is None:
            continue
        color, marker = KIND_STYLE[m["kind"]]
        lo, hi = m.get("intervals", {}).get(key, [None, None])
        if lo is not None and hi is not None:  # 95 % interval over seeds and eval examples
            ours.errorbar(m["sparsity"], m[key], yerr=[[m[key] - lo], [hi - m[key]]], color=color, lw=0.8)
        ours.scatter(m["sparsity"], m[key], color=color, marker=marker)
        ours_named.append((v, m["sparsity"], m[key]))
    what = "PROXY tasks" if metrics["proxy"] else "dev sets"
    ours.set(title=f"this run ({what})", xlabel="measured sparsity (%)", ylabel=label)
    theirs_named = []
    for v, row in paper.GLUE.items():
        color, marker = KIND_STYLE[row["kind"]]
        theirs.scatter(row["sparsity"], row["avg"], color=color, marker=marker)
        theirs_named.append((v, row["sparsity"], row["avg"]))
    theirs.set(title="paper (published, BERT-base, GLUE avg)", xlabel="sparsity (%)", ylabel="GLUE average (%)")
    for k, (color, marker) in KIND_STYLE.items():
        ours.scatter([], [], color=color, marker=marker, label={"fixed": "hand-designed / dense"}.get(k, k.upper()))
    ours.legend(fontsize=7)
    suptitle(fig, f"Score vs sparsity. Ours: {p['scale']}", 8)
    for ax in (ours, theirs):
        ax.margins(0.1)  # room for the names of the outermost points inside the frame
    fig.tight_layout()  # before the names are placed: they are placed in the final layout's pixels
    label_points(ours, ours_named)
    label_points(theirs, theirs_named)
    save(fig, out, "score_vs_sparsity", tight=False)  # laid out above


def loss_curves(p: dict, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    curves = {}
    for v, record in variants_of(p).items():
        per_seed = []
        for seed in seeds_of(p):
            log_file = pretrained_dir(p, v, seed) / "log.jsonl"
            records = [json.loads(line) for line in log_file.read_text().splitlines() if line]
            # MLM + NSP without a DAM search's L1 term, so that every curve measures the same thing.
            per_seed.append(pd.Series({r["step"]: r["mlm_loss"] + r["nsp_loss"] for r in records}))
        curve = pd.concat(per_seed, axis=1).mean(axis=1).rename(v)  # mean over seeds
        curves[v] = curve
        fixed = record["kind"] == "fixed"
        color, _ = KIND_STYLE[record["kind"]]
        ax.plot(curve.index, curve.values, lw=1, label=v, color=None if fixed else color, ls="-" if fixed else "--")
    ax.set(xlabel="step", ylabel="training loss (MLM + NSP)",
           title=f"Pretraining loss per variant (mean over {len(seeds_of(p))} seed(s))")
    ax.legend(fontsize=6, ncol=2)
    save(fig, out, "loss_curves")
    table = pd.DataFrame(curves)
    table.index.name = "step"
    table.to_csv(out / "loss_curves.csv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", required=True, help="JSON/YAML: the run as `sparsebert tables` gets it")
    parser.add_argument("--metrics", type=Path, required=True, help="the tables' metrics.json")
    parser.add_argument("--out", type=Path, required=True, help="directory for the PNG/PDF files")


def run(args: argparse.Namespace) -> None:
    p = load_params(args.params)
    args.out.mkdir(parents=True, exist_ok=True)
    mask_panels(p, args.out)
    importance(p, args.out)
    keep_trajectories(p, args.out)
    dam_u_snapshots(p, args.out)
    score_vs_sparsity(p, args.out, args.metrics)
    loss_curves(p, args.out)
    log.info("figures: masks, importance, keep_trajectories, dam_u_snapshots, score_vs_sparsity, loss_curves -> %s", args.out)
