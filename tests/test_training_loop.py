"""The loop skeleton in sparsebert/training.py: how a global batch is shared out over ranks and micro-batches,
and gradient accumulation (expected values computed by hand or with plain torch, not with the helpers)."""

from __future__ import annotations

import inspect
import math
import re
from contextlib import contextmanager, nullcontext

import numpy as np
import pytest
import torch

from conftest import gloo_group

from sparsebert import training
from sparsebert.io import UserError


def ranks(world):
    return [training.Dist(rank=r, world_size=world) for r in range(world)]


def test_ranks_take_disjoint_contiguous_shares_of_the_global_batch_in_micro_batches():
    order = training.epoch_permutation(40, seed=7, epoch=0)  # step 2 of 8-example batches: positions 16..23
    shares = [training.rank_micro_batches(40, 8, 2, seed=7, step=2, env=env) for env in ranks(2)]
    assert [[c.tolist() for c in s] for s in shares] == [[order[16:18].tolist(), order[18:20].tolist()],
                                                         [order[20:22].tolist(), order[22:24].tolist()]]
    one = training.rank_micro_batches(40, 8, 8, seed=7, step=2, env=training.Dist())
    assert [c.tolist() for c in one] == [order[16:24].tolist()]


def test_the_epoch_order_is_drawn_once_per_epoch_not_per_step(monkeypatch):
    """At paper scale (~200M sequences) one draw of the order takes seconds, so the loops must not redraw it for
    every step: over two epochs of 5 steps each, torch.randperm runs twice. The batches are still the slices of
    torch's own int64 order for (seed, epoch), as int64 indices."""
    training.epoch_permutation.cache_clear()
    draws = []
    randperm = torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda *a, **k: draws.append(a) or randperm(*a, **k))
    batches = [training.global_batch_indices(43, 8, seed=3, step=s) for s in range(10)]
    assert draws == [(43,), (43,)]
    for step, batch in enumerate(batches):
        epoch, k = divmod(step, 5)
        reference = randperm(43, generator=torch.Generator().manual_seed(3 * 1_000_003 + epoch))
        assert batch.dtype == torch.int64 and torch.equal(batch, reference[8 * k: 8 * k + 8])


def test_micro_batch_size_defaults_to_the_rank_share_and_must_divide_it():
    assert training.micro_batch_size(32, None, training.Dist(world_size=4)) == 8
    assert training.micro_batch_size(32, 2, training.Dist(world_size=4)) == 2
    for batch, micro, world in [(32, 3, 4), (30, None, 4), (4, None, 8)]:
        with pytest.raises(UserError, match=f"batch_size {batch} is not divisible by world_size {world}"):
            training.micro_batch_size(batch, micro, training.Dist(world_size=world))


def test_seeding_reaches_numpy_modulo_its_range():
    """numpy takes seeds below 2^32: a larger seed seeds it with its remainder."""
    training.seed_everything(2**32 + 100)
    drawn = np.random.rand(3)
    np.random.seed(100)
    assert np.array_equal(drawn, np.random.rand(3))


def test_a_dataset_of_one_global_batch_gives_it_every_step_and_a_smaller_one_is_refused():
    training.epoch_permutation.cache_clear()
    steps = [training.global_batch_indices(8, 8, seed=1, step=s) for s in range(3)]
    for step, batch in enumerate(steps):  # epoch = step: a new order of the same 8 examples each time
        assert sorted(batch.tolist()) == list(range(8))
        assert torch.equal(batch, training.epoch_permutation(8, 1, step).long())
    with pytest.raises(UserError, match=r"^dataset has 7 examples, fewer than one global batch of 8$"):
        training.global_batch_indices(7, 8, seed=1, step=0)


def test_micro_batches_of_one_example_are_allowed_and_a_micro_batch_must_divide_the_rank_share():
    assert training.micro_batch_size(8, 1, training.Dist(world_size=2)) == 1
    with pytest.raises(UserError, match=r"^batch_size 12 is not divisible by world_size 2 x micro_batch_size 4$"):
        training.micro_batch_size(12, 4, training.Dist(world_size=2))  # a share of 6


class FakeDDP:
    """Records which micro-batches ran inside `no_sync` (DDP's gradient all-reduce skipped)."""

    def __init__(self):
        self.inside = False

    @contextmanager
    def no_sync(self):
        self.inside = True
        yield
        self.inside = False


def test_accumulation_forwards_each_micro_batch_and_all_reduces_only_after_the_last():
    w = torch.ones(3, requires_grad=True)
    x = torch.arange(24.0).view(8, 3)
    chunks = list(torch.arange(8).split(2))
    for world, synced in [(2, [False, False, False, True]), (1, [True] * 4)]:
        ddp, seen = FakeDDP(), []

        def forward(idx):
            seen.append((idx.tolist(), not ddp.inside))  # the micro-batch, and whether DDP all-reduces after it
            return (x[idx] @ w).mean()

        loss = training.accumulate_gradients(ddp, training.Dist(world_size=world), chunks, forward, nullcontext)
        assert seen == [(c.tolist(), s) for c, s in zip(chunks, synced)]
        assert loss.item() == pytest.approx((x @ w).mean().item())


def test_accumulated_gradients_equal_one_pass_over_the_whole_batch():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.randn(8)
    w = torch.randn(3, requires_grad=True)
    expected = torch.autograd.grad(((x @ w - y) ** 2).mean(), w)[0]
    loss = training.accumulate_gradients(w, training.Dist(), list(torch.arange(8).split(2)),
                                         lambda idx: ((x[idx] @ w - y[idx]) ** 2).mean(), nullcontext)
    assert torch.allclose(w.grad, expected, atol=1e-6)
    assert loss.item() == pytest.approx(((x @ w - y) ** 2).mean().item(), rel=1e-6)


@pytest.mark.parametrize("switch", ["forward_sync_buffers", "broadcast_buffers"])
def test_ddp_does_not_broadcast_the_buffers_before_every_forward(monkeypatch, switch):
    """Each torch's own switch (2.13: forward_sync_buffers; 2.11: broadcast_buffers, which bumps the keep-mask's
    version at every forward and so rebuilt flex's block masks every step) is turned off, and only that one."""
    made = []

    def ddp(module, device_ids=None, **kwargs):
        made.append(kwargs)

    ddp.__signature__ = inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in ("module", "device_ids", switch)])
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", ddp)
    training.wrap_ddp(torch.nn.Linear(2, 2), training.Dist(world_size=2))
    assert made == [{switch: False}]


# ------------------------------------------------------------------------- the step, its checks and its log


def test_a_non_finite_loss_stops_the_run_naming_the_step(monkeypatch):
    """SPARSEBERT_NAN_AT_STEP=N (the fault-injection tests) makes step N's loss NaN; a real inf stops the same way."""
    monkeypatch.setenv("SPARSEBERT_NAN_AT_STEP", "3")
    training.check_finite(torch.tensor(1.5), 2)
    advice = "; stopped. The last good checkpoint is kept; lower the learning rate or check the data"
    with pytest.raises(training.NonFiniteLoss, match=f"^loss became nan at step 3{re.escape(advice)}$"):
        training.check_finite(torch.tensor(1.5), 3)
    monkeypatch.delenv("SPARSEBERT_NAN_AT_STEP")
    with pytest.raises(training.NonFiniteLoss, match=f"^loss became inf at step 7{re.escape(advice)}$"):
        training.check_finite(torch.tensor(float("inf")), 7)


def test_an_optimizer_step_checks_its_own_step_and_clears_the_gradients(monkeypatch):
    """The step number reaches the preemption fault injection (with the rank) and the finiteness check; after
    the update the gradients are None (set_to_none: no zero-filled buffers, and no stale gradient can be mistaken
    for the next micro-batch's)."""
    signalled = []
    monkeypatch.setattr(training.preemption, "inject", lambda step, rank: signalled.append((step, rank)))
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    p.grad = torch.ones(2)
    training.optimizer_step(torch.nn.ParameterList([p]), opt, sched, torch.tensor(0.5), None, 4, training.Dist(rank=0))
    assert signalled == [(4, 0)] and p.grad is None and p.tolist() == [-1.0, -1.0]
    monkeypatch.setenv("SPARSEBERT_NAN_AT_STEP", "5")
    p.grad = torch.ones(2)
    with pytest.raises(training.NonFiniteLoss, match="at step 5;"):
        training.optimizer_step(torch.nn.ParameterList([p]), opt, sched, torch.tensor(0.5), None, 5, training.Dist())


@pytest.mark.parametrize("clip, scope", [(None, "global"), (1.0, "global"), (1.0, "tensor")])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_finite_loss_with_a_non_finite_gradient_stops_before_the_update(clip, scope, bad):
    """sqrt at 0 gives a finite loss and an inf gradient (times 0: NaN): the step must stop before the update, the
    weights as they were (global clipping would multiply every gradient by the NaN norm, and the update write it
    into every weight, to be kept by the next checkpoint), whatever the clipping."""
    w = torch.nn.Parameter(torch.tensor([0.0, 1.0, 4.0]))
    b = torch.nn.Parameter(torch.tensor([2.0]))
    model = torch.nn.ParameterList([w, b])
    opt = torch.optim.SGD(model, lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    loss = torch.sqrt(w).sum() * (1.0 if bad == float("inf") else 0.0) + (b**2).sum()
    loss.backward()
    assert math.isfinite(loss.item()) and not math.isfinite(w.grad[0].item())
    message = f"^the gradients' norm became {bad} at step 3 \\(loss {loss.item():.6g}\\); stopped before the update"
    with pytest.raises(training.NonFiniteLoss, match=message):
        training.optimizer_step(model, opt, sched, loss.detach(), clip, 3, training.Dist(), scope)
    assert w.tolist() == [0.0, 1.0, 4.0] and b.tolist() == [2.0]
    w.grad = torch.tensor([1.0, 0.0, 0.0])  # finite gradients: the update runs
    b.grad = torch.tensor([0.0])
    training.optimizer_step(model, opt, sched, loss.detach(), clip, 4, training.Dist(), scope)
    assert w.tolist() == pytest.approx([-0.1, 1.0, 4.0])


def test_the_gradient_norm_is_that_of_all_gradients_together():
    """sqrt(3^2 + 4^2 + 12^2) = 13 over two tensors (a parameter without a gradient left out); 0 when none has one
    (a 0-dim tensor, as the finiteness check stacks it with the loss)."""
    a, b, c = (torch.nn.Parameter(torch.zeros(n)) for n in (2, 1, 3))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([12.0])
    assert training.gradient_norm([a, b, c]).item() == pytest.approx(13.0)
    none = training.gradient_norm([c])
    assert none.shape == () and none.item() == 0.0


def test_the_log_keeps_the_records_up_to_the_resumed_step_and_appends(tmp_path):
    """A record without a step (written before the first) counts as step 0: a resume keeps it, a fresh start does
    not."""
    path = tmp_path / "results" / "run" / "log.jsonl"
    log = training.JsonlLog(path)
    log.write({"run": "start"})
    for step in (1, 10, 20):
        log.write({"step": step, "loss": step / 10})
    records = "".join(f'{{"step": {s}, "loss": {s / 10}}}\n' for s in (1, 10, 20))
    assert path.read_text() == '{"run": "start"}\n' + records
    resumed = training.JsonlLog(path, resume_step=10)  # records past the checkpoint were written, then lost
    resumed.write({"step": 20, "loss": 2.5})
    assert path.read_text() == '{"run": "start"}\n{"step": 1, "loss": 0.1}\n{"step": 10, "loss": 1.0}\n' \
        '{"step": 20, "loss": 2.5}\n'
    training.JsonlLog(path)  # a fresh start empties it
    assert path.read_text() == ""
    other_rank = training.JsonlLog(tmp_path / "rank1" / "log.jsonl", enabled=False)
    other_rank.write({"step": 1})
    assert not (tmp_path / "rank1").exists()


# ------------------------------------------------------------- the process group (a one-process gloo group stands in)


@pytest.fixture
def plain_env(monkeypatch):
    """No torchrun variables and no GPU, whatever the machine running the tests has."""
    for name in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return monkeypatch


def test_a_plain_process_is_rank_0_of_1_on_the_cpu(plain_env):
    assert training.setup_distributed() == training.Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    plain_env.setenv("LOCAL_RANK", "3")
    assert training.setup_distributed().local_rank == 3


def test_torchrun_starts_gloo_on_the_cpu_and_nccl_on_the_ranks_own_gpu(plain_env):
    import torch.distributed as dist

    calls = []
    plain_env.setattr(dist, "init_process_group", lambda backend: calls.append(backend))
    plain_env.setattr(torch.cuda, "set_device", lambda device: calls.append(device))
    plain_env.setenv("WORLD_SIZE", "2")
    plain_env.setenv("LOCAL_RANK", "1")
    cpu = training.setup_distributed()
    assert calls == ["gloo"] and (cpu.world_size, cpu.local_rank, cpu.device) == (2, 1, torch.device("cpu"))
    calls.clear()
    plain_env.setattr(torch.cuda, "is_available", lambda: True)
    plain_env.setattr(torch.cuda, "device_count", lambda: 2)
    gpu = training.setup_distributed()
    assert calls == ["nccl", torch.device("cuda:1")] and gpu.device == torch.device("cuda:1")
    calls.clear()
    plain_env.setenv("WORLD_SIZE", "1")  # one process on a GPU: no group, no set_device
    assert training.setup_distributed().device == torch.device("cuda:1") and calls == []


def test_a_rank_without_a_gpu_of_its_own_is_one_clear_error(plain_env):
    plain_env.setattr(torch.cuda, "is_available", lambda: True)
    plain_env.setattr(torch.cuda, "device_count", lambda: 1)
    plain_env.setenv("LOCAL_RANK", "1")
    plain_env.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(UserError) as error:
        training.setup_distributed()
    assert str(error.value) == (
        "local rank 1 has no GPU: this process sees 1 (CUDA_VISIBLE_DEVICES='0'); declare the rule's `gpu` in the "
        "config's `resources` (one process per GPU), or none to run its CPU DDP on the CPU")
    plain_env.setenv("LOCAL_RANK", "0")
    assert training.setup_distributed().device == torch.device("cuda:0")


def test_a_group_that_exists_is_joined_not_started_again(plain_env, tmp_path):
    plain_env.setenv("WORLD_SIZE", "2")
    with gloo_group(tmp_path) as dist:  # a second init_process_group would raise
        plain_env.setattr(dist, "get_rank", lambda: 1)  # the group's rank, as rank 1 of a real pair would see it
        assert training.setup_distributed() == training.Dist(rank=1, world_size=2, local_rank=0)


def test_teardown_collects_then_meets_then_destroys_the_group(tmp_path, monkeypatch):
    import gc

    order = []
    training.teardown_distributed()  # no group: nothing to do
    with gloo_group(tmp_path) as dist:
        for module, name in ((gc, "collect"), (dist, "barrier"), (dist, "destroy_process_group")):
            real = getattr(module, name)
            monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name, **k: order.append(_name) or _real(*a, **k))
        training.teardown_distributed()
        assert order == ["collect", "barrier", "destroy_process_group"] and not dist.is_initialized()


def test_the_mean_over_ranks_leaves_the_callers_tensor_alone(tmp_path, monkeypatch):
    """Stand-in for a second rank holding [3, 5]: the all-reduce sums it in, the world size is 2."""
    t = torch.tensor([1.0, 2.0])
    assert training.all_reduce_mean(t) is t  # one process: the tensor itself
    with gloo_group(tmp_path) as dist:
        monkeypatch.setattr(dist, "all_reduce", lambda x: x.add_(torch.tensor([3.0, 5.0])))
        monkeypatch.setattr(dist, "get_world_size", lambda: 2)
        assert training.all_reduce_mean(t).tolist() == [2.0, 3.5]
    assert t.tolist() == [1.0, 2.0]


def test_every_ranks_random_state_is_gathered_for_the_checkpoint(tmp_path):
    assert training.rank_rng_states() is None
    with gloo_group(tmp_path):
        training.seed_everything(5)
        (state,) = training.rank_rng_states()
        expected = torch.rand(3)
        torch.manual_seed(6)
        training._set_rng_state(state)
        assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------------- a step's end and a resume


def test_the_step_ends_with_a_checkpoint_every_n_steps_but_the_last_and_when_stopped(monkeypatch, tmp_path):
    saved, extras, stop_at = [], [], {7}
    monkeypatch.setattr(training.preemption, "requested", lambda device: step in stop_at)
    monkeypatch.setattr(training, "save_on_main", lambda *args: saved.append(args))
    env, objects = training.Dist(), ("model", "optimizer", "scheduler")

    def extra():
        extras.append(step)
        return {"at": step}

    stops = []
    for step in range(1, 11):
        stops.append(training.end_of_step(env, step, 10, 3, tmp_path, *objects, extra))
    assert stops == [step == 7 for step in range(1, 11)]
    assert saved == [(env, tmp_path, s, *objects, {"at": s}) for s in (3, 6, 7, 9)] and extras == [3, 6, 7, 9]
    saved.clear()
    for step in range(1, 10):  # 9 steps: the last is a multiple of 3, and its state is the outputs'
        training.end_of_step(env, step, 9, 3, tmp_path, *objects, extra)
    assert [args[2] for args in saved] == [3, 6, 7]


def test_the_stop_flag_is_asked_on_the_ranks_device(monkeypatch, tmp_path):
    asked = []
    monkeypatch.setattr(training.preemption, "requested", lambda device: asked.append(device) or True)
    monkeypatch.setattr(training, "save_on_main", lambda *args: None)
    env = training.Dist(device=torch.device("meta"))
    assert training.end_of_step(env, 10, 10, 3, tmp_path, None, None, None, dict) is True
    assert asked == [torch.device("meta")]


def test_rank_0_saves_with_every_ranks_random_state_and_the_others_wait(monkeypatch, tmp_path):
    saved, met = [], []
    monkeypatch.setattr(training, "rank_rng_states", lambda: ["rank 0's", "rank 1's"])
    monkeypatch.setattr(training, "save_checkpoint", lambda *args, **kwargs: saved.append((args, kwargs)))
    monkeypatch.setattr(training, "inject_kill", lambda step: met.append(("kill?", step)))
    monkeypatch.setattr(training.dist, "barrier", lambda: met.append("barrier"))
    for rank in (0, 1):
        training.save_on_main(training.Dist(rank=rank, world_size=2), tmp_path, 4, "m", "o", "s", {"x": 1})
    assert saved == [((tmp_path, 4, "m", "o", "s"), {"rng_per_rank": ["rank 0's", "rank 1's"], "extra": {"x": 1}})]
    assert met == [("kill?", 4), "barrier", "barrier"]
    met.clear()
    training.save_on_main(training.Dist(), tmp_path, 5, "m", "o", "s", {})  # one process: no barrier
    assert met == [("kill?", 5)]


def test_the_kill_comes_right_after_its_steps_checkpoint(monkeypatch):
    import signal

    killed = []
    monkeypatch.setattr(training.os, "kill", lambda pid, sig: killed.append((pid, sig)))
    monkeypatch.setenv("SPARSEBERT_KILL_AT_STEP", "3")
    training.inject_kill(2)
    assert killed == []
    training.inject_kill(3)
    assert killed == [(training.os.getpid(), signal.SIGKILL)]


def test_a_preempted_rank_leaves_the_group_then_exits_75(monkeypatch, tmp_path):
    order = []
    monkeypatch.setattr(training, "teardown_distributed", lambda: order.append("teardown"))
    monkeypatch.setattr(training.preemption, "exit_preempted", lambda step, state: order.append(("exit", step, state)))
    training.stop_preempted(8, tmp_path)
    assert order == ["teardown", ("exit", 8, tmp_path)]


def test_resume_loads_the_latest_checkpoint_or_starts_at_0(tmp_path, caplog):
    def run():
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)

    model, optimizer, scheduler = run()
    assert training.resume(tmp_path, model, optimizer, scheduler, 10) == (0, {})
    for step in (2, 4):
        with torch.no_grad():
            model.weight.fill_(step)
        training.save_checkpoint(tmp_path, step, model, optimizer, scheduler, extra={"at": step})
    model, optimizer, scheduler = run()
    with caplog.at_level("INFO", logger="sparsebert.training"):
        assert training.resume(tmp_path, model, optimizer, scheduler, 10) == (4, {"at": 4})
    assert model.weight.tolist() == [[4.0, 4.0]]
    assert caplog.messages == [f"resumed from {tmp_path / 'step-00000004'} (step 4 of 10)"]


def test_the_bare_model_is_under_the_ddp_wrapper_or_is_the_model():
    class Wrapper:
        module = "the model"

    assert training.unwrap(Wrapper()) == "the model"
    lone = torch.nn.Linear(1, 1)
    assert training.unwrap(lone) is lone
    assert training.wrap_ddp(lone, training.Dist()) is lone  # one process: no wrapper


@pytest.mark.parametrize("device, ids", [(torch.device("cuda:1"), [1]), (torch.device("cpu"), None)])
def test_ddp_runs_on_the_ranks_gpu(monkeypatch, device, ids):
    made = []
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel",
                        lambda module, device_ids=None, forward_sync_buffers=True: made.append((module, device_ids)))
    model = torch.nn.Linear(2, 2)
    training.wrap_ddp(model, training.Dist(world_size=2, device=device))
    assert made == [(model, ids)]


# --------------------------------------------------------------------------------------- batches to the device


def test_batches_go_to_a_gpu_through_pinned_memory_without_waiting_and_keep_their_dtypes(copies):
    """Fine-tuning's batches: a regression task's float labels stay float (pretraining's to_device widens)."""
    batch = {"input_ids": torch.zeros(2, 4, dtype=torch.int64), "labels": torch.zeros(2, dtype=torch.float32)}
    out = training.to_device(batch, "cuda")
    assert copies == ["pin", ("cuda", True)] * 2
    assert list(out) == ["input_ids", "labels"] and [v.dtype for v in out.values()] == [torch.int64, torch.float32]
    copies.clear()
    training.to_device(batch, torch.device("cpu"))
    assert copies == [("cpu", False)] * 2  # nothing pinned on the CPU
