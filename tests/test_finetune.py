"""The one fine-tuning loop: every task head trains and writes metrics with the official names; the
pretrained variant's mask is kept; exact resume after SIGKILL; determinism; bad input. In the test process: the
log lines on a stand-in clock, metrics.json key by key, the recipe's keys reaching the update, what makes a rerun
start over, and a run stopped by a signal and cut short by a crash that resumes to an uninterrupted run's outputs."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import types

import pytest
import torch

from _task_files import tiny_tokenizer, write_glue, write_squad, write_swag
from conftest import node_down, rewritten_in_place

from sparsebert import dam, masks
from sparsebert.data.tasks import TASKS
from sparsebert.metrics import task_metrics
from sparsebert.modeling import SparseBertConfig, SparseBertForPreTraining

RECIPE = {"max_seq_length": 64, "doc_stride": 16, "max_query_length": 16, "lr": 1e-3, "epochs": 2,
          "batch_size": 1, "log_every": 1, "checkpoint_every": 2, "seed": 3,
          "precision": "fp32"}  # the same arithmetic on every CPU; tests/test_precision.py runs bf16


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


def finetune_args(assets, task, out, recipe=None, model=None, mask_file=None):
    return ["finetune", "--model", str(model or assets["model"]), "--tokenizer", str(assets["tokenizer"]),
            "--task", task, "--task-source", json.dumps({"path": str(assets["sources"].get(task, ""))}),
            "--params", json.dumps({**RECIPE, **(recipe or {})}), "--out", str(out),
            *(["--mask-file", str(mask_file)] if mask_file else [])]


def run_finetune(assets, task, out, recipe=None, model=None, mask_file=None):
    """In-process (fast); returns the exit code, 0 on success."""
    from sparsebert.cli import main

    try:
        main(finetune_args(assets, task, out, recipe, model, mask_file))
    except SystemExit as e:
        return e.code
    return 0


def run_finetune_process(assets, task, out, recipe=None, env=None):
    return subprocess.run([sys.executable, "-m", "sparsebert", *finetune_args(assets, task, out, recipe)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def logged(out, drop=()):
    """The run's log.jsonl records, without the keys in `drop`."""
    return [{k: v for k, v in json.loads(line).items() if k not in drop}
            for line in (out / "log.jsonl").read_text().splitlines()]


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
    records = logged(out)
    assert records[0]["step"] == 1
    # Throughput over each log interval: batch 1 x 64 positions (SWAG: 4 endings of 64), padding included.
    tokens_per_step = 1 * 64 * (4 if task == "swag" else 1)
    for before, record in zip([{"step": 0, "seconds": 0.0}] + records, records):
        seconds = record["seconds"] - before["seconds"]
        assert record["tokens_per_s"] * seconds == pytest.approx((record["step"] - before["step"]) * tokens_per_step)
    # Every split's predictions with their references: the report recomputes the metrics from them.
    predictions = json.loads((out / "predictions.json").read_text())
    for split in spec.eval_splits:
        got = task_metrics(spec, predictions[split]["predictions"], predictions[split]["references"])
        assert got == pytest.approx(metrics["eval"][split]), split


@pytest.mark.parametrize("epochs,steps", [(2.0, 4), (1.5, 3), (0.1, 1)])
def test_fractional_epochs_train_int_of_steps_per_epoch_times_epochs(assets, tmp_path, epochs, steps):
    """The schema allows a number and the official run_squad.sh passes epochs "2.0": 2.0 crashed range() with
    a float step count. SST-2's 2 training rows at batch 1 are 2 steps an epoch: 2.0 -> 4 steps, 1.5 -> 3 (as
    run_squad.py's int(examples / batch x epochs)), 0.1 -> at least 1 (int gives 0)."""
    out = tmp_path / "ft"
    assert run_finetune(assets, "sst2", out, {"epochs": epochs}) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["steps"], metrics["epochs"]) == (steps, epochs)
    records = logged(out)
    assert [r["step"] for r in records] == list(range(1, steps + 1))  # log_every 1
    # The lr each update used (lr 1e-3, warmup 0.1, linear, offset 0): x / 0.1 at x = 0, then (1 - x) / 0.9.
    expected = [1e-3 * (1 - k / steps) / 0.9 if k / steps >= 0.1 else 1e-3 * k / steps / 0.1 for k in range(steps)]
    assert [r["lr"] for r in records] == pytest.approx(expected)


def test_finetuned_model_keeps_the_pretrained_mask(assets, tmp_path):
    from sparsebert.finetune import load_pretrained

    model = load_pretrained(assets["model"], TASKS["sst2"])
    assert torch.equal(model.bert.fixed_mask.keep[0], masks.build_mask("longformer", 64, window=3))


@pytest.mark.slow
def test_sigkill_then_rerun_is_bit_identical_and_runs_are_deterministic(assets, tmp_path):
    recipe = {"epochs": 3}
    assert run_finetune(assets, "sst2", tmp_path / "a", recipe) == 0
    assert run_finetune(assets, "sst2", tmp_path / "b", recipe) == 0
    assert (tmp_path / "a" / "metrics.json").read_text().replace(str(tmp_path / "a"), "") == \
        (tmp_path / "b" / "metrics.json").read_text().replace(str(tmp_path / "b"), "")
    killed = run_finetune_process(assets, "sst2", tmp_path / "c", recipe, env={"SPARSEBERT_KILL_AT_STEP": "2"})
    assert killed.returncode == -9 and not (tmp_path / "c" / "metrics.json").exists()
    assert run_finetune(assets, "sst2", tmp_path / "c", recipe) == 0
    la = [r["loss"] for r in logged(tmp_path / "a")]
    lc = [r["loss"] for r in logged(tmp_path / "c")]
    assert la == lc
    assert json.loads((tmp_path / "a" / "predictions.json").read_text()) == \
        json.loads((tmp_path / "c" / "predictions.json").read_text())


def test_bad_inputs(assets, tmp_path, capsys):
    cases = [
        ("x", dict(task="not_a_task"), "unknown task 'not_a_task'; valid tasks:"),
        ("y", dict(task="cola", model=tmp_path / "missing"), "pretrained model not found"),
        ("z", dict(task="cola", recipe={"max_seq_length": 128}), "exceeds the model's max_position_embeddings 64"),
        ("w", dict(task="cola", recipe={"epochz": 1}), "epochz"),
    ]
    for d, kw, message in cases:
        assert run_finetune(assets, out=tmp_path / d, **kw) == 2
        assert message in capsys.readouterr().err
    for d in "xyzw":
        assert not (tmp_path / d).exists()


def checkpoints(state_dir) -> list[str]:
    return sorted(p.name for p in state_dir.glob("step-*"))


def test_several_tasks_in_one_process_equal_a_process_each(assets, tmp_path, monkeypatch):
    """`--tasks` (the per_model jobs of the CPU default) must compute exactly what one call per task computes:
    each task re-seeded, its data and head loaded afresh, nothing carried over from the task before it.
    Checkpoints go when the job is done (keep_checkpoints: false, the default), not when a task is: a job stopped
    half-way is rerun whole, and its finished tasks resume from them."""
    from sparsebert import finetune
    from sparsebert.cli import main

    tasks = {"stsb": {"epochs": 1, "checkpoint_every": 1}, "squad_v2": {},  # regression, span, classification
             "cola": {"lr": 2e-3, "keep_checkpoints": True}}
    for task, recipe in tasks.items():
        assert run_finetune(assets, task, tmp_path / "apart" / task, recipe) == 0
    assert checkpoints(tmp_path / "apart" / "stsb.state") == [] != checkpoints(tmp_path / "apart" / "cola.state")
    entries = {task: {"source": {"path": str(assets["sources"][task])}, "params": {**RECIPE, **recipe}}
               for task, recipe in tasks.items()}
    seen, real = {}, finetune.finetune

    def finetune_noting_checkpoints(model, tokenizer, task, *args, **kwargs):
        seen[task] = {t: checkpoints(tmp_path / "st" / t) != [] for t in seen}  # the tasks before this one
        return real(model, tokenizer, task, *args, **kwargs)

    monkeypatch.setattr(finetune, "finetune", finetune_noting_checkpoints)
    main(["finetune", "--model", str(assets["model"]), "--tokenizer", str(assets["tokenizer"]),
          "--tasks", json.dumps(entries), "--out", str(tmp_path / "together"), "--state-dir", str(tmp_path / "st")])
    assert seen == {"stsb": {}, "squad_v2": {"stsb": True}, "cola": {"stsb": True, "squad_v2": True}}
    assert [checkpoints(tmp_path / "st" / task) != [] for task in tasks] == [False, False, True]
    for task in tasks:
        for name in ("metrics.json", "predictions.json", "log.jsonl"):
            apart = (tmp_path / "apart" / task / name).read_text()
            together = (tmp_path / "together" / task / name).read_text()
            if name == "log.jsonl":  # wall-clock seconds and throughput differ, nothing else may
                apart, together = ([{k: v for k, v in json.loads(line).items() if k not in ("seconds", "tokens_per_s")}
                                    for line in text.splitlines()] for text in (apart, together))
            assert apart == together, (task, name)
        assert (tmp_path / "st" / task).is_dir()  # each task its own resumable state


def test_keeping_checkpoints_is_not_part_of_a_runs_identity(assets):
    """Whether checkpoints outlive the job changes nothing it trains: a rerun that only flips it resumes."""
    from sparsebert import recipes
    from sparsebert.finetune import run_identity

    def identity(**params):
        return run_identity(TASKS["cola"], {"path": str(assets["sources"]["cola"])},
                            recipes.fill("finetune", {**RECIPE, **params}), assets["model"], assets["tokenizer"], None)

    assert identity(keep_checkpoints=True) == identity(keep_checkpoints=False) != identity(lr=2e-3)


def test_bad_tasks_argument_stops_before_anything_trains(assets, tmp_path, capsys):
    from sparsebert.cli import main

    good = {"source": {"path": str(assets["sources"]["cola"])}, "params": RECIPE}
    cases = [
        ({"cola": good, "not_a_task": good}, "unknown task 'not_a_task'"),
        ({"cola": good, "sst2": {"source": {}}}, "--tasks: sst2: expected"),
        ({"cola": good, "mrpc": {**good, "params": {"epochz": 1}}}, "epochz"),
        ({}, "--tasks names no task"),
    ]
    for i, (entries, message) in enumerate(cases):
        out = tmp_path / f"case{i}"
        with pytest.raises(SystemExit) as stop:
            main(["finetune", "--model", str(assets["model"]), "--tokenizer", str(assets["tokenizer"]),
                  "--tasks", json.dumps(entries), "--out", str(out)])
        assert stop.value.code == 2 and message in capsys.readouterr().err, message
        assert not out.exists() and not (tmp_path / f"case{i}.state").exists()  # cola never started
    with pytest.raises(SystemExit):
        main(["finetune", "--model", str(assets["model"]), "--tokenizer", str(assets["tokenizer"]),
              "--tasks", json.dumps({"cola": good}), "--params", "{}", "--out", str(tmp_path / "mixed")])
    assert "give neither --task-source nor --params" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ DAM protocol


@pytest.fixture(scope="module")
def dam_search_output(assets):
    """A DAM_s search's outputs (model/ + mask.safetensors) whose binarized mask is known by construction:
    offsets 1 and 2 kept in every head (keep logit > drop logit), everything else, the diagonal included,
    dropped."""
    root = assets["root"] / "dam_s_search"
    torch.manual_seed(1)
    config = SparseBertConfig(vocab_size=len(assets_tokenizer(assets)), hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                              attention_mask_type="dam_s", mask_seq_len=64)  # fmt: skip
    model = SparseBertForPreTraining(config)
    with torch.no_grad():
        model.bert.dam.logits.zero_()
        model.bert.dam.logits[:, :, 1] = 1.0  # drop everywhere ...
        model.bert.dam.logits[:, 1:3, :] = torch.tensor([1.0, 0.0])  # ... but offsets 1, 2
    model.save_pretrained(root / "model")
    dist = (torch.arange(64)[:, None] - torch.arange(64)[None, :]).abs()
    keep = ((dist == 1) | (dist == 2)).expand(4, 64, 64)
    dam.save_mask_file(root / "mask.safetensors", keep, dam_type="dam_s")
    return root, keep


def assets_tokenizer(assets):
    from sparsebert.data.tokenizer import load_tokenizer

    return load_tokenizer(assets["tokenizer"])


def test_dam_search_model_is_finetuned_with_its_binarized_mask_fixed(assets, dam_search_output, tmp_path):
    """The official protocol: the jointly trained weights, the learned mask binarized and frozen."""
    from safetensors.torch import load_file

    from sparsebert.finetune import load_pretrained

    root, keep = dam_search_output
    model = load_pretrained(root / "model", TASKS["sst2"], root / "mask.safetensors")
    assert model.config.attention_mask_type == "learned"
    assert torch.equal(model.bert.fixed_mask.keep, keep)
    assert not any("dam" in name for name, _ in model.named_parameters()), "mask logits would train"
    assert not model.bert.fixed_mask.keep.requires_grad
    searched = load_file(str(root / "model" / "model.safetensors"))
    own = model.state_dict()
    for name in ("bert.encoder.layer.0.attention.self.query.weight", "bert.embeddings.word_embeddings.weight"):
        assert torch.equal(own[name], searched[name]), f"{name} is not the search's weight"
    assert run_finetune(assets, "sst2", tmp_path / "ft", model=root / "model", mask_file=root / "mask.safetensors") == 0
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["attention_mask_type"] == "learned" and metrics["mask_file"] == str(root / "mask.safetensors")
    assert metrics["mask_sparsity"] == pytest.approx(1 - (2 * 63 + 2 * 62) / 64**2)  # offsets 1, 2 of 64


def test_dam_model_needs_its_mask_and_fixed_models_refuse_one(assets, dam_search_output, tmp_path, capsys):
    root, _ = dam_search_output
    assert run_finetune(assets, "sst2", tmp_path / "a", model=root / "model") == 2
    assert "is a DAM-search model: fine-tune it with its binarized mask (--mask-file" in capsys.readouterr().err
    assert run_finetune(assets, "sst2", tmp_path / "b", mask_file=root / "mask.safetensors") == 2
    assert "--mask-file goes with a DAM-search model" in capsys.readouterr().err


def test_longer_finetuning_inputs_extend_the_mask(assets, dam_search_output):
    """SQuAD at 384 after pretraining at 128, here 96 after 64: a registry mask is rebuilt at the new length,
    a learned DAM_s mask keeps its offsets (1 and 2), never offsets it did not learn."""
    from sparsebert.finetune import load_pretrained

    root, _ = dam_search_output
    model = load_pretrained(root / "model", TASKS["squad_v1"], root / "mask.safetensors")
    model.bert.extend_mask(96)
    dist = (torch.arange(96)[:, None] - torch.arange(96)[None, :]).abs()
    assert torch.equal(model.bert.fixed_mask.keep, ((dist == 1) | (dist == 2)).expand(4, 96, 96))
    with pytest.raises(Exception, match="max_position_embeddings 128"):
        model.bert.extend_mask(129)


def test_learned_mask_extension_rule_hand_made():
    """dam.extend_keep on an unstructured (DAM_u-like, symmetric) 4 x 4 mask: the block stays; beyond it an
    offset is kept iff at least half of its learned pairs are (offset 0: 1 of 4 -> dropped; offset 1: 4 of 6
    -> kept; offset 2: 0 of 4 -> dropped; offset 3: 2 of 2 -> kept); offsets >= 4 never."""
    from sparsebert.dam import extend_keep

    k = torch.tensor([[1, 1, 0, 1],
                      [1, 0, 1, 0],
                      [0, 1, 0, 0],
                      [1, 0, 0, 0]], dtype=torch.bool)  # fmt: skip
    ext = extend_keep(k[None], 6)[0]
    assert torch.equal(ext[:4, :4], k)
    # rows/cols 4, 5: offset 1 and 3 kept, 0 and 2 dropped, 4+ never
    expected_row4 = torch.tensor([0, 1, 0, 1, 0, 1], dtype=torch.bool)  # |4-j| = 4, 3, 2, 1, 0, 1
    assert torch.equal(ext[4], expected_row4)
    expected_row5 = torch.tensor([0, 0, 1, 0, 1, 0], dtype=torch.bool)  # |5-j| = 5, 4, 3, 2, 1, 0
    assert torch.equal(ext[5], expected_row5)


# ------------------------------------------------------------------------------------------ the loop, in process


def test_log_lines_average_the_steps_since_the_last_one(assets, tmp_path, monkeypatch):
    """SST-2's 2 training rows at batch 1 for 2.5 epochs: 5 updates, a line after updates 2, 4 and the last, 5.
    With the updates' losses said to be 0.5, 1.5, 2, 4 and 7 (the model trains as usual), the lines' losses are
    the means 1, 3 and 7; their epochs are updates / 2; their learning rates those of updates 2, 4, 5 (lr 1e-3,
    warmup 0.1, linear: update k of 5 at x = (k - 1) / 5, so 1e-3 (1 - x) / 0.9); and on a clock that reads 0, 2,
    4, ... seconds their seconds are since the start and their tokens/s the line's updates x 64 positions over the
    2 s since the line before."""
    from sparsebert import finetune, training

    losses, accumulate = iter([0.5, 1.5, 2.0, 4.0, 7.0]), training.accumulate_gradients
    monkeypatch.setattr(training, "accumulate_gradients", lambda *a: (accumulate(*a), torch.tensor(next(losses)))[1])
    clock = itertools.count(step=2)
    monkeypatch.setattr(finetune, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    assert run_finetune(assets, "sst2", tmp_path / "ft", {"epochs": 2.5, "log_every": 2}) == 0
    records = logged(tmp_path / "ft")
    assert [r["step"] for r in records] == [2, 4, 5] and [r["epoch"] for r in records] == [1.0, 2.0, 2.5]
    assert [r["loss"] for r in records] == [1.0, 3.0, 7.0]
    assert [r["lr"] for r in records] == pytest.approx([1e-3 * (1 - (k - 1) / 5) / 0.9 for k in (2, 4, 5)])
    assert [r["seconds"] for r in records] == [2.0, 4.0, 6.0]
    assert [r["tokens_per_s"] for r in records] == [2 * 64 / 2, 2 * 64 / 2, 64 / 2]


def test_metrics_json_says_what_was_fine_tuned_and_how(assets, tmp_path, caplog):
    """metrics.json key by key for SST-2 (2 training rows, batch 1, 2 epochs: 4 updates) from the longformer
    model of the fixture, whose mask was built for 64 positions (window 3) and is kept at max_seq_length 64; the
    job's log names the precision."""
    from sparsebert import precision, recipes

    with caplog.at_level("INFO", logger="sparsebert.finetune"):
        assert run_finetune(assets, "sst2", tmp_path / "ft") == 0
    assert precision.resolve("fp32", "cpu").line in [r.getMessage() for r in caplog.records]
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    spec = TASKS["sst2"]
    assert {k: metrics[k] for k in ("task", "kind", "proxy", "variant_model", "attention_mask_type", "mask_file",
                                    "mask_seq_len", "main_metric", "seed", "train_examples", "train_features",
                                    "epochs", "steps")} == {
        "task": "sst2", "kind": spec.kind, "proxy": spec.proxy, "variant_model": str(assets["model"]),
        "attention_mask_type": "longformer", "mask_file": None, "mask_seq_len": {"pretrained": 64, "finetuned": 64},
        "main_metric": spec.main_metric, "seed": 3, "train_examples": 2, "train_features": 2, "epochs": 2,
        "steps": 4}
    assert metrics["mask_sparsity"] == masks.sparsity(masks.build_mask("longformer", 64, window=3))
    assert metrics["score"] == metrics["eval"]["validation"][spec.main_metric]
    assert metrics["params"] == recipes.fill("finetune", RECIPE) and metrics["precision"] == "fp32"
    folder = assets["sources"]["sst2"]  # what was read: the folder, and the sha256 of each file of the task
    assert metrics["data"] == {"path": str(folder), "sha256": {f.name: hashlib.sha256(f.read_bytes()).hexdigest()
                                                               for f in sorted(folder.glob("*.tsv"))}}


def test_the_recipes_clipping_and_adam_keys_reach_the_update(assets, tmp_path):
    """grad_clip, grad_clip_scope and bias_correction from the recipe decide the update: unclipped, clipped to a
    global norm of 1e-3, each tensor clipped to 1e-3 on its own, and Adam without bias correction train four
    different models (different losses after the first update)."""
    runs = {"none": {"grad_clip": None}, "global": {"grad_clip": 1e-3},
            "tensor": {"grad_clip": 1e-3, "grad_clip_scope": "tensor"},
            "uncorrected": {"grad_clip": None, "bias_correction": False}}
    for name, recipe in runs.items():
        assert run_finetune(assets, "stsb", tmp_path / name, {"epochs": 2, **recipe}) == 0
    later = {name: tuple(r["loss"] for r in logged(tmp_path / name))[1:] for name in runs}
    assert len(set(later.values())) == len(runs), later


def test_schedule_offset_moves_every_update_one_step_along_the_schedule(assets, tmp_path):
    """schedule_offset 1 (run_glue.py's scheduler stepped before the optimizer): update k of 4 runs at x = (k + 1)
    / 4, past the warmup (0.1), so at 1e-3 (1 - x) / 0.9; the last update's lr is 0."""
    assert run_finetune(assets, "sst2", tmp_path / "ft", {"schedule_offset": 1}) == 0
    assert [r["lr"] for r in logged(tmp_path / "ft")] == pytest.approx([1e-3 * (1 - (k + 1) / 4) / 0.9
                                                                        for k in range(4)])


def test_a_task_needs_at_least_one_batch_of_features(assets, tmp_path, capsys):
    """SST-2 has 2 training rows: a batch of 4 is one clear error before anything trains; a batch of 2 is one
    update an epoch."""
    assert run_finetune(assets, "sst2", tmp_path / "four", {"batch_size": 4}) == 2
    assert "task sst2: 2 training features, fewer than one batch of 4" in capsys.readouterr().err
    assert not (tmp_path / "four").exists()
    assert run_finetune(assets, "sst2", tmp_path / "two", {"batch_size": 2}) == 0
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["steps"] == 2


def test_a_warmup_of_more_steps_than_the_training_is_one_clear_error(assets, tmp_path, capsys):
    """SST-2's 2 rows in batches of 2 for 2 epochs: 2 updates. A warmup of 3 steps is one clear error before
    anything trains; 2 steps (a warmup as long as the training, as pretraining allows) and a fraction train."""
    recipe = {"batch_size": 2, "epochs": 2}
    assert run_finetune(assets, "sst2", tmp_path / "three", {**recipe, "warmup": 3}) == 2
    assert ("task sst2: warmup 3 steps exceed the 2 training steps (2 features // batch 2 x 2 epochs): the peak "
            "learning rate is never reached; give warmup as a fraction (< 1) or fewer steps") in capsys.readouterr().err
    assert not (tmp_path / "three").exists()
    for warmup in (2, 0.9):
        assert run_finetune(assets, "sst2", tmp_path / f"w{warmup}", {**recipe, "warmup": warmup}) == 0


@pytest.mark.parametrize("change", ["nothing", "model", "tokenizer", "mask_file"])
def test_a_rerun_resumes_only_what_it_would_train_again(assets, dam_search_output, tmp_path, caplog, change):
    """A rerun over the same state dir resumes the checkpoint, unless the pretrained model, the tokenizer or the
    learned mask file was rebuilt in place since (a newer modification time): then it starts over."""
    search = shutil.copytree(dam_search_output[0], tmp_path / "search")
    copied = {**assets, "tokenizer": shutil.copytree(assets["tokenizer"], tmp_path / "tokenizer")}
    run = dict(recipe={"epochs": 2, "checkpoint_every": 2, "keep_checkpoints": True}, model=search / "model",
               mask_file=search / "mask.safetensors")
    assert run_finetune(copied, "sst2", tmp_path / "first", **run) == 0
    rebuilt = {"model": search / "model", "mask_file": search / "mask.safetensors",
               "tokenizer": copied["tokenizer"]}.get(change)
    if rebuilt:
        rewritten_in_place(rebuilt)
    with caplog.at_level("INFO"):
        assert run_finetune(copied, "sst2", tmp_path / "first", **run) == 0
    resumed, started_over = "resumed from" in caplog.text, "starting over" in caplog.text
    assert (resumed, started_over) == ((True, False) if change == "nothing" else (False, True))


def test_a_stopped_then_crashed_fine_tuning_resumes_to_an_uninterrupted_ones_outputs(assets, tmp_path, monkeypatch,
                                                                                      caplog, preemption_flag_cleared):
    """SST-2, 6 updates, a log line every 2, no periodic checkpoint. Run 1: logs at 2, gets SIGTERM during update
    3 -> a checkpoint at 3, between two log lines (the loss of update 3 travels in it), exit 75. Run 2: resumes
    at 3, logs at 4 and 6, and dies in the evaluation. Run 3: resumes at 3 again, keeps the log line of 2 only.
    Its outputs equal an uninterrupted run's: log lines (but times), metrics, predictions; its progress bar
    starts at the step it resumed."""
    from sparsebert import finetune, preemption

    recipe = {"epochs": 3, "log_every": 2, "checkpoint_every": 100}
    assert run_finetune(assets, "sst2", tmp_path / "whole", recipe) == 0
    state = tmp_path / "cut.state"
    with monkeypatch.context() as signal_at_3, caplog.at_level("WARNING"):
        signal_at_3.setenv("SPARSEBERT_SIGNAL_AT_STEP", "3")
        assert run_finetune(assets, "sst2", tmp_path / "cut", recipe) == preemption.EXIT_CODE
    assert checkpoints(state) == ["step-00000003"]
    assert f"stopped after step 3 with a checkpoint in {state}" in caplog.text
    preemption._received.clear()
    with monkeypatch.context() as crashing, pytest.raises(RuntimeError, match="went down"):
        crashing.setattr(finetune, "evaluate_splits", node_down)
        run_finetune(assets, "sst2", tmp_path / "cut", recipe)
    assert [r["step"] for r in logged(state)] == [2, 4, 6]

    bars, real_tqdm = [], finetune.tqdm
    monkeypatch.setattr(finetune, "tqdm", lambda steps, **kw: bars.append((steps, kw)) or real_tqdm(steps, **kw))
    assert run_finetune(assets, "sst2", tmp_path / "cut", recipe) == 0
    assert bars == [(range(3, 6), {"initial": 3, "total": 6, "desc": "finetune[sst2]", "mininterval": 2.0,
                                   "disable": False})]
    times = ("seconds", "tokens_per_s")
    assert logged(tmp_path / "cut", times) == logged(tmp_path / "whole", times)
    for name in ("metrics.json", "predictions.json"):
        assert json.loads((tmp_path / "cut" / name).read_text()) == json.loads((tmp_path / "whole" / name).read_text())
