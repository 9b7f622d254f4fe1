"""Attention-mask registry: every sparse pattern compared in the SparseBERT paper (Table 1).

A mask is a boolean keep-matrix of shape (L, L) or (H, L, L): True = query i may attend to key j.
Sparsity ratio = 1 - mean(keep), as in the paper's table. Each builder is a small pure function of
(seq_len, **params); defaults are chosen so that at L=128 our sparsity is close to the one the paper reports.

BERT is bidirectional, so patterns designed for causal models (Sparse Transformer's strided/fixed,
LogSparse) are used in their symmetric form. Every builder keeps the diagonal or some other key in each
row, so no query is ever left with nothing to attend to (the softmax would be NaN); `check_rows` verifies it.
Learned (DAM) masks and their files live in sparsebert/dam.py: this module knows fixed patterns only.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Callable

import torch

from sparsebert.io import UserError


@dataclass(frozen=True)
class MaskSpec:
    name: str
    builder: Callable[..., torch.Tensor]
    paper_sparsity: float | None  # percent, Table 1 of the paper (None: not reported there)
    defaults: dict = field(default_factory=dict)


def _offsets(seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    i = torch.arange(seq_len).unsqueeze(1)  # (L, 1) query index
    j = torch.arange(seq_len).unsqueeze(0)  # (1, L) key index
    return i, j


# Integer parameters are capped far above any useful value so that arithmetic on int64 tensors never overflows.
MAX_INT_PARAM = 2**31 - 1
MAX_SEED = 2**32 - 1
MAX_HEADS = 1024  # blockwise's num_heads: an (H, L, L) mask, so H is bounded like a model's head count
MAX_SEQ_LEN = 2**20  # a dense (L, L) bool mask at 2**20 is already 1 TiB


def int_param(mask: str, name: str, value, minimum: int, maximum: int = MAX_INT_PARAM) -> int:
    """Check one integer parameter of a builder: anything but an integer in [minimum, maximum] (bools included)
    is a UserError naming mask, parameter and value. Without it, e.g. longformer's window=-3 silently builds a
    97 %-sparse mask and strided's stride=0 divides by zero."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not minimum <= value <= maximum:
        bound = f">= {minimum}" if maximum == MAX_INT_PARAM else f"in [{minimum}, {maximum}]"
        raise UserError(f"mask {mask!r}: parameter {name} must be an integer {bound}, got {value!r}")
    return int(value)


def _global(seq_len: int, num_global: int) -> torch.Tensor:
    """The first `num_global` tokens ([CLS], ...) attend everywhere and are attended by everyone."""
    i, j = _offsets(seq_len)
    return (i < num_global) | (j < num_global)


# ---------------------------------------------------------------------------------------------------------
# Patterns


def dense(seq_len: int) -> torch.Tensor:
    """Full attention: the BERT baseline."""
    return torch.ones(seq_len, seq_len, dtype=torch.bool)


def no_diagonal(seq_len: int) -> torch.Tensor:
    """Dense except i == j (the paper's 'BERT without diagonal attention', Sec. 4)."""
    if seq_len < 2:
        raise UserError("no_diagonal needs seq_len >= 2 (a single token would have nothing to attend to)")
    i, j = _offsets(seq_len)
    return i != j


def strided(seq_len: int, stride: int) -> torch.Tensor:
    """Sparse Transformer 'strided' (Child et al., 2019): a local window of `stride` on each side, plus
    every key whose distance is a multiple of `stride`."""
    stride = int_param("strided", "stride", stride, 1)
    i, j = _offsets(seq_len)
    d = (i - j).abs()
    return (d < stride) | (d % stride == 0)


def fixed(seq_len: int, block: int, summary: int) -> torch.Tensor:
    """Sparse Transformer 'fixed' (Child et al., 2019): attend within one's block, and to the last `summary`
    positions of every block (symmetrised: summary positions also attend everywhere). 0 <= summary < block, as
    in the paper (summary = block would make every position a summary: a dense mask)."""
    block = int_param("fixed", "block", block, 1)
    summary = int_param("fixed", "summary", summary, 0, block - 1)
    i, j = _offsets(seq_len)
    same_block = (i // block) == (j // block)
    is_summary = lambda x: (x % block) >= block - summary  # noqa: E731
    return same_block | is_summary(j) | is_summary(i)


def longformer(seq_len: int, window: int, num_global: int) -> torch.Tensor:
    """Longformer (Beltagy et al., 2020): sliding window of `window` on each side plus global [CLS]."""
    window = int_param("longformer", "window", window, 0)
    num_global = int_param("longformer", "num_global", num_global, 0)
    i, j = _offsets(seq_len)
    return ((i - j).abs() <= window) | _global(seq_len, num_global)


def logsparse(seq_len: int, window: int) -> torch.Tensor:
    """LogSparse (Li et al., 2019), symmetric: a local window plus keys at distance 2^k, k = 0, 1, ..."""
    window = int_param("logsparse", "window", window, 0)
    i, j = _offsets(seq_len)
    d = (i - j).abs()
    power_of_two = (d > 0) & ((d & (d - 1)) == 0)
    return (d <= window) | power_of_two


def bigbird(seq_len: int, window: int, num_global: int, num_random: int, seed: int) -> torch.Tensor:
    """BigBird (Zaheer et al., 2020): sliding window + global tokens + `num_random` random keys per query,
    drawn from a seeded generator so that the mask is a pure function of its parameters. Symmetrised (query i
    drawing key j lets j see i too), so a row holds ~2 x `num_random` random keys: 3.8 at L 128 with 2, which
    gives the paper's 93.2 % sparsity with window 1 and one global token."""
    window = int_param("bigbird", "window", window, 0)
    num_global = int_param("bigbird", "num_global", num_global, 0)
    num_random = int_param("bigbird", "num_random", num_random, 0)
    seed = int_param("bigbird", "seed", seed, 0, MAX_SEED)
    i, j = _offsets(seq_len)
    keep = ((i - j).abs() <= window) | _global(seq_len, num_global)
    g = torch.Generator().manual_seed(seed)
    k = min(num_random, seq_len)
    random_keys = torch.rand(seq_len, seq_len, generator=g).argsort(dim=1)[:, :k]  # (L, k)
    rand = torch.zeros(seq_len, seq_len, dtype=torch.bool).scatter_(1, random_keys, True)
    return keep | rand | rand.T


def star(seq_len: int, num_relay: int) -> torch.Tensor:
    """Star-Transformer (Guo et al., 2019): each token sees its ring neighbours and the relay token(s)."""
    num_relay = int_param("star", "num_relay", num_relay, 0)
    i, j = _offsets(seq_len)
    return ((i - j).abs() <= 1) | _global(seq_len, num_relay)


def blockwise(seq_len: int, block: int, num_heads: int, shift_heads: bool) -> torch.Tensor:
    """Blockwise attention (Qiu et al., 2020): block-diagonal. With `shift_heads`, odd heads use blocks
    shifted by half a block so that information crosses block borders; returns (H, L, L) then (H = 1 or the
    model's head count)."""
    block = int_param("blockwise", "block", block, 1)
    num_heads = int_param("blockwise", "num_heads", num_heads, 1, MAX_HEADS)
    if not isinstance(shift_heads, bool):
        raise UserError(f"mask 'blockwise': parameter shift_heads must be true or false, got {shift_heads!r}")
    i, j = _offsets(seq_len)
    if not shift_heads:
        return (i // block) == (j // block)
    shifted = ((i + block // 2) // block) == ((j + block // 2) // block)
    plain = (i // block) == (j // block)
    return torch.stack([shifted if h % 2 else plain for h in range(num_heads)])


# ---------------------------------------------------------------------------------------------------------
# Registry: name, builder, the paper's sparsity (Table 1, percent at L = 128; None: not in the table) and the
# builder's default parameters. A table rather than decorators, so that the paper's numbers read in one place
# (and mutation testing, which skips decorated functions, reaches every builder).

MASKS: dict[str, MaskSpec] = {
    spec.name: spec
    for spec in (
        MaskSpec("dense", dense, 0.0),
        MaskSpec("no_diagonal", no_diagonal, None),
        MaskSpec("strided", strided, 70.4, dict(stride=16)),
        MaskSpec("fixed", fixed, 72.7, dict(block=8, summary=1)),
        MaskSpec("longformer", longformer, 88.7, dict(window=6, num_global=1)),
        MaskSpec("logsparse", logsparse, 89.8, dict(window=1)),
        MaskSpec("bigbird", bigbird, 93.2, dict(window=1, num_global=1, num_random=2, seed=0)),
        MaskSpec("star", star, 96.1, dict(num_relay=1)),
        MaskSpec("blockwise", blockwise, None, dict(block=16, num_heads=1, shift_heads=False)),
    )
}


def get_spec(name: str) -> MaskSpec:
    if name not in MASKS:
        raise UserError(f"unknown mask {name!r}; valid names: {', '.join(sorted(MASKS))}")
    return MASKS[name]


def build_mask(name: str, seq_len: int, **params) -> torch.Tensor:
    """Build a registered mask: bool (L, L) or (H, L, L), rows checked to be non-empty."""
    spec = get_spec(name)
    unknown = set(params) - set(spec.defaults)
    if unknown:
        raise UserError(
            f"mask {name!r} has no parameter(s) {sorted(unknown)}; valid: {sorted(spec.defaults) or 'none'}"
        )
    if isinstance(seq_len, bool) or not isinstance(seq_len, numbers.Integral) or not 1 <= seq_len <= MAX_SEQ_LEN:
        raise UserError(f"mask {name!r}: seq_len must be an integer in [1, {MAX_SEQ_LEN}], got {seq_len!r}")
    mask = spec.builder(seq_len, **{**spec.defaults, **params})
    check_rows(mask, what=f"mask {name!r} at seq_len={seq_len} with {params or 'defaults'}")
    return mask


def check_rows(mask: torch.Tensor, what: str = "mask") -> None:
    """Raise if any query row keeps no key: softmax over an empty row is NaN."""
    empty = ~mask.any(dim=-1)
    if empty.any():
        where = empty.nonzero()[0].tolist()
        raise UserError(f"{what} leaves query row(s) with no key to attend to (first at index {where})")


def sparsity(mask: torch.Tensor) -> float:
    """Fraction of masked-out (query, key) pairs: 1 - mean(keep), over all heads if (H, L, L)."""
    return 1.0 - mask.float().mean().item()


def is_symmetric(mask: torch.Tensor) -> bool:
    return bool(torch.equal(mask, mask.transpose(-1, -2)))


def table(seq_len: int = 128) -> list[dict]:
    """Our sparsity (with default parameters) beside the paper's, for every registered mask."""
    rows = []
    for name, spec in MASKS.items():
        mask = build_mask(name, seq_len)
        rows.append(
            {
                "mask": name,
                "params": spec.defaults,
                "sparsity": round(100 * sparsity(mask), 1),
                "paper_sparsity": spec.paper_sparsity,
                "keys_per_query": round(mask.float().sum(-1).mean().item(), 1),
            }
        )
    return rows
