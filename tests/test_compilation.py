"""sparsebert.compilation.CompiledOrEager with a stand-in torch.compile: the compiled callable runs when
compiling works; a failure at torch.compile() or at the first call trains eagerly, said in one line; a failure
at a later call is the run's own and propagates."""

from __future__ import annotations

import logging

import pytest
import torch

from sparsebert.compilation import CompiledOrEager, backward_compiled_now

calls: list = []


def model(x, scale=1):
    calls.append(("eager", x, scale))
    return x * scale


def compiles(fail_at: set[int] = frozenset(), error: Exception | None = None):
    """A stand-in for torch.compile: its result runs the model, raising `error` at the calls in `fail_at`."""

    def compile_(fn):
        count = [0]

        def compiled(*args, **kwargs):
            count[0] += 1
            calls.append(("compiled", fn))
            if count[0] in fail_at:
                raise error
            return fn(*args, **kwargs)

        return compiled

    return compile_


@pytest.fixture(autouse=True)
def fresh_calls():
    calls.clear()


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_disabled_runs_the_model_as_it_is(monkeypatch, caplog):
    monkeypatch.setattr(torch, "compile", lambda fn: pytest.fail("compiled although disabled"))
    run = CompiledOrEager(model, enabled=False)
    assert run(2, scale=3) == 6 and run(1) == 1
    assert run.mode == "eager" and calls == [("eager", 2, 3), ("eager", 1, 1)] and warnings(caplog) == []


def test_enabled_runs_the_compiled_model_with_every_argument(monkeypatch, caplog):
    monkeypatch.setattr(torch, "compile", compiles())
    run = CompiledOrEager(model, enabled=True)
    assert run(2, scale=3) == 6 and run(4, scale=5) == 20
    assert run.mode == "compiled" and warnings(caplog) == []
    assert calls == [("compiled", model), ("eager", 2, 3), ("compiled", model), ("eager", 4, 5)]


def test_compile_failing_at_its_first_call_falls_back_once(monkeypatch, caplog):
    """torch.compile is lazy: most failures come at the first call. That call is rerun eagerly, once."""
    monkeypatch.setattr(torch, "compile", compiles({1}, RuntimeError("inductor: unsupported operator\ndetails")))
    run = CompiledOrEager(model, enabled=True)
    assert run.mode == "compiled"
    assert run(2, scale=3) == 6 and run(1, scale=2) == 2
    assert calls == [("compiled", model), ("eager", 2, 3), ("eager", 1, 2)] and run.mode == "eager (compile failed)"
    assert warnings(caplog) == ["torch.compile failed (RuntimeError: inductor: unsupported operator): training the "
                                "model eagerly"]


def test_compile_failing_at_torch_compile_falls_back(monkeypatch, caplog):
    def no_compiler(fn):
        raise RuntimeError("")

    monkeypatch.setattr(torch, "compile", no_compiler)
    run = CompiledOrEager(model, enabled=True)
    assert run.mode == "eager (compile failed)" and run(3, scale=2) == 6 and calls == [("eager", 3, 2)]
    assert warnings(caplog) == ["torch.compile failed (RuntimeError: ): training the model eagerly"]


def test_the_logged_reason_is_one_line_of_at_most_300_characters(monkeypatch, caplog):
    monkeypatch.setattr(torch, "compile", compiles({1}, ValueError("x" * 400 + "\nsecond line")))
    CompiledOrEager(model, enabled=True)(1)
    assert warnings(caplog) == [f"torch.compile failed (ValueError: {'x' * 300}): training the model eagerly"]


def test_a_failure_after_the_first_call_is_not_hidden(monkeypatch, caplog):
    """Out of memory or bad data at step 2 is the run's error, not the compiler's: no eager rerun."""
    monkeypatch.setattr(torch, "compile", compiles({2}, torch.OutOfMemoryError("CUDA out of memory")))
    run = CompiledOrEager(model, enabled=True)
    assert run(1) == 1
    with pytest.raises(torch.OutOfMemoryError):
        run(2)
    assert run.mode == "compiled" and warnings(caplog) == []


def real_compile_with(backend, monkeypatch):
    """torch.compile itself, with `backend` in inductor's place (no C compiler needed)."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_(fn, backend=backend, **kw))
    torch._dynamo.reset()


def test_a_backward_that_does_not_compile_falls_back_at_the_first_call(monkeypatch, caplog):
    """With fixed shapes torch compiles the backward at the first loss.backward(), after the guarded call: a
    backward kernel that fails there (as a Triton kernel may on a GPU) ended the run. The first call compiles the
    backward too, so it falls back, and the step trains eagerly."""
    from torch._dynamo.backends.common import aot_autograd

    compiled = []

    def backward_fails(gm, example_inputs):
        compiled.append("backward")
        raise RuntimeError("backward kernel failed to compile")

    def forward_compiles(gm, example_inputs):
        compiled.append("forward")
        return gm.forward

    real_compile_with(aot_autograd(fw_compiler=forward_compiles, bw_compiler=backward_fails), monkeypatch)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.Linear(8, 1))
    run = CompiledOrEager(net, enabled=True)
    x = torch.randn(4, 8)
    run(x).sum().backward()  # raised the backward's error before
    assert compiled == ["forward", "backward"] and run.mode == "eager (compile failed)"
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net(x).sum().backward()
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, net.parameters()))  # the eager step's gradients
    assert warnings(caplog) == ["torch.compile failed (RuntimeError: backward kernel failed to compile): training "
                                "the model eagerly"]


def test_the_logged_reason_is_the_compilers_not_dynamos_wrapper(monkeypatch, caplog):
    """dynamo wraps a backend's error in BackendCompilerFailed, whose first line is "backend='inductor' raised:":
    the line names the backend's own error."""
    def inductor(gm, example_inputs):
        raise RuntimeError("Cannot find a working triton installation.\nmore")

    real_compile_with(inductor, monkeypatch)
    run = CompiledOrEager(torch.nn.Linear(4, 4), enabled=True)
    run(torch.randn(2, 4))
    assert run.mode == "eager (compile failed)"
    assert warnings(caplog) == ["torch.compile failed (RuntimeError: Cannot find a working triton installation.): "
                                "training the model eagerly"]


def test_the_backward_switch_is_a_no_op_where_a_torch_lacks_it():
    """torch 2.11 and 2.13 have the switch (on inside the context, back off after); a torch without
    _functorch.config, or whose config lacks it, gets a context that does nothing."""
    import contextlib
    import types

    config = torch._functorch.config
    assert config.force_non_lazy_backward_lowering is False
    with backward_compiled_now():
        assert config.force_non_lazy_backward_lowering is True
    assert config.force_non_lazy_backward_lowering is False
    for functorch in (types.SimpleNamespace(), types.SimpleNamespace(config=types.SimpleNamespace(patch=None))):
        assert isinstance(backward_compiled_now(functorch), contextlib.nullcontext)
    switch = types.SimpleNamespace(force_non_lazy_backward_lowering=False, patch=lambda **kw: kw)
    assert backward_compiled_now(types.SimpleNamespace(config=switch)) == {"force_non_lazy_backward_lowering": True}
