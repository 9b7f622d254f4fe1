"""Learning curves of the tiny default model on the embedded corpus: what can the default run learn?

Runs `sparsebert pretrain` for a grid of recipes on the examples of a finished default run (one thread per
run, as the DAG runs them), then writes, for every run:
  - train MLM / NSP accuracy against tokens seen (from the run's log.jsonl),
  - validation MLM / NSP accuracy at the end and the unigram floor (summary.json),
  - order reliance: validation MLM accuracy with the position ids shuffled. A model that predicts as well
    with its positions shuffled has learned a bag of context words, not word order: the proxy tasks whose
    classes differ only in order (proxy_single, proxy_choice) are then unlearnable for it.
and a figure (MLM accuracy vs tokens, the unigram floor, 3x the floor). Runs already finished in --out are
reused, so the grid can be extended and re-plotted. Long (minutes per run): a benchmark, not a test.

    python benchmarks/learning_curves.py --data data/default --out results/benchmarks/learning_curves \
        --figure docs/learning_curves.png [--only NAME ...] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import yaml

MODEL = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 512}
BASE = {"model": MODEL, "optimizer": "adamw", "lr": 2e-3, "warmup": 0.05, "max_steps": 3000,
        "log_every": 100, "checkpoint_every": 100000, "eval_examples": 986, "seed": 0}  # fmt: skip
# name -> (examples folder under --data, mask, recipe overrides). Batch x length = 2,048 tokens a step in all.
# `examples` is the default run's (length 128); `examples64` is the same corpus and tokenizer at length 64 with
# 10 predictions per sequence (`sparsebert examples --params '{"max_seq_length": 64, "max_predictions_per_seq": 10}'`).
GRID = {
    "dense_L64": ("examples64", "dense", {"batch_size": 32}),
    "dense_L64_lr5e-3": ("examples64", "dense", {"batch_size": 32, "lr": 5e-3}),
    "dense_L128": ("examples", "dense", {"batch_size": 16}),
}


def pretrain(name: str, data: Path, out: Path) -> Path:
    folder, mask, overrides = GRID[name]
    run = out / name
    if (run / "out" / "summary.json").is_file():
        return run
    recipe = {**BASE, **overrides}
    cmd = [sys.executable, "-m", "sparsebert", "pretrain", "--examples", str(data / folder), "--tokenizer",
           str(data / "tokenizer"), "--params", json.dumps(recipe), "--mask", mask, "--out", str(run / "out"),
           "--state-dir", str(run / "state")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(out / f"{name}.log", "w") as log:
        subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    return run


def order_reliance(model_dir: Path, examples: Path, n: int = 512) -> tuple[float, float]:
    """Validation MLM accuracy with the true position ids and with one random permutation of them."""
    from sparsebert.modeling import SparseBertForPreTraining
    from sparsebert.pretrain import load_examples

    model = SparseBertForPreTraining.from_pretrained(str(model_dir)).eval()
    batch = load_examples(examples)["validation"][:n]
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask", "masked_lm_positions")}
    labels = batch["masked_lm_ids"]

    def accuracy(position_ids=None) -> float:
        with torch.no_grad():
            logits = model(**inputs, position_ids=position_ids).prediction_logits
        kept = labels != -100
        return (logits.argmax(-1)[kept] == labels[kept]).float().mean().item()

    length = batch["input_ids"].shape[1]
    shuffled = torch.randperm(length, generator=torch.Generator().manual_seed(0)).unsqueeze(0)
    return accuracy(), accuracy(shuffled)


def collect(name: str, run: Path, data: Path) -> dict:
    folder, _, overrides = GRID[name]
    tokens_per_step = overrides["batch_size"] * (64 if folder.endswith("64") else 128)
    curve = [json.loads(line) for line in open(run / "state" / "log.jsonl") if '"mlm_acc"' in line]
    summary = json.loads((run / "out" / "summary.json").read_text())
    intact, shuffled = order_reliance(run / "out" / "model", data / folder)
    if "val_unigram_mlm_acc" not in summary:  # runs made before pretraining reported it
        from sparsebert.pretrain import load_examples, unigram_baseline

        examples = load_examples(data / folder)
        summary["val_unigram_mlm_acc"] = unigram_baseline(examples["train"], examples["validation"],
                                                          summary["val_examples"])  # fmt: skip
    return {
        "name": name, "tokens": [r["step"] * tokens_per_step for r in curve], "mlm_acc": [r["mlm_acc"] for r in curve],
        "nsp_acc": [r["nsp_acc"] for r in curve], "val_mlm_acc": summary["val_mlm_acc"],
        "val_nsp_acc": summary["val_nsp_acc"], "unigram": summary.get("val_unigram_mlm_acc"),
        "mlm_acc_positions_shuffled": shuffled, "mlm_acc_subset": intact,
    }  # fmt: skip


def plot(rows: list[dict], figure: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in rows:
        line, = ax.plot([t / 1e6 for t in r["tokens"]], [100 * a for a in r["mlm_acc"]], label=r["name"])
        ax.scatter([r["tokens"][-1] / 1e6], [100 * r["val_mlm_acc"]], color=line.get_color(), marker="o", zorder=3)
    floor = next(r["unigram"] for r in rows if r["unigram"])
    ax.axhline(100 * floor, color="gray", ls=":", label=f"unigram floor {100 * floor:.1f} %")
    ax.axhline(300 * floor, color="gray", ls="--", label="3x the floor")
    config = yaml.safe_load(Path("config/config.yaml").read_text())  # where the default run stops
    budget = config["pretrain"]["max_steps"] * config["pretrain"]["batch_size"] * config["examples"]["max_seq_length"]
    ax.axvline(budget / 1e6, color="black", lw=0.8, label=f"default run ({budget / 1e6:.1f}M tokens)")
    ax.set(xlabel="tokens seen (millions)", ylabel="MLM accuracy, % (line: train, dot: validation)",
           title="Tiny BERT (2 layers, hidden 128) on the embedded corpus")  # fmt: skip
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(figure, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/default"), help="data folder of a finished default run")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/learning_curves"))
    parser.add_argument("--figure", type=Path, help="where to write the figure (default: --out/learning_curves.png)")
    parser.add_argument("--only", nargs="+", choices=sorted(GRID), default=sorted(GRID))
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (one thread each)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = dict(zip(args.only, pool.map(lambda n: pretrain(n, args.data, args.out), args.only)))
    rows = [collect(name, run, args.data) for name, run in runs.items()]
    (args.out / "learning_curves.json").write_text(json.dumps(rows, indent=1))
    plot(rows, args.figure or args.out / "learning_curves.png")
    print("| run | tokens | val MLM % | x unigram | val MLM %, positions shuffled | val NSP % |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["val_mlm_acc"] / r["unigram"] if r["unigram"] else float("nan")
        print(f"| {r['name']} | {r['tokens'][-1] / 1e6:.1f}M | {100 * r['val_mlm_acc']:.1f} | {ratio:.2f} | "
              f"{100 * r['mlm_acc_positions_shuffled']:.1f} (same subset intact: {100 * r['mlm_acc_subset']:.1f}) | "
              f"{100 * r['val_nsp_acc']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
