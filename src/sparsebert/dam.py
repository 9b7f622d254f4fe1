"""Differentiable Attention Mask (DAM), Sec. 5 of the SparseBERT paper.

A learnable binary keep-mask per head, sampled with a hard (straight-through) Gumbel-softmax at tau = 1
and pushed towards sparsity by lambda * ||mask||_1. As in the official code (han-shi/SparseBERT):
- one mask per forward pass, shared by all layers;
- two classes per entry, class 0 = keep;
- the mask enters the scores additively as (1 - mask) * -10000, so gradients reach the logits;
- logits start at 1e-3 * randn (keep probability ~ 0.5 everywhere).

DAM_s (structured) has one logit pair per (head, offset |i - j|): the mask is a symmetric Toeplitz matrix.
DAM_u (unstructured) has one logit per (head, i, j), symmetrised by mirroring the upper triangle, and is
sampled like DAM_s: [l, 0] under a 2-class Gumbel-softmax is the paper's gumbel-sigmoid(alpha) (Algorithm 1).
The official code keeps DAM_u only as a commented-out continuous form, sigmoid(logits) without sampling
(README, "what still differs").

Length rule. DAM_s trained at length L applied to T > L: offsets >= L are masked out (never attended);
T < L uses the first T offsets. A DAM_u module has no notion of offset, so any T != L raises; its binarized
mask extends to longer fine-tuning inputs by `extend_keep`. A binarized mask is made row-safe: a query left
with no key keeps its most probable key (`DAM.binarize`). At run time a query can still lose every key (its kept
keys all padding, or beyond a shorter input): it then attends to every real key by its scores
(`attend_all_if_empty`), which is what the search's (1 - m) * -10000 bias gives such a row (the same -10000 on
every key cancels in the softmax) and the official code's rule for every mask; attending to itself instead, as
before, put back in fine-tuning the diagonal that the search had dropped.

The search's outputs live here too: keep-probability snapshots for the importance analysis (`DAM.snapshot`,
`save_snapshots`, `split_diagonal`), and the binarized mask file that fine-tuning and the retrain ablation
load (`save_search`, `save_mask_file`, `load_mask_file`, extended to other lengths by `extend_keep` only).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from sparsebert.io import UserError
from sparsebert.masks import check_rows, sparsity

DAM_TYPES = ("dam_s", "dam_u")
MASK_BIAS = -10000.0  # the official additive value for a dropped entry; finite so gradients flow


def toeplitz(per_offset: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(H, L) values per offset |i - j| -> (H, T, T) symmetric Toeplitz matrix; offsets >= L get 0.

    A vectorised gather by |i - j| (no loop over offsets or heads)."""
    H, L = per_offset.shape
    idx = torch.arange(seq_len, device=per_offset.device)
    dist = (idx[:, None] - idx[None, :]).abs()  # (T, T)
    padded = torch.cat([per_offset, per_offset.new_zeros(H, 1)], dim=1)  # index L = "beyond range"
    return padded[:, dist.clamp(max=L)]  # (H, T, T)


def mirror_upper(x: torch.Tensor) -> torch.Tensor:
    """Symmetric matrix from the upper triangle (diagonal included) of the last two dims."""
    return torch.triu(x) + torch.triu(x, diagonal=1).transpose(-1, -2)


def hard_keep_sample(keep_logits: torch.Tensor) -> torch.Tensor:
    """Straight-through Gumbel-softmax (tau=1, hard) over two classes [keep, drop]; returns the keep
    indicator in {0, 1} whose gradient is that of the soft sample. `keep_logits` is (..., 2)."""
    return F.gumbel_softmax(keep_logits, tau=1.0, hard=True, dim=-1)[..., 0]


class DAM(nn.Module):
    """Base class: subclasses define `keep_logits()` (..., 2) and `expand(values, seq_len)`."""

    dam_type: str

    def __init__(self, num_heads: int, seq_len: int):
        super().__init__()
        self.num_heads, self.seq_len = num_heads, seq_len

    def forward(self, seq_len: int) -> torch.Tensor:
        """(H, T, T) float mask in {0, 1}: a fresh straight-through sample when training, the most likely
        mask (keep probability >= 0.5) in eval mode, so that evaluation is deterministic."""
        logits = self.keep_logits()
        if self.training:
            values = hard_keep_sample(logits)
        else:
            values = (logits[..., 0] >= logits[..., 1]).to(logits.dtype)
        return self.expand(values, seq_len)

    def keep_probabilities(self, seq_len: int | None = None) -> torch.Tensor:
        """(H, T, T) probability of keeping each entry (for importance snapshots and binarization)."""
        probs = self.keep_logits().softmax(dim=-1)[..., 0]
        return self.expand(probs, seq_len or self.seq_len)

    def binarize(self, threshold: float = 0.5, seq_len: int | None = None) -> torch.Tensor:
        """Deterministic fixed mask: keep where probability >= threshold. A row left without keys keeps its most
        probable key (`keep_most_probable`), not the diagonal: a diagonal put back by the fallback would fake
        the opposite of the importance analysis. `empty_rows` says where the fallback applied."""
        with torch.no_grad():
            probs = self.keep_probabilities(seq_len)
            return keep_most_probable(probs >= threshold, probs)

    def empty_rows(self, threshold: float = 0.5, seq_len: int | None = None) -> torch.Tensor:
        """(H, T) bool: the query rows in which no key reaches `threshold` (binarize's fallback rows)."""
        with torch.no_grad():
            return ~(self.keep_probabilities(seq_len) >= threshold).any(dim=-1)


class DAMStructured(DAM):
    """DAM_s: logits (H, L, 2) per offset, expanded to a symmetric Toeplitz mask."""

    dam_type = "dam_s"

    def __init__(self, num_heads: int, seq_len: int, init_std: float = 1e-3):
        super().__init__(num_heads, seq_len)
        self.logits = nn.Parameter(init_std * torch.randn(num_heads, seq_len, 2))

    def keep_logits(self) -> torch.Tensor:
        return self.logits

    def expand(self, values: torch.Tensor, seq_len: int) -> torch.Tensor:
        return toeplitz(values[:, :seq_len], seq_len)

    def offset_keep_probabilities(self) -> torch.Tensor:
        """(H, L) keep probability per offset: row 0 is the diagonal (the paper's Fig. 3 analysis)."""
        return self.logits.softmax(dim=-1)[..., 0]

    def snapshot(self) -> torch.Tensor:
        """(H, L) keep probability per offset, index 0 = the diagonal, on the CPU: one value per learned
        decision (the (H, L, L) expansion would repeat each L times)."""
        return self.offset_keep_probabilities().detach().cpu().clone()


class DAMUnstructured(DAM):
    """DAM_u: one logit per (head, i, j); only the upper triangle is used, mirrored to the lower."""

    dam_type = "dam_u"

    def __init__(self, num_heads: int, seq_len: int, init_std: float = 1e-3):
        super().__init__(num_heads, seq_len)
        self.logits = nn.Parameter(init_std * torch.randn(num_heads, seq_len, seq_len))

    def keep_logits(self) -> torch.Tensor:
        # One logit l per entry is the 2-class form [l, 0]: softmax gives keep probability sigmoid(l).
        return torch.stack([self.logits, torch.zeros_like(self.logits)], dim=-1)

    def expand(self, values: torch.Tensor, seq_len: int) -> torch.Tensor:
        if seq_len != self.seq_len:
            raise UserError(
                f"DAM_u mask was learned for sequence length {self.seq_len} and has no rule for length "
                f"{seq_len}; pad/truncate inputs to {self.seq_len} or use DAM_s"
            )
        return mirror_upper(values)

    def snapshot(self) -> torch.Tensor:
        """(H, L, L) keep probability of every pair, on the CPU."""
        return self.keep_probabilities().detach().cpu().clone()


def build_dam(dam_type: str, num_heads: int, seq_len: int, init_std: float = 1e-3) -> DAM:
    classes = {"dam_s": DAMStructured, "dam_u": DAMUnstructured}
    if dam_type not in classes:
        raise UserError(f"unknown DAM type {dam_type!r}; valid: {', '.join(DAM_TYPES)}")
    return classes[dam_type](num_heads, seq_len, init_std)


def l1_penalty(mask: torch.Tensor, lam: float) -> torch.Tensor:
    """lambda * ||mask||_1 over heads x L x L, as in the official loss (`lamb * torch.norm(mask, p=1)`)."""
    return lam * mask.abs().sum()


def keep_most_probable(keep: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """`keep` (..., T, T) with each empty row given its most probable key: argmax of `probs` in that row."""
    empty = ~keep.any(dim=-1, keepdim=True)  # (..., T, 1)
    top = F.one_hot(probs.argmax(dim=-1), probs.shape[-1]).bool()  # (..., T, T)
    return keep | (empty & top)


def attend_all_if_empty(keep: torch.Tensor, real_keys: torch.Tensor | None = None) -> torch.Tensor:
    """A query whose row keeps no key (of those real: `real_keys` (B, 1, 1, T), None for no padding) attends to
    every real key instead, weighted by its scores as in dense attention: the row a DAM search's bias empties
    behaves so (every key gets the same -10000, which the softmax cancels), and so the weights were trained.

    Branch-free: the model calls this on every forward, and testing `empty.any()` in Python would cost a
    host-device sync per forward on a GPU."""
    empty = ~keep.any(dim=-1, keepdim=True)  # (..., T, 1)
    return keep | (empty if real_keys is None else empty & real_keys)


def extend_keep(keep: torch.Tensor, seq_len: int) -> torch.Tensor:
    """A learned keep-mask (H, L, L) applied at a longer length T (fine-tuning SQuAD at 384 after pretraining
    at 128). The learned L x L block stays as it is; beyond it a pair at offset d = |i - j| is kept iff the
    learned mask keeps at least half of its pairs at that offset, and offsets >= L are never kept. For DAM_s,
    whose mask is Toeplitz, that is exactly its own rule (one decision per offset); DAM_u has no notion of
    offset, and this is the one rule that both keeps its learned block and follows the structure it learned
    (how far each head looks) instead of inventing one. A row left empty attends to every key
    (`attend_all_if_empty`, the run-time rule)."""
    H, L, _ = keep.shape
    if seq_len <= L:
        return keep[:, :seq_len, :seq_len]
    idx = torch.arange(L, device=keep.device)
    dist = (idx[:, None] - idx[None, :]).abs().flatten()  # (L * L,)
    kept = torch.zeros(H, L, device=keep.device).index_add_(1, dist, keep.reshape(H, -1).float())
    per_offset = kept / torch.bincount(dist, minlength=L)  # (H, L): fraction of offset-d pairs kept
    extended = toeplitz((per_offset >= 0.5).float(), seq_len) > 0.5  # (H, T, T)
    extended[:, :L, :L] = keep
    return attend_all_if_empty(extended)


def no_weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Optimizer groups: decay matrices only. Biases, LayerNorm weights and DAM logits get no decay —
    decaying the mask logits would pull every keep probability towards 0.5 regardless of the data. The DAM
    logits get a group of their own (tagged "dam") so that their learning rate can be set separately."""
    decay, no_decay, dam_logits = [], [], []
    dam_params = {id(p) for m in model.modules() if isinstance(m, DAM) for p in m.parameters()}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in dam_params:
            dam_logits.append(p)
        elif p.dim() < 2 or "LayerNorm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if dam_logits:
        groups.append({"params": dam_logits, "weight_decay": 0.0, "dam": True})
    return groups


# ---------------------------------------------------------------------------------------------------------
# The search's outputs: snapshots for the importance analysis, the binarized mask as a file.


def split_diagonal(keep: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Keep probabilities of the diagonal and of every other position, over any leading axes: a DAM_s
    snapshot is (..., L) per offset |i - j| (index 0 = the diagonal), a DAM_u one (..., L, L) per pair."""
    if kind == "dam_s":
        return keep[..., 0], keep[..., 1:]
    eye = np.eye(keep.shape[-1], dtype=bool)
    return keep[..., eye], keep[..., ~eye]


def mean_per_head(diag: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per head, the diagonal's mean keep probability and the other positions' mean, (...,) each, from
    `split_diagonal`'s two parts (of one snapshot per head, or of a trajectory of them). A DAM_s diagonal is one
    offset, already one value per head (an axis fewer than the rest); a DAM_u diagonal has L entries."""
    return (diag if diag.ndim < other.ndim else diag.mean(axis=-1)), other.mean(axis=-1)


def save_snapshots(path, snapshots: list[tuple[int, torch.Tensor]]) -> None:
    """snapshots.npz: `steps` (T,) and `keep_prob` (T, ...) of `DAM.snapshot()`s, written atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, steps=np.array([s for s, _ in snapshots]),
                        keep_prob=torch.stack([p for _, p in snapshots]).numpy())  # fmt: skip
    tmp.replace(path)


def save_search(dam: DAM, out_dir, snapshots: list[tuple[int, torch.Tensor]], dam_lambda: float) -> dict:
    """A finished search's mask.safetensors (the binarized mask) and snapshots.npz under `out_dir`; returns what
    its summary.json records about them."""
    out_dir = Path(out_dir)
    keep = dam.binarize()
    save_mask_file(out_dir / "mask.safetensors", keep, dam_type=dam.dam_type, dam_lambda=dam_lambda,
                   seq_len=dam.seq_len)  # fmt: skip
    save_snapshots(out_dir / "snapshots.npz", snapshots)
    # fallback_rows: per head, the rows where no key kept p >= 0.5 (each keeps its most probable key instead).
    return {"dam_type": dam.dam_type, "dam_lambda": dam_lambda, "sparsity": sparsity(keep),
            "fallback_rows": dam.empty_rows().sum(dim=-1).tolist()}  # fmt: skip


def save_mask_file(path, keep: torch.Tensor, **metadata) -> None:
    """safetensors with `keep` (H, L, L) as uint8 and the metadata (JSON values) plus its sparsity. Written
    atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: json.dumps(v) for k, v in {**metadata, "sparsity": sparsity(keep)}.items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({"keep": keep.to(torch.uint8).contiguous()}, str(tmp), metadata=meta)
    tmp.replace(path)


def load_mask_file(path, num_heads: int, seq_len: int) -> torch.Tensor:
    """A learned mask file as bool (num_heads, seq_len, seq_len): sliced to shorter lengths, extended to longer
    ones by `extend_keep` (the rule the model applies at run time, so a mask means the same wherever it is
    loaded). A file with one head serves every head."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"mask file not found: {path}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"mask file {path} is not a readable safetensors file: {e}") from None
    if "keep" not in tensors or tensors["keep"].dim() != 3 or tensors["keep"].shape[1] != tensors["keep"].shape[2]:
        raise UserError(f"mask file {path} has no (H, L, L) 'keep' tensor")
    keep = tensors["keep"].bool()
    if keep.shape[0] not in (1, num_heads):
        raise UserError(f"mask file {path} has {keep.shape[0]} heads; the model has {num_heads}")
    keep = extend_keep(keep, seq_len)
    check_rows(keep, what=f"mask file {path} at length {seq_len}")
    return keep.expand(num_heads, seq_len, seq_len).clone()
