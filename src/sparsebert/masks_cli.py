"""`sparsebert masks`: the registry at a given length, our sparsity beside the paper's, and a PNG grid."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sparsebert import masks
from sparsebert.io import atomic_write_json

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seq-len", type=int, default=128, help="sequence length L of the L x L masks (default 128)")
    parser.add_argument("--out", type=Path, required=True, help="directory for masks.png/.pdf and masks.json")


def run(args: argparse.Namespace) -> None:
    from sparsebert import figures  # matplotlib: only when drawing

    rows = masks.table(args.seq_len)
    print(f"{'mask':<12} {'ours %':>7} {'paper %':>8} {'keys/query':>11}  params")
    for r in rows:
        paper = "-" if r["paper_sparsity"] is None else f"{r['paper_sparsity']:.1f}"
        print(f"{r['mask']:<12} {r['sparsity']:>7.1f} {paper:>8} {r['keys_per_query']:>11.1f}  {r['params']}")
    panels = [figures.mask_panel(r["mask"], masks.build_mask(r["mask"], args.seq_len)) for r in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    figures.save(figures.mask_grid([panels], min(5, len(panels)), f"registry masks at L={args.seq_len}"), args.out, "masks")
    atomic_write_json(args.out / "masks.json", {"seq_len": args.seq_len, "masks": rows})
    log.info("wrote %s", args.out / "masks.png")
