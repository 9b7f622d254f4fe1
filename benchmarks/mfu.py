"""Model FLOP utilisation (MFU) of a pretraining step in fp32 and in bf16 autocast, at three shapes; and the
default recipe trained in both precisions (loss curves and the loop's own tokens/s).

MFU = analytic FLOPs of one training step / step time / peak. The peak is a plain square matmul of the same
dtype and thread count, measured in the same run: each precision is measured against its own ceiling on this
CPU, and a busy machine lowers peak and step alike. One step = zero_grad + forward + MLM/NSP loss + backward +
AdamW, dropouts on, as in benchmarks/pretrain.py; fp32 and bf16 steps alternate (interleaved medians).

FLOPs (a multiply-add is 2), for B sequences of T tokens with P masked positions each, hidden d, feed-forward
f, vocabulary V; a training step is 3 x the forward (the backward runs two matmuls per forward matmul):
  per layer and token    2 (4 d^2 + 2 d f)   Q, K, V and output projections; feed-forward
  per layer, sequence    4 T^2 d             QK^T and weights x V (SDPA computes every entry, masked or not)
  MLM head, per position 2 (d^2 + d V)       transform + vocabulary projection at the P masked positions only
  NSP, per sequence      2 (d^2 + 2 d)       pooler + classifier
Embedding lookups, LayerNorm, GELU, softmax, dropout and the optimizer are not counted (memory-bound, and not
what MFU measures). The count is checked against torch.utils.flop_counter on the default shape every run.

Threads: 1, the pipeline's layout (`resources: threads: 1`, one job per core). `make bench` runs this file in a
process of its own, without run.py's malloc setting: with MALLOC_MMAP_THRESHOLD_=65536 every activation is a fresh
mmap, and a bf16 step measured only 1.11-1.17x fp32 instead of 1.43-1.49x (default shape, same machine).
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from attention import write_csv
from common import MALLOC_ENV, OUT, THREADS, markdown, median_times
from sparsebert import precision
from sparsebert.dam import no_weight_decay_groups
from sparsebert.modeling import SparseBertConfig, SparseBertForPreTraining
from sparsebert.plan import pretrain_step_flops

MFU_THREADS = 1
LOSS_TOLERANCE = 0.05  # nats per logged loss, bf16 vs fp32: the bound tests/test_precision.py checks on a tiny recipe
# name -> (model, B, T, P). "default" is config/config.yaml's pretraining shape; BERT-base uses a small batch
# so that its steps fit the benchmark's time on 1 core (MFU hardly depends on B at this size).
SHAPES = {
    "default (h128, 2 layers, V 4000)": (dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                              intermediate_size=512, vocab_size=4000), 32, 64, 10),
    "h256, 4 layers, V 8000": (dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                    intermediate_size=1024, vocab_size=8000), 32, 128, 20),
    "BERT-base (h768, 12 layers, V 30522)": (dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                                  intermediate_size=3072, vocab_size=30522), 4, 128, 20),
}


def step_flops(model: dict, B: int, T: int, P: int) -> float:
    """Analytic FLOPs of one training step (forward + backward; see the module docstring): the count the cost
    plan uses (`sparsebert.plan.pretrain_step_flops`), checked against torch's own count in main()."""
    return pretrain_step_flops(model, model["vocab_size"], B, T, P)


def make_batch(model: dict, B: int, T: int, P: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, model["vocab_size"], (B, T), generator=g)
    positions = torch.stack([torch.randperm(T - 1, generator=g)[:P] + 1 for _ in range(B)]).sort(-1).values
    return dict(input_ids=ids, attention_mask=torch.ones(B, T, dtype=torch.long),
                token_type_ids=(torch.arange(T) >= T // 2).long().expand(B, T), masked_lm_positions=positions,
                masked_lm_ids=ids.gather(1, positions), next_sentence_label=torch.randint(0, 2, (B,), generator=g))


def build(model: dict, T: int) -> SparseBertForPreTraining:
    torch.manual_seed(0)
    return SparseBertForPreTraining(SparseBertConfig(**model, max_position_embeddings=T, attention_mask_type="dense"))


def step_fn(net, batch: dict, prec: precision.Precision):
    optimizer = torch.optim.AdamW(no_weight_decay_groups(net, 0.01), lr=1e-4)
    net.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with prec.autocast():
            loss = net(**batch).loss
        loss.backward()
        optimizer.step()

    return step


def counted_flops(model: dict, B: int, T: int, P: int) -> int:
    """torch's own count of the matmul FLOPs of one forward + backward (to check `step_flops`)."""
    net, batch = build(model, T), make_batch(model, B, T, P)
    with FlopCounterMode(display=False) as counter:
        net(**batch).loss.backward()
    return counter.get_total_flops()


def matmul_peak(dtype: torch.dtype, n: int = 1024, repeats: int = 7) -> float:
    """FLOP/s of an n x n x n matmul in `dtype` (median of repeats), this run's ceiling for that dtype."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    t = median_times({"mm": lambda: a @ b}, repeats=repeats, warmup=2)["mm"]
    return 2 * n**3 / t


def shape_rows(quick: bool, names: tuple[str, ...] = ("fp32", "bf16")) -> list[dict]:
    precs = {name: precision.resolve(name, "cpu") for name in names}
    peaks = {name: matmul_peak(p.dtype) for name, p in precs.items()}
    rows = []
    for i, (label, (model, B, T, P)) in enumerate(SHAPES.items()):
        batch, flops = make_batch(model, B, T, P), step_flops(model, B, T, P)
        steps = {name: step_fn(build(model, T), batch, p) for name, p in precs.items()}
        repeats = (3 if quick else 10) if i == 0 else (2 if quick else 5) if i == 1 else (1 if quick else 3)
        t = median_times(steps, repeats=repeats, warmup=1)
        for name, seconds in t.items():
            rows.append(dict(shape=label, B=B, T=T, precision=name, step_ms=1e3 * seconds,
                             tokens_per_s=B * T / seconds, GFLOP_per_step=flops / 1e9,
                             peak_GFLOPs=peaks[name] / 1e9, MFU=flops / seconds / peaks[name],
                             x_fp32=t["fp32"] / seconds))
        del steps
    return rows


# ---------------------------------------------------------------------------------------------------------
# The default recipe in fp32 and bf16: the real training loop (sparsebert.pretrain.train), same data and seed.


def default_config() -> dict:
    import yaml

    return yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())


def synthetic_pretraining_data(root: Path, vocab_size: int, seq_len: int, predictions: int, n: int) -> tuple:
    """A learnable stand-in for the corpus, in the layout `sparsebert examples` writes: Zipf-distributed words,
    each repeated once (a neighbour reveals a masked word), NSP pairs with a random second segment half the time."""
    from transformers import BertTokenizerFast

    from sparsebert.data.pretraining import write_examples

    rng = np.random.default_rng(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(vocab_size - 5)]
    (root / "tokenizer").mkdir(parents=True)
    (root / "tokenizer" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(root / "tokenizer" / "vocab.txt")).save_pretrained(str(root / "tokenizer"))
    words = np.arange(5, vocab_size)
    zipf = 1.0 / np.arange(1, len(words) + 1) ** 1.1
    zipf /= zipf.sum()

    def rows(count: int) -> dict:
        out = {k: [] for k in ["input_ids", "token_type_ids", "attention_mask", "masked_lm_positions",
                               "masked_lm_ids", "next_sentence_label"]}
        for _ in range(count):
            length = int(rng.integers(seq_len // 2, seq_len + 1))
            body = np.repeat(rng.choice(words, size=length, p=zipf), 2)[: length - 3].tolist()
            cut = len(body) // 2
            ids = [2] + body[:cut] + [3] + body[cut:] + [3]
            nsp = int(rng.random() < 0.5)
            if nsp:
                ids[cut + 2 : -1] = rng.choice(words, size=len(body) - cut, p=zipf).tolist()
            pos = sorted(rng.choice(np.arange(1, len(ids) - 1), size=predictions, replace=False).tolist())
            labels = [ids[p] for p in pos]
            for p in pos:
                ids[p] = 4
            pad = seq_len - len(ids)
            out["input_ids"].append(ids + [0] * pad)
            out["token_type_ids"].append([0] * (cut + 2) + [1] * (len(body) - cut + 1) + [0] * pad)
            out["attention_mask"].append([1] * len(ids) + [0] * pad)
            out["masked_lm_positions"].append(pos)
            out["masked_lm_ids"].append(labels)
            out["next_sentence_label"].append(nsp)
        return out

    splits = {"train": rows(n), "validation": rows(512)}
    write_examples(root / "examples", {split: {k: np.asarray(v) for k, v in columns.items()}
                                       for split, columns in splits.items()}, vocab_size=vocab_size, pad_id=0)
    return root / "examples", root / "tokenizer"


def loss_curves(quick: bool) -> tuple[list[dict], str]:
    """Train the default recipe twice (fp32, bf16) through the pipeline's own loop; compare the logged losses."""
    from sparsebert.pretrain import DEFAULTS, train

    config = default_config()
    recipe, examples = config["pretrain"], config["examples"]
    recipe = {**DEFAULTS, **recipe, "model": {**DEFAULTS["model"], **recipe["model"]}}
    if quick:
        recipe["max_steps"] = 60
    repo = Path(__file__).resolve().parents[1]
    run = repo / "data" / config.get("run", "default")  # the default run's data (data/<run>/, README "The pipeline")
    real = run / "examples", run / "tokenizer"
    logging.disable(logging.INFO)  # the loop's progress lines
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if all((p / name).exists() for p, name in zip(real, ["stats.json", "tokenizer.json"])):
            data, source = real, "the default corpus (data/default/examples from `make demo`)"
        else:
            data = synthetic_pretraining_data(tmp / "data", config["tokenizer"]["vocab_size"],
                                              examples["max_seq_length"], examples["max_predictions_per_seq"],
                                              recipe["max_steps"] * recipe["batch_size"])
            source = "synthetic Zipf text (no data/default/examples: run `make demo` for the real corpus)"
        logs = {}
        for name in ("fp32", "bf16"):
            out = tmp / name
            summary = train(*data, {**recipe, "precision": name}, "dense", {}, None, None, out, tmp / f"{name}.state")
            logs[name] = ([json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()], summary)
    logging.disable(logging.NOTSET)
    (f32, s32), (b16, s16) = logs["fp32"], logs["bf16"]
    rows = [dict(step=a["step"], loss_fp32=a["loss"], loss_bf16=b["loss"], diff=b["loss"] - a["loss"])
            for a, b in zip(f32, b16)]
    write_csv(rows, OUT / "bf16_loss_curve.csv")
    diffs = [abs(r["diff"]) for r in rows]
    rel = max(abs(r["diff"]) / r["loss_fp32"] for r in rows)
    verdict = "within" if max(diffs) <= LOSS_TOLERANCE else "NOT within"
    note = (
        f"Default recipe ({recipe['max_steps']} steps x {recipe['batch_size']} x {examples['max_seq_length']} tokens, "
        f"lr {recipe['lr']}, seed {recipe['seed']}) on {source}, through `sparsebert.pretrain.train`, "
        f"logged every {recipe['log_every']} steps: loss fp32 {f32[0]['loss']:.3f} -> {f32[-1]['loss']:.3f}, "
        f"bf16 {b16[0]['loss']:.3f} -> {b16[-1]['loss']:.3f}; max |bf16 - fp32| {max(diffs):.4f} "
        f"({100 * rel:.2f} % of the fp32 loss), mean {np.mean(diffs):.4f}: {verdict} the tolerance of "
        f"{LOSS_TOLERANCE} nats. Held-out MLM accuracy fp32 "
        f"{s32.get('val_mlm_acc', math.nan):.4f}, bf16 {s16.get('val_mlm_acc', math.nan):.4f}. The loop's own "
        f"tokens/s (median of its log lines, data path and logging included): fp32 {s32['tokens_per_s']:.0f}, "
        f"bf16 {s16['tokens_per_s']:.0f} ({s16['tokens_per_s'] / s32['tokens_per_s']:.2f}x)."
    )
    return rows, note


def main(quick: bool = False) -> str:
    torch.set_num_threads(MFU_THREADS)
    try:
        model, B, T, P = next(iter(SHAPES.values()))
        counted, analytic = counted_flops(model, 4, T, P), step_flops(model, 4, T, P)
        if abs(counted / analytic - 1) > 1e-9:
            raise AssertionError(f"analytic FLOPs {analytic:.0f} != torch's count {counted} at the default shape")
        # Where bf16 is emulated (no avx512_bf16/AMX, or an ISA cap) a bf16 step is several times slower than
        # fp32 and the default recipe's bf16 training would take most of `make bench`: fp32 only, and say why.
        auto = precision.resolve("auto", "cpu")
        native = auto.name == "bf16"
        rows = shape_rows(quick, ("fp32", "bf16") if native else ("fp32",))
        curve = loss_curves(quick)[1] if native else (
            f"bf16 skipped on this CPU (`precision: auto` gives fp32: {auto.reason}): the bf16 rows and the bf16 vs "
            f"fp32 loss curve of the default recipe need native bf16; fp32 alone is what the pipeline runs here.")
    finally:
        torch.set_num_threads(THREADS)
    write_csv(rows, OUT / "mfu.csv")
    have = precision.cpu_bf16_flags()
    return "\n\n".join([
        f"### Model FLOP utilisation, one pretraining step (forward, backward, AdamW), fp32 vs bf16 autocast, "
        f"{MFU_THREADS} thread; peak = a {1024}^3 matmul of the same dtype in this run; x_fp32 = tokens/s over "
        f"fp32's at the same shape. CPU: {precision.cpu_model()}, bf16 flags: {' '.join(have) or 'none'} (of "
        f"{' '.join(precision.BF16_CPU_FLAGS)}); `precision: auto` here: {auto.name}. Analytic FLOPs = "
        f"torch.utils.flop_counter's count (checked this run).",
        markdown(rows, ["shape", "B", "T", "precision", "step_ms", "tokens_per_s", "GFLOP_per_step", "peak_GFLOPs",
                        "MFU", "x_fp32"]),
        curve,
    ])


def main_isolated(quick: bool = False) -> str:
    """main() in a fresh process without run.py's malloc setting (see the module docstring)."""
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    env.update(TQDM_DISABLE="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    r = subprocess.run([sys.executable, __file__, *(["--quick"] if quick else [])], env=env, capture_output=True,
                       text=True)  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"benchmarks/mfu.py failed:\n{r.stderr[-3000:]}")
    return r.stdout.strip()


if __name__ == "__main__":
    from common import setup

    setup()
    print(main("--quick" in sys.argv))
