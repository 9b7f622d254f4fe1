"""What a config costs before it runs: per rule, jobs, FLOPs, GPU-hours, wall time on N GPUs and disk.

    python -m sparsebert plan --configfile config/paper.yaml --gpus 8 [--gpu-json benchmarks/results/gpu_h200.json]

GPU-hours = FLOPs / (MFU x the measured matmul peak of the job's precision), with the MFU measured for that kind
of job on that GPU, read from a JSON written by benchmarks/gpu.py (the output names the file and the entry it
used). `auto` is bf16 on a GPU (precision.resolve); an fp32 job (paper.yaml's SWAG, as the official script) runs
at the fp32 peak, an order of magnitude below bf16's on tensor-core GPUs (the pipeline leaves TF32 off, torch's default).
Where no measurement of a job's kind or precision exists, the nearest one stands in and the row says so; a kind
measured at another micro-batch only is scaled to the job's by a kind measured at both (`scaled_to`).

FLOPs (a multiply-add is 2; benchmarks/mfu.py measures MFU with this count and checks it against torch's
counter every run): a training step is 3 x the forward (the backward runs two matmuls per forward matmul). For B sequences of T tokens, P masked positions each, hidden
d, feed-forward f, vocabulary V, n layers:
  per layer and token    2 (4 d^2 + 2 d f)   Q, K, V and output projections; feed-forward
  per layer, sequence    4 T^2 d             QK^T and weights x V (sdpa computes every entry, masked or not)
  MLM head, per position 2 (d^2 + d V)       pretraining: at the P masked positions only
  NSP, per sequence      2 (d^2 + 2 d)       pretraining: pooler + classifier
Fine-tuning counts the encoder only (its heads are < 0.1 % of it). That is 6 x (encoder parameters) x tokens
plus the attention term, the usual 6ND rule with L^2 attention spelled out. Fine-tuning counts its training
epochs, not the evaluation at its end (forward passes over the dev sets: about 1 % of GLUE's FLOPs, 2 % of SQuAD's,
5 % of SWAG's; run in fp32, so a larger share of the time).

Fine-tuning is cut into jobs as the DAG cuts it (`tasks.jobs`): one job per variant x seed x task (`finetune`,
one row per task family), or per variant x seed running every task in turn (`finetune_model`, one row).
A job's GPUs are the launcher's (nodes x GPUs per node, from resources.<rule> and its per_variant entry), a
`gpu` above N lowered to N as Snakemake lowers it; a global batch that does not split over them stops the plan
(the run would stop at its first step), naming the GPU counts that do. The plan prices a config the workflow
accepts (validate's checks first). Wall time assumes each job's GPUs scale linearly, jobs of one rule run N / gpu
at a time, and the rules run one after another (a bound: Snakemake overlaps pretrain and dam_search).
Data preparation runs on CPUs: its cost comes from the rates measured in docs/data.md "Data preparation at paper
scale" (Wikipedia's 2.5e9 words at its own splitting rate, BookCorpus's 0.8e9 at the embedded mix's) and is known
only for the hub corpus.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import yaml

from sparsebert import launch, recipes, validate, variants
from sparsebert.io import UserError

DEFAULT_GPU_JSON = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "gpu_h200.json"

# Training-set sizes of the hub tasks (the datasets' own cards: GLUE's paper, Table 1; SQuAD; SWAG).
# SQuAD counts one 384-token window per question (most contexts fit); SWAG runs its 4 endings as 4 sequences.
HUB_TRAIN_EXAMPLES = {"cola": 8_551, "sst2": 67_349, "mrpc": 3_668, "stsb": 5_749, "qqp": 363_846, "mnli": 392_702,
                      "qnli": 104_743, "rte": 2_490, "wnli": 635, "squad_v1": 87_599, "squad_v2": 130_319,
                      "swag": 73_546}  # fmt: skip
SEQUENCES_PER_EXAMPLE = {"swag": 4, "proxy_choice": 4}
FAMILIES = {"glue": ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"),
            "squad": ("squad_v1", "squad_v2"), "swag": ("swag",)}  # fmt: skip
PRETRAINED_VOCAB = {"bert-base-uncased": 30_522, "bert-base-cased": 28_996}
# docs/data.md "Data preparation at paper scale" (2026-11-28, one job per core): words per CPU-second, bytes per
# word. Sentence splitting sets the corpus rate: Wikipedia's articles split at 36k words per CPU-second (timed
# alone); BookCorpus is priced at the embedded mix's 68k (not measured alone).
HUB_CORPUS_WORDS = {"wikipedia": 2.5e9, "bookcorpus": 0.8e9}
CORPUS_WORDS_PER_CPU_S = {"wikipedia": 36_000, "bookcorpus": 68_000}
EXAMPLES_WORDS_PER_CPU_S = 140_000
CORPUS_BYTES_PER_WORD, EXAMPLES_BYTES_PER_WORD = 18e9 / 3.3e9, 20.4
# Checkpoint bytes per parameter: fp32 weights (4) + the optimizer's two fp32 moments (8). A job keeps 2 while it
# runs, and a finished one still does where its recipe's keep_checkpoints says so; a save writes the newest before
# it removes the oldest, so a running job briefly holds one more.
CHECKPOINT_BYTES_PER_PARAM, CHECKPOINTS_KEPT, MODEL_BYTES_PER_PARAM = 12, 2, 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configfile", type=Path, required=True, help="a workflow config (config/paper.yaml)")
    parser.add_argument("--gpus", type=int, required=True, help="GPUs available to the run")
    parser.add_argument("--gpu-json", type=Path, default=DEFAULT_GPU_JSON,
                        help="measured MFU per kind of job on one GPU (benchmarks/gpu.py's output)")


def run(args: argparse.Namespace) -> None:
    if args.gpus < 1:
        raise UserError(f"--gpus must be >= 1, got {args.gpus}")
    if not args.configfile.exists():
        raise UserError(f"config file not found: {args.configfile}")
    measured = load_measurements(args.gpu_json)
    rows = plan(yaml.safe_load(args.configfile.read_text()), args.gpus, measured)
    print(render(rows, args.configfile, args.gpus, args.gpu_json, measured))


# -------------------------------------------------------------------------------------------------------
# FLOPs and parameters


def encoder_flops(model: dict, B: int, T: int) -> float:
    """Forward FLOPs of the encoder over B sequences of T tokens (see the module docstring)."""
    d, f, n = model["hidden_size"], model["intermediate_size"], model["num_hidden_layers"]
    return n * (B * T * 2 * (4 * d * d + 2 * d * f) + B * 4 * T * T * d)


def pretrain_step_flops(model: dict, vocab: int, B: int, T: int, P: int) -> float:
    """One pretraining step (forward + backward) of B sequences: encoder, MLM head at P positions, NSP."""
    d = model["hidden_size"]
    heads = B * P * 2 * (d * d + d * vocab) + B * 2 * (d * d + 2 * d)
    return 3.0 * (encoder_flops(model, B, T) + heads)


def parameter_count(model: dict, vocab: int, positions: int) -> int:
    """Parameters of SparseBertForPreTraining with a fixed mask (the decoder is tied to the word embeddings;
    a DAM search adds H x L logits, not counted)."""
    d, f, n = model["hidden_size"], model["intermediate_size"], model["num_hidden_layers"]
    embeddings = vocab * d + positions * d + 2 * d + 2 * d  # words, positions, 2 token types, LayerNorm
    layer = 4 * (d * d + d) + 2 * d + (d * f + f) + (f * d + d) + 2 * d
    heads = (d * d + d) + (d * d + d + 2 * d + vocab) + (2 * d + 2)  # pooler; MLM transform + bias; NSP
    return embeddings + n * layer + heads


# -------------------------------------------------------------------------------------------------------
# Measurements


# What the plan reads of benchmarks/gpu.py's JSON (other keys are the benchmark's own record).
GPU_JSON_SCHEMA = {
    "type": "object",
    "required": ["gpu", "torch", "date", "matmul_peak_tflops", "mfu"],
    "properties": {
        "gpu": {"type": "string"}, "torch": {"type": "string"}, "date": {"type": "string"},
        "matmul_peak_tflops": {"type": "object", "required": ["bf16"],
                               "additionalProperties": {"type": "number", "exclusiveMinimum": 0}},
        "mfu": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["job", "micro_batch", "compiled", "mfu"],
            "properties": {"job": {"type": "string"}, "micro_batch": {"type": "integer", "minimum": 1},
                           "compiled": {"type": "boolean"},
                           "mfu": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}}}},
    },
}


def load_measurements(path: Path) -> dict:
    """benchmarks/gpu.py's JSON, checked against GPU_JSON_SCHEMA: a damaged or hand-edited file ends in one error
    naming it and the key, not in a KeyError (or a division by an MFU of 0) halfway through the plan."""
    try:
        measured = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the GPU measurements {path} ({e}); run benchmarks/gpu.py on the GPU, or "
                        f"pass --gpu-json") from None
    error = next(recipes.strict_validator(GPU_JSON_SCHEMA).iter_errors(measured), None)  # the first, in schema order
    if error is not None:
        key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.path).lstrip(".")
        raise UserError(f"GPU measurements {path}: {key + ': ' if key else ''}{error.message}; write it anew with "
                        f"benchmarks/gpu.py")
    return {**measured, "path": str(path)}


# Which measurements price a rule, best first: the training loop itself (`pretrain_loop`: data path, logging
# and checkpoints included) over the bare forward+backward of the same model. The DAM search, where its bare step
# was measured beside the pretraining's, is priced from the pretraining (`relative_to_pretrain`); else as listed.
MEASURED_AS = {"pretrain": ("pretrain_loop", "pretrain"), "pretrain_learned": ("pretrain_loop", "pretrain"),
               "dam_search": ("dam_search", "pretrain_loop", "pretrain")}


def pick_mfu(measured: dict, job: str, micro_batch: int, compiled: bool) -> tuple[dict, str]:
    """The entry of the first measured kind for `job` (MEASURED_AS; a fine-tuning family: its own kind, then
    the pretraining step's), nearest to (micro_batch, compiled), and a note when it stands in for an
    unmeasured kind or another micro-batch. Between two equally near micro-batches the smaller one: its step is
    the more launch-bound, so the plan errs towards the higher cost. Measured at another micro-batch only, it is
    scaled to the job's by a later kind measured at both (`scaled_to`). The DAM search: `relative_to_pretrain`
    where its bare step was measured beside the pretraining's."""
    if job == "dam_search":
        derived = relative_to_pretrain(measured, micro_batch, compiled)
        if derived:
            return derived
    kinds = MEASURED_AS.get(job, (job, "pretrain_loop", "pretrain"))
    kind = next((k for k in kinds if any(e["job"] == k for e in measured["mfu"])), None)
    if kind is None:
        raise UserError(f"{measured.get('path', 'the GPU measurements')}: no entry for {job}, nor for what stands "
                        f"in for it ({', '.join(k for k in kinds if k != job)}); measure it with benchmarks/gpu.py")
    entries = [e for e in measured["mfu"] if e["job"] == kind]
    notes = [] if kind == kinds[0] else [f"{kind}'s: {' / '.join(kinds[:kinds.index(kind)])} not measured"]
    best = min(entries, key=nearest_to(micro_batch, compiled))
    if best["micro_batch"] != micro_batch:
        scaled, how = scaled_to(measured, best, micro_batch, kinds[kinds.index(kind) + 1:])
        notes.append(how or f"measured at micro-batch {best['micro_batch']}, not {micro_batch}")
        best = scaled or best
    return best, "; ".join(notes)


def nearest_to(micro_batch: int, compiled: bool):
    """The sort key of measurements by nearness to (micro_batch, compiled): micro-batches by their ratio, the
    compile setting next, then the smaller micro-batch (its step is the more launch-bound: the higher cost)."""
    return lambda e: (abs(math.log2(e["micro_batch"] / micro_batch)), e["compiled"] != compiled, e["micro_batch"])


def relative_to_pretrain(measured: dict, micro_batch: int, compiled: bool) -> tuple[dict, str] | None:
    """The DAM search priced as the pretraining it extends (`pick_mfu`'s entry for pretrain: the training loop
    where measured) times the ratio of the two bare steps measured side by side (dam_search / pretrain at one
    micro-batch and compile setting, the nearest to the job's). None where no such pair was measured. Priced by
    its bare step alone, the search came out cheaper than the pretraining once the loop itself was measured."""
    pairs = [(d, p) for d in measured["mfu"] if d["job"] == "dam_search" for p in measured["mfu"]
             if p["job"] == "pretrain" and (p["micro_batch"], p["compiled"]) == (d["micro_batch"], d["compiled"])]
    if not pairs:
        return None
    near = nearest_to(micro_batch, compiled)
    dam, bare = min(pairs, key=lambda pair: near(pair[0]))
    base, note = pick_mfu(measured, "pretrain", micro_batch, compiled)
    ratio = dam["mfu"] / bare["mfu"]
    how = (f"x {ratio:.3g}, the DAM search's bare step / the pretraining's at micro-batch {dam['micro_batch']}, "
           f"{'compiled' if dam['compiled'] else 'eager'}")
    return {**base, "mfu": base["mfu"] * ratio}, "; ".join(filter(None, [how, note]))


def scaled_to(measured: dict, entry: dict, micro_batch: int, references: tuple[str, ...]) -> tuple[dict | None, str]:
    """`entry` moved to `micro_batch` by how the MFU of the first reference kind measured at both micro-batches
    (same compile setting) changes between them: at the paper's micro-batch 64 the step is launch-bound, so a DAM
    search measured only at 256 would otherwise be priced at more than twice the MFU of the step it extends."""
    for ref in references:
        at = {e["micro_batch"]: e for e in measured["mfu"] if e["job"] == ref and e["compiled"] == entry["compiled"]}
        if entry["micro_batch"] in at and micro_batch in at:
            ratio = at[micro_batch]["mfu"] / at[entry["micro_batch"]]["mfu"]
            return ({**entry, "micro_batch": micro_batch, "mfu": entry["mfu"] * ratio},
                    f"measured at micro-batch {entry['micro_batch']}, scaled to {micro_batch} by {ref}'s MFU at "
                    f"{micro_batch} / {entry['micro_batch']}")
    return None, ""


def job_peak(measured: dict, precision: str) -> tuple[float, str]:
    """The matmul peak (FLOP/s) a job of `precision` runs at, and a note when another one stands in for it."""
    dtype = "fp32" if precision == "fp32" else "bf16"  # auto and bf16 both run bf16 autocast on a GPU
    peaks = measured["matmul_peak_tflops"]
    if dtype in peaks:
        return peaks[dtype] * 1e12, ""
    return peaks["bf16"] * 1e12, f"{precision} priced at the bf16 peak: no {dtype} peak measured, an underestimate"


# -------------------------------------------------------------------------------------------------------
# The plan


def vocab_size(config: dict) -> int:
    """The vocabulary a config's models have: the pretrained tokenizer's, or the one it trains."""
    tok = recipes.fill("tokenizer", config.get("tokenizer", {}))
    if tok["pretrained"]:
        if tok["pretrained"] not in PRETRAINED_VOCAB:
            raise UserError(f"tokenizer.pretrained {tok['pretrained']!r}: vocabulary size unknown to the plan")
        return PRETRAINED_VOCAB[tok["pretrained"]]
    return tok["vocab_size"]


def on_gpus(config: dict, gpus: int) -> dict:
    """The config as a run on `gpus` GPUs starts its jobs: Snakemake lowers a job's `gpu` above the run's
    `--resources gpu=N` to N (in `resources.<rule>` and in every per_variant entry alike)."""
    def lowered(res: dict) -> dict:
        return {**res, "gpu": min(res["gpu"], gpus)} if isinstance(res.get("gpu"), int) else res

    resources = {rule: {**lowered(res), **({"per_variant": {v: lowered(e) for v, e in res["per_variant"].items()}}
                                           if "per_variant" in res else {})}
                 for rule, res in config.get("resources", {}).items()}
    return {**config, "resources": resources}


def job_gpus(config: dict, rule: str, variant: str, table: dict, gpus: int) -> int:
    """GPUs of one job of `rule` for `variant` of `table` (nodes x GPUs per node, as the launcher starts it) on a
    run of `gpus` (the config as `on_gpus` left it). A CPU job is priced as if it had one GPU."""
    res = launch.rule_resources(config, rule, variants.resource_name(rule, variant, table))
    world = int(res["nodes"] or 1) * launch.gpus_per_node(res)
    if world > gpus:  # gres: gpu:N is per node, and Snakemake's gpu limit does not lower it
        raise UserError(f"resources.{rule}: a job of {variant} takes {world} GPUs ({res['nodes']} node(s)), more "
                        f"than the run's {gpus}")
    return max(1, world)


def _mfu_from(entry: dict, note: str) -> str:
    """Which measurement priced a job, and the note saying where it stands in for another."""
    return (f"{entry['job']}, micro-batch {entry['micro_batch']}, {'compiled' if entry['compiled'] else 'eager'}"
            + (f" ({note})" if note else ""))


def _row(rule, jobs, flops_per_job, peak_seconds_per_job, gpus_per_job, gpus, mfu_entry, note, disk, what) -> dict:
    """peak_seconds_per_job: the job's FLOPs / the matmul peak of their precision (its time at 100 % MFU).
    disk: (bytes a job leaves behind, bytes it holds only while it runs), each per job."""
    gpu_hours_per_job = peak_seconds_per_job / mfu_entry["mfu"] / 3600
    at_once = max(1, gpus // gpus_per_job)
    waves = math.ceil(jobs / at_once)
    return {"rule": rule, "jobs": jobs, "gpus_per_job": gpus_per_job, "flops": jobs * flops_per_job,
            "mfu": mfu_entry["mfu"], "mfu_from": _mfu_from(mfu_entry, note),
            "gpu_hours": jobs * gpu_hours_per_job, "wall_hours": waves * gpu_hours_per_job / gpus_per_job,
            "disk_bytes": jobs * disk[0], "running_disk_bytes": min(jobs, at_once) * disk[1], "what": what}


def training_rows(config: dict, gpus: int, measured: dict) -> list[dict]:
    """pretrain, dam_search and pretrain_learned: one row each, jobs = variants of that role x seeds (one row per
    GPU count where per_variant resources give a rule's variants different ones)."""
    config = on_gpus(config, gpus)
    table, seeds = variants.variant_table(config), config.get("seeds", [0])
    ex = recipes.fill("examples", config.get("examples", {}))
    vocab, T, P = vocab_size(config), ex["max_seq_length"], ex["max_predictions_per_seq"]
    rows = []
    for rule, role, recipe in (("pretrain", variants.FIXED, config["pretrain"]),
                               ("dam_search", variants.SEARCH, recipes.dam_search_recipe(config)),
                               ("pretrain_learned", variants.RETRAIN, config["pretrain"])):  # fmt: skip
        r = recipes.fill("pretrain", {k: v for k, v in recipe.items() if k != "seed"})
        by_gpus: dict[int, list[str]] = {}
        for variant in variants.named(table, role):
            by_gpus.setdefault(job_gpus(config, rule, variant, table, gpus), []).append(variant)
        for g, names in (by_gpus or {1: []}).items():
            label = rule if len(by_gpus) < 2 else f"{rule} ({', '.join(names)})"
            rows.append(_training_row(label, r, len(names) * len(seeds), g, gpus, measured, vocab, T, P))
    return rows


def _training_row(rule: str, r: dict, jobs: int, g: int, gpus: int, measured: dict, vocab: int, T: int, P: int
                  ) -> dict:
    """One pretraining row: `jobs` jobs of recipe `r` on `g` GPUs each."""
    problem = validate.batch_problem(r, g)
    if problem:  # the job would stop at its first step
        divisors = [n for n in range(1, gpus + 1) if not validate.batch_problem(r, n)]
        raise UserError(f"{rule} on {g} GPU(s): batch_size {problem}; GPUs per job that split it: "
                        f"{', '.join(map(str, divisors))} (resources.{rule.split()[0]}.gpu)")
    micro = r["micro_batch_size"] or r["batch_size"] // g
    entry, note = pick_mfu(measured, rule.split()[0], micro, r["compile"])
    peak, peak_note = job_peak(measured, r["precision"])
    note = "; ".join(filter(None, [note, peak_note]))
    params = parameter_count(r["model"], vocab, max(T, r["model"].get("max_position_embeddings", T)))
    checkpoint = params * CHECKPOINT_BYTES_PER_PARAM
    model, kept = params * MODEL_BYTES_PER_PARAM, CHECKPOINTS_KEPT * checkpoint
    # (left behind, held only while running): a save holds one checkpoint more than the job keeps
    disk = (model + kept, checkpoint) if r["keep_checkpoints"] else (model, kept + checkpoint)
    flops = r["max_steps"] * pretrain_step_flops(r["model"], vocab, r["batch_size"], T, P)
    what = (f"{r['max_steps']} steps x {r['batch_size']} x {T} tokens, {params / 1e6:.1f}M parameters; micro-batch "
            f"{micro}, accumulation {r['batch_size'] // (g * micro)} on {g} GPU(s)")
    return _row(rule, jobs, flops, flops / peak, g, gpus, entry, note, disk, what)


def _train_examples(task: str, config: dict, recipe: dict) -> int:
    if task in HUB_TRAIN_EXAMPLES and config["tasks"]["source"] != "proxy":
        n = HUB_TRAIN_EXAMPLES[task]
    else:
        n = recipes.fill("proxy_tasks", config.get("proxy_tasks", {}))["train_examples"]
    return min(n, recipe["max_train_examples"] or n) * SEQUENCES_PER_EXAMPLE.get(task, 1)


def _family_costs(config: dict, model: dict, g: int, measured: dict) -> list[dict]:
    """Per task family, what one (variant, seed) costs to fine-tune on its tasks: FLOPs, time at the matmul peak
    of each task's precision, sequences, the MFU entry that prices them (with its note), and how many of its
    tasks keep their checkpoints after they finish."""
    shared = {k: v for k, v in config["finetune"].items() if k != "per_task"}
    families: dict[str, list] = {}
    for task in config["tasks"]["names"]:
        family = next((name for name, tasks in FAMILIES.items() if task in tasks), "proxy")
        families.setdefault(family, []).append(task)
    costs = []
    for family, tasks in families.items():
        flops = peak_seconds = sequences = 0.0
        peak_notes, kept = set(), 0
        for task in tasks:
            r = recipes.fill("finetune", {**shared, **config["finetune"].get("per_task", {}).get(task, {})})
            n = _train_examples(task, config, r) * r["epochs"]
            sequences += n
            task_flops = 3.0 * encoder_flops(model, n, r["max_seq_length"])
            peak, peak_note = job_peak(measured, r["precision"])
            flops, peak_seconds = flops + task_flops, peak_seconds + task_flops / peak
            peak_notes.add(peak_note)
            kept += r["keep_checkpoints"]
            micro = r["batch_size"] // g * SEQUENCES_PER_EXAMPLE.get(task, 1)  # sequences, as the device runs them
        entry, note = pick_mfu(measured, f"finetune_{family}", micro, False)
        note = "; ".join(filter(None, [note, *sorted(peak_notes)]))
        costs.append({"family": family, "tasks": tasks, "flops": flops, "peak_seconds": peak_seconds,
                      "sequences": sequences, "entry": entry, "note": note, "kept": kept})
    return costs


def _per_model_row(costs: list[dict], runs: int, g: int, gpus: int, checkpoint: float) -> dict:
    """finetune_model (`tasks.jobs: per_model`): one job per (variant, seed) fine-tunes every task in turn, each
    family at its own MFU; the row's MFU is the job's overall one (its time at peak / its GPU time). A job
    removes its tasks' checkpoints when the last task is done, so while it runs it holds every finished task's
    (and one more while it saves)."""
    peak = sum(c["peak_seconds"] for c in costs)
    gpu_seconds = sum(c["peak_seconds"] / c["entry"]["mfu"] for c in costs)
    entry = {**costs[0]["entry"], "mfu": peak / gpu_seconds}  # every task has examples: gpu_seconds > 0
    tasks = [task for c in costs for task in c["tasks"]]
    kept = sum(c["kept"] for c in costs)
    checkpoints = CHECKPOINTS_KEPT * checkpoint
    disk = (kept * checkpoints, (len(tasks) - kept) * checkpoints + checkpoint)
    row = _row(f"finetune_model ({'; '.join(c['family'] + ': ' + ', '.join(c['tasks']) for c in costs)})", runs,
               sum(c["flops"] for c in costs), peak, g, gpus, entry, costs[0]["note"], disk,
               f"{sum(c['sequences'] for c in costs):,.0f} sequences per job ({len(tasks)} tasks in turn)")
    if len(costs) > 1:  # each family's own measurement
        row["mfu_from"] = "; ".join(f"{c['family']} {100 * c['entry']['mfu']:.0f} %: {_mfu_from(c['entry'], c['note'])}"
                                    for c in costs)
    return row


def finetune_rows(config: dict, gpus: int, measured: dict) -> list[dict]:
    """Fine-tuning as the DAG cuts it into jobs (`tasks.jobs`): per_task, one `finetune` row per task family,
    jobs = variants x seeds x tasks; per_model, one `finetune_model` row, jobs = variants x seeds, each running
    every task. Tokens = examples x epochs x T; every task has its own checkpoints either way."""
    model = recipes.fill("pretrain", {k: v for k, v in config["pretrain"].items() if k != "seed"})["model"]
    runs = len(variants.variant_table(config)) * len(config.get("seeds", [0]))
    g = 1  # a fine-tuning runs in one process (validate refuses more), on one GPU
    params = parameter_count(model, vocab_size(config), model.get("max_position_embeddings", 512))
    checkpoint = params * CHECKPOINT_BYTES_PER_PARAM
    checkpoints = CHECKPOINTS_KEPT * checkpoint
    costs = _family_costs(config, model, g, measured)
    if config["tasks"].get("jobs") == "per_model":  # the schema's default is per_task
        return [_per_model_row(costs, runs, g, gpus, checkpoint)]
    rows = []
    for c in costs:
        share = c["kept"] / len(c["tasks"])  # a job keeps its checkpoints or not: on average, this share
        rows.append(_row(f"finetune ({c['family']}: {', '.join(c['tasks'])})", runs * len(c["tasks"]),
                         c["flops"] / len(c["tasks"]), c["peak_seconds"] / len(c["tasks"]), g, gpus, c["entry"],
                         c["note"], (share * checkpoints, (checkpoints if share < 1 else 0) + checkpoint),
                         f"{c['sequences'] / len(c['tasks']):,.0f} sequences per job on average"))
    return rows


def data_rows(config: dict) -> list[dict]:
    """corpus / examples shard jobs (CPU): CPU-hours and disk where the corpus size is known (hub)."""
    corpus = recipes.fill("corpus", config.get("corpus", {}))
    words = sum(HUB_CORPUS_WORDS.values()) if corpus["source"] == "hub" else None
    corpus_cpu_s = sum(n / CORPUS_WORDS_PER_CPU_S[name] for name, n in HUB_CORPUS_WORDS.items())
    rows = []
    examples_cpu_s = words and words / EXAMPLES_WORDS_PER_CPU_S
    for rule, cpu_s, per_word in (("corpus_shard", corpus_cpu_s, CORPUS_BYTES_PER_WORD),
                                  ("examples_shard", examples_cpu_s, EXAMPLES_BYTES_PER_WORD)):
        rows.append({"rule": rule, "jobs": corpus["shards"], "cpu_hours": cpu_s / 3600 if words else None,
                     "disk_bytes": words * per_word if words else None,
                     "what": f"{words:.2g} words (hub corpus)" if words else f"{corpus['source']} corpus: minutes"})
    return rows


def plan(config: dict, gpus: int, measured: dict) -> dict:
    """Every row of the plan of a config that the workflow would accept (its schema, then validate's checks of
    what the config alone decides), on `gpus` GPUs."""
    problems = recipes.problems(config)
    if problems:
        raise UserError("; ".join(f"{key}: {message}" for key, message in problems))
    config = {**config, "seeds": config.get("seeds", [0])}
    errors = validate.pure_problems(config)
    if errors:
        raise UserError("; ".join(map(str, errors)))
    hub = "hub" in (recipes.fill("corpus", config.get("corpus", {}))["source"], config["tasks"]["source"])
    return {"data": data_rows(config), "training": training_rows(config, gpus, measured) + finetune_rows(
        config, gpus, measured), "report": {"rule": "tables, figures, findings", "jobs": 3}, "reads_hub": hub}


# -------------------------------------------------------------------------------------------------------
# Output


def _num(x: float) -> str:
    """Thousands separated above 100, three significant digits below (a smoke run's tiny numbers stay visible)."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e3:.0f} kB"


def _shown(path: Path) -> str:
    """The measurement file as a user names it: relative to the current folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def render(rows: dict, configfile: Path, gpus: int, gpu_json: Path, measured: dict) -> str:
    peaks = ", ".join(f"{tflops} {dtype}" for dtype, tflops in measured["matmul_peak_tflops"].items())
    lines = [f"# Cost plan: {configfile} on {gpus} GPU(s)",
             f"MFU from {_shown(gpu_json)} ({measured['gpu']}, torch {measured['torch']}, {measured['date']}; matmul "
             f"peak TFLOP/s: {peaks})", "",
             "| rule | jobs | GPUs/job | PFLOP | MFU (measured for) | GPU-hours | wall (h) | disk | what |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows["data"]:
        cpu = f"{r['cpu_hours']:.0f} CPU-h" if r["cpu_hours"] is not None else "CPU"
        lines.append(f"| {r['rule']} | {r['jobs']} | 0 | - | - | {cpu} | - | {_size(r['disk_bytes'])} | {r['what']} |")
    for r in rows["training"]:
        lines.append(f"| {r['rule']} | {r['jobs']} | {r['gpus_per_job']} | {_num(r['flops'] / 1e15)} | "
                     f"{100 * r['mfu']:.0f} % ({r['mfu_from']}) | {_num(r['gpu_hours'])} | {_num(r['wall_hours'])} | "
                     f"{_size(r['disk_bytes'])} | {r['what']} |")
    lines.append(f"| {rows['report']['rule']} | {rows['report']['jobs']} | 0 | - | - | CPU, minutes | - | - | |")
    total_gpu = sum(r["gpu_hours"] for r in rows["training"])
    total_wall = sum(r["wall_hours"] for r in rows["training"])
    disk = _size(sum(r["disk_bytes"] or 0 for r in rows["data"] + rows["training"]))
    running = max(r["running_disk_bytes"] for r in rows["training"])
    lines += ["", f"Total: {_num(total_gpu)} GPU-hours; {_num(total_wall)} h = {total_wall / 24:.3g} days on {gpus} GPU(s) "
              f"(rules one after another); disk {disk} (data, final models, and the 2 checkpoints of weights and "
              f"optimizer moments that a job keeps in its state dir where its recipe says keep_checkpoints) and up to "
              f"{_size(running)} more while jobs run (the checkpoints of the jobs running at once, "
              f"{CHECKPOINTS_KEPT + 1} each while one saves, removed as each finishes)" + (
                  "; not counted: the Hugging Face cache of the hub datasets, which the corpus and task jobs download "
                  "and prepare once (tens of GB, not measured here)" if rows.get("reads_hub") else "") + "."]
    return "\n".join(lines)
