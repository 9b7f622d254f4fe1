"""Fine-tuning under torchrun is real DDP: 2 CPU processes (gloo) with the same global batch as 1 process
train the same model, log each step once, and score the same predictions (evaluation sharded over the ranks
and gathered on rank 0, which alone writes)."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from safetensors.torch import load_file

from _runs import run_watched
from _task_files import write_tsv
from test_finetune import RECIPE, assets  # noqa: F401 - `assets` is a fixture

from sparsebert.modeling import SparseBertForPreTraining

WORDS = ["a gorgeous film", "dull and tedious", "the king swore", "who were the normans", "what a century",
         "rollo in normandy", "tedious king", "gorgeous normans"]


@pytest.fixture(scope="module")
def no_dropout_model(assets):  # noqa: F811 - pytest fixture
    """The test model without dropout: with it, 1 process and 2 ranks would draw different masks."""
    model = SparseBertForPreTraining.from_pretrained(assets["model"])
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
    model.save_pretrained(assets["root"] / "no_dropout")
    return assets["root"] / "no_dropout"


def sst2_folder(root):
    """16 training and 11 dev sentences: several global batches, and dev shards of unequal size."""
    rows = [[f"{WORDS[i % 8]} {WORDS[(3 * i) % 8]}", str(i % 2)] for i in range(16)]
    write_tsv(root / "train.tsv", [["sentence", "label"], *rows])
    write_tsv(root / "dev.tsv", [["sentence", "label"], *rows[:11]])
    return root


def args(assets, model, task, source, out, recipe):  # noqa: F811 - pytest fixture
    return ["finetune", "--model", str(model), "--tokenizer", str(assets["tokenizer"]), "--task", task,
            "--task-source", json.dumps({"path": str(source)}), "--params", json.dumps({**RECIPE, **recipe}),
            "--out", str(out)]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["sst2", "squad_v2"])
def test_two_process_ddp_finetuning_matches_one_process(assets, no_dropout_model, tmp_path, task):  # noqa: F811
    from sparsebert.cli import main

    source = sst2_folder(tmp_path / "SST-2") if task == "sst2" else assets["sources"][task]
    recipe = {"batch_size": 4, "epochs": 2, "eval_batch_size": 3, "log_every": 1, "checkpoint_every": 2,
              "keep_checkpoints": True}  # the weights are compared at the last periodic checkpoint
    if task == "squad_v2":  # 3 training features (windows), 4 steps of 2
        recipe.update(batch_size=2, epochs=4)
    try:
        main(args(assets, no_dropout_model, task, source, tmp_path / "one", recipe))
    except SystemExit as e:
        assert e.code == 0
    proc = run_watched(  # a hung rendezvous or collective fails with both workers' stacks
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sparsebert",
         *args(assets, no_dropout_model, task, source, tmp_path / "two", recipe)],
        cwd=tmp_path, env=dict(os.environ), timeout=300, workdir=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("one", "two"))
    assert one["steps"] == two["steps"] >= 4
    # Each step logged once (rank 0 alone writes), with the loss of the whole global batch (mean of the ranks).
    log_one, log_two = ([json.loads(l) for l in (tmp_path / run / "log.jsonl").read_text().splitlines()]
                        for run in ("one", "two"))
    assert [r["step"] for r in log_two] == list(range(1, one["steps"] + 1))
    assert [r["lr"] for r in log_one] == [r["lr"] for r in log_two]
    assert [r["loss"] for r in log_two] == pytest.approx([r["loss"] for r in log_one], rel=1e-4, abs=1e-6)
    # The same trajectory: the last periodic checkpoint holds (nearly: all-reduce sums in another order) equal
    # weights.
    last = f"step-{(one['steps'] - 1) // 2 * 2:08d}"
    wa, wb = (load_file(str(tmp_path / f"{run}.state" / last / "model.safetensors")) for run in ("one", "two"))
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5, rtol=1e-4), k
    # Every eval example scored once, in order: the same predictions and (nearly) the same metrics.
    pa, pb = (json.loads((tmp_path / run / "predictions.json").read_text()) for run in ("one", "two"))
    for split in pa:
        assert pb[split]["references"] == pa[split]["references"], split
        if task == "sst2":
            assert pb[split]["predictions"] == pa[split]["predictions"], split
        else:
            assert pb[split]["predictions"].keys() == pa[split]["predictions"].keys(), split
    for split, scores in one["eval"].items():
        assert two["eval"][split] == pytest.approx(scores, rel=1e-4, abs=1e-4), split
