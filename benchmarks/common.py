"""Shared measurement helpers: interleaved median timings and peak resident memory on CPU.

Timing: every candidate of one comparison runs once per round, round after round, so that noise from the
(shared, 2-core) machine hits all of them alike; the median over rounds is reported, warm-up rounds
excluded. Threads are fixed by `setup()`.

Memory: peak resident set size (RSS) during one call, minus the RSS just before it. Linux lets a process
reset its high-water mark (`/proc/self/clear_refs` <- 5), and `run.py` starts Python with a fixed malloc
mmap threshold, so every large tensor is its own mmap and is returned to the OS when freed (otherwise glibc
would recycle freed memory and the delta would undercount). It measures everything the call allocates:
activations, attention scores/bias, autograd buffers, kernel workspaces.
"""

from __future__ import annotations

import gc
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

THREADS = 2
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}  # see module docstring
OUT = Path("results/benchmarks")


def setup() -> None:
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)


def median_times(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, measured in interleaved rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_mib(fn: Callable[[], object]) -> float:
    """Peak RSS increase (MiB) while fn runs."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kb("VmRSS")
    fn()
    return (_status_kb("VmHWM") - before) / 1024


def markdown(rows: list[dict], columns: list[str]) -> str:
    """A GitHub markdown table (no extra dependency)."""
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
