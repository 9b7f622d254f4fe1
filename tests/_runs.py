"""Running Snakemake (or torchrun) from the tests: in its own session, so that a hung run can be ended together
with every process it started, and with the evidence of where it hung in the failure message instead of a bare
timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# Rule jobs (sparsebert.cli) dump the Python stacks of all their threads into their log every this many
# seconds; the smoke DAG's longest job takes about 15 s, so a dump in a log means that job was stuck.
STACKS_AFTER_S = 240
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PY_SPY = str(BIN / "py-spy")  # installed with the test extras


def _sh(cmd: list[str], timeout: float = 60) -> str:
    """Output of a diagnostic command, never raising (diagnostics must not hide the real failure)."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return r.stdout + r.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"({' '.join(cmd)}: {e})"


def descendants(pid: int) -> list[int]:
    """pid and every process below it (read before killing anything: orphans lose their parent link)."""
    children: dict[int, list[int]] = {}
    for row in _sh(["ps", "-e", "-o", "pid=,ppid="]).split("\n"):
        if row.strip():
            child, parent = map(int, row.split())
            children.setdefault(parent, []).append(child)
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def python_stacks(pids: list[int]) -> str:
    """py-spy dumps (Python and native frames) of the Python processes among pids."""
    dumps = []
    for pid in pids:
        args = _sh(["ps", "-o", "args=", "-p", str(pid)]).strip()
        if "python" in args:
            dump = _sh([PY_SPY, "dump", "--native", "--pid", str(pid)])
            dumps.append(f"--- py-spy dump {pid}: {args[:200]}\n{dump[-3000:]}")
    return "\n".join(dumps)


def run_watched(cmd: list[str], *, cwd: Path, env: dict, timeout: float, workdir: Path,
                diagnostics: Callable[[], str] = lambda: "") -> subprocess.CompletedProcess:
    """Run `cmd`; on a timeout, fail with Snakemake's output, the stacks and logs of the stuck jobs."""
    env = {**env, "SPARSEBERT_STACKS_AFTER_S": str(STACKS_AFTER_S)}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    except subprocess.TimeoutExpired:
        # Evidence first, while the stuck processes are alive; then end the command and everything it started.
        tree = descendants(proc.pid)
        processes = _sh(["ps", "-o", "pid,ppid,sid,etime,time,args", "--forest", "-p", ",".join(map(str, tree))])
        stacks = python_stacks(tree)
        for pid in tree:  # the tree, not just the session: torchrun starts each worker in a session of its own
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # an escaped grandchild still holds the pipes
            proc.kill()
            stdout, stderr = "(output lost: the pipes stayed open)", ""
    logs = sorted((workdir / "logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)[-3:]
    tails = "".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}\n" for p in logs)
    pytest.fail(f"timed out after {timeout:.0f} s: {' '.join(map(str, cmd))}\n"
                f"--- snakemake output (tail)\n{(stdout + stderr)[-5000:]}\n"
                f"--- processes\n{processes}\n{stacks}\n--- newest rule logs\n{tails}{diagnostics()}")


# ------------------------------------------------------------------------------------------ Snakemake


def workdir(path: Path) -> Path:
    """A fresh working directory that sees the repository's workflow (results land in `path`, not the repo)."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "config", "envs"):
        if not (path / name).exists():
            (path / name).symlink_to(REPO / name)
    return path


# Every Snakemake run of the tests (and each job it starts) runs offline with sockets limited to loopback
# (tests/netguard/sitecustomize.py): the smoke DAG passing proves the default path needs no network.
# A caller's PYTHONPATH stays behind netguard (a worktree's src/ before an editable install of another checkout).
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent / "netguard"),
                                                           os.environ.get("PYTHONPATH")]))}  # fmt: skip


def snakemake(wd: Path, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **OFFLINE_ENV}
    r = run_watched([str(BIN / "snakemake"), *args], cwd=wd, env=env, timeout=timeout, workdir=wd)
    if check:
        assert r.returncode == 0, f"snakemake {' '.join(args)} failed:\n{(r.stdout + r.stderr)[-6000:]}"
    return r
