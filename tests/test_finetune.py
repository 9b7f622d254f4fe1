"""The one fine-tuning loop: every task head trains and writes metrics with the official names; the
pretrained variant's mask is kept; exact resume after SIGKILL; determinism; bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from _task_files import tiny_tokenizer, write_glue, write_squad, write_swag

from sparsebert import masks
from sparsebert.data.tasks import TASKS
from sparsebert.modeling import SparseBertConfig, SparseBertForPreTraining

RECIPE = {"max_seq_length": 64, "doc_stride": 16, "max_query_length": 16, "lr": 1e-3, "epochs": 2,
          "batch_size": 1, "log_every": 1, "checkpoint_every": 2, "seed": 3}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    tokenizer = tiny_tokenizer(root / "tokenizer")
    torch.manual_seed(0)
    config = SparseBertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, max_position_embeddings=64, attention_mask_type="longformer",
                              attention_mask_params={"window": 3})
    SparseBertForPreTraining(config).save_pretrained(root / "model")
    glue = write_glue(root / "glue")
    return {"root": root, "model": root / "model", "tokenizer": root / "tokenizer",
            "sources": {"cola": glue / "CoLA", "sst2": glue / "SST-2", "mrpc": glue / "MRPC", "stsb": glue / "STS-B",
                        "qqp": glue / "QQP", "qnli": glue / "QNLI", "rte": glue / "RTE", "mnli": glue / "MNLI",
                        "squad_v1": write_squad(root / "squad1", "v1.1"),
                        "squad_v2": write_squad(root / "squad2", "v2.0"), "swag": write_swag(root / "swag")}}


def finetune_args(assets, task, out, recipe=None, model=None):
    return ["finetune", "--model", str(model or assets["model"]), "--tokenizer", str(assets["tokenizer"]),
            "--task", task, "--task-source", json.dumps({"path": str(assets["sources"].get(task, ""))}),
            "--params", json.dumps({**RECIPE, **(recipe or {})}), "--out", str(out)]


def run_finetune(assets, task, out, recipe=None, model=None):
    """In-process (fast); returns the exit code, 0 on success."""
    from sparsebert.cli import main

    try:
        main(finetune_args(assets, task, out, recipe, model))
    except SystemExit as e:
        return e.code
    return 0


def run_finetune_process(assets, task, out, recipe=None, env=None):
    return subprocess.run([sys.executable, "-m", "sparsebert", *finetune_args(assets, task, out, recipe)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("task", ["cola", "stsb", "mrpc", "mnli", "squad_v1", "squad_v2", "swag"])
def test_every_head_trains_and_reports_official_metrics(assets, tmp_path, task):
    out = tmp_path / task
    assert run_finetune(assets, task, out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    spec = TASKS[task]
    assert list(metrics["eval"]) == list(spec.eval_splits)
    for split in spec.eval_splits:
        assert set(spec.metrics) <= set(metrics["eval"][split]), metrics["eval"][split]
    assert metrics["score"] == metrics["eval"][spec.eval_splits[0]][spec.main_metric]
    assert metrics["attention_mask_type"] == "longformer"
    assert metrics["steps"] > 0 and (out / "predictions.json").exists()
    assert json.loads((out / "log.jsonl").read_text().splitlines()[0])["step"] == 1


def test_finetuned_model_keeps_the_pretrained_mask(assets, tmp_path):
    from sparsebert.finetune import load_pretrained

    model = load_pretrained(assets["model"], TASKS["sst2"])
    assert torch.equal(model.bert.fixed_mask.keep[0], masks.build_mask("longformer", 64, window=3))


def test_sigkill_then_rerun_is_bit_identical_and_runs_are_deterministic(assets, tmp_path):
    recipe = {"epochs": 3}
    assert run_finetune(assets, "sst2", tmp_path / "a", recipe) == 0
    assert run_finetune(assets, "sst2", tmp_path / "b", recipe) == 0
    assert (tmp_path / "a" / "metrics.json").read_text().replace(str(tmp_path / "a"), "") == \
        (tmp_path / "b" / "metrics.json").read_text().replace(str(tmp_path / "b"), "")
    killed = run_finetune_process(assets, "sst2", tmp_path / "c", recipe, env={"SPARSEBERT_KILL_AT_STEP": "2"})
    assert killed.returncode == -9 and not (tmp_path / "c" / "metrics.json").exists()
    assert run_finetune(assets, "sst2", tmp_path / "c", recipe) == 0
    la = [json.loads(l)["loss"] for l in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    lc = [json.loads(l)["loss"] for l in (tmp_path / "c" / "log.jsonl").read_text().splitlines()]
    assert la == lc
    assert json.loads((tmp_path / "a" / "predictions.json").read_text()) == \
        json.loads((tmp_path / "c" / "predictions.json").read_text())


def test_bad_inputs(assets, tmp_path, capsys):
    cases = [
        ("x", dict(task="not_a_task"), "unknown task 'not_a_task'; valid tasks:"),
        ("y", dict(task="cola", model=tmp_path / "missing"), "pretrained model not found"),
        ("z", dict(task="cola", recipe={"max_seq_length": 128}), "exceeds the model's attention mask length 64"),
        ("w", dict(task="cola", recipe={"epochz": 1}), "epochz"),
    ]
    for d, kw, message in cases:
        assert run_finetune(assets, out=tmp_path / d, **kw) == 2
        assert message in capsys.readouterr().err
    for d in "xyzw":
        assert not (tmp_path / d).exists()
