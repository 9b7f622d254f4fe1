"""How long a run will take on this machine, said before it starts (`make demo` prints it first).

    python -m sparsebert estimate [--configfile config/config.yaml]
    python -m sparsebert estimate --record logs/default --wall-seconds 1234 --install-seconds 90

A few seconds of measurement: the run's own pretraining step (its model, batch, sequence length and precision as
`auto` resolves it here, one thread per job as the config's resources say) timed on this CPU, divided by the same
step timed on the machine where a finished run of this config was measured (benchmarks/results/
demo_<run>.json: wall time, per-rule job seconds, that machine's step). Every training job is dominated by
such steps, so the run's wall time scales by that ratio; start-up and data jobs are assumed to scale alike
(they are a small share). `--record` writes the reference from a finished run's Snakemake benchmark files.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import statistics
import time
from datetime import date
from pathlib import Path

import yaml

from sparsebert import precision, recipes
from sparsebert.io import UserError, atomic_write_json

REFERENCES = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
PROBE_SECONDS = 3.0  # timed steps after the warm-up: enough for a stable median on an idle machine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configfile", type=Path, default=Path("config/config.yaml"))
    parser.add_argument("--reference", type=Path, default=None,
                        help="reference timing (default: benchmarks/results/demo_<run>.json)")
    parser.add_argument("--cores", type=int, default=None, help="cores Snakemake gets (default: this machine's)")
    parser.add_argument("--record", type=Path, default=None,
                        help="write the reference from this finished run's logs (logs/<run>) instead")
    parser.add_argument("--wall-seconds", type=float, help="with --record: the measured wall time of the DAG")
    parser.add_argument("--install-seconds", type=float, help="with --record: the measured install time")


def run(args: argparse.Namespace) -> None:
    config = load_config(args.configfile)
    reference = args.reference or REFERENCES / f"demo_{config.get('run', 'default')}.json"
    if args.record is not None:
        if args.wall_seconds is None:
            raise UserError("--record needs --wall-seconds (the measured wall time of the run's DAG)")
        record(config, args.configfile, args.record, args.wall_seconds, args.install_seconds, reference)
        return
    print(estimate_line(config, args.configfile, reference, args.cores or os.cpu_count() or 1))


def load_config(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    return yaml.safe_load(path.read_text())


def config_digest(path: Path) -> str:
    """The config's content (comments and layout aside), to tell whether the reference ran this config."""
    content = json.dumps(yaml.safe_load(path.read_text()), sort_keys=True)
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def probe_step_seconds(config: dict) -> tuple[float, str]:
    """Median seconds of one pretraining step (forward, backward, the recipe's optimizer as the pipeline builds
    it; dropout on) at the run's shape and precision, with the threads of one pretraining job; and the
    precision's name."""
    import torch

    from sparsebert.pretrain import build_model
    from sparsebert.training import build_optimizer

    recipe = recipes.fill("pretrain", config["pretrain"])
    examples = config.get("examples", {})
    T, P = examples.get("max_seq_length", 128), examples.get("max_predictions_per_seq", 20)
    B, vocab = recipe["batch_size"], config.get("tokenizer", {}).get("vocab_size", 30522)
    threads = config.get("resources", {}).get("pretrain", {}).get("threads", 1)
    caller_threads = torch.get_num_threads()
    prec = precision.resolve(recipe["precision"], "cpu")
    torch.manual_seed(0)
    model = build_model(recipe, vocab, T, "dense", {}, None).train()
    optimizer = build_optimizer(model, recipe)
    ids = torch.randint(5, vocab, (B, T))
    positions = torch.rand(B, T).argsort(dim=1)[:, :P].sort(dim=1).values
    batch = dict(input_ids=ids, token_type_ids=torch.zeros_like(ids), attention_mask=torch.ones_like(ids),
                 masked_lm_positions=positions, masked_lm_ids=ids.gather(1, positions),
                 next_sentence_label=torch.zeros(B, dtype=torch.long))

    def step() -> float:
        start = time.perf_counter()
        with prec.autocast():
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    # The job's threads for the probe only: a caller in the same process (a test, a notebook) keeps its own, and
    # with them the order of its reductions (a training run there would not be bit-identical to one in a process).
    torch.set_num_threads(threads)
    try:
        step(), step()  # warm-up: first-call allocations and kernel selection
        times, began = [], time.perf_counter()
        while time.perf_counter() - began < PROBE_SECONDS or len(times) < 5:
            times.append(step())
    finally:
        torch.set_num_threads(caller_threads)
    return statistics.median(times), prec.name


def job_seconds(logs: Path) -> dict[str, dict]:
    """{rule: {"jobs": n, "seconds": sum}} from Snakemake's benchmark files under logs/<run>/benchmarks/."""
    root = logs / "benchmarks"
    files = sorted(root.rglob("*.tsv"))
    if not files:
        raise UserError(f"no Snakemake benchmark files under {root}: is {logs} a finished run's log folder?")
    rules: dict[str, dict] = {}
    for path in files:
        with path.open() as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        entry = rules.setdefault(path.relative_to(root).parts[0], {"jobs": 0, "seconds": 0.0})
        entry["jobs"] += 1
        entry["seconds"] = round(entry["seconds"] + float(row["s"]), 1)
    return rules


def machine() -> dict:
    caps = precision.isa_cap()
    flags = precision.cpu_flags()
    isa = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "older"
    return {"cpu": precision.cpu_model(), "cores": os.cpu_count(), "isa": isa, "bf16_flags": precision.cpu_bf16_flags(),
            "isa_cap": caps}


def record(config: dict, config_path: Path, logs: Path, wall: float, install: float | None, out: Path) -> None:
    import torch

    rules = job_seconds(logs)
    step, prec = probe_step_seconds(config)
    reference = {"config": str(config_path), "config_sha256_16": config_digest(config_path),
                 "date": date.today().isoformat(), "torch": torch.__version__, "machine": machine(),
                 "precision": prec, "probe_step_s": round(step, 5), "dag_wall_s": round(wall, 1),
                 "install_s": install and round(install, 1), "jobs": rules}
    atomic_write_json(out, reference)
    print(f"wrote {out}: {json.dumps(reference)}")


def estimate_line(config: dict, config_path: Path, reference_path: Path, cores: int) -> str:
    """One paragraph: the expected wall time here, and what it was derived from."""
    if not reference_path.is_file():
        return (f"estimate: no reference timing for this config ({reference_path} is missing): "
                f"no estimate; the run's per-job times land in logs/{config.get('run', 'default')}/benchmarks/.")
    ref = json.loads(reference_path.read_text())
    step, prec = probe_step_seconds(config)
    factor = step / ref["probe_step_s"]
    ref_cores = ref["machine"]["cores"]
    # More cores run more jobs side by side; fewer serialize them. The total job time scales by the CPU factor.
    total = sum(rule["seconds"] for rule in ref["jobs"].values()) * factor
    wall = ref["dag_wall_s"] * factor * (ref_cores / cores if cores < ref_cores else 1.0)
    if cores > ref_cores:
        wall = max(total / cores, ref["dag_wall_s"] * factor / 2)  # the data and report jobs stay serial
    same = config_digest(config_path) == ref["config_sha256_16"]
    install = f" plus the install (measured {ref['install_s'] / 60:.1f} min there)" if ref.get("install_s") else ""
    return (f"estimate: about {wall / 60:.0f} min for the DAG on {cores} core(s){install}. This CPU runs one "
            f"pretraining step of this config in {step * 1e3:.0f} ms ({prec}); the reference machine "
            f"({ref['machine']['cpu']}, {ref['machine']['isa']}"
            f"{', ' + ref['machine']['isa_cap'] if ref['machine'].get('isa_cap') else ''}, {ref['precision']}) in "
            f"{ref['probe_step_s'] * 1e3:.0f} ms and ran the whole DAG in {ref['dag_wall_s'] / 60:.1f} min on "
            f"{ref_cores} cores ({reference_path.name}, {ref['date']})"
            f"{'' if same else '; the config differs from the reference run, so this is rougher'}.")
