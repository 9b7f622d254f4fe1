"""The Snakemake DAG end to end on config/smoke.yaml, plus dry-run checks of its rerun logic and config
validation. One smoke run (session fixture, ~1-2 min on 2 cores) is shared; tests that change something
work on a copy of its working directory, so they never disturb each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _runs import BIN, OFFLINE_ENV, REPO, run_watched, snakemake, workdir

from sparsebert import recipes
from sparsebert.data.tasks import get_task

SMOKE = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
SMOKE_DAM_RUNS = [f"{d}_{lam:g}" for d, lams in SMOKE["dam"].items() for lam in lams]
SMOKE_RETRAINS = [f"{run}_retrain" for run in SMOKE_DAM_RUNS] if SMOKE.get("dam_retrain") else []
SMOKE_VARIANTS = list(SMOKE["masks"]) + SMOKE_DAM_RUNS + SMOKE_RETRAINS
SMOKE_SEEDS = SMOKE.get("seeds", [0])
# Each config's run writes under data/<run>/, results/<run>/ and logs/<run>/.
R, D, LOGS = f"results/{SMOKE['run']}", f"data/{SMOKE['run']}", f"logs/{SMOKE['run']}"

pytestmark = pytest.mark.slow


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run: rule -> number of jobs."""
    stats = output.split("Job stats:")[-1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m[1] != "total"}


# A job's block in Snakemake's log (`rule x:` or `localrule x:`, then indented `jobid: N` and, above one thread,
# `threads: K`) is printed when the job starts; `Finished jobid: N` when it ends.
JOB_EVENT = re.compile(r"^(?:local)?rule (\w+):\n((?:[ \t].*\n)*)|^Finished jobid: (\d+)", re.M)


def peak_threads(log: str) -> tuple[int, list[str], int]:
    """Replays a Snakemake run's log in order: the most threads its running jobs held at once, those jobs
    (rule:threads), and how many jobs started."""
    running: dict[str, tuple[str, int]] = {}  # jobid -> (rule, threads)
    peak, at_peak, started = 0, [], 0
    for event in JOB_EVENT.finditer(log):
        if event[3]:
            del running[event[3]]
            continue
        threads = re.search(r"^\s+threads: (\d+)$", event[2], re.M)
        running[re.search(r"^\s+jobid: (\d+)$", event[2], re.M)[1]] = (event[1], int(threads[1]) if threads else 1)
        started += 1
        held = sum(t for _, t in running.values())
        if held > peak:
            peak, at_peak = held, sorted(f"{rule}:{t}" for rule, t in running.values())
    return peak, at_peak, started


def dry_run(wd: Path, *args: str) -> dict[str, int]:
    r = snakemake(wd, "-n", "--quiet", "rules", "--configfile", "config/smoke.yaml", *args)
    return job_counts(r.stdout + r.stderr)


def copy_of(smoke: Path, dest: Path) -> Path:
    """A copy of the finished smoke run (mtimes and Snakemake's metadata kept), to modify freely."""
    shutil.copytree(smoke, dest, symlinks=True)
    return dest


def test_smoke_outputs_and_tables(smoke):
    tables = json.loads((smoke / f"{R}/tables/metrics.json").read_text())
    for v in SMOKE_VARIANTS:
        for seed in SMOKE_SEEDS:
            folder = "dam" if v in SMOKE_DAM_RUNS else "pretrain"
            assert json.loads((smoke / f"{R}/{folder}/{v}/seed{seed}/summary.json").read_text())["seed"] == seed
            assert (smoke / f"{R}/{folder}/{v}/seed{seed}/model/config.json").is_file()
            for t in SMOKE["tasks"]["names"]:
                metrics = json.loads((smoke / f"{R}/finetune/{v}/seed{seed}/{t}/metrics.json").read_text())
                assert metrics["eval"]
                files = [smoke / metrics["data"]["path"] / name for _, name in get_task(t).files]
                assert metrics["data"]["sha256"] == {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
                assert tables["data"][t] == metrics["data"]
    assert "Task data, the same for every variant and seed: " in (smoke / f"{R}/findings.md").read_text()
    for name in ("masks", "importance", "keep_trajectories", "dam_u_snapshots", "score_vs_sparsity", "loss_curves"):
        for ext in ("png", "pdf"):
            assert (smoke / f"{R}/figures/{name}.{ext}").stat().st_size > 1000, name
    for table in ("glue", "squad_swag"):
        frame = pd.read_csv(smoke / f"{R}/tables/{table}.csv", index_col="variant")
        assert list(frame.index) == SMOKE_VARIANTS
        assert frame["sparsity"].notna().all() and frame["avg"].notna().all()
        assert "PROXY" in (smoke / f"{R}/tables/{table}.md").read_text()
        assert {"avg_lo", "avg_hi"} <= set(frame.columns) and (frame["avg_lo"] <= frame["avg_hi"]).all()
    glue = pd.read_csv(smoke / f"{R}/tables/glue.csv", index_col="variant")
    assert {"proxy_single", "paper_sparsity", "paper_avg"} <= set(glue.columns)
    assert "delta_avg" not in glue.columns  # proxy scores are never subtracted from the paper's
    # The kind column comes from the variant records, the DAM searches' and their retrainings' alike.
    assert glue["kind"].to_dict() == {v: "dam_s" if v.startswith("dam_s") else "fixed" for v in SMOKE_VARIANTS}
    assert "proxy_qa" in pd.read_csv(smoke / f"{R}/tables/squad_swag.csv").columns
    findings = (smoke / f"{R}/findings.md").read_text()
    assert findings.count("Verdict:") == 3 and "PROXY" in findings
    assert findings.count("95 % interval [") >= 3  # every verdict prints its interval


def test_running_jobs_never_hold_more_threads_than_cores(smoke):
    """The smoke run (--cores 2) never ran jobs whose threads sum to more than 2, replayed from its Snakemake
    log. Snakemake 9.10 to 9.16 gave back the cores of a job that was selected alone without ever taking them
    (snakemake#3815): after the lone 2-thread corpus and examples jobs, six 1-thread training jobs started at
    once on 2 cores."""
    log = sorted((smoke / ".snakemake/log").glob("*.snakemake.log"))[0].read_text()  # the fixture's run: first
    peak, jobs, started = peak_threads(log)
    assert started == sum(job_counts(log).values())  # every job's start was read
    assert peak == 2, f"jobs holding {peak} threads at once on --cores 2: {jobs}"


def test_second_run_does_nothing(smoke):
    r = snakemake(smoke, "--cores", "2", "--configfile", "config/smoke.yaml")
    assert "Nothing to be done" in r.stdout + r.stderr


def test_runs_of_other_configs_sit_beside_a_finished_run(smoke, tmp_path):
    """issue 15 item 6: a second config (its own `run`) in the same folder plans every job under its own roots
    and, after building its corpus, leaves the finished smoke run up to date (before runs had roots of their
    own, the second config's corpus rule rewrote data/corpus and invalidated the whole smoke run)."""
    wd = copy_of(smoke, tmp_path / "wd")
    (wd / "other.yaml").write_text(yaml.safe_dump({**SMOKE, "run": "other", "seeds": [7]}))
    plan = snakemake(wd, "-n", "-p", "--configfile", "other.yaml")
    out = plan.stdout + plan.stderr
    assert job_counts(out)["finetune"] == len(SMOKE_VARIANTS) * len(SMOKE["tasks"]["names"])
    outputs = set(re.findall(r"--out (\S+)", out))
    assert outputs and all(o.startswith(("data/other/", "results/other/")) for o in outputs), outputs
    snakemake(wd, "data/other/corpus/stats.json", "--cores", "1", "--configfile", "other.yaml")  # target first: --configfile takes a list
    assert (wd / "data/other/corpus/stats.json").is_file()
    assert "Nothing to be done" in snakemake(wd, "-n", "--configfile", "config/smoke.yaml").stdout


@pytest.mark.parametrize("config", ["config/config.yaml", "config/smoke.yaml", "config/paper.yaml", "config/gpu.yaml",
                                    "config/gpu_full.yaml"])
def test_snakemake_lint_is_clean(tmp_path, config):
    r = snakemake(workdir(tmp_path / "lint"), "--lint", "--configfile", config, check=False)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Congratulations, your workflow is in a good condition!" in out, out[-4000:]


def test_deleting_one_checkpoint_reruns_only_its_branch(smoke, tmp_path):
    wd = copy_of(smoke, tmp_path / "wd")
    shutil.rmtree(wd / f"{R}/pretrain/longformer/seed{SMOKE_SEEDS[0]}/model")
    n_tasks = len(SMOKE["tasks"]["names"])
    assert dry_run(wd) == {"pretrain": 1, "finetune": n_tasks, "tables": 1, "figures": 1, "findings": 1, "all": 1}


def test_changing_a_lambda_reruns_only_that_dam_branch(smoke, tmp_path):
    wd = copy_of(smoke, tmp_path / "wd")
    config = {**SMOKE, "dam": {"dam_s": [0.01]}}
    (wd / "changed.yaml").write_text(yaml.safe_dump(config))
    r = snakemake(wd, "-n", "--quiet", "rules", "--configfile", "changed.yaml")
    n_tasks, n_seeds = len(SMOKE["tasks"]["names"]), len(SMOKE_SEEDS)
    # The new search, its retraining and both variants' fine-tunings, once per seed.
    assert job_counts(r.stdout + r.stderr) == {"dam_search": n_seeds, "pretrain_learned": n_seeds,
                                               "finetune": 2 * n_tasks * n_seeds, "tables": 1, "figures": 1,
                                               "findings": 1, "all": 1}  # fmt: skip


def test_killed_job_is_incomplete_and_rerun_incomplete_recovers(smoke, tmp_path):
    """issue 8 item 2: kill -9 of Snakemake mid-job; nothing is mistaken for complete; --rerun-incomplete finishes."""
    wd = copy_of(smoke, tmp_path / "wd")
    for path in (f"{R}/pretrain/no_diagonal/seed0", f"{R}/state/pretrain/no_diagonal/seed0"):
        shutil.rmtree(wd / path, ignore_errors=True)
    (wd / f"{LOGS}/pretrain/no_diagonal/seed0.log").unlink()  # the smoke run's log; wait for the new job's own
    target = f"{R}/pretrain/no_diagonal/seed0/summary.json"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen([str(BIN / "snakemake"), target, "--cores", "1", "--configfile", "config/smoke.yaml"],
                            cwd=wd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    log = wd / f"{LOGS}/pretrain/no_diagonal/seed0.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not log.exists():
        time.sleep(0.2)  # the shell redirect creates the log when the job starts
    time.sleep(1)  # the job is starting (importing torch takes longer): its outputs cannot exist yet
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its job: the process group this test started
    proc.wait()
    assert not (wd / target).exists()  # outputs are written atomically at the very end
    # As if the kill had landed while the outputs were being written: they exist, but the job never finished.
    (wd / f"{R}/pretrain/no_diagonal/seed0/model").mkdir(parents=True, exist_ok=True)
    (wd / target).write_text("{}")
    (wd / f"{R}/pretrain/no_diagonal/seed0/log.jsonl").write_text("")
    r = snakemake(wd, target, "-n", "--configfile", "config/smoke.yaml", check=False)
    assert r.returncode != 0 and "incomplete" in (r.stdout + r.stderr).lower(), "partial outputs taken as complete"
    counts = job_counts(snakemake(wd, target, "-n", "--quiet", "rules", "--rerun-incomplete",
                                  "--configfile", "config/smoke.yaml").stdout)  # fmt: skip
    assert counts.get("pretrain") == 1
    snakemake(wd, "--unlock", "--configfile", "config/smoke.yaml")  # a SIGKILLed snakemake leaves its lock
    snakemake(wd, target, "--cores", "2", "--rerun-incomplete", "--configfile", "config/smoke.yaml")
    assert json.loads((wd / target).read_text())["sparsity"] > 0
    assert "Nothing to be done" in snakemake(wd, target, "-n", "--configfile", "config/smoke.yaml").stdout


def test_dvc_push_then_pull_into_a_fresh_clone_leaves_nothing_to_do(smoke, tmp_path):
    """issue 5: the repository's dvc.yaml (its runs replaced by the smoke run) versions a finished run; a fresh
    git clone gets it back with `dvc pull`, and after `snakemake --touch` (what `make pull` runs) Snakemake has
    nothing to do. Runs offline under the network guard, like the smoke run."""
    src = copy_of(smoke, tmp_path / "src")
    (src / "Snakefile").unlink()
    shutil.copy2(REPO / "Snakefile", src / "Snakefile")
    for name in ("workflow", "config", "envs", "src"):  # real files, not the links: git and DVC hash them
        (src / name).unlink(missing_ok=True)
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    stages = (REPO / "dvc.yaml").read_text()
    assert stages.count(" --cores all --configfile ${item.config} ${item.snakemake}") == 3
    stages = stages.replace(" --cores all --configfile", " --cores 2 --configfile")
    runs = stages[stages.index("  - runs:\n") : stages.index("\nstages:")]
    assert 'gpu: {config: config/gpu.yaml, snakemake: "--resources gpu=9"}' in runs
    smoke_run = f"  - runs:\n      {SMOKE['run']}: {{config: config/smoke.yaml, snakemake: \"\"}}\n"
    (src / "dvc.yaml").write_text(stages.replace(runs, smoke_run))
    shutil.copy2(REPO / ".gitignore", src / ".gitignore")  # results/ and data/ travel by DVC, never by git
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **OFFLINE_ENV, "DVC_NO_ANALYTICS": "1"}

    def sh(*cmd: str, cwd: Path) -> str:
        r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{' '.join(cmd)} failed in {cwd}:\n{(r.stdout + r.stderr)[-4000:]}"
        return r.stdout + r.stderr

    git = ("git", "-c", "user.name=test", "-c", "user.email=test@example.org")
    sh(*git, "init", "-q", cwd=src)
    sh("dvc", "init", "-q", cwd=src)
    shutil.copy2(REPO / ".dvc/config", src / ".dvc/config")  # the repository's remote, redirected next
    sh("dvc", "remote", "modify", "local", "url", str(tmp_path / "remote"), cwd=src)
    sh("dvc", "repro", cwd=src)  # every stage's Snakemake target is up to date: only hashes are recorded
    sh(*git, "add", "-A", cwd=src)
    sh(*git, "commit", "-q", "-m", "smoke run", cwd=src)
    sh("dvc", "push", cwd=src)

    clone = tmp_path / "clone"
    sh(*git, "clone", "-q", str(src), str(clone), cwd=tmp_path)
    assert not (clone / "results").exists() and not (clone / "data").exists()  # git brought no outputs
    sh("dvc", "pull", cwd=clone)
    for rel in (f"{R}/tables/glue.csv", f"{R}/pretrain/dense/seed0/model/model.safetensors",
                f"{D}/examples/stats.json", f"{D}/examples/shard-00001/train.arrow", f"{R}/figures/masks.png"):  # fmt: skip
        assert (clone / rel).read_bytes() == (smoke / rel).read_bytes(), rel
    sh("snakemake", "--cores", "1", "--touch", "--configfile", "config/smoke.yaml", cwd=clone)
    assert "Nothing to be done" in sh("snakemake", "-n", "--configfile", "config/smoke.yaml", cwd=clone)
    assert "up to date" in sh("dvc", "status", cwd=clone).lower()


# A stand-in for `snakemake <target> ... --configfile <config>` that writes, per run, the folders the real target
# writes there (and nothing else): proxy tasks only with `tasks.source: proxy`, DAM masks only with DAM runs.
FAKE_SNAKEMAKE = """#!PYTHON
import pathlib, sys, yaml
target, config = sys.argv[1], yaml.safe_load(open(sys.argv[sys.argv.index("--configfile") + 1]))
data, results = f"data/{config['run']}", f"results/{config['run']}"
writes = {"pretrain_all": [f"{data}/corpus", f"{data}/tokenizer", f"{data}/examples", f"{results}/pretrain"]
                          + [f"{results}/dam"] * any(config.get("dam", {}).values()),
          "finetune_all": [f"{results}/finetune"] + [f"{data}/tasks"] * (config["tasks"]["source"] == "proxy")}
for folder in writes[target]:
    pathlib.Path(folder).mkdir(parents=True, exist_ok=True)
    pathlib.Path(folder, "done").write_text(folder)
"""


def test_dvc_stages_of_every_run_record_what_their_snakemake_target_writes(tmp_path):
    """dvc.yaml's pretrain and finetune stages, run for each of its runs (plus a run with local tasks and no DAM
    runs) with a stand-in Snakemake that writes only what that run's target writes: DVC records every stage.
    data/<run>/tasks exists only for proxy tasks and results/<run>/dam only with DAM runs; an output declared
    but never written failed `dvc repro finetune@paper` after all its jobs ("output 'data/paper/tasks' does
    not exist")."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())
    runs = stages["vars"][0]["runs"]
    shutil.copytree(REPO / "config", tmp_path / "config")
    plain = yaml.safe_load((REPO / "config/config.yaml").read_text())
    plain.update(run="plain", dam={}, tasks={**plain["tasks"], "source": "local", "local_dir": "/nonexistent"})
    (tmp_path / "config/plain.yaml").write_text(yaml.safe_dump(plain))
    runs["plain"] = {"config": "config/plain.yaml", "snakemake": ""}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"vars": stages["vars"], "stages": {
        name: stages["stages"][name] for name in ("pretrain", "finetune")}}))  # fmt: skip
    for dep in ("Snakefile", "workflow/x.smk", "src/sparsebert/x.py"):
        (tmp_path / dep).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / dep).write_text("")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/snakemake").write_text(FAKE_SNAKEMAKE.replace("PYTHON", sys.executable))
    (tmp_path / "bin/snakemake").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1"}
    for cmd in (["dvc", "init", "--no-scm", "-q"], ["dvc", "repro", "finetune"]):
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"{' '.join(cmd)}:\n{(r.stdout + r.stderr)[-3000:]}"
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]
    assert set(lock) == {f"{stage}@{run}" for stage in ("pretrain", "finetune") for run in runs}


def test_dvc_loss_plot_names_exactly_the_default_runs_variants():
    """The top-level loss plot's y fields are the columns of results/default/figures/loss_curves.csv: step, then
    each variant of config/config.yaml (its masks, DAM runs <kind>_<lambda>, retrainings). `dvc plots show` drops
    the whole plot when one field is missing from the CSV (it named cpu_full.yaml's 13 variants)."""
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    assert yaml.safe_load((REPO / "dvc.yaml").read_text())["vars"][0]["runs"]["default"]["config"] == "config/config.yaml"
    dam_runs = [f"{kind}_{lam:g}" for kind, lams in default.get("dam", {}).items() for lam in lams]
    columns = list(default["masks"]) + dam_runs + [f"{r}_retrain" for r in dam_runs] * bool(default.get("dam_retrain"))
    (plot,) = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    (spec,) = plot.values()
    assert spec["x"] == "step"
    assert spec["y"] == {"results/default/figures/loss_curves.csv": columns}


def test_paper_config_builds_the_full_job_list(tmp_path):
    wd = workdir(tmp_path / "paper")
    r = snakemake(wd, "-n", "-p", "--configfile", "config/paper.yaml")  # one dry run (the DAG takes 10-30 s)
    out = r.stdout + r.stderr  # the job table and every job's shell command
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    dam_runs = [f"{d}_{lam:g}" for d, lams in paper["dam"].items() for lam in lams]
    variants = list(paper["masks"]) + dam_runs + [f"{run}_retrain" for run in dam_runs]
    tasks = paper["tasks"]["names"]
    assert {"mnli", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc", "rte", "squad_v1", "squad_v2", "swag"} == set(tasks)
    seeds = paper["seeds"]
    jobs = set(re.findall(r"results/paper/finetune/([\w.]+)/seed(\d+)/(\w+)/metrics\.json", out))
    assert jobs == {(v, str(s), t) for v in variants for s in seeds for t in tasks}
    counts = job_counts(out)
    assert counts["finetune"] == len(variants) * len(seeds) * len(tasks) == (9 + 8 + 8) * len(seeds) * 11
    assert counts["pretrain"] == 9 * len(seeds) and counts["dam_search"] == counts["pretrain_learned"] == 8 * len(seeds)
    # Data preparation fans out: one corpus and one examples job per shard, then one merge each.
    assert counts["corpus_shard"] == counts["examples_shard"] == paper["corpus"]["shards"] == 512
    assert counts["corpus"] == counts["examples"] == 1
    for shard in ("shard-00000", "shard-00511"):
        assert f"examples --corpus data/paper/corpus --tokenizer data/paper/tokenizer --shard {shard} " in out
        assert "corpus --params " in out and f"--shard {int(shard[-5:])} --threads 1 --out data/paper/corpus " in out
    assert "torchrun --standalone --nproc_per_node=8" in out  # 8 GPUs -> one process per GPU
    # The official DAM protocol: each DAM row fine-tunes the searched model with its binarized mask; the
    # retrain ablation fine-tunes the model pretrained from scratch with it; SQuAD at 384 (run_squad.sh).
    for run in dam_runs:
        for seed in seeds:
            for task in tasks:
                assert (f"finetune --model results/paper/dam/{run}/seed{seed}/model " in out and
                        f"--mask-file results/paper/dam/{run}/seed{seed}/mask.safetensors "
                        f"--out results/paper/finetune/{run}/seed{seed}/{task} " in out)
            assert f"--model results/paper/pretrain/{run}_retrain/seed{seed}/model " in out
    recipe = {task: recipes.fill("finetune", json.loads(re.search(rf"--task {task} .*?--params '([^']*)'", out).group(1)))
              for task in ("rte", "squad_v1", "swag")}  # as `sparsebert finetune` reads them: defaults filled
    assert recipe["squad_v1"]["max_seq_length"] == 384 and recipe["squad_v1"]["doc_stride"] == 128
    # The official fine-tuning optimizers (han-shi/SparseBERT): run_glue.py / run_squad.py in fp16, their
    # default, apex FusedAdam(bias_correction=False) with eps 1e-8 and the scheduler stepped first; run_glue.py
    # clips nothing, run_squad.py the global norm at 1.0; run_swag.py in fp32: BertAdam (eps 1e-6, each tensor
    # clipped at 1.0, warmup_linear(step / total)).
    optimizer = ("bias_correction", "eps", "schedule_offset", "grad_clip", "grad_clip_scope")
    assert [recipe["rte"][k] for k in optimizer] == [False, 1e-8, 1, None, "global"]
    assert [recipe["squad_v1"][k] for k in optimizer] == [False, 1e-8, 1, 1.0, "global"]
    assert [recipe["swag"][k] for k in optimizer] == [False, 1e-6, 0, 1.0, "tensor"]


def test_hub_revisions_pin_each_repository_for_its_tasks(tmp_path):
    """tasks.hub_revisions reaches every fine-tuning of a task read from the pinned repository, and no other."""
    wd = workdir(tmp_path / "pinned")
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    sha = "0123456789abcdef0123456789abcdef01234567"
    paper["tasks"]["hub_revisions"] = {"nyu-mll/glue": sha}
    (wd / "pinned.yaml").write_text(yaml.safe_dump(paper))
    shell = snakemake(wd, "finetune_all", "-n", "-p", "--configfile", "pinned.yaml").stdout
    sources = {task: json.loads(source) for task, source in re.findall(r"--task (\w+) --task-source '([^']*)'", shell)}
    assert set(sources) == set(paper["tasks"]["names"])
    for task, source in sources.items():
        pinned = task not in ("squad_v1", "squad_v2", "swag")
        assert source == ({"hub": True, "revision": sha} if pinned else {"hub": True}), task


def test_seeds_fan_out_every_pretraining_and_finetuning(tmp_path):
    """Two seeds: every pretraining (fixed masks, DAM searches, retrainings) runs once per seed with that seed
    in its recipe, every fine-tuning once per (variant, seed, task), each reading its own seed's model."""
    wd = workdir(tmp_path / "seeds")
    seeds = [3, 5]
    (wd / "seeds.yaml").write_text(yaml.safe_dump({**SMOKE, "seeds": seeds}))
    r = snakemake(wd, "-n", "-p", "--configfile", "seeds.yaml")
    out = r.stdout + r.stderr
    tasks = SMOKE["tasks"]["names"]
    assert job_counts(out) | {} == {
        "corpus_shard": 2, "corpus": 1, "tokenizer": 1, "examples_shard": 2, "examples": 1, "proxy_tasks": 1,
        "pretrain": len(SMOKE["masks"]) * 2, "dam_search": len(SMOKE_DAM_RUNS) * 2,
        "pretrain_learned": len(SMOKE_RETRAINS) * 2, "finetune": len(SMOKE_VARIANTS) * 2 * len(tasks),
        "tables": 1, "figures": 1, "findings": 1, "all": 1}  # fmt: skip
    jobs = set(re.findall(rf"--out {R}/finetune/([\w.]+)/seed(\d+)/(\w+) ", out))
    assert jobs == {(v, str(s), t) for v in SMOKE_VARIANTS for s in seeds for t in tasks}
    for seed in seeds:
        for mask in SMOKE["masks"]:
            assert re.search(rf'pretrain .*"seed": {seed}[,}}].*--mask {mask} .*--out {R}/pretrain/{mask}/seed{seed} ', out)
        for dam_type, lams in SMOKE["dam"].items():
            for lam in lams:
                run = f"{dam_type}_{lam:g}"
                assert re.search(rf'dam-search .*"seed": {seed}[,}}].*--mask {dam_type} --dam-lambda {lam!r} '
                                 rf'--out {R}/dam/{run}/seed{seed} ', out)  # fmt: skip
                assert f"--mask learned --mask-file {R}/dam/{run}/seed{seed}/mask.safetensors" in out
                assert (f"--model {R}/dam/{run}/seed{seed}/model " in out
                        and f"--mask-file {R}/dam/{run}/seed{seed}/mask.safetensors --out {R}/finetune/{run}/seed{seed}/" in out)
        assert f"--model {R}/pretrain/{SMOKE_RETRAINS[0]}/seed{seed}/model " in out


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda c: c.update(learning_rate=1e-3), "learning_rate"),  # unknown top-level key
        (lambda c: c["pretrain"].update(max_step=5), "max_step"),  # unknown recipe key
        (lambda c: c["masks"].update(diagonal_only={}), "diagonal_only"),  # unknown mask
        (lambda c: c["dam"].update(dam_s=[-0.001]), "-0.001"),  # negative lambda
        (lambda c: c.pop("tasks"), "tasks"),  # missing tasks
        (lambda c: c["tasks"].update(names=["glue_everything"]), "glue_everything"),  # unknown task
        (lambda c: c.update(run="../elsewhere"), "../elsewhere"),  # a run name that is not a folder name
    ],
)
def test_invalid_config_fails_before_any_job(tmp_path, change, expected):
    wd = workdir(tmp_path / "bad")
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    change(config)
    (wd / "bad.yaml").write_text(yaml.safe_dump(config))
    r = snakemake(wd, "--cores", "1", "--configfile", "bad.yaml", check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and expected in out, out[-3000:]
    assert "validat" in out.lower()
    assert not (wd / "data").exists() and not (wd / "results").exists()  # no job ran


def test_schema_enums_match_the_registries():
    from sparsebert.data.tasks import TASKS
    from sparsebert.masks import MASKS

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["masks"]["propertyNames"]["enum"] == list(MASKS)
    assert schema["properties"]["tasks"]["properties"]["names"]["items"]["enum"] == list(TASKS)


def test_network_guard_is_active_for_the_smoke_run():
    probe = "import urllib.request; urllib.request.urlopen('http://example.org', timeout=5)"
    r = subprocess.run([str(BIN / "python"), "-c", probe], env={**os.environ, **OFFLINE_ENV},
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode != 0 and "denied by tests/netguard" in r.stderr


@pytest.mark.parametrize(("config", "fixed", "searches"), [("config/gpu.yaml", 3, 2), ("config/gpu_full.yaml", 9, 4)])
def test_gpu_configs_build_their_dags_with_shared_gpu_jobs(tmp_path, config, fixed, searches):
    """issue 22: the one-GPU configs plan 3 seeds of every variant and every proxy task; every training job takes
    one slot of a GPU shared by 9 (the launcher's prefix), and the searches of gpu.yaml run 1,000 steps."""
    wd = workdir(tmp_path / "gpu")
    counts = job_counts(snakemake(wd, "-n", "--quiet", "rules", "--configfile", config).stdout)
    assert counts["pretrain"] == 3 * fixed and counts["dam_search"] == 3 * searches
    assert counts["finetune_model"] == 3 * (fixed + searches)  # tasks.jobs per_model: one job fine-tunes 5 tasks
    shell = snakemake(wd, "-n", "-p", "--configfile", config).stdout
    trainings = [line for line in shell.splitlines() if " -m sparsebert pretrain " in line or " dam-search " in line
                 or " -m sparsebert finetune " in line]  # fmt: skip
    assert len(trainings) == 3 * (fixed + searches) * 2
    prefix = "python -m sparsebert.launch --gpus 1 --jobs-per-gpu 9 -- python -m "
    assert all(line.removeprefix("Shell command:").lstrip().startswith(prefix) for line in trainings), trainings[0]
    if config == "config/gpu.yaml":
        assert all('"max_steps": 1000' in line for line in trainings if " dam-search " in line)
        assert all('"max_steps": 4000' in line for line in trainings if " -m sparsebert pretrain " in line)


def test_gpu_demo_script_plans_the_run_and_reports_it(tmp_path):
    """benchmarks/gpu_demo.sh, the device run's one call, in its dry-run mode on the smoke config (no wheels to
    install here): the `python` wrapper first on PATH, Snakemake planned under the budget, run_info.txt with the
    versions, the wall time and the exit status."""
    wd = workdir(tmp_path / "demo")
    (wd / "src").symlink_to(REPO / "src")
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **OFFLINE_ENV, "CONFIG": "config/smoke.yaml",
           "WHEELS": str(tmp_path / "none"), "SITE": str(tmp_path / "site"), "OUT": str(out), "CORES": "2"}  # fmt: skip
    r = run_watched(["bash", str(REPO / "benchmarks/gpu_demo.sh"), "run", "--dry-run"], cwd=wd, env=env, timeout=120,
                    workdir=wd)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    info = (out / "run_info.txt").read_text()
    assert "config: config/smoke.yaml (run smoke); cores 2; GPU slots 9" in info and "| torch " in info
    assert "snakemake exit status: 0" in info and re.search(r"^wall_s: [0-9.]+$", info, re.M)
    assert "This was a dry-run" in (out / "snakemake.log").read_text()
    assert (tmp_path / "site/pybin/python").read_text() == '#!/bin/sh\nexec python3 "$@"\n'
    assert not list(out.glob("*.tar.gz"))  # a dry run has nothing to bring back


def fake_program(fake_bin: Path, name: str, body: str, calls: Path) -> None:
    """An executable shell script `name` in fake_bin; `$calls` in its body is the log the tests read."""
    fake_bin.mkdir(exist_ok=True)
    (fake_bin / name).write_text(f"#!/bin/sh\ncalls={calls}\n{body}\n")
    (fake_bin / name).chmod(0o755)


def fake_mps_control(fake_bin: Path, calls: Path, out: Path) -> None:
    """The driver's MPS control program, logging its arguments, its stdin's command, the pipes, and whether
    Snakemake has started (its log exists in `out`)."""
    fake_program(fake_bin, "nvidia-cuda-mps-control", f"[ $# -gt 0 ] || read -r cmd\nwhen=before; "
                 f'[ -e {out}/snakemake.log ] && when=after\necho "$* ${{cmd:-}} $CUDA_MPS_PIPE_DIRECTORY $when" >> $calls',
                 calls)  # fmt: skip


def stubbed_demo_run(tmp_path, fake_control: bool, snakemake_body: str, **settings):
    """`gpu_demo.sh run` on the smoke config with stubs that log to calls.log (`$calls` in `snakemake_body`): a
    `snakemake` (its --version answers at once; a real run does `snakemake_body`) and, where asked, the driver's
    MPS control program. Returns (process, out, site, calls)."""
    wd = workdir(tmp_path / "demo")
    (wd / "src").symlink_to(REPO / "src")
    fake_bin, calls = tmp_path / "fake_bin", tmp_path / "calls.log"
    out, site = tmp_path / "out", tmp_path / "site"
    fake_program(fake_bin, "snakemake", 'echo "snakemake $* pipes=${CUDA_MPS_PIPE_DIRECTORY:-none}" >> $calls\n'
                 f'[ "$1" = --version ] && exit 0\n{snakemake_body}', calls)  # fmt: skip
    if fake_control:
        fake_mps_control(fake_bin, calls, out)
    env = {**os.environ, "PATH": os.pathsep.join([str(fake_bin), str(BIN), os.environ["PATH"]]), **OFFLINE_ENV,
           "CONFIG": "config/smoke.yaml", "WHEELS": str(tmp_path / "none"), "SITE": str(site), "OUT": str(out),
           "CORES": "2", **settings}  # fmt: skip
    r = run_watched(["bash", str(REPO / "benchmarks/gpu_demo.sh"), "run"], cwd=wd, env=env, timeout=120, workdir=wd)
    return r, out, site, calls


@pytest.mark.parametrize("mps, fake_control, stale, expected", [
    ("auto", True, False, "mps: off (a CUDA probe failed under it; "),
    ("auto", True, True, "mps: off (a CUDA probe failed under it; "),
    ("off", True, False, "mps: off (MPS=off)"),
    ("auto", False, False, "mps: off (no nvidia-cuda-mps-control)"),
])
def test_gpu_demo_script_starts_mps_only_where_a_cuda_probe_passes_under_it(tmp_path, mps, fake_control, stale,
                                                                             expected):
    """gpu_demo.sh's MPS daemon, on a CPU: with the driver's control program there (a fake) the daemon is started
    with pipes of the call's own, the CUDA probe fails (no GPU), and the daemon is stopped again before Snakemake
    starts, which then sees no MPS pipes; a daemon that an earlier, cut-off call left behind is quit first.
    MPS=off, or no control program, never calls it. Snakemake is a stub (the real one is the test above)."""
    if stale:
        (tmp_path / "site/mps/pipe").mkdir(parents=True)
    r, out, site, calls = stubbed_demo_run(tmp_path, fake_control, "exit 0", MPS=mps)
    assert r.returncode == 0, r.stdout + r.stderr
    info = (out / "run_info.txt").read_text()
    assert expected in info and "snakemake exit status: 0\n" in info
    lines = calls.read_text().splitlines()
    assert lines[0] == "snakemake --version pipes=none"  # run_info's
    assert lines[-1].startswith("snakemake --cores 2 --resources gpu=9 --configfile config/smoke.yaml ")
    assert lines[-1].endswith(" pipes=none")
    pipes = f"{site}/mps/pipe"
    if fake_control and mps == "auto":
        assert lines[1:-1] == [f" quit {pipes} before"] * stale + [f"-d  {pipes} before", f" quit {pipes} before"]
        assert "cuda" in info.split(expected)[1].lower()  # the end of the probe's log: torch's own error
    else:
        assert len(lines) == 2
    assert sorted(p.name for p in out.iterdir()) == ["run_info.txt", "snakemake.log"]  # nothing to bring back


def test_gpu_demo_budget_counts_from_the_call_start_and_stops_snakemake_with_sigterm(tmp_path):
    """BUDGET_S is the call's time from its start (installing the wheels and the version checks included), not
    Snakemake's alone, so the tarball still fits the device call; at the budget Snakemake and its jobs get SIGTERM,
    on which training jobs checkpoint their current step (SIGINT would lose the steps since the last periodic
    checkpoint). A budget used up before Snakemake starts runs nothing. (30 s: the version checks before
    Snakemake import torch and transformers, 2-6 s on 2 cores, and Snakemake needs 10 s of the budget left.)"""
    r, out, site, calls = stubbed_demo_run(tmp_path / "a", False, "trap 'echo got TERM >> $calls; exit 0' TERM\n"
                                           "sleep 60 & wait", BUDGET_S="30")  # fmt: skip
    assert r.returncode == 124, r.stdout + r.stderr
    info = (out / "run_info.txt").read_text()
    assert "snakemake exit status: 124 (stopped at the 30 s budget: run again on this machine to resume)" in info
    assert float(re.search(r"^wall_s: ([0-9.]+)$", info, re.M)[1]) < 30  # the budget began before Snakemake did
    assert calls.read_text().splitlines()[-1] == "got TERM"
    r, out, site, calls = stubbed_demo_run(tmp_path / "b", False, "exit 0", BUDGET_S="0")
    assert r.returncode == 124 and "budget was used up before Snakemake started" in (out / "snakemake.log").read_text()
    assert calls.read_text().splitlines() == ["snakemake --version pipes=none"]


def test_gpu_demo_bench_stops_an_mps_daemon_a_cut_off_run_left_behind(tmp_path):
    """`gpu_demo.sh bench` measures without MPS: a `run` call that the device cut off before it stopped its daemon
    left the pipes folder, and bench quits that daemon first (a fake control program logs the call; gpu.py only
    prints its help). Without the folder it calls nothing."""
    fake_bin, calls, site, out = tmp_path / "fake_bin", tmp_path / "calls.log", tmp_path / "site", tmp_path / "out"
    fake_mps_control(fake_bin, calls, out)
    env = {**os.environ, "PATH": os.pathsep.join([str(fake_bin), str(BIN), os.environ["PATH"]]),
           "WHEELS": str(tmp_path / "none"), "SITE": str(site), "OUT": str(out)}  # fmt: skip
    bench = ["bash", str(REPO / "benchmarks/gpu_demo.sh"), "bench", "--help"]
    r = subprocess.run(bench, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--sections" in r.stdout, r.stdout + r.stderr
    assert not calls.exists()
    (site / "mps/pipe").mkdir(parents=True)
    r = subprocess.run(bench, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert calls.read_text().splitlines() == [f" quit {site}/mps/pipe before"]  # no Snakemake in a bench call
    assert "--sections" in (out / "gpu.log").read_text()


@pytest.mark.parametrize("config", ["config/gpu.yaml", "config/gpu_full.yaml"])
def test_one_gpu_slot_count_is_the_same_everywhere_it_is_written(config):
    """The one-GPU runs' Snakemake slot count (`--resources gpu=N`) is written in three places besides the
    config's jobs_per_gpu: the Makefile (demo-gpu), benchmarks/gpu_demo.sh and dvc.yaml's runs. On one GPU, N must
    be jobs_per_gpu: fewer starves the GPU, more starts jobs that only wait for a slot."""
    resources = yaml.safe_load((REPO / config).read_text())["resources"]
    per_gpu = {rule: r["jobs_per_gpu"] for rule, r in resources.items() if r.get("gpu", 0) > 0}
    assert set(per_gpu) == {"pretrain", "dam_search", "pretrain_learned", "finetune"}
    (slots,) = set(per_gpu.values())
    assert re.search(rf"^GPU_SLOTS \?= {slots}$", (REPO / "Makefile").read_text(), re.M)
    assert f"GPU_SLOTS=${{GPU_SLOTS:-{slots}}}" in (REPO / "benchmarks/gpu_demo.sh").read_text()
    runs = yaml.safe_load((REPO / "dvc.yaml").read_text())["vars"][0]["runs"]
    (run,) = [r for r in runs.values() if r["config"] == config]
    assert run["snakemake"] == f"--resources gpu={slots}"
