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
from pathlib import Path

import pytest

from sparsebert.launch import from_resources, gpus_per_node, launcher, rule_resources

REPO = Path(__file__).resolve().parents[1]

SLOTS = "python -m sparsebert.launch --gpus"


@pytest.mark.parametrize(
    ("nodes", "gpus", "cpu_procs", "expected"),
    [
        (1, 0, 0, "CUDA_VISIBLE_DEVICES= python"),  # no GPU declared: the GPUs hidden, even on a GPU machine
        (1, 1, 0, f"{SLOTS} 1 -- python"),  # one GPU needs no process group, but a GPU of its own
        (1, 0, 1, "CUDA_VISIBLE_DEVICES= python"),
        (1, 2, 0, f"{SLOTS} 2 -- torchrun --standalone --nproc_per_node=2"),
        (1, 8, 0, f"{SLOTS} 8 -- torchrun --standalone --nproc_per_node=8"),
        (1, 0, 2, "CUDA_VISIBLE_DEVICES= torchrun --standalone --nproc_per_node=2"),  # CPU DDP (gloo)
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
    assert launcher(3, 0, cpu_procs=2).startswith("export CUDA_VISIBLE_DEVICES= && export MASTER_ADDR=")
    for bad in [(0, 1, 0), (1, -1, 0), (1, 0, -2), (2, 0, 0), (1, 1, 0, 0)]:
        with pytest.raises(ValueError):
            launcher(*bad)


@pytest.mark.parametrize(
    ("resources", "per_node", "expected_start"),
    [
        ({}, 0, "CUDA_VISIBLE_DEVICES= python"),
        ({"gpu": 8}, 8, f"{SLOTS} 8 -- torchrun --standalone --nproc_per_node=8"),
        ({"gres": "gpu:4"}, 4, f"{SLOTS} 4 -- torchrun --standalone --nproc_per_node=4"),
        ({"gres": "gpu:a100:2"}, 2, f"{SLOTS} 2 -- torchrun --standalone --nproc_per_node=2"),
        ({"gres": "gpu"}, 1, f"{SLOTS} 1 -- python"),
        ({"ddp_cpu_procs": 2}, 0, "CUDA_VISIBLE_DEVICES= torchrun --standalone --nproc_per_node=2"),
        ({"gpu": 1, "jobs_per_gpu": 3}, 1, f"{SLOTS} 1 --jobs-per-gpu 3 -- python"),  # a third of one GPU
        ({"gpu": 0, "jobs_per_gpu": 3}, 0, "CUDA_VISIBLE_DEVICES= python"),  # nothing to share without a GPU
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
                                                          "jobs_per_gpu": 1, "mem_mb": 9000, "runtime": 60}
    # a CPU DDP variant takes a core per process
    assert rule_resources(config, "pretrain", "dense") == {"threads": 2, "gpu": 0, "nodes": 1, "ddp_cpu_procs": 2,
                                                           "jobs_per_gpu": 1, "mem_mb": 9000, "runtime": 60}
    assert rule_resources({}, "finetune")["gpu"] == 0


# ------------------------------------------------------------------------------------------------ GPU slots


def start_job(gpus, lock_dir, machine="2", extra_env=None, share=1):
    """A job through the launcher whose command prints the devices it was given, then holds them."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env.update({"SPARSEBERT_GPUS": machine, "SPARSEBERT_GPU_LOCK_DIR": str(lock_dir), **(extra_env or {})})
    hold = "import os, time; print(os.environ.get('CUDA_VISIBLE_DEVICES'), flush=True); time.sleep(120)"
    return subprocess.Popen([sys.executable, "-m", "sparsebert.launch", "--gpus", str(gpus), "--jobs-per-gpu",
                             str(share), "--", sys.executable, "-c", hold], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


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


def wait_for_message(job, text: str, timeout: float = 60) -> None:
    """Read the job's stderr until `text` appears (the launcher says it is waiting), within `timeout` s."""
    deadline, message = time.monotonic() + timeout, ""
    while text not in message and time.monotonic() < deadline:
        message += os.read(job.stderr.fileno(), 4096).decode()
    assert text in message and job.poll() is None, message


def test_three_jobs_share_one_gpu_with_jobs_per_gpu_3_and_the_fourth_waits(tmp_path, jobs):
    """issue 22: a 1-GPU machine, jobs_per_gpu 3: three 1-GPU jobs all get GPU 0 (three slot files locked); a
    fourth waits until one of them is SIGKILLed, then gets GPU 0."""
    for _ in range(3):
        jobs.append(start_job(1, tmp_path, machine="1", share=3))
        assert devices(jobs[-1]) == "0"
    assert sorted(f.name for f in tmp_path.glob("gpu-*")) == ["gpu-0.lock", "gpu-0.slot1.lock", "gpu-0.slot2.lock"]
    jobs.append(start_job(1, tmp_path, machine="1", share=3))
    wait_for_message(jobs[-1], "waiting for 1 free GPU(s) of 0 (3 job(s) per GPU")
    os.kill(jobs[1].pid, signal.SIGKILL)
    assert devices(jobs[-1]) == "0"


def test_shared_jobs_spread_over_the_gpus_before_they_pile_onto_one(tmp_path, jobs):
    """2 GPUs, 2 jobs per GPU: the first two jobs get GPUs 0 and 1 (slot 0 of each), the next two the second
    slots; a 2-GPU job then waits (no GPU has a free slot), and takes one slot on each of two GPUs."""
    for expected in ("0", "1", "0", "1"):
        jobs.append(start_job(1, tmp_path, machine="2", share=2))
        assert devices(jobs[-1]) == expected
    jobs.append(start_job(2, tmp_path, machine="2", share=2))
    wait_for_message(jobs[-1], "waiting for 2 free GPU(s) of 0,1")
    # GPU 0's two jobs end: two free slots on one GPU are not two GPUs, the job still waits ...
    for job in (jobs[0], jobs[2]):
        os.kill(job.pid, signal.SIGKILL)
    ready, _, _ = select.select([jobs[-1].stdout], [], [], 6)  # the launcher polls every 2 s
    assert not ready, jobs[-1].stdout.readline()
    os.kill(jobs[1].pid, signal.SIGKILL)  # ... until a slot of GPU 1 frees
    assert devices(jobs[-1]) == "0,1"


def test_a_job_without_a_gpu_sees_none_on_a_gpu_machine(tmp_path):
    """The prefix of a job that declares no GPU, run by a shell as Snakemake runs it, on a machine whose
    CUDA_VISIBLE_DEVICES lists GPUs: the command sees an empty list, so torch finds no GPU and the training
    loop's setup_distributed picks the CPU and gloo."""
    probe = ("import os, torch; from sparsebert.training import setup_distributed; "
             "print(repr(os.environ['CUDA_VISIBLE_DEVICES']), torch.cuda.is_available(), setup_distributed().device)")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1", "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-c", f"{launcher(1, 0)} -c {shlex.quote(probe)}"], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout  # fmt: skip
    assert out.split() == ["''", "False", "cpu"]


def test_the_smoke_configs_cpu_ddp_job_runs_on_the_cpu():
    """config/smoke.yaml's dense pretraining is 2-process CPU DDP: on a one-GPU machine its rank 1 asked for
    cuda:1 (issue 22). Its prefix hides the GPUs; the other variants run on the CPU alike."""
    import yaml

    smoke = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    assert from_resources(rule_resources(smoke, "pretrain", "dense")) == (
        "CUDA_VISIBLE_DEVICES= torchrun --standalone --nproc_per_node=2")
    assert from_resources(rule_resources(smoke, "pretrain", "longformer")) == "CUDA_VISIBLE_DEVICES= python"


def test_setup_distributed_refuses_a_rank_without_a_gpu(monkeypatch):
    """A GPU machine where torch sees 1 GPU and the process is local rank 1 (CPU DDP with the GPUs not hidden):
    one clear error instead of "invalid device ordinal" later."""
    import torch

    from sparsebert.io import UserError
    from sparsebert.training import setup_distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="local rank 1 has no GPU: this process sees 1"):
        setup_distributed()
