"""precision: auto | fp32 | bf16. Resolution per device and CPU flags; what stays fp32 under bf16 autocast; the
bf16 loss curve against fp32; exact resume after SIGKILL in bf16 (pretraining and fine-tuning); finite outputs
for fully masked rows. The engines' other tests pin fp32 (so that they mean the same on every CPU); these run
bf16 explicitly, which works everywhere (emulated, slower, on CPUs without bf16 instructions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from conftest import TINY_RECIPE
from test_finetune import assets, run_finetune, run_finetune_process  # noqa: F401 (assets is a fixture)
from test_pretrain import logged, run_pretrain, weights

from sparsebert import precision
from sparsebert.dam import l1_penalty
from sparsebert.io import UserError
from sparsebert.modeling import SparseBertConfig, SparseBertForPreTraining, SparseBertForSequenceClassification

# A logged loss (the mean over log_every steps) of the bf16 run may differ from fp32's by at most this much
# (nats). Measured on the tiny recipe: at most 0.003 over 40 steps (loss 6.7 -> 3.8); the step-to-step noise of
# the curve itself is ~0.1. benchmarks/mfu.py checks the same tolerance over the default recipe's 200 steps.
LOSS_TOLERANCE = 0.05


# ------------------------------------------------------------------------------------------ resolution


def test_auto_resolves_by_cpu_flags_and_says_why():
    amx = precision.resolve("auto", "cpu", flags=frozenset({"avx512f", "amx_tile", "amx_bf16"}), environ={})
    assert amx.dtype == torch.bfloat16 and amx.name == "bf16" and "amx_bf16" in amx.reason
    zen4 = precision.resolve("auto", "cpu", flags=frozenset({"avx512f", "avx512_bf16"}), environ={})
    assert zen4.name == "bf16" and "avx512_bf16" in zen4.line
    old = precision.resolve("auto", "cpu", flags=frozenset({"avx2", "fma"}))
    assert old.dtype == torch.float32 and "emulated" in old.reason
    assert old.record() == {"precision": "fp32", "precision_requested": "auto", "precision_reason": old.reason}
    assert isinstance(old.autocast(), type(precision.resolve("fp32", "cpu").autocast()))  # nullcontext


@pytest.mark.parametrize("environ, capped", [
    ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, "ONEDNN_MAX_CPU_ISA=AVX2"),
    ({"ONEDNN_MAX_CPU_ISA": "avx512_core"}, "ONEDNN_MAX_CPU_ISA=AVX512_CORE"),  # AVX-512 without its bf16
    ({"ONEDNN_MAX_CPU_ISA": "Avx512_Core_Vnni"}, "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI"),  # oneDNN ignores case
    ({"DNNL_MAX_CPU_ISA": "AVX2_VNNI"}, "DNNL_MAX_CPU_ISA=AVX2_VNNI"),  # oneDNN's older name of the variable
    ({"ONEDNN_MAX_CPU_ISA": "", "DNNL_MAX_CPU_ISA": "AVX512_CORE"}, "DNNL_MAX_CPU_ISA=AVX512_CORE"),  # empty: next
    ({"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "ALL"}, "ONEDNN_MAX_CPU_ISA=AVX2"),  # the new name wins
    ({"ATEN_CPU_CAPABILITY": "avx2"}, "ATEN_CPU_CAPABILITY=avx2"),
    ({"ATEN_CPU_CAPABILITY": "default"}, "ATEN_CPU_CAPABILITY=default"),
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, None),
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX", "ATEN_CPU_CAPABILITY": "avx512"}, None),
    ({"ONEDNN_MAX_CPU_ISA": "ALL"}, None),
    ({"ONEDNN_MAX_CPU_ISA": "ALL", "DNNL_MAX_CPU_ISA": "AVX2"}, None),  # the new name wins
    ({"ONEDNN_MAX_CPU_ISA": "AVX2_FOO"}, None),  # a name oneDNN does not know: ignored, no cap
    ({"ONEDNN_MAX_CPU_ISA": " AVX2"}, None),  # oneDNN takes spaces literally: not a name it knows
    ({"ATEN_CPU_CAPABILITY": "AVX2"}, None),  # ATen matches exactly: ignored (with a warning)
    ({"ATEN_CPU_CAPABILITY": " default"}, None),
])
def test_an_isa_cap_in_the_environment_turns_auto_to_fp32(environ, capped):
    """ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY below bf16 make bf16 emulated even on a CPU that has it (how an
    AVX2-only machine is approximated on a newer one): auto must pick fp32 there, and say which variable."""
    zen4 = frozenset({"avx512f", "avx512_bf16"})
    p = precision.resolve("auto", "cpu", flags=zen4, environ=environ)
    assert precision.isa_cap(environ) == capped
    if capped:
        assert p.name == "fp32" and capped in p.line and "emulated" in p.line
        assert precision.cpu_bf16_flags(zen4, environ) == []
    else:
        assert p.name == ("bf16" if torch.backends.mkldnn.is_available() else "fp32")
        assert precision.cpu_bf16_flags(zen4, environ) == ["avx512_bf16"]


def test_explicit_choices_are_honoured():
    assert precision.resolve("fp32", "cpu", flags=frozenset({"amx_bf16"})).dtype == torch.float32
    forced = precision.resolve("bf16", "cpu", flags=frozenset({"avx2"}))
    assert forced.dtype == torch.bfloat16 and "emulated" in forced.line  # honoured, and the line says the cost
    with pytest.raises(UserError, match="unknown precision 'fp16'; valid: auto, fp32, bf16"):
        precision.resolve("fp16", "cpu")


def test_auto_on_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert precision.resolve("auto", "cuda:0").name == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert precision.resolve("auto", "cuda").name == "fp32"



def test_onednn_default_isa_is_no_cap():
    """oneDNN's `DEFAULT` (any case) means "no cap", like `ALL`: it must not turn auto to fp32 on a bf16 CPU."""
    assert precision.isa_cap({"ONEDNN_MAX_CPU_ISA": "default"}) is None
    assert precision.isa_cap({"ONEDNN_MAX_CPU_ISA": "Default"}) is None
    assert precision.isa_cap({}) is None  # neither variable set: no cap


NATIVE_BF16_CPU = "avx512_bf16" in precision.cpu_flags() or "amx_bf16" in precision.cpu_flags()
# What the libraries themselves make of a variable, in a fresh process (they read it when torch loads): does
# oneDNN's bf16 matmul run a bf16 ISA (its verbose mode names the ISA of the first primitive it creates), and
# which capability does ATen dispatch to.
LIBRARY_PROBE = """
import torch
a = torch.randn(32, 32, dtype=torch.bfloat16)
torch.nn.functional.linear(a, a)
print("aten", torch.backends.cpu.get_cpu_capability())
"""


@pytest.mark.skipif(not NATIVE_BF16_CPU, reason="a cap only changes anything on a CPU with native bf16")
@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")
@pytest.mark.parametrize("environ", [
    {"ONEDNN_MAX_CPU_ISA": "", "DNNL_MAX_CPU_ISA": "AVX512_CORE"},
    {"ONEDNN_MAX_CPU_ISA": "ALL", "DNNL_MAX_CPU_ISA": "AVX2"},
    {"ONEDNN_MAX_CPU_ISA": "avx512_core_vnni"},
    {"ONEDNN_MAX_CPU_ISA": "AVX2_FOO"},
    {"ONEDNN_MAX_CPU_ISA": " AVX2"},
    {"ATEN_CPU_CAPABILITY": "avx2"},
    {"ATEN_CPU_CAPABILITY": "AVX2"},
    {"ATEN_CPU_CAPABILITY": " default"},
])
def test_isa_cap_reads_the_variables_as_onednn_and_aten_do(environ):
    """The reference is the libraries themselves: a cap is reported exactly where oneDNN's bf16 matmul leaves
    its bf16 ISA or ATen dispatches below AVX-512, on this CPU (which has native bf16)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
                                                          "ATEN_CPU_CAPABILITY")}
    env.update(environ, ONEDNN_VERBOSE="1")
    out = subprocess.run([sys.executable, "-c", LIBRARY_PROBE], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    isa_lines = [line for line in out if line.startswith("onednn_verbose") and ",isa:" in line]
    onednn_capped = not any("bfloat16" in line for line in isa_lines)
    aten_capped = out[-1] in ("aten DEFAULT", "aten AVX2")
    cap = precision.isa_cap(environ)
    assert (cap is not None) == (onednn_capped or aten_capped), (environ, out)
    if cap:
        assert cap.startswith("ATEN" if aten_capped else "ONEDNN_MAX_CPU_ISA" if environ.get("ONEDNN_MAX_CPU_ISA")
                              else "DNNL")


def test_resolved_lines_and_records_say_what_was_asked_and_why(monkeypatch):
    """The log line and summary.json's fields are how a run tells what arithmetic produced its numbers and
    why auto chose it: requested, device and reason must be the ones asked for / decided (texts by hand)."""
    monkeypatch.setattr(precision.platform, "machine", lambda: "testarch")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    fp32 = precision.resolve("fp32", "cpu", flags=frozenset({"amx_bf16"}), environ={})
    assert fp32.device_type == "cpu" and fp32.line == "precision: fp32 (fp32: as requested)"
    assert fp32.record() == {"precision": "fp32", "precision_requested": "fp32", "precision_reason": "as requested"}
    both = precision.resolve("auto", "cpu", flags=frozenset({"avx512f", "avx512_bf16", "amx_bf16"}), environ={})
    assert both.device_type == "cpu" and both.line == "precision: bf16 (auto: CPU flags amx_bf16 avx512_bf16)"
    old = precision.resolve("auto", "cpu", flags=frozenset({"avx2"}), environ={})
    assert old.line == ("precision: fp32 (auto: this CPU (testarch) has none of the flags amx_bf16 avx512_bf16: "
                        "bf16 would be emulated, slower than fp32)")
    forced = precision.resolve("bf16", "cpu", flags=frozenset({"avx2"}), environ={})
    assert forced.record()["precision_requested"] == "bf16" and forced.line.startswith(
        "precision: bf16 (bf16: as requested; this CPU (testarch) has none of the flags")


def test_auto_bf16_autocasts_on_the_resolved_device(monkeypatch):
    """auto's bf16 must carry its device into autocast: a CPU matmul inside it comes out bf16."""
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    p = precision.resolve("auto", "cpu", flags=frozenset({"avx512_bf16"}), environ={})
    with p.autocast():
        y = torch.ones(2, 3) @ torch.ones(3, 2)
    assert y.dtype == torch.bfloat16


def test_autocast_asks_for_bf16_not_the_devices_default():
    """torch.autocast's default dtype is fp16 on CUDA (bf16 only on CPU): the context must name bf16 itself, or
    a GPU run would train in fp16 without loss scaling. Checked on the context object (no GPU needed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available ... Disabling autocast" on CPU-only machines
        ctx = precision.Precision("auto", torch.bfloat16, "cuda", "test").autocast()
    assert ctx.fast_dtype == torch.bfloat16


def test_no_onednn_keeps_auto_fp32_and_says_so(monkeypatch):
    """A bf16 CPU under a torch without oneDNN: auto is fp32, and the line names the missing oneDNN."""
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    p = precision.resolve("auto", "cpu", flags=frozenset({"avx512_bf16"}), environ={})
    assert p.line == "precision: fp32 (auto: this torch build has no oneDNN: bf16 matmuls would be slow)"


@pytest.mark.parametrize("device", ["mps", "meta"])
def test_auto_is_fp32_on_devices_without_a_bf16_rule(device):
    """Devices other than cpu/cuda have no rule: auto stays fp32 and says which device."""
    p = precision.resolve("auto", device, flags=frozenset({"amx_bf16"}), environ={})
    assert p.dtype == torch.float32 and p.line == f"precision: fp32 (auto: no bf16 autocast rule for device '{device}')"


def test_auto_on_gpus_native_bf16_only(monkeypatch):
    """A pre-Ampere GPU (Volta) supports bf16 only by emulation (torch's including_emulation=True says yes):
    auto must ask for native support and pick fp32 there; the lines say which case it was."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bool(including_emulation))
    volta = precision.resolve("auto", "cuda")
    assert volta.line == "precision: fp32 (auto: this GPU has no native bf16 (pre-Ampere))"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert precision.resolve("auto", "cuda").line == "precision: bf16 (auto: this GPU computes bf16 natively)"

def test_this_cpus_flags_decide_auto():
    p = precision.resolve("auto", "cpu")
    assert (p.name == "bf16") == (bool(precision.cpu_bf16_flags()) and torch.backends.mkldnn.is_available())


# ------------------------------------------------------------------------------------------ what stays fp32


def tiny_config(kind="dense", **kw):
    return SparseBertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=32, attention_mask_type=kind, **kw)


def padded_batch(B=2, T=32, pad_from=10):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 64, (B, T), generator=g)
    attention_mask = torch.ones(B, T, dtype=torch.long)
    attention_mask[0, pad_from:] = 0
    return dict(input_ids=ids, attention_mask=attention_mask, token_type_ids=torch.zeros(B, T, dtype=torch.long))


def test_bf16_autocast_keeps_dam_probabilities_l1_and_losses_in_fp32():
    torch.manual_seed(0)
    model = SparseBertForPreTraining(tiny_config("dam_s"))
    batch = dict(padded_batch(), masked_lm_positions=torch.tensor([[1, 2], [3, 4]]),
                 masked_lm_ids=torch.tensor([[5, 6], [7, 8]]), next_sentence_label=torch.tensor([0, 1]))
    with precision.resolve("bf16", "cpu").autocast():
        out = model(**batch)
        penalty = l1_penalty(out.dam_mask, 1e-3)
        probs = model.bert.dam.keep_probabilities()
    assert out.prediction_logits.dtype == torch.bfloat16  # autocast did run the matmuls in bf16 ...
    assert out.dam_mask.dtype == probs.dtype == penalty.dtype == torch.float32  # ... but not these
    assert out.loss.dtype == out.mlm_loss.dtype == out.nsp_loss.dtype == torch.float32
    (out.loss + penalty).backward()
    assert model.bert.dam.logits.grad.dtype == torch.float32 and model.bert.dam.logits.grad.abs().sum() > 0


def test_bf16_fully_masked_rows_stay_finite():
    """Padded queries of a blockwise mask see only padded keys: rows with no allowed key at all."""
    torch.manual_seed(0)
    model = SparseBertForSequenceClassification(tiny_config("blockwise", attention_mask_params={"block": 4}))
    model.train()
    with precision.resolve("bf16", "cpu").autocast():
        hidden = model.bert(**padded_batch()).last_hidden_state
        out = model(**padded_batch(), labels=torch.tensor([0, 1]))
    assert torch.isfinite(hidden).all()
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ------------------------------------------------------------------------------------------ engines in bf16


@pytest.mark.slow
def test_bf16_loss_curve_stays_within_tolerance_of_fp32(tiny_pretraining_data, tmp_path):
    curves = {}
    for name in ("fp32", "bf16"):
        out = tmp_path / name
        run_pretrain(tiny_pretraining_data, out, recipe={"precision": name, "max_steps": 40})
        curves[name] = [r["loss"] for r in logged(out)]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["precision"] == name and summary["precision_requested"] == name
    diffs = [abs(a - b) for a, b in zip(curves["fp32"], curves["bf16"])]
    assert len(diffs) == 8 and max(diffs) <= LOSS_TOLERANCE, (curves, diffs)
    assert curves["bf16"] != curves["fp32"], "identical curves: the bf16 run did not compute in bf16"
    assert curves["bf16"][-1] < curves["bf16"][0] - 0.5  # and it learns


@pytest.mark.slow
@pytest.mark.parametrize("mask,extra", [("star", ()), ("dam_s", ("--dam-lambda", "1e-3"))])
def test_bf16_sigkill_then_rerun_gives_bit_identical_weights(tiny_pretraining_data, tmp_path, mask, extra):
    recipe = {"max_steps": 20, "checkpoint_every": 10, "precision": "bf16",
              "model": {**TINY_RECIPE["model"], "hidden_dropout_prob": 0.1}}  # dropout RNG must resume too
    command = "dam-search" if mask == "dam_s" else "pretrain"
    run_pretrain(tiny_pretraining_data, tmp_path / "whole", mask=mask, recipe=recipe, extra=extra, command=command)
    cut = tmp_path / "cut"
    killed = run_pretrain(tiny_pretraining_data, cut, mask=mask, recipe=recipe, extra=extra, command=command,
                          env={"SPARSEBERT_KILL_AT_STEP": "10"}, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert "precision: bf16" in killed.stderr  # the log line
    run_pretrain(tiny_pretraining_data, cut, mask=mask, recipe=recipe, extra=extra, command=command)
    a, b = weights(tmp_path / "whole"), weights(cut)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in logged(tmp_path / "whole")] == [r["loss"] for r in logged(cut)]


@pytest.mark.slow
def test_bf16_finetune_sigkill_then_rerun_is_bit_identical(assets, tmp_path):  # noqa: F811
    recipe = {"epochs": 3, "precision": "bf16"}
    assert run_finetune(assets, "sst2", tmp_path / "a", recipe) == 0
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["precision"] == "bf16" and metrics["params"]["precision"] == "bf16"
    killed = run_finetune_process(assets, "sst2", tmp_path / "c", recipe, env={"SPARSEBERT_KILL_AT_STEP": "2"})
    assert killed.returncode == -9 and not (tmp_path / "c" / "metrics.json").exists()
    assert run_finetune(assets, "sst2", tmp_path / "c", recipe) == 0
    losses = [[json.loads(l)["loss"] for l in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in "ac"]
    assert losses[0] == losses[1]
    assert json.loads((tmp_path / "a" / "predictions.json").read_text()) == \
        json.loads((tmp_path / "c" / "predictions.json").read_text())
