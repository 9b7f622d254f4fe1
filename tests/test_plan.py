"""`sparsebert plan`: FLOPs and parameters by hand, job counts from the configs, GPU-hours from the measured MFU."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
import yaml

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
    # the DAM search, measured at micro-batch 256 only (30 %, dense 33 % beside it), runs at 64: the pretraining's
    # 14 % there x 30 / 33
    dam = row(out, "dam_search")
    assert float(dam[5].replace(",", "")) == pytest.approx(8 / 9 * flops / (0.30 * 0.14 / 0.33 * 797e12) / 3600,
                                                           abs=0.5)  # ~707, not the 300 of the 30 % at 256
    assert dam[4] == ("13 % (pretrain, micro-batch 64, eager (x 0.909, the DAM search's bare step / the "
                      "pretraining's at micro-batch 256, eager; pretrain's: pretrain_loop not measured))")


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


def test_a_kind_measured_at_another_micro_batch_only_is_scaled_by_the_step_it_extends():
    """A fine-tuning kind measured at 256 only, the job at 64: pretrain's change from 256 to 64 (eager: 0.14 /
    0.33) scales it; where the reference lacks one of the two micro-batches, the nearest entry as it is."""
    measured = json.loads((ROOT / "benchmarks" / "results" / "gpu_h200.json").read_text())
    glue_256 = {"job": "finetune_glue", "micro_batch": 256, "compiled": False, "mfu": 0.5}
    with_glue = {**measured, "mfu": measured["mfu"] + [glue_256]}
    entry, note = plan.pick_mfu(with_glue, "finetune_glue", 64, compiled=False)
    assert entry["mfu"] == pytest.approx(0.5 * 0.14 / 0.33) and entry["micro_batch"] == 64
    assert entry["job"] == "finetune_glue" and glue_256["micro_batch"] == 256  # a copy
    assert note == "measured at micro-batch 256, scaled to 64 by pretrain's MFU at 64 / 256"
    entry, note = plan.pick_mfu(with_glue, "finetune_glue", 128, compiled=False)  # pretrain has no 128
    assert entry is glue_256 and note == "measured at micro-batch 256, not 128"
    # the first kind after the job's in its order that was measured at both scales it: the loop before the step
    loop = [{"job": "pretrain_loop", "micro_batch": b, "compiled": False, "mfu": m} for b, m in ((64, 0.2), (256, 0.4))]
    entry, note = plan.pick_mfu({**with_glue, "mfu": with_glue["mfu"] + loop}, "finetune_glue", 64, compiled=False)
    assert entry["mfu"] == pytest.approx(0.5 * 0.2 / 0.4)
    assert note == "measured at micro-batch 256, scaled to 64 by pretrain_loop's MFU at 64 / 256"


def test_the_dam_search_is_priced_as_the_pretraining_times_the_bare_steps_ratio():
    """The committed file has the DAM_s step at 256 eager (30 %) beside dense's (33 %): a search is priced at
    the pretraining's price for its own micro-batch x 30 / 33, so it costs 1.1x the pretraining whatever prices
    the pretraining (the bare step, or the training loop once measured)."""
    measured = json.loads((ROOT / "benchmarks" / "results" / "gpu_h200.json").read_text())
    ratio_note = "x 0.909, the DAM search's bare step / the pretraining's at micro-batch 256, eager"
    entry, note = plan.pick_mfu(measured, "dam_search", 64, compiled=False)
    assert entry["mfu"] == pytest.approx(0.14 * 0.30 / 0.33)
    assert (entry["job"], entry["micro_batch"], entry["compiled"]) == ("pretrain", 64, False)
    assert note == f"{ratio_note}; pretrain's: pretrain_loop not measured"
    assert next(e for e in measured["mfu"] if e["job"] == "pretrain" and e["micro_batch"] == 64)["mfu"] == 0.14
    # at 128 the pretraining's nearest (64: equally near, the smaller) prices it
    entry, note = plan.pick_mfu(measured, "dam_search", 128, compiled=False)
    assert entry["mfu"] == pytest.approx(0.14 * 0.30 / 0.33) and "measured at micro-batch 64, not 128" in note
    # the training loop measured: it prices the pretraining, and so the search (0.2 x 30 / 33, not the bare 0.30
    # x 0.2 / 0.4 = 0.15 it was priced at before, below the pretraining's 0.2)
    loop = [{"job": "pretrain_loop", "micro_batch": b, "compiled": False, "mfu": m} for b, m in ((64, 0.2), (256, 0.4))]
    entry, note = plan.pick_mfu({**measured, "mfu": measured["mfu"] + loop}, "dam_search", 64, compiled=False)
    assert entry["mfu"] == pytest.approx(0.2 * 0.30 / 0.33) and entry["job"] == "pretrain_loop"
    assert note == ratio_note
    # a compiled search takes the compiled pair's ratio (0.33 / 0.44); the price, the nearest pretraining entry
    compiled_dam = {"job": "dam_search", "micro_batch": 256, "compiled": True, "mfu": 0.33}
    entry, note = plan.pick_mfu({**measured, "mfu": [compiled_dam] + measured["mfu"]}, "dam_search", 256, True)
    assert entry["mfu"] == pytest.approx(0.44 * 0.33 / 0.44)
    assert note == ("x 0.75, the DAM search's bare step / the pretraining's at micro-batch 256, compiled; "
                    "pretrain's: pretrain_loop not measured")
    # no bare pretraining step beside the search's: the search's own entry, as any kind
    lone = {"job": "dam_search", "micro_batch": 128, "compiled": False, "mfu": 0.25}
    alone = {**measured, "mfu": [e for e in measured["mfu"] if e["job"] != "dam_search"] + [lone]}
    entry, note = plan.pick_mfu(alone, "dam_search", 64, compiled=False)
    assert entry is lone and note == "measured at micro-batch 128, not 64"


@pytest.mark.parametrize("order", [1, -1])
def test_between_two_equally_near_micro_batches_the_smaller_prices_a_job(order):
    """GLUE's micro-batch 128 lies as near 64 (14 %) as 256 (33 %): the smaller, whatever the file's order."""
    measured = json.loads((ROOT / "benchmarks" / "results" / "gpu_h200.json").read_text())
    entry, note = plan.pick_mfu({**measured, "mfu": measured["mfu"][::order]}, "finetune_glue", 128, False)
    assert (entry["job"], entry["micro_batch"], entry["mfu"]) == ("pretrain", 64, 0.14)
    assert note == "pretrain's: finetune_glue / pretrain_loop not measured; measured at micro-batch 64, not 128"


def test_missing_measurements_are_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        run_plan(capsys, "paper.yaml", gpu_json=tmp_path / "none.json")
    assert stop.value.code == 2 and "none.json" in capsys.readouterr().err
    with pytest.raises(UserError, match="--gpus must be >= 1"):
        plan.run(type("A", (), {"gpus": 0, "configfile": ROOT / "config" / "paper.yaml", "gpu_json": None})())


def test_fp32_jobs_are_priced_at_the_fp32_peak(tmp_path, capsys):
    """paper.yaml fine-tunes SWAG in fp32 (the official script): 25 variants x 1 seed, 73,546 examples x 4 endings
    x 2 epochs at T 128, BERT-base encoder, MFU 33 % (the pretraining step's, standing in, at micro-batch 256: the
    nearest measured to SWAG's 96 examples x 4 endings = 384 sequences). With an fp32 peak of
    60 TFLOP/s in the measurements it is priced at that peak; without one, at bf16's, and the row says so."""
    measured = json.loads((ROOT / "benchmarks" / "results" / "gpu_h200.json").read_text())
    d, f, n, T = 768, 3072, 12, 128
    sequences = 73546 * 4 * 2
    flops = 3 * sequences * T * n * (2 * (4 * d * d + 2 * d * f) + 4 * T * d)
    swag = "finetune (swag: swag)"

    cells = row(run_plan(capsys, "paper.yaml"), swag)
    assert float(cells[5]) == pytest.approx(25 * flops / (0.33 * 797e12) / 3600, rel=1e-2)
    assert "measured at micro-batch 256, not 384" in cells[4]
    assert "fp32 priced at the bf16 peak: no fp32 peak measured, an underestimate" in cells[4]

    with_fp32 = tmp_path / "gpu.json"
    with_fp32.write_text(json.dumps({**measured, "matmul_peak_tflops": {"bf16": 797, "fp32": 60}}))
    out = run_plan(capsys, "paper.yaml", gpu_json=with_fp32)
    cells = row(out, swag)
    assert float(cells[5]) == pytest.approx(25 * flops / (0.33 * 60e12) / 3600, rel=1e-2)  # ~13x the bf16 price
    assert "peak" not in cells[4] and "797 bf16, 60 fp32" in out
    glue = row(out, "finetune (glue: mnli, qqp, qnli, sst2, cola, stsb, mrpc, rte)")
    assert "peak" not in glue[4]  # bf16 tasks keep the bf16 peak


def test_job_peak_maps_each_precision():
    measured = {"matmul_peak_tflops": {"bf16": 800, "fp32": 50}}
    assert plan.job_peak(measured, "auto") == (800e12, "") == plan.job_peak(measured, "bf16")
    assert plan.job_peak(measured, "fp32") == (50e12, "")
    peak, note = plan.job_peak({"matmul_peak_tflops": {"bf16": 800}}, "fp32")
    assert peak == 800e12 and "no fp32 peak measured" in note


# -------------------------------------------------------------------------------------------------------
# A hand-made config and measurements, every value of their plan worked out by hand from the module docstring

# Model d 4, f 8, 1 layer, V 100, pretraining T 16 and P 3, 20 positions: 2 fixed masks + 1 DAM search + its
# retrain = 4 variants, 2 seeds; local copies of GLUE tasks (their hub sizes) cut to 50 training examples
# (max_train_examples) and a proxy task; 4 GPUs.
TINY_CONFIG = {
    "scale": "tiny", "seeds": [0, 1],
    "corpus": {"source": "hub", "shards": 4}, "tokenizer": {"vocab_size": 100},
    "examples": {"max_seq_length": 16, "max_predictions_per_seq": 3}, "proxy_tasks": {"train_examples": 50},
    "pretrain": {"model": {**TINY, "max_position_embeddings": 20}, "batch_size": 8, "max_steps": 10,
                 "compile": True, "precision": "fp32"},
    "dam_search": {"max_steps": 5, "compile": False, "precision": "bf16"},
    "masks": {"dense": {}, "no_diagonal": {}}, "dam": {"dam_s": [0.001]}, "dam_retrain": True,
    "tasks": {"names": ["mrpc", "rte", "proxy_single"], "source": "local", "local_dir": "tasks"},
    "finetune": {"max_seq_length": 16, "batch_size": 8, "epochs": 2, "max_train_examples": 50,
                 "per_task": {"rte": {"epochs": 1},
                              "proxy_single": {"max_train_examples": 30, "precision": "fp32", "batch_size": 16}}},
    "resources": {"pretrain": {"gpu": 2}, "pretrain_learned": {"gpu": 8}, "finetune": {"gpu": 1}},
}
# Listed so that a lost compile tie-break shows: the entry that must NOT be picked comes first.
TINY_MEASURED = {
    "gpu": "Test GPU", "torch": "0.0", "date": "2000-01-01", "matmul_peak_tflops": {"bf16": 100, "fp32": 10},
    "mfu": [{"job": "pretrain", "micro_batch": 4, "compiled": False, "mfu": 0.5},
            {"job": "pretrain", "micro_batch": 4, "compiled": True, "mfu": 0.6},
            {"job": "dam_search", "micro_batch": 16, "compiled": False, "mfu": 0.4},
            {"job": "finetune_glue", "micro_batch": 4, "compiled": True, "mfu": 0.75},
            {"job": "finetune_glue", "micro_batch": 4, "compiled": False, "mfu": 0.5}]}
NO_FP32 = {**TINY_MEASURED, "matmul_peak_tflops": {"bf16": 100}}
FP32_NOTE = "fp32 priced at the bf16 peak: no fp32 peak measured, an underestimate"
# parameter_count of the tiny model, V 100, 20 positions (TINY_CONFIG's max_position_embeddings > T 16):
# embeddings 100*4 + 20*4 + 2*4 + 2*4 = 496; layer 4 (16 + 4) + 8 + (32 + 8) + (32 + 4) + 8 = 172;
# heads (16 + 4) + (16 + 4 + 8 + 100) + (8 + 2) = 158; total 826.
TINY_PARAMS = 826


def test_tiny_plan_training_rows_by_hand():
    """Every value of the three pretraining rows of TINY_CONFIG on 4 GPUs.
    Step (B 8, T 16, P 3): encoder 8*16*2 (4*16 + 2*4*8) + 8*4*16^2*4 = 32768 + 32768 = 65536;
    heads 8*3*2 (16 + 4*100) + 8*2 (16 + 8) = 19968 + 384 = 20352; step 3 (65536 + 20352) = 257664.
    pretrain: 2 masks x 2 seeds = 4 jobs of 10 steps, fp32 (10 TFLOP/s), 2 GPUs each (micro-batch 8 // 2 = 4,
      compiled: MFU 0.6), 4 // 2 = 2 jobs at a time: 2 waves.
    dam_search: dam_search's overrides (5 steps, bf16 100 TFLOP/s, eager), no resources: 1 GPU, micro-batch 8,
      nearest measurement micro-batch 16 (MFU 0.4; no pretraining step measured beside it); 2 jobs, 4 at a time:
      1 wave.
    pretrain_learned: 1 retrain x 2 seeds, gpu 8 lowered to the run's 4 (micro-batch 8 // 4 = 2, MFU 0.6 of
      micro-batch 4, compiled), 4 // 4 = 1 at a time: 2 waves.
    Disk per job: 826 params x (4 + 2 x 12) bytes (the model, and the checkpoints pretraining keeps by default);
    while they run, one checkpoint more (826 x 12) per running job (a save writes the newest first)."""
    pretrain_job, dam_job = 10 * 257664, 5 * 257664
    pretrain_h, dam_h = pretrain_job / (0.6 * 10e12) / 3600, dam_job / (0.4 * 100e12) / 3600
    disk, saving = TINY_PARAMS * 28, TINY_PARAMS * 12
    not_loop = "pretrain's: pretrain_loop not measured"
    pretrain, dam_search, learned = plan.training_rows(TINY_CONFIG, 4, TINY_MEASURED)
    assert pretrain == pytest.approx({
        "rule": "pretrain", "jobs": 4, "gpus_per_job": 2, "flops": 4 * pretrain_job, "mfu": 0.6,
        "mfu_from": f"pretrain, micro-batch 4, compiled ({not_loop})", "gpu_hours": 4 * pretrain_h,
        "wall_hours": 2 * pretrain_h / 2, "disk_bytes": 4 * disk, "running_disk_bytes": 2 * saving,
        "what": "10 steps x 8 x 16 tokens, 0.0M parameters; micro-batch 4, accumulation 1 on 2 GPU(s)"})
    assert dam_search == pytest.approx({
        "rule": "dam_search", "jobs": 2, "gpus_per_job": 1, "flops": 2 * dam_job, "mfu": 0.4,
        "mfu_from": "dam_search, micro-batch 16, eager (measured at micro-batch 16, not 8)",
        "gpu_hours": 2 * dam_h, "wall_hours": dam_h, "disk_bytes": 2 * disk, "running_disk_bytes": 2 * saving,
        "what": "5 steps x 8 x 16 tokens, 0.0M parameters; micro-batch 8, accumulation 1 on 1 GPU(s)"})
    assert learned == pytest.approx({
        "rule": "pretrain_learned", "jobs": 2, "gpus_per_job": 4, "flops": 2 * pretrain_job, "mfu": 0.6,
        "mfu_from": f"pretrain, micro-batch 4, compiled ({not_loop}; measured at micro-batch 4, not 2)",
        "gpu_hours": 2 * pretrain_h, "wall_hours": 2 * pretrain_h / 4, "disk_bytes": 2 * disk,
        "running_disk_bytes": saving,
        "what": "10 steps x 8 x 16 tokens, 0.0M parameters; micro-batch 2, accumulation 1 on 4 GPU(s)"})
    # Without an fp32 peak the fp32 pretraining says so after the measurement's own note.
    assert plan.training_rows(TINY_CONFIG, 4, NO_FP32)[0]["mfu_from"] == \
        f"pretrain, micro-batch 4, compiled ({not_loop}; {FP32_NOTE})"


def test_tiny_plan_finetune_rows_by_hand():
    """The fine-tuning rows of TINY_CONFIG on 4 GPUs: 4 variants x 2 seeds = 8 runs, one GPU per job (a
    fine-tuning is one process), 4 jobs at a time. Training FLOPs per sequence at T 16: 3 (16*2 (4*16 + 2*4*8)
    + 4*16^2*4) = 3 * 8192 = 24576.
    glue (mrpc, rte; max_train_examples 50 of the hub's 3,668 / 2,490): mrpc 50 x 2 epochs = 100,
      rte 50 x 1 epoch = 50 sequences; 16 jobs (4 waves) of (150 / 2) x 24576 FLOPs at bf16 (100 TFLOP/s),
      micro-batch 8 priced by finetune_glue's eager micro-batch 4 (MFU 0.5).
    proxy (proxy_single): min(50, 30) x 2 epochs = 60 sequences; 8 jobs (2 waves) at fp32 (10 TFLOP/s);
      micro-batch 16 priced by the pretraining's eager micro-batch 4 (MFU 0.5).
    Disk: none left behind (fine-tuning removes its checkpoints when it finishes); while they run, 826 params x
    (2 + 1 while saving) checkpoints x 12 bytes for each of the 4 jobs at a time."""
    glue_job, proxy_job = 150 / 2 * 24576, 60 * 24576
    glue_h, proxy_h = glue_job / (0.5 * 100e12) / 3600, proxy_job / (0.5 * 10e12) / 3600
    running = 4 * TINY_PARAMS * 3 * 12
    proxy_note = "pretrain's: finetune_proxy / pretrain_loop not measured; measured at micro-batch 4, not 16"
    glue, proxy = plan.finetune_rows(TINY_CONFIG, 4, TINY_MEASURED)
    assert glue == pytest.approx({
        "rule": "finetune (glue: mrpc, rte)", "jobs": 16, "gpus_per_job": 1, "flops": 16 * glue_job, "mfu": 0.5,
        "mfu_from": "finetune_glue, micro-batch 4, eager (measured at micro-batch 4, not 8)",
        "gpu_hours": 16 * glue_h, "wall_hours": 4 * glue_h, "disk_bytes": 0, "running_disk_bytes": running,
        "what": "75 sequences per job on average"})
    assert proxy == pytest.approx({
        "rule": "finetune (proxy: proxy_single)", "jobs": 8, "gpus_per_job": 1, "flops": 8 * proxy_job,
        "mfu": 0.5, "mfu_from": f"pretrain, micro-batch 4, eager ({proxy_note})", "gpu_hours": 8 * proxy_h,
        "wall_hours": 2 * proxy_h, "disk_bytes": 0, "running_disk_bytes": running,
        "what": "60 sequences per job on average"})
    assert plan.finetune_rows(TINY_CONFIG, 4, NO_FP32)[1]["mfu_from"] == \
        f"pretrain, micro-batch 4, eager ({proxy_note}; {FP32_NOTE})"



def test_per_model_fine_tuning_counts_the_dags_jobs():
    """`tasks.jobs: per_model` (rule finetune_model): one job per (variant, seed) fine-tunes every task in turn,
    so TINY_CONFIG's DAG has 4 variants x 2 seeds = 8 fine-tuning jobs, not 8 x 3 tasks = 24 (config/config.yaml:
    3 masks + 1 DAM run, 3 seeds = 12, not 60). One row; FLOPs as per task (8 x (150 + 60) sequences x 24576);
    glue measured at MFU 0.25 here, proxy 0.5: in units of 24576 / 1e12 s a job is glue 150 / 100 = 1.5 and
    proxy 60 / 10 = 6 at peak, 1.5 / 0.25 + 6 / 0.5 = 18 on the GPU (MFU 7.5 / 18 = 5/12). One GPU per job, 4
    at a time: 2 waves of 18 units. Disk: nothing left behind; a running job holds its 3 tasks' checkpoints until
    the last is done, and one more while it saves ((3 x 2 + 1) x 826 x 12 bytes), 4 jobs at a time."""
    config = {**TINY_CONFIG, "tasks": {**TINY_CONFIG["tasks"], "jobs": "per_model"}}
    measured = {**TINY_MEASURED, "mfu": [
        {**e, "mfu": 0.25} if (e["job"], e["compiled"]) == ("finetune_glue", False) else e for e in TINY_MEASURED["mfu"]]}
    unit_h = 24576 / 1e12 / 3600
    proxy_note = "pretrain's: finetune_proxy / pretrain_loop not measured; measured at micro-batch 4, not 16"
    (row,) = plan.finetune_rows(config, 4, measured)
    assert row == pytest.approx({
        "rule": "finetune_model (glue: mrpc, rte; proxy: proxy_single)", "jobs": 8, "gpus_per_job": 1,
        "flops": 8 * 210 * 24576, "mfu": 5 / 12,
        "mfu_from": f"glue 25 %: finetune_glue, micro-batch 4, eager (measured at micro-batch 4, not 8); proxy 50 %: "
                    f"pretrain, micro-batch 4, eager ({proxy_note})",
        "gpu_hours": 8 * 18 * unit_h, "wall_hours": 2 * 18 * unit_h, "disk_bytes": 0,
        "running_disk_bytes": 4 * 7 * TINY_PARAMS * 12,
        "what": "210 sequences per job (3 tasks in turn)"})
    default = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    assert default["tasks"]["jobs"] == "per_model"
    rows = plan.plan(default, 1, TINY_MEASURED)["training"]
    assert [(r["rule"].split(" ")[0], r["jobs"]) for r in rows if r["rule"].startswith("finetune")] == \
        [("finetune_model", 12)]


def test_per_model_row_names_the_measurements_that_price_it():
    """One task family: the row names that family's measurement and its note, as a per_task row does; two: each
    family's MFU in whole percent (0.75 -> "75 %") before its source."""
    proxy_note = "pretrain's: finetune_proxy / pretrain_loop not measured; measured at micro-batch 4, not 16"
    one = {**TINY_CONFIG, "tasks": {**TINY_CONFIG["tasks"], "names": ["proxy_single"], "jobs": "per_model"}}
    (row,) = plan.finetune_rows(one, 4, TINY_MEASURED)
    assert (row["mfu_from"], row["mfu"]) == (f"pretrain, micro-batch 4, eager ({proxy_note})", 0.5)
    measured = {**TINY_MEASURED, "mfu": [
        {**e, "mfu": 0.75} if (e["job"], e["compiled"]) == ("finetune_glue", False) else e for e in TINY_MEASURED["mfu"]]}
    two = {**TINY_CONFIG, "tasks": {**TINY_CONFIG["tasks"], "jobs": "per_model"}}
    (row,) = plan.finetune_rows(two, 4, measured)
    assert row["mfu_from"].startswith("glue 75 %: finetune_glue, micro-batch 4, eager (measured at micro-batch 4, "
                                      "not 8); proxy 50 %: pretrain")


def test_tiny_plan_data_and_report_rows_by_hand():
    """The hub corpus: 3.3e9 words over 4 shards; corpus: Wikipedia's 2.5e9 words at 36,000 words/CPU-s and
    BookCorpus's 0.8e9 at 68,000, 18 GB; examples 3.3e9 / 140,000 words/CPU-s, 20.4 bytes per word. The report: 3
    CPU jobs. plan() also checks the config."""
    rows = plan.plan(TINY_CONFIG, 4, TINY_MEASURED)
    what = "3.3e+09 words (hub corpus)"
    corpus, examples = rows["data"]
    assert corpus == pytest.approx({"rule": "corpus_shard", "jobs": 4, "disk_bytes": 18e9, "what": what,
                                    "cpu_hours": (2.5e9 / 36000 + 0.8e9 / 68000) / 3600})
    assert examples == pytest.approx(
        {"rule": "examples_shard", "jobs": 4, "cpu_hours": 3.3e9 / 140000 / 3600, "disk_bytes": 3.3e9 * 20.4,
         "what": what})
    assert [r["rule"] for r in rows["training"]] == ["pretrain", "dam_search", "pretrain_learned",
                                                     "finetune (glue: mrpc, rte)", "finetune (proxy: proxy_single)"]
    assert rows["report"] == {"rule": "tables, figures, findings", "jobs": 3}
    # the hub corpus's download cache is named where a run reads the hub (corpus or tasks), and only there
    assert rows["reads_hub"] is True
    local = {**TINY_CONFIG, "corpus": {"source": "embedded"}}
    assert plan.plan(local, 4, TINY_MEASURED)["reads_hub"] is False
    tasks_from_hub = {**local, "tasks": {"names": ["mrpc", "rte"], "source": "hub"},
                      "finetune": {**local["finetune"], "per_task": {"rte": {"epochs": 1}}}}
    assert plan.plan(tasks_from_hub, 4, TINY_MEASURED)["reads_hub"] is True


# The required sections (and the tasks) only: every optional section and key at its schema default.
MINIMAL_CONFIG = {"scale": "minimal", "pretrain": {"model": TINY}, "masks": {"dense": {}},
                  "tasks": {"names": ["mrpc", "proxy_single"], "source": "local", "local_dir": "tasks"}, "finetune": {}}


def test_absent_sections_take_the_schema_defaults():
    """No seeds (1), corpus (embedded, 1 shard), tokenizer (V 8000), examples (T 128), proxy_tasks (4000
    examples), dam / dam_search, resources (1 GPU per job). DAM rows have 0 jobs and so 0 hours. Positions: T 128
    when pretraining, 512 when fine-tuning. Parameters, V 8000 d 4: 8000*4 + positions*4 + 16 + 172 (layer)
    + (20 + 8028 + 10) (heads) = 40,758 at 128 positions, 42,294 at 512."""
    assert plan.data_rows(MINIMAL_CONFIG) == [
        {"rule": rule, "jobs": 1, "cpu_hours": None, "disk_bytes": None, "what": "embedded corpus: minutes"}
        for rule in ("corpus_shard", "examples_shard")]
    pretrain, dam_search, learned = plan.training_rows(MINIMAL_CONFIG, 1, TINY_MEASURED)
    assert [pretrain["jobs"], dam_search["jobs"], learned["jobs"]] == [1, 0, 0]
    assert pretrain["disk_bytes"] == 40758 * 28
    assert pretrain["what"] == \
        "100 steps x 32 x 128 tokens, 0.0M parameters; micro-batch 32, accumulation 1 on 1 GPU(s)"
    assert dam_search["gpu_hours"] == dam_search["wall_hours"] == 0 == learned["wall_hours"]
    glue, proxy = plan.finetune_rows(MINIMAL_CONFIG, 1, TINY_MEASURED)
    assert (glue["jobs"], glue["gpus_per_job"], glue["disk_bytes"], glue["running_disk_bytes"]) == (1, 1, 0, 42294 * 36)
    assert glue["what"] == "11,004 sequences per job on average"  # mrpc's hub size 3,668 x 3 epochs
    assert proxy["what"] == "12,000 sequences per job on average"  # a local proxy task: proxy_tasks' 4000 x 3
    # Through plan(): the required sections present but empty, and `seeds` absent: 1 seed.
    full = {**MINIMAL_CONFIG, "corpus": {}, "tokenizer": {}, "examples": {}}
    assert [r["jobs"] for r in plan.plan(full, 1, TINY_MEASURED)["training"]] == [1, 0, 0, 1, 1]


def test_vocabulary_of_a_pretrained_tokenizer():
    assert plan.vocab_size({"tokenizer": {"pretrained": "bert-base-cased"}}) == 28996
    with pytest.raises(UserError, match="tokenizer.pretrained 'roberta-base': vocabulary size unknown to the plan"):
        plan.vocab_size({"tokenizer": {"pretrained": "roberta-base"}})


def test_bad_config_and_measurements_are_user_errors(tmp_path):
    """Each names what is wrong: every schema problem of the config (joined by '; '), the measurement file, the
    job and the kinds tried in its place."""
    with pytest.raises(UserError, match=r"^bogus: unknown key; valid: .*; seeds\[0\]: must be an integer in \[0, "):
        plan.plan({**TINY_CONFIG, "seeds": [-1], "bogus": 1}, 3, TINY_MEASURED)
    entry = TINY_MEASURED["mfu"][0]
    header = {k: TINY_MEASURED[k] for k in ("gpu", "torch", "date", "matmul_peak_tflops")}
    for name, measured, message in (
            ("a_list", [entry], r"\[\{'job': 'pretrain', .*\}\] is not of type 'object'"),
            ("no_gpu", {**TINY_MEASURED, "gpu": None}, "gpu: None is not of type 'string'"),
            ("no_peaks", {k: v for k, v in TINY_MEASURED.items() if k != "matmul_peak_tflops"},
             "'matmul_peak_tflops' is a required property"),
            ("no_bf16", {**header, "mfu": [entry], "matmul_peak_tflops": {"fp32": 1}},
             "matmul_peak_tflops: 'bf16' is a required property"),
            ("no_mfu", {**header, "mfu": []}, r"mfu: \[\] should be non-empty"),
            ("no_micro_batch", {**header, "mfu": [entry, {"job": "x", "compiled": False, "mfu": 0.5}]},
             r"mfu\[1\]: 'micro_batch' is a required property"),
            ("zero_mfu", {**header, "mfu": [{**entry, "mfu": 0}]}, r"mfu\[0\].mfu: 0 is less than or equal to the "
                                                                    r"minimum of 0")):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(measured))
        with pytest.raises(UserError, match=f"^GPU measurements {path}: {message}; write it anew with "
                                            f"benchmarks/gpu.py$"):
            plan.load_measurements(path)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(TINY_MEASURED))
    only_hf = {**plan.load_measurements(good), "mfu": [{"job": "hf_pretrain", "micro_batch": 4, "compiled": False,
                                                         "mfu": 0.5}]}
    with pytest.raises(UserError, match=rf"^{good}: no entry for finetune_glue, nor for what stands in for it "
                                        rf"\(pretrain_loop, pretrain\); measure it with benchmarks/gpu.py$"):
        plan.pick_mfu(only_hf, "finetune_glue", 4, False)
    with pytest.raises(UserError, match=r"^the GPU measurements: no entry for pretrain, nor for what stands in for it "
                                        r"\(pretrain_loop\)"):
        plan.pick_mfu({"mfu": []}, "pretrain", 4, False)


def test_a_gpu_count_that_does_not_split_the_batch_stops_the_plan():
    """The run's GPUs lower a job's: TINY_CONFIG's pretrain_learned asks for 8 GPUs; on 3 it would get 3 and
    stop at its first step (batch 8 over 3 processes). The plan says so and names the counts that split it; on
    paper.yaml's 65,536 x micro-batch 64, 3 GPUs of 8 fail the same way, and 4 work (accumulation 256)."""
    with pytest.raises(UserError, match=r"^pretrain_learned on 3 GPU\(s\): batch_size 8 is not divisible by the "
                                        r"world size 3; GPUs per job that split it: 1, 2 "
                                        r"\(resources.pretrain_learned.gpu\)$"):
        plan.training_rows(TINY_CONFIG, 3, TINY_MEASURED)
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    measured = json.loads((ROOT / "benchmarks" / "results" / "gpu_h200.json").read_text())
    with pytest.raises(UserError, match=r"^pretrain on 3 GPU\(s\): batch_size 65536 is not divisible by world size 3 x "
                                        r"micro_batch_size 64; GPUs per job that split it: 1, 2 \("):
        plan.plan(paper, 3, measured)
    assert "accumulation 256 on 4 GPU(s)" in plan.plan(paper, 4, measured)["training"][0]["what"]


def test_gpus_per_job_follow_nodes_and_per_variant_resources():
    """As the launcher starts them: nodes x GPUs per node (gres is per node), a per_variant entry over the rule's;
    variants of one rule on different GPU counts are rows of their own. A job larger than the run cannot start."""
    two_nodes = {**TINY_CONFIG, "resources": {"pretrain": {"nodes": 2, "gres": "gpu:2"}}}
    pretrain = plan.training_rows(two_nodes, 4, TINY_MEASURED)[0]
    assert (pretrain["gpus_per_job"], pretrain["jobs"]) == (4, 4)
    assert pretrain["what"].endswith("micro-batch 2, accumulation 1 on 4 GPU(s)")
    with pytest.raises(UserError, match=r"^resources.pretrain: a job of dense takes 4 GPUs \(2 node\(s\)\), more than "
                                        r"the run's 2$"):
        plan.training_rows(two_nodes, 2, TINY_MEASURED)
    split = {**TINY_CONFIG, "resources": {"pretrain": {"gpu": 2, "per_variant": {"no_diagonal": {"gpu": 4}}}}}
    dense, no_diagonal = plan.training_rows(split, 4, TINY_MEASURED)[:2]
    assert (dense["rule"], dense["gpus_per_job"], dense["jobs"]) == ("pretrain (dense)", 2, 2)
    assert (no_diagonal["rule"], no_diagonal["gpus_per_job"], no_diagonal["jobs"]) == ("pretrain (no_diagonal)", 4, 2)
    # plan() refuses what the workflow refuses: a fine-tuning is one process
    with pytest.raises(UserError, match=r"resources.finetune: 2 processes, but fine-tuning runs in one process"):
        plan.plan({**TINY_CONFIG, "resources": {"finetune": {"gpu": 2}}}, 4, TINY_MEASURED)


def test_size_units_at_their_boundaries():
    """Decimal units, each from exactly 1 of it; below 1 MB whole kB."""
    assert [plan._size(n) for n in (None, 1e12, 1e9, 1e6, 999_999, 2600)] == \
        ["?", "1.0 TB", "1.0 GB", "1.0 MB", "1000 kB", "3 kB"]
    assert plan._size(2.5e12) == "2.5 TB"


def _training_row(rule, jobs, gpus_per_job, flops, mfu, mfu_from, gpu_hours, wall_hours, disk_bytes, what,
                  running_disk_bytes=0):
    return {"rule": rule, "jobs": jobs, "gpus_per_job": gpus_per_job, "flops": flops, "mfu": mfu,
            "mfu_from": mfu_from, "gpu_hours": gpu_hours, "wall_hours": wall_hours, "disk_bytes": disk_bytes,
            "running_disk_bytes": running_disk_bytes, "what": what}


REPORT_ROW = {"rule": "tables, figures, findings", "jobs": 3}
TOTAL_TAIL = ("(rules one after another); disk {} (data, final models, and the 2 checkpoints of weights and optimizer "
              "moments that a job keeps in its state dir where its recipe says keep_checkpoints) and up to {} more "
              "while jobs run (the checkpoints of the jobs running at once, 3 each while one saves, removed as each "
              "finishes){}.")
HUB_CACHE = ("; not counted: the Hugging Face cache of the hub datasets, which the corpus and task jobs download and "
             "prepare once (tens of GB, not measured here)")


def test_render_prints_every_cell(tmp_path, monkeypatch):
    """Hand-made rows, the whole table. PFLOP 2.5e15 / 1e15 = 2.5 and 1.5e12 / 1e15 = 0.0015 (3 significant
    digits below 100); MFU 0.6 -> 60 %; hours >= 100 thousands-separated without decimals; CPU-hours 13.48 -> 13
    and 6.55 -> 7. Totals: 1234.4 + 0.5 = 1,235 GPU-hours; 617.2 + 0.25 = 617.45 h = 25.7 days; disk 18e9 +
    67.32e9 + 1.5e12 + 2.5e6 = 1.585e12 -> 1.6 TB, and while jobs run the larger of the rows' 3 GB and 2 GB (rules
    one after another). The measurement file inside the current folder: relative."""
    monkeypatch.chdir(tmp_path)
    hub = "3.3e+09 words (hub corpus)"
    rows = {"data": [{"rule": "corpus_shard", "jobs": 4, "cpu_hours": 13.48, "disk_bytes": 18e9, "what": hub},
                     {"rule": "examples_shard", "jobs": 4, "cpu_hours": 6.55, "disk_bytes": 67.32e9, "what": hub}],
            "training": [_training_row("pretrain", 4, 2, 2.5e15, 0.6, "pretrain, micro-batch 4, compiled", 1234.4,
                                       617.2, 1.5e12, "w1", running_disk_bytes=3e9),
                         _training_row("finetune (glue: mrpc)", 1, 1, 1.5e12, 0.25,
                                       "finetune_glue, micro-batch 8, eager", 0.5, 0.25, 2.5e6, "w2",
                                       running_disk_bytes=2e9)],
            "report": REPORT_ROW, "reads_hub": True}
    out = plan.render(rows, Path("c.yaml"), 3, tmp_path / "gpu.json", TINY_MEASURED)
    assert out.split("\n") == [
        "# Cost plan: c.yaml on 3 GPU(s)",
        "MFU from gpu.json (Test GPU, torch 0.0, 2000-01-01; matmul peak TFLOP/s: 100 bf16, 10 fp32)",
        "",
        "| rule | jobs | GPUs/job | PFLOP | MFU (measured for) | GPU-hours | wall (h) | disk | what |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| corpus_shard | 4 | 0 | - | - | 13 CPU-h | - | 18.0 GB | {hub} |",
        f"| examples_shard | 4 | 0 | - | - | 7 CPU-h | - | 67.3 GB | {hub} |",
        "| pretrain | 4 | 2 | 2.5 | 60 % (pretrain, micro-batch 4, compiled) | 1,234 | 617 | 1.5 TB | w1 |",
        "| finetune (glue: mrpc) | 1 | 1 | 0.0015 | 25 % (finetune_glue, micro-batch 8, eager) | 0.5 | 0.25 | 2.5 MB "
        "| w2 |",
        "| tables, figures, findings | 3 | 0 | - | - | CPU, minutes | - | - | |",
        "",
        "Total: 1,235 GPU-hours; 617 h = 25.7 days on 3 GPU(s) " + TOTAL_TAIL.format("1.6 TB", "3.0 GB", HUB_CACHE)]


def test_render_of_a_corpus_of_unknown_size(tmp_path, monkeypatch):
    """Data rows without CPU-hours or disk: 'CPU' and '?', counted as 0 bytes in the total: 2500 bytes of
    training output -> 2.5 kB, printed '2 kB' (format rounds the tie to even; one byte more would print 3 kB).
    A measurement file outside the current folder is shown as given."""
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    rows = {"data": [{"rule": "corpus_shard", "jobs": 1, "cpu_hours": None, "disk_bytes": None,
                      "what": "embedded corpus: minutes"}],
            "training": [_training_row("pretrain", 1, 1, 1e9, 0.5, "pretrain", 0.5, 0.5, 2500, "w")],
            "report": REPORT_ROW}
    lines = plan.render(rows, Path("c.yaml"), 1, tmp_path / "gpu.json", TINY_MEASURED).split("\n")
    assert lines[1].startswith(f"MFU from {tmp_path / 'gpu.json'} (Test GPU")
    assert lines[5] == "| corpus_shard | 1 | 0 | - | - | CPU | - | ? | embedded corpus: minutes |"
    assert lines[-1] == "Total: 0.5 GPU-hours; 0.5 h = 0.0208 days on 1 GPU(s) " + TOTAL_TAIL.format("2 kB", "0 kB", "")


def test_cli_plan_of_a_config_file_on_one_gpu(tmp_path, capsys):
    """The command line end to end: the header names the config and the GPUs; 1 GPU is enough (every job's
    GPUs capped at 1); the required flags and a missing config are errors."""
    config, gpu_json = tmp_path / "tiny.yaml", tmp_path / "gpu.json"
    config.write_text(json.dumps(TINY_CONFIG))  # JSON is YAML
    gpu_json.write_text(json.dumps(TINY_MEASURED))
    cli.main(["plan", "--configfile", str(config), "--gpus", "1", "--gpu-json", str(gpu_json)])
    out = capsys.readouterr().out
    assert out.startswith(f"# Cost plan: {config} on 1 GPU(s)\n")
    assert row(out, "pretrain")[1:3] == ["4", "1"] and row(out, "pretrain_learned")[1:3] == ["2", "1"]
    for missing in ("--configfile", "--gpus"):
        argv = ["plan", "--configfile", str(config), "--gpus", "1"]
        i = argv.index(missing)
        with pytest.raises(SystemExit):
            cli.main(argv[:i] + argv[i + 2:])
        assert f"the following arguments are required: {missing}" in capsys.readouterr().err
    absent = argparse.Namespace(gpus=1, configfile=tmp_path / "absent.yaml", gpu_json=gpu_json)
    with pytest.raises(UserError, match="config file not found: .*absent.yaml"):
        plan.run(absent)


def test_disk_follows_each_recipes_keep_checkpoints():
    """TINY_CONFIG on 4 GPUs with the defaults turned round: pretrain (2 GPUs per job, 2 at a time) removes its
    checkpoints, and mrpc (1 of glue's 2 tasks) keeps them. A running job holds one checkpoint (826 x 12 bytes)
    more than it keeps while it saves. pretrain: 4 jobs leave their model (826 x 4 bytes) and each of the 2
    running jobs holds 826 x (24 + 12) more; dam_search's 2 jobs (1 GPU each) run at once. glue: 16 jobs (4 at a
    time), half of them mrpc's, leave 8 x 826 x 24 bytes; a running job may be rte's, which holds its 826 x 24
    until it finishes. per_model: 8 jobs of 3 tasks (4 at a time), each leaving mrpc's checkpoints and holding the
    other 2 tasks' until its last task is done."""
    config = {**TINY_CONFIG, "pretrain": {**TINY_CONFIG["pretrain"], "keep_checkpoints": False},
              "finetune": {**TINY_CONFIG["finetune"], "per_task": {**TINY_CONFIG["finetune"]["per_task"],
                                                                     "mrpc": {"keep_checkpoints": True}}}}
    checkpoints, saving = TINY_PARAMS * 24, TINY_PARAMS * 12
    pretrain, dam_search, _ = plan.training_rows(config, 4, TINY_MEASURED)
    running = 2 * (checkpoints + saving)  # 2 jobs at once
    assert (pretrain["disk_bytes"], pretrain["running_disk_bytes"]) == (4 * TINY_PARAMS * 4, running)
    assert (dam_search["disk_bytes"], dam_search["running_disk_bytes"]) == (2 * TINY_PARAMS * 4, running)
    glue, proxy = plan.finetune_rows(config, 4, TINY_MEASURED)
    assert (glue["disk_bytes"], glue["running_disk_bytes"]) == (8 * checkpoints, 4 * (checkpoints + saving))
    assert (proxy["disk_bytes"], proxy["running_disk_bytes"]) == (0, 4 * (checkpoints + saving))
    everything_kept = {**config, "finetune": {**config["finetune"], "keep_checkpoints": True}}
    glue, _ = plan.finetune_rows(everything_kept, 4, TINY_MEASURED)
    assert (glue["disk_bytes"], glue["running_disk_bytes"]) == (16 * checkpoints, 4 * saving)
    (row_,) = plan.finetune_rows({**config, "tasks": {**config["tasks"], "jobs": "per_model"}}, 4, TINY_MEASURED)
    assert (row_["disk_bytes"], row_["running_disk_bytes"]) == (8 * checkpoints, 4 * (2 * checkpoints + saving))
