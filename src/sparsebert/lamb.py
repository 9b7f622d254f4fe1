"""LAMB with the semantics of NVIDIA apex's `FusedLAMB` (use_nvlamb=False), the official recipe's pretraining
optimizer, and its trust-ratio-free sibling `ApexAdam`, the official scripts' fine-tuning optimizer.

Per parameter tensor p with gradient g, at step t of its group (adam_w_mode and grad_averaging as apex's
defaults; bias_correction as given, apex's default on):

    m = b1 m + (1 - b1) g            v = b2 v + (1 - b2) g^2
    u = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * p     (without bias correction:
    p -= lr * r * u                                                              m / (sqrt(v) + eps) + ...)

LAMB: r = ||p|| / ||u|| if weight_decay != 0 and both norms are > 0, else r = 1. ApexAdam: r = 1 always, i.e.
apex `FusedAdam(adam_w_mode=True)`. run_glue.py and run_squad.py (fp16, their default) fine-tune with
`FusedAdam(bias_correction=False)` and run_swag.py (fp32) with NVIDIA's `BertAdam`, which takes the same
uncorrected step; torch's Adam and AdamW always correct the bias, so their first steps are
(1 - b1^t) / sqrt(1 - b2^t) times smaller (1/3.2 at t = 1, 1/1.26 at t = 1000). With bias correction ApexAdam is
torch's AdamW (tested), which fine-tuning then uses instead (fused on CUDA).

The layer-wise trust ratio r applies only to groups with weight decay. Groups without it (biases, LayerNorm
and, what matters for the paper, the DAM mask logits) take plain Adam steps. A LAMB that applies r to every
group (pytorch-optimizer's `Lamb`, NVLAMB) scales the mask logits' steps by ||logits|| / ||u||: the logits
start at 1e-3 * randn, so they barely move and the keep probabilities stay near 0.5 for the whole search.
pytorch-optimizer's `Lamb` also leaves out the second-moment bias correction and clamps ||p|| at 10, so it is
not a substitute either.

Two implementations of the same step: `foreach=True` (the default) updates a group's tensors together with
torch's multi-tensor `_foreach_*` kernels (a handful of launches per group instead of ~10 per tensor: at
BERT-base's ~200 tensors the per-tensor loop took 36 ms on an H200, as long as a forward+backward);
`foreach=False` is the per-tensor loop, kept as the readable reference the tests compare against. Both keep
the same state (step, exp_avg, exp_avg_sq per tensor), so checkpoints move between them. Neither reads a
value back to the host: the trust ratio is chosen on the device.

Not here: apex's fused global-norm clipping (max_grad_norm=1.0). The training loop clips the global gradient
norm once with `clip_grad_norm_(grad_clip)` before the step, which has the same effect.
"""

from __future__ import annotations

import torch


class Lamb(torch.optim.Optimizer):
    algorithm, trust_ratio = "LAMB", True  # r: the layer-wise ratio of groups with weight decay (module docstring)

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.01,
                 bias_correction: bool = True, foreach: bool = True):
        if lr <= 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid {self.algorithm} hyper-parameters lr={lr} betas={betas} eps={eps} "
                             f"weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      bias_correction=bias_correction, foreach=foreach))

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:  # the step count is a host int per tensor: bias corrections need no device read
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
            update = _multi_tensor_step if group.get("foreach", True) else _per_tensor_step
            with torch.no_grad():  # not a decorator: mutmut skips decorated functions
                update(group, params, self.state, self.trust_ratio)
        return loss


class ApexAdam(Lamb):
    """apex `FusedAdam(adam_w_mode=True)`: LAMB's step with r = 1 in every group (module docstring). With
    `bias_correction=False`, the official fine-tuning scripts' Adam (run_glue.py, run_squad.py, run_swag.py)."""

    algorithm, trust_ratio = "Adam", False


def _trust_ratio(w_norm: torch.Tensor, u_norm: torch.Tensor) -> torch.Tensor:
    """||w|| / ||u||, or 1 where either norm is 0 (apex's rule); on the device, no host sync."""
    return torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))


def _bias_corrections(group: dict, t: int) -> tuple[float, float]:
    """(1 - b1^t, 1 - b2^t), the divisors of m and v at step t, or (1, 1) without bias correction. A group
    restored from a checkpoint written before the switch existed has no such key: it was corrected."""
    b1, b2 = group["betas"]
    return (1 - b1**t, 1 - b2**t) if group.get("bias_correction", True) else (1.0, 1.0)


def _per_tensor_step(group: dict, params: list, state: dict, trust_ratio: bool) -> None:
    """The reference: one tensor at a time, as the formula in the module docstring reads."""
    b1, b2 = group["betas"]
    decay = group["weight_decay"]
    for p in params:
        c1, c2 = _bias_corrections(group, state[p]["step"])
        m, v = state[p]["exp_avg"], state[p]["exp_avg_sq"]
        g = p.grad
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        update = (m / c1) / ((v / c2).sqrt_().add_(group["eps"]))
        if decay != 0:
            update.add_(p, alpha=decay)
            if trust_ratio:
                update.mul_(_trust_ratio(p.norm(), update.norm()))
        p.add_(update, alpha=-group["lr"])


def _multi_tensor_step(group: dict, params: list, state: dict, trust_ratio: bool) -> None:
    """The same arithmetic, in the same order, on all of a group's tensors per kernel launch."""
    b1, b2 = group["betas"]
    decay = group["weight_decay"]
    grads = [p.grad for p in params]
    ms = [state[p]["exp_avg"] for p in params]
    vs = [state[p]["exp_avg_sq"] for p in params]
    # tensors of one group may have taken different step counts
    corrections = [_bias_corrections(group, state[p]["step"]) for p in params]
    torch._foreach_mul_(ms, b1)
    torch._foreach_add_(ms, grads, alpha=1 - b1)
    torch._foreach_mul_(vs, b2)
    torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
    denom = torch._foreach_div(vs, [c2 for _, c2 in corrections])
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, group["eps"])
    updates = torch._foreach_div(ms, [c1 for c1, _ in corrections])
    torch._foreach_div_(updates, denom)
    if decay != 0:
        torch._foreach_add_(updates, params, alpha=decay)
    if decay != 0 and trust_ratio:
        ratios = _trust_ratio(torch.stack(torch._foreach_norm(params)), torch.stack(torch._foreach_norm(updates)))
        torch._foreach_mul_(updates, list(ratios.unbind()))
    torch._foreach_add_(params, updates, alpha=-group["lr"])
