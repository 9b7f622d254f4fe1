"""The parameter contract (sparsebert/recipes.py): workflow/schemas/config.schema.yaml defines every
subcommand's --params. The code reads exactly the keys defined there (a static scan of the readers); every
subcommand refuses an unknown key before it writes anything; defaults come from the schema; and a key set in a
config reaches the code (attention_backend: flex, through the smoke DAG, into the checkpoint)."""

from __future__ import annotations

import ast
import json
import math
import re
import shlex
from pathlib import Path

import pytest
import yaml
from _runs import snakemake, workdir

from sparsebert import recipes
from sparsebert.cli import main
from sparsebert.io import UserError

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src/sparsebert"
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())

# Where each section's keys are read: module -> {function (None: every function) -> {variable -> key prefix}}.
# A key is read as `var["key"]`, `var.get("key")`, `var.pop("key")`, `var.setdefault("key")`, or a chain of
# them (`recipe["model"]["x"]` reads model.x). A list's items are `name[]`.
TRAINING = ("training.py", {"build_optimizer": {"p": ""}, "build_scheduler": {"p": ""}})
READERS = {
    "corpus": [("data/corpus.py", {"build_corpus": {"params": ""}, "build_shard": {"params": ""},
                                   "shard_documents": {"params": ""}, "merge_shards": {"params": ""},
                                   "embedded_documents": {"cfg": "embedded."},
                                   "text_file_documents": {"cfg": "text_files."},
                                   "hub_documents": {"cfg": "hub.", "spec": "hub.datasets[]."}})],
    "tokenizer": [("data/tokenizer.py", {None: {"params": ""}})],
    "examples": [("data/pretraining.py", {None: {"params": ""}})],
    "proxy_tasks": [("data/proxy.py", {None: {"p": ""}})],
    "pretrain": [("pretrain.py", {None: {"recipe": ""}}), TRAINING],
    "finetune": [("finetune.py", {None: {"params": ""}}), TRAINING],
    "report": [("report.py", {None: {"cfg": ""}}), ("findings.py", {None: {"cfg": ""}})],
}
# Keys the scan cannot see being read, each with where it goes instead.
PASSED_ON = {
    "corpus": {"hub.datasets[].name": "a datasets.load_dataset keyword (**spec)"},
    "pretrain": {f"model.{k}": "a SparseBertConfig keyword (**recipe['model']; test below)"
                 for k in SCHEMA["definitions"]["model"]["properties"]},
}
# Keys of the shared training code that fine-tuning never uses (it passes its own optimizer and schedule,
# found in finetune.py below; it has no DAM mask logits, and no poly schedule).
FINETUNE_UNUSED = {"poly_power": "read by the poly schedule only", "dam_lr": "DAM mask logits only"}


def _reads(module: str, functions: dict) -> set[str]:
    tree = ast.parse((PACKAGE / module).read_text())
    found = set()
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef) or (None not in functions and fn.name not in functions):
            continue
        names = functions.get(fn.name, functions.get(None, {}))
        for node in ast.walk(fn):
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                base, key = node.value, node.slice.value
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args
                  and node.func.attr in ("get", "pop", "setdefault") and isinstance(node.args[0], ast.Constant)):
                base, key = node.func.value, node.args[0].value
            else:
                continue
            chain = [key]
            while isinstance(base, ast.Subscript) and isinstance(base.slice, ast.Constant):
                chain.insert(0, base.slice.value)
                base = base.value
            if isinstance(base, ast.Name) and base.id in names and all(isinstance(k, str) for k in chain):
                found.add(names[base.id] + ".".join(chain))
    return found


def _set_by_finetune() -> set[str]:
    """Keys that finetune.py sets itself in the recipe it hands to training.build_optimizer/build_scheduler."""
    tree = ast.parse((PACKAGE / "finetune.py").read_text())
    keys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("build_optimizer", "build_scheduler"):
            for arg in node.args:
                if isinstance(arg, ast.Dict):
                    keys |= {k.value for k in arg.keys if isinstance(k, ast.Constant)}
    return keys


def code_keys(section: str) -> set[str]:
    keys = set().union(*(_reads(module, functions) for module, functions in READERS[section]))
    if section == "finetune":
        keys -= _reads(*TRAINING) & (_set_by_finetune() | set(FINETUNE_UNUSED))
    return keys


def schema_keys(node: dict, prefix: str = "") -> set[str]:
    """Every key of a definition, nested ones as dotted paths (list items: `name[].key`)."""
    keys = set()
    for name, sub in recipes._subschema(node).get("properties", {}).items():
        sub = recipes._subschema(sub)
        keys.add(prefix + name)
        keys |= schema_keys(sub, f"{prefix}{name}.")
        if sub.get("type") == "array" and "properties" in sub.get("items", {}):
            keys |= schema_keys(sub["items"], f"{prefix}{name}[].")
    return keys


@pytest.mark.parametrize("section", recipes.SECTIONS)
def test_the_code_reads_exactly_the_keys_the_schema_defines(section):
    in_code = code_keys(section)
    in_schema = schema_keys(recipes.definition(section))
    assert in_code - in_schema == set(), f"read by the code, missing from definitions.{section}"
    # Every defined key is read, or handed on (PASSED_ON); a mapping also counts as read when its keys are.
    read = in_code | set(PASSED_ON.get(section, {}))
    unread = {k for k in in_schema - read if not any(s.startswith((k + ".", k + "[].")) for s in read)}
    assert unread == set(), f"defined in definitions.{section} but read nowhere"


def test_the_scan_sees_the_reads_it_must():
    """Guards the scanner itself: a refactoring that hides reads from it must fail here, not pass silently."""
    assert {"lr", "betas", "eps", "poly_power", "schedule", "model.max_position_embeddings",
            "snapshot_every"} <= code_keys("pretrain")
    assert {"optimizer", "schedule"} <= _set_by_finetune()
    assert {"hub.datasets[].group_rows", "embedded.sources", "text_files.glob"} <= code_keys("corpus")
    assert "bootstrap_samples" in code_keys("report") and "qa_context_words" in code_keys("proxy_tasks")


def test_every_model_key_is_a_model_config_keyword():
    from sparsebert.modeling import SparseBertConfig

    model = recipes.defaults("pretrain")["model"]
    values = {"max_position_embeddings": 64, "attention_backend": "flex", "dam_init_std": 0.02,
              **{k: v for k, v in model.items() if k not in ("attention_backend", "dam_init_std")}}  # fmt: skip
    assert set(values) == set(SCHEMA["definitions"]["model"]["properties"])
    config = SparseBertConfig(**values)
    for key, value in values.items():
        assert getattr(config, key) == value, key


def test_every_section_can_be_set_from_the_config():
    """Each subcommand's definition is the config section the workflow hands it (dam_search and per_task
    override the same recipes)."""
    props = SCHEMA["properties"]
    for section in ("corpus", "tokenizer", "examples", "proxy_tasks", "pretrain", "finetune", "report"):
        assert props[section]["$ref"] == f"#/definitions/{section}", section
    assert props["dam_search"]["$ref"] == "#/definitions/pretrain"
    assert props["finetune"]["properties"]["per_task"]["additionalProperties"]["$ref"] == "#/definitions/finetune"


def test_schedules_and_optimizers_are_the_codes():
    import torch

    from sparsebert import training

    pretrain = SCHEMA["definitions"]["pretrain"]["properties"]
    for schedule in pretrain["schedule"]["enum"]:
        assert 0 <= training.lr_multiplier(5, 10, 0.1, schedule) <= 1
    with pytest.raises(UserError, match="valid: linear, poly, constant"):
        training.lr_multiplier(5, 10, 0.1, "cosine")
    model = torch.nn.Linear(2, 2)
    for name in pretrain["optimizer"]["enum"]:
        training.build_optimizer(model, {**recipes.defaults("pretrain"), "optimizer": name})
    with pytest.raises(UserError, match="valid: adamw, lamb"):
        training.build_optimizer(model, {**recipes.defaults("pretrain"), "optimizer": "sgd"})


# ------------------------------------------------------------------------------------------ fill / defaults


@pytest.mark.parametrize("section", recipes.SECTIONS)
def test_defaults_are_valid_and_complete(section):
    defaults = recipes.defaults(section)
    assert recipes.problems(defaults, section) == []
    assert recipes.fill(section, {}) == defaults


def test_fill_keeps_what_is_set_and_fills_the_rest_at_every_level():
    recipe = recipes.fill("pretrain", {"lr": 0.5, "model": {"hidden_size": 64, "attention_backend": "flex"}})
    assert recipe["lr"] == 0.5 and recipe["schedule"] == "linear" and recipe["betas"] == [0.9, 0.999]
    assert recipe["model"] == {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                               "intermediate_size": 512, "hidden_dropout_prob": 0.1,
                               "attention_probs_dropout_prob": 0.1, "attention_backend": "flex",
                               "dam_init_std": 0.001}  # fmt: skip
    assert "max_position_embeddings" not in recipe["model"]  # no default: the pretraining length
    corpus = recipes.fill("corpus", {"embedded": {"max_words": 10}})
    assert corpus["embedded"] == {"sources": ["shakespeare", "kjv", "wikipedia", "lee"], "max_words": 10}
    assert corpus["hub"]["datasets"][1] == {"path": "bookcorpus/bookcorpus", "group_rows": 256}
    defaults = recipes.defaults("corpus")
    defaults["embedded"]["sources"].append("x")  # a caller's change never reaches the schema's defaults
    assert recipes.defaults("corpus")["embedded"]["sources"] == ["shakespeare", "kjv", "wikipedia", "lee"]


@pytest.mark.parametrize("section, params, key, message", [
    ("pretrain", {"model": {"attention_backnd": "flex"}}, "pretrain.model.attention_backnd", "unknown key; valid: "
     "attention_backend, attention_probs_dropout_prob, dam_init_std"),
    ("pretrain", {"schedule": "cosine"}, "pretrain.schedule", "must be one of linear, poly, constant, got 'cosine'"),
    ("pretrain", {"max_steps": 3.0}, "pretrain.max_steps", "must be an integer >= 1, got 3.0"),
    ("pretrain", {"max_steps": True}, "pretrain.max_steps", "must be an integer >= 1, got True"),
    ("pretrain", {"lr": math.nan}, "pretrain.lr", "must be a finite number > 0, got nan"),
    ("pretrain", {"betas": [0.9]}, "pretrain.betas", "too short"),
    ("finetune", {"per_task": {}}, "finetune.per_task", "unknown key"),  # the config's, not the subcommand's
    ("examples", {"seed": 2**32}, "examples.seed", "must be an integer in [0, 4294967295], got 4294967296"),
    ("corpus", {"embedded": {"sources": ["lee", "gutenberg"]}}, "corpus.embedded.sources[1]", "got 'gutenberg'"),
    ("proxy_tasks", {"sed": 1}, "proxy_tasks.sed", "unknown key"),
    ("tokenizer", {"pretrained": 3}, "tokenizer.pretrained", "must be null or a string, got 3"),
    ("report", {"bootstrap_samples": 10}, "report.bootstrap_samples", "must be an integer >= 100, got 10"),
])  # fmt: skip
def test_a_bad_key_or_value_is_one_line_naming_it_and_the_section(section, params, key, message):
    with pytest.raises(UserError) as error:
        recipes.fill(section, params)
    text = str(error.value)
    assert "\n" not in text and text.startswith(f"{key}: ") and message in text, text
    assert f"--params of `{section}`" in text


COMMAND_LINE = ("(a string, as `snakemake --config` passes every value inside a list or mapping: give it unquoted in "
                "a config file, --configfile)")
EXPONENT = "(YAML reads a number with an exponent as text unless it has a decimal point and a signed exponent: write"


@pytest.mark.parametrize("params, key, ending", [
    # snakemake --config 'pretrain={max_steps: 100, lr: 0.001, compile: true}' and 'seeds=[0, 1]' give strings
    ({"max_steps": "100"}, "pretrain.max_steps", f"got '100' {COMMAND_LINE}"),
    ({"lr": "0.001"}, "pretrain.lr", f"got '0.001' {COMMAND_LINE}"),
    ({"lr": "2"}, "pretrain.lr", f"got '2' {COMMAND_LINE}"),
    ({"compile": "true"}, "pretrain.compile", f"got 'true' {COMMAND_LINE}"),
    ({"micro_batch_size": "64"}, "pretrain.micro_batch_size", f"got '64' {COMMAND_LINE}"),  # null or an integer
    # PyYAML (YAML 1.1) reads 1e-3 (no decimal point) and 2.5e0 (no sign on the exponent) as text, in a file too
    ({"lr": "1e-3"}, "pretrain.lr", f"got '1e-3' {EXPONENT} 1.0e-3)"),
    ({"lr": "1E-3"}, "pretrain.lr", f"got '1E-3' {EXPONENT} 1.0e-3)"),
    ({"lr": "2.5e0"}, "pretrain.lr", f"got '2.5e0' {EXPONENT} 2.5e+0)"),
    ({"lr": "1e3"}, "pretrain.lr", f"got '1e3' {EXPONENT} 1.0e+3)"),
    ({"lr": "1e+3"}, "pretrain.lr", f"got '1e+3' {EXPONENT} 1.0e+3)"),
    ({"eval_examples": "1e3"}, "pretrain.eval_examples", "got '1e3' (write 1000)"),
    # strings that are not what the key takes get no hint
    ({"max_steps": "x"}, "pretrain.max_steps", "got 'x'"),
    ({"max_steps": "2.5"}, "pretrain.max_steps", "got '2.5'"),
    ({"max_steps": "true"}, "pretrain.max_steps", "got 'true'"),
    ({"compile": "1"}, "pretrain.compile", "got '1'"),
    ({"eval_examples": "2.5e0"}, "pretrain.eval_examples", "got '2.5e0'"),
    ({"lr": "inf"}, "pretrain.lr", "got 'inf'"),
    ({"precision": "1"}, "pretrain.precision", "got '1'"),
])  # fmt: skip
def test_a_number_or_boolean_written_as_a_string_says_why_it_is_one(params, key, ending):
    found = dict(recipes.problems(params, "pretrain"))
    assert list(found) == [key] and found[key].endswith(ending), found


def test_every_problem_is_named_at_once():
    found = recipes.problems({"lrr": 1, "max_steps": 0, "model": {"heads": 2}}, "pretrain")
    assert [key for key, _ in found] == ["pretrain.lrr", "pretrain.max_steps", "pretrain.model.heads"]


# ------------------------------------------------------------------------------------------ subcommands

# (subcommand, its arguments before --params; the inputs need not exist: the params are checked first)
SUBCOMMANDS = [
    ("corpus", "corpus", []),
    ("tokenizer", "tokenizer", ["--corpus", "nowhere"]),
    ("examples", "examples", ["--corpus", "nowhere", "--tokenizer", "nowhere"]),
    ("proxy-tasks", "proxy_tasks", ["--corpus", "nowhere"]),
    ("pretrain", "pretrain", ["--examples", "nowhere", "--tokenizer", "nowhere", "--mask", "dense"]),
    ("dam-search", "pretrain", ["--examples", "nowhere", "--tokenizer", "nowhere", "--mask", "dam_s",
                                "--dam-lambda", "1e-3"]),
    ("finetune", "finetune", ["--model", "nowhere", "--tokenizer", "nowhere", "--task", "proxy_single",
                              "--task-source", '{"path": "nowhere"}']),
]  # fmt: skip


@pytest.mark.parametrize("command, section, args", SUBCOMMANDS, ids=[c for c, _, _ in SUBCOMMANDS])
def test_each_subcommand_refuses_an_unknown_key_before_writing(tmp_path, capsys, monkeypatch, command, section, args):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main([command, *args, "--params", json.dumps({"bogus_key": 1}), "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"error: {section}.bogus_key: unknown key; valid: " in err[0], err
    assert list(tmp_path.iterdir()) == []  # no output, no state directory, nothing


def test_the_dam_search_recipe_overrides_model_keys_one_by_one():
    """dam_search's keys replace pretrain's, but its `model` replaces only the model keys it names: the searched
    model keeps the shape of the fixed-mask models it is compared with."""
    pretrain = {"lr": 1e-3, "max_steps": 100, "model": {"hidden_size": 64, "num_hidden_layers": 2}}
    config = {"pretrain": pretrain, "dam_search": {"lr": 5e-3, "model": {"attention_backend": "sdpa"}}}
    assert recipes.dam_search_recipe(config) == {
        "lr": 5e-3, "max_steps": 100, "model": {"hidden_size": 64, "num_hidden_layers": 2, "attention_backend": "sdpa"}}
    assert pretrain == {"lr": 1e-3, "max_steps": 100, "model": {"hidden_size": 64, "num_hidden_layers": 2}}  # as given
    assert recipes.dam_search_recipe({"pretrain": pretrain}) == pretrain
    assert recipes.dam_search_recipe({"pretrain": pretrain, "dam_search": {"model": {"hidden_size": 32}}})["model"] \
        == {"hidden_size": 32, "num_hidden_layers": 2}


# ------------------------------------------------------------------------------------------ the workflow


@pytest.mark.slow
def test_a_retrains_own_fine_tuning_resources_give_its_jobs_a_gpu(tmp_path):
    """resources.finetune.per_variant names the fine-tuned variant, a retraining's too (only pretrain_learned's
    name the searches): a GPU asked for `dam_s_0.001_retrain` reaches its fine-tunings and no other job (its
    jobs used to take the search's entry, no GPU, while their threads came from its own); one asked for the
    retraining under pretrain_learned's search name reaches the retraining."""
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    config.setdefault("resources", {}).setdefault("finetune", {})["per_variant"] = {"dam_s_0.001_retrain": {"gpu": 1}}
    config["resources"]["pretrain_learned"] = {"per_variant": {"dam_s_0.001": {"gpu": 1}}}
    wd = workdir(tmp_path / "wd")
    (wd / "res.yaml").write_text(yaml.safe_dump(config))
    planned = snakemake(wd, "-n", "-p", "--configfile", "res.yaml").stdout
    commands = re.findall(r"Shell command: (.*sparsebert finetune --model (\S+) .*)", planned)
    on_gpu = {model for command, model in commands if command.startswith("python -m sparsebert.launch --gpus 1 --")}
    hidden = {model for command, model in commands if command.startswith("CUDA_VISIBLE_DEVICES= ")}
    assert on_gpu == {f"results/smoke/pretrain/dam_s_0.001_retrain/seed{s}/model" for s in (0, 1)}, planned[-3000:]
    assert len(on_gpu) + len(hidden) == len({model for _, model in commands}) and len(hidden) == 8
    retrainings = re.findall(r"Shell command: (.*sparsebert pretrain .*--mask learned .*)", planned)
    assert len(retrainings) == 2 and all(c.startswith("python -m sparsebert.launch --gpus 1 --") for c in retrainings)


@pytest.mark.slow
def test_a_dam_search_model_override_keeps_the_pretraining_shape_in_the_planned_job(tmp_path):
    """The dam-search command Snakemake plans carries pretrain's model with dam_search's one model key over it
    (it used to carry the schema's default shape: 128 hidden, 2 layers, 4 heads)."""
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    config["dam_search"] = {**config.get("dam_search", {}), "model": {"attention_backend": "sdpa"}}
    wd = workdir(tmp_path / "wd")
    (wd / "dam.yaml").write_text(yaml.safe_dump(config))
    planned = snakemake(wd, "-n", "-p", "--configfile", "dam.yaml").stdout
    commands = re.findall(r"python -m sparsebert (dam-search .*?) > logs/", planned)
    assert commands, planned[-3000:]
    for command in commands:
        argv = shlex.split(command)
        params = json.loads(argv[argv.index("--params") + 1])
        assert params["model"] == {**config["pretrain"]["model"], "attention_backend": "sdpa"}, params["model"]


@pytest.mark.slow
def test_a_config_key_reaches_the_model_through_the_workflow(tmp_path, tiny_pretraining_data):
    """`attention_backend: flex` in a config's pretrain.model arrives in the pretrained checkpoint's config: the
    pretraining job's command as Snakemake plans it (smoke-sized: one fixed mask, one seed), run as written but on
    the tests' tiny examples. (The smoke DAG runs such commands itself; running this one's corpus, tokenizer and
    examples jobs too took 30-55 s on 2 cores.)"""
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    config["pretrain"]["model"]["attention_backend"] = "flex"
    config.update(seeds=[0], masks={"longformer": {"window": 2}}, dam={}, dam_retrain=False, resources={})
    wd = workdir(tmp_path / "wd")
    (wd / "flex.yaml").write_text(yaml.safe_dump(config))
    planned = snakemake(wd, "pretrain_all", "-n", "-p", "--configfile", "flex.yaml").stdout
    [command] = re.findall(r"python -m sparsebert (pretrain .*?) > logs/", planned)
    examples, tokenizer = tiny_pretraining_data
    paths = {"--examples": examples, "--tokenizer": tokenizer, "--out": tmp_path / "out", "--state-dir": tmp_path / "state"}
    argv = shlex.split(command)
    assert set(paths) <= set(argv), argv
    main([str(paths.get(before, arg)) for before, arg in zip([None, *argv], argv)])
    assert json.loads((tmp_path / "out/model/config.json").read_text())["attention_backend"] == "flex"


@pytest.mark.slow
def test_an_unknown_config_key_stops_snakemake_before_any_job(tmp_path):
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    config["pretrain"]["model"]["attention_backnd"] = "flex"
    wd = workdir(tmp_path / "wd")
    (wd / "bad.yaml").write_text(yaml.safe_dump(config))
    r = snakemake(wd, "-n", "--configfile", "bad.yaml", timeout=300, check=False)
    out = r.stdout + r.stderr
    errors = [line for line in out.splitlines() if line.startswith("config error: ")]
    assert r.returncode != 0 and len(errors) == 1, out[-3000:]
    assert errors[0].startswith("config error: pretrain.model.attention_backnd: unknown key; valid: "), errors
    assert "Building DAG" not in out and not (wd / "data").exists() and not (wd / "results").exists()


# ------------------------------------------------------------------------------------------ exact messages
# The messages are what a user reads when a config is wrong, so each kind of schema violation is checked
# word for word on a small hand-made config (expected texts written out by hand from the schema).

SMOKE = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
MASK_NAMES = "dense, no_diagonal, strided, fixed, longformer, logsparse, bigbird, star, blockwise"
PRETRAIN_KEYS = ("batch_size, betas, checkpoint_every, compile, dam_lr, eps, eval_examples, grad_clip, "
                 "keep_checkpoints, log_every, lr, max_steps, micro_batch_size, model, optimizer, poly_power, "
                 "precision, schedule, seed, snapshot_every, warmup, weight_decay")  # fmt: skip


def test_the_smoke_config_is_valid():
    """The base of the whole-config cases below has no problem of its own."""
    assert recipes.problems(SMOKE) == []


def test_an_unknown_mask_name_lists_the_registry_masks():
    """A `masks` key is a name from an enum (propertyNames), reported as an unknown name under its own key."""
    config = {**SMOKE, "masks": {"dense": {}, "bogus": {}}}
    assert recipes.problems(config) == [("masks.bogus", f"unknown name; valid: {MASK_NAMES}")]


def test_missing_required_keys_are_named_at_every_level():
    """Only the absent required keys are reported, each under its full dotted key (and `where`'s prefix)."""
    config = {k: v for k, v in SMOKE.items() if k != "scale"}
    config["tasks"] = {k: v for k, v in SMOKE["tasks"].items() if k != "source"}
    assert recipes.problems(config) == [("scale", "missing (required)"), ("tasks.source", "missing (required)")]
    assert recipes.problems(config, where="cfg") == [("cfg.scale", "missing (required)"),
                                                     ("cfg.tasks.source", "missing (required)")]


def test_exclusive_bounds_are_described_with_strict_signs():
    """exclusiveMinimum / exclusiveMaximum violations read like the other range errors, not jsonschema's text."""
    assert recipes.problems({"lr": 0}, "pretrain") == [("pretrain.lr", "must be a finite number > 0, got 0")]
    assert recipes.problems({"validation_fraction": 1}, "examples") == [
        ("examples.validation_fraction", "must be a finite number >= 0 and < 1, got 1")]


def test_an_unknown_key_beside_a_ref_lists_both_sets_of_keys():
    """The config's `finetune` is the finetune definition ($ref) plus its own `per_task`: both are valid keys."""
    finetune_keys = ("batch_size, betas, bias_correction, checkpoint_every, doc_stride, epochs, eps, eval_batch_size, "
                     "grad_clip, grad_clip_scope, keep_checkpoints, log_every, lr, max_answer_length, "
                     "max_eval_examples, max_query_length, max_seq_length, max_train_examples, n_best_size, "
                     "null_score_diff_threshold, per_task, precision, schedule_offset, seed, warmup, "
                     "weight_decay")  # fmt: skip
    config = {**SMOKE, "finetune": {**SMOKE["finetune"], "bogus": 1}}
    assert recipes.problems(config) == [("finetune.bogus", f"unknown key; valid: {finetune_keys}")]


def test_where_prefixes_the_keys_of_a_section():
    """dam_search is checked against the pretrain definition but reported under its own name."""
    assert recipes.problems({"lrr": 1}, "pretrain", where="dam_search") == [
        ("dam_search.lrr", f"unknown key; valid: {PRETRAIN_KEYS}")]


def test_fill_joins_all_problems_into_one_line():
    """Every problem, '; '-separated, then the section and the schema file."""
    with pytest.raises(UserError) as error:
        recipes.fill("pretrain", {"lrr": 1, "max_steps": 0})
    assert str(error.value) == (f"pretrain.lrr: unknown key; valid: {PRETRAIN_KEYS}; pretrain.max_steps: must be an "
                                "integer >= 1, got 0 (--params of `pretrain`, defined in config.schema.yaml)")


def test_an_unknown_section_names_the_sections():
    with pytest.raises(ValueError) as error:
        recipes.definition("bogus")
    assert str(error.value) == ("no recipe section 'bogus'; sections: corpus, tokenizer, examples, proxy_tasks, "
                                "pretrain, finetune, report")


def test_a_huge_integer_is_a_number():
    """An int too large for a float is still a number (it is an integer); math.isfinite would overflow on it."""
    assert recipes.problems({"lr": 10**400}, "pretrain") == []


@pytest.mark.parametrize("node, words", [
    ({"type": "boolean"}, "true or false"),
    ({"type": ["array", "object", "null"]}, "null or a list or a mapping"),
    ({}, "a value"),
    ({"minimum": 3}, "a value >= 3"),
    ({"type": "integer", "maximum": 5}, "an integer <= 5"),
    ({"type": "number", "exclusiveMaximum": 1}, "a finite number < 1"),
    ({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}, "a finite number > 0 and < 1"),
    ({"type": "number", "minimum": 0, "exclusiveMaximum": 1}, "a finite number >= 0 and < 1"),
    ({"type": "string", "exclusiveMinimum": 0, "maximum": 2}, "a string > 0 and <= 2"),
    ({"type": ["integer", "null"], "minimum": 1, "maximum": 9}, "null or an integer in [1, 9]"),
    ({"enum": ["a", "b", None]}, "one of a, b, None"),
])  # fmt: skip
def test_describe_in_words(node, words):
    """describe() on tiny hand-made schemas: each type's word, open and closed bounds, null, no type at all."""
    assert recipes.describe(node) == words


def test_defaults_are_deep_copies():
    """A caller that edits a default's nested mapping (a hub dataset) does not change the next defaults."""
    defaults = recipes.defaults("corpus")
    defaults["hub"]["datasets"][0]["name"] = "changed"
    assert recipes.defaults("corpus")["hub"]["datasets"][0] == {"path": "wikimedia/wikipedia", "name": "20231101.en",
                                                                 "clean": "wikipedia"}


def test_a_mapping_without_defaults_is_not_invented():
    """A nested mapping whose keys have no default is left absent when unset, and kept as given when set;
    a definition without properties leaves the value as it is."""
    node = {"properties": {"opt": {"type": "object", "properties": {"x": {"type": "integer"}}}}}
    assert recipes._with_defaults(node, {}) == {}
    assert recipes._with_defaults(node, {"opt": {}}) == {"opt": {}}
    assert recipes._with_defaults({"$ref": "#/definitions/seed"}, {"x": 1}) == {"x": 1}
