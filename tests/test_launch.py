"""The command prefixes that src/sparsebert/launch.py builds for one process, one node and several nodes."""

import shlex

import pytest

from sparsebert.launch import from_resources, gpus_per_node, launcher


@pytest.mark.parametrize(
    ("nodes", "gpus", "cpu_procs", "expected"),
    [
        (1, 0, 0, "python"),
        (1, 1, 0, "python"),  # one GPU needs no process group
        (1, 0, 1, "python"),
        (1, 2, 0, "torchrun --standalone --nproc_per_node=2"),
        (1, 8, 0, "torchrun --standalone --nproc_per_node=8"),
        (1, 0, 2, "torchrun --standalone --nproc_per_node=2"),  # CPU DDP (gloo) in tests
        (1, 4, 2, "torchrun --standalone --nproc_per_node=4"),  # GPUs win over CPU workers
    ],
)
def test_single_node(nodes, gpus, cpu_procs, expected):
    assert launcher(nodes, gpus, cpu_procs) == expected


def test_multi_node_is_srun_with_c10d_rendezvous_on_the_first_node():
    cmd = launcher(2, 8)
    setup, run = cmd.split(" && ")
    # MASTER_ADDR: the first host of the allocation, resolved inside the job.
    assert setup.startswith("export MASTER_ADDR=$(scontrol show hostnames ")
    assert "squeue -h -j \"$SLURM_JOB_ID\" -o %N" in setup and setup.endswith("| head -n 1)")
    argv = shlex.split(run)
    assert argv[:5] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    torchrun = argv[argv.index("torchrun") :]
    assert torchrun == [
        "torchrun",
        "--nnodes=2",
        "--nproc_per_node=8",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=$MASTER_ADDR:29500",
        "--rdzv_id=$SLURM_JOB_ID",
    ]
    # Snakemake formats shell strings with {}: the prefix must contain none.
    assert "{" not in cmd and "}" not in cmd


def test_multi_node_cpu_and_errors():
    assert "--nproc_per_node=2" in launcher(3, 0, cpu_procs=2) and "--nnodes=3" in launcher(3, 0, cpu_procs=2)
    for bad in [(0, 1, 0), (1, -1, 0), (1, 0, -2), (2, 0, 0)]:
        with pytest.raises(ValueError):
            launcher(*bad)


@pytest.mark.parametrize(
    ("resources", "per_node", "expected_start"),
    [
        ({}, 0, "python"),
        ({"gpu": 8}, 8, "torchrun --standalone --nproc_per_node=8"),
        ({"gres": "gpu:4"}, 4, "torchrun --standalone --nproc_per_node=4"),
        ({"gres": "gpu:a100:2"}, 2, "torchrun --standalone --nproc_per_node=2"),
        ({"gres": "gpu"}, 1, "python"),
        ({"ddp_cpu_procs": 2}, 0, "torchrun --standalone --nproc_per_node=2"),
        ({"nodes": 2, "gres": "gpu:8"}, 8, "export MASTER_ADDR="),  # gres counts per node
        ({"nodes": 2, "gpu": 16}, 8, "export MASTER_ADDR="),  # gpu counts per job
    ],
)
def test_from_resources(resources, per_node, expected_start):
    assert gpus_per_node(resources) == per_node
    assert from_resources(resources).startswith(expected_start)
    if resources.get("nodes"):
        assert f"--nproc_per_node={per_node}" in from_resources(resources)
