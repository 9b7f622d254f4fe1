"""Helpers for the task tests: tiny files in the benchmarks' original formats, a tiny WordPiece tokenizer."""

from __future__ import annotations

import csv
import json
import string
from pathlib import Path

from transformers import BertTokenizerFast

# Hub features written down from the dataset cards (nyu-mll/glue, rajpurkar/squad[_v2], allenai/swag
# "regular"), independently of sparsebert.data.tasks.hub_features, which the loaders must match.
from datasets import ClassLabel, Features, List, Value

HUB_FEATURES = {
    "cola": Features({"sentence": Value("string"),
                      "label": ClassLabel(names=["unacceptable", "acceptable"]), "idx": Value("int32")}),
    "sst2": Features({"sentence": Value("string"),
                      "label": ClassLabel(names=["negative", "positive"]), "idx": Value("int32")}),
    "mrpc": Features({"sentence1": Value("string"), "sentence2": Value("string"),
                      "label": ClassLabel(names=["not_equivalent", "equivalent"]), "idx": Value("int32")}),
    "stsb": Features({"sentence1": Value("string"), "sentence2": Value("string"),
                      "label": Value("float32"), "idx": Value("int32")}),
    "qqp": Features({"question1": Value("string"), "question2": Value("string"),
                     "label": ClassLabel(names=["not_duplicate", "duplicate"]), "idx": Value("int32")}),
    "mnli": Features({"premise": Value("string"), "hypothesis": Value("string"),
                      "label": ClassLabel(names=["entailment", "neutral", "contradiction"]), "idx": Value("int32")}),
    "qnli": Features({"question": Value("string"), "sentence": Value("string"),
                      "label": ClassLabel(names=["entailment", "not_entailment"]), "idx": Value("int32")}),
    "rte": Features({"sentence1": Value("string"), "sentence2": Value("string"),
                     "label": ClassLabel(names=["entailment", "not_entailment"]), "idx": Value("int32")}),
    "squad": Features({"id": Value("string"), "title": Value("string"), "context": Value("string"),
                       "question": Value("string"),
                       "answers": {"text": List(Value("string")), "answer_start": List(Value("int32"))}}),
    "swag": Features({**{c: Value("string") for c in ["video-id", "fold-ind", "startphrase", "sent1", "sent2",
                                                       "gold-source", "ending0", "ending1", "ending2", "ending3"]},
                      "label": ClassLabel(names=["0", "1", "2", "3"])}),
}  # fmt: skip


def write_tsv(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


MNLI_TRAIN_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                     "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]
STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
               "score"]  # fmt: skip


def mnli_row(i, premise, hypothesis, label, dev=False):
    labels = [label] * (5 if dev else 1)
    return [str(i), "1", f"{i}e", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)", premise, hypothesis,
            *labels, label]  # fmt: skip


def write_glue(root: Path) -> Path:
    """A GLUE folder (CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE) in the benchmark's layouts."""
    cola = [["gj04", "1", "", "Our friends won't buy this analysis, let alone the next one we propose."],
            ["gj04", "0", "*", "They drank the pub."],
            ["gj04", "1", "", 'He said "hi" to me.']]  # a quote is text in unquoted GLUE TSV
    for split in ("train", "dev"):
        write_tsv(root / "CoLA" / f"{split}.tsv", cola)
        write_tsv(root / "SST-2" / f"{split}.tsv", [["sentence", "label"], ["a gorgeous film ", "1"],
                                                   ["dull and tedious", "0"]])
        write_tsv(root / "MRPC" / f"{split}.tsv", [["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                                                  ["1", "702876", "702977", "He said so .", "So he said ."],
                                                  ["0", "2108705", "2108831", "Yes .", "No ."]])
        write_tsv(root / "STS-B" / f"{split}.tsv", [STSB_HEADER,
                  ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A plane takes off.",
                   "An air plane is taking off.", "5.000"],
                  ["1", "main-captions", "MSRvid", "2012test", "0004", "none", "none", "A man plays a flute.",
                   "A man is cutting a fish.", "0.500"]])  # fmt: skip
        write_tsv(root / "QQP" / f"{split}.tsv", [["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                                                 ["0", "1", "2", "How do I learn?", "How to learn?", "1"]])
        write_tsv(root / "QNLI" / f"{split}.tsv", [["index", "question", "sentence", "label"],
                                                  ["0", "Who?", "Nobody knows.", "not_entailment"]])
        write_tsv(root / "RTE" / f"{split}.tsv", [["index", "sentence1", "sentence2", "label"],
                                                 ["0", "A dog barks.", "An animal makes noise.", "entailment"]])
    write_tsv(root / "MNLI" / "train.tsv", [MNLI_TRAIN_HEADER, mnli_row(0, "P0.", "H0.", "neutral"),
                                            mnli_row(1, "P1.", "H1.", "contradiction")])
    write_tsv(root / "MNLI" / "dev_matched.tsv", [MNLI_DEV_HEADER, mnli_row(0, "Pm.", "Hm.", "entailment", True)])
    write_tsv(root / "MNLI" / "dev_mismatched.tsv", [MNLI_DEV_HEADER,
                                                     mnli_row(0, "Px.", "Hx.", "contradiction", True),
                                                     mnli_row(1, "Py.", "Hy.", "neutral", True)])
    return root


SQUAD_CONTEXT = "The Normans were in Normandy. In the 10th century, Rollo swore fealty to King Charles III."


def squad_json(version: str = "v1.1") -> dict:
    qas = [{"id": "q1", "question": "Who swore fealty?", "answers": [{"text": "Rollo", "answer_start": 51},
                                                                    {"text": "Rollo swore", "answer_start": 51}]},
           {"id": "q2", "question": "In what century?", "answers": [{"text": "10th century", "answer_start": 37}]}]
    if version == "v2.0":
        for qa in qas:
            qa["is_impossible"] = False
        qas.append({"id": "q3", "question": "Who swore to Rollo?", "answers": [], "is_impossible": True,
                    "plausible_answers": [{"text": "King Charles III", "answer_start": 73}]})
    return {"version": version, "data": [{"title": "Normans", "paragraphs": [{"context": SQUAD_CONTEXT, "qas": qas}]}]}


def write_squad(folder: Path, version: str = "v1.1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        (folder / f"{split}-{version}.json").write_text(json.dumps(squad_json(version), indent=1))
    return folder


SWAG_HEADER = ["", "video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
               "ending0", "ending1", "ending2", "ending3", "label"]  # fmt: skip
SWAG_ROWS = [["0", "anetv_1", "3416", "Members of the group dance. They", "Members of the group dance.", "They",
              "gold", "clap along.", "eat a car.", "fly away.", "sink, slowly.", "0"],
             ["1", "lsmdc_2", "12", "Someone opens the door. He", "Someone opens the door.", "He", "gen",
              "walks in.", "is a door.", "opens the door.", 'says "hi", then leaves.', "3"]]  # fmt: skip


def write_swag(folder: Path, rows=SWAG_ROWS, header=SWAG_HEADER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train.csv", "val.csv"):
        with open(folder / name, "w", newline="", encoding="utf-8") as f:
            csv.writer(f, lineterminator="\n").writerows([header, *rows])
    return folder


def tiny_tokenizer(folder: Path) -> BertTokenizerFast:
    """Lowercasing WordPiece over letters (+ a few whole words): any English text tokenizes, offline."""
    words = ["the", "normans", "were", "in", "normandy", "rollo", "swore", "king", "century", "who", "what"]
    letters = list(string.ascii_lowercase + string.digits)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.punctuation, *letters,
             *(f"##{c}" for c in letters), *words]  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)
