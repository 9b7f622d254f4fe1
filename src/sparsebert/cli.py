"""`python -m sparsebert <subcommand>`: one subcommand per Snakemake rule.

Each subcommand lives in its own module as `add_arguments(parser)` + `run(args)`; this file only wires them,
importing a module when its subcommand is called so that `--help` and light commands start fast.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import logging
import os
import sys
from pathlib import Path

from sparsebert import allocator
from sparsebert.io import UserError

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "corpus": ("sparsebert.data.corpus", "build the pretraining corpus: sentence-per-line shards + stats.json"),
    "tokenizer": ("sparsebert.data.tokenizer", "train a WordPiece tokenizer on the corpus (or save a pretrained one)"),
    "examples": ("sparsebert.data.pretraining", "build BERT MLM+NSP pretraining examples (datasets, train/validation)"),
    "masks": ("sparsebert.masks_cli", "print the mask registry (sparsity vs paper) and save a PNG grid"),
    "pretrain": ("sparsebert.pretrain", "pretrain BERT (MLM + NSP) with a fixed or learned attention mask"),
    "dam-search": ("sparsebert.dam_search", "pretrain with a learnable DAM mask; binarize it to a mask file"),
    "tables": ("sparsebert.report", "tables of every variant's scores beside the paper's published numbers"),
    "findings": ("sparsebert.findings", "findings.md: what this run shows about each of the paper's three claims"),
    "figures": ("sparsebert.figures", "the paper's figures: masks, importance analysis, score vs sparsity, losses"),
    "finetune": ("sparsebert.finetune", "fine-tune a pretrained variant on a GLUE/SQuAD/SWAG/proxy task"),
    "proxy-tasks": ("sparsebert.data.proxy", "build the PROXY downstream tasks from the corpus (original file formats + cards)"),
    "estimate": ("sparsebert.estimate", "how long a run takes on this machine: its step timed here vs a measured run"),
    "plan": ("sparsebert.plan", "cost plan of a config: per rule jobs, FLOPs, GPU-hours (measured MFU), wall time, disk"),
}


def _inject_fault(command: str) -> None:
    """Fault injection for retry tests: SPARSEBERT_FAIL_ONCE=<subcommand>:<marker file>.

    The first call of that subcommand creates the marker and exits 75 (EX_TEMPFAIL); later calls run
    normally. This is how the tests prove that a cluster job which dies once is retried.
    """
    spec = os.environ.get("SPARSEBERT_FAIL_ONCE", "")
    if ":" not in spec:
        return
    target, marker = spec.split(":", 1)
    if target == command and not Path(marker).exists():
        Path(marker).parent.mkdir(parents=True, exist_ok=True)
        Path(marker).write_text("failed once\n")
        print(f"sparsebert {command}: injected failure (SPARSEBERT_FAIL_ONCE)", file=sys.stderr)
        sys.exit(75)


def _dump_stacks_when_stuck() -> None:
    """SPARSEBERT_STACKS_AFTER_S=N: write every thread's Python stack to stderr (the rule's log) every N
    seconds. The tests set it, so a job that hangs leaves the place where it hangs in its log."""
    after = os.environ.get("SPARSEBERT_STACKS_AFTER_S")
    if after:
        faulthandler.dump_traceback_later(float(after), repeat=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsebert", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        # Only the name: main() builds the subcommand's own parser (arguments, --help) once its module is imported.
        sub.add_parser(name, help=help_text).set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    # The subcommand (or --help) is the first word; its module then declares the arguments that follow.
    known = parser.parse_args(argv[:1])
    module = importlib.import_module(known._module)
    sub_parser = argparse.ArgumentParser(prog=f"sparsebert {known.command}", description=SUBCOMMANDS[known.command][1])
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    _inject_fault(known.command)
    _dump_stacks_when_stuck()
    allocator.reuse_freed_memory()  # every step's activations stay mapped (see allocator.py)
    try:
        module.run(args)
    except UserError as e:
        print(f"sparsebert {known.command}: error: {e}", file=sys.stderr)
        sys.exit(2)

