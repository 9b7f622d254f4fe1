"""A resume is a resume: after a kill, the rerun continues from the checkpoint's step, and only from there.

Training is deterministic, so a rerun that ignored its checkpoint and started over would reach the same
weights: the bit-identical resume tests (test_pretrain, test_finetune, test_preemption) cannot tell the two
apart. Here the fault-injection hook SPARSEBERT_NAN_AT_STEP=N (a non-finite loss at step N, which stops the
run naming N) marks which steps the rerun executes. After a kill right after the checkpoint of step k:
- a rerun with the hook at step k + 1 stops there: it does run step k + 1 (it did not skip ahead);
- a rerun with the hook at step k finishes: step k is not run again, so neither is any step before it;
so the first step the rerun runs is k + 1. The log line must also name the checkpoint and step.
"""

from __future__ import annotations

import json
import logging

import pytest

from test_finetune import assets, run_finetune, run_finetune_process  # noqa: F401 - `assets` is a fixture
from test_pretrain import logged, run_pretrain


@pytest.mark.slow
def test_finetune_resumes_from_the_killed_step(assets, tmp_path, caplog, capsys, monkeypatch):  # noqa: F811
    recipe, k = {"epochs": 3, "checkpoint_every": 2}, 2
    out = tmp_path / "cut"
    killed = run_finetune_process(assets, "sst2", out, recipe, env={"SPARSEBERT_KILL_AT_STEP": str(k)})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "metrics.json").exists()

    caplog.set_level(logging.INFO)
    monkeypatch.setenv("SPARSEBERT_NAN_AT_STEP", str(k + 1))
    assert run_finetune(assets, "sst2", out, recipe) == 2
    assert f"error: loss became nan at step {k + 1};" in capsys.readouterr().err
    monkeypatch.setenv("SPARSEBERT_NAN_AT_STEP", str(k))
    assert run_finetune(assets, "sst2", out, recipe) == 0
    total = json.loads((out / "metrics.json").read_text())["steps"]
    assert total > k + 1
    assert f"cut.state/step-{k:08d} (step {k} of {total})" in caplog.text
    # One log record per step (log_every 1), none repeated: the resumed run appended steps k + 1 .. total.
    assert [json.loads(l)["step"] for l in (out / "log.jsonl").read_text().splitlines()] == list(range(1, total + 1))


@pytest.mark.slow
def test_pretraining_resumes_from_the_killed_step(tiny_pretraining_data, tmp_path):
    recipe, k, total = {"max_steps": 12, "checkpoint_every": 4, "log_every": 1}, 8, 12
    out = tmp_path / "cut"
    killed = run_pretrain(tiny_pretraining_data, out, recipe=recipe, env={"SPARSEBERT_KILL_AT_STEP": str(k)},
                          check=False)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]

    stopped = run_pretrain(tiny_pretraining_data, out, recipe=recipe, env={"SPARSEBERT_NAN_AT_STEP": str(k + 1)},
                           check=False)  # fmt: skip
    assert stopped.returncode == 2 and f"at step {k + 1};" in stopped.stderr, stopped.stderr[-2000:]
    resumed = run_pretrain(tiny_pretraining_data, out, recipe=recipe, env={"SPARSEBERT_NAN_AT_STEP": str(k)})
    assert f"cut.state/step-{k:08d} (step {k} of {total})" in resumed.stderr, resumed.stderr[-2000:]
    assert [r["step"] for r in logged(out)] == list(range(1, total + 1))
