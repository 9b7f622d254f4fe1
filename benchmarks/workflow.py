"""Workflow overhead: how long Snakemake takes to find that a finished run has nothing to do.

A researcher reruns `snakemake --cores N` after every edit; on a finished run it must answer in seconds.
Measured on the default config when this checkout has a finished default run (after `make demo`), else
on the smoke config, which this benchmark first runs to completion in a temporary directory (about 1
minute). The DAG is built from the same rules either way, and about as large (36 jobs vs the smoke's 42).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from attention import write_csv
from common import OUT, markdown

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(workdir: Path, *args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args], cwd=REPO,
                       env=env, capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(args)} failed:\n{(r.stdout + r.stderr)[-3000:]}")
    return r.stdout + r.stderr


def finished(workdir: Path, config: Path) -> bool:
    return "Nothing to be done" in snakemake(workdir, "-n", "--configfile", str(config))


def time_noop(workdir: Path, config: Path, repeats: int) -> float:
    """Median wall time of `snakemake --cores 2` on a finished run (a fresh Python process each time)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = snakemake(workdir, "--cores", "2", "--configfile", str(config))
        times.append(time.perf_counter() - start)
        assert "Nothing to be done" in out, out[-2000:]
    return sorted(times)[len(times) // 2]


def slurm_probe_s() -> float | None:
    """Seconds of `scontrol show config`, which Snakemake's SLURM executor plugin runs when it is imported (so in
    every `snakemake` start, whatever the executor) with a 10 s timeout: with SLURM's client installed and no
    controller to answer (as on a CI machine after its SLURM test), every no-op pays it. None without scontrol."""
    if shutil.which("scontrol") is None:
        return None
    start = time.perf_counter()
    subprocess.run(["scontrol", "show", "config"], capture_output=True, timeout=30)
    return time.perf_counter() - start


def main(quick: bool = False) -> str:
    default = REPO / "config" / "config.yaml"
    repeats = 3 if quick else 5
    if not quick and (REPO / "results").is_dir() and finished(REPO, default):
        noop = time_noop(REPO, default, repeats)
        rows = [dict(config="config/config.yaml (the finished `make demo` run)", noop_rerun_s=noop)]
    else:
        smoke = REPO / "config" / "smoke.yaml"
        with tempfile.TemporaryDirectory(prefix="sparsebert-bench-") as tmp:
            workdir = Path(tmp)
            start = time.perf_counter()
            snakemake(workdir, "--cores", "2", "--configfile", str(smoke))
            full = time.perf_counter() - start
            rows = [dict(config="config/smoke.yaml (run first in a temporary directory)", full_run_s=full,
                         noop_rerun_s=time_noop(workdir, smoke, repeats))]  # fmt: skip
    probe = slurm_probe_s()
    for row in rows:
        row["scontrol_probe_s"] = "no scontrol" if probe is None else probe
    write_csv(rows, OUT / "workflow.csv")
    return "\n\n".join([
        "### Workflow: a no-op `snakemake --cores 2` on a finished run (median wall time, incl. Python start-up; "
        "scontrol_probe_s: `scontrol show config` timed alone, which Snakemake's SLURM plugin runs in every start)",
        markdown(rows, list(dict.fromkeys(c for r in rows for c in r))),
    ])  # fmt: skip
