"""`sparsebert dam-search`: pretraining with a learnable DAM mask (see `sparsebert.pretrain`)."""

from __future__ import annotations

import argparse

from sparsebert import pretrain
from sparsebert.dam import DAM_TYPES
from sparsebert.io import UserError

add_arguments = pretrain.add_arguments


def run(args: argparse.Namespace) -> None:
    if args.mask not in DAM_TYPES:
        raise UserError(f"dam-search needs --mask {' or '.join(DAM_TYPES)}, got {args.mask!r}")
    pretrain.run(args)
