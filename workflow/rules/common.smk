# Names, paths and small helpers derived from the (validated) config. Nothing here imports torch, so parsing
# the Snakefile stays fast and a run with nothing to do returns in a second or two.
import json
import re
from pathlib import Path

from sparsebert.data.tasks import get_task
from sparsebert.launch import RESOURCE_DEFAULTS, from_resources, rule_resources as resolve_resources
from sparsebert.recipes import dam_search_recipe
from sparsebert.variants import FIXED as FIXED_ROLE, RETRAIN, SEARCH, named, resource_name, variant_table

# Each run writes under its own roots (config `run`), so runs of different configs sit side by side: running
# config/paper.yaml in a clone holding a finished default run leaves that run up to date.
RUN = config.get("run", "default")
DATA, RESULTS, LOGS = f"data/{RUN}", f"results/{RUN}", f"logs/{RUN}"

# The variants as data (sparsebert/variants.py): name -> kind, role, mask, params, lambda, learned_from. One
# per fixed mask, one per DAM search (type x lambda, named like the paper's rows: the search's own model with
# its binarized mask, the official protocol), and with `dam_retrain: true` one `<search>_retrain` ablation,
# pretrained from scratch with that mask. Rules look a variant up here; nothing parses names.
VARIANTS = variant_table(config)
FIXED, SEARCHES, RETRAINS = (named(VARIANTS, role) for role in (FIXED_ROLE, SEARCH, RETRAIN))
TASKS = config["tasks"]["names"]
# Every variant is pretrained (or searched) once per seed and every fine-tuning runs once per (variant, seed,
# task): the report's intervals cover seed noise. The seed replaces the recipe's `seed` (which the config may
# not set: sparsebert/validate.py). Fine-tuning keeps one seed per task (`finetune.seed`), so every
# (variant, seed) is evaluated on the same examples and the variants are compared pairwise on them.
SEEDS = [int(seed) for seed in config.get("seeds", [0])]
# The corpus shards (corpus.smk): one corpus job and one examples job each.
SHARDS = [f"shard-{index:05d}" for index in range(int(config["corpus"].get("shards", 1)))]


def alternation(names):
    """Regex matching exactly one of `names` ("(?!)" matches nothing, for an empty list)."""
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) or "(?!)"


# Wildcards only take configured values, so rule patterns never match each other's outputs
# (results/<run>/pretrain/dense vs results/<run>/pretrain/dam_s_0.001_retrain).
wildcard_constraints:
    variant=alternation(VARIANTS),
    fixed=alternation(FIXED),
    search=alternation(SEARCHES),
    retrain=alternation(RETRAINS),
    task=alternation(TASKS),
    seed=alternation([str(seed) for seed in SEEDS]),
    shard=alternation(SHARDS),


def as_json(value):
    """Inline --params argument; sorted keys keep the string (and Snakemake's params trigger) stable."""
    return json.dumps(value, sort_keys=True)


def pretrained_dir(variant, seed):
    """Where a variant's pretrained model/, summary.json and log.jsonl of one seed are: a DAM variant's under
    its search's folder (with mask.safetensors and snapshots.npz), every other one's under pretrain/."""
    folder = "dam" if VARIANTS[variant]["role"] == SEARCH else "pretrain"
    return f"{RESULTS}/{folder}/{variant}/seed{seed}"


def finetuned_dir(variant, seed, task):
    """Where the fine-tuning of a (variant, seed) on a task writes metrics.json, predictions.json, log.jsonl."""
    return f"{RESULTS}/finetune/{variant}/seed{seed}/{task}"


def shard_index(shard):
    return int(shard.rsplit("-", 1)[1])


def parent(path):
    """The folder of a rule's output file: a job's --out is derived from its outputs, never restated."""
    return str(Path(path).parent)


def state_dir(out):
    """A training job's --state-dir: its resumable checkpoints, under results/<run>/state/ beside its outputs
    (not inside them: Snakemake deletes a failed job's outputs, and a rerun must continue from the last one)."""
    return f"{RESULTS}/state/{Path(out).relative_to(RESULTS)}"


def pretrain_recipe(seed):
    """The shared pretraining recipe, seeded by the job's seed."""
    return {**config["pretrain"], "seed": int(seed)}


def finetune_recipe(task):
    """The shared fine-tuning recipe with the task's own overrides (`finetune.per_task`)."""
    shared = {k: v for k, v in config["finetune"].items() if k != "per_task"}
    return {**shared, **config["finetune"].get("per_task", {}).get(task, {})}


def dam_recipe(seed):
    """The DAM search trains with the pretraining recipe, plus its own overrides, seeded by the job's seed."""
    return {**dam_search_recipe(config), "seed": int(seed)}


def rule_resources(rule, variant=None):
    """Resources of a training rule from config, with per-variant overrides (sparsebert/launch.py resolves them)."""
    return resolve_resources(config, rule, variant)


def resource(rule, key, default=None):
    """Resource function for a training rule's `resources:` and `threads:` (per variant where it has a variant)."""

    def get(wildcards):
        variant = next(getattr(wildcards, k) for k in ("variant", "fixed", "search", "retrain") if hasattr(wildcards, k))
        return rule_resources(rule, resource_name(rule, variant, VARIANTS)).get(key, default)

    return get


def training_resources(rule):
    """The `resources:` of a training rule, each per variant: GPUs and nodes (the SLURM profile turns them
    into sbatch flags), CPU DDP processes, memory and runtime."""
    return {key: resource(rule, key) for key in RESOURCE_DEFAULTS if key != "threads"}


def launch(wildcards, resources):
    """`python`, `torchrun ...`, `srun ... torchrun ...`, GPU jobs through sparsebert.launch's GPU slots."""
    return from_resources(resources)


def task_source(task):
    """Where `sparsebert finetune` reads a task: built proxies, the hub (at the commit `tasks.hub_revisions`
    pins for its repository, if any), or local files."""
    source = config["tasks"]["source"]
    if source == "proxy":
        return {"path": f"{DATA}/tasks/{task}"}
    if source == "local":
        return {"path": f"{config['tasks']['local_dir']}/{task}"}
    revision = config["tasks"].get("hub_revisions", {}).get(get_task(task).hub_path)
    return {"hub": True, "revision": revision} if revision else {"hub": True}


PROXY = config["tasks"]["source"] == "proxy"
PROXY_TASKS = [task for task in TASKS if task.startswith("proxy_")]  # built by the proxy_tasks rule


def finetune_inputs(wildcards):
    """What a fine-tuning of one pretrained (variant, seed) reads, besides the tasks: the model, and for a DAM
    search its binarized mask. Written by `pretrain` (fixed masks), `dam_search` (DAM variants: the searched
    model, fine-tuned with its binarized mask) or `pretrain_learned` (the `_retrain` ablation)."""
    folder = pretrained_dir(wildcards.variant, wildcards.seed)
    mask = [f"{folder}/mask.safetensors"] if VARIANTS[wildcards.variant]["role"] == SEARCH else []
    return {"model": f"{folder}/model", "mask": mask, "tokenizer": rules.tokenizer.output[0]}


def mask_file_option(wildcards, input):
    """`--mask-file <the search's binarized mask>` for a DAM variant, nothing for the others."""
    return f"--mask-file {input.mask}" if input.mask else ""


def finetune_task_input(wildcards):
    """The built proxy task folder (a DAG edge); hub and local tasks have no upstream rule."""
    return [f"{DATA}/tasks/{wildcards.task}"] if PROXY else []


def report_params():
    """What the report rules know about the run: its settings, and every variant's record (in table order)
    with the folders its files are in, as patterns with {seed} (`pretrained`) and {seed} and {task}
    (`finetuned`), built by the functions that place the files: one pattern per variant keeps the command line
    short at any number of seeds and tasks. The report fills these in; it never walks results/ or parses a
    variant's name."""
    variants = [{"name": name, **record, "pretrained": pretrained_dir(name, "{seed}"),
                 "finetuned": finetuned_dir(name, "{seed}", "{task}")}
                for name, record in VARIANTS.items()]  # fmt: skip
    return {"scale": config["scale"], "proxy": PROXY, "seq_len": config["examples"].get("max_seq_length", 128),
            "seeds": SEEDS, "tasks": TASKS, "report": config.get("report", {}), "variants": variants}  # fmt: skip
