"""Where a training step's time goes: the breakdown issue 21 asks for where a speed lever falls short of its MFU.

Two views of one step (forward + backward + optimizer, as the training loop runs it):
- phases, timed without the profiler, the device synchronised between them: forward, backward, optimizer;
- the device time of each operator, from torch.profiler, grouped into a few categories (CATEGORIES) and the
  operators that take the most.
Their ratio says what kind of problem it is. A device busy for most of the step's wall time is limited by its
kernels, and bigger or fused kernels help. A device busy for a small part of it waits on the host (kernel
launches, Python, host reads), which no faster kernel fixes: a bigger micro-batch, torch.compile, multi-tensor
optimizers and fewer syncs do.

Operators are the profiler's CPU-side events (aten::addmm, aten::_scaled_dot_product_flash_attention, ...):
each kernel counts once, under the operator that launched it (its self device time), so the categories add up
to the device's total. On a CPU there is no separate device: the operators' own CPU time stands in, and the busy
fraction says nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

# (category, substrings of a lower-cased operator name), first match wins: the optimizer's multi-tensor ops
# before everything else (they add and multiply too), attention before matmul (its kernels multiply matrices).
CATEGORIES = (
    ("optimizer", ("_foreach_", "lamb", "adam", "optimizer")),
    ("attention", ("scaled_dot_product", "flash_attention", "efficient_attention", "cudnn_attention",
                   "aten::_softmax", "aten::softmax")),  # not the loss's log_softmax
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation", "gemm")),
    ("normalization, activation, dropout", ("layer_norm", "gelu", "dropout", "bernoulli", "tanh")),
    ("embedding, indexing, copies", ("embedding", "index", "gather", "scatter", "copy", "aten::to", "cat", "fill_",
                                     "zero_", "clone", "memcpy", "memset")),
    ("losses, elementwise, reductions", ("log_softmax", "nll_loss", "cross_entropy", "add", "mul", "div", "sub",
                                         "sum", "mean", "where", "sqrt", "pow", "exp")),
)  # fmt: skip
OTHER = "other"


def category(op_name: str) -> str:
    """The CATEGORIES entry an operator's time goes to, or OTHER."""
    name = op_name.lower()
    return next((cat for cat, keys in CATEGORIES if any(k in name for k in keys)), OTHER)


def self_time_us(row, on_device: bool) -> float:
    """A profiler row's own time in microseconds: its kernels' device time, or on a CPU its CPU time.
    (torch < 2.4 called the device field self_cuda_time_total.)"""
    if not on_device:
        return float(row.self_cpu_time_total)
    return float(getattr(row, "self_device_time_total", getattr(row, "self_cuda_time_total", 0.0)))


def breakdown(rows, on_device: bool, steps: int, top: int = 12) -> dict:
    """Milliseconds per step by category and for the `top` operators, from key_averages()-like rows (with
    .key, .count, .device_type and the time fields). Only CPU-side operator rows count: on a GPU the kernels
    also appear as rows of their own, and counting both would count each kernel twice."""
    by_category, ops = defaultdict(float), []
    for row in rows:
        if getattr(row, "device_type", None) not in (None, torch.autograd.DeviceType.CPU):
            continue
        ms = self_time_us(row, on_device) / 1e3 / steps
        if ms <= 0:
            continue
        cat = category(row.key)
        by_category[cat] += ms
        ops.append({"op": row.key, "ms": round(ms, 3), "calls": round(row.count / steps, 1), "category": cat})
    total = sum(by_category.values())
    ops.sort(key=lambda op: -op["ms"])
    return {"device_ms_per_step": round(total, 3),
            "by_category_ms": {cat: round(ms, 3) for cat, ms in sorted(by_category.items(), key=lambda kv: -kv[1])},
            "top_ops": ops[:top]}  # fmt: skip


def phase_times(forward, backward, optimizer_step, sync, repeats: int) -> dict:
    """Milliseconds per step of each phase, synchronised between phases (the syncs cost a little time
    themselves, so the phases add up to slightly more than an unsynchronised step)."""
    totals = defaultdict(float)
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        loss = forward()
        sync()
        t1 = time.perf_counter()
        backward(loss)
        sync()
        t2 = time.perf_counter()
        optimizer_step()
        sync()
        t3 = time.perf_counter()
        for phase, seconds in (("forward", t1 - t0), ("backward", t2 - t1), ("optimizer", t3 - t2)):
            totals[phase] += seconds
    return {phase: round(1e3 * seconds / repeats, 3) for phase, seconds in totals.items()}


def profile_step(step, device: torch.device, steps: int, warmup: int = 2) -> dict:
    """breakdown() of `steps` calls of `step` (after `warmup` unprofiled ones) on `device`."""
    on_device = device.type == "cuda"
    for _ in range(warmup):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_device else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if on_device:
            torch.cuda.synchronize(device)
    return breakdown(prof.key_averages(), on_device, steps)
