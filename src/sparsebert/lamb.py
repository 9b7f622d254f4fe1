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

Not here: apex's fused global-norm clipping (max_grad_norm=1.0). The training loop clips the global gradient
norm once with `clip_grad_norm_(grad_clip)` before the step, which has the same effect.
"""

from __future__ import annotations

import torch


class Lamb(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.01):
        if lr <= 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid LAMB hyper-parameters lr={lr} betas={betas} eps={eps} weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            decay = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                g = p.grad
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                update = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt_().add_(group["eps"]))
                if decay != 0:
                    update.add_(p, alpha=decay)
                    w_norm, u_norm = p.norm(), update.norm()
                    # On the device, no host sync: r = 1 where either norm is 0 (apex's rule).
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                    update.mul_(ratio)
                p.add_(update, alpha=-group["lr"])
        return loss
