"""The whole run checked when the DAG is built, before any job: the config against its schema, then what the
schema cannot say.

The Snakefile calls `check_run(config, workflow)` first thing. A problem stops `snakemake` (also
`snakemake -n`) with one line per problem, naming the config key:

    config error: pretrain.model.attention_backnd: unknown key; valid: attention_backend, ...
    config error: masks.longformer: parameter window must be an integer >= 0, got -3 (at seq_len 64)

First the schema (workflow/schemas/config.schema.yaml, through sparsebert.recipes: the definitions that the
subcommands check their --params against, with Python ints and finite numbers); only a config that passes it gets
the checks below. Checked then: every mask's parameters by its registry builder at every length the run uses (types
and ranges); tasks against their source (proxy: proxy tasks only, word limits a sentence can meet; hub: the task
has a hub copy; local: the task folder and its files exist); DAM lambdas (distinct variant names); model shape
(hidden size divisible by heads, positions >= the pretraining length, the DAM search's heads = the retraining's
heads); fine-tuning per task (length vs the positions of the model each variant fine-tunes, room for a SQuAD
window, at least one batch; per_task tasks); seeds; resources (per-variant keys, launcher shape, the global batch
split over the processes that the config and the profile's --set-resources start, one process per fine-tuning, one
jobs_per_gpu for every GPU job); a text_files corpus names its glob. Not cached, last: no training job asks
for more GPUs than the run's `--resources gpu=N` (Snakemake would lower it without a word).

Speed: building the DAG must stay fast (a no-op `snakemake` takes about a second), and importing torch
(for the mask builders) costs more than that. So the pure checks, a function of the config, the resource
overrides and this package's source, are cached: a marker named by their hash under .snakemake/ skips them
on the next parse. The filesystem checks (local task files, corpus globs) run every time.
"""

from __future__ import annotations

import ast
import glob as globlib
import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path

from sparsebert import recipes
from sparsebert.data.tasks import TASKS
from sparsebert.io import UserError, hash_package_source
from sparsebert.launch import gpus_per_node, takes_gpu_slots
from sparsebert.variants import FIXED, RETRAIN, SEARCH, named, resource_name, search_name, variant_table

TRAINING_RULES = ("pretrain", "dam_search", "pretrain_learned", "finetune")
CACHE_DIR = Path(".snakemake/sparsebert-validated")


class ConfigError(UserError):
    """One problem of the run's configuration: the dotted config `key` and what is wrong with it."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


# ---------------------------------------------------------------------------------------------------------
# Entry points


def check_run(config: dict, workflow=None, cache_dir: Path | None = CACHE_DIR) -> None:
    """The Snakefile's hook: a header, every problem as one line `config error: <key>: <what>`, then exit 1."""
    overrides = resource_overrides(workflow)
    errors = problems(config, overrides, cache_dir) or gpu_limit_problems(config, overrides, run_gpus(workflow))
    if errors:
        header = f"config validation failed ({len(errors)} problem(s), no job started):"
        sys.exit("\n".join([header, *(f"config error: {e}" for e in errors)]))


def problems(config: dict, overrides: dict | None = None, cache_dir: Path | None = None) -> list[ConfigError]:
    """Every problem of a config: its schema problems if it has any; else pure checks (cached under
    `cache_dir` when they pass) and filesystem checks (always)."""
    schema_errors = [ConfigError(key, message) for key, message in recipes.problems(config)]
    if schema_errors:  # the checks below assume the keys and types the schema promises
        return schema_errors
    overrides = overrides or {}
    marker = None
    if cache_dir is not None:
        marker = Path(cache_dir) / _cache_key(config, overrides)
    found = [] if marker is not None and marker.exists() else pure_problems(config, overrides)
    if not found and marker is not None:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:  # a read-only working directory only costs the cache
            pass
    return found + file_problems(config)


def resource_overrides(workflow) -> dict:
    """The profile's / command line's --set-resources for the training rules: {rule: {key: value}}.
    They replace the rule's resources at job time, so they decide how many processes share a batch."""
    settings = getattr(getattr(workflow, "resource_settings", None), "overwrite_resources", None) or {}
    out = {}
    for rule in (*TRAINING_RULES, "finetune_model"):
        values = {}
        for key, parsed in dict(settings.get(rule, {})).items():
            value = override_value(parsed)
            values[key] = value if isinstance(value, (int, float, str)) else str(value)
        if values:
            out[rule] = values
    # finetune_model is the fine-tuning rule under `tasks.jobs: per_model`, with finetune's resources (common.smk)
    if "finetune_model" in out:
        out["finetune"] = {**out.get("finetune", {}), **out.pop("finetune_model")}
    return out


def run_gpus(workflow) -> int | None:
    """The run's `--resources gpu=N` (the command line's or the profile's), None where it sets none."""
    value = (getattr(workflow, "global_resources", None) or {}).get("gpu")
    value = getattr(value, "value", value)
    return value if isinstance(value, int) else None


def gpu_limit_problems(config: dict, overrides: dict, limit: int | None) -> list[ConfigError]:
    """Training jobs asking for more GPUs than the run's `--resources gpu=N`: Snakemake lowers such a job's gpu
    to N without a word, so paper.yaml's 8-GPU pretraining ran on the local profile's 1 GPU (the batch still
    splits, so nothing else stops it). gpu=0 is the profile's "CPU only": every job then runs without GPUs."""
    if not limit:
        return []
    section, found = config.get("resources", {}), {}
    for rule, names in training_jobs(variant_table(config)).items():
        for name in names:
            key, res = job_resources(section, rule, name, overrides)
            asked = int(res.get("gpu") or 0)
            if asked > limit:
                found.setdefault(key, ConfigError(key, f"{asked} GPUs per job, but the run allows {limit} "
                                                       f"(--resources gpu={limit}, e.g. a profile's): Snakemake would "
                                                       f"run it on {limit}; give the run gpu=<GPUs x jobs_per_gpu>"))
    return list(found.values())


def override_value(parsed):
    """The value of one --set-resources entry (a snakemake Resource). A string one (gres "gpu:8", slurm_extra
    "'--signal=TERM@300'") is an expression Snakemake evaluates per job, so `.value` cannot be read here: its raw
    text is read as Snakemake reads it, a Python literal where it is one, else the text itself (it was taken for
    None, and the documented multi-node block was refused: "a 2-node job needs GPUs")."""
    try:
        return getattr(parsed, "value", parsed)
    except ValueError:
        raw = str(getattr(parsed, "raw", ""))
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw


def _cache_key(config: dict, overrides: dict) -> str:
    h = hashlib.sha256(json.dumps([config, overrides], sort_keys=True, default=str).encode())
    hash_package_source(h, extra=[recipes.SCHEMA_PATH])
    try:
        h.update(metadata.version("torch").encode())
    except metadata.PackageNotFoundError:
        pass
    return h.hexdigest()[:32]


# ---------------------------------------------------------------------------------------------------------
# Pure checks: a function of the config (and the resource overrides)


def pure_problems(config: dict, overrides: dict | None = None) -> list[ConfigError]:
    run = _Run(config, overrides or {})
    # The data steps' parameters and the model shape first: every later check derives lengths or shapes from
    # them, so when they are wrong, later complaints would only repeat the same mistake.
    for group in ((_check_data_params, _check_models),
                  (_check_seeds, _check_masks, _check_dam, _check_tasks, _check_proxy_tasks, _check_finetune,
                   _check_resources)):
        for check in group:
            check(run)
        if run.errors:
            break
    return run.errors


class _Run:
    """The config plus what the checks derive from it (variants, lengths, recipes)."""

    def __init__(self, config: dict, overrides: dict):
        self.config, self.overrides, self.errors = config, overrides, []
        self.table = table = variant_table(config)  # the variants exactly as the Snakefile builds its jobs from them
        # As workflow/rules/common.smk names them: a DAM run fine-tunes the searched model; `<run>_retrain`
        # (dam_retrain) the model pretrained from scratch with its mask.
        self.dam_runs = named(table, SEARCH)
        self.retrains = named(table, RETRAIN)
        # Sections and keys the schema requires are indexed; the optional ones (dam, dam_search, resources,
        # proxy_tasks, ...) may be absent.
        self.tasks = list(config["tasks"]["names"])
        self.seq_len = recipes.fill("examples", config["examples"])["max_seq_length"]
        self.pretrain = self.recipe(config["pretrain"])
        self.dam_search = self.recipe(recipes.dam_search_recipe(config))
        self.proxy = recipes.fill("proxy_tasks", config.get("proxy_tasks", {}))  # the schema's defaults where unset

    def positions(self, recipe: dict) -> int:
        """Position embeddings of a pretrained model: pretrain.build_model gives max(L, max_position_embeddings)."""
        return max(self.seq_len, recipe["model"].get("max_position_embeddings") or 0)

    @staticmethod
    def recipe(recipe: dict) -> dict:
        """A pretraining recipe over its defaults, as `pretrain.run` fills it."""
        return recipes.fill("pretrain", recipe)

    def finetune_recipes(self) -> dict[str, tuple[str, dict]]:
        """Per task: (the key its settings come from, the effective fine-tuning recipe)."""
        base = {k: v for k, v in self.config["finetune"].items() if k != "per_task"}
        per_task = self.config["finetune"].get("per_task") or {}
        return {
            task: (f"finetune.per_task.{task}" if task in per_task else "finetune",
                   recipes.fill("finetune", {**base, **(per_task.get(task) or {})}))
            for task in self.tasks
        }  # fmt: skip

    def dam_key(self, field: str) -> str:
        """Where the DAM search's `field` is set: its own section overrides pretrain's (model as a whole)."""
        return "dam_search" if field in self.config.get("dam_search", {}) else "pretrain"

    def fail(self, key: str, message: str) -> None:
        self.errors.append(ConfigError(key, message))


def _check_seeds(run: _Run) -> None:
    # The pretraining seed of a variant is each entry of the top-level `seeds` (one run per seed, see
    # workflow/rules/common.smk): a recipe's own `seed` would be silently replaced, so it is an error.
    # (Every seed's range is the schema's.)
    for section in ("pretrain", "dam_search"):
        if "seed" in run.config.get(section, {}):
            run.fail(f"{section}.seed", "the DAG pretrains every variant once per entry of the top-level `seeds` "
                                        "(e.g. seeds: [0, 1, 2]); remove this key")


def _check_models(run: _Run) -> None:
    """Model shape: heads divide the hidden size; positions cover the pretraining length; the DAM search
    learns a mask with as many heads as the model that retrains with it."""
    recipes = [("pretrain", "pretrain", run.pretrain)]
    if run.dam_runs:  # the DAM search's own overrides only: the rest is pretrain's, checked once
        recipes.append(("dam_search", run.dam_key("model"), run.dam_search))
    for section, model_key, recipe in recipes:
        if section == "pretrain" or model_key == "dam_search":
            model = recipe["model"]
            hidden, heads = model["hidden_size"], model["num_attention_heads"]
            if hidden % heads:
                run.fail(f"{model_key}.model.hidden_size", f"{hidden} is not divisible by num_attention_heads {heads}")
            positions = model.get("max_position_embeddings")
            if positions is not None and positions < run.seq_len:
                run.fail(f"{model_key}.model.max_position_embeddings",
                         f"{positions} < examples.max_seq_length {run.seq_len}: every position needs an embedding")
        # (A warmup < 1 is a fraction of max_steps, which is >= 1: only a count of steps can exceed it.)
        warmup, steps = recipe["warmup"], recipe["max_steps"]
        key = run.dam_key("warmup") if section == "dam_search" else "pretrain"
        if warmup > steps and (section == "pretrain" or "dam_search" in {key, run.dam_key("max_steps")}):
            run.fail(f"{key}.warmup", f"{warmup:g} warmup steps exceed max_steps {steps}: the peak rate is never reached")
    if run.retrains:
        searched = run.dam_search["model"]["num_attention_heads"]
        retrained = run.pretrain["model"]["num_attention_heads"]
        if searched != retrained:
            run.fail("dam_search.model.num_attention_heads",
                     f"{searched} heads, but pretrain_learned retrains with pretrain's {retrained}: the learned mask "
                     f"would not fit")


def _check_masks(run: _Run) -> None:
    """Every mask built by its registry builder at every length the run uses (pretraining and fine-tuning)."""
    from sparsebert import masks  # torch: only here, and only when the cache misses

    lengths = sorted({run.seq_len} | {r["max_seq_length"] for _, r in run.finetune_recipes().values()})
    heads = run.pretrain["model"]["num_attention_heads"]
    for name, params in run.config["masks"].items():
        for length in lengths:
            try:
                keep = masks.build_mask(name, length, **(params or {}))
            except UserError as e:
                message = str(e).removeprefix(f"mask {name!r}: ")
                run.fail(f"masks.{name}", f"{message} (at seq_len {length})")
                break
            if keep.dim() == 3 and keep.shape[0] not in (1, heads):
                run.fail(f"masks.{name}.num_heads", f"{keep.shape[0]} mask heads; the model has {heads} "
                                                    f"(pretrain.model.num_attention_heads)")
                break


def _check_dam(run: _Run) -> None:
    # (Each lambda is a finite number >= 0: the schema's.)
    for dam, lams in run.config.get("dam", {}).items():
        names = {}
        for lam in lams:
            name = search_name(dam, lam)  # the variant name: results/<run>/dam/<name>
            if name in names:
                run.fail(f"dam.{dam}", f"lambdas {names[name]!r} and {lam!r} both name the variant {name}")
            names[name] = lam


def _check_tasks(run: _Run) -> None:
    source = run.config["tasks"]["source"]
    if source == "proxy":
        real = [t for t in run.tasks if not TASKS[t].proxy]
        if real:
            run.fail("tasks.names", f"{', '.join(real)}: not proxy task(s), but tasks.source is proxy (only proxy_* "
                                    f"tasks are built from the corpus; use source hub or local for real tasks)")
    elif source == "hub":
        local_only = [t for t in run.tasks if not TASKS[t].hub_path]
        if local_only:
            run.fail("tasks.names", f"{', '.join(local_only)}: no hub copy (tasks.source is hub); proxy tasks need "
                                    f"source proxy")
    elif source == "local" and not run.config["tasks"].get("local_dir"):
        run.fail("tasks.local_dir", "tasks.source local needs tasks.local_dir (folders <local_dir>/<task>)")
    read = {TASKS[t].hub_path for t in run.tasks} if source == "hub" else set()
    for repository in run.config["tasks"].get("hub_revisions") or {}:
        if repository not in read:
            run.fail(f"tasks.hub_revisions.{repository}",
                     f"no task of this run is read from {repository} (tasks.source {source}, tasks.names: "
                     f"{', '.join(run.tasks)})")


def _check_proxy_tasks(run: _Run) -> None:
    """Word limits no sentence can meet: the proxy-tasks job would otherwise fail late, as a corpus too small."""
    if run.config["tasks"]["source"] != "proxy":
        return
    from sparsebert.data import proxy  # scikit-learn: only here, and only when the cache misses

    for key, message, tasks in proxy.impossible_settings(run.proxy, run.tasks):
        run.fail(key, f"{message} (task{'s' if len(tasks) > 1 else ''} {', '.join(tasks)})")


def _check_finetune(run: _Run) -> None:
    per_task = run.config["finetune"].get("per_task") or {}
    for task in per_task:
        if task not in run.tasks:
            run.fail(f"finetune.per_task.{task}", f"not a configured task (tasks.names: {', '.join(run.tasks)})")
    # The fixed-mask and `_retrain` variants fine-tune models of the pretrain recipe (every run has a fixed
    # mask: the schema's `masks` has at least one); the DAM variants the searched models (the search's recipe).
    models = [("pretrain", run.pretrain)]
    if run.dam_runs:
        models.append((run.dam_key("model"), run.dam_search))
    found: dict[tuple[str, str], list[str]] = {}  # one line per (key, problem), naming every task it hits
    for task, (key, r) in run.finetune_recipes().items():
        spec, length = TASKS[task], r["max_seq_length"]
        for model_key, recipe in models:
            if length > run.positions(recipe):
                found.setdefault((f"{key}.max_seq_length", f"{length} > the {run.positions(recipe)} positions of the "
                                  f"models pretrained with {model_key}.model (raise its max_position_embeddings)"),
                                 []).append(task)
                break
        # Beyond the pretraining length the masks are extended (SparseBertModel.extend_mask: the pretrained
        # block kept, registry masks rebuilt beyond it, learned ones following dam.extend_keep). HOOK: a mask kind that cannot
        # extend must be checked here, with the rule the code applies; do not invent one.
        if spec.kind == "span" and length - r["max_query_length"] - 3 < 1:
            found.setdefault((f"{key}.max_query_length", f"{r['max_query_length']} leaves no room for the context "
                              f"in a {length}-token window"), []).append(task)
        if spec.kind != "span" and r["max_train_examples"] is not None and r["max_train_examples"] < r["batch_size"]:
            found.setdefault((f"{key}.max_train_examples", f"{r['max_train_examples']} < batch_size "
                              f"{r['batch_size']}: not one training batch"), []).append(task)
        proxy_train = run.proxy["train_examples"]
        if (spec.proxy and spec.kind != "span" and run.config["tasks"].get("source") == "proxy"
                and proxy_train < r["batch_size"]):  # fmt: skip
            found.setdefault(("proxy_tasks.train_examples", f"{proxy_train} < {key}.batch_size {r['batch_size']}: "
                              f"not one training batch"), []).append(task)
    for (key, message), tasks in found.items():
        run.fail(key, f"{message} (task{'s' if len(tasks) > 1 else ''} {', '.join(tasks)})")


def _world_size(res: dict) -> int:
    return int(res.get("nodes") or 1) * (gpus_per_node(res) or int(res.get("ddp_cpu_procs") or 1))


def training_jobs(table: dict[str, dict]) -> dict[str, list[str]]:
    """Each training rule's jobs, by the names their per_variant resources go by, as common.smk's `resource()`
    reads them (pretrain_learned's name the searches: `resource_name`)."""
    jobs = {"pretrain": named(table, FIXED), "dam_search": named(table, SEARCH),
            "pretrain_learned": named(table, RETRAIN), "finetune": list(table)}
    return {rule: [resource_name(rule, v, table) for v in names] for rule, names in jobs.items()}


def job_resources(section: dict, rule: str, name: str, overrides: dict) -> tuple[str, dict]:
    """The config key and the resources a job of `rule` (per_variant name `name`) starts with: the rule's, its
    per_variant entry's, then the profile's --set-resources for the rule."""
    per_variant = section.get(rule, {}).get("per_variant", {})
    base = {k: v for k, v in section.get(rule, {}).items() if k != "per_variant"}
    key = f"resources.{rule}" + (f".per_variant.{name}" if name in per_variant else "")
    return key, {**base, **per_variant.get(name, {}), **overrides.get(rule, {})}


def _check_resources(run: _Run) -> None:
    """Per-variant keys name variants of the rule; the launcher can start the job; the global batch splits
    evenly over the processes that start (config resources, then the profile's --set-resources)."""
    section = run.config.get("resources", {})
    rule_variants = training_jobs(run.table)
    dam_batch = "dam_search" if {"batch_size", "micro_batch_size"} & set(run.config.get("dam_search", {})) else "pretrain"
    recipes = {"pretrain": ("pretrain", run.pretrain), "pretrain_learned": ("pretrain", run.pretrain),
               "dam_search": (dam_batch, run.dam_search)}
    shares: dict[str, int] = {}  # resources.<rule> -> its jobs_per_gpu, for the rules with jobs on GPUs
    for rule, variants in rule_variants.items():
        for variant in section.get(rule, {}).get("per_variant", {}):
            if variant not in variants:
                run.fail(f"resources.{rule}.per_variant.{variant}",
                         f"not a variant of rule {rule} (its variants: {', '.join(variants) or 'none'})")
        seen = set()
        for variant in variants:
            key, res = job_resources(section, rule, variant, run.overrides)
            problem = _launch_problem(res)
            if problem:
                if key not in seen:
                    run.fail(key, problem)
                    seen.add(key)
                continue
            if takes_gpu_slots(res):  # (per_variant cannot set jobs_per_gpu: the rule's count, or the profile's)
                shares.setdefault(f"resources.{rule}", int(res.get("jobs_per_gpu") or 1))
            world = _world_size(res)
            if rule == "finetune":
                if world > 1 and key not in seen:
                    run.fail(key, f"{world} processes, but fine-tuning runs in one process (gpu <= 1, "
                                  f"ddp_cpu_procs <= 1, nodes 1)")
                    seen.add(key)
                continue
            recipe_key, recipe = recipes[rule]
            problem = batch_problem(recipe, world)
            if problem and (recipe_key, world) not in seen:
                run.fail(f"{recipe_key}.batch_size", f"{problem} ({key} starts {world} process{'es' * (world > 1)})")
                seen.add((recipe_key, world))
    _check_gpu_sharing(run, shares)


def _check_gpu_sharing(run: _Run, shares: dict[str, int]) -> None:
    """One jobs_per_gpu for every job on a GPU: a job takes the slots its own count allows (launch.acquire), so
    a rule that asked for fewer would still share its GPU with the jobs of a rule that allows more."""
    if not shares:
        return
    first, count = next(iter(shares.items()))
    for key, other in shares.items():
        if other != count:
            run.fail(f"{key}.jobs_per_gpu", f"{other}, but {first}.jobs_per_gpu is {count}: every GPU job of a run "
                                            f"shares its GPU by the same count")


def _launch_problem(res: dict) -> str | None:
    gpu, nodes, cpu = int(res.get("gpu") or 0), int(res.get("nodes") or 1), int(res.get("ddp_cpu_procs") or 0)
    if nodes > 1 and not gpus_per_node(res) and not cpu:
        return f"a {nodes}-node job needs GPUs (gpu or gres) or ddp_cpu_procs"
    if nodes > 1 and gpu and not res.get("gres") and gpu % nodes:
        return f"gpu {gpu} (per job) does not split evenly over {nodes} nodes"
    return None


def batch_problem(recipe: dict, world: int) -> str | None:
    batch, micro = recipe["batch_size"], recipe.get("micro_batch_size")
    if micro is None:
        if batch % world:
            return f"{batch} is not divisible by the world size {world}"
    elif batch % (world * micro):
        return f"{batch} is not divisible by world size {world} x micro_batch_size {micro}"
    return None


def _check_data_params(run: _Run) -> None:
    """What the corpus schema cannot say: a text_files corpus needs its glob."""
    corpus = run.config["corpus"]
    if corpus.get("source") == "text_files" and not corpus.get("text_files", {}).get("glob"):
        run.fail("corpus.text_files.glob", "source text_files needs a glob (e.g. 'texts/**/*.txt')")


# ---------------------------------------------------------------------------------------------------------
# Filesystem checks: every time (files come and go between runs)


def file_problems(config: dict) -> list[ConfigError]:
    errors = []
    tasks = config["tasks"]
    if tasks["source"] == "local" and tasks.get("local_dir"):
        root = Path(tasks["local_dir"])
        if not root.is_dir():
            errors.append(ConfigError("tasks.local_dir", f"{root} is not a directory"))
        else:
            for task in tasks["names"]:
                missing = [name for _, name in TASKS[task].files if not (root / task / name).is_file()]
                if missing:
                    errors.append(ConfigError("tasks.local_dir", f"{root / task} lacks {', '.join(missing)} "
                                                                 f"(task {task}, {TASKS[task].file_format})"))
    text_files = config["corpus"].get("text_files", {})
    if config["corpus"].get("source") == "text_files" and text_files.get("glob"):
        pattern = str(Path(text_files["glob"]).expanduser())
        if not globlib.glob(pattern, recursive=True):
            errors.append(ConfigError("corpus.text_files.glob", f"no files match {text_files['glob']!r}"))
    return errors
