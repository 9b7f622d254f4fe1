"""The pieces of the fine-tuning loop (sparsebert/finetune.py), in-process: which jobs a call makes, how the
pretrained model is loaded under its task head, the subsampling, a run's identity, the evaluation of a split
(batches, DDP shards, predictions) and the outputs. The loop itself is run end to end in tests/test_finetune.py.

Expected values are written out by hand or computed with numpy / the metrics' reference definitions."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Dataset

from sparsebert import dam, finetune, recipes, training
from sparsebert.data.tasks import TASKS
from sparsebert.io import UserError
from sparsebert.metrics import task_metrics
from sparsebert.modeling import (
    SparseBertConfig,
    SparseBertForMultipleChoice,
    SparseBertForPreTraining,
    SparseBertForQuestionAnswering,
    SparseBertForSequenceClassification,
)


def args(tmp_path, **given):
    fields = {"task": None, "tasks": None, "task_source": None, "params": None, "out": tmp_path / "out",
              "state_dir": None, **given}
    return argparse.Namespace(**fields)


def error_of(call) -> str:
    with pytest.raises(UserError) as error:
        call()
    return str(error.value)


# ------------------------------------------------------------------------------------------------- the jobs


def test_one_task_is_one_job_with_its_recipe_filled_from_the_schema(tmp_path):
    (job,) = finetune.task_jobs(args(tmp_path, task="sst2", task_source='{"hub": true}', params='{"lr": 0.5}'))
    assert job == ("sst2", {"hub": True}, recipes.fill("finetune", {"lr": 0.5}), tmp_path / "out",
                   tmp_path / "out.state")
    (job,) = finetune.task_jobs(args(tmp_path, task="sst2", task_source='{"hub": true}', state_dir=tmp_path / "s"))
    assert job[2] == recipes.fill("finetune", {}) and job[4] == tmp_path / "s"


def test_several_tasks_are_a_job_each_under_the_out_and_state_folders(tmp_path):
    tasks = {"cola": {"source": {"path": "c"}, "params": {"epochs": 1}}, "stsb": {"source": {"hub": True}, "params": {}}}
    jobs = finetune.task_jobs(args(tmp_path, tasks=json.dumps(tasks), state_dir=tmp_path / "s"))
    assert jobs == [("cola", {"path": "c"}, recipes.fill("finetune", {"epochs": 1}), tmp_path / "out" / "cola",
                     tmp_path / "s" / "cola"),
                    ("stsb", {"hub": True}, recipes.fill("finetune", {}), tmp_path / "out" / "stsb",
                     tmp_path / "s" / "stsb")]


def test_a_bad_call_is_one_clear_error_before_any_task_trains(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    entry = {"source": {"hub": True}, "params": {}}
    cases = [
        (dict(task="sst2"), "--task needs --task-source"),
        (dict(task="nope", task_source="{}"), "unknown task 'nope'; valid tasks: " + ", ".join(TASKS)),
        (dict(tasks=json.dumps({"sst2": entry}), task_source="{}"),
         "--tasks carries each task's source and params: give neither --task-source nor --params"),
        (dict(tasks=json.dumps({"sst2": entry}), params="{}"),
         "--tasks carries each task's source and params: give neither --task-source nor --params"),
        (dict(tasks=json.dumps({"sst2": entry, "nope": entry})), "unknown task 'nope'; valid tasks: " + ", ".join(TASKS)),
        (dict(tasks=json.dumps({"sst2": {"source": {}}})),
         "--tasks: sst2: expected {\"source\": ..., \"params\": ...}, got {'source': {}}"),
        (dict(tasks=json.dumps({"sst2": "x"})), "--tasks: sst2: expected {\"source\": ..., \"params\": ...}, got 'x'"),
        (dict(tasks="{}"), "--tasks names no task"),
    ]
    for given, message in cases:
        assert error_of(lambda: finetune.task_jobs(args(tmp_path, **given))) == message, given
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert error_of(lambda: finetune.task_jobs(args(tmp_path, tasks=json.dumps({"sst2": entry})))) == \
        "--tasks runs its tasks one after the other in one process; under torchrun give one --task"
    assert finetune.task_jobs(args(tmp_path, task="sst2", task_source="{}"))[0][0] == "sst2"  # one task: DDP is fine


# ---------------------------------------------------------------------------------------- the pretrained model


def pretrained(folder, mask="longformer", params=None):
    torch.manual_seed(0)
    config = SparseBertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32, max_position_embeddings=16, mask_seq_len=16,
                              attention_mask_type=mask, attention_mask_params=params or {})
    model = SparseBertForPreTraining(config)
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("task, head, labels", [("mnli", SparseBertForSequenceClassification, 3),
                                                ("stsb", SparseBertForSequenceClassification, 1),
                                                ("squad_v2", SparseBertForQuestionAnswering, 2),
                                                ("swag", SparseBertForMultipleChoice, None)])
def test_the_encoder_comes_under_the_tasks_head(tmp_path, task, head, labels):
    source = pretrained(tmp_path / "m", params={"window": 2})
    model = finetune.load_pretrained(tmp_path / "m", TASKS[task])
    assert type(model) is head and model.config.attention_mask_type == "longformer"
    if labels is not None:
        assert model.config.num_labels == labels
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, source.bert.embeddings.word_embeddings.weight)
    assert torch.equal(model.bert.fixed_mask.keep, source.bert.fixed_mask.keep)


def test_a_dam_model_is_fine_tuned_with_its_binarized_mask_and_only_it_takes_one(tmp_path):
    pretrained(tmp_path / "dam", mask="dam_s")
    keep = torch.eye(16, dtype=torch.bool).expand(2, 16, 16).clone()
    keep[0, 0] = True
    dam.save_mask_file(tmp_path / "mask.safetensors", keep)
    model = finetune.load_pretrained(tmp_path / "dam", TASKS["sst2"], tmp_path / "mask.safetensors")
    assert (model.config.attention_mask_type, model.config.attention_mask_params) == ("learned", {})
    assert torch.equal(model.bert.fixed_mask.keep, keep) and not hasattr(model.bert, "dam")  # no logits to learn
    assert error_of(lambda: finetune.load_pretrained(tmp_path / "dam", TASKS["sst2"])) == (
        f"{tmp_path / 'dam'} is a DAM-search model: fine-tune it with its binarized mask (--mask-file, the search's "
        "mask.safetensors)")
    pretrained(tmp_path / "fixed")
    assert error_of(lambda: finetune.load_pretrained(tmp_path / "fixed", TASKS["sst2"], tmp_path / "mask.safetensors")) \
        == f"--mask-file goes with a DAM-search model; {tmp_path / 'fixed'} has the fixed mask 'longformer'"


def test_a_missing_or_broken_pretrained_model_is_one_clear_error(tmp_path):
    assert error_of(lambda: finetune.load_pretrained(tmp_path / "none", TASKS["sst2"])) == \
        f"pretrained model not found: {tmp_path / 'none'}/config.json"
    pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not safetensors")
    assert error_of(lambda: finetune.load_pretrained(tmp_path / "m", TASKS["sst2"])).startswith(
        f"pretrained weights in {tmp_path / 'm'} are unreadable or do not match its config: ")
    (tmp_path / "m" / "config.json").write_text("{not json")
    assert error_of(lambda: finetune.load_pretrained(tmp_path / "m", TASKS["sst2"])).startswith(
        f"pretrained model config {tmp_path / 'm'}/config.json is unreadable: ")


# ------------------------------------------------------------------------------------ subsampling, identity, outputs


def test_a_subsample_is_a_seeded_random_subset():
    ds = Dataset.from_dict({"x": list(range(50))})
    assert finetune.subsample(ds, None, 0) is ds and finetune.subsample(ds, 50, 0) is ds
    drawn = finetune.subsample(ds, 10, seed=1)["x"]
    assert len(set(drawn)) == 10 and set(drawn) <= set(range(50)) and drawn != list(range(10))
    assert finetune.subsample(ds, 10, seed=1)["x"] == drawn and finetune.subsample(ds, 10, seed=2)["x"] != drawn
    assert finetune.subsample(ds, 49, seed=1)["x"] != list(range(49))


def test_a_runs_identity_is_what_it_trains_and_reads(monkeypatch, tmp_path):
    read = []
    monkeypatch.setattr(training, "fingerprint", lambda *paths: read.append(paths) or "fp")
    params = {"lr": 0.1, "keep_checkpoints": True}
    local = finetune.run_identity(TASKS["mrpc"], {"path": str(tmp_path)}, params, "model", "tok", None)
    assert local == {"task": "mrpc", "source": {"path": str(tmp_path)}, "params": {"lr": 0.1}, "model": "model",
                     "mask_file": None, "inputs": "fp"}
    assert read == [("model", "tok", None, tmp_path / "train.tsv", tmp_path / "dev.tsv")]  # this task's files only
    read.clear()
    hub = finetune.run_identity(TASKS["mrpc"], {"hub": True}, params, "model", "tok", "mask")
    assert hub["mask_file"] == "mask" and read == [("model", "tok", "mask")]


def test_outputs_end_with_the_metrics_file(tmp_path, monkeypatch):
    written = []
    real = finetune.atomic_write_json
    monkeypatch.setattr(finetune, "atomic_write_json", lambda path, obj: written.append(path.name) or real(path, obj))
    log = training.JsonlLog(tmp_path / "state" / "log.jsonl")
    log.write({"step": 1})
    finetune._write_outputs(tmp_path, {"score": 1.0}, {"validation": [1]}, log)
    assert written == ["predictions.json", "metrics.json"]
    assert json.loads((tmp_path / "predictions.json").read_text()) == {"validation": [1]}
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"score": 1.0}
    assert (tmp_path / "log.jsonl").read_text() == '{"step": 1}\n'
    finetune._write_outputs(tmp_path / "b", {}, {}, SimpleNamespace(path=tmp_path / "none.jsonl"))
    assert (tmp_path / "b" / "log.jsonl").read_text() == ""


# ---------------------------------------------------------------------------------------- evaluation of a split


class Scripted(torch.nn.Module):
    """Returns the logits of its table for the example ids (the input_ids' first column) it is given."""

    def __init__(self, table, span=False):
        super().__init__()
        self.table, self.span, self.batches = torch.tensor(table), span, []

    def forward(self, input_ids, token_type_ids, attention_mask):
        rows = self.table[input_ids[:, 0]]
        self.batches.append(input_ids[:, 0].tolist())
        self.grad_enabled = torch.is_grad_enabled()
        if self.span:
            return SimpleNamespace(start_logits=rows[:, 0], end_logits=rows[:, 1])
        return SimpleNamespace(logits=rows)


def features(n, labels):
    return Dataset.from_dict({"input_ids": [[i, 0] for i in range(n)], "token_type_ids": [[0, 0]] * n,
                              "attention_mask": [[1, 1]] * n, "labels": labels})


PARAMS = {"eval_batch_size": 2, "max_eval_examples": None, "seed": 0}


def test_a_classification_split_is_scored_on_the_argmax_in_batches(tmp_path):
    logits = [[0.1, 0.9], [2.0, -1.0], [0.3, 0.2], [-1.0, 1.0], [0.0, 5.0]]
    model = Scripted(logits)
    metrics, predictions = finetune.evaluate(model, TASKS["mrpc"], None, features(5, [1, 0, 1, 1, 0]), PARAMS,
                                             training.Dist())
    assert model.batches == [[0, 1], [2, 3], [4]] and not model.grad_enabled  # no autograd graph
    assert predictions == {"predictions": [1, 0, 0, 1, 1], "references": [1, 0, 1, 1, 0]}
    assert metrics == task_metrics(TASKS["mrpc"], np.array([1, 0, 0, 1, 1]), np.array([1, 0, 1, 1, 0]))
    assert metrics["accuracy"] == pytest.approx(3 / 5)


def test_a_regression_split_is_scored_on_the_first_logit():
    model = Scripted([[0.5], [1.5], [4.0]])
    metrics, predictions = finetune.evaluate(model, TASKS["stsb"], None, features(3, [1.0, 2.0, 3.0]), PARAMS,
                                             training.Dist())
    assert predictions == {"predictions": [0.5, 1.5, 4.0], "references": [1.0, 2.0, 3.0]}
    assert metrics["pearson"] == pytest.approx(np.corrcoef([0.5, 1.5, 4.0], [1.0, 2.0, 3.0])[0, 1])


def test_a_span_split_gives_start_and_end_logits_of_every_batch_to_the_decoder(monkeypatch):
    """The decoder and the metrics are stand-ins here (tests/test_qa.py and tests/test_metrics.py check them): what
    is checked is what evaluate hands them."""
    table = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)  # feature i: start row table[i, 0], end table[i, 1]
    seen = {}

    def decode(examples, feats, start, end, n_best, max_length, version_2, null_score_diff_threshold):
        seen.update(examples=examples, features=feats, start=start, end=end, args=(n_best, max_length, version_2,
                                                                                   null_score_diff_threshold))
        return {"q1": "an answer"}, None

    monkeypatch.setattr(finetune, "postprocess_predictions", decode)
    monkeypatch.setattr(finetune, "squad_references", lambda examples: {"q1": [examples]})
    monkeypatch.setattr(finetune, "task_metrics", lambda spec, preds, refs: {"spec": spec.name, "preds": preds,
                                                                             "refs": refs})
    feats = features(5, [0] * 5)
    params = {**PARAMS, "n_best_size": 7, "max_answer_length": 11, "null_score_diff_threshold": 0.5}
    metrics, predictions = finetune.evaluate(Scripted(table, span=True), TASKS["squad_v2"], "the examples", feats,
                                             params, training.Dist())
    assert np.array_equal(seen["start"], table[:, 0]) and np.array_equal(seen["end"], table[:, 1])
    assert seen["examples"] == "the examples" and seen["features"] is feats and seen["args"] == (7, 11, True, 0.5)
    refs = {"q1": ["the examples"]}
    assert metrics == {"spec": "squad_v2", "preds": {"q1": "an answer"}, "refs": refs}
    assert predictions == {"predictions": {"q1": "an answer"}, "references": refs}
    finetune.evaluate(Scripted(table, span=True), TASKS["squad_v1"], "the examples", feats, params, training.Dist())
    assert seen["args"][2] is False  # v1.1: every question has an answer


def test_under_ddp_each_rank_scores_its_shard_and_rank_0_scores_them_all_in_order(monkeypatch):
    """Rank 0 of 2 runs features 0-1 of 5; the stand-in gather brings rank 1's logits of features 2-4."""
    logits = [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]
    rank1 = [np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32), np.array([[1.0, 0.0]], dtype=np.float32)]
    gathered = []

    def gather_object(outputs, shards, dst):
        gathered.append((shards, dst))
        if shards is not None:
            shards[:] = [outputs, rank1]

    monkeypatch.setattr(torch.distributed, "gather_object", gather_object)
    model = Scripted(logits)
    metrics, predictions = finetune.evaluate(model, TASKS["mrpc"], None, features(5, [1, 0, 1, 0, 0]), PARAMS,
                                             training.Dist(rank=0, world_size=2))
    assert model.batches == [[0, 1]] and [(len(shards), dst) for shards, dst in gathered] == [(2, 0)]
    assert predictions["predictions"] == [1, 0, 1, 1, 0] and metrics["accuracy"] == pytest.approx(4 / 5)
    other = Scripted(logits)
    assert finetune.evaluate(other, TASKS["mrpc"], None, features(5, [1, 0, 1, 0, 0]), PARAMS,
                             training.Dist(rank=1, world_size=2)) == (None, None)
    assert other.batches == [[2, 3], [4]] and gathered[1] == (None, 0)  # only rank 0 receives


def test_every_eval_split_is_subsampled_scored_and_logged(monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(finetune, "evaluate", lambda model, spec, examples, feats, params, env:
                        calls.append((model, examples["x"], feats, params, env)) or ({"accuracy": len(examples)},
                                                                                   [spec.name]))
    raw = {"validation_matched": Dataset.from_dict({"x": list(range(6))}),
           "validation_mismatched": Dataset.from_dict({"x": list(range(3))})}
    model, params, env = torch.nn.Linear(1, 1), {**PARAMS, "max_eval_examples": 4, "seed": 11}, training.Dist()
    np.random.seed(0)  # datasets draws an unseeded shuffle's seed from numpy's global stream: not 11's subset
    with caplog.at_level("INFO", logger="sparsebert.finetune"):
        results, predictions = finetune.evaluate_splits(model, TASKS["mnli"], raw, lambda ds: f"features of {len(ds)}",
                                                        params, env)
    assert not model.training
    seeded = raw["validation_matched"].shuffle(seed=11).select(range(4))["x"]  # datasets' own seeded draw
    assert seeded != raw["validation_matched"].shuffle(seed=0).select(range(4))["x"]
    assert calls == [(model, seeded, "features of 4", params, env), (model, [0, 1, 2], "features of 3", params, env)]
    assert results == {"validation_matched": {"accuracy": 4}, "validation_mismatched": {"accuracy": 3}}
    assert predictions == {"validation_matched": ["mnli"], "validation_mismatched": ["mnli"]}
    assert caplog.messages == ['mnli validation_matched: {"accuracy": 4}', 'mnli validation_mismatched: {"accuracy": 3}']
    caplog.clear()
    with caplog.at_level("INFO", logger="sparsebert.finetune"):
        finetune.evaluate_splits(model, TASKS["mnli"], raw, str, PARAMS, training.Dist(rank=1, world_size=2))
    assert caplog.messages == []  # rank 0 alone logs


# ------------------------------------------------------------------------------------ the command and a task's data


def test_checkpoints_are_released_only_once_every_task_is_done(tmp_path, monkeypatch):
    order = []
    monkeypatch.setattr(finetune, "finetune", lambda model, tok, task, source, params, out, state, mask_file=None:
                        order.append(("train", model, tok, task, source, out, state, mask_file,
                                      params["keep_checkpoints"])))
    monkeypatch.setattr(training, "release_checkpoints", lambda state, keep: order.append(("release", state, keep)))
    tasks = {"cola": {"source": {"hub": True}, "params": {"keep_checkpoints": True}},
             "stsb": {"source": {"path": "sts"}, "params": {}}}
    finetune.run(argparse.Namespace(**vars(args(tmp_path, tasks=json.dumps(tasks))), model="m", tokenizer="t",
                                    mask_file="k"))
    out, state = tmp_path / "out", tmp_path / "out.state"
    assert order == [("train", "m", "t", "cola", {"hub": True}, out / "cola", state / "cola", "k", True),
                     ("train", "m", "t", "stsb", {"path": "sts"}, out / "stsb", state / "stsb", "k", False),
                     ("release", state / "cola", True), ("release", state / "stsb", False)]


def test_a_tasks_data_is_its_files_subsampled_and_featurized_with_the_recipe(tmp_path, monkeypatch):
    from _task_files import tiny_tokenizer, write_tsv

    tiny_tokenizer(tmp_path / "tok")
    for split in ("train", "dev"):  # SST-2 with 12 sentences, "sentence <i>", label i % 2
        write_tsv(tmp_path / "sst2" / f"{split}.tsv", [["sentence", "label"]] + [[f"sentence {i}", str(i % 2)]
                                                                               for i in range(12)])
    featurized = []
    real = finetune.featurize
    monkeypatch.setattr(finetune, "featurize", lambda spec, ds, tok, length, stride, query: featurized.append(
        (spec.name, len(ds), length, stride, query)) or real(spec, ds, tok, length, stride, query))
    params = recipes.fill("finetune", {"max_train_examples": 4, "max_seq_length": 24, "doc_stride": 8,
                                       "max_query_length": 6, "seed": 1})
    np.random.seed(0)  # what an unseeded shuffle would draw its seed from
    raw, origin, train_raw, train_set, feat = finetune._task_data("sst2", TASKS["sst2"], {"path": str(tmp_path / "sst2")},
                                                                  tmp_path / "tok", params)
    assert set(raw) == {"train", "validation"} and len(raw["train"]) == 12
    assert origin["path"] == str(tmp_path / "sst2") and set(origin["sha256"]) == {"train.tsv", "dev.tsv"}
    seeded = raw["train"].shuffle(seed=1).select(range(4))["sentence"]  # datasets' own seeded draw
    assert train_raw["sentence"] == seeded != raw["train"].shuffle(seed=0).select(range(4))["sentence"]
    assert featurized == [("sst2", 4, 24, 8, 6)] and len(train_set) == 4
    assert list(train_set[0]) == ["input_ids", "token_type_ids", "attention_mask", "labels"]
    assert train_set[0]["input_ids"].shape == (24,) and train_set[0]["labels"].dtype == torch.int64
    assert [row["labels"].item() for row in train_set] == [int(text.split()[1]) % 2 for text in seeded]
    feat(raw["validation"])
    assert featurized[-1] == ("sst2", 12, 24, 8, 6)


def test_a_span_tasks_training_features_carry_the_answer_positions(tmp_path):
    from _task_files import tiny_tokenizer, write_squad

    tiny_tokenizer(tmp_path / "tok")
    params = recipes.fill("finetune", {"max_seq_length": 48, "doc_stride": 16, "max_query_length": 8})
    *_, train_set, _ = finetune._task_data("squad_v1", TASKS["squad_v1"], {"path": str(write_squad(tmp_path / "sq"))},
                                           tmp_path / "tok", params)
    assert list(train_set[0]) == ["input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions"]
