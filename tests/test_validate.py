"""Whole-run validation at DAG build time (sparsebert/validate.py): a table of bad configs, each of which
fails with one line naming its key (all through the checks, a sample of rows through `snakemake -n` itself,
which must stop before building the DAG); the shipped configs pass; the cache skips the torch-bound checks."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sparsebert import validate

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMOKE = yaml.safe_load((REPO / "config/smoke.yaml").read_text())


def _set(path: str, value):
    """A change that sets the dotted config key `path` (creating mappings on the way)."""

    def change(config):
        *parents, leaf = path.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    return change


def _local_tasks(config):
    config["tasks"] = {"names": ["sst2"], "source": "local", "local_dir": "glue"}  # ./glue does not exist


def _retrain_with_other_heads(config):
    config["dam_retrain"] = True  # pretrain_learned retrains with pretrain's model and the searched mask
    config["dam_search"]["model"] = {"hidden_size": 32, "num_attention_heads": 4}  # smoke's pretrain: 2 heads


# (id, change to config/smoke.yaml, the key the one error line must name, also run through `snakemake -n`)
BAD = [
    ("longformer-negative-window", _set("masks.longformer", {"window": -3}), "masks.longformer", True),
    ("strided-zero-stride", _set("masks.strided", {"stride": 0}), "masks.strided", False),
    ("fixed-summary-fills-block", _set("masks.fixed", {"block": 8, "summary": 8}), "masks.fixed", False),
    ("window-as-string", _set("masks.longformer", {"window": "2"}), "masks.longformer", False),
    ("window-as-bool", _set("masks.longformer", {"window": True}), "masks.longformer", False),
    ("bigbird-negative-random", _set("masks.bigbird", {"num_random": -1}), "masks.bigbird", False),
    ("bigbird-seed-too-large", _set("masks.bigbird", {"seed": 2**40}), "masks.bigbird", False),
    ("blockwise-heads-vs-model", _set("masks.blockwise", {"shift_heads": True, "num_heads": 3}),
     "masks.blockwise.num_heads", False),
    ("unknown-mask-param", _set("masks.longformer", {"windw": 2}), "masks.longformer", False),
    ("real-task-from-proxy-source", _set("tasks.names", ["sst2", "proxy_qa"]), "tasks.names", True),
    ("proxy-task-from-hub", _set("tasks.source", "hub"), "tasks.names", False),
    ("local-source-without-dir", _set("tasks.source", "local"), "tasks.local_dir", False),
    ("revision-of-a-repository-not-read", _set("tasks.hub_revisions", {"nyu-mll/glue": "main"}),
     "tasks.hub_revisions.nyu-mll/glue", True),
    ("revision-of-an-unknown-repository", _set("tasks.hub_revisions", {"glue": "main"}), "tasks.hub_revisions.glue",
     False),
    ("local-task-files-missing", _local_tasks, "tasks.local_dir", True),
    ("lambdas-share-a-name", _set("dam.dam_s", [1.0e-3, 1.0000001e-3]), "dam.dam_s", True),
    ("hidden-not-divisible-by-heads", _set("pretrain.model.hidden_size", 33), "pretrain.model.hidden_size", True),
    ("positions-below-seq-len", _set("pretrain.model.max_position_embeddings", 16),
     "pretrain.model.max_position_embeddings", False),
    ("finetune-longer-than-positions", _set("finetune.max_seq_length", 64), "finetune.max_seq_length", True),
    ("per-task-unknown-task", _set("finetune.per_task", {"proxy_pair": {"lr": 1e-3}}),
     "finetune.per_task.proxy_pair", False),
    ("per-task-no-room-for-context", _set("finetune.per_task", {"proxy_qa": {"max_query_length": 30}}),
     "finetune.per_task.proxy_qa.max_query_length", False),
    ("negative-pretrain-seed", _set("pretrain.seed", -1), "pretrain.seed", True),
    ("finetune-seed-too-large", _set("finetune.seed", 2**40), "finetune.seed", False),
    ("recipe-seed-beside-seeds", _set("dam_search.seed", 3), "dam_search.seed", False),  # top-level seeds decide
    ("negative-entry-of-seeds", _set("seeds", [0, -1]), "seeds[1]", False),
    ("examples-seq-len-too-short", _set("examples.max_seq_length", 3), "examples.max_seq_length", False),
    ("examples-unknown-key", _set("examples.max_seq_len", 64), "examples.max_seq_len", False),
    ("tokenizer-unknown-key", _set("tokenizer.vocab_sise", 1000), "tokenizer.vocab_sise", False),
    ("unknown-embedded-source", _set("corpus.embedded.sources", ["lee", "gutenberg"]),
     "corpus.embedded.sources[1]", False),
    ("corpus-glob-matches-nothing", _set("corpus", {"source": "text_files", "text_files": {"glob": "none/*.txt"}}),
     "corpus.text_files.glob", False),
    ("per-variant-unknown-variant", _set("resources.pretrain.per_variant", {"densee": {"ddp_cpu_procs": 2}}),
     "resources.pretrain.per_variant.densee", False),
    ("batch-not-split-by-ddp", _set("resources.pretrain.per_variant", {"dense": {"ddp_cpu_procs": 3}}),
     "pretrain.batch_size", True),
    ("finetune-on-two-gpus", _set("resources.finetune", {"gpu": 2}), "resources.finetune", False),
    ("two-nodes-without-gpus", _set("resources.dam_search", {"nodes": 2}), "resources.dam_search", False),
    ("dam-search-heads-differ", _retrain_with_other_heads, "dam_search.model.num_attention_heads", False),
    ("proxy-train-below-batch", _set("proxy_tasks.train_examples", 4), "proxy_tasks.train_examples", False),
    ("train-examples-below-batch", _set("finetune.max_train_examples", 4), "finetune.max_train_examples", False),
    ("warmup-longer-than-training", _set("pretrain.warmup", 50), "pretrain.warmup", False),
]
assert len(BAD) >= 20


def bad_config(change) -> dict:
    config = copy.deepcopy(SMOKE)
    change(config)
    return config


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("config error: ")]


@pytest.mark.parametrize("change, key", [pytest.param(c, k, id=i) for i, c, k, _ in BAD])
def test_each_bad_config_gives_one_error_naming_its_key(tmp_path, monkeypatch, change, key):
    monkeypatch.chdir(tmp_path)  # relative paths (local tasks, corpus globs) resolve in an empty directory
    errors = validate.problems(bad_config(change))
    assert [e.key for e in errors] == [key], errors
    line = error_lines(f"config error: {errors[0]}")[0]
    assert "\n" not in str(errors[0]) and line.startswith(f"config error: {key}: "), line


@pytest.mark.slow
@pytest.mark.parametrize("change, key", [pytest.param(c, k, id=i) for i, c, k, dry in BAD if dry])
def test_snakemake_dry_run_stops_before_any_job(tmp_path, change, key):
    """`snakemake -n` fails while parsing the Snakefile (before the DAG, so before any job) with exactly
    one line, naming the key: the checks run where the Snakefile calls them, with no cache yet."""
    for name in ("Snakefile", "workflow", "config", "envs"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad_config(change)))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run([str(BIN / "snakemake"), "-n", "--configfile", "bad.yaml"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    lines = error_lines(out)
    assert len(lines) == 1 and lines[0].startswith(f"config error: {key}: "), out[-3000:]
    assert "Building DAG" not in out and "Job stats" not in out, out[-3000:]
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()


def test_shipped_configs_pass_also_under_the_slurm_profile(monkeypatch):
    """Every config in config/, so that a new one cannot ship broken (the default, smoke and paper at least)."""
    monkeypatch.chdir(REPO)
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())["set-resources"]
    shipped = sorted((REPO / "config").glob("*.yaml"))
    assert {"config.yaml", "smoke.yaml", "paper.yaml"} <= {p.name for p in shipped}
    for path in shipped:
        config = yaml.safe_load(path.read_text())
        assert validate.problems(config) == [], path.name
        assert validate.problems(config, overrides=profile) == [], path.name


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys in a mapping without a word; this loader refuses them."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        twice = sorted({str(k) for k in keys if keys.count(k) > 1})
        if twice:
            raise yaml.constructor.ConstructorError(None, None, f"keys given twice: {twice}", node.start_mark)
        return super().construct_mapping(node, deep)


def test_no_shipped_yaml_gives_a_key_twice():
    """The schema, every config, the profiles and dvc.yaml: a key written twice would silently drop the first."""
    paths = [REPO / "workflow/schemas/config.schema.yaml", REPO / "dvc.yaml", *sorted((REPO / "config").glob("*.yaml")),
             *sorted((REPO / "profiles").glob("*/config.yaml"))]
    for path in paths:
        yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    with pytest.raises(yaml.constructor.ConstructorError, match=r"keys given twice: \['jobs'\]"):
        yaml.load("tasks: {jobs: per_task, source: hub}\nseeds: [0]\ntasks2:\n  jobs: 1\n  jobs: 2\n",
                  Loader=UniqueKeyLoader)


def test_the_profile_gpus_decide_the_batch_split():
    """--set-resources replace the config's resources at job time: 6 GPUs cannot split the paper's batch."""
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    errors = validate.problems(paper, overrides={"pretrain": {"gpu": 6}})
    assert [e.key for e in errors] == ["pretrain.batch_size"] and "world size 6" in str(errors[0])

    class Parsed:  # what Snakemake hands over: ParsedResource(orig_arg, value)
        def __init__(self, orig_arg, value):
            self.orig_arg, self.value = orig_arg, value

    class Workflow:
        class resource_settings:  # noqa: N801
            overwrite_resources = {"pretrain": {"gpu": Parsed("6", 6), "slurm_partition": Parsed("gpu", print)}}

    assert validate.resource_overrides(Workflow) == {"pretrain": {"gpu": 6, "slurm_partition": "gpu"}}


def test_check_run_exits_with_one_line_per_problem(capsys):
    config = bad_config(_set("masks.longformer", {"window": -3}))
    config["pretrain"]["seed"] = 3  # the top-level seeds decide
    with pytest.raises(SystemExit) as exit_info:
        validate.check_run(config, cache_dir=None)
    header, *lines = str(exit_info.value.code).splitlines()
    assert header.startswith("config validation failed (2 problem(s)")
    assert len(lines) == 2 and all(line.startswith("config error: ") for line in lines)
    assert "masks.longformer: parameter window must be an integer >= 0, got -3" in lines[1]


def test_cache_skips_the_pure_checks_but_never_the_file_checks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    config = bad_config(lambda c: None)
    assert validate.problems(config, cache_dir=cache) == []
    assert len(list(cache.iterdir())) == 1

    def must_not_run(*args, **kwargs):
        raise AssertionError("pure checks ran despite a cached pass")

    monkeypatch.setattr(validate, "pure_problems", must_not_run)
    assert validate.problems(config, cache_dir=cache) == []
    # Files are checked every time: a glob that matched at the first parse may match nothing now.
    config["corpus"] = {"source": "text_files", "text_files": {"glob": "texts/*.txt"}}
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("One. Two.\n")
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert validate.problems(config, cache_dir=cache) == []
    (tmp_path / "texts" / "a.txt").unlink()
    monkeypatch.setattr(validate, "pure_problems", must_not_run)
    assert [e.key for e in validate.problems(config, cache_dir=cache)] == ["corpus.text_files.glob"]
    # A different config is a different key: its pure checks run (and fail here).
    monkeypatch.undo()
    config["pretrain"]["seed"] = 3
    assert "pretrain.seed" in [e.key for e in validate.problems(config, cache_dir=cache)]


def test_a_cached_parse_does_not_import_torch(tmp_path):
    """The point of the cache: a no-op `snakemake` stays about a second (importing torch alone takes longer)."""
    probe = ("import sys, yaml; from sparsebert import validate; "
             f"c = yaml.safe_load(open({str(REPO / 'config/smoke.yaml')!r})); "
             f"assert validate.problems(c, cache_dir={str(tmp_path)!r}) == []; print('torch' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
            for _ in range(2)]
    assert [r.stdout.strip() for r in runs] == ["True", "False"], [r.stderr[-2000:] for r in runs]
