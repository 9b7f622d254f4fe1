"""How a training rule starts its processes: the command prefix that replaces `python` in its shell.

    CUDA_VISIBLE_DEVICES= python -m sparsebert pretrain ...
                                                 one process on the CPU
    python -m sparsebert.launch --gpus 1 -- python -m sparsebert finetune ...
                                                 one GPU of this machine, its own (see "GPU slots" below)
    python -m sparsebert.launch --gpus 1 --jobs-per-gpu 3 -- python ...
                                                 a third of one GPU: up to 3 such jobs share it
    python -m sparsebert.launch --gpus 8 -- python -m sparsebert.torchrun --standalone ... -m sparsebert ...
                                                 one node, one process per GPU
    CUDA_VISIBLE_DEVICES= python -m sparsebert.torchrun --standalone ... -m sparsebert ...
                                                 one node, CPU DDP workers (gloo; how tests exercise DDP)
    export MASTER_ADDR=...; srun ... python -m sparsebert.torchrun ...
                                                 several nodes: srun starts one torchrun per node and they
                                                 meet at a c10d rendezvous on the job's first node

`sparsebert.torchrun` is torchrun with the same grace period on every torch release (TORCHRUN_SHUTDOWN below).

Rules call `from_resources(resources)` in a `params:` function, so the decision comes from the same
resources that the SLURM profile turns into `sbatch --nodes/--gpus/--gres`; those resources are resolved
here too (`rule_resources`: the config's `resources.<rule>`, the one place GPU counts are declared).

A job that declares no GPU runs on the CPU even on a GPU machine: its prefix hides the GPUs
(`CUDA_VISIBLE_DEVICES=` empty), so torch sees none and the training loop picks the CPU and gloo. Otherwise
Snakemake, which schedules by declared resources, would start up to --cores such jobs on one GPU at once, and a
CPU DDP job's rank 1 would ask for cuda:1 on a one-GPU machine (seen on an H200: "invalid device ordinal").

GPU slots: on a workstation several GPU jobs run side by side (`profiles/local`), and each process would
pick `cuda:{local_rank}`, i.e. GPU 0. `python -m sparsebert.launch --gpus N -- CMD` takes N free GPUs of
this machine by locking one file per GPU (flock, held until CMD exits; the OS frees it when the job dies,
however it dies), exports them as CUDA_VISIBLE_DEVICES and executes CMD. Under SLURM (SLURM_JOB_ID set) the
allocation's GPUs are its own: its jobs take slots among them in a lock folder of that allocation (a job submitted
on its own gets them all at once; Snakemake started inside one allocation shares them out as on a workstation).

Sharing: a small model leaves a GPU mostly idle (one H200 ran three 4-layer pretraining runs side by side at
590-710k tokens/s each), so a rule may declare `jobs_per_gpu: n` (config `resources.<rule>`): each GPU then has
n slots (lock files gpu-<UUID>.lock, gpu-<UUID>.slot1.lock, ...: see lock_names), a job takes one slot on each
of its GPUs, and up to n jobs share a GPU. A job with n takes only slots 0..n-1, so a job declaring 1 may still
meet jobs of a rule declaring more on its GPU: give every GPU rule of a run the same n. Snakemake does not see
the slots: run it with `--resources gpu=<GPUs x n>` so that it starts no more GPU jobs than there are slots (the
Makefile's demo-gpu does), or the extra jobs wait in `acquire` (and their benchmark times include the wait).
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from sparsebert import torchrun

# torchrun forwards a SIGTERM to its workers and SIGKILLs those still running after TORCH_ELASTIC_SHUTDOWN_TIMEOUT
# seconds (read by torch >= 2.13; sparsebert.torchrun makes older torchruns read it too, where they would wait a
# fixed 30 s). A worker needs the rest of its optimizer step and a checkpoint write (BERT-base: 1.3 GB) to stop
# cleanly, which at 2-4 GPUs or on a slow shared filesystem takes more than 30 s; the SLURM profile signals 300 s
# before the wall time.
TORCHRUN_SHUTDOWN = f"{torchrun.ENV}=240"
TORCHRUN = "python -m sparsebert.torchrun"

# Port of the c10d rendezvous store on the first node; torchrun's own default.
RDZV_PORT = 29500


HIDE_GPUS = "CUDA_VISIBLE_DEVICES="  # an empty list: torch sees no GPU (the variable is set, unlike unset)


def launcher(nodes: int, gpus_per_node: int, cpu_procs: int = 0, jobs_per_gpu: int = 1) -> str:
    """Command prefix for `nodes` nodes with `gpus_per_node` GPUs each (one process per GPU).

    Without GPUs the job runs on the CPU with the GPUs hidden; `cpu_procs` > 1 starts that many CPU processes
    on one node (the training loop then picks the gloo backend); this is how tests exercise DDP on machines
    without GPUs. `jobs_per_gpu` > 1: the job's GPU slots are shared with up to that many jobs (module doc).
    """
    if nodes < 1 or gpus_per_node < 0 or cpu_procs < 0 or jobs_per_gpu < 1:
        raise ValueError(f"need nodes >= 1, jobs_per_gpu >= 1 and non-negative counts, got {nodes=} "
                         f"{gpus_per_node=} {cpu_procs=} {jobs_per_gpu=}")  # fmt: skip
    procs = gpus_per_node or cpu_procs
    if nodes > 1:
        if procs < 1:
            raise ValueError(f"a {nodes}-node job needs gpus_per_node (or cpu_procs) >= 1")
        # srun passes the environment on to every node's torchrun (--export=ALL, its default).
        return srun_torchrun(nodes, procs) if gpus_per_node else f"export {HIDE_GPUS} && {srun_torchrun(nodes, procs)}"
    # --standalone: a private rendezvous on localhost with a free port, so two jobs on one node never collide.
    start = "python" if procs <= 1 else f"{TORCHRUN} --standalone --nproc_per_node={procs}"
    env = "" if procs <= 1 else f"{TORCHRUN_SHUTDOWN} "  # inherited through sparsebert.launch's exec
    if not gpus_per_node:
        return f"{HIDE_GPUS} {env}{start}"
    share = f" --jobs-per-gpu {jobs_per_gpu}" if jobs_per_gpu > 1 else ""
    return f"{env}python -m sparsebert.launch --gpus {gpus_per_node}{share} -- {start}"


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
        f"{TORCHRUN_SHUTDOWN} srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --kill-on-bad-exit=1 "
        f"{TORCHRUN} --nnodes={nodes} --nproc_per_node={procs_per_node} "
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
    """`launcher()` decided by a job's resources: `nodes`, `gpu`/`gres`, `ddp_cpu_procs` (CPU DDP) and
    `jobs_per_gpu` (GPU sharing)."""
    return launcher(
        int(resources.get("nodes") or 1),
        gpus_per_node(resources),
        int(resources.get("ddp_cpu_procs") or 0),
        int(resources.get("jobs_per_gpu") or 1),
    )


def takes_gpu_slots(resources: Mapping) -> bool:
    """Whether `launcher()` runs the job through this machine's GPU slots (`sparsebert.launch`): one node with
    GPUs. A multi-node job runs under srun in its own allocation; a job without GPUs on the CPU."""
    return int(resources.get("nodes") or 1) == 1 and gpus_per_node(resources) > 0


# -------------------------------------------------------------------------------------------------------
# Resources of a training rule (Snakemake's `resources:` and `threads:` call these through common.smk)

RESOURCE_DEFAULTS = {"threads": 1, "gpu": 0, "nodes": 1, "ddp_cpu_procs": 0, "jobs_per_gpu": 1, "mem_mb": 4000,
                     "runtime": 60}


def rule_resources(config: Mapping, rule: str, variant: str | None = None) -> dict:
    """Defaults, then the config's `resources.<rule>`, then its `per_variant` entry for `variant` (e.g. DDP
    for one variant). The config is the one place GPU counts are declared: the SLURM profile restates none."""
    res = {**RESOURCE_DEFAULTS, **config.get("resources", {}).get(rule, {})}
    res.update(res.pop("per_variant", {}).get(variant, {}))
    res["threads"] = max(res["threads"], res["ddp_cpu_procs"])  # a CPU DDP job runs one process per core
    return res


# -------------------------------------------------------------------------------------------------------
# GPU slots: one lock file per GPU of this machine

GPUS_ENV = "SPARSEBERT_GPUS"  # how many GPUs this machine has; default: what nvidia-smi lists
LOCK_DIR_ENV = "SPARSEBERT_GPU_LOCK_DIR"
# Machine-wide, so that jobs of different clones (and users) share out the same GPUs.
DEFAULT_LOCK_DIR = Path("/tmp/sparsebert-gpu-slots")


class SlotError(Exception):
    """The job cannot get its GPUs on this machine (more than it has, none found, no lock directory)."""


def nvidia_smi_gpus() -> list[tuple[str, str]]:
    """(index, UUID) of each GPU that `nvidia-smi -L` lists ("GPU 0: NVIDIA H200 (UUID: GPU-...)"; the MIG
    lines under a GPU are not GPUs), asked with a time limit (a hung driver must not hang the job); none
    without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
    except subprocess.TimeoutExpired:
        raise SlotError("nvidia-smi -L did not answer in 60 s: the GPU driver does not respond (a GPU job asks it "
                        "for the GPUs' UUIDs, which name their locks)") from None
    gpus = []
    for line in listed.splitlines():
        if line.startswith("GPU "):
            uuid = re.search(r"\(UUID: ([^)\s]+)\)", line)
            gpus.append((str(len(gpus)), uuid.group(1) if uuid else ""))
    return gpus


def machine_gpus(environ: Mapping, listed: Callable[[], list[tuple[str, str]]] = nvidia_smi_gpus) -> list[str]:
    """The GPUs jobs may take, as CUDA_VISIBLE_DEVICES entries: those of CUDA_VISIBLE_DEVICES when Snakemake
    itself was started inside a restriction (up to an entry CUDA stops at: a negative index, or SLURM's
    NoDevFiles), else 0..N-1, N from SPARSEBERT_GPUS or else the GPUs that `listed` (nvidia_smi_gpus) gives."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        gpus = []
        for gpu in filter(None, (entry.strip() for entry in visible.split(","))):
            if gpu.startswith("-") or gpu == "NoDevFiles":  # CUDA sees no device from here on ("-1": none)
                break
            gpus.append(gpu)
        return gpus
    stated = environ.get(GPUS_ENV)
    if stated is not None:
        if not stated.isdigit():
            raise SlotError(f"{GPUS_ENV}={stated!r} is not a number of GPUs")
        return [str(i) for i in range(int(stated))]
    return [index for index, _ in listed()]


def lock_names(gpus: list[str], listed: list[tuple[str, str]]) -> dict[str, str]:
    """The name of each GPU's locks: its UUID where nvidia-smi lists it (an index, or a UUID or the unique
    prefix of one that CUDA accepts), else the CUDA_VISIBLE_DEVICES entry itself (a MIG instance; no
    nvidia-smi). One GPU then has one lock whether a job names it by index or by UUID, and in two SLURM
    allocations on one node, which both number their own GPUs from 0, "GPU 0" is two GPUs with two locks."""
    uuids = dict(listed)
    names = {}
    for gpu in gpus:
        matches = [u for u in uuids.values() if u and u.startswith(gpu)] if gpu.startswith("GPU-") else []
        names[gpu] = uuids.get(gpu) or (matches[0] if len(matches) == 1 else gpu)
    return names


def _lock_file(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:  # e.g. another user's lock directory that this user may not write in
        raise SlotError(f"cannot open the GPU lock file {path} ({e.strerror}): the lock directory must be writable "
                        f"by every user whose jobs share these GPUs, or set {LOCK_DIR_ENV}") from None
    try:
        os.fchmod(fd, 0o666)  # other users' jobs must be able to lock it too (umask would narrow it)
    except PermissionError:  # someone else's file: already open to all
        pass
    return fd


def _try_lock(path: Path) -> int | None:
    """An open, exclusively locked descriptor of `path`, or None when another process holds it."""
    fd = _lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for the waiting message
    return fd


def slot_file(lock_dir: Path, gpu: str, slot: int) -> Path:
    """Lock file of one slot of a GPU: slot 0 is gpu-<id>.lock (the one slot of an unshared GPU)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", gpu)
    return lock_dir / (f"gpu-{name}.lock" if slot == 0 else f"gpu-{name}.slot{slot}.lock")


def acquire(count: int, gpus: list[str], lock_dir: Path, poll_s: float = 2.0, jobs_per_gpu: int = 1,
            names: Mapping[str, str] | None = None) -> list[tuple[str, int]]:
    """Lock a slot on each of `count` distinct `gpus` (slots 0..jobs_per_gpu-1 of each; a GPU's lock files are
    named by `names`, lock_names(), or by the entry), waiting while fewer GPUs have a free slot; returns (gpu,
    locked descriptor) pairs. The descriptors must stay open for the life of the job: closing one (or the process
    dying) frees its slot.

    Slot 0 of every GPU is tried before slot 1 of any, so shared jobs spread over the GPUs before they pile
    onto one. One job picks at a time (a lock on `acquire.lock`), so two jobs that each want several GPUs never
    each hold part of what the other waits for."""
    if count > len(gpus):
        raise SlotError(f"this job asks for {count} GPU(s); this machine has {len(gpus)} ({gpus or 'none found'}"
                        f"; {GPUS_ENV} or CUDA_VISIBLE_DEVICES state them): lower the rule's `gpu` in the "
                        f"config's `resources`")
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SlotError(f"cannot use the GPU lock directory {lock_dir} ({e}); set {LOCK_DIR_ENV}") from None
    try:
        lock_dir.chmod(0o777)  # mkdir's mode is narrowed by the umask: other users' jobs create slot files here
    except PermissionError:  # someone else's directory: as they made it
        pass
    guard = _lock_file(lock_dir / "acquire.lock")
    waiting_since = None
    while True:
        fcntl.flock(guard, fcntl.LOCK_EX)
        held = []
        for slot in range(jobs_per_gpu):
            for gpu in gpus:
                if len(held) == count or any(gpu == taken for taken, _ in held):
                    continue
                fd = _try_lock(slot_file(lock_dir, (names or {}).get(gpu, gpu), slot))
                if fd is not None:
                    held.append((gpu, fd))
        if len(held) == count:
            fcntl.flock(guard, fcntl.LOCK_UN)
            os.close(guard)
            return held
        for _, fd in held:
            os.close(fd)
        fcntl.flock(guard, fcntl.LOCK_UN)
        if waiting_since is None:
            waiting_since = time.monotonic()
            print(f"sparsebert.launch: waiting for {count} free GPU(s) of {','.join(gpus)} ({jobs_per_gpu} job(s) "
                  f"per GPU; locks in {lock_dir}: other jobs hold them)", file=sys.stderr, flush=True)
        time.sleep(poll_s)


def run_on_gpus(count: int, command: list[str], environ: Mapping = os.environ, jobs_per_gpu: int = 1) -> None:
    """Execute `command` (never returns) on `count` GPUs of its own (or a slot of each, shared by up to
    `jobs_per_gpu` jobs), or as is without GPUs and in a SLURM job's own allocation.

    Under SLURM the locks lie in a folder of the allocation (`slurm-<SLURM_JOB_ID>` in the lock directory): its
    GPUs are no other allocation's, and two allocations on one node both number theirs from 0. A job submitted on
    its own (the slurm profile) takes its allocation's GPUs at once. Snakemake started inside one allocation
    (`salloc` / `srun --pty` with 8 GPUs, then `snakemake --cores`) runs all its jobs there, and they share its
    GPUs out by the locks as on a workstation: a job that asked for all of them waits for the others (it ran
    unlocked beside them before), and so does a second job on a one-GPU allocation."""
    env = dict(environ)
    listed = functools.cache(nvidia_smi_gpus)  # asked once at most: for the count and the lock names
    gpus = machine_gpus(env, listed) if count else []
    slurm = bool(env.get("SLURM_JOB_ID"))
    if count and (not slurm or len(gpus) >= count):  # (SLURM showing fewer GPUs than asked for: run as allocated)
        lock_dir = Path(env.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)
        if slurm:
            lock_dir = lock_dir / f"slurm-{env['SLURM_JOB_ID']}"
        names = lock_names(gpus, listed())
        held = acquire(count, gpus, lock_dir, jobs_per_gpu=jobs_per_gpu, names=names)
        for _, fd in held:
            os.set_inheritable(fd, True)  # the lock lives on in the executed command
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu for gpu, _ in held)
        locks = [names[gpu] for gpu, _ in held]
        print(f"sparsebert.launch: this job's GPUs: CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}"
              + (f" (locked as {','.join(locks)})" if locks != env["CUDA_VISIBLE_DEVICES"].split(",") else ""),
              file=sys.stderr, flush=True)
    os.execvpe(command[0], command, env)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sparsebert.launch",
                                     description="run a command on GPUs of its own (lock-file slots per GPU)")
    parser.add_argument("--gpus", type=int, required=True, help="how many GPUs the command needs")
    parser.add_argument("--jobs-per-gpu", type=int, default=1, help="how many jobs may share each GPU (slots)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.gpus < 0 or args.jobs_per_gpu < 1:
        parser.error("usage: --gpus N [--jobs-per-gpu M] -- CMD [ARGS...] with N >= 0, M >= 1")
    try:
        run_on_gpus(args.gpus, command, jobs_per_gpu=args.jobs_per_gpu)
    except SlotError as e:
        print(f"sparsebert.launch: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
