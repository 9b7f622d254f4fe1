"""Graceful preemption (sparsebert/preemption.py) and checkpoint writes that fail half-way.

SIGTERM (or SIGUSR1) at a random point of pretraining, DAM search and fine-tuning: the job finishes the
step, checkpoints it, exits 75; the rerun resumes from exactly that step (not from the last periodic
checkpoint) and ends with weights bit-identical to an uninterrupted run. Under torchrun, a signal to one rank
stops both ranks after the same step. The random step is printed in every assertion message (rerun a
failure with SPARSEBERT_SIGNAL_AT_STEP=<step> by hand).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from _runs import run_watched
from conftest import TINY_RECIPE
from test_finetune import assets, run_finetune, run_finetune_process  # noqa: F401 - `assets` is a fixture
from test_pretrain import logged, run_pretrain, weights

from sparsebert import preemption, training
from sparsebert.io import UserError

STEPS, EVERY, LOG = 20, 10, 3
RECIPE = {"max_steps": STEPS, "checkpoint_every": EVERY, "log_every": LOG,
          "model": {**TINY_RECIPE["model"], "hidden_dropout_prob": 0.1}}  # dropout: its RNG must resume too
DAM = ("--dam-lambda", "1e-3")
# Not the `random` module: training run in-process (fine-tuning tests) reseeds it, which would fix the "random"
# step for a given test order.
RNG = random.SystemRandom()


def random_step(total: int, every: int, log_every: int) -> int:
    """A random step that is neither a periodic checkpoint (resuming from it proves the signal's checkpoint)
    nor a log line (the checkpoint must carry the log's running sums)."""
    return RNG.choice([k for k in range(1, total + 1) if k % every and k % log_every])


def checkpoint_steps(state) -> list[int]:
    return sorted(json.loads((p / "meta.json").read_text())["step"] for p in state.glob("step-*"))


@pytest.fixture(scope="module")
def uninterrupted(tiny_pretraining_data, tmp_path_factory):
    """The reference runs, one per engine, made once for the module."""
    root, done = tmp_path_factory.mktemp("whole"), {}

    def get(mask):
        if mask not in done:
            run_pretrain(tiny_pretraining_data, root / mask, mask=mask, recipe=RECIPE,
                         extra=DAM if mask == "dam_s" else (), command="dam-search" if mask == "dam_s" else "pretrain")
            done[mask] = root / mask
        return done[mask]

    return get


def assert_same_run(whole, cut, context):
    a, b = weights(whole), weights(cut)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs ({context})"
    assert [r["loss"] for r in logged(whole)] == [r["loss"] for r in logged(cut)], context


@pytest.mark.slow
@pytest.mark.parametrize("mask", ["star", "dam_s"])
def test_sigterm_mid_step_checkpoints_that_step_and_the_rerun_is_bit_identical(tiny_pretraining_data, tmp_path,
                                                                               uninterrupted, mask):
    step = random_step(STEPS, EVERY, LOG)
    context = f"SIGTERM during step {step} of {mask}"
    command, extra = ("dam-search", DAM) if mask == "dam_s" else ("pretrain", ())
    cut = tmp_path / "cut"
    p = run_pretrain(tiny_pretraining_data, cut, mask=mask, recipe=RECIPE, extra=extra, command=command,
                     env={"SPARSEBERT_SIGNAL_AT_STEP": str(step)}, check=False)
    assert p.returncode == preemption.EXIT_CODE, f"{context}: exit {p.returncode}\n{p.stderr[-3000:]}"
    assert f"preempted: SIGTERM received; stopped after step {step}" in p.stderr, context
    assert not (cut / "summary.json").exists()
    assert checkpoint_steps(tmp_path / "cut.state")[-1:] == [step], context
    p = run_pretrain(tiny_pretraining_data, cut, mask=mask, recipe=RECIPE, extra=extra, command=command)
    assert f"cut.state/step-{step:08d} (step {step} of {STEPS})" in p.stderr, f"{context}: not resumed from it"
    assert_same_run(uninterrupted(mask), cut, context)


@pytest.mark.slow
def test_sigusr1_from_outside_at_a_random_moment(tiny_pretraining_data, tmp_path, uninterrupted):
    """A real signal from another process, at a random moment after training has started (what SLURM's
    `--signal` does): the step it lands in is unknown beforehand and read back from the checkpoint."""
    examples, tokenizer = tiny_pretraining_data
    cut = tmp_path / "cut"
    target = RNG.randint(1, STEPS // (2 * LOG))  # wait for this many log lines, then signal
    cmd = [sys.executable, "-m", "sparsebert", "pretrain", "--examples", str(examples), "--tokenizer", str(tokenizer),
           "--params", json.dumps({**TINY_RECIPE, **RECIPE}), "--mask", "star", "--out", str(cut)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log, deadline = tmp_path / "cut.state" / "log.jsonl", time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= target:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGUSR1)
    _, stderr = proc.communicate(timeout=240)
    context = f"SIGUSR1 after {target} logged steps"
    assert proc.returncode == preemption.EXIT_CODE, f"{context}: exit {proc.returncode}\n{stderr[-3000:]}"
    step = checkpoint_steps(tmp_path / "cut.state")[-1]
    assert f"preempted: SIGUSR1 received; stopped after step {step}" in stderr and target * LOG <= step < STEPS, context
    p = run_pretrain(tiny_pretraining_data, cut, recipe=RECIPE)
    assert f"(step {step} of {STEPS})" in p.stderr, context
    assert_same_run(uninterrupted("star"), cut, f"{context}, stopped after step {step}")


@pytest.mark.slow
def test_finetune_sigterm_mid_step_resumes_from_that_step(assets, tmp_path):  # noqa: F811 - pytest fixture
    recipe = {"epochs": 3, "checkpoint_every": 4, "log_every": 3}
    assert run_finetune(assets, "sst2", tmp_path / "whole", recipe) == 0
    total = json.loads((tmp_path / "whole" / "metrics.json").read_text())["steps"]
    step = random_step(total, recipe["checkpoint_every"], recipe["log_every"])
    context = f"SIGTERM during fine-tuning step {step} of {total}"
    p = run_finetune_process(assets, "sst2", tmp_path / "cut", recipe, env={"SPARSEBERT_SIGNAL_AT_STEP": str(step)})
    assert p.returncode == preemption.EXIT_CODE, f"{context}: exit {p.returncode}\n{p.stderr[-3000:]}"
    assert not (tmp_path / "cut" / "metrics.json").exists()
    assert checkpoint_steps(tmp_path / "cut.state")[-1:] == [step], context
    p = run_finetune_process(assets, "sst2", tmp_path / "cut", recipe)
    assert p.returncode == 0 and f"(step {step} of {total})" in p.stderr, f"{context}\n{p.stderr[-3000:]}"
    read = lambda run, name: (tmp_path / run / name).read_text().replace(str(tmp_path / run), "")  # noqa: E731
    assert read("whole", "metrics.json") == read("cut", "metrics.json"), context
    assert read("whole", "predictions.json") == read("cut", "predictions.json"), context
    assert [json.loads(r)["loss"] for r in read("whole", "log.jsonl").splitlines()] == \
        [json.loads(r)["loss"] for r in read("cut", "log.jsonl").splitlines()], context


@pytest.mark.slow
def test_a_checkpoint_write_failing_half_way_keeps_the_previous_one(tiny_pretraining_data, tmp_path, uninterrupted):
    """Disk full while the signal's checkpoint is written: the error names the path, the partial copy is
    gone, the previous checkpoint stays, and the rerun resumes from it to the same weights."""
    step = RNG.randint(EVERY + 1, STEPS)
    context = f"failed write of step {step}"
    cut = tmp_path / "cut"
    env = {"SPARSEBERT_SIGNAL_AT_STEP": str(step), "SPARSEBERT_FAIL_CHECKPOINT_AT_STEP": str(step)}
    p = run_pretrain(tiny_pretraining_data, cut, recipe=RECIPE, env=env, check=False)
    state = tmp_path / "cut.state"
    assert p.returncode == 2, f"{context}: exit {p.returncode}\n{p.stderr[-3000:]}"
    assert f"could not write checkpoint {state}/step-{step:08d}" in p.stderr, context
    assert "No space left on device" in p.stderr and f"step-{EVERY:08d} is kept" in p.stderr, context
    assert sorted(x.name for x in state.iterdir()) == ["code.json", "identity.json", "log.jsonl", f"step-{EVERY:08d}"], context
    p = run_pretrain(tiny_pretraining_data, cut, recipe=RECIPE)
    assert f"(step {EVERY} of {STEPS})" in p.stderr, context
    assert_same_run(uninterrupted("star"), cut, context)


def test_save_checkpoint_wraps_any_write_error_and_keeps_the_last_good_one(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    training.save_checkpoint(tmp_path, 1, model, optimizer, scheduler)

    def torch_save_dies_half_way(obj, path):
        open(path, "wb").write(b"half")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", torch_save_dies_half_way)
    with pytest.raises(UserError, match=r"could not write checkpoint .*step-00000002 \(RuntimeError: .*file write "
                                        r"failed\); the previous checkpoint .*step-00000001 is kept"):
        training.save_checkpoint(tmp_path, 2, model, optimizer, scheduler)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000001"]
    assert training.latest_checkpoint(tmp_path).name == "step-00000001"


@pytest.mark.slow
def test_ddp_ranks_agree_to_stop_after_the_same_step(tiny_pretraining_data, tmp_path):
    """Only rank 1 is signalled; the all-reduced flag stops both ranks after that step, rank 0 checkpoints
    it, and the resumed 2-process run equals an uninterrupted one."""
    examples, tokenizer = tiny_pretraining_data
    recipe = {**TINY_RECIPE, **RECIPE, "max_steps": 8, "checkpoint_every": 4, "micro_batch_size": 8}
    step = random_step(8, 4, LOG)

    def torchrun(out, env=None):
        return run_watched(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sparsebert",
             "pretrain", "--examples", str(examples), "--tokenizer", str(tokenizer), "--params", json.dumps(recipe),
             "--mask", "star", "--out", str(out)],
            cwd=tmp_path, env={**os.environ, **(env or {})}, timeout=300, workdir=tmp_path,
        )  # fmt: skip

    assert torchrun(tmp_path / "whole").returncode == 0
    p = torchrun(tmp_path / "cut", {"SPARSEBERT_SIGNAL_AT_STEP": f"{step}:1"})
    context = f"SIGTERM to rank 1 during step {step}"
    assert p.returncode != 0 and p.stderr.count(f"stopped after step {step}") == 2, f"{context}\n{p.stderr[-3000:]}"
    assert checkpoint_steps(tmp_path / "cut.state")[-1:] == [step], context
    p = torchrun(tmp_path / "cut")
    assert p.returncode == 0 and f"(step {step} of 8)" in p.stderr, f"{context}\n{p.stderr[-3000:]}"
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "cut")
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} ({context})"
    # The log is the global batch's, and the checkpoint carried the ranks' averaged running sums: the line across
    # the cut equals the uninterrupted one (up to the rounding of averaging before and after the cut).
    lines = {run: [json.loads(r) for r in (tmp_path / run / "log.jsonl").read_text().splitlines()]
             for run in ("whole", "cut")}
    for key in ("loss", "mlm_acc", "nsp_acc"):
        assert [r[key] for r in lines["cut"]] == pytest.approx([r[key] for r in lines["whole"]], rel=1e-6), key


@pytest.mark.slow
def test_slurm_profile_asks_for_the_early_signal_on_every_training_rule():
    """The profile's sbatch flag (slurm_extra, evaluated by Snakemake as a Python string) sends SIGTERM early
    enough for a step and a checkpoint, and is not one of the options the plugin owns."""
    import re

    import yaml
    from snakemake_executor_plugin_slurm.validation import get_forbidden_slurm_options

    profile = yaml.safe_load((Path(__file__).resolve().parents[1] / "profiles/slurm/config.yaml").read_text())
    for rule in ("pretrain", "dam_search", "pretrain_learned", "finetune"):
        extra = eval(profile["set-resources"][rule]["slurm_extra"])  # noqa: S307 - what Snakemake does with it
        match = re.fullmatch(r"--signal=(\w+)@(\d+)", extra)
        # TERM, which the job's own snakemake survives (it waits for its running job); USR1 would kill it.
        assert match and match[1] == "TERM" and signal.SIGTERM in preemption.SIGNALS and int(match[2]) >= 120, rule
        assert not any(re.search(pattern, extra) for pattern in get_forbidden_slurm_options()), rule
