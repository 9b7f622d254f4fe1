"""The SLURM profile on a real one-node SLURM: every job goes through sbatch, a job that fails once is
retried, 2-process DDP (gloo) runs inside a SLURM job, and the outputs equal those of a local run.

The session fixture installs and starts SLURM itself (tests/slurm/start_slurm.sh), so it needs root; it runs
when CI is set (CI is root) or SPARSEBERT_TEST_SLURM=1, and is skipped with the reason everywhere else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from _runs import run_watched

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
START_SLURM = REPO / "tests" / "slurm" / "start_slurm.sh"
SLURMCTLD_LOG = Path("/var/log/slurm/slurmctld.log")


@dataclass(frozen=True)
class Target:
    snakefile: Path
    config: Path  # what the local run to compare with ran (the `smoke` fixture, conftest)
    narrowed: dict = field(default_factory=dict)  # top-level keys that the SLURM run replaces in it
    ddp_outputs: tuple[str, ...] = ()  # JSON files with "world_size", written by rank 0 of a DDP job
    fail_once: str = "masks"  # subcommand made to fail once via SPARSEBERT_FAIL_ONCE
    compare: tuple[str, ...] = ("results/**/*.json",)  # deterministic outputs, equal in both runs

    def configs(self) -> tuple[dict, dict]:
        """The local run's config and the SLURM run's (the local one with `narrowed` replacing its keys)."""
        local = yaml.safe_load(self.config.read_text())
        return local, {**local, **self.narrowed}

    def slurm_config(self, folder: Path) -> Path:
        path = folder / "slurm.yaml"
        path.write_text(yaml.safe_dump(self.configs()[1]))
        return path

    def left_out(self) -> set[str]:
        """Path parts of the local run's outputs that the SLURM run does not make: the seeds and masks it drops."""
        local, slurm = self.configs()
        seeds = set(local.get("seeds", [0])) - set(slurm.get("seeds", [0]))
        return {f"seed{seed}" for seed in seeds} | (set(local["masks"]) - set(slurm["masks"]))


# The workflow under test: the smoke DAG, whose local run is the session's `smoke` fixture (conftest); a Target
# of another config needs a local run of that config to compare with.
TARGET = Target(
    REPO / "Snakefile",
    REPO / "config/smoke.yaml",
    # One of the two seeds: every rule still runs, as 27 of the smoke DAG's 42 jobs. Each SLURM job pays a Snakemake
    # start in its batch script and another in its srun step besides its own imports (~6 s of a ~20 s job on 2 AVX2
    # cores): on one day there, the whole DAG took 9.1 min under SLURM (4.8 locally), one seed 5.1-5.6 min. One
    # fixed mask besides (21 jobs) was no faster (5.3 min): the chain of dependent jobs sets the time then.
    # config/smoke.yaml pretrains `dense` with ddp_cpu_procs=2 (torchrun, gloo) inside its SLURM job.
    narrowed={"seeds": [0]},
    ddp_outputs=("results/smoke/pretrain/dense/seed0/summary.json",),  # the smoke run's root: results/smoke/
    fail_once="tokenizer",
    # Byte-identical across the two runs: the corpus and the proxy task files. Trained weights, learned masks
    # and scores are not compared byte for byte: WordPiece training is not bit-reproducible across processes
    # (huggingface/tokenizers#1794) and the jobs run with different thread counts under SLURM.
    compare=("data/smoke/corpus/*", "data/smoke/tasks/*/*"),
)

RUN_TIMEOUT_S = 900  # the narrowed smoke DAG takes about 2-5 min under SLURM (2 cores)


def _sh(cmd: str, timeout: float = 30) -> str:
    """Output of a diagnostic command, never raising (diagnostics must not hide the real failure)."""
    try:
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
        return r.stdout + r.stderr
    except subprocess.TimeoutExpired:
        return f"({cmd}: timed out)"


def _diagnostics(workdir: Path | None = None) -> str:
    parts = [f"$ {c}\n{_sh(c)}" for c in ("sinfo -N -l", "squeue --states=all -l", "pgrep -a 'slurm|munge'")]
    for log in ("/var/log/slurm/slurmctld.log", "/var/log/slurm/slurmd.log"):
        parts.append(f"$ tail -n 40 {log}\n{_sh(f'tail -n 40 {log}')}")
    if workdir:
        for log in sorted(workdir.glob(".snakemake/slurm_logs/**/*.log"))[-4:]:
            parts.append(f"--- {log}\n{log.read_text()[-3000:]}")
    return "\n".join(parts)


@pytest.fixture(scope="session")
def slurm_partition() -> str:
    """Start (or find running) the one-node SLURM; return its default partition."""
    if os.geteuid() != 0:
        pytest.skip("needs root: installs slurm-wlm/munge with apt and starts slurmctld/slurmd")
    if not (os.environ.get("CI") or os.environ.get("SPARSEBERT_TEST_SLURM") == "1"):
        pytest.skip("starts system daemons: runs only with CI set or SPARSEBERT_TEST_SLURM=1")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and there is no apt-get to install it")
    try:
        r = subprocess.run(["bash", str(START_SLURM)], capture_output=True, text=True, timeout=1200)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"start_slurm.sh timed out\n{e.stdout}\n{e.stderr}\n{_diagnostics()}")
    if r.returncode != 0:
        pytest.fail(f"start_slurm.sh failed ({r.returncode})\n{r.stdout}\n{r.stderr}\n{_diagnostics()}")
    print(f"SLURM up: {r.stdout.strip()}")
    default = [p for p in _sh("sinfo -h -o %P").split() if p.endswith("*")]
    return default[0].rstrip("*")


def local_overrides(partition: str, cpus: int) -> list[str]:
    """The profile's resources, fitted to this one small node: the test partition, no GPUs, few cores.

    On the command line --default-resources and --set-resources replace the profile's whole lists,
    so every entry is restated here; only these keys differ from profiles/slurm/config.yaml.
    """
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    defaults = {**profile["default-resources"], "slurm_partition": partition, "runtime": "'15m'"}
    per_rule = []
    for rule, res in profile.get("set-resources", {}).items():
        res = {**res, "slurm_partition": partition, "gpu": 0, "runtime": "'15m'", "mem_mb": 4000}  # units: see the profile
        res["cpus_per_task"] = min(int(res.get("cpus_per_task", 1)), cpus)
        per_rule += [f"{rule}:{k}={v}" for k, v in res.items()]
    return [
        "--default-resources", *[f"{k}={v}" for k, v in defaults.items()],
        "--set-resources", *per_rule,
    ]  # fmt: skip


def run_snakemake(workdir: Path, args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    workdir.mkdir(parents=True, exist_ok=True)
    config = TARGET.slurm_config(workdir.parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # jobs find this venv's python
    env["SPARSEBERT_FAIL_ONCE"] = f"{TARGET.fail_once}:{workdir / 'fail-once.marker'}"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(TARGET.snakefile), "-d", str(workdir), "--configfile",
           str(config), *args]  # fmt: skip

    def on_timeout() -> str:
        report = _diagnostics(workdir)
        _sh('scancel --user "$(id -un)"')  # the test partition runs only this test's jobs
        return report

    start = time.monotonic()
    result = run_watched(cmd, cwd=REPO, env=env, timeout=RUN_TIMEOUT_S, workdir=workdir, diagnostics=on_timeout)
    return result, time.monotonic() - start


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(2400)  # apt install on a fresh machine + the SLURM run (+ the local one, when first)
def test_workflow_under_slurm_matches_local_run(slurm_partition, smoke, tmp_path):
    """The smoke DAG under SLURM (narrowed: TARGET), compared with the session's local run of it (`smoke`,
    conftest)."""
    log_offset = SLURMCTLD_LOG.stat().st_size if SLURMCTLD_LOG.exists() else 0
    cluster = [
        "--profile", str(PROFILE), *local_overrides(slurm_partition, os.cpu_count() or 1),
        # First status check after 2 s instead of 20: the fixture's jobs take seconds.
        "--slurm-init-seconds-before-status-checks", "2",
    ]  # fmt: skip
    slurm, slurm_s = run_snakemake(tmp_path / "slurm", cluster)
    out = slurm.stdout + slurm.stderr
    workdir = tmp_path / "slurm"
    context = f"\n--- snakemake output (tail)\n{out[-8000:]}\n{_diagnostics(workdir)}"
    assert slurm.returncode == 0, f"workflow failed under SLURM{context}"

    # Every non-local job start ("rule X:", retries included) was one sbatch that slurmctld accepted.
    started = re.findall(r"^rule (\w+):", out, re.M)
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", out)
    new_log = SLURMCTLD_LOG.read_text(errors="replace")[log_offset:]
    accepted = re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", new_log)
    assert started and len(started) == len(submitted), f"{started=} {submitted=}{context}"
    assert set(submitted) <= set(accepted), f"{submitted=} not all in slurmctld's log {accepted=}{context}"

    # The fault-injected job failed once and its retry completed: one more submission than jobs.
    local_rules = set(re.findall(r"^localrule (\w+):", out, re.M))
    finished = [r for r in re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", out) if r not in local_rules]
    assert (workdir / "fail-once.marker").exists(), f"the injected failure never fired{context}"
    assert len(re.findall(r"^Error in rule", out, re.M)) == 1, f"expected exactly one failed attempt{context}"
    assert len(submitted) == len(finished) + 1, f"{submitted=} {finished=}{context}"

    for path in TARGET.ddp_outputs:
        ddp = json.loads((workdir / path).read_text())
        assert ddp["world_size"] == 2 and ddp["backend"] == "gloo", f"{path}: {ddp}{context}"

    compared = sorted(p for g in TARGET.compare for p in smoke.glob(g))
    assert compared, f"nothing matched {TARGET.compare} in the local run"
    for path in compared:
        rel = path.relative_to(smoke)
        assert (workdir / rel).read_bytes() == path.read_bytes(), f"{rel} differs between SLURM and local runs"
    # ... and both runs produced the same set of results (every variant, task, table and figure), but for the
    # seeds and masks the SLURM run leaves out.
    listing = lambda root, leave_out=(): sorted(  # noqa: E731
        str(p.relative_to(root)) for p in (root / "results").rglob("*")
        if p.is_file() and "state" not in p.parts and not set(leave_out) & set(p.parts))
    assert listing(workdir) == listing(smoke, TARGET.left_out()), f"different result files{context}"
    print(f"SLURM run {slurm_s:.0f} s ({len(submitted)} sbatch jobs), "
          f"{len(compared)} outputs equal: {[str(p.relative_to(smoke)) for p in compared]}")


def test_profile_sends_training_rules_to_gpus_and_leaves_their_counts_to_the_config():
    """Cheap check of the profile itself (no SLURM needed): keys the plugin reads; GPU rules on a partition of
    their own, their GPU counts (and cores, memory, minutes) declared once, in the config's `resources`."""
    from sparsebert.launch import rule_resources

    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] in {"squeue", "sacct"}
    assert {"slurm_partition", "runtime", "mem_mb", "cpus_per_task"} <= set(profile["default-resources"])
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    for rule in ("pretrain", "dam_search", "pretrain_learned", "finetune"):
        res = profile["set-resources"][rule]
        assert res["slurm_partition"] and not {"gpu", "gres", "cpus_per_task", "mem_mb", "runtime"} & set(res), rule
        assert rule_resources(paper, rule)["gpu"] >= 1, rule


def gpu_rules() -> set[str]:
    """Every rule of the workflow whose resources come from the config's training resources (and so may ask
    for GPUs), read from the rule files: each `rule x:` up to the next one."""
    rules = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for name, body in re.findall(r"^\s*rule (\w+):\n(.*?)(?=^\s*rule \w+:|\Z)", smk.read_text(), re.M | re.S):
            if "training_resources(" in body:
                rules.add(name)
    return rules


def test_every_rule_that_may_ask_for_gpus_goes_to_the_gpu_partition_with_the_early_signal():
    """A rule with the config's GPU resources that the profile does not name falls to the CPU partition: sbatch
    then asks a CPU partition for GPUs, and a preempted job gets no early SIGTERM (finetune_model, the
    `tasks.jobs: per_model` fine-tuning rule, was missing). Each such rule gets the pretraining rule's settings."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    rules = gpu_rules()
    assert {"pretrain", "dam_search", "pretrain_learned", "finetune", "finetune_model"} <= rules
    for rule in sorted(rules):
        res = profile["set-resources"].get(rule, {})
        assert res.get("slurm_partition") == profile["set-resources"]["pretrain"]["slurm_partition"], rule
        assert "--signal=TERM@300" in res.get("slurm_extra", ""), rule


@pytest.mark.slow
def test_profile_dry_run_plans_the_paper_dag():
    """The profile's per-rule settings include expressions Snakemake evaluates per job (slurm_extra): the DAG-time
    config check must read the profile without evaluating them (it raised 'Resource must be evaluated within the
    context of a rule' there). No SLURM needed for a dry run (the plugin's scontrol call may time out: ~10 s)."""
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--profile", str(PROFILE),
                          "--configfile", str(REPO / "config" / "paper.yaml")], cwd=REPO, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"^pretrain\s+\d+$", out.stdout + out.stderr, re.M)
