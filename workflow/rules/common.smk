# Names and small helpers derived from the (validated) config. Nothing here imports torch, so parsing the
# Snakefile stays fast and a run with nothing to do returns in a second or two.
import json
import re

from sparsebert.launch import RESOURCE_DEFAULTS, from_resources, rule_resources as resolve_resources

# Variants: one per fixed mask, plus one per DAM search (type x lambda), named like the paper's rows. A DAM
# variant is the search's own model with its binarized mask (the official protocol: weights and mask trained
# jointly); `dam_retrain: true` adds the ablation `<run>_retrain`, pretrained from scratch with that mask.
FIXED = list(config["masks"])
DAM_RUNS = [f"{dam}_{lam:g}" for dam, lams in config.get("dam", {}).items() for lam in lams]
RETRAINS = [f"{run}_retrain" for run in DAM_RUNS] if config.get("dam_retrain", False) else []
VARIANTS = FIXED + DAM_RUNS + RETRAINS
TASKS = config["tasks"]["names"]
LAMBDAS = {f"{lam:g}" for lams in config.get("dam", {}).values() for lam in lams}
# Every variant is pretrained (or searched) once per seed and every fine-tuning runs once per (variant, seed,
# task): the report's intervals cover seed noise. The seed replaces the recipe's `seed` (which the config may
# not set: sparsebert/validate.py). Fine-tuning keeps one seed per task (`finetune.seed`), so every
# (variant, seed) is evaluated on the same examples and the variants are compared pairwise on them.
SEEDS = [int(seed) for seed in config.get("seeds", [0])]


def alternation(names):
    """Regex matching exactly one of `names` ("(?!)" matches nothing, for an empty list)."""
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) or "(?!)"


# Wildcards only take configured values, so rule patterns never match each other's outputs
# (results/pretrain/dense vs results/pretrain/dam_s_0.001).
wildcard_constraints:
    variant=alternation(VARIANTS),
    fixed=alternation(FIXED),
    dam=alternation(config.get("dam", {})),
    lam=alternation(LAMBDAS),
    task=alternation(TASKS),
    seed=alternation([str(seed) for seed in SEEDS]),


def as_json(value):
    """Inline --params argument; sorted keys keep the string (and Snakemake's params trigger) stable."""
    return json.dumps(value, sort_keys=True)


def variant_dir(variant):
    """The folder of a variant's pretrainings, one `seed<N>` subfolder per seed."""
    return f"results/dam/{variant}" if variant in DAM_RUNS else f"results/pretrain/{variant}"


def pretrained_dir(variant, seed):
    """Where a variant's pretrained model/, summary.json and log.jsonl of one seed are."""
    return f"{variant_dir(variant)}/seed{seed}"


def pretrain_recipe(seed):
    """The shared pretraining recipe, seeded by the job's seed."""
    return {**config["pretrain"], "seed": int(seed)}


def finetune_recipe(task):
    """The shared fine-tuning recipe with the task's own overrides (`finetune.per_task`)."""
    shared = {k: v for k, v in config["finetune"].items() if k != "per_task"}
    return {**shared, **config["finetune"].get("per_task", {}).get(task, {})}


def dam_recipe(seed):
    """The DAM search trains with the pretraining recipe, plus its own overrides, seeded by the job's seed."""
    return {**config["pretrain"], **config.get("dam_search", {}), "seed": int(seed)}


def rule_resources(rule, variant=None):
    """Resources of a training rule from config, with per-variant overrides (sparsebert/launch.py resolves them)."""
    return resolve_resources(config, rule, variant)


def resource(rule, key, default=None):
    """Resource function for `resources:` (per variant where the rule has a variant)."""

    def get(wildcards):
        variant = getattr(wildcards, "variant", None) or getattr(wildcards, "fixed", None)
        if hasattr(wildcards, "dam"):
            variant = f"{wildcards.dam}_{wildcards.lam}"
        return rule_resources(rule, variant).get(key, default)

    return get


def training_resources(rule):
    """The `resources:` of a training rule, each per variant: GPUs and nodes (the SLURM profile turns them
    into sbatch flags), CPU DDP processes, memory and runtime."""
    return {key: resource(rule, key) for key in RESOURCE_DEFAULTS if key != "threads"}


def launch(wildcards, resources):
    """`python`, `torchrun ...`, `srun ... torchrun ...`, GPU jobs through sparsebert.launch's GPU slots."""
    return from_resources(resources)


def task_source(task):
    """Where `sparsebert finetune` reads a task: built proxies, the hub, or local files."""
    source = config["tasks"]["source"]
    if source == "proxy":
        return {"path": f"data/tasks/{task}"}
    if source == "local":
        return {"path": f"{config['tasks']['local_dir']}/{task}"}
    return {"hub": True}


PROXY = config["tasks"]["source"] == "proxy"
PROXY_TASKS = [task for task in TASKS if task.startswith("proxy_")]  # built by the proxy_tasks rule


def finetune_task_input(wildcards):
    """The built proxy task folder (a DAG edge); hub and local tasks have no upstream rule."""
    return [f"data/tasks/{wildcards.task}"] if PROXY else []
