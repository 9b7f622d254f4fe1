"""The one registry of downstream tasks: GLUE, SQuAD v1.1/v2.0, SWAG and the embedded proxy tasks.

A task loads (`formats.load_task`) either from the Hugging Face hub (`{"hub": true}`) or from a folder of files
in the task's original distribution format (`{"path": DIR}`: GLUE TSV, SQuAD JSON, SWAG CSV). Both give a
`datasets.DatasetDict` with exactly the hub's columns and features (`hub_features`), so featurization,
training and metrics have one code path. Proxy tasks (`proxy_*`) have no hub copy: `sparsebert proxy-tasks`
writes them in the original format of their shape and they load through the same local readers. This module
imports no other part of the package but io, and no `datasets` at import: the DAG reads the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sparsebert.io import UserError

if TYPE_CHECKING:  # `datasets` is imported where it is used: the registry alone is read when the DAG is built
    from datasets import Features

KINDS = ("classification", "regression", "span", "multiple_choice")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # one of KINDS
    # classes (classification), 1 (regression), 2 start/end logits (span), choices (multiple_choice)
    num_labels: int
    text_fields: tuple[str, ...]  # hub column names of the inputs, in model order (segment A, segment B)
    metrics: tuple[str, ...]  # metric names reported by `metrics.task_metrics`
    # The number in the paper's column for this task. As in the BERT paper's GLUE table (Devlin et al. 2019,
    # Table 1: "F1 scores are reported for QQP and MRPC, Spearman correlations are reported for STS-B"), which
    # SparseBERT's table follows (its QQP 86-87 is F1: BERT-base QQP accuracy is ~91); every other metric is
    # still computed and kept in all_metrics.csv.
    main_metric: str
    file_format: str  # "glue_tsv" | "squad_json" | "swag_csv": the original distribution format
    files: tuple[tuple[str, str], ...]  # (split, file name in the task folder); the first split is train
    label_names: tuple[str, ...] = ()  # ClassLabel names (classification / multiple choice)
    hub_path: str = ""  # datasets.load_dataset(hub_path, hub_config); "" = no hub copy (proxies)
    hub_config: str | None = None
    # glue_tsv only: file columns holding the text fields (same order) and the label, and the column
    # names of a header-less file (CoLA is distributed without a header).
    tsv_columns: tuple[str, ...] = ()
    tsv_names: tuple[str, ...] = ()
    unanswerable: bool = False  # span: SQuAD v2-style questions without an answer exist
    proxy: bool = False  # derived from the embedded corpus, not the benchmark itself
    description: str = ""

    @property
    def train_split(self) -> str:
        return self.files[0][0]

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return tuple(split for split, _ in self.files[1:])


def _glue(name, kind, text_fields, tsv_columns, metrics, main, labels=(), names=(), files=None, **kw):
    files = files or (("train", "train.tsv"), ("validation", "dev.tsv"))
    num_labels = len(labels) if kind == "classification" else 1
    return TaskSpec(name, kind, num_labels, text_fields, metrics, main, "glue_tsv", files, labels,
                    "nyu-mll/glue", name, tsv_columns, names, **kw)  # fmt: skip


_BINARY = ("accuracy", "f1", "combined_score")
_SQUAD_V1 = ("exact_match", "f1")
_SQUAD_V2 = ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1")

_SPECS = [
    # GLUE: hub column names and labels from nyu-mll/glue; file columns from the GLUE benchmark's TSVs.
    _glue("cola", "classification", ("sentence",), ("sentence", "label"), ("matthews_correlation",),
          "matthews_correlation", ("unacceptable", "acceptable"),
          names=("source", "label", "author_label", "sentence")),
    _glue("sst2", "classification", ("sentence",), ("sentence", "label"), ("accuracy",), "accuracy",
          ("negative", "positive")),
    _glue("mrpc", "classification", ("sentence1", "sentence2"), ("#1 String", "#2 String", "Quality"),
          _BINARY, "f1", ("not_equivalent", "equivalent")),
    _glue("stsb", "regression", ("sentence1", "sentence2"), ("sentence1", "sentence2", "score"),
          ("pearson", "spearmanr", "combined_score"), "spearmanr"),
    _glue("qqp", "classification", ("question1", "question2"), ("question1", "question2", "is_duplicate"),
          _BINARY, "f1", ("not_duplicate", "duplicate")),
    _glue("mnli", "classification", ("premise", "hypothesis"), ("sentence1", "sentence2", "gold_label"),
          ("accuracy",), "accuracy", ("entailment", "neutral", "contradiction"),
          files=(("train", "train.tsv"), ("validation_matched", "dev_matched.tsv"),
                 ("validation_mismatched", "dev_mismatched.tsv"))),
    _glue("qnli", "classification", ("question", "sentence"), ("question", "sentence", "label"),
          ("accuracy",), "accuracy", ("entailment", "not_entailment")),
    _glue("rte", "classification", ("sentence1", "sentence2"), ("sentence1", "sentence2", "label"),
          ("accuracy",), "accuracy", ("entailment", "not_entailment")),
    _glue("wnli", "classification", ("sentence1", "sentence2"), ("sentence1", "sentence2", "label"),
          ("accuracy",), "accuracy", ("not_entailment", "entailment")),
    TaskSpec("squad_v1", "span", 2, ("question", "context"), _SQUAD_V1, "f1", "squad_json",
             (("train", "train-v1.1.json"), ("validation", "dev-v1.1.json")), hub_path="rajpurkar/squad"),
    TaskSpec("squad_v2", "span", 2, ("question", "context"), _SQUAD_V2, "f1", "squad_json",
             (("train", "train-v2.0.json"), ("validation", "dev-v2.0.json")), hub_path="rajpurkar/squad_v2",
             unanswerable=True),
    TaskSpec("swag", "multiple_choice", 4, ("sent1", "sent2"), ("accuracy",), "accuracy", "swag_csv",
             (("train", "train.csv"), ("validation", "val.csv")), ("0", "1", "2", "3"),
             hub_path="allenai/swag", hub_config="regular"),
    # Proxy tasks (see proxy.py): one per task shape, written by `sparsebert proxy-tasks` into data/tasks/.
    TaskSpec("proxy_single", "classification", 2, ("sentence",), ("matthews_correlation", "accuracy"),
             "matthews_correlation", "glue_tsv", (("train", "train.tsv"), ("validation", "dev.tsv")),
             ("unacceptable", "acceptable"), tsv_columns=("sentence", "label"),
             tsv_names=("source", "label", "author_label", "sentence"), proxy=True,
             description="PROXY (CoLA-shaped): is this corpus sentence intact (1), or have a third of its words "
                         "(at least two) been replaced by words of random corpus sentences (0)?"),
    TaskSpec("proxy_pair", "classification", 3, ("sentence1", "sentence2"), ("accuracy",), "accuracy",
             "glue_tsv", (("train", "train.tsv"), ("validation", "dev.tsv")),
             ("next", "same_document", "other_document"), tsv_columns=("sentence1", "sentence2", "label"),
             proxy=True,
             description="PROXY (MNLI-shaped): does sentence2 directly follow sentence1, come from elsewhere "
                         "in the same document, or from another document?"),
    TaskSpec("proxy_regression", "regression", 1, ("sentence1", "sentence2"),
             ("pearson", "spearmanr", "combined_score"), "combined_score", "glue_tsv",
             (("train", "train.tsv"), ("validation", "dev.tsv")), tsv_columns=("sentence1", "sentence2", "score"),
             proxy=True,
             description="PROXY (STS-B-shaped): sentence2 is sentence1 after random word swaps and word "
                         "replacements; score = 5 x the fraction of sentence1's word bigrams kept in sentence2."),
    TaskSpec("proxy_qa", "span", 2, ("question", "context"), _SQUAD_V2, "f1", "squad_json",
             (("train", "train-v2.0.json"), ("validation", "dev-v2.0.json")), unanswerable=True, proxy=True,
             description="PROXY (SQuAD v2-shaped): the passage is two sentences of two documents; the question "
                         "'Which sentence has: w1 w2 w3 w4?' gives four words of one of them in random order and "
                         "the answer is that whole sentence. Unanswerable (a third of the questions) when the four "
                         "words come from a sentence of a third document."),
    TaskSpec("proxy_choice", "multiple_choice", 4, ("sent1", "sent2"), ("accuracy",), "accuracy", "swag_csv",
             (("train", "train.csv"), ("validation", "val.csv")), ("0", "1", "2", "3"), proxy=True,
             description="PROXY (SWAG-shaped): given a sentence and the first 2-3 words of the next one, pick "
                         "the next one's true ending among it and three endings of sentences of other documents "
                         "(cut after the same number of words)."),
]  # fmt: skip

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in _SPECS}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[name]


def hub_features(spec: TaskSpec) -> Features:
    """The columns and feature types of `spec` on the hub (checked against the dataset cards of
    nyu-mll/glue, rajpurkar/squad, rajpurkar/squad_v2 and allenai/swag "regular")."""
    from datasets import ClassLabel, Features, List, Value

    if spec.file_format == "glue_tsv":
        label = Value("float32") if spec.kind == "regression" else ClassLabel(names=list(spec.label_names))
        return Features({**{f: Value("string") for f in spec.text_fields}, "label": label, "idx": Value("int32")})
    if spec.file_format == "squad_json":
        return Features({
            "id": Value("string"), "title": Value("string"), "context": Value("string"),
            "question": Value("string"),
            "answers": {"text": List(Value("string")), "answer_start": List(Value("int32"))},
        })  # fmt: skip
    if spec.file_format == "swag_csv":
        text = ("video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
                "ending0", "ending1", "ending2", "ending3")  # fmt: skip
        return Features({**{c: Value("string") for c in text}, "label": ClassLabel(names=list(spec.label_names))})
    raise ValueError(f"unknown file format {spec.file_format!r}")
