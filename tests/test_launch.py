"""src/sparsebert/launch.py: the command prefixes for one process, one node and several nodes; the resources
they are decided from; and GPU slots, which give concurrent jobs on one machine disjoint GPUs (tested on the
CPU with a stated GPU count)."""

import os
import select
import shlex
import signal
import subprocess
import sys
import time

import pytest

from sparsebert.launch import from_resources, gpus_per_node, launcher, rule_resources

SLOTS = "python -m sparsebert.launch --gpus"


@pytest.mark.parametrize(
    ("nodes", "gpus", "cpu_procs", "expected"),
    [
        (1, 0, 0, "python"),
        (1, 1, 0, f"{SLOTS} 1 -- python"),  # one GPU needs no process group, but a GPU of its own
        (1, 0, 1, "python"),
        (1, 2, 0, f"{SLOTS} 2 -- torchrun --standalone --nproc_per_node=2"),
        (1, 8, 0, f"{SLOTS} 8 -- torchrun --standalone --nproc_per_node=8"),
        (1, 0, 2, "torchrun --standalone --nproc_per_node=2"),  # CPU DDP (gloo) in tests
        (1, 4, 2, f"{SLOTS} 4 -- torchrun --standalone --nproc_per_node=4"),  # GPUs win over CPU workers
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
        ({"gpu": 8}, 8, f"{SLOTS} 8 -- torchrun --standalone --nproc_per_node=8"),
        ({"gres": "gpu:4"}, 4, f"{SLOTS} 4 -- torchrun --standalone --nproc_per_node=4"),
        ({"gres": "gpu:a100:2"}, 2, f"{SLOTS} 2 -- torchrun --standalone --nproc_per_node=2"),
        ({"gres": "gpu"}, 1, f"{SLOTS} 1 -- python"),
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


def test_rule_resources_defaults_config_then_per_variant():
    config = {"resources": {"pretrain": {"gpu": 8, "mem_mb": 9000,
                                         "per_variant": {"dense": {"gpu": 0, "ddp_cpu_procs": 2}}}}}
    assert rule_resources(config, "pretrain", "star") == {"threads": 1, "gpu": 8, "nodes": 1, "ddp_cpu_procs": 0,
                                                          "mem_mb": 9000, "runtime": 60}
    # a CPU DDP variant takes a core per process
    assert rule_resources(config, "pretrain", "dense") == {"threads": 2, "gpu": 0, "nodes": 1, "ddp_cpu_procs": 2,
                                                           "mem_mb": 9000, "runtime": 60}
    assert rule_resources({}, "finetune")["gpu"] == 0


# ------------------------------------------------------------------------------------------------ GPU slots


def start_job(gpus, lock_dir, machine="2", extra_env=None):
    """A job through the launcher whose command prints the devices it was given, then holds them."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env.update({"SPARSEBERT_GPUS": machine, "SPARSEBERT_GPU_LOCK_DIR": str(lock_dir), **(extra_env or {})})
    hold = "import os, time; print(os.environ.get('CUDA_VISIBLE_DEVICES'), flush=True); time.sleep(120)"
    return subprocess.Popen([sys.executable, "-m", "sparsebert.launch", "--gpus", str(gpus), "--", sys.executable,
                             "-c", hold], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def devices(job, timeout=60):
    """The CUDA_VISIBLE_DEVICES the job's command saw (its first line of output, within `timeout` seconds)."""
    ready, _, _ = select.select([job.stdout], [], [], timeout)
    assert ready, f"the job got no GPUs within {timeout} s"
    line = job.stdout.readline()
    assert line, f"job printed nothing; exit {job.poll()}: {job.stderr.read() if job.poll() is not None else ''}"
    return line.strip()


@pytest.fixture
def jobs():
    started = []
    yield started
    for job in started:
        job.kill()
        job.wait()


def test_concurrent_jobs_get_disjoint_gpus_and_a_killed_jobs_gpus_are_freed(tmp_path, jobs):
    """A 3-GPU machine: jobs of 2 and 1 GPUs run side by side on disjoint devices; a third job waits until
    one of them is SIGKILLed (no cleanup: the OS releases its locks), then gets exactly its GPU."""
    jobs.append(start_job(2, tmp_path, machine="3"))
    first = devices(jobs[-1]).split(",")
    jobs.append(start_job(1, tmp_path, machine="3"))
    second = devices(jobs[-1]).split(",")
    assert len(first) == 2 and len(second) == 1 and not set(first) & set(second)
    assert set(first) | set(second) == {"0", "1", "2"}
    jobs.append(start_job(1, tmp_path, machine="3"))
    waiting = jobs[-1]
    deadline = time.monotonic() + 60
    message = ""
    while "waiting for 1 free GPU(s) of 0,1,2" not in message and time.monotonic() < deadline:
        message += os.read(waiting.stderr.fileno(), 4096).decode()
    assert "waiting for 1 free GPU(s) of 0,1,2" in message and waiting.poll() is None
    os.kill(jobs[1].pid, signal.SIGKILL)  # the launcher executed its command: that pid holds the lock
    assert devices(waiting) == second[0]


def test_a_job_asking_for_more_gpus_than_the_machine_has_fails_at_once(tmp_path, jobs):
    jobs.append(start_job(3, tmp_path, machine="2"))
    assert jobs[-1].wait(timeout=60) == 2
    assert "asks for 3 GPU(s); this machine has 2" in jobs[-1].stderr.read()
    jobs.append(start_job(1, tmp_path, machine="two"))
    assert jobs[-1].wait(timeout=60) == 2 and "SPARSEBERT_GPUS='two' is not a number" in jobs[-1].stderr.read()


def test_slots_come_from_a_restricted_cuda_visible_devices_and_slurm_jobs_are_left_alone(tmp_path, jobs):
    jobs.append(start_job(1, tmp_path, extra_env={"CUDA_VISIBLE_DEVICES": "5,7"}))
    jobs.append(start_job(1, tmp_path, extra_env={"CUDA_VISIBLE_DEVICES": "5,7"}))
    assert sorted(devices(job) for job in jobs) == ["5", "7"]
    # Under SLURM the allocation chose the devices: nothing is locked, nothing is exported.
    jobs.append(start_job(4, tmp_path, machine="1", extra_env={"SLURM_JOB_ID": "42"}))
    assert devices(jobs[-1]) == "None"
    jobs.append(start_job(4, tmp_path, machine="1", extra_env={"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "3"}))
    assert devices(jobs[-1]) == "3"
