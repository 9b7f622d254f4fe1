"""src/sparsebert/launch.py: the command prefixes for one process, one node and several nodes; the resources
they are decided from; and GPU slots, which give concurrent jobs on one machine disjoint GPUs (tested on the
CPU with a stated GPU count)."""

import fcntl
import os
import re
import select
import shlex
import signal
import stat
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from sparsebert import launch
from sparsebert.launch import (
    SlotError,
    _try_lock,
    acquire,
    from_resources,
    gpus_per_node,
    launcher,
    lock_names,
    machine_gpus,
    main,
    nvidia_smi_gpus,
    rule_resources,
    run_on_gpus,
    slot_file,
)

REPO = Path(__file__).resolve().parents[1]

SLOTS = "python -m sparsebert.launch --gpus"
# torchrun's grace before it SIGKILLs a signalled worker (launch.TORCHRUN_SHUTDOWN; 30 s by default)
GRACE = "TORCH_ELASTIC_SHUTDOWN_TIMEOUT=240"
TORCHRUN = "python -m sparsebert.torchrun"  # torchrun, reading the grace on every torch release


@pytest.mark.parametrize(
    ("nodes", "gpus", "cpu_procs", "expected"),
    [
        (1, 0, 0, "CUDA_VISIBLE_DEVICES= python"),  # no GPU declared: the GPUs hidden, even on a GPU machine
        (1, 1, 0, f"{SLOTS} 1 -- python"),  # one GPU needs no process group, but a GPU of its own
        (1, 0, 1, "CUDA_VISIBLE_DEVICES= python"),
        (1, 2, 0, f"{GRACE} {SLOTS} 2 -- {TORCHRUN} --standalone --nproc_per_node=2"),
        (1, 8, 0, f"{GRACE} {SLOTS} 8 -- {TORCHRUN} --standalone --nproc_per_node=8"),
        (1, 0, 2, f"CUDA_VISIBLE_DEVICES= {GRACE} {TORCHRUN} --standalone --nproc_per_node=2"),  # CPU DDP (gloo)
        (1, 4, 2, f"{GRACE} {SLOTS} 4 -- {TORCHRUN} --standalone --nproc_per_node=4"),  # GPUs win over CPU workers
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
    # the node list is one quoted word for scontrol (squeue's output, unquoted, would be split by the shell)
    assert setup == 'export MASTER_ADDR=$(scontrol show hostnames "$(squeue -h -j "$SLURM_JOB_ID" -o %N)" | head -n 1)'
    argv = shlex.split(run)
    assert argv[:6] == [GRACE, "srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    torchrun = argv[argv.index("sparsebert.torchrun") - 2 :]
    assert torchrun == [
        "python", "-m", "sparsebert.torchrun",
        "--nnodes=2",
        "--nproc_per_node=8",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=$MASTER_ADDR:29500",
        "--rdzv_id=$SLURM_JOB_ID",
    ]
    # Snakemake formats shell strings with {}: the prefix must contain none.
    assert "{" not in cmd and "}" not in cmd


def test_torchrun_grace_is_the_variable_torch_reads_and_ends_before_the_wall_time(monkeypatch):
    """TORCH_ELASTIC_SHUTDOWN_TIMEOUT is what torch's launcher reads for the seconds between forwarding a SIGTERM
    to the workers and killing them (torch >= 2.13; older ones ignore the variable and wait 30 s), and the
    grace ends before the wall time that the SLURM profile's early signal (--signal=TERM@N) announces."""
    import inspect

    import yaml
    from torch.distributed.launcher.api import LaunchConfig

    name, seconds = launch.TORCHRUN_SHUTDOWN.split("=")
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    leads = {int(m) for m in re.findall(r"--signal=TERM@(\d+)", str(profile["set-resources"]))}
    assert leads and all(int(seconds) < lead for lead in leads)
    if "shutdown_timeout" not in inspect.signature(LaunchConfig).parameters:
        pytest.skip("this torch's launcher reads no shutdown timeout: sparsebert.torchrun grants it (tests below)")
    monkeypatch.setenv(name, seconds)
    assert LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=2).shutdown_timeout == int(seconds)


GRACEFUL_WORKER = """
import signal, sys, time
from pathlib import Path

def stop(*_):  # as a training step finishing and writing its checkpoint
    time.sleep(float(sys.argv[2]))
    Path(sys.argv[1], "finished").touch()
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
Path(sys.argv[1], "ready").touch()
time.sleep(120)
"""


@pytest.mark.slow
@pytest.mark.parametrize(("grace", "finishes"), [(1, False), (20, True)])
def test_torchrun_gives_a_signalled_worker_the_grace_of_the_variable(tmp_path, grace, finishes):
    """The launcher's torchrun forwards a SIGTERM to its worker, which needs 6 s to stop: with a grace of 1 s it is
    killed first, with 20 s it finishes. On a torch that ignores the variable (2.11: a fixed 30 s) the first case
    finishes too, unless sparsebert.torchrun sets the grace (benchmarks/torch_compat.sh 2.11.0 runs this)."""
    worker = tmp_path / "worker.py"
    worker.write_text(GRACEFUL_WORKER)
    env = {**os.environ, "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(grace)}
    proc = subprocess.Popen([sys.executable, "-m", "sparsebert.torchrun", "--standalone", "--nproc_per_node=1",
                             str(worker), str(tmp_path), "6"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert (tmp_path / "finished").exists() == finishes


def test_grant_grace_makes_the_seconds_the_timeout_of_a_close_that_names_none(monkeypatch):
    """torch 2.11's agent calls `PContext.close(death_sig)`: the granted seconds replace close's 30; a caller's own
    timeout is kept."""
    from torch.distributed.elastic.multiprocessing import api

    from sparsebert import torchrun

    calls, context = [], object()  # the process context whose workers are stopped
    monkeypatch.setattr(api.PContext, "close", lambda self, death_sig=None, timeout=30: calls.append(
        (self, death_sig, timeout)))
    torchrun.grant_grace(7)
    api.PContext.close(context)
    api.PContext.close(context, signal.SIGTERM)
    api.PContext.close(context, signal.SIGINT, 3)
    assert calls == [(context, None, 7), (context, signal.SIGTERM, 7), (context, signal.SIGINT, 3)]


@pytest.mark.parametrize(("env", "reads", "granted"), [("240", False, [240]), ("240", True, []), (None, False, [])])
def test_sparsebert_torchrun_grants_the_grace_only_where_torch_would_not(monkeypatch, env, reads, granted):
    """An older torch gets the variable's seconds; one that reads the variable itself, or no variable, is left
    alone. Either way torchrun itself runs."""
    import torch.distributed.run

    from sparsebert import torchrun

    ran, grants = [], []
    monkeypatch.setattr(torch.distributed.run, "main", lambda: ran.append(True))
    monkeypatch.setattr(torchrun, "reads_shutdown_timeout", lambda: reads)
    monkeypatch.setattr(torchrun, "grant_grace", grants.append)
    if env is None:
        monkeypatch.delenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", env)
    torchrun.main()
    assert ran == [True] and grants == granted


def test_whether_torch_reads_the_grace_itself_is_told_by_its_api():
    """torch 2.13's launcher reads the variable (LaunchConfig.shutdown_timeout), 2.11's does not (their sources)."""
    import torch

    from sparsebert import torchrun

    release = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    assert torchrun.reads_shutdown_timeout() == (release >= (2, 13))


def test_launcher_defaults_and_boundary_counts():
    """One GPU per node is a valid multi-node job; a node count without GPUs or CPU processes (cpu_procs defaults
    to 0, and so does `ddp_cpu_procs` in the resources) is refused with a message; sharing starts at 2 jobs."""
    assert "--nnodes=2 --nproc_per_node=1 " in launcher(2, 1)
    with pytest.raises(ValueError, match="a 2-node job needs gpus_per_node \\(or cpu_procs\\) >= 1"):
        launcher(2, 0)
    with pytest.raises(ValueError, match="a 3-node job needs"):
        from_resources({"nodes": 3})
    with pytest.raises(ValueError, match="need nodes >= 1, jobs_per_gpu >= 1 and non-negative counts, got nodes=0"):
        launcher(0, 1)
    assert launcher(1, 1, 0, 2) == f"{SLOTS} 1 --jobs-per-gpu 2 -- python"


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
        ({"gpu": 8}, 8, f"{GRACE} {SLOTS} 8 -- {TORCHRUN} --standalone --nproc_per_node=8"),
        ({"gres": "gpu:4"}, 4, f"{GRACE} {SLOTS} 4 -- {TORCHRUN} --standalone --nproc_per_node=4"),
        ({"gres": "gpu:a100:2"}, 2, f"{GRACE} {SLOTS} 2 -- {TORCHRUN} --standalone --nproc_per_node=2"),
        ({"gres": "gpu"}, 1, f"{SLOTS} 1 -- python"),
        ({"ddp_cpu_procs": 2}, 0, f"CUDA_VISIBLE_DEVICES= {GRACE} {TORCHRUN} --standalone --nproc_per_node=2"),
        ({"gpu": 1, "jobs_per_gpu": 3}, 1, f"{SLOTS} 1 --jobs-per-gpu 3 -- python"),  # a third of one GPU
        ({"gpu": 0, "jobs_per_gpu": 3}, 0, "CUDA_VISIBLE_DEVICES= python"),  # nothing to share without a GPU
        ({"nodes": 2, "gres": "gpu:8"}, 8, "export MASTER_ADDR="),  # gres counts per node
        ({"nodes": 2, "gpu": 16}, 8, "export MASTER_ADDR="),  # gpu counts per job
    ],
)
def test_from_resources(resources, per_node, expected_start):
    assert gpus_per_node(resources) == per_node
    assert from_resources(resources).startswith(expected_start)
    # what validate.py's GPU-sharing check asks: does the job take this machine's slots
    assert launch.takes_gpu_slots(resources) == (SLOTS in from_resources(resources))
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
    # Under SLURM, with fewer GPUs in sight than the job asks for, the allocation chose the devices: nothing is
    # locked, nothing is exported.
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
        f"CUDA_VISIBLE_DEVICES= {GRACE} {TORCHRUN} --standalone --nproc_per_node=2")
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


# ------------------------------------------------------------------------- GPU slots, in process
# The subprocess tests above check real concurrency; these call the slot functions in this process (where
# mutation testing sees them) with hand-made environments, locks held by the test and os.execvpe recorded.


class Waited(Exception):
    """Raised by the stand-in for time.sleep: acquire found too few free slots and would wait."""


@pytest.fixture
def sleeps(monkeypatch):
    """The launcher's time.sleep recorded and turned into Waited, so that a test never waits (a test may patch it
    again). The launcher's own `time`, not the module: subprocess.run's wait for a stand-in nvidia-smi sleeps
    too, and raised Waited whenever the child had not finished at its first poll."""
    calls = []

    def sleep(seconds):
        calls.append(seconds)
        raise Waited

    monkeypatch.setattr(launch, "time", types.SimpleNamespace(sleep=sleep, monotonic=time.monotonic))
    return calls


def fds_under(directory: Path) -> dict[int, str]:
    """This process's open descriptors of files in `directory` (fd -> file name), read from /proc/self/fd."""
    found = {}
    for entry in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if os.path.dirname(target) == str(directory):
            found[int(entry)] = os.path.basename(target)
    return found


@pytest.fixture
def lock_dir(tmp_path, sleeps):
    """A lock directory of the test's own; the descriptors still open on its files at the end are closed."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("counts descriptors through /proc/self/fd (Linux)")
    directory = tmp_path.resolve() / "locks"
    yield directory
    for fd in [*fds_under(directory), *(fd for sub in directory.glob("slurm-*") for fd in fds_under(sub))]:
        os.close(fd)


def hold(path: Path) -> int:
    """Lock `path` as another job would: an open file description of its own with the flock (two open file
    descriptions conflict even in one process)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def locked(path: Path) -> bool:
    """Whether some open file description holds the flock of `path` (probed with a non-blocking lock)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also frees the probe's own lock


def test_machine_gpus_from_cuda_visible_devices():
    """A CUDA_VISIBLE_DEVICES restriction lists the GPUs (blanks and empty entries dropped) and wins over a
    stated count; an empty one means no GPU, and so do the entries from one CUDA stops at."""
    environ = {"CUDA_VISIBLE_DEVICES": " 5, 7,,GPU-ab12 ", "SPARSEBERT_GPUS": "8"}
    assert machine_gpus(environ) == ["5", "7", "GPU-ab12"]
    assert machine_gpus({"CUDA_VISIBLE_DEVICES": "", "SPARSEBERT_GPUS": "8"}) == []
    # CUDA stops at the first invalid entry: "-1" hides every GPU, "0,-1,1" shows GPU 0 only; SLURM without GPUs
    assert machine_gpus({"CUDA_VISIBLE_DEVICES": "-1", "SPARSEBERT_GPUS": "8"}) == []
    assert machine_gpus({"CUDA_VISIBLE_DEVICES": "0, -1, 1"}) == ["0"]
    assert machine_gpus({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}) == []


def test_machine_gpus_from_sparsebert_gpus_and_nothing_without_nvidia_smi(monkeypatch, tmp_path):
    """SPARSEBERT_GPUS=N gives GPUs 0..N-1; anything but a plain number is refused, naming the value; neither
    it nor nvidia-smi on the PATH: no GPU."""
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no nvidia-smi
    assert machine_gpus({"SPARSEBERT_GPUS": "3"}) == ["0", "1", "2"]
    assert machine_gpus({"SPARSEBERT_GPUS": "0"}) == []
    for bad in ("two", "-1", "1.5", ""):
        with pytest.raises(SlotError) as error:
            machine_gpus({"SPARSEBERT_GPUS": bad})
        assert str(error.value) == f"SPARSEBERT_GPUS={bad!r} is not a number of GPUs"
    assert machine_gpus({}) == []


def test_machine_gpus_counts_the_gpu_lines_of_nvidia_smi(monkeypatch, tmp_path):
    """Without a restriction or a stated count, the GPUs are those `nvidia-smi -L` lists ("GPU n: ..." lines;
    the MIG lines under a GPU are not GPUs), asked with a time limit (a hung driver must not hang the job)."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text('#!/bin/sh\n[ "$*" = "-L" ] || exit 1\n'
                   'printf "GPU 0: NVIDIA H200 (UUID: GPU-aa)\\n  MIG 1g.18gb Device 0: (UUID: MIG-bb)\\n'
                   'GPU 1: NVIDIA H200 (UUID: GPU-cc)\\nGPU 2: A GPU without a UUID\\n"\n')  # fmt: skip
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    timeouts, real_run = [], subprocess.run

    def run(*args, **kwargs):
        timeouts.append(kwargs.get("timeout"))
        return real_run(*args, **kwargs)

    monkeypatch.setattr(launch.subprocess, "run", run)
    assert machine_gpus({}) == ["0", "1", "2"]
    assert nvidia_smi_gpus() == [("0", "GPU-aa"), ("1", "GPU-cc"), ("2", "")]
    assert timeouts and None not in timeouts


def test_lock_names_are_the_uuids_nvidia_smi_lists():
    """An index names the UUID nvidia-smi lists at that place, a UUID or a unique prefix of one (CUDA takes
    both) the full UUID; an ambiguous prefix, an index nvidia-smi does not list, a MIG instance and every GPU
    of a machine without nvidia-smi keep their CUDA_VISIBLE_DEVICES entry."""
    listed = [("0", "GPU-aa11"), ("1", "GPU-ab22"), ("2", "GPU-cc33")]
    gpus = ["1", "GPU-cc33", "GPU-aa", "GPU-a", "7", "MIG-dd44"]
    assert lock_names(gpus, listed) == {"1": "GPU-ab22", "GPU-cc33": "GPU-cc33", "GPU-aa": "GPU-aa11",
                                        "GPU-a": "GPU-a", "7": "7", "MIG-dd44": "MIG-dd44"}  # fmt: skip
    assert lock_names(["0", "1"], []) == {"0": "0", "1": "1"}
    assert lock_names(["0"], [("0", "")]) == {"0": "0"}  # a GPU line without a UUID


def test_a_hung_nvidia_smi_is_a_slot_error_naming_the_way_out(monkeypatch, tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))

    def hung(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    monkeypatch.setattr(launch.subprocess, "run", hung)
    with pytest.raises(SlotError) as error:
        machine_gpus({})
    assert str(error.value) == ("nvidia-smi -L did not answer in 60 s: the GPU driver does not respond (a GPU job "
                                "asks it for the GPUs' UUIDs, which name their locks)")


def test_slot_file_names():
    """Slot 0 is gpu-<id>.lock, slot k gpu-<id>.slot<k>.lock; letters of both cases, digits, '_', '.' and '-'
    of a device id (a UUID) are kept, any other character (a '/' would name another directory) becomes '_'."""
    d = Path("/locks")
    assert slot_file(d, "0", 0) == d / "gpu-0.lock"
    assert slot_file(d, "3", 1) == d / "gpu-3.slot1.lock"
    assert slot_file(d, "3", 2) == d / "gpu-3.slot2.lock"
    assert slot_file(d, "MIG-GPU-ab12/3/0 x", 0) == d / "gpu-MIG-GPU-ab12_3_0_x.lock"
    assert slot_file(d, "a_b.C-1", 1) == d / "gpu-a_b.C-1.slot1.lock"


def test_try_lock_creates_locks_and_marks_the_file(lock_dir):
    """A new lock file is created open to all users (0o666 whatever the umask), locked, and holds the pid; while
    it is held another attempt gets None and leaves no descriptor open; closing frees it. An old file's longer
    content is replaced."""
    lock_dir.mkdir(parents=True)
    path = lock_dir / "gpu-0.lock"
    umask = os.umask(0o077)
    try:
        fd = _try_lock(path)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    assert path.read_text() == f"{os.getpid()}\n" and locked(path)
    assert _try_lock(path) is None
    assert fds_under(lock_dir) == {fd: "gpu-0.lock"}
    os.close(fd)
    assert not locked(path)
    old = lock_dir / "gpu-1.lock"
    old.write_text("123456789012\n")
    old.chmod(0o600)
    fd = _try_lock(old)
    assert old.read_text() == f"{os.getpid()}\n" and stat.S_IMODE(os.stat(old).st_mode) == 0o666
    os.close(fd)


def test_acquire_refuses_more_gpus_than_the_machine_has(lock_dir):
    """More GPUs than listed: SlotError saying how many and which (or 'none found'), before anything is
    locked; exactly as many as listed is fine."""
    with pytest.raises(SlotError) as error:
        acquire(3, ["0", "1"], lock_dir)
    assert str(error.value).startswith("this job asks for 3 GPU(s); this machine has 2 (['0', '1']; SPARSEBERT_GPUS")
    assert "lower the rule's `gpu`" in str(error.value)
    with pytest.raises(SlotError) as error:
        acquire(1, [], lock_dir)
    assert str(error.value).startswith("this job asks for 1 GPU(s); this machine has 0 (none found; SPARSEBERT_GPUS")
    assert not lock_dir.exists()
    held = acquire(2, ["0", "1"], lock_dir)
    names = fds_under(lock_dir)
    assert [(gpu, names[fd]) for gpu, fd in held] == [("0", "gpu-0.lock"), ("1", "gpu-1.lock")]
    assert sorted(names.values()) == ["gpu-0.lock", "gpu-1.lock"]  # the acquire.lock guard is closed


def test_acquire_creates_the_lock_directory_open_to_all(lock_dir):
    """The lock directory and its parents are created, the directory rwx for all whatever the umask (other users'
    jobs create their slot files there), and the guard file is acquire.lock."""
    nested = lock_dir / "a" / "b"
    umask = os.umask(0o077)
    try:
        held = acquire(1, ["0"], nested)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(nested.stat().st_mode) == 0o777
    assert sorted(os.listdir(nested)) == ["acquire.lock", "gpu-0.lock"]
    os.close(held[0][1])
    assert acquire(1, ["0"], nested)[0][0] == "0"  # the directory exists now


def test_acquire_names_an_unusable_lock_directory(tmp_path, lock_dir):
    """A lock directory that cannot be made (a file is in the way) is a SlotError naming it and the variable
    that moves it."""
    (tmp_path / "file").write_text("")
    bad = tmp_path / "file" / "locks"
    with pytest.raises(SlotError) as error:
        acquire(1, ["0"], bad)
    assert str(error.value).startswith(f"cannot use the GPU lock directory {bad} (")
    assert str(error.value).endswith("); set SPARSEBERT_GPU_LOCK_DIR")


def test_acquire_names_a_lock_file_it_cannot_open(lock_dir):
    """A slot file that cannot be opened (here a directory in its place; for another user, a lock directory they
    may not write in) is a SlotError naming the file, not a traceback."""
    (lock_dir / "gpu-0.lock").mkdir(parents=True)
    with pytest.raises(SlotError) as error:
        acquire(1, ["0"], lock_dir)
    assert str(error.value) == (f"cannot open the GPU lock file {lock_dir / 'gpu-0.lock'} (Is a directory): the lock "
                                "directory must be writable by every user whose jobs share these GPUs, or set "
                                "SPARSEBERT_GPU_LOCK_DIR")


def test_acquire_spreads_shared_jobs_over_the_gpus_before_piling_onto_one(lock_dir):
    """2 GPUs, 2 jobs per GPU: three 1-GPU jobs get slot 0 of GPU 0, slot 0 of GPU 1, then slot 1 of GPU 0."""
    held = [acquire(1, ["0", "1"], lock_dir, jobs_per_gpu=2) for _ in range(3)]
    names = fds_under(lock_dir)
    assert [(gpu, names[fd]) for job in held for gpu, fd in job] == [
        ("0", "gpu-0.lock"), ("1", "gpu-1.lock"), ("0", "gpu-0.slot1.lock")]  # fmt: skip
    assert all(locked(lock_dir / name) for name in names.values())


def test_acquire_takes_distinct_gpus_through_a_second_slot(lock_dir):
    """Slot 0 of GPU 1 held by another job, 2 jobs per GPU: a 2-GPU job takes slot 0 of GPU 0 and slot 1 of
    GPU 1, never two slots of GPU 0."""
    hold(lock_dir / "gpu-1.lock")
    held = acquire(2, ["0", "1"], lock_dir, jobs_per_gpu=2)
    names = fds_under(lock_dir)
    assert [(gpu, names[fd]) for gpu, fd in held] == [("0", "gpu-0.lock"), ("1", "gpu-1.slot1.lock")]


def test_acquire_defaults_to_one_job_per_gpu_polled_every_2_s(lock_dir, sleeps):
    """With slot 0 of the only GPU held, a job of default acquire waits (it does not take a second slot) and
    polls every 2 s."""
    hold(lock_dir / "gpu-0.lock")
    with pytest.raises(Waited):
        acquire(1, ["0"], lock_dir)
    assert sleeps == [2.0]


def test_acquire_waits_gives_back_a_partial_round_and_says_so_once(lock_dir, monkeypatch, capsys):
    """GPU 1 held elsewhere, a 2-GPU job: each round it locks GPU 0, finds too few, and gives it back (no
    descriptor left but the guard, which is unlocked while it sleeps); it says once on stderr that it waits,
    sleeps poll_s per round, and takes both GPUs once GPU 1 is freed (here: during the second sleep)."""
    other = hold(lock_dir / "gpu-1.lock")
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        assert sorted(name for fd, name in fds_under(lock_dir).items() if fd != other) == ["acquire.lock"]
        assert not locked(lock_dir / "gpu-0.lock") and not locked(lock_dir / "acquire.lock")
        if len(sleeps) == 2:
            os.close(other)

    monkeypatch.setattr(launch.time, "sleep", sleep)
    held = acquire(2, ["0", "1"], lock_dir, poll_s=0.01)
    assert sleeps == [0.01, 0.01]
    names = fds_under(lock_dir)
    assert [(gpu, names[fd]) for gpu, fd in held] == [("0", "gpu-0.lock"), ("1", "gpu-1.lock")]
    assert sorted(names.values()) == ["gpu-0.lock", "gpu-1.lock"]
    out, err = capsys.readouterr()
    assert out == "" and err == (f"sparsebert.launch: waiting for 2 free GPU(s) of 0,1 (1 job(s) per GPU; locks in "
                                 f"{lock_dir}: other jobs hold them)\n")  # fmt: skip


class Exec:
    """Stands in for os.execvpe: records what would be executed, and whether the new program would inherit
    each descriptor open on a lock file."""

    def __init__(self, lock_dir: Path):
        self.lock_dir, self.calls, self.inherited = lock_dir, [], {}

    def __call__(self, file, args, env):
        self.calls.append((file, list(args), dict(env)))
        self.inherited = {name: os.get_inheritable(fd) for fd, name in fds_under(self.lock_dir).items()}


@pytest.fixture
def fake_exec(monkeypatch, lock_dir, tmp_path):
    """os.execvpe recorded; PATH is a directory of the test's own, which holds an nvidia-smi only where the test
    puts one (`nvidia_smi`), whatever the machine running the tests has."""
    record = Exec(lock_dir)
    monkeypatch.setattr(launch.os, "execvpe", record)
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    return record


def nvidia_smi(directory: Path, *uuids: str) -> None:
    """An nvidia-smi in `directory` that lists GPUs of these UUIDs, as the real one does (`-L`), and adds a line
    to `directory`/nvidia-smi.calls each time it is asked."""
    lines = "".join(f"GPU {i}: NVIDIA H200 (UUID: {uuid})\\n" for i, uuid in enumerate(uuids))
    (directory / "nvidia-smi").write_text(f'#!/bin/sh\n[ "$*" = "-L" ] || exit 1\necho >> "$0.calls"\n'
                                          f'printf "{lines}"\n')
    (directory / "nvidia-smi").chmod(0o755)


def test_run_on_gpus_executes_the_command_with_its_gpus(lock_dir, fake_exec, capsys):
    """The command is executed with CUDA_VISIBLE_DEVICES set to the GPUs it locked (in the lock directory that
    SPARSEBERT_GPU_LOCK_DIR names), the locks inheritable by it, the rest of the environment as it was."""
    environ = {"SPARSEBERT_GPUS": "2", "SPARSEBERT_GPU_LOCK_DIR": str(lock_dir), "OTHER": "kept"}
    run_on_gpus(2, ["prog", "--flag"], environ)
    assert fake_exec.calls == [("prog", ["prog", "--flag"], {**environ, "CUDA_VISIBLE_DEVICES": "0,1"})]
    assert fake_exec.inherited == {"gpu-0.lock": True, "gpu-1.lock": True}
    assert "CUDA_VISIBLE_DEVICES" not in environ
    out, err = capsys.readouterr()
    assert out == "" and err == "sparsebert.launch: this job's GPUs: CUDA_VISIBLE_DEVICES=0,1\n"


def test_run_on_gpus_shares_a_gpu_only_when_asked(lock_dir, fake_exec):
    """Slot 0 of the only GPU held: by default (one job per GPU) the command waits; with jobs_per_gpu=2 it gets
    GPU 0 through slot 1."""
    hold(lock_dir / "gpu-0.lock")
    environ = {"SPARSEBERT_GPUS": "1", "SPARSEBERT_GPU_LOCK_DIR": str(lock_dir)}
    with pytest.raises(Waited):
        run_on_gpus(1, ["prog"], environ)
    assert not fake_exec.calls
    run_on_gpus(1, ["prog"], environ, jobs_per_gpu=2)
    assert fake_exec.calls[0][2]["CUDA_VISIBLE_DEVICES"] == "0" and fake_exec.inherited["gpu-0.slot1.lock"]


@pytest.mark.parametrize("slurm", [False, True])
def test_a_job_of_no_gpus_runs_as_is(lock_dir, fake_exec, slurm):
    """A job of 0 GPUs needs none: the command runs with the environment untouched, nothing is locked."""
    environ = {"SPARSEBERT_GPUS": "1", "SPARSEBERT_GPU_LOCK_DIR": str(lock_dir), "CUDA_VISIBLE_DEVICES": "3"}
    if slurm:
        environ["SLURM_JOB_ID"] = "42"
    run_on_gpus(0, ["prog", "x"], environ)
    assert fake_exec.calls == [("prog", ["prog", "x"], environ)]
    assert not lock_dir.exists()


def test_a_slurm_job_locks_its_allocations_gpus_in_the_allocations_folder(lock_dir, fake_exec):
    """A job submitted on its own (the slurm profile) gets its allocation's GPUs, locked in slurm-<job id>: another
    allocation on the node, which also numbers its GPUs from 0, locks in its own folder and does not wait."""
    environ = {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "0,1", "SPARSEBERT_GPU_LOCK_DIR": str(lock_dir)}
    run_on_gpus(2, ["prog"], environ)
    run_on_gpus(2, ["prog"], {**environ, "SLURM_JOB_ID": "43"})
    assert [env["CUDA_VISIBLE_DEVICES"] for _, _, env in fake_exec.calls] == ["0,1", "0,1"]
    for job in ("42", "43"):
        assert sorted(fds_under(lock_dir / f"slurm-{job}").values()) == ["gpu-0.lock", "gpu-1.lock"]


def test_a_job_of_no_gpus_does_not_look_for_gpus(lock_dir, fake_exec, monkeypatch):
    """A CPU job (count 0) runs as is without asking the machine for its GPUs: no nvidia-smi call (up to 60 s
    on a broken driver), and a bad SPARSEBERT_GPUS, which only GPU jobs read, does not stop it."""
    monkeypatch.setattr(launch, "machine_gpus", lambda env: pytest.fail("a CPU job looked for GPUs"))
    environ = {"SPARSEBERT_GPUS": "two", "SPARSEBERT_GPU_LOCK_DIR": str(lock_dir)}
    run_on_gpus(0, ["prog"], environ)
    assert fake_exec.calls == [("prog", ["prog"], environ)]


def test_jobs_sharing_one_slurm_allocation_take_slots_among_its_gpus(lock_dir, fake_exec):
    """Snakemake started inside a 4-GPU allocation (`salloc`, then `snakemake --cores`): every job sees the 4
    GPUs and SLURM_JOB_ID. Jobs of 1 GPU must each get their own (0, then 1), not all run on the first; a job
    asking for all 4 waits while those two are held (it ran unlocked beside them, sharing GPUs 0 and 1)."""
    environ = {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "0,1,2,3", "SPARSEBERT_GPU_LOCK_DIR": str(lock_dir)}
    run_on_gpus(1, ["prog"], environ)
    run_on_gpus(1, ["prog"], environ)  # the first job's lock is still held (its descriptor is open)
    assert [env["CUDA_VISIBLE_DEVICES"] for _, _, env in fake_exec.calls] == ["0", "1"]
    with pytest.raises(Waited):
        run_on_gpus(4, ["prog"], environ)
    one_gpu = {**environ, "SLURM_JOB_ID": "44", "CUDA_VISIBLE_DEVICES": "0"}
    run_on_gpus(1, ["prog"], one_gpu)
    with pytest.raises(Waited):  # a second job on a one-GPU allocation waits too (both ran on GPU 0)
        run_on_gpus(1, ["prog"], one_gpu)


def test_a_gpu_named_by_index_and_by_uuid_has_one_lock(lock_dir, fake_exec, tmp_path):
    """One user's job takes GPU 0 by index (no restriction), another's runs inside a restriction by UUIDs: the
    second must not get the GPU the first holds (before, their locks were gpu-0 and gpu-GPU-aa11: both on it)."""
    nvidia_smi(tmp_path / "bin", "GPU-aa11", "GPU-cc33")
    run_on_gpus(1, ["prog"], {"SPARSEBERT_GPU_LOCK_DIR": str(lock_dir)})
    run_on_gpus(1, ["prog"], {"SPARSEBERT_GPU_LOCK_DIR": str(lock_dir), "CUDA_VISIBLE_DEVICES": "GPU-aa11,GPU-cc33"})
    assert [env["CUDA_VISIBLE_DEVICES"] for _, _, env in fake_exec.calls] == ["0", "GPU-cc33"]
    assert sorted(fds_under(lock_dir).values()) == ["gpu-GPU-aa11.lock", "gpu-GPU-cc33.lock"]


def test_a_job_start_asks_nvidia_smi_once(lock_dir, fake_exec, tmp_path):
    """On a workstation without a restriction, the GPUs' count and their locks' names come from one `nvidia-smi
    -L` (it can take a second where the driver is not kept loaded); with a restriction that names the GPUs,
    the lock names alone ask it."""
    nvidia_smi(tmp_path / "bin", "GPU-aa11", "GPU-bb22")
    calls = tmp_path / "bin" / "nvidia-smi.calls"
    run_on_gpus(1, ["prog"], {"SPARSEBERT_GPU_LOCK_DIR": str(lock_dir)})
    assert fake_exec.calls[-1][2]["CUDA_VISIBLE_DEVICES"] == "0" and len(calls.read_text().splitlines()) == 1
    run_on_gpus(1, ["prog"], {"SPARSEBERT_GPU_LOCK_DIR": str(lock_dir), "CUDA_VISIBLE_DEVICES": "0,1"})
    assert fake_exec.calls[-1][2]["CUDA_VISIBLE_DEVICES"] == "1" and len(calls.read_text().splitlines()) == 2


def test_a_job_of_two_gpus_says_which_locks_it_holds(lock_dir, fake_exec, tmp_path, capsys):
    nvidia_smi(tmp_path / "bin", "GPU-aa11", "GPU-bb22")
    run_on_gpus(2, ["prog"], {"SPARSEBERT_GPU_LOCK_DIR": str(lock_dir)})
    assert capsys.readouterr().err == ("sparsebert.launch: this job's GPUs: CUDA_VISIBLE_DEVICES=0,1 (locked as "
                                       "GPU-aa11,GPU-bb22)\n")  # fmt: skip


def test_two_slurm_allocations_on_one_node_do_not_share_gpu_0(lock_dir, fake_exec, tmp_path, capsys):
    """Two allocations on one node each number their own GPUs from 0 (their CUDA_VISIBLE_DEVICES and what
    nvidia-smi lists inside them); a job of the second must get its GPU 0 while the first's GPU 0 is taken,
    not wait for it or move to its GPU 1."""
    environ = {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "0,1", "SPARSEBERT_GPU_LOCK_DIR": str(lock_dir)}
    nvidia_smi(tmp_path / "bin", "GPU-aa11", "GPU-bb22")
    run_on_gpus(1, ["prog"], environ)
    nvidia_smi(tmp_path / "bin", "GPU-cc33", "GPU-dd44")  # the other allocation's GPUs
    run_on_gpus(1, ["prog"], {**environ, "SLURM_JOB_ID": "43"})
    assert [env["CUDA_VISIBLE_DEVICES"] for _, _, env in fake_exec.calls] == ["0", "0"]
    assert [list(fds_under(lock_dir / f"slurm-{job}").values()) for job in ("42", "43")] == [["gpu-GPU-aa11.lock"],
                                                                                         ["gpu-GPU-cc33.lock"]]
    assert capsys.readouterr().err.splitlines()[-1] == ("sparsebert.launch: this job's GPUs: CUDA_VISIBLE_DEVICES=0 "
                                                        "(locked as GPU-cc33)")  # fmt: skip


@pytest.fixture
def slots_env(monkeypatch, lock_dir):
    """The process environment of a job on a stated 2-GPU machine, locks in the test's directory."""
    monkeypatch.setenv("SPARSEBERT_GPUS", "2")
    monkeypatch.setenv("SPARSEBERT_GPU_LOCK_DIR", str(lock_dir))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


def test_main_runs_the_command_after_the_double_dash(slots_env, fake_exec):
    """Everything after `--` is the command, its own options included; without `--` the command starts at the
    first positional word; --gpus 0 runs it as is."""
    main(["--gpus", "2", "--", "prog", "--gpus", "x"])
    (file, args, env), = fake_exec.calls
    assert (file, args, env["CUDA_VISIBLE_DEVICES"]) == ("prog", ["prog", "--gpus", "x"], "0,1")
    main(["--gpus", "0", "prog", "-v"])
    file, args, env = fake_exec.calls[1]
    assert (file, args, "CUDA_VISIBLE_DEVICES" in env) == ("prog", ["prog", "-v"], False)


def test_main_passes_jobs_per_gpu(slots_env, fake_exec, lock_dir):
    """Both GPUs' slot 0 held: --jobs-per-gpu 2 gets a second slot (GPU 0's); without it the job waits."""
    hold(lock_dir / "gpu-0.lock")
    hold(lock_dir / "gpu-1.lock")
    main(["--gpus", "1", "--jobs-per-gpu", "2", "--", "prog"])
    assert fake_exec.calls[0][2]["CUDA_VISIBLE_DEVICES"] == "0" and fake_exec.inherited["gpu-0.slot1.lock"]
    with pytest.raises(Waited):
        main(["--gpus", "1", "--", "prog"])


USAGE = "error: usage: --gpus N [--jobs-per-gpu M] -- CMD [ARGS...] with N >= 0, M >= 1\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gpus", "1"], USAGE),  # no command
        (["--gpus", "1", "--"], USAGE),
        (["--gpus", "-1", "--", "prog"], USAGE),
        (["--gpus", "1", "--jobs-per-gpu", "0", "--", "prog"], USAGE),
        (["--", "prog"], "error: the following arguments are required: --gpus\n"),
        (["--gpus", "one", "--", "prog"], "error: argument --gpus: invalid int value: 'one'\n"),
    ],
)
def test_main_refuses_bad_arguments(argv, message, slots_env, fake_exec, capsys):
    """Bad arguments: argparse's exit 2 with the usage and the reason on stderr, nothing executed."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and not fake_exec.calls
    assert err.startswith("usage: python -m sparsebert.launch ") and err.endswith(message)


def test_main_reports_a_slot_error_and_exits_2(slots_env, fake_exec, capsys):
    """More GPUs than the machine has: the SlotError's message on stderr, exit 2, nothing executed."""
    with pytest.raises(SystemExit) as exited:
        main(["--gpus", "3", "--", "prog"])
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and not fake_exec.calls and out == ""
    assert err.startswith("sparsebert.launch: this job asks for 3 GPU(s); this machine has 2 (") and err.endswith("\n")
