"""How long a run will take on this machine, said before it starts (`make demo` prints it first).

    python -m sparsebert estimate [--configfile config/config.yaml]
    python -m sparsebert estimate --record logs/default --wall-seconds 1234 --install-seconds 90

A few seconds of measurement: the run's own pretraining step (its model, batch, sequence length and precision as
`auto` resolves it here, one thread per job as the config's resources say) timed on this CPU, divided by the same
step timed on the machine where a finished run of this config was measured (benchmarks/results/
demo_<run>.json: wall time, per-rule job seconds, that machine's step). Every training job is dominated by
such steps, so the run's wall time scales by that ratio; start-up and data jobs are assumed to scale alike
(they are a small share). `--record` writes the reference from a finished run's Snakemake benchmark files.

A run may be recorded on several CPU kinds (demo_<run>.json, demo_<run>_<machine>.json). The ratio of steps
carries best between machines that run the same arithmetic: bf16 speeds the pretraining step up more than the
fine-tuning evaluation and the data jobs, so a bf16 reference mispredicts an fp32 machine (claim 1's demo on an
AVX2-only CPU: 77 min predicted from a bf16 reference, 63 measured). So the estimate uses the reference nearest
this machine: same precision first, then the same instruction set (and cap), CPU model, config; the newest last.
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
# What the estimate reads of a reference (`record` writes more: torch, install time, the config's path).
REFERENCE_SCHEMA = {
    "type": "object",
    "required": ["precision", "probe_step_s", "dag_wall_s", "date", "config_sha256_16", "machine", "jobs"],
    "properties": {
        "run": {"type": "string"},
        "precision": {"type": "string"},
        "probe_step_s": {"type": "number", "exclusiveMinimum": 0},  # divides this machine's step
        "dag_wall_s": {"type": "number", "minimum": 0},
        "install_s": {"type": ["number", "null"], "minimum": 0},
        "date": {"type": "string"},
        "config_sha256_16": {"type": "string"},
        "machine": {"type": "object", "required": ["cpu", "cores", "isa"],
                    "properties": {"cpu": {"type": "string"}, "cores": {"type": "integer", "minimum": 1},
                                   "isa": {"type": "string"}, "isa_cap": {"type": ["string", "null"]}}},
        "jobs": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["seconds"], "properties": {"seconds": {"type": "number", "minimum": 0}}}},
    },
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configfile", type=Path, default=Path("config/config.yaml"))
    parser.add_argument("--reference", type=Path, default=None,
                        help="reference timing (default: the nearest to this machine of benchmarks/results/"
                             "demo_<run>.json and demo_<run>_<machine>.json)")
    parser.add_argument("--cores", type=int, default=None, help="cores Snakemake gets (default: this machine's)")
    parser.add_argument("--record", type=Path, default=None,
                        help="write the reference from this finished run's logs (logs/<run>) instead")
    parser.add_argument("--wall-seconds", type=float, help="with --record: the measured wall time of the DAG")
    parser.add_argument("--install-seconds", type=float, help="with --record: the measured install time")


def run(args: argparse.Namespace) -> None:
    config = load_config(args.configfile)
    name = run_name(config)
    if args.record is not None:
        if args.wall_seconds is None:
            raise UserError("--record needs --wall-seconds (the measured wall time of the run's DAG)")
        out = args.reference or REFERENCES / f"demo_{name}.json"
        record(config, args.configfile, args.record, args.wall_seconds, args.install_seconds, out)
        return
    candidates = [args.reference] if args.reference else recorded_runs(name, REFERENCES)
    print(estimate_line(config, args.configfile, candidates, args.cores or os.cpu_count() or 1))


def run_name(config: dict) -> str:
    return config.get("run", "default")


def recorded_runs(run: str, root: Path) -> list[Path]:
    """The references of `run`: demo_<run>.json, and demo_<run>_<machine>.json that say they ran `run` (the
    name alone would also match another run's, e.g. run `cpu` and demo_cpu_claim1.json)."""
    primary = root / f"demo_{run}.json"
    others = [path for path in sorted(root.glob(f"demo_{run}_*.json")) if _read_json(path).get("run") == run]
    return [primary, *others] if primary.is_file() else others


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"reference timing {path} is not readable JSON: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"reference timing {path} must hold a JSON object, got {type(data).__name__}")
    return data


def read_reference(path: Path) -> dict:
    """A reference timing, checked against REFERENCE_SCHEMA: a damaged or hand-edited file ends in one error
    that names it and the key, not in a KeyError halfway through the estimate."""
    ref = _read_json(path)
    error = next(recipes.strict_validator(REFERENCE_SCHEMA).iter_errors(ref), None)  # the first, in schema order
    if error is not None:
        key = ".".join(map(str, error.path))
        raise UserError(f"reference timing {path}: {key + ': ' if key else ''}{error.message}; "
                        f"write it anew with `sparsebert estimate --record`")
    return ref


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

    from sparsebert.plan import vocab_size
    from sparsebert.pretrain import build_model
    from sparsebert.training import build_optimizer

    recipe = recipes.fill("pretrain", config["pretrain"])
    examples = recipes.fill("examples", config.get("examples", {}))
    T, P = examples["max_seq_length"], examples["max_predictions_per_seq"]
    B, vocab = recipe["batch_size"], vocab_size(config)  # the schema's defaults, or a pretrained tokenizer's
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
    reference = {"run": run_name(config), "config": str(config_path), "config_sha256_16": config_digest(config_path),
                 "date": date.today().isoformat(), "torch": torch.__version__, "machine": machine(),
                 "precision": prec, "probe_step_s": round(step, 5), "dag_wall_s": round(wall, 1),
                 "install_s": install and round(install, 1), "jobs": rules}
    atomic_write_json(out, reference)
    print(f"wrote {out}: {json.dumps(reference)}")


def nearest(refs: dict[Path, dict], precision_name: str, here: dict, digest: str) -> tuple[Path, dict, str]:
    """Of the references read ({path: reference}), the one most like this machine; and what it shares with it, in
    words."""
    def likeness(ref: dict) -> tuple:
        there = ref["machine"]
        return (ref["precision"] == precision_name,
                (there.get("isa"), there.get("isa_cap")) == (here["isa"], here["isa_cap"]),
                there.get("cpu") == here["cpu"], ref["config_sha256_16"] == digest, ref["date"])

    path = max(refs, key=lambda p: likeness(refs[p]))
    if len(refs) == 1:
        return path, refs[path], ""
    shared = [what for what, same in zip(("precision", "instruction set", "CPU model"), likeness(refs[path])) if same]
    why = f"same {', '.join(shared)} as here" if shared else "none matches this machine's precision or instruction set"
    return path, refs[path], f"; the nearest of {len(refs)} recorded runs: {why}"


def estimate_line(config: dict, config_path: Path, candidates: list[Path], cores: int) -> str:
    """One paragraph: the expected wall time here, and what it was derived from."""
    found = [path for path in candidates if path.is_file()]
    if not found:
        where = ", ".join(str(path) for path in candidates) or f"{REFERENCES}/demo_{run_name(config)}*.json"
        return (f"estimate: no reference timing for this config ({where}: missing): "
                f"no estimate; the run's per-job times land in logs/{run_name(config)}/benchmarks/.")
    refs = {path: read_reference(path) for path in found}  # checked before the probe spends its seconds
    step, prec = probe_step_seconds(config)
    same_config = config_digest(config_path)
    reference_path, ref, chosen = nearest(refs, prec, machine(), same_config)
    factor = step / ref["probe_step_s"]
    ref_cores = ref["machine"]["cores"]
    # More cores run more jobs side by side; fewer serialize them. The total job time scales by the CPU factor.
    total = sum(rule["seconds"] for rule in ref["jobs"].values()) * factor
    wall = ref["dag_wall_s"] * factor * (ref_cores / cores if cores < ref_cores else 1.0)
    if cores > ref_cores:
        wall = max(total / cores, ref["dag_wall_s"] * factor / 2)  # the data and report jobs stay serial
    same = same_config == ref["config_sha256_16"]
    install = f" plus the install (measured {ref['install_s'] / 60:.1f} min there)" if ref.get("install_s") else ""
    return (f"estimate: about {wall / 60:.0f} min for the DAG on {cores} core(s){install}. This CPU runs one "
            f"pretraining step of this config in {step * 1e3:.0f} ms ({prec}); the reference machine "
            f"({ref['machine']['cpu']}, {ref['machine']['isa']}"
            f"{', ' + ref['machine']['isa_cap'] if ref['machine'].get('isa_cap') else ''}, {ref['precision']}) in "
            f"{ref['probe_step_s'] * 1e3:.0f} ms and ran the whole DAG in {ref['dag_wall_s'] / 60:.1f} min on "
            f"{ref_cores} cores ({reference_path.name}, {ref['date']}{chosen})"
            f"{'' if same else '; the config differs from the reference run, so this is rougher'}.")
