"""Graceful preemption: SIGTERM or SIGUSR1 stops a training loop at the next optimizer step boundary.

SLURM sends SIGTERM at a time limit or a preemption and SIGKILL about 30 s later (KillWait / GraceTime);
`sbatch --signal=SIG@SECONDS` sends a signal ahead of the limit (the SLURM profile asks for SIGTERM 5 min
early; SIGUSR1 is handled too, for jobs started outside Snakemake). The handler only sets a flag. After
each optimizer step the loop asks `requested()`: under DDP the ranks all-reduce the flag, so every rank
stops after the same step even if only one of them (or only torchrun) was signalled. The loop then writes
a checkpoint of that step and calls `exit_preempted`, which exits with EXIT_CODE, so that Snakemake or
SLURM reruns the job and the rerun resumes from exactly that step.

    preemption.install()                      # once, before the loop
    ...
    if preemption.requested(device):          # after optimizer.step()
        save checkpoint of step `done`; preemption.exit_preempted(done, state_dir)

Fault injection for the tests: SPARSEBERT_SIGNAL_AT_STEP=N[:RANK] makes this process (or only rank RANK)
send itself SIGTERM during step N (after its backward pass, before the optimizer step), i.e. while a
step is half done, the case the loop must finish cleanly.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# EX_TEMPFAIL (sysexits.h): "temporary failure; the user is invited to retry". Distinct from a crash (1) and
# from a UserError (2); the job's log says which step was saved.
EXIT_CODE = 75

_received: list[int] = []  # signal numbers, in arrival order (a list: appending is safe in a handler)


class Preempted(SystemExit):
    """Raised after the checkpoint is written: the process exits with EXIT_CODE."""

    def __init__(self, step: int):
        super().__init__(EXIT_CODE)
        self.step = step


def _handler(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    _received.append(signum)


def install() -> None:
    """Route SIGTERM and SIGUSR1 to the flag (main thread only; elsewhere the default action stays). A flag that
    is already set stays set: `finetune --tasks` installs once per task, and a signal that arrived between two
    tasks (during an evaluation, while writing outputs) must stop the next one at its first step."""
    for sig in SIGNALS:
        try:
            signal.signal(sig, _handler)
        except ValueError:  # not the main thread
            return


def requested(device=None) -> bool:
    """Has any rank been asked to stop? One tiny all-reduce under DDP (every rank must call it each step)."""
    local = bool(_received)
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return local
    import torch

    flag = torch.tensor([1.0 if local else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def inject(step: int, rank: int = 0) -> None:
    """SPARSEBERT_SIGNAL_AT_STEP=N[:RANK]: send this process SIGTERM during step N (1-based, as logged)."""
    spec = os.environ.get("SPARSEBERT_SIGNAL_AT_STEP")
    if not spec:
        return
    at, _, only_rank = spec.partition(":")
    if int(at) == step and (not only_rank or int(only_rank) == rank):
        os.kill(os.getpid(), signal.SIGTERM)


def exit_preempted(step: int, state_dir) -> None:
    """One line to the job's log, then exit EXIT_CODE (the caller has written the checkpoint of `step`)."""
    name = signal.Signals(_received[0]).name if _received else "a signal"
    message = (f"preempted: {name} received; stopped after step {step} with a checkpoint in {state_dir}; "
               f"exit {EXIT_CODE}, a rerun resumes from step {step}")
    log.warning(message)
    raise Preempted(step)
