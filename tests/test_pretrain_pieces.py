"""The pieces of the pretraining loop (sparsebert/pretrain.py), in-process: the model it builds from a recipe, the
running sums behind each log line, the held-out evaluation, the unigram floor, a run's identity and the batch's
way to the device. The loop itself (resume, DDP, preemption) is run end to end in tests/test_pretrain.py.

Expected values are written out by hand, or come from the model's own forward on batches the test slices itself."""

from __future__ import annotations

import json
from argparse import Namespace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import TINY_RECIPE, VOCAB, write_tokenizer

from sparsebert import dam, pretrain, recipes, training
from sparsebert.data.pretraining import Examples, pack
from sparsebert.io import UserError


def examples(labels, seq=8, seed=0) -> Examples:
    """Rows whose masked-token ids are `labels` (-100: no prediction; labels fill a prefix, as stored), random
    words elsewhere, segment B from position 4, NSP labels alternating."""
    rng = np.random.default_rng(seed)
    ids = np.array(labels)
    n, k = ids.shape
    arrays = {"input_ids": rng.integers(5, len(VOCAB), (n, seq)),
              "token_type_ids": np.tile([0] * 4 + [1] * (seq - 4), (n, 1)),
              "attention_mask": np.ones((n, seq), int), "masked_lm_positions": np.tile(np.arange(1, k + 1), (n, 1)),
              "masked_lm_ids": ids, "next_sentence_label": np.arange(n) % 2}
    return Examples(pack(arrays, np.uint16, np.uint16), {"seq_len": seq, "max_predictions": k, "pad_id": 0})


# ------------------------------------------------------------------------------------------------ the model


def test_the_model_is_the_recipes_with_the_mask_at_the_examples_length():
    recipe = {"model": {**TINY_RECIPE["model"], "max_position_embeddings": 64}}
    model = pretrain.build_model(recipe, 70, 32, "longformer", {"window": 2}, None)
    c = model.config
    assert (c.vocab_size, c.max_position_embeddings, c.mask_seq_len) == (70, 64, 32)
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (32, 2, 4, 64)
    assert (c.attention_mask_type, c.attention_mask_params) == ("longformer", {"window": 2})
    assert model.bert.fixed_mask.keep.shape[-2:] == (32, 32)
    # positions never fewer than the examples' length, whatever the recipe says
    short = pretrain.build_model({"model": {**TINY_RECIPE["model"], "max_position_embeddings": 16}}, 70, 32, "dense", {},
                                 None)
    assert short.config.max_position_embeddings == 32
    plain = pretrain.build_model({"model": TINY_RECIPE["model"]}, 70, 24, "dense", {}, None)
    assert plain.config.max_position_embeddings == 24


def test_a_learned_mask_comes_from_its_file(tmp_path):
    keep = torch.ones(4, 8, 8, dtype=torch.bool)
    keep[:, 2, 5] = keep[:, 5, 2] = False
    eye = torch.eye(8, dtype=torch.bool)
    keep[1] = eye | eye.roll(1, 1) | eye.roll(-1, 1)  # head 1: a band of width 1
    dam.save_mask_file(tmp_path / "mask.safetensors", keep)
    model = pretrain.build_model({"model": TINY_RECIPE["model"]}, 70, 8, "learned", {}, tmp_path / "mask.safetensors")
    assert torch.equal(model.bert.fixed_mask.keep, keep)


def test_the_vocabulary_size_is_the_tokenizers(tmp_path):
    with pytest.raises(UserError) as error:
        pretrain.vocab_size_of(tmp_path / "none")
    assert str(error.value) == f"tokenizer not found at {tmp_path / 'none'}"
    full = write_tokenizer(tmp_path / "full")
    assert pretrain.vocab_size_of(full) == len(VOCAB)
    (full / "vocab.txt").unlink()  # a fast tokenizer's tokenizer.json alone
    assert pretrain.vocab_size_of(full) == len(VOCAB)
    only_vocab = tmp_path / "vocab"
    only_vocab.mkdir()
    (only_vocab / "vocab.txt").write_text("\n".join(VOCAB[:40]) + "\n")
    assert pretrain.vocab_size_of(only_vocab) == 40


def test_a_runs_identity_is_what_it_trains_and_reads(monkeypatch):
    read = []
    monkeypatch.setattr(training, "fingerprint", lambda *paths: read.append(paths) or "fp")
    model = {"hidden_size": 64, "attention_backend": "flex"}
    recipe = {"lr": 0.1, "max_steps": 9, "model": model, **{key: "how" for key in pretrain.RUN_ONLY_KEYS}}
    identity = pretrain.run_identity(recipe, "dam_s", {"a": 1}, "m.safetensors", 1e-4, "ex", "tok")
    assert identity == {"recipe": {"lr": 0.1, "max_steps": 9, "model": {"hidden_size": 64}}, "mask": "dam_s",
                        "mask_params": {"a": 1}, "mask_file": "m.safetensors", "dam_lambda": 1e-4, "examples": "ex",
                        "inputs": "fp"}
    assert recipe["model"] == {"hidden_size": 64, "attention_backend": "flex"}  # the caller's recipe is left whole
    assert read == [("ex", "tok", "m.safetensors")]
    assert pretrain.RUN_ONLY_KEYS == {"micro_batch_size", "compile", "checkpoint_every", "log_every", "eval_examples",
                                      "keep_checkpoints"}
    assert pretrain.RUN_ONLY_MODEL_KEYS == {"attention_backend"}
    # a recipe without a model (as the tests' hand-made ones) keeps its keys
    assert pretrain.run_identity({"lr": 0.1}, "dense", {}, None, None, "ex", "tok")["recipe"] == {"lr": 0.1}


def test_pretraining_batches_go_to_a_gpu_through_pinned_memory_as_int64(copies):
    batch = {"input_ids": torch.zeros(2, 4, dtype=torch.int16), "next_sentence_label": torch.zeros(2, dtype=torch.uint8)}
    out = pretrain.to_device(batch, torch.device("cuda:0"))
    assert copies == ["pin", ("cuda:0", True)] * 2
    assert list(out) == ["input_ids", "next_sentence_label"] and all(v.dtype == torch.int64 for v in out.values())


# ----------------------------------------------------------------------------------- the running sums of a log line


def output(loss_mlm, loss_nsp, predicted, nsp_predicted, dam_mask=None):
    """A model output whose argmaxes are `predicted` (B, P) and `nsp_predicted` (B,)."""
    logits = torch.nn.functional.one_hot(torch.tensor(predicted), 10).float()
    return SimpleNamespace(mlm_loss=torch.tensor(loss_mlm), nsp_loss=torch.tensor(loss_nsp), prediction_logits=logits,
                           seq_relationship_logits=torch.nn.functional.one_hot(torch.tensor(nsp_predicted), 2).float(),
                           dam_mask=dam_mask)


def two_micro_batches(running):
    # 1: 3 of 3 masked tokens right (the -100 slot is no token), NSP 1 of 2 right; 2: 1 of 2 right, NSP 1 of 1
    running.add(output(2.0, 0.5, [[1, 2], [3, 9]], [1, 0]),
                {"masked_lm_ids": torch.tensor([[1, 2], [3, -100]]), "next_sentence_label": torch.tensor([0, 0])},
                torch.tensor(2.5))
    running.add(output(1.0, 0.25, [[4, 0]], [1]),
                {"masked_lm_ids": torch.tensor([[4, 5]]), "next_sentence_label": torch.tensor([1])},
                torch.tensor(1.5))


def test_a_log_line_is_the_mean_loss_and_the_pooled_accuracies_of_its_micro_batches():
    running = pretrain._Running("cpu")
    two_micro_batches(running)
    assert running.flush(0.25) == pytest.approx({"loss": 2.0, "mlm_loss": 1.5, "nsp_loss": 0.375, "mlm_acc": 4 / 5,
                                                 "nsp_acc": 2 / 3, "mask_sparsity": 0.25})
    # flushed: the next line starts from zero (no division by zero before any micro-batch)
    assert running.flush(0.25) == {"loss": 0.0, "mlm_loss": 0.0, "nsp_loss": 0.0, "mlm_acc": 0.0, "nsp_acc": 0.0,
                                   "mask_sparsity": 0.25}


def test_a_line_of_one_micro_batch_with_one_masked_token():
    running = pretrain._Running("cpu")
    running.add(output(0.5, 0.25, [[4]], [1]),
                {"masked_lm_ids": torch.tensor([[4]]), "next_sentence_label": torch.tensor([1])}, torch.tensor(0.75))
    assert running.flush(0.5) == {"loss": 0.75, "mlm_loss": 0.5, "nsp_loss": 0.25, "mlm_acc": 1.0, "nsp_acc": 1.0,
                                  "mask_sparsity": 0.5}


def test_the_sums_live_on_the_training_device_and_a_restored_state_goes_there():
    running = pretrain._Running("meta")
    assert {getattr(running, name).device.type for name in pretrain._Running.FIELDS} == {"meta"}
    before = pretrain._Running("cpu")
    two_micro_batches(before)
    restored = pretrain._Running("meta", before.state())
    assert {getattr(restored, name).device.type for name in pretrain._Running.FIELDS} == {"meta"} and restored.n == 2


def test_a_dam_line_reports_the_sampled_masks_sparsity():
    running = pretrain._Running("cpu")
    running.add(output(1.0, 1.0, [[0]], [0], dam_mask=torch.tensor([1.0, 0.0, 0.0, 0.0])),
                {"masked_lm_ids": torch.tensor([[0]]), "next_sentence_label": torch.tensor([0])}, torch.tensor(2.0))
    running.add(output(1.0, 1.0, [[0]], [0], dam_mask=torch.tensor([1.0, 1.0, 0.0, 0.0])),
                {"masked_lm_ids": torch.tensor([[0]]), "next_sentence_label": torch.tensor([0])}, torch.tensor(2.0))
    assert running.flush(None)["mask_sparsity"] == pytest.approx(1 - (0.25 + 0.5) / 2)


def test_a_log_line_under_ddp_is_made_of_the_sums_averaged_over_the_ranks(monkeypatch):
    """all_reduce_mean gets the sums in FIELDS' order; the line is computed from what it returns."""
    seen = []
    averaged = torch.tensor([6.0, 4.0, 2.0, 3.0, 4.0, 1.0, 2.0, 0.5])
    monkeypatch.setattr(training, "all_reduce_mean", lambda t: seen.append(t.clone()) or averaged)
    running = pretrain._Running("cpu")
    two_micro_batches(running)
    assert running.flush(None) == {"loss": 3.0, "mlm_loss": 2.0, "nsp_loss": 1.0, "mlm_acc": 0.75, "nsp_acc": 0.5,
                                   "mask_sparsity": 0.75}
    assert seen[0].tolist() == [4.0, 3.0, 0.75, 4.0, 5.0, 2.0, 3.0, 0.0]


def test_sums_carried_by_a_checkpoint_give_the_line_an_uninterrupted_run_writes():
    whole = pretrain._Running("cpu")
    two_micro_batches(whole)
    before = pretrain._Running("cpu")
    two_micro_batches(before)
    state = before.state()
    assert state["n"] == 2 and all(state[name].device.type == "cpu" for name in pretrain._Running.FIELDS)
    resumed = pretrain._Running("cpu", state)
    for running in (whole, resumed):
        running.add(output(3.0, 1.0, [[7]], [1]), {"masked_lm_ids": torch.tensor([[7]]),
                                                 "next_sentence_label": torch.tensor([1])}, torch.tensor(4.0))
    assert resumed.flush(None) == whole.flush(None)
    assert pretrain._Running("cpu", None).n == 0


# ------------------------------------------------------------------------------------------ held-out evaluation


@pytest.fixture
def model():
    torch.manual_seed(0)
    recipe = {"model": {**TINY_RECIPE["model"], "hidden_dropout_prob": 0.5}}  # eval mode matters
    model = pretrain.build_model(recipe, len(VOCAB), 8, "dense", {}, None)
    with torch.no_grad():
        # Every masked token is predicted as 7 and every pair as "is next" (label 0), so the hits are known by hand;
        # the logits themselves are about 0.1 (weights of std 0.02), so these win, but leave the losses well above 0.
        model.cls.predictions.bias[7] += 5.0
        model.cls.seq_relationship.bias[0] += 5.0
    return model


def test_evaluation_scores_the_first_limit_examples_in_batches_in_eval_mode(model):
    data = examples([[7, 9, 11], [8, -100, -100], [7, 7, -100], [12, 13, 14], [9, 9, 9], [10, -100, -100],
                     [6, 6, 6], [5, 8, -100]])
    model.eval()
    with torch.no_grad():
        batches = [{k: v.long() for k, v in data[lo:hi].items()} for lo, hi in ((0, 3), (3, 6), (6, 7))]
        outs = [model(**b) for b in batches]
    labels = torch.cat([b["masked_lm_ids"] for b in batches])
    valid = labels != -100
    hits = (torch.cat([o.prediction_logits.argmax(-1) for o in outs]) == labels) & valid
    nsp = (torch.cat([o.seq_relationship_logits.argmax(-1) for o in outs])
           == torch.cat([b["next_sentence_label"] for b in batches]))
    model.train()
    grad_in_forward = []
    model.register_forward_hook(lambda *_: grad_in_forward.append(torch.is_grad_enabled()))
    result = pretrain.evaluate(model, data, limit=7, batch_size=3, device="cpu")
    # the losses over the whole set at once: every masked token and every sequence weighs the same
    mlm_loss = torch.nn.functional.cross_entropy(torch.cat([o.prediction_logits for o in outs]).flatten(0, 1), labels.flatten())
    nsp_loss = torch.nn.functional.cross_entropy(torch.cat([o.seq_relationship_logits for o in outs]),
                                                 torch.cat([b["next_sentence_label"] for b in batches]).flatten())
    assert result == pytest.approx({"val_loss": mlm_loss.item() + nsp_loss.item(), "val_mlm_loss": mlm_loss.item(),
                                    "val_nsp_loss": nsp_loss.item(), "val_mlm_acc": hits.sum().item() / valid.sum().item(),
                                    "val_nsp_acc": nsp.sum().item() / 7, "val_examples": 7}, rel=1e-6)
    assert (valid.sum().item(), hits.sum().item(), nsp.sum().item()) == (16, 3, 4)  # 7s of 16 tokens; rows 0, 2, 4, 6
    assert grad_in_forward == [False] * 3 and model.training  # no autograd graph; training mode back
    assert pretrain.evaluate(model, data, limit=20, batch_size=8, device="cpu")["val_examples"] == 8
    # the same set in one batch: the old mean of batch losses weighted by sequences gave 6.47 for batches of
    # 3, 3, 1 sequences and 6.60 for one batch of 7; now they differ by float rounding only
    assert pretrain.evaluate(model, data, limit=7, batch_size=7, device="cpu") == pytest.approx(result, rel=1e-6)


def test_evaluation_of_one_example_with_one_masked_token(model):
    data = examples([[7, -100], [9, 9]])
    model.eval()
    with torch.no_grad():
        out = model(**{k: v.long() for k, v in data[0:1].items()})
    assert pretrain.evaluate(model, data, limit=1, batch_size=4, device="cpu") == pytest.approx({
        "val_loss": out.loss.item(), "val_mlm_loss": out.mlm_loss.item(), "val_nsp_loss": out.nsp_loss.item(),
        "val_mlm_acc": 1.0, "val_nsp_acc": 1.0, "val_examples": 1})  # 7 and "is next"
    assert out.loss.item() > 0.1


def test_evaluation_of_nothing_is_zeros_not_a_division_by_zero(model):
    assert pretrain.evaluate(model, examples([[7]]), limit=0, batch_size=4, device="cpu") == {
        "val_loss": 0.0, "val_mlm_loss": 0.0, "val_nsp_loss": 0.0, "val_mlm_acc": 0.0, "val_nsp_acc": 0.0,
        "val_examples": 0}


def test_unigram_baseline_hand_computed():
    """Most frequent masked token of train is 7 (3 of 5); validation has 2 of its 4 masked labels = 7."""
    train = examples([[7, 7, 9], [7, 5, -100]])
    validation = examples([[7, 9, -100], [7, 5, -100], [9, -100, -100]])
    assert pretrain.unigram_baseline(train, validation, limit=2) == 2 / 4
    assert pretrain.unigram_baseline(train, validation, limit=3) == 2 / 5


class Chunked:
    """Training examples read a record batch at a time, a later batch holding larger ids than the first."""

    def masked_lm_id_chunks(self):
        yield from (np.array([3, 3, 3, 3]), np.array([12, 12, 0]), np.array([12]))


def test_unigram_counts_add_up_over_record_batches_of_any_id_range():
    validation = examples([[3, 3, 12], [3, -100, -100], [12, 12, 12]])
    assert pretrain.unigram_baseline(Chunked(), validation, limit=2) == 3 / 4  # 3: 4 of the 8 ids, 12: 3
    assert np.isnan(pretrain.unigram_baseline(Chunked(), examples([[-100]]), limit=1))


# ------------------------------------------------------------------------------------- the command and its outputs


def command(tmp_path, **given):
    fields = {"examples": tmp_path / "ex", "tokenizer": tmp_path / "tok", "params": '{"lr": 0.5}', "mask": "star",
              "mask_params": None, "mask_file": None, "dam_lambda": None, "out": tmp_path / "out", "state_dir": None,
              **given}
    return Namespace(**fields)


@pytest.fixture
def trained(monkeypatch):
    """pretrain.train replaced by a recorder of its arguments."""
    calls = []
    monkeypatch.setattr(pretrain, "train", lambda **kwargs: calls.append(kwargs))
    return calls


def test_the_command_hands_train_the_filled_recipe_and_its_state_dir(tmp_path, trained):
    pretrain.run(command(tmp_path, mask_params='{"window": 2}'))
    pretrain.run(command(tmp_path, mask="dam_s", dam_lambda=0.0, state_dir=tmp_path / "s"))
    pretrain.run(command(tmp_path, mask="learned", mask_file=tmp_path / "mask.safetensors"))
    assert trained.pop()["mask_file"] == tmp_path / "mask.safetensors"
    assert trained == [
        {"examples_dir": tmp_path / "ex", "tokenizer_dir": tmp_path / "tok", "recipe": recipes.fill("pretrain", {"lr": 0.5}),
         "mask": "star", "mask_params": {"window": 2}, "mask_file": None, "dam_lambda": None, "out_dir": tmp_path / "out",
         "state_dir": tmp_path / "out.state"},
        {"examples_dir": tmp_path / "ex", "tokenizer_dir": tmp_path / "tok", "recipe": recipes.fill("pretrain", {"lr": 0.5}),
         "mask": "dam_s", "mask_params": {}, "mask_file": None, "dam_lambda": 0.0, "out_dir": tmp_path / "out",
         "state_dir": tmp_path / "s"}]


@pytest.mark.parametrize("given, message", [
    ({"mask": "dam_u"}, "a DAM search needs --dam-lambda >= 0, got None"),
    ({"mask": "dam_s", "dam_lambda": -0.1}, "a DAM search needs --dam-lambda >= 0, got -0.1"),
    ({"mask": "learned"}, "--mask-file goes with --mask learned (and only with it)"),
    ({"mask_file": "m.safetensors"}, "--mask-file goes with --mask learned (and only with it)"),
])
def test_a_bad_command_is_one_clear_error_before_training(tmp_path, trained, given, message):
    with pytest.raises(UserError) as error:
        pretrain.run(command(tmp_path, **given))
    assert str(error.value) == message and trained == []


def test_dam_search_takes_only_dam_masks(tmp_path, trained):
    from sparsebert import dam_search

    with pytest.raises(UserError) as error:
        dam_search.run(command(tmp_path, mask="star", dam_lambda=0.1))
    assert str(error.value) == "dam-search needs --mask dam_s or dam_u, got 'star'" and trained == []
    dam_search.run(command(tmp_path, mask="dam_u", dam_lambda=0.1))
    assert trained[0]["mask"] == "dam_u" and dam_search.add_arguments is pretrain.add_arguments


def finish(tmp_path, model, data, logged=None, is_dam=False, snapshots=(), **recipe):
    """_finish after a run that wrote `logged` (None: no log file at all, as on a rank that writes none)."""
    recipe = {"max_steps": 9, "seed": 4, "precision": "fp32", "eval_examples": 5, **recipe}
    log = SimpleNamespace(path=tmp_path / "state" / "none.jsonl")
    if logged is not None:
        log = training.JsonlLog(tmp_path / "state" / "log.jsonl")
        for record in logged:
            log.write(record)
    batching = {"micro_batch_size": 2, "accumulation_steps": 3, "model_run": "eager", "backend": None}
    return pretrain._finish(model, data, recipe, training.Dist(), tmp_path / "out", log, list(snapshots), 1e-3, is_dam,
                            batching)


def test_the_outputs_of_a_finished_run(tmp_path, monkeypatch, caplog):
    evaluated = []
    monkeypatch.setattr(pretrain, "evaluate", lambda *args: evaluated.append(args) or {"val_mlm_acc": 0.5})
    monkeypatch.setattr(pretrain, "unigram_baseline", lambda *args: evaluated.append(args) or 0.25)
    model = pretrain.build_model({"model": TINY_RECIPE["model"]}, len(VOCAB), 8, "no_diagonal", {}, None)
    data = {"train": examples([[7]]), "validation": examples([[7], [8]])}
    logged = [{"step": 3, "loss": 4.0, "tokens_per_s": 10.0}, {"step": 6, "loss": 3.0, "tokens_per_s": 30.0},
              {"step": 9, "loss": 2.0, "tokens_per_s": 20.0}]
    with caplog.at_level("INFO", logger="sparsebert.pretrain"):
        summary = finish(tmp_path, model, data, logged)
    assert summary == {"variant_mask": "no_diagonal", "steps": 9, "seed": 4, "world_size": 1,
                       "parameters": sum(p.numel() for p in model.parameters()), "micro_batch_size": 2,
                       "accumulation_steps": 3, "model_run": "eager", "backend": None, "precision": "fp32",
                       "precision_requested": "fp32", "precision_reason": "as requested", "val_mlm_acc": 0.5,
                       "val_unigram_mlm_acc": 0.25, "sparsity": 1 / 8, "final_train_loss": 2.0, "tokens_per_s": 20.0}
    # in micro-batches of training's size; the floor from the training split's counts, on the same examples
    assert evaluated == [(model, data["validation"], 5, 2, torch.device("cpu")), (data["train"], data["validation"], 5)]
    assert caplog.messages == [f"pretraining done: {json.dumps(summary)}"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    assert (tmp_path / "out" / "log.jsonl").read_text() == "".join(json.dumps(r) + "\n" for r in logged)
    reloaded = type(model).from_pretrained(tmp_path / "out" / "model")
    assert torch.equal(reloaded.bert.fixed_mask.keep, model.bert.fixed_mask.keep) and not model.training


def test_a_run_without_validation_or_log_lines_says_less(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain, "evaluate", lambda *args: pytest.fail("nothing to evaluate"))
    model = pretrain.build_model({"model": TINY_RECIPE["model"]}, len(VOCAB), 8, "dense", {}, None)
    summary = finish(tmp_path, model, {"train": examples([[7]]), "validation": examples(np.zeros((0, 1), int))})
    assert summary["sparsity"] == 0.0 and not {"val_unigram_mlm_acc", "final_train_loss", "tokens_per_s"} & set(summary)
    assert (tmp_path / "out" / "log.jsonl").read_text() == ""  # no log file: an empty one
    finish(tmp_path / "c", model, {"train": examples([[7]])}, logged=[])  # a log file without lines
    assert (tmp_path / "c" / "out" / "log.jsonl").read_text() == ""
    finish(tmp_path / "b", model, {"train": examples([[7]])})  # no validation split at all
    assert "val_mlm_acc" not in json.loads((tmp_path / "b" / "out" / "summary.json").read_text())
    # eval_examples 0: a validation split, evaluated on none of it (no 0.0 accuracy of no examples)
    summary = finish(tmp_path / "e", model, {"train": examples([[7]]), "validation": examples([[7], [8]])},
                     eval_examples=0)
    assert not [key for key in summary if key.startswith("val_")]


def test_a_search_saves_its_mask_and_snapshots(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(dam, "save_search", lambda *args: saved.append(args) or {"sparsity": 0.75, "dam_type": "dam_s"})
    model = pretrain.build_model({"model": TINY_RECIPE["model"]}, len(VOCAB), 8, "dam_s", {}, None)
    snapshots = [(0, torch.zeros(4, 8))]
    summary = finish(tmp_path, model, {"train": examples([[7]])}, is_dam=True, snapshots=snapshots)
    assert saved == [(model.bert.dam, tmp_path / "out", snapshots, 1e-3)]
    assert (summary["sparsity"], summary["dam_type"], summary["variant_mask"]) == (0.75, "dam_s", "dam_s")
