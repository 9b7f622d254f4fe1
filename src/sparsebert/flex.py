"""FlexAttention backend: attention that skips the key blocks a fixed keep-mask drops.

The sdpa backend computes every score and then masks it, so a sparse mask costs as much as a dense one.
FlexAttention takes a `BlockMask` (which key blocks each query block touches) and a `mask_mod` predicate
(applied inside the touched blocks), so its cost grows with the number of kept blocks, not with L^2.

Design:
- The structural BlockMask depends only on the fixed keep-mask and the length, so it is built once per
  (keep-mask, length, device) and cached (`BlockMaskCache`). Building it evaluates the mask on all L x L
  pairs; doing that per step would cost more than the attention it saves.
- Padding changes every batch. Rather than rebuilding the BlockMask per batch, the cached one is built
  with every kept block "partial" (so `mask_mod` runs in all of them; `all_blocks_partial`) and
  each forward swaps in a `mask_mod` that also reads a (B, T) key-validity tensor. That is a shallow copy,
  no mask evaluation and no host-device sync. The price: padded key blocks are not skipped (pretraining
  batches are packed to full length, so little is lost).
- flex_attention is only fast compiled (eager materialises the full score matrix), so it is compiled once
  per process and reused; new closures with the same code do not trigger recompiles (only new shapes do).
- A query with no kept key would get output 0 (FlexAttention's rule), where sdpa lets it attend to every real key
  (the DAM search's rule, `dam.attend_all_if_empty`), whose keys lie in blocks the BlockMask need not hold. So a
  batch in which padding or a shorter input leaves a real query with no key runs sdpa (`empties_a_real_row`);
  a mask that keeps its whole diagonal never does, and is never asked (padded queries may differ: unused).
- Flex is not always faster: short inputs and masks that touch most blocks run faster with sdpa. The `auto`
  backend (`choose_backend`) takes flex only where it was measured faster (`WHERE_FLEX_PAYS`).
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn.attention.flex_attention import BlockMask, and_masks, create_block_mask, flex_attention

log = logging.getLogger(__name__)


def has_full_blocks_switch(build_block_mask) -> bool:
    """Whether this torch's create_block_mask takes `separate_full_blocks` (torch 2.13 does, 2.11 does not).
    Asked of the function itself, not of torch's version: GPU boxes run older or patched builds."""
    return "separate_full_blocks" in inspect.signature(build_block_mask).parameters


def block_size(device: torch.device) -> int:
    """Sparse block edge. GPUs want 128 (the Triton tile). On CPU the kernel's cost follows the number of
    kept blocks, and smaller blocks follow a banded or Toeplitz mask more tightly: at L=2048 longformer keeps
    8% of 32-blocks but 4% of 16-blocks. Measured at L in {512, 2048} (B=1, 4 heads): 16 is 1.5-1.8x faster
    than 32 for longformer, star and a learned DAM_s mask, 1.05-1.9x for bigbird, and 5-14% slower for a
    dense mask (which is faster with sdpa anyway)."""
    return 128 if device.type == "cuda" else 16


# -------------------------------------------------------------------------------------------------------
# mask_mods: pure predicates (b, h, q_idx, kv_idx) -> keep


def keep_mask_mod(keep: torch.Tensor):
    """The structural keep-mask (Hm, T, T), Hm in {1, H}, as a mask_mod (a lookup, so any pattern works)."""
    per_head = keep.shape[0] > 1

    def structure(b, h, q_idx, kv_idx):
        return keep[h if per_head else 0, q_idx, kv_idx]

    return structure


def key_padding_mask_mod(key_valid: torch.Tensor):
    """Padding: key_valid (B, T) is True for real tokens; queries may attend only to real keys."""

    def padding(b, h, q_idx, kv_idx):
        return key_valid[b, kv_idx]

    return padding


# -------------------------------------------------------------------------------------------------------
# BlockMask cache


def structural_block_mask(keep: torch.Tensor) -> BlockMask:
    """BlockMask of a keep-mask (Hm, T, T), broadcast over the batch (and over heads if Hm == 1), with every
    kept block partial: mask_mod must run in every block, because it carries the per-batch padding."""
    Hm, T, _ = keep.shape
    shape = dict(B=None, H=Hm if Hm > 1 else None, Q_LEN=T, KV_LEN=T, device=keep.device,
                 BLOCK_SIZE=block_size(keep.device))
    if has_full_blocks_switch(create_block_mask):
        return create_block_mask(keep_mask_mod(keep), separate_full_blocks=False, **shape)
    return all_blocks_partial(create_block_mask(keep_mask_mod(keep), **shape))


def all_blocks_partial(block_mask: BlockMask) -> BlockMask:
    """The same kept blocks with the "full" ones (where create_block_mask found mask_mod all True and would
    skip it) moved to the partial list, as `separate_full_blocks=False` builds it. For a torch without that
    switch. Kept blocks come first in each row's index list, in ascending order, as create_block_mask
    orders them."""
    kept = block_mask.to_dense().to(torch.int32)  # (B|1, H|1, nQ, nK): 1 = partial or full
    order = torch.argsort(kept, dim=-1, descending=True, stable=True).to(torch.int32)
    return BlockMask.from_kv_blocks(kept.sum(-1, dtype=torch.int32), order, None, None,
                                    BLOCK_SIZE=block_mask.BLOCK_SIZE, mask_mod=block_mask.mask_mod,
                                    seq_lengths=block_mask.seq_lengths)


def block_density(block_mask: BlockMask) -> float:
    """Fraction of the (query block, key block) pairs that flex computes, over heads: what its cost follows.
    Counted in blocks: BlockMask.sparsity() counts a cut last block as whole and can pass 100 %."""
    return block_mask.to_dense().float().mean().item()


class BlockMaskCache:
    """Structural BlockMasks of one fixed keep-mask, one per length, built on first use.

    Keyed by the keep tensor itself and its version, so `set_fixed_mask` and `extend_mask` (a new tensor),
    `load_state_dict` (an in-place copy) and `.to(device)` (a new tensor) all invalidate it without anyone having
    to remember to. Not by its address: a freed mask's memory is soon another mask's (set_fixed_mask's copies
    come back at the same few addresses), with the same version 0. The cache holds the tensor, so its address
    cannot be reused while it is the key."""

    def __init__(self):
        self._keep: torch.Tensor | None = None
        self._version = -1
        self._masks: dict[int, tuple[BlockMask, torch.Tensor]] = {}
        self._densities: dict[int, float] = {}
        self._diagonals: dict[int, bool] = {}
        self.builds = 0  # for tests and benchmarks: how often a BlockMask was actually built

    def get(self, keep: torch.Tensor, seq_len: int) -> tuple[BlockMask, torch.Tensor]:
        """(BlockMask, sliced keep (Hm, T, T)) for inputs of length seq_len."""
        if keep is not self._keep or keep._version != self._version:
            self._keep, self._version, self._masks, self._densities, self._diagonals = keep, keep._version, {}, {}, {}
        if seq_len not in self._masks:
            sliced = keep[:, :seq_len, :seq_len].contiguous()
            self._masks[seq_len] = (structural_block_mask(sliced), sliced)
            self.builds += 1
        return self._masks[seq_len]

    def density(self, keep: torch.Tensor, seq_len: int) -> float:
        """`block_density` of the BlockMask for this length (built if needed, computed once)."""
        block_mask, _ = self.get(keep, seq_len)
        if seq_len not in self._densities:
            self._densities[seq_len] = block_density(block_mask)
        return self._densities[seq_len]

    def keeps_diagonal(self, keep: torch.Tensor, seq_len: int) -> bool:
        """Whether every query of every head keeps itself at this length (read once per mask and length)."""
        _, sliced = self.get(keep, seq_len)
        if seq_len not in self._diagonals:
            self._diagonals[seq_len] = bool(sliced.diagonal(dim1=-2, dim2=-1).all())
        return self._diagonals[seq_len]


def empties_a_real_row(keep: torch.Tensor, attention_mask: torch.Tensor | None) -> bool:
    """Whether a real query of this batch keeps no real key: keep (Hm, T, T), attention_mask (B, T) or None.
    Flex would give such a row 0 where sdpa gives it attention over every real key. One host read; a head at a
    time, so that at most (B, T, T) booleans exist at once."""
    T = keep.shape[-1]
    valid = torch.ones(1, T, dtype=torch.bool, device=keep.device) if attention_mask is None else attention_mask.bool()
    found = torch.zeros((), dtype=torch.bool, device=keep.device)
    for head in keep:
        kept_real = (head[None] & valid[:, None, :]).any(-1)  # (B, T): the query keeps a real key
        found = found | (valid & ~kept_real).any()
    return bool(found)


def with_padding(block_mask: BlockMask, keep: torch.Tensor, attention_mask: torch.Tensor | None) -> BlockMask:
    """The cached structural BlockMask with this batch's padding added to its mask_mod (a shallow copy)."""
    if attention_mask is None:
        return block_mask
    padded = copy.copy(block_mask)
    padded.mask_mod = and_masks(keep_mask_mod(keep), key_padding_mask_mod(attention_mask.bool()))
    return padded


# -------------------------------------------------------------------------------------------------------
# Kernel


@functools.cache
def compiled_flex_attention():
    """flex_attention compiled once per process. The CPU kernel is specialised to each (B, T, mask heads)
    shape even with dynamic=True (measured), so every new shape compiles once (seconds) and is cached.
    Past torch's default of 8 compiled shapes per function it would silently run flex uncompiled (full
    score matrix, slower than sdpa), so the limit is raised process-wide."""
    torch.compiler.config.recompile_limit = max(torch.compiler.config.recompile_limit, 64)
    return torch.compile(flex_attention, dynamic=False)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask) -> torch.Tensor:
    """(B, H, T, hd) block-sparse attention with scale 1/sqrt(hd), like SDPA."""
    return compiled_flex_attention()(q, k, v, block_mask=block_mask)


def fallback_reason(x: torch.Tensor, training: bool, attention_dropout: float) -> str | None:
    """Why this forward cannot use flex (None if it can)."""
    if x.device.type == "cpu" and torch.is_grad_enabled() and (training or x.requires_grad):
        return "FlexAttention has no CPU backward (torch 2.13): training on CPU uses sdpa"
    if training and attention_dropout > 0:
        return (
            f"FlexAttention has no attention dropout: training with attention_probs_dropout_prob="
            f"{attention_dropout} uses sdpa (set it to 0 to train with flex)"
        )
    return None


def notice_once(message: str) -> None:
    """Warn once per message, except while torch.compile traces the forward: dynamo cannot trace a log call, so
    one would split the compiled model into several graphs (on CUDA with no attention dropout, 5 instead of 1). A
    compiled forward does not log; the eager evaluation after training does."""
    if not torch.compiler.is_compiling():
        _logged_once(logging.WARNING, message)


def choice_once(message: str) -> None:
    """The backend choice of attention_backend auto, once per message (not while torch.compile traces)."""
    if not torch.compiler.is_compiling():
        _logged_once(logging.INFO, message)


@functools.cache
def _logged_once(level: int, message: str) -> None:
    log.log(level, message)


# -------------------------------------------------------------------------------------------------------
# Where flex pays: attention_backend "auto"


@dataclass(frozen=True)
class FlexPays:
    """On one kind of device, flex was measured faster than sdpa for inputs of at least `min_len` tokens whose
    mask keeps at most `max_block_density` of its blocks (`block_size` of that device), and slower elsewhere."""

    min_len: int
    max_block_density: float
    measured: str  # the measurement the two numbers come from


# Each threshold lies between a measured length or density where flex was faster and one where it was slower;
# a device kind with no measurement (mps, xpu, ...) gets sdpa. benchmarks/attention.py (CPU) and
# benchmarks/gpu.py's flex section (GPU) print, for every row they measure, whether auto picked the faster one.
WHERE_FLEX_PAYS = {
    "cpu": FlexPays(512, 0.25, "model forward, 2 layers, hidden 256, 16-blocks, torch 2.13 (make bench: AMD EPYC "
                               "AVX2 2026-12-06 and 12-07, Intel Xeon AMX 2026-12-05): L 128 0.86-1.08x at any "
                               "density; L 512 1.09-1.42x at 9-15 % of blocks, 0.65-0.75x at 90-100 %; L 2048 "
                               "1.8-2.5x at 2-4 %, 0.77-0.90x at 42 %, 0.41-0.51x at 100 %"),
    "cuda": FlexPays(8192, 0.25, "attention forward+backward, 128-blocks, bf16 (H200, torch 2.11, 2026-12-04, "
                                 "docs/gpu_measurements.md): L 2048 0.47-0.61x at 29-100 % of blocks; L 8192 "
                                 "1.85-2.11x at 8-17 %, 0.42x at 100 %"),
}


def choose_backend(device_type: str, seq_len: int, density: Callable[[], float]) -> tuple[str, str]:
    """("flex" or "sdpa", why) for a forward of `seq_len` tokens on `device_type` (attention_backend auto).
    `density()` gives the mask's block density at that length; it is only asked when the length alone does not
    decide, since it needs the BlockMask built."""
    where = WHERE_FLEX_PAYS.get(device_type)
    if where is None:
        return "sdpa", f"attention auto: sdpa on {device_type} (flex has not been measured there)"
    if seq_len < where.min_len:
        return "sdpa", (f"attention auto: sdpa at length {seq_len} on {device_type} (flex was measured slower "
                        f"below {where.min_len})")
    kept = density()
    verdict = "flex" if kept <= where.max_block_density else "sdpa"
    relation = "at most" if verdict == "flex" else "over"
    return verdict, (f"attention auto: {verdict} at length {seq_len} on {device_type}: the mask keeps {kept:.1%} "
                     f"of its blocks, {relation} the {where.max_block_density:.0%} up to which flex was measured "
                     f"faster")

