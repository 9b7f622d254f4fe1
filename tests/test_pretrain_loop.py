"""The pretraining loop (`pretrain.train`) in this process: its log lines (cadence, the learning rate of each
logged update, tokens/s on a stand-in clock), a DAM search's L1 term and keep-probability snapshots, gradient
clipping, what makes a rerun start over, and a search stopped by a signal and then cut short by a crash that
resumes to what an uninterrupted search writes. The same loop in subprocesses (learning, SIGKILL, DDP):
test_pretrain.py."""

from __future__ import annotations

import itertools
import json
import shutil
import types

import numpy as np
import pytest
import torch

from conftest import SEQ, TINY_RECIPE, gloo_group, node_down, rewritten_in_place
from test_pretrain import logged, train_in_process, weights

from sparsebert import dam, masks, precision, preemption, pretrain
from sparsebert.modeling import SparseBertForPreTraining

HEADS = TINY_RECIPE["model"]["num_attention_heads"]


pytestmark = pytest.mark.usefixtures("preemption_flag_cleared")


def test_log_lines_come_at_their_cadence_with_their_updates_lr_and_tokens_per_s(tiny_pretraining_data, tmp_path,
                                                                                monkeypatch, caplog):
    """log_every 3 over 7 updates: lines after updates 3, 6 and the last, 7. Each gives the learning rate its
    update used (linear, lr 1e-2, warmup 0.1 of 7: update d is at x = (d - 1) / 7 >= 0.1, so 1e-2 (1 - x) / 0.9)
    and the tokens/s since the line before, on a clock that reads 0, 2, 4, ... seconds: the line's tokens over 2 s.
    The loss is MLM + NSP; a fixed mask's sparsity is its own. The job's log says the precision and how the
    global batch is run, and summary.json counts accumulation steps as an integer."""
    clock = itertools.count(step=2)
    monkeypatch.setattr(pretrain, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    with caplog.at_level("INFO", logger="sparsebert.pretrain"):
        train_in_process(tiny_pretraining_data, tmp_path / "run", {"max_steps": 7, "log_every": 3,
                                                                   "micro_batch_size": 4},
                         mask="longformer", mask_params={"window": 2})
    records = logged(tmp_path / "run")
    assert [r["step"] for r in records] == [3, 6, 7]
    assert [r["lr"] for r in records] == pytest.approx([1e-2 * (1 - (d - 1) / 7) / 0.9 for d in (3, 6, 7)])
    assert [r["tokens_per_s"] for r in records] == [3 * 16 * SEQ / 2, 3 * 16 * SEQ / 2, 16 * SEQ / 2]
    assert all(r["loss"] == pytest.approx(r["mlm_loss"] + r["nsp_loss"], rel=1e-6) for r in records)
    window_2 = masks.sparsity(masks.build_mask("longformer", SEQ, window=2))  # the default window is 6
    assert [r["mask_sparsity"] for r in records] == [window_2] * 3
    messages = [r.getMessage() for r in caplog.records]
    assert precision.resolve("fp32", "cpu").line in messages
    assert "global batch 16 = 1 process(es) x micro-batch 4 x 4 accumulation step(s); model eager" in messages
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["sparsity"] == window_2 and type(summary["accumulation_steps"]) is int


def test_a_dam_search_adds_its_l1_term_and_takes_snapshots_at_their_cadence(tiny_pretraining_data, tmp_path):
    """DAM_s, lambda 1e-3: each logged loss is MLM + NSP + lambda ||mask||_1 of the sampled masks, which is lambda
    x kept fraction x heads x L x L (the line's mask_sparsity is 1 - the kept fraction, averaged over the same
    micro-batches). Keep-probability snapshots before updates 0, 2 and 4 (snapshot_every 2) and after the last, 5."""
    lam = 1e-3
    recipe = {"max_steps": 5, "log_every": 1, "snapshot_every": 2}
    summary = train_in_process(tiny_pretraining_data, tmp_path / "search", recipe, mask="dam_s", dam_lambda=lam)
    assert summary["dam_lambda"] == lam
    records = logged(tmp_path / "search")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    for r in records:
        l1 = lam * (1 - r["mask_sparsity"]) * HEADS * SEQ * SEQ
        assert 0.5 < l1 < 4.1 and r["loss"] - r["mlm_loss"] - r["nsp_loss"] == pytest.approx(l1, rel=1e-4)
    snapshots = np.load(tmp_path / "search" / "snapshots.npz")
    assert snapshots["steps"].tolist() == [0, 2, 4, 5]
    keep_prob = snapshots["keep_prob"]  # from about 0.5 (logits initialized near 0), moving away step by step,
    assert np.abs(keep_prob[0] - 0.5).max() < 2e-3  # the last one the saved model's
    assert np.all(np.diff([np.abs(k - keep_prob[0]).max() for k in keep_prob]) > 0)
    model = SparseBertForPreTraining.from_pretrained(tmp_path / "search" / "model")
    assert np.array_equal(keep_prob[-1], model.bert.dam.snapshot().numpy())


def test_the_recipes_gradient_clipping_reaches_the_update(tiny_pretraining_data, tmp_path):
    """grad_clip scales the gradients to a global norm of at most 1e-9 before AdamW: its update, lr m / (sqrt(v)
    + eps), then shrinks from about lr to about lr x 1e-9 / eps: measured 0.04 against 142 (summed |change|)."""
    train_in_process(tiny_pretraining_data, tmp_path / "start", {"max_steps": 1})  # its one update's lr is 0 (warmup)
    start, moved = weights(tmp_path / "start"), {}
    for clip in (None, 1e-9):
        out = tmp_path / f"clip-{clip}"
        train_in_process(tiny_pretraining_data, out, {"max_steps": 3, "grad_clip": clip})
        moved[clip] = sum((w - start[k]).abs().sum().item() for k, w in weights(out).items() if w.is_floating_point())
    assert moved[1e-9] < 0.1 * moved[None]


def learned_keep(seed):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(HEADS, SEQ, SEQ, generator=generator) < 0.3) | torch.eye(SEQ, dtype=torch.bool)


def learned_mask(path, seed):
    dam.save_mask_file(path, learned_keep(seed))
    return path


def test_a_learned_mask_is_the_one_in_its_file(tiny_pretraining_data, tmp_path):
    summary = train_in_process(tiny_pretraining_data, tmp_path / "run", {"max_steps": 2}, mask="learned",
                               mask_file=learned_mask(tmp_path / "mask.safetensors", 0))
    model = SparseBertForPreTraining.from_pretrained(tmp_path / "run" / "model")
    assert torch.equal(model.bert.fixed_mask.keep, learned_keep(0))
    assert summary["sparsity"] == pytest.approx(1 - learned_keep(0).float().mean().item())


@pytest.mark.parametrize("keep", [True, False])
def test_checkpoints_go_once_the_outputs_are_written_unless_kept(tiny_pretraining_data, tmp_path, keep):
    recipe = {"max_steps": 4, "checkpoint_every": 2, "keep_checkpoints": keep}
    train_in_process(tiny_pretraining_data, tmp_path / "run", recipe)
    assert [p.name for p in (tmp_path / "run.state").glob("step-*")] == (["step-00000002"] if keep else [])


def test_the_summary_names_the_process_groups_backend(tiny_pretraining_data, tmp_path):
    """Under torchrun (here: a one-process gloo group) summary.json records the backend; without a group, none."""
    with gloo_group(tmp_path):
        assert train_in_process(tiny_pretraining_data, tmp_path / "ddp", {"max_steps": 2})["backend"] == "gloo"
    assert train_in_process(tiny_pretraining_data, tmp_path / "plain", {"max_steps": 2})["backend"] is None


FIRST_RUN = {"mask_params": {"mask": "longformer", "mask_params": {"window": 2}},
             "dam_lambda": {"mask": "dam_s", "dam_lambda": 1e-3}, "mask_file": {"mask": "learned"}}
RERUN = {"mask": {"mask": "longformer"}, "mask_params": {"mask_params": {"window": 3}},
         "dam_lambda": {"dam_lambda": 2e-3}}


@pytest.mark.parametrize("change", ["nothing", "mask", "mask_params", "dam_lambda", "mask_file", "examples",
                                    "tokenizer"])
def test_a_rerun_resumes_only_what_it_would_train_again(tiny_pretraining_data, tmp_path, caplog, change):
    """A rerun over the same state dir resumes the checkpoint when it would train the same thing, and starts over
    when its mask, mask parameters or L1 weight changed, or its learned mask file, examples or tokenizer were
    rebuilt in place."""
    examples, tokenizer = (shutil.copytree(p, tmp_path / p.name) for p in tiny_pretraining_data)
    args = {"mask": "star", **FIRST_RUN.get(change, {})}
    if change == "mask_file":
        args["mask_file"] = learned_mask(tmp_path / "mask.safetensors", 0)
    recipe, state = {"max_steps": 4, "checkpoint_every": 2}, tmp_path / "run.state"
    train_in_process((examples, tokenizer), tmp_path / "first", recipe, state=state, **args)
    args.update(RERUN.get(change, {}))
    if change == "mask_file":
        learned_mask(args["mask_file"], 1)
    elif change in ("examples", "tokenizer"):
        rewritten_in_place(examples if change == "examples" else tokenizer)
    with caplog.at_level("INFO"):
        train_in_process((examples, tokenizer), tmp_path / "rerun", recipe, state=state, **args)
    resumed, started_over = "resumed from" in caplog.text, "starting over" in caplog.text
    assert (resumed, started_over) == ((True, False) if change == "nothing" else (False, True))


def test_a_stopped_then_crashed_search_resumes_to_an_uninterrupted_searchs_outputs(tiny_pretraining_data, tmp_path,
                                                                                    monkeypatch, caplog):
    """DAM_s, 8 updates, a log line every 3, a snapshot every 2, no periodic checkpoint. Run 1: SIGTERM during
    update 5 -> a checkpoint at 5, between two log lines (the sums of updates 4-5 travel in it), and exit. Run 2:
    resumes at 5, logs at 6 and 8, and dies before its outputs. Run 3: resumes at 5 again, keeps the log lines
    up to 5 only. Its outputs equal an uninterrupted search's: the log lines (but tokens/s), the snapshots,
    the weights; its progress bar starts at the step it resumed."""
    recipe = {"max_steps": 8, "log_every": 3, "snapshot_every": 2, "checkpoint_every": 100}
    search = dict(mask="dam_s", dam_lambda=1e-3)
    train_in_process(tiny_pretraining_data, tmp_path / "whole", recipe, **search)

    state = tmp_path / "cut.state"
    with monkeypatch.context() as signal_at_5, pytest.raises(preemption.Preempted) as stopped:
        signal_at_5.setenv("SPARSEBERT_SIGNAL_AT_STEP", "5")
        with caplog.at_level("WARNING"):
            train_in_process(tiny_pretraining_data, tmp_path / "cut", recipe, state=state, **search)
    assert [p.name for p in state.glob("step-*")] == ["step-00000005"] and stopped.value.step == 5
    assert f"stopped after step 5 with a checkpoint in {state}" in caplog.text
    preemption._received.clear()
    with monkeypatch.context() as crashing, pytest.raises(RuntimeError, match="went down"):
        crashing.setattr(pretrain, "_finish", node_down)
        train_in_process(tiny_pretraining_data, tmp_path / "cut", recipe, state=state, **search)
    assert [r["step"] for r in logged(state)] == [3, 6, 8]

    bars = []
    real_tqdm = pretrain.tqdm
    monkeypatch.setattr(pretrain, "tqdm", lambda steps, **kw: bars.append((steps, kw)) or real_tqdm(steps, **kw))
    train_in_process(tiny_pretraining_data, tmp_path / "cut", recipe, state=state, **search)
    assert bars == [(range(5, 8), {"initial": 5, "total": 8, "desc": "pretrain[dam_s]", "disable": False,
                                   "mininterval": 2.0})]

    untimed = lambda out: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in logged(out)]  # noqa: E731
    assert untimed(tmp_path / "cut") == untimed(tmp_path / "whole")
    a, b = (np.load(tmp_path / out / "snapshots.npz") for out in ("cut", "whole"))
    assert a["steps"].tolist() == b["steps"].tolist() == [0, 2, 4, 6, 8]
    assert np.array_equal(a["keep_prob"], b["keep_prob"])
    assert all(torch.equal(w, weights(tmp_path / "whole")[k]) for k, w in weights(tmp_path / "cut").items())
