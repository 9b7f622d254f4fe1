"""torch.compile for the training loops, behind the recipe's `compile` switch, with an eager fallback.

Measured on an H200 (docs/gpu_measurements.md, BERT-base, T 128, micro-batch 256, bf16): the compiled model's
forward+backward ran 639k tokens/s against 479k eager, after 36 s of compiling. On the 2-core CPUs of the
default run it paid nothing (0.86x fp32, 1.05x bf16, ~20 s to compile), hence off by default.

The model is compiled once per process (the training loop builds one wrapper); micro-batches of one shape
reuse the compiled graph. Compiling can fail in ways that say nothing about the run (no C compiler, a torch
build without Triton, an operator the compiler does not handle): then the loop logs one line naming the
error and trains eagerly, with the same arithmetic. torch.compile is lazy, so most failures surface at the
first call, not at torch.compile() itself: both are caught. Later calls are not guarded, so a genuine error
of the run (out of memory, bad data) is never hidden behind a fallback.
"""

from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger(__name__)


class CompiledOrEager:
    """Calls `model` compiled (if `enabled` and compiling works) or as it is. `mode` says which ran."""

    def __init__(self, model, enabled: bool):
        self.model = model
        self._compiled = None
        self.mode = "eager"
        if enabled:
            try:
                self._compiled = torch.compile(model)
                self.mode = "compiled"
            except Exception as e:  # noqa: BLE001 - any failure to compile means: train eagerly
                self._fall_back(e)
        self._first_call = True

    def __call__(self, *args, **kwargs):
        if self._compiled is None:
            return self.model(*args, **kwargs)
        if not self._first_call:
            return self._compiled(*args, **kwargs)
        try:
            with backward_compiled_now():
                out = self._compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the first call is where torch.compile actually compiles
            self._fall_back(e)
            return self.model(*args, **kwargs)
        self._first_call = False
        return out

    def _fall_back(self, error: Exception) -> None:
        self._compiled, self.mode = None, "eager (compile failed)"
        # dynamo wraps a backend's error (BackendCompilerFailed): its first line says only "backend=... raised:"
        error = getattr(error, "inner_exception", None) or error
        message = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        log.warning("torch.compile failed (%s: %s): training the model eagerly", type(error).__name__, message)


def backward_compiled_now(functorch=None):
    """A context in which a compiled call compiles its backward too, not at the first backward (torch 2.11 and
    2.13: torch._functorch.config.force_non_lazy_backward_lowering); a no-op where a torch lacks the switch.
    `functorch`: torch._functorch (a stand-in in the tests)."""
    config = getattr(torch._functorch if functorch is None else functorch, "config", None)
    if config is None or not hasattr(config, "force_non_lazy_backward_lowering"):
        return contextlib.nullcontext()
    return config.patch(force_non_lazy_backward_lowering=True)
