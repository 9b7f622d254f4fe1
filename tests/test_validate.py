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

from sparsebert import io as sparsebert_io
from sparsebert import recipes, validate

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


def _local_task_lacks_files(config):
    config["tasks"] = {"names": ["mnli"], "source": "local", "local_dir": "glue"}
    Path("glue/mnli").mkdir(parents=True)  # the test runs in an empty directory
    Path("glue/mnli/train.tsv").write_text("sentence1\tsentence2\tgold_label\na\tb\tneutral\n")


def _local_tasks_complete(config):
    config["tasks"] = {"names": ["sst2"], "source": "local", "local_dir": "glue",
                       "hub_revisions": {"nyu-mll/glue": "main"}}
    Path("glue/sst2").mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        Path("glue/sst2", name).write_text("sentence\tlabel\nfine .\t1\n")


def _without_dam(change=None):
    """No DAM search in the run: the pretrain recipe's checks stand alone (with one, its model is checked too)."""

    def without(config):
        for key in ("dam", "dam_search", "dam_retrain"):
            config.pop(key)
        if change:
            change(config)

    return without


def _search_with_fewer_positions(config):
    config["pretrain"]["model"]["max_position_embeddings"] = 64
    config["finetune"]["max_seq_length"] = 64
    config["dam_search"]["model"] = {"max_position_embeddings": 32}  # the examples' length; the rest: pretrain's


def _pretrain_warmup_beside_a_search_warmup(config):
    config["pretrain"]["warmup"] = 50
    config["dam_search"]["warmup"] = 10  # fits its 20 steps


def _dam_search_batch_over_four_processes(config):
    config["dam_search"]["batch_size"] = 6
    config["resources"]["dam_search"] = {"ddp_cpu_procs": 4}


def _dam_search_shorter_than_pretrain_warmup(config):
    config["dam_search"]["max_steps"] = 10
    config["pretrain"]["warmup"] = 15  # fits pretrain's 20 steps, not the search's 10


def _retrain_variants_of_no_search(config):
    config["dam_retrain"] = False
    config["resources"]["pretrain_learned"] = {"per_variant": {"dam_s_0.001": {"threads": 1}}}


def _proxy(**settings):
    """The proxy tasks' settings (and their names, with `names`) changed together."""
    names = settings.pop("names", None)

    def change(config):
        config["proxy_tasks"].update(settings)
        if names:
            config["tasks"]["names"] = names
    return change


def _bad_mask_at_the_finetuning_length(config):
    config["finetune"]["max_seq_length"] = 16
    config["masks"]["longformer"] = {"window": -3}


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
    ("real-task-from-proxy-source", _set("tasks.names", ["sst2", "rte", "proxy_qa"]), "tasks.names", True),
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
    ("local-task-folder-lacks-files", _local_task_lacks_files, "tasks.local_dir", False),
    ("text-files-without-glob", _set("corpus", {"source": "text_files"}), "corpus.text_files.glob", False),
    ("gpus-do-not-split-over-nodes", _set("resources.dam_search", {"gpu": 3, "nodes": 2}), "resources.dam_search",
     False),
    ("two-nodes-without-gpus-one-line", _set("resources.pretrain.nodes", 2), "resources.pretrain", False),
    ("micro-batches-do-not-split", _set("pretrain.micro_batch_size", 8), "pretrain.batch_size", False),
    ("dam-search-batch-not-split", _dam_search_batch_over_four_processes, "dam_search.batch_size", False),
    ("retrain-batch-not-split", _set("resources.pretrain_learned", {"ddp_cpu_procs": 3}), "pretrain.batch_size", False),
    ("retrain-variant-without-retraining", _retrain_variants_of_no_search,
     "resources.pretrain_learned.per_variant.dam_s_0.001", False),
    ("dam-search-hidden-not-divisible", _set("dam_search.model", {"hidden_size": 33, "num_attention_heads": 2}),
     "dam_search.model.hidden_size", False),
    ("dam-search-warmup-longer", _set("dam_search.warmup", 50), "dam_search.warmup", False),
    ("dam-search-shorter-than-warmup", _dam_search_shorter_than_pretrain_warmup, "pretrain.warmup", False),
    ("mask-bad-at-the-finetuning-length", _bad_mask_at_the_finetuning_length, "masks.longformer", False),
    ("revision-for-local-files", _local_tasks_complete, "tasks.hub_revisions.nyu-mll/glue", False),
    ("no-search-hidden-not-divisible", _without_dam(_set("pretrain.model.hidden_size", 33)),
     "pretrain.model.hidden_size", False),
    ("no-search-warmup-longer", _without_dam(_set("pretrain.warmup", 50)), "pretrain.warmup", False),
    ("pretrain-warmup-beside-a-search-warmup", _pretrain_warmup_beside_a_search_warmup, "pretrain.warmup", False),
    ("finetune-longer-than-the-searched-positions", _search_with_fewer_positions, "finetune.max_seq_length", False),
    ("nodes-times-processes", _set("resources.dam_search", {"nodes": 2, "ddp_cpu_procs": 3}), "pretrain.batch_size",
     False),
    ("search-micro-batches-do-not-split", _set("dam_search.micro_batch_size", 3), "dam_search.batch_size", False),
    ("retrain-named-as-its-retraining", _set("resources.pretrain_learned.per_variant",
                                             {"dam_s_0.001_retrain": {"threads": 2}}),
     "resources.pretrain_learned.per_variant.dam_s_0.001_retrain", False),
    ("gpu-jobs-shared-by-other-counts", _set("resources", {"dam_search": {"gpu": 1, "jobs_per_gpu": 3},
                                                           "finetune": {"gpu": 1}}),
     "resources.finetune.jobs_per_gpu", False),
    ("gpu-variant-shared-by-another-count", _set("resources", {"pretrain": {
        "jobs_per_gpu": 4, "per_variant": {"no_diagonal": {"gpu": 1}}}, "finetune": {"gpu": 1}}),
     "resources.finetune.jobs_per_gpu", False),
    ("proxy-min-words-over-max", _set("proxy_tasks.min_words", 15), "proxy_tasks.min_words", True),
    ("proxy-one-word-sentences", _set("proxy_tasks.min_words", 1), "proxy_tasks.min_words", False),
    ("proxy-qa-passage-under-two-sentences", _set("proxy_tasks.qa_context_words", 11), "proxy_tasks.qa_context_words",
     False),
    ("proxy-qa-sentences-under-a-question", _proxy(min_words=2, max_words=3), "proxy_tasks.max_words", False),
    ("proxy-choice-sentences-too-short", _proxy(min_words=2, max_words=4, names=["proxy_choice"]),
     "proxy_tasks.max_words", False),
]
assert len(BAD) >= 20

# The whole error line after `config error: <key>: `, per row of BAD: each names the value and what it must be
# (smoke.yaml: seq_len 32, 2 heads, batch 8, 20 steps, tasks proxy_single and proxy_qa).
MESSAGE = {
    "longformer-negative-window": "parameter window must be an integer >= 0, got -3 (at seq_len 32)",
    "strided-zero-stride": "parameter stride must be an integer >= 1, got 0 (at seq_len 32)",
    "fixed-summary-fills-block": "parameter summary must be an integer in [0, 7], got 8 (at seq_len 32)",
    "window-as-string": "parameter window must be an integer >= 0, got '2' (at seq_len 32)",
    "window-as-bool": "parameter window must be an integer >= 0, got True (at seq_len 32)",
    "bigbird-negative-random": "parameter num_random must be an integer >= 0, got -1 (at seq_len 32)",
    "bigbird-seed-too-large": "parameter seed must be an integer in [0, 4294967295], got 1099511627776 (at seq_len 32)",
    "blockwise-heads-vs-model": "3 mask heads; the model has 2 (pretrain.model.num_attention_heads)",
    "unknown-mask-param": "mask 'longformer' has no parameter(s) ['windw']; valid: ['num_global', 'window'] "
                          "(at seq_len 32)",
    "real-task-from-proxy-source": "sst2, rte: not proxy task(s), but tasks.source is proxy (only proxy_* tasks are "
                                   "built from the corpus; use source hub or local for real tasks)",
    "proxy-task-from-hub": "proxy_single, proxy_qa: no hub copy (tasks.source is hub); proxy tasks need source proxy",
    "local-source-without-dir": "tasks.source local needs tasks.local_dir (folders <local_dir>/<task>)",
    "revision-of-a-repository-not-read": "no task of this run is read from nyu-mll/glue (tasks.source proxy, "
                                         "tasks.names: proxy_single, proxy_qa)",
    "revision-of-an-unknown-repository": "unknown name; valid: nyu-mll/glue, rajpurkar/squad, rajpurkar/squad_v2, "
                                         "allenai/swag",
    "local-task-files-missing": "glue is not a directory",
    "lambdas-share-a-name": "lambdas 0.001 and 0.0010000001 both name the variant dam_s_0.001",
    "hidden-not-divisible-by-heads": "33 is not divisible by num_attention_heads 2",
    "positions-below-seq-len": "16 < examples.max_seq_length 32: every position needs an embedding",
    "finetune-longer-than-positions": "64 > the 32 positions of the models pretrained with pretrain.model (raise its "
                                      "max_position_embeddings) (tasks proxy_single, proxy_qa)",
    "per-task-unknown-task": "not a configured task (tasks.names: proxy_single, proxy_qa)",
    "per-task-no-room-for-context": "30 leaves no room for the context in a 32-token window (task proxy_qa)",
    "negative-pretrain-seed": "must be an integer in [0, 4294967295], got -1",
    "finetune-seed-too-large": "must be an integer in [0, 4294967295], got 1099511627776",
    "recipe-seed-beside-seeds": "the DAG pretrains every variant once per entry of the top-level `seeds` (e.g. seeds: "
                                "[0, 1, 2]); remove this key",
    "negative-entry-of-seeds": "must be an integer in [0, 4294967295], got -1",
    "examples-seq-len-too-short": "must be an integer in [5, 1048576], got 3",
    "examples-unknown-key": "unknown key; valid: dupe_factor, masked_lm_prob, max_documents, max_predictions_per_seq, "
                            "max_seq_length, num_proc, seed, short_seq_prob, validation_fraction, whole_word_mask",
    "tokenizer-unknown-key": "unknown key; valid: lowercase, min_frequency, pretrained, vocab_size",
    "unknown-embedded-source": "must be one of shakespeare, kjv, wikipedia, lee, got 'gutenberg'",
    "corpus-glob-matches-nothing": "no files match 'none/*.txt'",
    "per-variant-unknown-variant": "not a variant of rule pretrain (its variants: dense, no_diagonal, longformer)",
    "batch-not-split-by-ddp": "8 is not divisible by the world size 3 (resources.pretrain.per_variant.dense starts 3 "
                              "processes)",
    "finetune-on-two-gpus": "2 processes, but fine-tuning runs in one process (gpu <= 1, ddp_cpu_procs <= 1, nodes 1)",
    "two-nodes-without-gpus": "a 2-node job needs GPUs (gpu or gres) or ddp_cpu_procs",
    "dam-search-heads-differ": "4 heads, but pretrain_learned retrains with pretrain's 2: the learned mask would "
                               "not fit",
    "proxy-train-below-batch": "4 < finetune.batch_size 8: not one training batch (task proxy_single)",
    "train-examples-below-batch": "4 < batch_size 8: not one training batch (task proxy_single)",
    "warmup-longer-than-training": "50 warmup steps exceed max_steps 20: the peak rate is never reached",
    "local-task-folder-lacks-files": "glue/mnli lacks dev_matched.tsv, dev_mismatched.tsv (task mnli, glue_tsv)",
    "text-files-without-glob": "source text_files needs a glob (e.g. 'texts/**/*.txt')",
    "gpus-do-not-split-over-nodes": "gpu 3 (per job) does not split evenly over 2 nodes",
    # One line for the rule's shared resources, not one per variant that uses them (no_diagonal, longformer);
    # dense's own 2 CPU processes can span the nodes.
    "two-nodes-without-gpus-one-line": "a 2-node job needs GPUs (gpu or gres) or ddp_cpu_procs",
    # Only dense's 2 processes x 8 fail; the 1-process variants split 8 into one micro-batch of 8.
    "micro-batches-do-not-split": "8 is not divisible by world size 2 x micro_batch_size 8 "
                                  "(resources.pretrain.per_variant.dense starts 2 processes)",
    "dam-search-batch-not-split": "6 is not divisible by the world size 4 (resources.dam_search starts 4 processes)",
    "retrain-batch-not-split": "8 is not divisible by the world size 3 (resources.pretrain_learned starts 3 processes)",
    "retrain-variant-without-retraining": "not a variant of rule pretrain_learned (its variants: none)",
    "dam-search-hidden-not-divisible": "33 is not divisible by num_attention_heads 2",
    "dam-search-warmup-longer": "50 warmup steps exceed max_steps 20: the peak rate is never reached",
    "dam-search-shorter-than-warmup": "15 warmup steps exceed max_steps 10: the peak rate is never reached",
    "mask-bad-at-the-finetuning-length": "parameter window must be an integer >= 0, got -3 (at seq_len 16)",
    "revision-for-local-files": "no task of this run is read from nyu-mll/glue (tasks.source local, tasks.names: sst2)",
    "no-search-hidden-not-divisible": "33 is not divisible by num_attention_heads 2",
    "no-search-warmup-longer": "50 warmup steps exceed max_steps 20: the peak rate is never reached",
    "pretrain-warmup-beside-a-search-warmup": "50 warmup steps exceed max_steps 20: the peak rate is never reached",
    "finetune-longer-than-the-searched-positions": "64 > the 32 positions of the models pretrained with "
                                                   "dam_search.model (raise its max_position_embeddings) (tasks "
                                                   "proxy_single, proxy_qa)",
    # The search has no batch of its own: pretrain's 8 over 2 nodes x 3 CPU processes.
    "nodes-times-processes": "8 is not divisible by the world size 6 (resources.dam_search starts 6 processes)",
    "search-micro-batches-do-not-split": "8 is not divisible by world size 1 x micro_batch_size 3 "
                                         "(resources.dam_search starts 1 process)",
    # pretrain_learned's per_variant entries name the search whose mask the retraining uses
    "retrain-named-as-its-retraining": "not a variant of rule pretrain_learned (its variants: dam_s_0.001)",
    "gpu-jobs-shared-by-other-counts": "1, but resources.dam_search.jobs_per_gpu is 3: every GPU job of a run shares "
                                       "its GPU by the same count",
    # one variant's GPU: its rule's count is the one the other GPU jobs must match
    "gpu-variant-shared-by-another-count": "1, but resources.pretrain.jobs_per_gpu is 4: every GPU job of a run "
                                           "shares its GPU by the same count",
    "proxy-min-words-over-max": "15 > proxy_tasks.max_words 14: no sentence fits (tasks proxy_single, proxy_qa)",
    "proxy-one-word-sentences": "must be an integer >= 2, got 1",
    "proxy-qa-passage-under-two-sentences": "11 < 2 x 6: no passage of two sentences of at least 6 words fits "
                                            "(task proxy_qa)",
    "proxy-qa-sentences-under-a-question": "3 < 4: a question takes 4 words of a sentence (task proxy_qa)",
    "proxy-choice-sentences-too-short": "4 < 5: a next sentence holds 2-3 opening words and an ending of at least 3 "
                                        "(task proxy_choice)",
}
assert set(MESSAGE) == {row[0] for row in BAD}

# Changes at the edge of a check that must pass: the smoke config with each of them has no problem.
NEAR_MISSES = [
    ("positions-equal-seq-len", _set("pretrain.model.max_position_embeddings", 32)),
    ("warmup-equals-max-steps", _set("pretrain.warmup", 20)),
    ("one-context-token-left", _set("finetune.per_task", {"proxy_qa": {"max_query_length": 28}})),
    ("train-examples-equal-batch", _set("finetune.max_train_examples", 8)),
    ("proxy-train-equals-batch", _set("proxy_tasks.train_examples", 8)),
    ("one-head-mask-on-two-heads", _set("masks.blockwise", {"shift_heads": True, "num_heads": 1})),
    ("mask-per-head", _set("masks.blockwise", {"shift_heads": True, "num_heads": 2})),
    ("micro-batch-splits", _set("pretrain.micro_batch_size", 4)),
    ("gpus-split-over-nodes", _set("resources.dam_search", {"gpu": 4, "nodes": 2})),
    ("two-nodes-of-cpu-processes", _set("resources.dam_search", {"nodes": 2, "ddp_cpu_procs": 2})),
    ("finetune-on-one-gpu", _set("resources.finetune", {"gpu": 1})),
    ("gpu-jobs-shared-alike-cpu-jobs-aside", _set("resources", {"dam_search": {"gpu": 1, "jobs_per_gpu": 3},
                                                                "finetune": {"gpu": 1, "jobs_per_gpu": 3},
                                                                "pretrain": {"jobs_per_gpu": 5}})),
    ("retrain-named-as-its-search", _set("resources.pretrain_learned.per_variant", {"dam_s_0.001": {"threads": 2}})),
    ("proxy-min-words-equal-max", _set("proxy_tasks.min_words", 14)),  # and a passage of exactly two sentences
    ("proxy-qa-passage-of-two-shortest", _set("proxy_tasks.qa_context_words", 12)),
    ("proxy-qa-sentences-of-a-question", _proxy(min_words=2, max_words=4)),
    ("proxy-choice-sentences-just-long-enough", _proxy(min_words=2, max_words=5, names=["proxy_choice"])),
    ("revision-of-a-repository-read", lambda c: c.update(tasks={"names": ["sst2"], "source": "hub",
                                                               "hub_revisions": {"nyu-mll/glue": "main"}})),
]


def bad_config(change) -> dict:
    config = copy.deepcopy(SMOKE)
    change(config)
    return config


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("config error: ")]


@pytest.mark.parametrize("change, key, message", [pytest.param(c, k, MESSAGE[i], id=i) for i, c, k, _ in BAD])
def test_each_bad_config_gives_one_error_naming_its_key(tmp_path, monkeypatch, change, key, message):
    monkeypatch.chdir(tmp_path)  # relative paths (local tasks, corpus globs) resolve in an empty directory
    errors = validate.problems(bad_config(change))
    assert [e.key for e in errors] == [key], errors
    assert str(errors[0]) == f"{key}: {message}"


@pytest.mark.parametrize("change", [pytest.param(c, id=i) for i, c in NEAR_MISSES])
def test_a_config_at_the_edge_of_a_check_passes(change):
    assert validate.problems(bad_config(change)) == []


def test_a_config_of_only_the_required_sections_passes():
    """No dam, dam_search, resources, proxy_tasks or seeds: every check reads what the schema may leave out."""
    config = {"scale": "minimal", "corpus": {}, "tokenizer": {}, "examples": {}, "pretrain": {}, "masks": {"dense": {}},
              "tasks": {"names": ["proxy_single", "proxy_qa"], "source": "proxy"}, "finetune": {}}
    assert validate.problems(config) == []
    assert validate.problems({**config, "dam": {"dam_s": [1.0e-3]}}) == []  # a search without a dam_search section


def test_a_fine_tuning_batch_over_the_default_proxy_train_set_is_caught():
    """Without `proxy_tasks` the tasks have the schema's 4,000 training examples: a batch of 5,000 is not one
    (it used to pass, and fine-tuning failed after every pretraining)."""
    config = bad_config(_set("finetune.batch_size", 5000))
    del config["proxy_tasks"]
    config["finetune"]["max_train_examples"] = None  # smoke's 64 would be a second problem
    assert recipes.defaults("proxy_tasks")["train_examples"] == 4000
    [error] = validate.problems(config)
    assert str(error) == ("proxy_tasks.train_examples: 4000 < finetune.batch_size 5000: not one training batch (task "
                          "proxy_single)")
    config["finetune"]["batch_size"] = 4000
    assert validate.problems(config) == []


def test_every_problem_of_a_run_is_reported_not_only_the_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = bad_config(_set("masks.longformer", {"window": -1}))
    config["masks"]["blockwise"] = {"shift_heads": True, "num_heads": 3}
    config["masks"]["strided"] = {"stride": 0}
    assert [e.key for e in validate.problems(config)] == ["masks.longformer", "masks.blockwise.num_heads",
                                                          "masks.strided"]
    config = bad_config(_set("resources.pretrain.per_variant", {"dense": {"nodes": 2},
                                                                "longformer": {"ddp_cpu_procs": 3}}))
    assert [str(e) for e in validate.problems(config)] == [
        "resources.pretrain.per_variant.dense: a 2-node job needs GPUs (gpu or gres) or ddp_cpu_procs",
        "pretrain.batch_size: 8 is not divisible by the world size 3 (resources.pretrain.per_variant.longformer "
        "starts 3 processes)"]
    config = bad_config(_set("resources.finetune.per_variant", {"dense": {"gpu": 2}, "longformer": {"gpu": 2}}))
    assert [e.key for e in validate.problems(config)] == ["resources.finetune.per_variant.dense",
                                                          "resources.finetune.per_variant.longformer"]
    # The model's shape is wrong: the checks that derive lengths and shapes from it do not run.
    config = bad_config(_set("pretrain.model.hidden_size", 33))
    config["masks"]["strided"] = {"stride": 0}
    assert [e.key for e in validate.problems(config)] == ["pretrain.model.hidden_size"]


def test_a_profile_gres_spreads_the_gpus_over_the_nodes():
    """--set-resources gres (GPUs per node, SLURM's) replaces the per-job gpu count's split over the nodes."""
    config = bad_config(_set("resources.dam_search", {"gpu": 3, "nodes": 2}))
    assert [e.key for e in validate.problems(config)] == ["resources.dam_search"]
    assert validate.problems(config, overrides={"dam_search": {"gres": "gpu:2"}}) == []


# The `snakemake -n` runs of the cases marked for it in BAD, grouped so that a run's problems are all reported
# (a schema error stops the checks after it, a model that cannot be built stops the shape checks, and `tasks`
# gets one problem at a time): 5 Snakefile parses instead of 10, 5-7 s each on 2 cores.
DRY_RUNS = [["negative-pretrain-seed"], ["hidden-not-divisible-by-heads"], ["real-task-from-proxy-source"],
            ["revision-of-a-repository-not-read", "proxy-min-words-over-max"],
            ["longformer-negative-window", "lambdas-share-a-name", "finetune-longer-than-positions",
             "batch-not-split-by-ddp", "local-task-files-missing"]]  # fmt: skip


def test_the_dry_runs_take_every_case_marked_for_them():
    grouped = [case for run in DRY_RUNS for case in run]
    assert sorted(grouped) == sorted(i for i, _, _, dry in BAD if dry)


@pytest.mark.slow
@pytest.mark.parametrize("cases", DRY_RUNS,
                         ids=[run[0] + f"-and-{len(run) - 1}-more" * (len(run) > 1) for run in DRY_RUNS])
def test_snakemake_dry_run_stops_before_any_job(tmp_path, cases):
    """`snakemake -n` fails while parsing the Snakefile (before the DAG, so before any job) with exactly
    one line per problem, naming its key: the checks run where the Snakefile calls them, with no cache yet."""
    changes = {i: (change, key) for i, change, key, _ in BAD}
    for name in ("Snakefile", "workflow", "config", "envs"):
        (tmp_path / name).symlink_to(REPO / name)
    config = bad_config(lambda config: [changes[i][0](config) for i in cases])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run([str(BIN / "snakemake"), "-n", "--configfile", "bad.yaml"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    named = [line.removeprefix("config error: ").split(": ", 1)[0] for line in error_lines(out)]
    assert sorted(named) == sorted(changes[i][1] for i in cases), out[-3000:]
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

    from snakemake.resources import Resources

    def settings(*exprs):  # what Snakemake hands over for --set-resources (and a profile's set-resources)
        return Resources.parse(list(exprs), allow_expressions=True)

    class Workflow:
        class resource_settings:  # noqa: N801
            overwrite_resources = {"pretrain": settings("gpu=6", "slurm_partition=gpu", "slurm_extra='--signal=TERM@300'",
                                                        "mem_mb=4000", "gres=gpu:8", "mpi=srun", "constraint=['a', 'b']"),
                                   "tables": settings("mem_mb=100"),  # not a training rule
                                   # the per-model fine-tuning rule: checked as finetune, its values over finetune's
                                   "finetune_model": settings("gpu=2"),
                                   "finetune": settings("gpu=1", "mem_mb=9")}

    # string resources are expressions evaluated per job: read as Snakemake reads them (they were all 'None')
    assert validate.resource_overrides(Workflow) == {"pretrain": {
        "gpu": 6, "slurm_partition": "gpu", "slurm_extra": "--signal=TERM@300", "mem_mb": 4000, "gres": "gpu:8",
        "mpi": "srun", "constraint": "['a', 'b']"}, "finetune": {"gpu": 2, "mem_mb": 9}}
    assert validate.resource_overrides(None) == {}
    Workflow.resource_settings.overwrite_resources = {"pretrain": settings("gpu=6")}
    with pytest.raises(SystemExit, match="config error: pretrain.batch_size: 65536 is not divisible by world size 6"):
        validate.check_run(paper, Workflow, cache_dir=None)
    Workflow.resource_settings.overwrite_resources = {"finetune_model": settings("gpu=1")}  # alone
    assert validate.resource_overrides(Workflow) == {"finetune": {"gpu": 1}}
    # the multi-node block profiles/slurm/config.yaml documents (2 nodes x gres gpu:8 = 16 processes) passes
    block = ["slurm_partition=gpu", "nodes=2", "gpu=0", "gres=gpu:8", "mpi=srun", "tasks=2", "tasks_per_gpu=0",
             "slurm_extra='--signal=TERM@300'"]
    Workflow.resource_settings.overwrite_resources = {"pretrain": settings(*block)}
    validate.check_run(paper, Workflow, cache_dir=None)  # it stopped: "a 2-node job needs GPUs (gpu or gres)"
    Workflow.resource_settings.overwrite_resources = {"pretrain": settings(*block[:3], "gres=gpu:3", *block[4:])}
    with pytest.raises(SystemExit, match="pretrain.batch_size: 65536 is not divisible by world size 6"):
        validate.check_run(paper, Workflow, cache_dir=None)


def test_gpu_sharing_counts_the_jobs_that_take_gpu_slots():
    """A profile's gres gives a one-node job GPU slots as the config's gpu does; a multi-node job runs under srun
    and takes none, so its jobs_per_gpu does not matter."""
    config = bad_config(_set("resources", {"dam_search": {"gpu": 1, "jobs_per_gpu": 3}}))
    assert [str(e) for e in validate.problems(config, overrides={"finetune": {"gres": "gpu:1"}})] == [
        "resources.finetune.jobs_per_gpu: 1, but resources.dam_search.jobs_per_gpu is 3: every GPU job of a run "
        "shares its GPU by the same count"]
    assert validate.problems(config) == []  # finetune on the CPU: nothing shared
    config = bad_config(_set("resources", {"dam_search": {"gpu": 2, "nodes": 2},
                                           "finetune": {"gpu": 1, "jobs_per_gpu": 3}}))
    assert validate.problems(config) == []


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


def test_the_cache_keeps_runs_with_other_resources_apart(tmp_path):
    """The profile's --set-resources take part in the key: a pass with 8 GPUs does not excuse 6."""
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    cache = tmp_path / "not" / "there"  # created with its parents
    validate.check_run(paper, None, cache_dir=cache)
    assert validate.problems(paper, overrides={"pretrain": {"gpu": 8}}, cache_dir=cache) == []
    assert len(list(cache.iterdir())) == 2
    errors = validate.problems(paper, overrides={"pretrain": {"gpu": 6}}, cache_dir=cache)
    assert [e.key for e in errors] == ["pretrain.batch_size"]
    assert len(list(cache.iterdir())) == 2  # a run with problems leaves no marker


def test_the_cache_key_follows_the_config_the_code_the_schema_and_torch(tmp_path, monkeypatch):
    package, schema = tmp_path / "sparsebert", tmp_path / "sparsebert" / "config.schema.yaml"
    (package / "data").mkdir(parents=True)
    (package / "validate.py").write_text("v")
    (package / "data" / "corpus.py").write_text("c")
    schema.write_text("s")
    versions = {"torch": "2.13.0"}

    def version(name):
        if name not in versions:
            raise validate.metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(sparsebert_io, "PACKAGE", package)  # whose source the key hashes
    monkeypatch.setattr(validate.recipes, "SCHEMA_PATH", schema)
    monkeypatch.setattr(validate.metadata, "version", version)
    config = {"a": 1, "b": {"c": Path("x")}}  # default=str: a value JSON cannot write
    key = validate._cache_key(config, {})
    assert len(key) == 32 and int(key, 16) >= 0
    assert validate._cache_key({"b": {"c": Path("x")}, "a": 1}, {}) == key  # the order of the keys does not count
    seen, overrides = {key}, {"pretrain": {"gpu": 2}}

    def changed() -> bool:
        new = validate._cache_key(config, overrides)
        fresh = new not in seen
        seen.add(new)
        return fresh

    assert changed()  # the overrides
    (package / "data" / "corpus.py").write_text("c2")  # a module in a subpackage
    assert changed()
    (package / "data" / "corpus.py").rename(package / "data" / "tokenizer.py")  # same bytes, another module
    assert changed()
    schema.write_text("s2")
    assert changed()
    versions["torch"] = "2.11.0"
    assert changed()
    del versions["torch"]  # no torch installed: still a key
    assert changed()
    (package / "notes.txt").write_text("not code")
    assert not changed()


def test_a_recursive_corpus_glob_reaches_nested_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "texts" / "a" / "b").mkdir(parents=True)
    (tmp_path / "texts" / "a" / "b" / "c.txt").write_text("One. Two.\n")
    config = bad_config(_set("corpus", {"source": "text_files", "text_files": {"glob": "texts/**/*.txt"}}))
    assert validate.problems(config) == []


def test_a_cached_parse_does_not_import_torch(tmp_path):
    """The point of the cache: a no-op `snakemake` stays about a second (importing torch alone takes longer)."""
    probe = ("import sys, yaml; from sparsebert import validate; "
             f"c = yaml.safe_load(open({str(REPO / 'config/smoke.yaml')!r})); "
             f"assert validate.problems(c, cache_dir={str(tmp_path)!r}) == []; print('torch' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
            for _ in range(2)]
    assert [r.stdout.strip() for r in runs] == ["True", "False"], [r.stderr[-2000:] for r in runs]


def test_training_jobs_may_not_ask_for_more_gpus_than_the_run_allows():
    """Snakemake lowers a job's gpu to the run's --resources gpu=N without a word: paper.yaml's 8-GPU pretraining
    ran on the local profile's gpu=1. One line per rule that asks for more; gpu.yaml's 1-GPU jobs under demo-gpu's
    gpu=9 (1 GPU x 9 slots), a run that sets no limit, and gpu=0 (CPU only) pass."""
    from snakemake.resources import Resources

    class Workflow:
        global_resources = {"_cores": 8, **Resources.parse(["gpu=1"], allow_expressions=True)}

    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    with pytest.raises(SystemExit) as stop:
        validate.check_run(paper, Workflow, cache_dir=None)
    assert str(stop.value).splitlines()[1:] == [
        f"config error: resources.{rule}: 8 GPUs per job, but the run allows 1 (--resources gpu=1, e.g. a profile's): "
        f"Snakemake would run it on 1; give the run gpu=<GPUs x jobs_per_gpu>"
        for rule in ("pretrain", "dam_search", "pretrain_learned")]
    for gpus in (8, 0):
        Workflow.global_resources = {"_cores": 8, **Resources.parse([f"gpu={gpus}"], allow_expressions=True)}
        validate.check_run(paper, Workflow, cache_dir=None)
    Workflow.global_resources = {"_cores": 8}
    validate.check_run(paper, Workflow, cache_dir=None)
    Workflow.global_resources = {"_cores": 8, **Resources.parse(["gpu=9"], allow_expressions=True)}
    validate.check_run(yaml.safe_load((REPO / "config/gpu.yaml").read_text()), Workflow, cache_dir=None)
    assert validate.run_gpus(None) is None
