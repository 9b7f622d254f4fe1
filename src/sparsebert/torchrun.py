"""`python -m sparsebert.torchrun ARGS`: torchrun, whose grace period before it kills signalled workers is
TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds on every torch release.

torchrun forwards SLURM's early SIGTERM to its workers and SIGKILLs those still running after the grace period.
A worker needs it for the rest of its optimizer step and a checkpoint write (BERT-base: 1.3 GB), more than 30 s
at 2-4 GPUs or on a slow shared filesystem. torch >= 2.13 reads the grace from TORCH_ELASTIC_SHUTDOWN_TIMEOUT;
older releases (2.11 on the GPU boxes we were lent) wait a fixed 30 s: there the default of the process
context's `close(timeout=30)`, which the agent calls without a timeout, becomes the variable's value. Which
case applies is read from the API (LaunchConfig's fields), not from the version.
"""

from __future__ import annotations

import dataclasses
import os

ENV = "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"


def reads_shutdown_timeout() -> bool:
    """Whether this torch's launcher takes its grace period from ENV itself (LaunchConfig.shutdown_timeout)."""
    from torch.distributed.launcher.api import LaunchConfig

    return "shutdown_timeout" in {f.name for f in dataclasses.fields(LaunchConfig)}


def grant_grace(seconds: int) -> None:
    """Make `seconds` the grace period of an older torchrun: the default timeout of PContext.close."""
    from torch.distributed.elastic.multiprocessing import api

    close = api.PContext.close

    def close_with_grace(self, death_sig=None, timeout: int = seconds) -> None:
        close(self, death_sig, timeout)

    api.PContext.close = close_with_grace


def main() -> None:
    from torch.distributed.run import main as torchrun

    if ENV in os.environ and not reads_shutdown_timeout():
        grant_grace(int(os.environ[ENV]))
    torchrun()


if __name__ == "__main__":
    main()
