"""The loop skeleton in sparsebert/training.py: how a global batch is shared out over ranks and micro-batches,
and gradient accumulation (expected values computed by hand or with plain torch, not with the helpers)."""

from __future__ import annotations

import inspect
import re
from contextlib import contextmanager, nullcontext

import numpy as np
import pytest
import torch

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
