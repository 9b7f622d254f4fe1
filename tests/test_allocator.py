"""glibc's thresholds raised by allocator.reuse_freed_memory: a step's freed activations stay mapped, so the
next step does not page-fault them in again (the CPU default lost 9 % of each step to that)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from sparsebert import allocator

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")

# Thirty training steps of a small MLP at the CPU default's activation sizes (2,048 tokens x 512: 4 MiB tensors);
# prints their page faults (after five warm-up steps).
STEPS = """
import resource, sys
import torch
torch.set_num_threads(1)
if sys.argv[1] == "1":
    from sparsebert import allocator
    assert allocator.reuse_freed_memory()
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(128, 512), torch.nn.GELU(), torch.nn.Dropout(0.1), torch.nn.Linear(512, 128))
x = torch.randn(2048, 128)
def step():
    model(x).square().mean().backward()
    model.zero_grad(set_to_none=True)
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(reuse: bool) -> int:
    out = subprocess.run([sys.executable, "-c", STEPS, "1" if reuse else "0"], capture_output=True, text=True,
                         check=True, env={"PATH": ""})  # no MALLOC_* variables from the caller's environment
    return int(out.stdout)


def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    default, reused = page_faults(False), page_faults(True)
    assert default >= 15 * 1024  # 4 MiB tensors (1,024 pages each) faulted in again, step after step (27-36k seen)
    # Kept in the heap: no faults in most runs, at times one tensor's pages once (glibc trims the heap's top).
    assert reused < default / 8


def test_reports_false_where_the_c_library_is_not_glibc(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert allocator.reuse_freed_memory() is False
