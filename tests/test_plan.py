"""`sparsebert plan`: FLOPs and parameters by hand, job counts from the configs, GPU-hours from the measured MFU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sparsebert import cli, plan
from sparsebert.io import UserError
from sparsebert.modeling import SparseBertConfig, SparseBertForPreTraining

ROOT = Path(__file__).resolve().parents[1]
TINY = {"hidden_size": 4, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2}
BASE = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}


def test_step_flops_hand_computed():
    """d 4, f 8, 1 layer, V 10, B 2, T 3, P 1:
    layer: B T 2 (4 d^2 + 2 d f) + B 4 T^2 d = 12 (64 + 64) + 288 = 1824
    heads: B P 2 (d^2 + d V) + B 2 (d^2 + 2 d) = 4 (16 + 40) + 4 (16 + 8) = 320;  step: 3 (1824 + 320)"""
    assert plan.pretrain_step_flops(TINY, vocab=10, B=2, T=3, P=1) == 6432
    assert plan.encoder_flops(TINY, B=2, T=3) == 1824


@pytest.mark.parametrize("shape, vocab, positions", [(TINY, 10, 16), (BASE, 30522, 512)])
def test_parameter_count_is_the_models(shape, vocab, positions):
    with torch.device("meta"):  # no memory, no init: just the parameter shapes
        model = SparseBertForPreTraining(SparseBertConfig(vocab_size=vocab, max_position_embeddings=positions,
                                                          attention_mask_type="dense", mask_seq_len=8, **shape))
    assert plan.parameter_count(shape, vocab, positions) == sum(p.numel() for p in model.parameters())


def run_plan(capsys, config, gpus=8, gpu_json=None):
    args = ["plan", "--configfile", str(ROOT / "config" / config), "--gpus", str(gpus)]
    cli.main(args + (["--gpu-json", str(gpu_json)] if gpu_json else []))
    return capsys.readouterr().out


def row(out, rule):
    line = next(l for l in out.splitlines() if l.startswith(f"| {rule} "))
    return [c.strip() for c in line.strip("|").split("|")]


def test_paper_plan_pretrain_row_by_hand(capsys):
    """paper.yaml: 9 fixed masks x 1 seed; 7038 steps of 65,536 x 128 tokens with 20 masked positions, BERT-base
    (V 30,522); MFU 14 % (micro-batch 64, eager) of a 797 TFLOP/s peak; 8 GPUs per job, 8 GPUs: one at a time."""
    out = run_plan(capsys, "paper.yaml")
    assert "benchmarks/results/gpu_h200.json" in out and "NVIDIA H200" in out
    d, f, n, V, B, T, P = 768, 3072, 12, 30522, 65536, 128, 20
    per_token = n * (2 * (4 * d * d + 2 * d * f) + 4 * T * d)
    step = 3 * (B * T * per_token + B * P * 2 * (d * d + d * V) + B * 2 * (d * d + 2 * d))
    flops = 9 * 7038 * step
    gpu_hours = flops / (0.14 * 797e12) / 3600
    cells = row(out, "pretrain")
    assert cells[1:3] == ["9", "8"]
    assert float(cells[3].replace(",", "")) == pytest.approx(flops / 1e15, abs=0.5)
    assert cells[4] == "14 % (pretrain, micro-batch 64, eager (pretrain's: pretrain_loop not measured))"
    assert float(cells[5].replace(",", "")) == pytest.approx(gpu_hours, abs=0.5)  # ~723
    assert float(cells[6]) == pytest.approx(gpu_hours / 8, abs=0.05)  # 9 jobs one after another on 8 GPUs each
    assert "accumulation 128 on 8 GPU(s)" in cells[8]
    assert row(out, "dam_search")[1] == "8" and row(out, "pretrain_learned")[1] == "8"
    assert row(out, "finetune (squad: squad_v1, squad_v2)")[1] == str(25 * 2)


def test_smoke_plan_counts_its_jobs(capsys):
    """smoke.yaml: 3 masks, 1 DAM search, its retrain, 2 seeds, 2 proxy tasks; 2 corpus shards."""
    out = run_plan(capsys, "smoke.yaml", gpus=2)
    assert [row(out, r)[1] for r in ("corpus_shard", "examples_shard", "pretrain", "dam_search", "pretrain_learned")] \
        == ["2", "2", "6", "2", "2"]
    assert row(out, "finetune (proxy: proxy_single, proxy_qa)")[1] == str(5 * 2 * 2)
    assert "pretrain_loop not measured; measured at micro-batch 64, not 8" in row(out, "pretrain_learned")[4]
    assert "finetune_proxy / pretrain_loop not measured" in row(out, "finetune (proxy: proxy_single, proxy_qa)")[4]


def test_more_gpus_run_more_jobs_side_by_side(tmp_path, capsys):
    """16 GPUs: two 8-GPU pretrainings at a time, ceil(9 / 2) = 5 waves instead of 9."""
    one, two = (float(row(run_plan(capsys, "paper.yaml", g), "pretrain")[6]) for g in (8, 16))
    assert two == pytest.approx(one * 5 / 9, rel=1e-2)  # the cells have 3 significant digits


def test_mfu_is_taken_at_the_nearest_micro_batch_and_compile_setting():
    measured = json.loads((ROOT / "benchmarks" / "results" / "gpu_h200.json").read_text())
    entry, note = plan.pick_mfu(measured, "pretrain", 256, compiled=True)
    assert entry["mfu"] == 0.44 and note == "pretrain's: pretrain_loop not measured"
    entry, note = plan.pick_mfu(measured, "pretrain", 200, compiled=False)
    assert entry["mfu"] == 0.33 and "not 200" in note
    loop = {"job": "pretrain_loop", "micro_batch": 256, "compiled": True, "mfu": 0.5}
    entry, note = plan.pick_mfu({**measured, "mfu": measured["mfu"] + [loop]}, "pretrain", 64, compiled=False)
    assert entry is loop and note == "measured at micro-batch 256, not 64"  # the loop itself is preferred


def test_missing_measurements_are_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        run_plan(capsys, "paper.yaml", gpu_json=tmp_path / "none.json")
    assert stop.value.code == 2 and "none.json" in capsys.readouterr().err
    with pytest.raises(UserError, match="--gpus must be >= 1"):
        plan.run(type("A", (), {"gpus": 0, "configfile": ROOT / "config" / "paper.yaml", "gpu_json": None})())


def test_fp32_jobs_are_priced_at_the_fp32_peak(tmp_path, capsys):
    """paper.yaml fine-tunes SWAG in fp32 (the official script): 25 variants x 1 seed, 73,546 examples x 4 endings
    x 2 epochs at T 128, BERT-base encoder, MFU 14 % (the pretraining step's, standing in). With an fp32 peak of
    60 TFLOP/s in the measurements it is priced at that peak; without one, at bf16's, and the row says so."""
    measured = json.loads((ROOT / "benchmarks" / "results" / "gpu_h200.json").read_text())
    d, f, n, T = 768, 3072, 12, 128
    sequences = 73546 * 4 * 2
    flops = 3 * sequences * T * n * (2 * (4 * d * d + 2 * d * f) + 4 * T * d)
    swag = "finetune (swag: swag)"

    cells = row(run_plan(capsys, "paper.yaml"), swag)
    assert float(cells[5]) == pytest.approx(25 * flops / (0.14 * 797e12) / 3600, rel=1e-2)
    assert "fp32 priced at the bf16 peak: no fp32 peak measured, an underestimate" in cells[4]

    with_fp32 = tmp_path / "gpu.json"
    with_fp32.write_text(json.dumps({**measured, "matmul_peak_tflops": {"bf16": 797, "fp32": 60}}))
    out = run_plan(capsys, "paper.yaml", gpu_json=with_fp32)
    cells = row(out, swag)
    assert float(cells[5]) == pytest.approx(25 * flops / (0.14 * 60e12) / 3600, rel=1e-2)  # ~13x the bf16 price
    assert "peak" not in cells[4] and "797 bf16, 60 fp32" in out
    glue = row(out, "finetune (glue: mnli, qqp, qnli, sst2, cola, stsb, mrpc, rte)")
    assert "peak" not in glue[4]  # bf16 tasks keep the bf16 peak


def test_job_peak_maps_each_precision():
    measured = {"matmul_peak_tflops": {"bf16": 800, "fp32": 50}}
    assert plan.job_peak(measured, "auto") == (800e12, "") == plan.job_peak(measured, "bf16")
    assert plan.job_peak(measured, "fp32") == (50e12, "")
    peak, note = plan.job_peak({"matmul_peak_tflops": {"bf16": 800}}, "fp32")
    assert peak == 800e12 and "no fp32 peak measured" in note
