"""sparsebert.preemption in this process: which signals set the flag, the fault injection's step and rank, and
the exit (code 75, one log line). The end-to-end stops and resumes are in test_preemption.py."""

from __future__ import annotations

import logging
import os
import signal
import threading

import pytest

from conftest import gloo_group

from sparsebert import preemption


pytestmark = pytest.mark.usefixtures("preemption_flag_cleared")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_sigterm_and_sigusr1_set_the_flag(sig):
    preemption.install()
    assert not preemption.requested()
    os.kill(os.getpid(), sig)
    assert preemption.requested() and preemption._received == [sig]


def test_a_signal_before_a_later_install_still_stops_the_loop():
    """`finetune --tasks` installs once per task: SIGTERM during task 1's evaluation must stop task 2, not be
    forgotten until SLURM's SIGKILL."""
    preemption.install()
    os.kill(os.getpid(), signal.SIGUSR1)
    preemption.install()
    assert preemption.requested() and preemption._received == [signal.SIGUSR1]


def test_install_outside_the_main_thread_leaves_the_handlers_alone():
    before = [signal.getsignal(sig) for sig in preemption.SIGNALS]
    errors = []

    def install():
        try:
            preemption.install()
        except Exception as e:  # noqa: BLE001 - the test reports any
            errors.append(e)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()
    assert errors == [] and [signal.getsignal(sig) for sig in preemption.SIGNALS] == before


@pytest.mark.parametrize("local", [False, True])
def test_under_ddp_the_flag_goes_through_an_all_reduce(tmp_path, monkeypatch, local):
    import torch.distributed as dist

    calls = []
    all_reduce = dist.all_reduce
    monkeypatch.setattr(dist, "all_reduce", lambda t, op: calls.append((t.tolist(), op)) or all_reduce(t, op=op))
    with gloo_group(tmp_path):
        preemption.install()
        if local:
            os.kill(os.getpid(), signal.SIGTERM)
        assert preemption.requested() is local
    assert calls == [([1.0 if local else 0.0], dist.ReduceOp.MAX)]


@pytest.mark.parametrize("spec, step, rank, signalled", [
    ("3", 2, 0, False), ("3", 3, 0, True), ("3", 3, 1, True), ("3:1", 3, 0, False), ("3:1", 3, 1, True),
    ("3:1", 4, 1, False), ("", 3, 0, False),
])
def test_the_injected_signal_comes_at_its_step_and_rank(monkeypatch, spec, step, rank, signalled):
    preemption.install()
    monkeypatch.setenv("SPARSEBERT_SIGNAL_AT_STEP", spec)
    preemption.inject(step, rank)
    assert preemption._received == ([signal.SIGTERM] if signalled else [])


def test_the_injection_counts_this_process_as_rank_0_by_default(monkeypatch):
    preemption.install()
    monkeypatch.setenv("SPARSEBERT_SIGNAL_AT_STEP", "2:0")
    preemption.inject(2)
    assert preemption._received == [signal.SIGTERM]


def test_no_injection_without_the_variable():
    preemption.install()
    preemption.inject(1)
    assert preemption._received == []


@pytest.mark.parametrize("received, name", [([signal.SIGUSR1], "SIGUSR1"), ([], "a signal")])
def test_the_exit_says_which_step_was_saved_and_exits_75(caplog, received, name):
    preemption._received[:] = received
    with caplog.at_level(logging.WARNING), pytest.raises(preemption.Preempted) as stop:
        preemption.exit_preempted(12, "results/x/state")
    assert stop.value.code == 75 and stop.value.step == 12 and isinstance(stop.value, SystemExit)
    assert [r.getMessage() for r in caplog.records] == [
        f"preempted: {name} received; stopped after step 12 with a checkpoint in results/x/state; exit 75, a rerun "
        f"resumes from step 12"]
