"""How a training rule starts its processes: the command prefix that replaces `python` in its shell.

    python -m sparsebert pretrain ...            one process (CPU, or one GPU)
    torchrun --standalone ... -m sparsebert ...  one node, one process per GPU (or per CPU worker, gloo)
    export MASTER_ADDR=...; srun ... torchrun    several nodes: srun starts one torchrun per node and they
                                                 meet at a c10d rendezvous on the job's first node

Rules call `launcher()` (or `from_resources(resources)` in a `params:` function), so the decision comes
from the same resources that the SLURM profile turns into `sbatch --nodes/--gpus/--gres`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# Port of the c10d rendezvous store on the first node; torchrun's own default.
RDZV_PORT = 29500


def launcher(nodes: int, gpus_per_node: int, cpu_procs: int = 0) -> str:
    """Command prefix for `nodes` nodes with `gpus_per_node` GPUs each (one process per GPU).

    Without GPUs, `cpu_procs` > 1 starts that many CPU processes on one node (the training loop then
    picks the gloo backend); this is how tests exercise DDP on machines without GPUs.
    """
    if nodes < 1 or gpus_per_node < 0 or cpu_procs < 0:
        raise ValueError(f"need nodes >= 1 and non-negative counts, got {nodes=} {gpus_per_node=} {cpu_procs=}")
    procs = gpus_per_node or cpu_procs
    if nodes > 1:
        if procs < 1:
            raise ValueError(f"a {nodes}-node job needs gpus_per_node (or cpu_procs) >= 1")
        return srun_torchrun(nodes, procs)
    if procs <= 1:
        return "python"
    # --standalone: a private rendezvous on localhost with a free port, so two jobs on one node never collide.
    return f"torchrun --standalone --nproc_per_node={procs}"


def srun_torchrun(nodes: int, procs_per_node: int) -> str:
    """srun starts one torchrun per node inside the SLURM allocation; they rendezvous on the first node.

    MASTER_ADDR is read from the allocation's node list when the command runs, not when the DAG is built.
    The snakemake job step keeps only SLURM_JOB_ID of the allocation's variables, so the node list is asked
    from squeue when SLURM_JOB_NODELIST is absent. Uses `$VAR`, never `${VAR}`, so that the string
    survives Snakemake's `{}` formatting if someone pastes it into a shell directive.
    """
    nodelist = '"$(squeue -h -j "$SLURM_JOB_ID" -o %N)"'
    return (
        f"export MASTER_ADDR=$(scontrol show hostnames {nodelist} | head -n 1) && "
        # --kill-on-bad-exit: one node dying ends the step instead of leaving the others waiting forever.
        f"srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --kill-on-bad-exit=1 "
        f"torchrun --nnodes={nodes} --nproc_per_node={procs_per_node} "
        f"--rdzv_backend=c10d --rdzv_endpoint=$MASTER_ADDR:{RDZV_PORT} --rdzv_id=$SLURM_JOB_ID"
    )


def gpus_per_node(resources: Mapping) -> int:
    """GPUs per node from Snakemake resources: `gres: gpu[:type]:N` is per node; `gpu: N` is per job."""
    gres = str(resources.get("gres") or "")
    match = re.fullmatch(r"gpu(?::[\w.]+)?:(\d+)", gres)
    if match:
        return int(match.group(1))
    if gres == "gpu":
        return 1
    nodes = int(resources.get("nodes") or 1)
    return int(resources.get("gpu") or 0) // nodes


def from_resources(resources: Mapping) -> str:
    """`launcher()` decided by a job's resources: `nodes`, `gpu`/`gres`, and `ddp_cpu_procs` (CPU DDP)."""
    return launcher(
        int(resources.get("nodes") or 1),
        gpus_per_node(resources),
        int(resources.get("ddp_cpu_procs") or 0),
    )
