"""One GPU run (about 5 minutes on an H200) of what issue 21 asks to measure, written to one JSON and one table.

    PYTHONPATH=src python benchmarks/gpu.py --out benchmarks/results/gpu_h200.json       # on the GPU
    PYTHONPATH=src python benchmarks/gpu.py --toy --out /tmp/gpu_toy.json              # CPU, tiny sizes, < 1 min

Measured, each with tokens/s and MFU (analytic FLOPs / time / the bf16 matmul peak measured in the same run; the
fp32 peak, TF32 off, is recorded beside it for the plan's fp32 jobs):
  pretrain      SparseBertForPreTraining, dense, BERT-base, T 128, 20 masked positions: forward + backward at
                micro-batches 64-512, eager and torch.compile'd (compile time reported apart)
  hf_pretrain   HF BertForPreTraining, same shapes, labels at the masked positions (its MLM head projects
                every position: same useful FLOPs credited, so its MFU is comparable)
  dam_search    a DAM_s search step (loss + lambda L1) beside a fixed sparse mask's step at the same shape
  finetune_*    GLUE (B 128 x T 128) and SQuAD (B 32 x T 384) steps, forward + backward + fused AdamW
  optimizer     the LAMB step at BERT-base: multi-tensor (the default) vs the per-tensor reference
  pretrain_loop `sparsebert pretrain` itself on synthetic examples (data path, logging and checkpoints
                included): the median tokens/s of its log lines, eager and compiled
  profile       where a whole step's time goes (forward, backward, LAMB), at paper.yaml's micro-batch 64 and the
                largest: phases, device time by kind of operator, and how busy the device is
                (benchmarks/step_profile.py): the breakdown to read where a lever falls short
  flex          (not in the default set) the attention alone, forward + backward, bf16, 12 heads x 64, at L 2048,
                4096 and 8192 (8,192 tokens each), for the paper's sparse masks: the project's flex path (its
                cached BlockMask) vs its sdpa path (the mask as an additive bias) vs dense flash SDPA, each row with
                the mask's 128-block density and what `attention_backend: auto` picks there (flex.WHERE_FLEX_PAYS)
                and whether that was the faster: the measurement to move auto's CUDA thresholds by
The JSON's `mfu` list is what `sparsebert plan` reads (one entry per kind of job and micro-batch).

FLOPs: benchmarks/mfu.py's count (`step_flops`) for pretraining, sparsebert.plan's `encoder_flops` (the same
terms without the pretraining heads) for fine-tuning. A section that fails is recorded with its error and
the run goes on; `--budget-s` skips the remaining compiled shapes once the run has used that much time. The JSON
is rewritten after every section, so a run cut off by a time limit (`timeout`, a device call's) keeps what it
finished. On a lent machine without network: `bash benchmarks/gpu_demo.sh bench [ARGS]` (it installs the wheels
that `sparsebert pretrain` needs first).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import step_profile
from common import markdown
from mfu import make_batch, step_flops, synthetic_pretraining_data
from sparsebert import precision, recipes, training
from sparsebert.dam import l1_penalty, no_weight_decay_groups
from sparsebert.io import atomic_write_json
from sparsebert.lamb import Lamb
from sparsebert.modeling import (SparseBertConfig, SparseBertForPreTraining, SparseBertForQuestionAnswering,
                                 SparseBertForSequenceClassification)
from sparsebert.plan import encoder_flops

BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, vocab_size=30522)
TOY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=500)
# size -> (model, T, P, micro-batches, compiled micro-batches, GLUE (B, T), SQuAD (B, T), loop (batch, micro, steps))
SIZES = {
    "full": (BERT_BASE, 128, 20, (64, 128, 256, 512), (64, 128, 256, 512), (128, 128), (32, 384), (1024, 256, 100)),
    "toy": (TOY, 32, 5, (2, 4), (4,), (8, 32), (4, 64), (8, 4, 20)),
}


class Clock:
    """Seconds per call on `device`: CUDA work is asynchronous, so the clock waits for it at both ends."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def per_call(self, fn, repeats: int, warmup: int = 2) -> float:
        for _ in range(warmup):
            fn()
        self.sync()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        self.sync()
        return (time.perf_counter() - start) / repeats


def matmul_peak(clock: Clock, dtype: torch.dtype, n: int) -> float:
    """FLOP/s of an n^3 matmul in `dtype` on the device: this run's ceiling for MFU."""
    a = torch.randn(n, n, device=clock.device).to(dtype)
    b = torch.randn(n, n, device=clock.device).to(dtype)
    return 2 * n**3 / clock.per_call(lambda: a @ b, repeats=20 if clock.device.type == "cuda" else 5)


def on_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def fwd_bwd(model, batch: dict, prec, extra_loss=None):
    """One forward + backward (the optimizer is timed apart, as in the issue's table)."""

    def step():
        with prec.autocast():
            out = model(**batch)
            loss = out.loss + (extra_loss(out) if extra_loss else 0)
        loss.backward()

    return step


def pretraining_model(shape: dict, T: int, mask: str = "dense", device="cpu"):
    torch.manual_seed(0)
    config = SparseBertConfig(**shape, max_position_embeddings=T, attention_mask_type=mask, mask_seq_len=T)
    return SparseBertForPreTraining(config).to(device).train()


def hf_model(shape: dict, T: int, device):
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(**shape, max_position_embeddings=T))
    model.config._attn_implementation = "sdpa"
    return model.to(device).train()


def hf_batch(batch: dict) -> dict:
    """The same targets in HF's form: (B, T) labels, -100 off the masked positions."""
    labels = torch.full_like(batch["input_ids"], -100).scatter(1, batch["masked_lm_positions"], batch["masked_lm_ids"])
    keep = ("input_ids", "attention_mask", "token_type_ids", "next_sentence_label")
    return {**{k: batch[k] for k in keep}, "labels": labels}


def entry(job: str, model: str, B: int, T: int, compiled: bool, seconds: float, flops: float, peak: float) -> dict:
    return {"job": job, "model": model, "micro_batch": B, "seq_len": T, "compiled": compiled,
            "ms": round(1e3 * seconds, 2), "tokens_per_s": round(B * T / seconds), "mfu": round(flops / seconds / peak, 4)}


def pretrain_steps(ctx: dict) -> list[dict]:
    """The project's step (eager, compiled) and HF's at every micro-batch size."""
    shape, T, P, micros, compiled_micros = ctx["size"][:5]
    rows = []
    for B in micros:
        batch = on_device(make_batch(shape, B, T, P), ctx["device"])
        flops = step_flops(shape, B, T, P)
        model = pretraining_model(shape, T, device=ctx["device"])
        t = ctx["clock"].per_call(fwd_bwd(model, batch, ctx["prec"]), ctx["repeats"])
        rows.append(entry("pretrain", "SparseBertForPreTraining dense", B, T, False, t, flops, ctx["peak"]))
        if B in compiled_micros and time.perf_counter() - ctx["start"] < ctx["budget_s"]:
            # Static shapes, as the training loop's one compile per process sees them: dynamo keeps its cache per
            # code object, so without dynamic=False the second micro-batch's compile would mark the batch
            # dimension dynamic ("automatic dynamic") and time a graph the loop never runs.
            compiled = torch.compile(model, backend=ctx["compile_backend"], dynamic=False)
            began = time.perf_counter()
            fwd_bwd(compiled, batch, ctx["prec"])()
            ctx["clock"].sync()
            compile_s = time.perf_counter() - began
            t = ctx["clock"].per_call(fwd_bwd(compiled, batch, ctx["prec"]), ctx["repeats"])
            rows.append({**entry("pretrain", "SparseBertForPreTraining dense", B, T, True, t, flops, ctx["peak"]),
                         "compile_s": round(compile_s, 1)})
            del compiled
        del model
        hf = hf_model(shape, T, ctx["device"])
        t = ctx["clock"].per_call(fwd_bwd(hf, hf_batch(batch), ctx["prec"]), ctx["repeats"])
        rows.append(entry("hf_pretrain", "HF BertForPreTraining", B, T, False, t, flops, ctx["peak"]))
        del hf
        free(ctx["device"])
    return rows


def dam_search_step(ctx: dict) -> list[dict]:
    """DAM_s (loss + lambda L1 of the sampled mask) against a fixed sparse mask, at the middle micro-batch."""
    shape, T, P, micros = ctx["size"][:4]
    B = micros[len(micros) // 2]
    batch = on_device(make_batch(shape, B, T, P), ctx["device"])
    rows = []
    for mask, job, extra in (("strided", "fixed_sparse", None), ("dam_s", "dam_search", lambda o: l1_penalty(o.dam_mask, 1e-4))):
        model = pretraining_model(shape, T, mask, ctx["device"])
        t = ctx["clock"].per_call(fwd_bwd(model, batch, ctx["prec"], extra), ctx["repeats"])
        rows.append(entry(job, f"SparseBertForPreTraining {mask}", B, T, False, t, step_flops(shape, B, T, P), ctx["peak"]))
        del model
    return rows


def finetune_steps(ctx: dict) -> list[dict]:
    """GLUE-shaped and SQuAD-shaped fine-tuning steps with the optimizer fine-tuning uses (fused AdamW on CUDA)."""
    shape, T_pre = ctx["size"][0], ctx["size"][1]
    rows = []
    for job, cls, (B, T) in (("finetune_glue", SparseBertForSequenceClassification, ctx["size"][5]),
                             ("finetune_squad", SparseBertForQuestionAnswering, ctx["size"][6])):
        torch.manual_seed(0)
        model = cls(SparseBertConfig(**shape, max_position_embeddings=max(T, T_pre), attention_mask_type="dense",
                                     mask_seq_len=T, num_labels=3)).to(ctx["device"]).train()
        opt = training.build_optimizer(model, {**recipes.defaults("finetune"), "optimizer": "adamw"})
        g = torch.Generator().manual_seed(0)
        batch = {"input_ids": torch.randint(5, shape["vocab_size"], (B, T), generator=g),
                 "attention_mask": torch.ones(B, T, dtype=torch.long), "token_type_ids": torch.zeros(B, T, dtype=torch.long)}
        if job == "finetune_glue":
            batch["labels"] = torch.randint(0, 3, (B,), generator=g)
        else:
            batch["start_positions"] = batch["end_positions"] = torch.randint(0, T, (B,), generator=g)
        step = fwd_bwd(model, on_device(batch, ctx["device"]), ctx["prec"])
        t = ctx["clock"].per_call(lambda: (step(), opt.step(), opt.zero_grad(set_to_none=True)), ctx["repeats"])
        rows.append(entry(job, f"{cls.__name__} (step incl. AdamW)", B, T, False, t, 3 * encoder_flops(shape, B, T),
                          ctx["peak"]))
        del model, opt
    return rows


def optimizer_steps(ctx: dict) -> dict:
    """The LAMB step alone, multi-tensor vs per-tensor, on the full model's parameters."""
    shape, T = ctx["size"][0], ctx["size"][1]
    model = pretraining_model(shape, T, device=ctx["device"])
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    out = {}
    for name, foreach in (("lamb_multi_tensor_ms", True), ("lamb_per_tensor_ms", False)):
        opt = Lamb(no_weight_decay_groups(model, 0.01), lr=1e-4, foreach=foreach)
        out[name] = round(1e3 * ctx["clock"].per_call(opt.step, ctx["repeats"]), 2)
    return out


def pretrain_loop(ctx: dict, out_dir: Path) -> list[dict]:
    """`sparsebert pretrain` on synthetic examples, eager and (not in toy runs) compiled."""
    shape, T, P = ctx["size"][:3]
    batch, micro, steps = ctx["size"][7]
    data = synthetic_pretraining_data(out_dir / "data", shape["vocab_size"], T, P, max(4 * batch, 2048))
    model = {k: v for k, v in shape.items() if k != "vocab_size"}
    rows = []
    for compiled in (False,) if ctx["toy"] else (False, True):
        recipe = {"model": model, "optimizer": "lamb", "lr": 1e-4, "schedule": "constant", "batch_size": batch,
                  "micro_batch_size": micro, "max_steps": steps, "log_every": 10, "checkpoint_every": 50,
                  "eval_examples": 0, "precision": ctx["prec"].name, "compile": compiled}
        out = out_dir / f"loop-{'compiled' if compiled else 'eager'}"
        cmd = [sys.executable, "-m", "sparsebert", "pretrain", "--examples", str(data[0]), "--tokenizer", str(data[1]),
               "--params", json.dumps(recipe), "--mask", "dense", "--out", str(out)]
        began = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=ctx["env"])
        if proc.returncode != 0:
            raise RuntimeError(f"sparsebert pretrain failed: {proc.stderr[-1500:]}")
        summary = json.loads((out / "summary.json").read_text())
        seconds = micro * T / summary["tokens_per_s"]  # per micro-batch, at the loop's median rate
        rows.append({**entry("pretrain_loop", f"sparsebert pretrain ({summary['model_run']}, accumulation "
                                              f"{summary['accumulation_steps']})", micro, T, compiled, seconds,
                             step_flops(shape, micro, T, P), ctx["peak"]), "wall_s": round(time.perf_counter() - began, 1)})
    return rows


def profile_steps(ctx: dict) -> dict:
    """A whole eager step (forward, backward, multi-tensor LAMB, zero_grad), as the loop runs it without
    accumulation, at the smallest and largest micro-batch: its wall time, MFU, phases and device breakdown."""
    shape, T, P, micros = ctx["size"][:4]
    out = {}
    for B in sorted({micros[0], micros[-1]}):
        batch = on_device(make_batch(shape, B, T, P), ctx["device"])
        model = pretraining_model(shape, T, device=ctx["device"])
        opt = Lamb(no_weight_decay_groups(model, 0.01), lr=1e-4, foreach=True)

        def forward():
            with ctx["prec"].autocast():
                return model(**batch).loss

        def optimizer_step():
            opt.step()
            opt.zero_grad(set_to_none=True)

        def step():
            forward().backward()
            optimizer_step()

        seconds = ctx["clock"].per_call(step, ctx["repeats"])
        profiled = step_profile.profile_step(step, ctx["device"], steps=3 if ctx["toy"] else 5)
        phases = step_profile.phase_times(forward, lambda loss: loss.backward(), optimizer_step, ctx["clock"].sync,
                                          ctx["repeats"])
        # a CPU has no separate device: its operators' CPU time, profiler overhead included, is no busy share
        busy = round(profiled["device_ms_per_step"] / (1e3 * seconds), 3) if ctx["device"].type == "cuda" else None
        out[f"micro_batch_{B}"] = {
            "step_ms": round(1e3 * seconds, 3), "mfu": round(step_flops(shape, B, T, P) / seconds / ctx["peak"], 4),
            "busy_fraction": busy, "phases_ms": phases, **profiled}  # fmt: skip
        del model, opt
        free(ctx["device"])
    return out


def print_profile(profiles: dict) -> None:
    """One line per micro-batch: wall time, device busy share, phases; then its time by kind of operator."""
    for name, p in profiles.items():
        if name == "error":
            print(f"profile: {p}")
            continue
        busy = "no separate device" if p["busy_fraction"] is None else f"device busy {p['busy_fraction']:.0%} of it"
        print(f"\n{name}: step {p['step_ms']} ms, MFU {p['mfu']}, {busy}; phases (ms) {p['phases_ms']}")
        rows = [{"category": c, "ms_per_step": ms} for c, ms in p["by_category_ms"].items()]
        print(markdown(rows, ["category", "ms_per_step"]))


FLEX_MASKS = ("longformer", "star", "logsparse", "blockwise", "bigbird", "strided", "fixed")
# size -> (lengths, heads, head dim, tokens per call)
FLEX_SIZES = {"full": ((2048, 4096, 8192), 12, 64, 8192), "toy": ((64, 128), 2, 16, 128)}


def flex_rows(ctx: dict) -> list[dict]:
    """Attention alone with each sparse mask: flex vs the project's sdpa path vs dense flash (see the docstring).
    On a CPU (toy) forward only: flex has no CPU backward."""
    from torch.nn import functional as F

    from sparsebert import flex, masks

    lengths, H, hd, tokens = FLEX_SIZES["toy" if ctx["toy"] else "full"]
    device, backward = ctx["device"], ctx["device"].type == "cuda"
    rows = []
    for L in lengths:
        g = torch.Generator().manual_seed(0)
        shape = (max(1, tokens // L), H, L, hd)
        q, k, v = (torch.randn(shape, generator=g).to(device, torch.bfloat16).requires_grad_(backward) for _ in range(3))
        grad = torch.randn_like(q)

        def timed(attend):
            def call():
                out = attend()
                if backward:
                    out.backward(grad)
            with torch.set_grad_enabled(backward):
                return ctx["clock"].per_call(call, ctx["repeats"])

        flash_s = timed(lambda: F.scaled_dot_product_attention(q, k, v))
        for name in FLEX_MASKS:
            keep = masks.build_mask(name, L).reshape(-1, L, L).to(device)
            block_mask = flex.structural_block_mask(keep)
            bias = torch.where(keep, 0.0, torch.finfo(torch.bfloat16).min).to(torch.bfloat16).unsqueeze(0)
            sdpa_s = timed(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias))
            flex_s = timed(lambda: flex.attention(q, k, v, block_mask))
            density = flex.block_density(block_mask)
            pick, _ = flex.choose_backend(device.type, L, lambda: density)
            best = min(sdpa_s, flex_s)
            rows.append({"L": L, "batch": q.shape[0], "mask": name, "block_density": round(density, 4),
                         "pass": "fwd+bwd" if backward else "fwd", "flash_ms": round(1e3 * flash_s, 3),
                         "sdpa_mask_ms": round(1e3 * sdpa_s, 3), "flex_ms": round(1e3 * flex_s, 3),
                         "flex_vs_sdpa_mask": round(sdpa_s / flex_s, 3), "flex_vs_flash": round(flash_s / flex_s, 3),
                         "auto": pick, "auto_faster": {"sdpa": sdpa_s, "flex": flex_s}[pick] == best})
            del bias, block_mask
        free(device)
    return rows


def free(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_section(report: dict, name: str, fn) -> None:
    """One section; its failure is recorded, not raised, so the others still measure."""
    began = time.perf_counter()
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - a benchmark reports what broke and goes on
        result = {"error": f"{type(e).__name__}: {str(e)[:1500]}"}
    report["sections"][name] = {"seconds": round(time.perf_counter() - began, 1)}
    if isinstance(result, list):
        report["mfu"] += result
    else:
        report[name] = result
    print(name, json.dumps(result)[:800], flush=True)


def write_report(path: Path, report: dict, ctx: dict) -> None:
    report["seconds"] = round(time.perf_counter() - ctx["start"], 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    parser.add_argument("--toy", action="store_true", help="tiny sizes (CPU check of this script, < 1 min)")
    parser.add_argument("--budget-s", type=float, default=200, help="skip compiled shapes after this many seconds")
    parser.add_argument("--sections", default="pretrain,dam_search,finetune,optimizer,pretrain_loop,profile",
                        help="comma-separated subset to run (to rerun one piece)")
    args = parser.parse_args()
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    clock = Clock(device)
    n = 256 if args.toy else 8192
    # fp32 as the pipeline's fp32 jobs run it (paper.yaml's SWAG): TF32 off, torch's default; the plan prices
    # them at this peak.
    peak_fp32 = matmul_peak(clock, torch.float32, n)
    torch.backends.cuda.matmul.allow_tf32 = True
    src = str(Path(__file__).resolve().parents[1] / "src")  # the loop runs this checkout's package
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    prec = precision.resolve("bf16" if device.type == "cuda" else "auto", device)
    peak = matmul_peak(clock, torch.bfloat16, n)
    ctx = {"device": device, "clock": clock, "prec": prec, "peak": peak, "size": SIZES["toy" if args.toy else "full"],
           "toy": args.toy, "repeats": 3 if args.toy else 10, "start": time.perf_counter(), "budget_s": args.budget_s,
           "env": env,
           # toy: dynamo traces the model but hands it to eager kernels (seconds, not inductor's minute on 2 CPUs)
           "compile_backend": "eager" if args.toy else "inductor"}
    report = {"gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({device})",
              "torch": torch.__version__, "date": datetime.date.today().isoformat(), "source": "benchmarks/gpu.py"
              + (" --toy (tiny sizes: not a measurement of anything)" if args.toy else ""), "precision": prec.name,
              "matmul_peak_tflops": {"bf16": round(peak / 1e12, 4), "fp32": round(peak_fp32 / 1e12, 4)},
              "mfu": [], "sections": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("pretrain", lambda: pretrain_steps(ctx)), ("dam_search", lambda: dam_search_step(ctx)),
                         ("finetune", lambda: finetune_steps(ctx)), ("optimizer", lambda: optimizer_steps(ctx)),
                         ("pretrain_loop", lambda: pretrain_loop(ctx, Path(tmp))),
                         ("profile", lambda: profile_steps(ctx)), ("flex", lambda: {"rows": flex_rows(ctx)})):
            if name in args.sections.split(","):
                run_section(report, name, fn)
                write_report(args.out, report, ctx)  # a run cut off by a time limit keeps what it measured
    write_report(args.out, report, ctx)
    peaks = report["matmul_peak_tflops"]
    print(f"\n{report['gpu']}, torch {report['torch']}, {report['date']}, {prec.name}; matmul peak {peaks['bf16']} "
          f"TFLOP/s bf16, {peaks['fp32']} fp32; LAMB step {report.get('optimizer')}; {report['seconds']} s")
    if report["mfu"]:
        print(markdown(report["mfu"], ["job", "model", "micro_batch", "seq_len", "compiled", "ms", "tokens_per_s",
                                       "mfu"]))
    if "profile" in report:
        print_profile(report["profile"])
    if "rows" in report.get("flex", {}):
        print(markdown(report["flex"]["rows"], ["L", "batch", "mask", "block_density", "pass", "flash_ms",
                                                "sdpa_mask_ms", "flex_ms", "flex_vs_sdpa_mask", "flex_vs_flash",
                                                "auto", "auto_faster"]))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
