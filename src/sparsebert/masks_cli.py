"""`sparsebert masks`: the registry at a given length, our sparsity beside the paper's, and a PNG grid."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sparsebert import masks
from sparsebert.io import atomic_write_json

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--out", type=Path, required=True, help="directory for masks.png and masks.json")


def plot_grid(named_masks: dict, path: Path, title: str = "") -> None:
    """One panel per mask (first head of an (H, L, L) mask); black = may attend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(5, len(named_masks))
    rows = -(-len(named_masks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, mask) in zip(axes.flat, named_masks.items()):
        m = mask[0] if mask.dim() == 3 else mask
        ax.imshow(m.numpy(), cmap="Greys", interpolation="nearest", vmin=0, vmax=1)
        ax.set_title(f"{name}\n{100 * masks.sparsity(mask):.1f}% sparse", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".png", ".pdf"):
        fig.savefig(path.with_suffix(suffix), dpi=150)
    plt.close(fig)


def run(args: argparse.Namespace) -> None:
    rows = masks.table(args.seq_len)
    print(f"{'mask':<12} {'ours %':>7} {'paper %':>8} {'keys/query':>11}  params")
    for r in rows:
        paper = "-" if r["paper_sparsity"] is None else f"{r['paper_sparsity']:.1f}"
        print(f"{r['mask']:<12} {r['sparsity']:>7.1f} {paper:>8} {r['keys_per_query']:>11.1f}  {r['params']}")
    grid = {r["mask"]: masks.build_mask(r["mask"], args.seq_len) for r in rows}
    plot_grid(grid, args.out / "masks.png", title=f"registry masks at L={args.seq_len}")
    atomic_write_json(args.out / "masks.json", {"seq_len": args.seq_len, "masks": rows})
    log.info("wrote %s", args.out / "masks.png")
