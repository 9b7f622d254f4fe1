"""Pretraining and DAM search engines: learning, exact resume after SIGKILL, DDP equivalence, guards."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from _runs import run_watched
from conftest import TINY_RECIPE, make_examples, rewritten_in_place

from sparsebert import dam, masks
from sparsebert.io import UserError


# Fault injection that leaves the process alive (a non-finite loss is one UserError): run in this process too.
IN_PROCESS_ENV = {"SPARSEBERT_NAN_AT_STEP"}


def cli(*args, env=None, check=True):
    """`python -m sparsebert ARGS`: in this process (its imports are paid once per session, not per call: 5 s
    on an AVX2-only CPU) unless `env` asks for a fault that kills or stops the process it fires in. Runs of both
    kinds are compared bit for bit: conftest keeps this process at a fresh process's torch thread count."""
    argv, env = list(map(str, args)), env or {}
    if set(env) <= IN_PROCESS_ENV:
        with mock.patch.dict(os.environ, env):
            proc = in_process(argv)
    else:
        proc = subprocess.run([sys.executable, "-m", "sparsebert", *argv], capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=300)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def in_process(argv: list[str]) -> subprocess.CompletedProcess:
    """`sparsebert.cli.main(argv)` with what a process would show: its exit code, and as its stderr the error
    line and the package's INFO log lines ("resumed from", "starting over")."""
    from sparsebert.cli import main

    stderr, logger = io.StringIO(), logging.getLogger("sparsebert")
    handler, level = logging.StreamHandler(stderr), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stderr(stderr):
            main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return subprocess.CompletedProcess(["sparsebert", *argv], code, "", stderr.getvalue())


def run_pretrain(data, out, mask="star", recipe=None, extra=(), env=None, check=True, command="pretrain"):
    examples, tokenizer = data
    params = json.dumps({**TINY_RECIPE, **(recipe or {})})
    return cli(command, "--examples", examples, "--tokenizer", tokenizer, "--params", params, "--mask", mask,
               "--out", out, *extra, env=env, check=check)


def logged(out):
    return [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]


def weights(out):
    return load_file(str(out / "model" / "model.safetensors"))


@pytest.mark.slow
def test_fixed_mask_pretraining_learns_and_writes_outputs(tiny_pretraining_data, tmp_path):
    out = tmp_path / "star"
    run_pretrain(tiny_pretraining_data, out, recipe={"max_steps": 40})
    records = logged(out)
    assert records[-1]["mlm_loss"] < records[0]["mlm_loss"] - 0.2, records
    assert {"step", "loss", "mlm_acc", "nsp_acc", "lr", "tokens_per_s", "mask_sparsity"} <= set(records[0])
    # The lr the logged update used (lr 1e-2, linear, warmup 0.1 of 40): update d (1-based) is at x = (d - 1) / 40,
    # all of them past the warmup (x >= 0.1): (1 - x) / 0.9.
    assert [r["lr"] for r in records] == pytest.approx([1e-2 * (1 - (d - 1) / 40) / 0.9 for d in range(5, 41, 5)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sparsity"] == pytest.approx(masks.sparsity(masks.build_mask("star", 32)))
    from sparsebert.modeling import SparseBertForPreTraining

    model = SparseBertForPreTraining.from_pretrained(out / "model")
    assert model.config.attention_mask_type == "star"
    # val_mlm_acc recomputed here from the saved model on all 64 validation examples (one batch, the masked
    # positions counted by hand), and the floor of always predicting the train split's most frequent masked token
    # (40 steps learn about that prior: the model sits at the floor, so no margin is asserted).
    # The examples as the fixture made them (conftest.make_examples), not as the reader gives them back.
    splits = {name: {k: torch.tensor(v) for k, v in make_examples(n, seed).items()}
              for name, n, seed in (("train", 256, 0), ("validation", 64, 1))}
    val = splits["validation"]
    with torch.no_grad():
        predicted = model.eval()(**{k: v.long() for k, v in val.items()}).prediction_logits.argmax(-1)
    masked = val["masked_lm_ids"] != -100
    assert summary["val_examples"] == 64
    assert summary["val_mlm_acc"] == pytest.approx(((predicted == val["masked_lm_ids"]) & masked).sum().item()
                                                   / masked.sum().item(), abs=1e-9)
    train_ids = splits["train"]["masked_lm_ids"].flatten()
    most_frequent = torch.bincount(train_ids[train_ids != -100]).argmax()
    assert summary["val_unigram_mlm_acc"] == pytest.approx(((val["masked_lm_ids"] == most_frequent) & masked).sum().item()
                                                           / masked.sum().item(), abs=1e-9)


@pytest.mark.slow
def test_dam_search_learns_snapshots_and_binarizes(tiny_pretraining_data, tmp_path):
    out = tmp_path / "dam"
    run_pretrain(tiny_pretraining_data, out, mask="dam_s", recipe={"max_steps": 40},
                 extra=("--dam-lambda", "1e-3"), command="dam-search")
    records = logged(out)
    assert records[-1]["mlm_loss"] < records[0]["mlm_loss"] - 0.2
    snaps = np.load(out / "snapshots.npz")
    assert snaps["steps"].tolist() == list(range(0, 40, 5)) + [40]
    assert snaps["keep_prob"].shape == (9, 4, 32)  # (snapshots, heads, offsets)
    assert np.allclose(snaps["keep_prob"][0], 0.5, atol=0.01)  # init 1e-3 * randn
    assert not np.allclose(snaps["keep_prob"][-1], snaps["keep_prob"][0], atol=0.01), "mask logits never moved"
    keep = dam.load_mask_file(out / "mask.safetensors", 4, 32)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sparsity"] == pytest.approx(masks.sparsity(keep))
    # ... and that mask trains a fixed-mask model.
    run_pretrain(tiny_pretraining_data, tmp_path / "learned", mask="learned", recipe={"max_steps": 5},
                 extra=("--mask-file", out / "mask.safetensors"))
    assert json.loads((tmp_path / "learned" / "summary.json").read_text())["sparsity"] == pytest.approx(masks.sparsity(keep))


@pytest.mark.slow
@pytest.mark.parametrize("mask,extra", [("star", ()), ("dam_s", ("--dam-lambda", "1e-3"))])
def test_sigkill_then_rerun_gives_bit_identical_weights(tiny_pretraining_data, tmp_path, mask, extra):
    recipe = {"max_steps": 20, "checkpoint_every": 10, "hidden_dropout_prob": None}
    recipe.pop("hidden_dropout_prob")
    recipe["model"] = {**TINY_RECIPE["model"], "hidden_dropout_prob": 0.1}  # dropout RNG must resume too
    whole = tmp_path / "whole"
    run_pretrain(tiny_pretraining_data, whole, mask=mask, recipe=recipe, extra=extra)
    cut = tmp_path / "cut"
    killed = run_pretrain(tiny_pretraining_data, cut, mask=mask, recipe=recipe, extra=extra,
                          env={"SPARSEBERT_KILL_AT_STEP": "10"}, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (cut / "summary.json").exists()
    run_pretrain(tiny_pretraining_data, cut, mask=mask, recipe=recipe, extra=extra)
    a, b = weights(whole), weights(cut)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["loss"] for r in logged(whole)] == [r["loss"] for r in logged(cut)]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tiny_pretraining_data, tmp_path):
    recipe = {"max_steps": 6, "batch_size": 16, "micro_batch_size": 8, "log_every": 1}
    run_pretrain(tiny_pretraining_data, tmp_path / "one", recipe=recipe)
    examples, tokenizer = tiny_pretraining_data
    proc = run_watched(  # a hung rendezvous or collective fails with both workers' stacks
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sparsebert",
         "pretrain", "--examples", str(examples), "--tokenizer", str(tokenizer), "--params",
         json.dumps({**TINY_RECIPE, **recipe}), "--mask", "star", "--out", str(tmp_path / "two")],
        cwd=tmp_path, env=dict(os.environ), timeout=300, workdir=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = logged(tmp_path / "one"), logged(tmp_path / "two")
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["backend"] == "gloo"
    # The same optimizer trajectory (lr) and weights; the log is the global batch's in both (the two ranks' halves
    # are the one process's two micro-batches), not rank 0's half.
    assert [r["lr"] for r in one] == [r["lr"] for r in two]
    for key in ("loss", "mlm_loss", "nsp_loss", "mlm_acc", "nsp_acc"):
        assert [r[key] for r in two] == pytest.approx([r[key] for r in one], rel=1e-4, abs=1e-6), key
    wa, wb = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5, rtol=1e-4), k


@pytest.mark.slow
def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(tiny_pretraining_data, tmp_path):
    out = tmp_path / "nan"
    proc = run_pretrain(tiny_pretraining_data, out, recipe={"max_steps": 40, "checkpoint_every": 5},
                        env={"SPARSEBERT_NAN_AT_STEP": "13"}, check=False)
    assert proc.returncode == 2
    assert "at step 13" in proc.stderr and "last good checkpoint" in proc.stderr
    assert not (out / "summary.json").exists()
    ckpts = sorted(p.name for p in (tmp_path / "nan.state").glob("step-*"))
    assert ckpts == ["step-00000005", "step-00000010"]


@pytest.mark.slow
def test_bad_inputs_give_one_clear_error(tiny_pretraining_data, tmp_path):
    examples, tokenizer = tiny_pretraining_data
    p = run_pretrain((tmp_path / "nowhere", tokenizer), tmp_path / "o1", check=False)
    assert p.returncode == 2 and "pretraining examples not found at" in p.stderr
    wrong = tmp_path / "wrong.safetensors"
    dam.save_mask_file(wrong, torch.ones(3, 32, 32, dtype=torch.bool))
    p = run_pretrain(tiny_pretraining_data, tmp_path / "o2", mask="learned", extra=("--mask-file", wrong), check=False)
    assert p.returncode == 2 and "wrong.safetensors has 3 heads; the model has 4" in p.stderr
    p = run_pretrain(tiny_pretraining_data, tmp_path / "o3", mask="dam_s", extra=("--dam-lambda", "-1"),
                     check=False, command="dam-search")
    assert p.returncode == 2 and "--dam-lambda >= 0" in p.stderr
    p = run_pretrain(tiny_pretraining_data, tmp_path / "o4", recipe={"learning_rate": 1}, check=False)
    assert p.returncode == 2 and "learning_rate" in p.stderr
    # a corrupt checkpoint is named, not silently restarted from scratch
    state = tmp_path / "o5.state" / "step-00000010"
    state.mkdir(parents=True)
    (state / "meta.json").write_text('{"step": 10}')
    (state / "model.safetensors").write_bytes(b"garbage")
    p = run_pretrain(tiny_pretraining_data, tmp_path / "o5", check=False)
    assert p.returncode == 2 and "step-00000010" in p.stderr and "unreadable" in p.stderr
    for o in ("o1", "o2", "o3", "o4", "o5"):
        assert not (tmp_path / o).exists(), f"partial output left in {o}"


@pytest.mark.slow
def test_rerun_with_another_recipe_starts_over_instead_of_resuming(tiny_pretraining_data, tmp_path):
    """A config change keeps a job's state dir (an lr or a mask parameter changed: same variant name), and the
    rerun resumed the old run's final checkpoint: the old weights, silently. It must equal a fresh run."""
    state = ("--state-dir", tmp_path / "run.state")
    run_pretrain(tiny_pretraining_data, tmp_path / "a", recipe={"max_steps": 10, "checkpoint_every": 5}, extra=state)
    changed = {"max_steps": 10, "checkpoint_every": 5, "lr": 3e-3}
    run_pretrain(tiny_pretraining_data, tmp_path / "b", recipe=changed, extra=state)
    run_pretrain(tiny_pretraining_data, tmp_path / "fresh", recipe=changed, extra=("--state-dir", tmp_path / "f.state"))
    b, fresh, a = weights(tmp_path / "b"), weights(tmp_path / "fresh"), weights(tmp_path / "a")
    assert all(torch.equal(b[k], fresh[k]) for k in fresh) and not all(torch.equal(b[k], a[k]) for k in a)
    again = run_pretrain(tiny_pretraining_data, tmp_path / "c", recipe=changed, extra=state)
    assert "resumed from" in again.stderr  # the same recipe still resumes


@pytest.mark.slow
def test_rerun_on_rebuilt_examples_starts_over_instead_of_resuming(tiny_pretraining_data, tmp_path):
    """The same recipe at the same paths, but the examples were rebuilt upstream (a corpus change reruns the
    examples job into the same folder): the checkpoints were taken on the old examples and must not be resumed."""
    import shutil

    examples = tmp_path / "examples"
    shutil.copytree(tiny_pretraining_data[0], examples, copy_function=shutil.copy2)
    data = (examples, tiny_pretraining_data[1])
    state = ("--state-dir", tmp_path / "run.state")
    recipe = {"max_steps": 10, "checkpoint_every": 5}
    run_pretrain(data, tmp_path / "a", recipe=recipe, extra=state)
    assert "resumed from" in run_pretrain(data, tmp_path / "b", recipe=recipe, extra=state).stderr
    rewritten_in_place(examples)
    again = run_pretrain(data, tmp_path / "c", recipe=recipe, extra=state)
    assert "starting over" in again.stderr and "resumed from" not in again.stderr


def test_rerun_that_changes_only_how_the_run_is_carried_out_resumes(tiny_pretraining_data, tmp_path):
    """Halving the micro-batch after an out-of-memory, or another checkpoint / log / eval cadence, changes how the
    run is carried out, not what it trains: the rerun must resume the checkpoints, not start days over."""
    state = ("--state-dir", tmp_path / "run.state")
    run_pretrain(tiny_pretraining_data, tmp_path / "a", recipe={"max_steps": 10, "checkpoint_every": 5}, extra=state)
    assert [p.name for p in (tmp_path / "run.state").glob("step-*")] == ["step-00000005"]  # kept by default
    carried_out = {"max_steps": 10, "micro_batch_size": 8, "checkpoint_every": 3, "log_every": 2, "eval_examples": 8,
                   "compile": False, "keep_checkpoints": False}
    again = run_pretrain(tiny_pretraining_data, tmp_path / "b", recipe=carried_out, extra=state)
    assert "resumed from" in again.stderr and "starting over" not in again.stderr
    # keep_checkpoints: false removes them once the outputs are written; what the run was stays
    assert sorted(p.name for p in (tmp_path / "run.state").iterdir()) == ["code.json", "identity.json", "log.jsonl"]
    assert (tmp_path / "b" / "summary.json").exists()


# ------------------------------------------------------------------------------------------ speed levers (issue 21)


def train_in_process(data, out, recipe, mask="star", mask_params=None, mask_file=None, dam_lambda=None, state=None):
    """`sparsebert pretrain` in this process (so that a test can count what the loop calls); its state dir
    OUT.state unless given."""
    from sparsebert import pretrain, recipes

    examples, tokenizer = data
    filled = recipes.fill("pretrain", {**TINY_RECIPE, "eval_examples": 0, "checkpoint_every": 1000, **recipe})
    return pretrain.train(examples, tokenizer, filled, mask, mask_params or {}, mask_file, dam_lambda, out,
                          state or out.with_name(out.name + ".state"))


def test_micro_batches_accumulate_to_the_weights_of_one_batch(tiny_pretraining_data, tmp_path, caplog):
    """Global batch 16 as one forward pass or as 4 micro-batches of 4 (dropout off, fp32, LAMB): the same
    update, within fp32 rounding (every example has 5 masked tokens, so the mean of the micro-batches'
    mean losses is the batch's mean loss). The log line and summary.json say how the batch was run."""
    recipe = {"max_steps": 6, "batch_size": 16, "optimizer": "lamb", "lr": 5e-3}
    whole = train_in_process(tiny_pretraining_data, tmp_path / "whole", recipe)
    with caplog.at_level("INFO", logger="sparsebert.pretrain"):
        split = train_in_process(tiny_pretraining_data, tmp_path / "split", {**recipe, "micro_batch_size": 4})
    assert "global batch 16 = 1 process(es) x micro-batch 4 x 4 accumulation step(s); model eager" in caplog.text
    assert (whole["micro_batch_size"], whole["accumulation_steps"]) == (16, 1)
    assert (split["micro_batch_size"], split["accumulation_steps"]) == (4, 4)
    assert json.loads((tmp_path / "split" / "summary.json").read_text())["accumulation_steps"] == 4
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "split")
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k


def test_the_final_evaluation_runs_in_micro_batches(tiny_pretraining_data, tmp_path, monkeypatch):
    """The held-out evaluation must not run the global batch in one pass: paper.yaml's 65,536 sequences would
    need ~50 GB in fp32. Every batch the run moves to the device, the evaluation's included, is at most a
    micro-batch, and all 40 held-out examples are still evaluated."""
    from sparsebert import pretrain

    sizes = []
    moved = pretrain.to_device
    monkeypatch.setattr(pretrain, "to_device", lambda batch, device: sizes.append(len(batch["input_ids"]))
                        or moved(batch, device))
    summary = train_in_process(tiny_pretraining_data, tmp_path / "run",
                               {"max_steps": 2, "batch_size": 16, "micro_batch_size": 4, "eval_examples": 40})
    assert summary["val_examples"] == 40 and max(sizes) == 4
    assert sizes[-10:] == [4] * 10  # the evaluation: 40 examples in micro-batches of 4


def test_the_ddp_wrapper_is_gone_before_the_process_group(tiny_pretraining_data, tmp_path, monkeypatch):
    """A DDP wrapper still alive when the group is destroyed can hang gloo's destructor (teardown_distributed):
    the loop must drop every reference to it, the compile runner's and the forward closure's included."""
    import gc
    import weakref

    from sparsebert import training

    wrappers = []

    class Wrapper(torch.nn.Module):  # stands in for DDP, which one process does not build
        def __init__(self, model):
            super().__init__()
            self.module = model

        def forward(self, **kwargs):
            return self.module(**kwargs)

    def wrap(model, env):
        wrapper = Wrapper(model)
        wrappers.append(weakref.ref(wrapper))
        return wrapper

    alive_at_teardown = []
    monkeypatch.setattr(training, "wrap_ddp", wrap)
    monkeypatch.setattr(training, "teardown_distributed",
                        lambda: alive_at_teardown.append(gc.collect() >= 0 and wrappers[0]() is not None))
    train_in_process(tiny_pretraining_data, tmp_path / "run", {"max_steps": 2, "batch_size": 16})
    assert alive_at_teardown == [False]


def test_rank_0_finishes_after_the_ranks_have_parted(tiny_pretraining_data, tmp_path, monkeypatch):
    """At paper scale the final evaluation and unigram count take minutes on rank 0: the other ranks must not
    wait for them in the teardown's barrier (NCCL gives up after 10 min), so the group goes first."""
    from sparsebert import pretrain, training

    order = []
    finish = pretrain._finish
    monkeypatch.setattr(training, "teardown_distributed", lambda: order.append("teardown"))
    monkeypatch.setattr(pretrain, "_finish", lambda *a: order.append("finish") or finish(*a))
    summary = train_in_process(tiny_pretraining_data, tmp_path / "run", {"max_steps": 2, "batch_size": 16})
    assert order == ["teardown", "finish"] and summary["backend"] is None and summary["steps"] == 2


def test_a_micro_batch_that_does_not_divide_the_batch_is_one_clear_error(tiny_pretraining_data, tmp_path):
    with pytest.raises(UserError, match="batch_size 16 is not divisible by world_size 1 x micro_batch_size 5"):
        train_in_process(tiny_pretraining_data, tmp_path / "bad", {"max_steps": 2, "micro_batch_size": 5})


def count_host_reads(monkeypatch) -> list:
    """Every way a tensor's value reaches Python (on a GPU each one waits for the device: a host sync)."""
    calls = []
    for name in ("item", "__bool__", "__float__", "__int__", "tolist", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda self, *a, _o=original, _n=name, **k: (calls.append(_n), _o(self, *a, **k))[1])
    return calls


def test_host_reads_do_not_grow_with_the_micro_batches(tiny_pretraining_data, tmp_path, monkeypatch):
    """The loop reads the loss once per optimizer step (the finiteness guard) and 5 numbers per log line
    (loss, mlm_loss, nsp_loss, mlm_acc, nsp_acc; a fixed mask's sparsity is known): never per micro-batch.
    The micro-batches' example indices are host tensors (`tolist` of a CPU index tensor is not a device
    sync) and are left out. LAMB: torch's AdamW on CPU reads its per-tensor step counters (host tensors)
    with .item(), which would drown the count."""
    calls = count_host_reads(monkeypatch)
    counts = {}
    for steps, micro in ((4, 16), (4, 4), (8, 16)):
        calls.clear()
        train_in_process(tiny_pretraining_data, tmp_path / f"{steps}-{micro}",
                         {"max_steps": steps, "batch_size": 16, "micro_batch_size": micro, "log_every": 4,
                          "optimizer": "lamb"})
        counts[steps, micro] = [n for n in calls if n != "tolist"]
    assert len(counts[4, 4]) == len(counts[4, 16])  # 4 micro-batches per step read no more than 1
    # 4 more steps: 4 finiteness reads + one more log line of 5 reads
    assert counts[8, 16].count("item") - counts[4, 16].count("item") == 4 + 5


def test_compile_that_fails_falls_back_to_eager_with_one_line(tiny_pretraining_data, tmp_path, monkeypatch, caplog):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no working C++ compiler\ndetails")

    monkeypatch.setattr(torch, "compile", no_compiler)
    recipe = {"max_steps": 3, "compile": True}
    with caplog.at_level("INFO"):
        summary = train_in_process(tiny_pretraining_data, tmp_path / "fallback", recipe)
    warned = [r.message for r in caplog.records if "torch.compile" in r.message]
    assert warned == ["torch.compile failed (RuntimeError: no working C++ compiler): training the model eagerly"]
    assert summary["model_run"] == "eager (compile failed)" and np.isfinite(summary["final_train_loss"])
    train_in_process(tiny_pretraining_data, tmp_path / "eager", {"max_steps": 3})
    assert all(torch.equal(a, b) for a, b in zip(weights(tmp_path / "fallback").values(),
                                                 weights(tmp_path / "eager").values()))


@pytest.mark.slow  # ~30 s on 2 cores: inductor compiles the model's C++ kernels
def test_compiled_pretraining_trains_with_a_finite_loss(tiny_pretraining_data, tmp_path):
    """torch.compile for real on the CPU (inductor + the C compiler): the loss is finite and close to eager's."""
    summary = train_in_process(tiny_pretraining_data, tmp_path / "compiled", {"max_steps": 4, "compile": True,
                                                                              "log_every": 4})
    assert summary["model_run"] == "compiled" and np.isfinite(summary["final_train_loss"])
    eager = train_in_process(tiny_pretraining_data, tmp_path / "eager", {"max_steps": 4, "log_every": 4})
    assert summary["final_train_loss"] == pytest.approx(eager["final_train_loss"], rel=1e-3)
