"""benchmarks/step_profile.py: where a training step's time goes (the breakdown issue 21 asks for where MFU falls
short). Categories of hand-named operators, the per-step sums of hand-made profiler rows, phases timed on a
fake clock, and one real profile of a tiny model on the CPU."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import step_profile  # noqa: E402

CPU, CUDA = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA


@pytest.mark.parametrize("op, expected", [
    ("aten::addmm", "matmul"), ("aten::mm", "matmul"), ("aten::bmm", "matmul"),
    ("aten::_scaled_dot_product_flash_attention", "attention"), ("aten::_softmax_backward_data", "attention"),
    ("aten::_scaled_dot_product_efficient_attention_backward", "attention"),
    ("aten::_foreach_addcmul_", "optimizer"), ("Optimizer.step#Lamb.step", "optimizer"),
    ("aten::_log_softmax", "losses, elementwise, reductions"), ("aten::nll_loss_backward", "losses, elementwise, reductions"),
    ("aten::add_", "losses, elementwise, reductions"), ("aten::native_layer_norm_backward", "normalization, activation, dropout"),
    ("aten::gelu", "normalization, activation, dropout"), ("aten::native_dropout", "normalization, activation, dropout"),
    ("aten::embedding_dense_backward", "embedding, indexing, copies"), ("aten::copy_", "embedding, indexing, copies"),
    ("aten::empty_strided", "other"),
])  # fmt: skip
def test_operators_fall_into_their_category(op, expected):
    """First match wins: the optimizer's multi-tensor adds are optimizer time, the loss's log_softmax is not
    attention's softmax, addmm is a matmul and not an add."""
    assert step_profile.category(op) == expected


def row(key, count, cpu_us, device_us, device_type=CPU):
    return SimpleNamespace(key=key, count=count, self_cpu_time_total=cpu_us, self_device_time_total=device_us,
                           device_type=device_type)


def test_breakdown_sums_operator_device_time_per_step_and_skips_kernel_rows():
    """Two profiled steps. On a GPU only the operators' own device time counts (the kernel rows repeat it), rows
    without device time are left out, and everything is per step: addmm 6 ms / 2 = 3, bmm 2 / 2 = 1 (matmul 4),
    _foreach_mul_ 1 / 2 = 0.5, layer_norm 0.4 / 2 = 0.2; total 4.7 ms per step."""
    rows = [row("aten::addmm", 8, 500.0, 6000.0), row("aten::bmm", 4, 100.0, 2000.0),
            row("aten::_foreach_mul_", 2, 50.0, 1000.0), row("aten::native_layer_norm", 4, 30.0, 400.0),
            row("cudaLaunchKernel", 40, 900.0, 0.0), row("sm90_xmma_gemm_bf16", 12, 0.0, 8000.0, CUDA)]
    got = step_profile.breakdown(rows, on_device=True, steps=2, top=3)
    assert got["device_ms_per_step"] == pytest.approx(4.7)
    assert got["by_category_ms"] == pytest.approx({"matmul": 4.0, "optimizer": 0.5,
                                                   "normalization, activation, dropout": 0.2})
    assert list(got["by_category_ms"]) == ["matmul", "optimizer", "normalization, activation, dropout"]  # largest first
    assert got["top_ops"] == [{"op": "aten::addmm", "ms": 3.0, "calls": 4.0, "category": "matmul"},
                              {"op": "aten::bmm", "ms": 1.0, "calls": 2.0, "category": "matmul"},
                              {"op": "aten::_foreach_mul_", "ms": 0.5, "calls": 1.0, "category": "optimizer"}]


def test_breakdown_on_a_cpu_counts_the_operators_cpu_time():
    """No device: each operator's own CPU time (0.5 + 0.1 ms over one step) stands in for device time."""
    rows = [row("aten::addmm", 1, 500.0, 0.0), row("aten::add_", 1, 100.0, 0.0)]
    got = step_profile.breakdown(rows, on_device=False, steps=1)
    assert got["by_category_ms"] == pytest.approx({"matmul": 0.5, "losses, elementwise, reductions": 0.1})
    assert got["device_ms_per_step"] == pytest.approx(0.6)


def test_phases_are_timed_apart_and_averaged(monkeypatch):
    """A fake clock: forward takes 3 s, backward 5 s, the optimizer 1 s (each sync 0 s); two repeats average
    to the same, and backward receives what forward returned."""
    now = [0.0]
    monkeypatch.setattr(step_profile.time, "perf_counter", lambda: now[0])

    def advance(seconds, value=None):
        now[0] += seconds
        return value

    got_losses = []
    phases = step_profile.phase_times(forward=lambda: advance(3, "loss"), backward=lambda l: got_losses.append(advance(5, l)),
                                      optimizer_step=lambda: advance(1), sync=lambda: None, repeats=2)
    assert phases == {"forward": 3000.0, "backward": 5000.0, "optimizer": 1000.0}
    assert got_losses == ["loss", "loss"]


def test_a_real_cpu_profile_of_a_small_training_step():
    """A two-layer MLP stepped by foreach AdamW on the CPU: the profile finds its matmuls and the optimizer's
    multi-tensor ops, and its categories add up to its total."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 8))
    opt = torch.optim.AdamW(model.parameters(), foreach=True)
    x = torch.randn(128, 64)

    def step():
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    got = step_profile.profile_step(step, torch.device("cpu"), steps=2, warmup=1)
    assert got["by_category_ms"]["matmul"] > 0 and got["by_category_ms"]["optimizer"] > 0
    assert sum(got["by_category_ms"].values()) == pytest.approx(got["device_ms_per_step"], abs=1e-2)
    assert any(op["op"] == "aten::addmm" for op in got["top_ops"])
