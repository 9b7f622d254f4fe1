"""LAMB with the semantics of NVIDIA apex's `FusedLAMB` (use_nvlamb=False), the official recipe's optimizer.

Per parameter tensor p with gradient g, at step t of its group (bias_correction, adam_w_mode, grad_averaging
as apex's defaults):

    m = b1 m + (1 - b1) g            v = b2 v + (1 - b2) g^2
    u = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * p
    p -= lr * r * u,   r = ||p|| / ||u|| if weight_decay != 0 and both norms are > 0, else r = 1

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
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.01,
                 foreach: bool = True):
        if lr <= 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid LAMB hyper-parameters lr={lr} betas={betas} eps={eps} weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, foreach=foreach))

    @torch.no_grad()
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
            (_multi_tensor_step if group.get("foreach", True) else _per_tensor_step)(group, params, self.state)
        return loss


def _trust_ratio(w_norm: torch.Tensor, u_norm: torch.Tensor) -> torch.Tensor:
    """||w|| / ||u||, or 1 where either norm is 0 (apex's rule); on the device, no host sync."""
    return torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))


def _per_tensor_step(group: dict, params: list, state: dict) -> None:
    """The reference: one tensor at a time, as the formula in the module docstring reads."""
    b1, b2 = group["betas"]
    decay = group["weight_decay"]
    for p in params:
        t = state[p]["step"]
        m, v = state[p]["exp_avg"], state[p]["exp_avg_sq"]
        g = p.grad
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        update = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt_().add_(group["eps"]))
        if decay != 0:
            update.add_(p, alpha=decay)
            update.mul_(_trust_ratio(p.norm(), update.norm()))
        p.add_(update, alpha=-group["lr"])


def _multi_tensor_step(group: dict, params: list, state: dict) -> None:
    """The same arithmetic, in the same order, on all of a group's tensors per kernel launch."""
    b1, b2 = group["betas"]
    decay = group["weight_decay"]
    grads = [p.grad for p in params]
    ms = [state[p]["exp_avg"] for p in params]
    vs = [state[p]["exp_avg_sq"] for p in params]
    steps = [state[p]["step"] for p in params]  # tensors of one group may have taken different step counts
    torch._foreach_mul_(ms, b1)
    torch._foreach_add_(ms, grads, alpha=1 - b1)
    torch._foreach_mul_(vs, b2)
    torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
    denom = torch._foreach_div(vs, [1 - b2**t for t in steps])
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, group["eps"])
    updates = torch._foreach_div(ms, [1 - b1**t for t in steps])
    torch._foreach_div_(updates, denom)
    if decay != 0:
        torch._foreach_add_(updates, params, alpha=decay)
        ratios = _trust_ratio(torch.stack(torch._foreach_norm(params)), torch.stack(torch._foreach_norm(updates)))
        torch._foreach_mul_(updates, list(ratios.unbind()))
    torch._foreach_add_(params, updates, alpha=-group["lr"])
