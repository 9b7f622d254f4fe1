"""glibc's thresholds raised by allocator.reuse_freed_memory: a step's freed activations stay mapped, so the
next step does not page-fault them in again (the CPU default lost 9 % of each step to that)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from sparsebert import allocator

LIBC, LIBC_VERSION = platform.libc_ver()
pytestmark = pytest.mark.skipif(LIBC != "glibc", reason="mallopt thresholds are glibc's")


def glibc_has_mallinfo2() -> bool:  # glibc >= 2.33; the test reads the heap's size with it
    return LIBC == "glibc" and tuple(map(int, LIBC_VERSION.split(".")[:2])) >= (2, 33)


# Thirty training steps of a small MLP at the CPU default's activation sizes (2,048 tokens x 512: 4 MiB tensors),
# after five warm-up steps; prints their page faults and the pages the C heap gained meanwhile (net, end minus
# start, from glibc's mallinfo2: sbrk'd arena plus mmap'd chunks).
STEPS = """
import ctypes, resource, sys
import torch
torch.set_num_threads(1)
if sys.argv[1] == "1":
    from sparsebert import allocator
    assert allocator.reuse_freed_memory()
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
def heap_bytes():
    info = libc.mallinfo2()
    return info.arena + info.hblkhd
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(128, 512), torch.nn.GELU(), torch.nn.Dropout(0.1), torch.nn.Linear(512, 128))
x = torch.randn(2048, 128)
def step():
    model(x).square().mean().backward()
    model.zero_grad(set_to_none=True)
for _ in range(5):
    step()
faults, heap = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, heap_bytes()
for _ in range(30):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults, (heap_bytes() - heap) // 4096)
"""


def page_faults(reuse: bool) -> tuple[int, int]:
    """(page faults, pages the heap grew by) over the thirty steps."""
    out = subprocess.run([sys.executable, "-c", STEPS, "1" if reuse else "0"], capture_output=True, text=True,
                         check=True, env=clean_env())
    faults, grown = map(int, out.stdout.split())
    return faults, grown


def clean_env() -> dict[str, str]:
    """No MALLOC_* variables from the caller's environment; PYTHONPATH kept, for a sparsebert that is not installed
    (the device rehearsal runs the tests from a source tree)."""
    return {"PATH": ""} | ({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {})


@pytest.mark.skipif(not glibc_has_mallinfo2(), reason="mallinfo2 is glibc >= 2.33's")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    (default, _), (reused, grown) = page_faults(False), page_faults(True)
    assert default >= 15 * 1024  # 4 MiB tensors (1,024 pages each) faulted in again, step after step (27-36k seen)
    # Kept in the heap, freed blocks fault in no more. The heap itself may still grow a little as small objects
    # fragment it (0-4 tensors in thirty steps, varying from run to run); its new pages fault in once, and do
    # not count here. A heap trimmed and regrown inside the window has grown by nothing and still faults.
    assert 0 <= grown <= 8 * 1024
    assert reused - grown < default / 8


def test_reports_false_where_the_c_library_is_not_glibc(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert allocator.reuse_freed_memory() is False
