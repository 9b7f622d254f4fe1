"""Training precision: `precision: auto | fp32 | bf16` in the pretraining and fine-tuning recipes.

bf16 means autocast: the weights, the optimizer state, the residual stream's LayerNorms, the DAM keep
probabilities and their L1 term, every loss and every metric stay fp32; the matmuls (linear layers, attention)
run in bf16. No loss scaling is needed (bf16 has fp32's exponent range).

`auto` picks bf16 where it is fast and fp32 elsewhere, decided at run time:
- a CUDA GPU with bf16 support (Ampere or later): bf16;
- a CPU with bf16 instructions (`amx_bf16` or `avx512_bf16` among its flags, e.g. Xeon Sapphire Rapids and
  later, AMD Zen 4 and later) and a oneDNN-enabled torch: bf16 (measured in benchmarks/mfu.py: 1.4-1.9x fp32);
- any other CPU: fp32, because bf16 there is emulated in software and slower than fp32;
- a CPU whose instruction set the environment caps below bf16 (`ONEDNN_MAX_CPU_ISA` or `DNNL_MAX_CPU_ISA`
  under AVX512_CORE_BF16, or `ATEN_CPU_CAPABILITY` avx2/default, e.g. to approximate an AVX2-only machine on a
  newer one): fp32, since oneDNN and ATen then emulate bf16 just as on the older CPU.
An explicit `bf16` is honoured everywhere (the line says where it is emulated); `fp32` never autocasts.

The decision is one line (`Precision.line`) that the training log prints and summary.json / metrics.json
record (`Precision.record()`), so a run says what arithmetic produced its numbers.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from sparsebert.io import UserError

PRECISIONS = ("auto", "fp32", "bf16")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # x86 flags (as /proc/cpuinfo and lscpu name them)


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags: /proc/cpuinfo's `flags` line on Linux, else what torch's cpuinfo reports
    for the flags that matter here (macOS, Windows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    return frozenset(flag for flag, fn in probes.items() if getattr(torch.cpu, fn, lambda: False)())


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """This CPU's model name (/proc/cpuinfo's `model name`), for the records and tables that say where a time
    was measured; the platform's processor or machine name elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The ISA caps read as the libraries themselves read them (checked with ONEDNN_VERBOSE and
# torch.backends.cpu.get_cpu_capability() on torch 2.13):
# - oneDNN reads ONEDNN_MAX_CPU_ISA or, where that is unset or empty, its older name DNNL_MAX_CPU_ISA; it matches
#   the value case-insensitively but takes spaces literally, and ignores a name it does not know (no cap then).
# - ATen matches ATEN_CPU_CAPABILITY exactly (`AVX2` or ` avx2` is ignored, with a warning).
ONEDNN_ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
ONEDNN_PRE_BF16_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_MIC", "AVX512_MIC_4OPS",
                        "AVX512_CORE", "AVX512_CORE_VNNI")  # the caps below native bf16 dot products
ATEN_CAPPED = ("default", "avx2")  # ATEN_CPU_CAPABILITY values that leave out AVX-512's bf16 kernels


def isa_cap(environ: Mapping[str, str] | None = None) -> str | None:
    """The environment variable that caps this process's instruction set below native bf16, as `NAME=value`
    (None: no such cap). oneDNN and ATen read them when torch loads, so they hold for the whole process."""
    environ = os.environ if environ is None else environ
    onednn = next((name for name in ONEDNN_ISA_VARIABLES if environ.get(name)), None)
    if onednn and environ[onednn].upper() in ONEDNN_PRE_BF16_ISAS:
        return f"{onednn}={environ[onednn].upper()}"
    aten = environ.get("ATEN_CPU_CAPABILITY")
    if aten in ATEN_CAPPED:
        return f"ATEN_CPU_CAPABILITY={aten}"
    return None


def cpu_bf16_flags(flags: frozenset[str] | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """The bf16 instruction-set flags this CPU has and this process may use (empty: bf16 would be emulated)."""
    flags = cpu_flags() if flags is None else flags
    if isa_cap(environ):
        return []
    return [f for f in BF16_CPU_FLAGS if f in flags]


@dataclass(frozen=True)
class Precision:
    """A resolved precision: what was asked, what runs, on which device, and why."""

    requested: str  # auto | fp32 | bf16
    dtype: torch.dtype  # torch.bfloat16 (autocast) or torch.float32 (no autocast)
    device_type: str  # "cpu" | "cuda"
    reason: str

    @property
    def name(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def autocast(self) -> AbstractContextManager:
        """A fresh context for one forward (+ loss): bf16 autocast, or nothing for fp32."""
        if self.dtype == torch.bfloat16:
            return torch.autocast(self.device_type, dtype=torch.bfloat16)
        return nullcontext()

    @property
    def line(self) -> str:
        return f"precision: {self.name} ({self.requested}: {self.reason})"

    def record(self) -> dict:
        return {"precision": self.name, "precision_requested": self.requested, "precision_reason": self.reason}


def resolve(requested: str, device: torch.device | str, flags: frozenset[str] | None = None,
            environ: Mapping[str, str] | None = None) -> Precision:
    """`auto | fp32 | bf16` on `device` -> Precision. `flags` and `environ` override the CPU's flags and the
    process environment (tests)."""
    if requested not in PRECISIONS:
        raise UserError(f"unknown precision {requested!r}; valid: {', '.join(PRECISIONS)}")
    device_type = torch.device(device).type
    if requested == "fp32":
        return Precision(requested, torch.float32, device_type, "as requested")
    if device_type == "cuda":
        fast = torch.cuda.is_bf16_supported(including_emulation=False)
        why = "this GPU computes bf16 natively" if fast else "this GPU has no native bf16 (pre-Ampere)"
    elif device_type == "cpu":
        have, cap = cpu_bf16_flags(flags, environ), isa_cap(environ)
        onednn = torch.backends.mkldnn.is_available()
        fast = bool(have) and onednn
        if fast:
            why = f"CPU flags {' '.join(have)}"
        elif cap:
            why = f"{cap} caps the instruction set below native bf16: bf16 would be emulated, slower than fp32"
        elif not have:
            why = (f"this CPU ({platform.machine()}) has none of the flags {' '.join(BF16_CPU_FLAGS)}: bf16 would be "
                   f"emulated, slower than fp32")
        else:
            why = "this torch build has no oneDNN: bf16 matmuls would be slow"
    else:
        fast, why = False, f"no bf16 autocast rule for device {device_type!r}"
    if requested == "auto":
        return Precision(requested, torch.bfloat16 if fast else torch.float32, device_type, why)
    # An explicit bf16 is honoured even where it is emulated; the reason (hence the log line) says so.
    return Precision(requested, torch.bfloat16, device_type, f"as requested; {why}")
