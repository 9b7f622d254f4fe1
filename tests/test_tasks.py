"""Task registry and loaders: original-format files load with the hub's exact columns; bad input is one UserError."""

import dataclasses
import json
from pathlib import Path

import pytest
from _task_files import (HUB_FEATURES, MNLI_DEV_HEADER, SWAG_HEADER, SWAG_ROWS, squad_json, tiny_tokenizer,
                         write_glue, write_squad, write_swag, write_tsv)  # fmt: skip

from sparsebert.data.features import featurize
from sparsebert.data.formats import load_task
from sparsebert.data.tasks import TASKS, get_task, hub_features
from sparsebert.io import UserError

GLUE_FOLDERS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI",
                "qnli": "QNLI", "rte": "RTE"}  # fmt: skip


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    return write_glue(tmp_path_factory.mktemp("glue"))


def test_registry_covers_the_paper_tasks_and_proxies():
    expected = {*GLUE_FOLDERS, "squad_v1", "squad_v2", "swag", "proxy_single", "proxy_pair", "proxy_regression",
                "proxy_qa", "proxy_choice"}  # fmt: skip
    assert expected <= set(TASKS)
    assert get_task("mnli").eval_splits == ("validation_matched", "validation_mismatched")
    assert all(spec.proxy == name.startswith("proxy_") for name, spec in TASKS.items())
    assert all("PROXY" in spec.description for spec in TASKS.values() if spec.proxy)
    assert all(spec.main_metric in spec.metrics for spec in TASKS.values())


def test_unknown_task_lists_valid_names():
    with pytest.raises(UserError) as error:
        get_task("mnli-m")
    assert str(error.value) == (
        "unknown task 'mnli-m'; valid tasks: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli, squad_v1, squad_v2, "
        "swag, proxy_single, proxy_pair, proxy_regression, proxy_qa, proxy_choice")


def test_features_of_an_unknown_file_format_are_refused():
    with pytest.raises(ValueError, match=r"^unknown file format 'conll'$"):
        hub_features(dataclasses.replace(get_task("cola"), file_format="conll"))


def test_declared_hub_features_match_the_dataset_cards():
    for name in GLUE_FOLDERS:
        assert hub_features(get_task(name)) == HUB_FEATURES[name], name
    assert hub_features(get_task("squad_v1")) == hub_features(get_task("squad_v2")) == HUB_FEATURES["squad"]
    assert hub_features(get_task("swag")) == HUB_FEATURES["swag"]


@pytest.mark.parametrize("name", GLUE_FOLDERS)
def test_glue_tsv_loads_with_hub_columns(glue, name):
    spec = get_task(name)
    data = load_task(name, {"path": str(glue / GLUE_FOLDERS[name])})
    assert list(data) == [spec.train_split, *spec.eval_splits]
    for split in data.values():
        assert split.features == HUB_FEATURES[name]
        assert split["idx"] == list(range(len(split)))


def test_glue_values_are_read_from_the_right_columns(glue):
    cola = load_task("cola", {"path": str(glue / "CoLA")})["train"]
    assert cola[1] == {"sentence": "They drank the pub.", "label": 0, "idx": 1}
    assert cola[2]["sentence"] == 'He said "hi" to me.'
    mrpc = load_task("mrpc", {"path": str(glue / "MRPC")})["validation"]
    assert mrpc[0] == {"sentence1": "He said so .", "sentence2": "So he said .", "label": 1, "idx": 0}
    stsb = load_task("stsb", {"path": str(glue / "STS-B")})["train"]
    assert stsb["label"] == pytest.approx([5.0, 0.5])
    mnli = load_task("mnli", {"path": str(glue / "MNLI")})
    assert mnli["train"]["label"] == [1, 2]  # neutral, contradiction
    assert mnli["validation_mismatched"]["premise"] == ["Px.", "Py."]
    assert load_task("qnli", {"path": str(glue / "QNLI")})["train"][0]["label"] == 1  # not_entailment


@pytest.mark.parametrize("version,name", [("v1.1", "squad_v1"), ("v2.0", "squad_v2")])
def test_squad_json_loads_with_hub_columns(tmp_path, version, name):
    data = load_task(name, {"path": str(write_squad(tmp_path, version))})
    dev = data["validation"]
    assert dev.features == HUB_FEATURES["squad"]
    assert dev[0]["answers"] == {"text": ["Rollo", "Rollo swore"], "answer_start": [51, 51]}
    assert dev[0]["title"] == "Normans" and dev[0]["id"] == "q1"
    if version == "v2.0":  # unanswerable: empty answers (plausible_answers are not answers)
        assert dev[2]["answers"] == {"text": [], "answer_start": []}


def test_swag_csv_loads_with_hub_columns(tmp_path):
    data = load_task("swag", {"path": str(write_swag(tmp_path))})
    assert data["train"].features == HUB_FEATURES["swag"]
    assert data["validation"][1]["ending3"] == 'says "hi", then leaves.'
    assert data["validation"]["label"] == [0, 3]


MRPC_WITH_BOM = ("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                 "1\t702876\t702977\tHe said so .\tSo he said .\n")  # as download_glue_data.py writes it


def test_glue_mrpc_with_a_byte_order_mark_loads(tmp_path):
    """GLUE's download_glue_data.py writes MRPC train.tsv/dev.tsv with a UTF-8 byte order mark before 'Quality';
    read as plain UTF-8 the first column was '\ufeffQuality' and the loader said the column was missing."""
    for split in ("train", "dev"):
        (tmp_path / f"{split}.tsv").write_text(MRPC_WITH_BOM, encoding="utf-8")
    assert (tmp_path / "train.tsv").read_bytes()[:4] == b"\xef\xbb\xbfQ"
    mrpc = load_task("mrpc", {"path": str(tmp_path)})["train"]
    assert mrpc[0] == {"sentence1": "He said so .", "sentence2": "So he said .", "label": 1, "idx": 0}


def test_squad_and_swag_with_a_byte_order_mark_load(tmp_path):
    """A byte order mark (Windows editors write one) is not text in any format: json.loads refused it, and the
    SWAG CSV's first (unnamed) column name would have been '\ufeff'."""
    for folder in (write_squad(tmp_path / "squad", "v1.1"), write_swag(tmp_path / "swag")):
        for path in folder.iterdir():
            path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_task("squad_v1", {"path": str(tmp_path / "squad")})["train"][0]["id"] == "q1"
    assert load_task("swag", {"path": str(tmp_path / "swag")})["train"]["label"] == [0, 3]


def test_bad_byte_after_a_byte_order_mark_is_located_in_the_file(tmp_path):
    """The byte named is counted from the file's start, byte order mark included (3 bytes + 'sentence\tlabel\n'
    (15) + 'ok' = byte 20 is the invalid 0xff)."""
    for split in ("train", "dev"):
        (tmp_path / f"{split}.tsv").write_bytes(b"\xef\xbb\xbfsentence\tlabel\nok\xff\t1\n")
    with pytest.raises(UserError, match=r"train\.tsv: not UTF-8 text \(invalid start byte at byte 20\)$"):
        load_task("sst2", {"path": str(tmp_path)})


# ------------------------------------------------------------------------------------------ bad input


def test_missing_file_is_named(tmp_path):
    write_tsv(tmp_path / "train.tsv", [["sentence", "label"], ["ok", "1"]])
    with pytest.raises(UserError, match=r"dev\.tsv: file not found"):
        load_task("sst2", {"path": str(tmp_path)})


def test_malformed_tsv_names_file_and_line(tmp_path):
    for split in ("train", "dev"):
        write_tsv(tmp_path / f"{split}.tsv", [["sentence", "label"], ["fine", "1"], ["a tab\tinside", "0", "x"]])
    with pytest.raises(UserError, match=r"train\.tsv:3: expected 2 tab-separated fields"):
        load_task("sst2", {"path": str(tmp_path)})


def test_wrong_column_names_file(tmp_path):
    for split in ("train", "dev"):
        write_tsv(tmp_path / f"{split}.tsv", [["text", "label"], ["fine", "1"]])
    with pytest.raises(UserError, match=r"train\.tsv:1: missing column\(s\) \['sentence'\]"):
        load_task("sst2", {"path": str(tmp_path)})


def test_bad_label_names_file_and_line(tmp_path):
    for name in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"):
        header = MNLI_DEV_HEADER if name != "train.tsv" else MNLI_DEV_HEADER[:11] + ["gold_label"]
        row = ["0", "1", "1e", "g", "x", "y", "x", "y", "P.", "H.", *["maybe"] * (len(header) - 10)]
        write_tsv(tmp_path / name, [header, row])
    with pytest.raises(UserError, match=r"train\.tsv:2: label 'maybe' is not one of"):
        load_task("mnli", {"path": str(tmp_path)})


def test_malformed_json_names_file_and_line(tmp_path):
    write_squad(tmp_path, "v1.1")
    (tmp_path / "train-v1.1.json").write_text('{"data": [\n  {"title": "x",\n  oops}\n]}')
    with pytest.raises(UserError, match=r"train-v1\.1\.json:3: malformed JSON"):
        load_task("squad_v1", {"path": str(tmp_path)})


def test_squad_answer_not_in_context_names_file_line_and_question(tmp_path):
    write_squad(tmp_path, "v2.0")
    bad = squad_json("v2.0")
    bad["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = 36  # off by one
    (tmp_path / "dev-v2.0.json").write_text(json.dumps(bad, indent=1))
    with pytest.raises(UserError, match=r"dev-v2\.0\.json:\d+: question 'q2': answer '10th century' does not match"):
        load_task("squad_v2", {"path": str(tmp_path)})


def test_squad_error_location_is_only_computed_for_a_failing_question(tmp_path, monkeypatch):
    """Locating a question's line scans the whole file; doing it for every question made loading quadratic in
    the file's size (SQuAD v2.0's train set: minutes). A valid file never looks a line up; a bad one once."""
    from sparsebert.data import formats

    calls = []
    line_of = formats._line_of
    monkeypatch.setattr(formats, "_line_of", lambda text, needle: calls.append(needle) or line_of(text, needle))
    load_task("squad_v2", {"path": str(write_squad(tmp_path, "v2.0"))})
    assert calls == []
    bad = squad_json("v2.0")
    del bad["data"][0]["paragraphs"][0]["qas"][1]["question"]
    (tmp_path / "train-v2.0.json").write_text(json.dumps(bad, indent=1))
    with pytest.raises(UserError, match=r"train-v2\.0\.json:\d+: question 'q2': missing or malformed field "
                                        r"'question'$"):
        load_task("squad_v2", {"path": str(tmp_path)})
    assert calls == ['"q2"']


def test_squad_v1_rejects_unanswerable_questions(tmp_path):
    (tmp_path / "train-v1.1.json").write_text(json.dumps(squad_json("v2.0")))
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(squad_json("v1.1")))
    with pytest.raises(UserError, match=r"train-v1\.1\.json:\d+: question 'q3': no answers"):
        load_task("squad_v1", {"path": str(tmp_path)})


def test_swag_row_with_fewer_than_four_endings_names_file_and_line(tmp_path):
    short = SWAG_ROWS[1][:10] + ["", "1"]  # ending3 empty
    write_swag(tmp_path, rows=[SWAG_ROWS[0], short])
    with pytest.raises(UserError, match=r"train\.csv:3: fewer than 4 endings"):
        load_task("swag", {"path": str(tmp_path)})
    write_swag(tmp_path, rows=[SWAG_ROWS[0], SWAG_ROWS[1][:9]])  # row cut short: ending2, ending3 missing
    with pytest.raises(UserError, match=r"train\.csv:3: expected 12 comma-separated fields"):
        load_task("swag", {"path": str(tmp_path)})


def test_swag_missing_column_is_named(tmp_path):
    write_swag(tmp_path, header=[c if c != "ending2" else "endingTwo" for c in SWAG_HEADER])
    with pytest.raises(UserError, match=r"train\.csv:1: missing column\(s\) \['ending2'\]"):
        load_task("swag", {"path": str(tmp_path)})


def test_bad_source_and_proxy_from_hub():
    with pytest.raises(UserError, match="must be"):
        load_task("cola", {})
    with pytest.raises(UserError, match="no hub copy"):
        load_task("proxy_single", {"hub": True})


# ------------------------------------------------------------------------------------------ featurization


def test_featurize_pairs_regression_and_choices(glue, tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    mrpc = featurize(get_task("mrpc"), load_task("mrpc", {"path": str(glue / "MRPC")})["train"], tokenizer, 32)
    assert mrpc.column_names == ["input_ids", "token_type_ids", "attention_mask", "labels"]
    assert mrpc["labels"] == [1, 0] and all(len(ids) == 32 for ids in mrpc["input_ids"])
    assert 1 in mrpc[0]["token_type_ids"]  # segment B is there
    stsb = featurize(get_task("stsb"), load_task("stsb", {"path": str(glue / "STS-B")})["train"], tokenizer, 32)
    assert stsb.features["labels"].dtype == "float32" and stsb["labels"] == pytest.approx([5.0, 0.5])
    swag = featurize(get_task("swag"), load_task("swag", {"path": str(write_swag(tmp_path / "swag"))})["train"],
                     tokenizer, 64)  # fmt: skip
    row = swag.with_format("torch")[0]
    assert row["input_ids"].shape == (4, 64) and row["attention_mask"].shape == (4, 64)
    assert swag["labels"] == [0, 3]
    decoded = tokenizer.decode(swag[0]["input_ids"][0], skip_special_tokens=True).replace(" ", "")
    assert decoded == "membersofthegroupdance.theyclapalong."


def test_single_sentences_and_pairs_are_laid_out_as_bert_expects(glue, tmp_path):
    """[CLS] A [SEP] (B [SEP]) then [PAD]: segment 0 up to the first [SEP], 1 for B and its [SEP], attention 1
    on every real token. Token ids of each text from the tokenizer's own wordpieces, the layout written by hand."""
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    ids = lambda text: tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))  # noqa: E731
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    sst2 = featurize(get_task("sst2"), load_task("sst2", {"path": str(glue / "SST-2")})["train"], tokenizer, 32)
    a = ids("dull and tedious")
    assert sst2[1]["input_ids"] == [cls, *a, sep] + [pad] * (32 - len(a) - 2)
    assert sst2[1]["token_type_ids"] == [0] * 32 and sst2[1]["attention_mask"] == [1] * (len(a) + 2) + [0] * (30 - len(a))
    assert sst2["labels"] == [1, 0]
    mrpc = featurize(get_task("mrpc"), load_task("mrpc", {"path": str(glue / "MRPC")})["train"], tokenizer, 32)
    a, b = ids("He said so ."), ids("So he said .")
    n = len(a) + len(b) + 3
    assert mrpc[0]["input_ids"] == [cls, *a, sep, *b, sep] + [pad] * (32 - n)
    assert mrpc[0]["token_type_ids"] == [0] * (len(a) + 2) + [1] * (len(b) + 1) + [0] * (32 - n)
    assert mrpc[0]["attention_mask"] == [1] * n + [0] * (32 - n)


def test_pairs_longer_than_max_seq_length_are_cut_to_it(glue, tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    mrpc = featurize(get_task("mrpc"), load_task("mrpc", {"path": str(glue / "MRPC")})["train"], tokenizer, 8)
    row = mrpc[0]  # 9 + 9 wordpieces into 8 - 3 = 5: both sides cut, both [SEP]s kept
    assert len(row["input_ids"]) == 8 and row["attention_mask"] == [1] * 8
    assert row["input_ids"][0] == tokenizer.cls_token_id and row["input_ids"].count(tokenizer.sep_token_id) == 2
    assert row["input_ids"][-1] == tokenizer.sep_token_id and row["token_type_ids"][-2:] == [1, 1]


def official_truncation(a: list, b: list, max_tokens: int) -> tuple[list, list]:
    """_truncate_seq_pair of Google's run_classifier.py, written from its rule: pop from the longer, B on ties."""
    a, b = list(a), list(b)
    while len(a) + len(b) > max_tokens:
        (a if len(a) > len(b) else b).pop()
    return a, b


@pytest.mark.parametrize("max_seq_length", [12, 13])  # pair budgets 9 (odd: ties split differently) and 10
def test_pairs_are_cut_by_the_official_pop_from_the_longer_rule(tmp_path, max_seq_length):
    """HF's truncation="longest_first" gives the odd token of a tie to segment B; Google's and NVIDIA's
    _truncate_seq_pair (which the official fine-tuning uses) keep it in A. Random lengths, ties included,
    one wordpiece per letter, so the expected ids are written by hand."""
    import random

    import datasets

    tokenizer = tiny_tokenizer(tmp_path / "tok")
    rng = random.Random(0)
    lengths = [(n, n) for n in range(12)] + [(rng.randrange(16), rng.randrange(16)) for _ in range(40)]
    texts = [(rng.choices("abcdefghij", k=n_a), rng.choices("klmnopqrst", k=n_b)) for n_a, n_b in lengths]
    rows = [{"sentence1": " ".join(a), "sentence2": " ".join(b), "label": 0, "idx": i} for i, (a, b) in enumerate(texts)]
    got = featurize(get_task("mrpc"), datasets.Dataset.from_list(rows), tokenizer, max_seq_length)
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    for (a, b), row in zip(texts, got):
        a, b = official_truncation(tokenizer.convert_tokens_to_ids(a), tokenizer.convert_tokens_to_ids(b),
                                   max_seq_length - 3)
        ids = [cls, *a, sep, *b, sep]
        padding = max_seq_length - len(ids)
        assert row["input_ids"] == ids + [pad] * padding
        assert row["token_type_ids"] == [0] * (len(a) + 2) + [1] * (len(b) + 1) + [0] * padding


def test_a_single_sentence_is_cut_to_room_for_cls_and_sep(tmp_path):
    """One segment: [CLS] + its first max_seq_length - 2 wordpieces + [SEP], no padding; a short one is padded
    after its [SEP] (one wordpiece per letter, so the ids are written by hand)."""
    import datasets

    tokenizer = tiny_tokenizer(tmp_path / "tok")
    letters = list("abcdefghijklmnop")
    rows = [{"sentence": " ".join(letters), "label": 1, "idx": 0}, {"sentence": "a b", "label": 0, "idx": 1}]
    long, short = featurize(get_task("sst2"), datasets.Dataset.from_list(rows), tokenizer, 8)
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    assert long["input_ids"] == [cls, *tokenizer.convert_tokens_to_ids(letters[:6]), sep]
    assert long["attention_mask"] == [1] * 8 and long["token_type_ids"] == [0] * 8
    assert short["input_ids"] == [cls, *tokenizer.convert_tokens_to_ids(["a", "b"]), sep] + [pad] * 4
    assert short["attention_mask"] == [1] * 4 + [0] * 4


def test_every_multiple_choice_row_has_its_four_choices(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    swag = featurize(get_task("swag"), load_task("swag", {"path": str(write_swag(tmp_path / "swag"))})["train"],
                     tokenizer, 64)  # fmt: skip
    assert swag.with_format("torch")[:]["input_ids"].shape == (2, 4, 64)
    decoded = [tokenizer.decode(choice, skip_special_tokens=True).replace(" ", "") for choice in swag[1]["input_ids"]]
    assert decoded == ["someoneopensthedoor.hewalksin.", "someoneopensthedoor.heisadoor.",
                       "someoneopensthedoor.heopensthedoor.", 'someoneopensthedoor.hesays"hi",thenleaves.']


def squad_row(context, question="who", text=None, start=None):
    answers = {"text": [text] if text is not None else [], "answer_start": [start] if start is not None else []}
    return {"id": "q1", "title": "t", "context": context, "question": question, "answers": answers}


def span_features(rows, tokenizer, max_seq_length=32, max_query_length=64, doc_stride=8):
    import datasets

    data = datasets.Dataset.from_list(rows, features=hub_features(get_task("squad_v2")))
    return featurize(get_task("squad_v2"), data, tokenizer, max_seq_length, doc_stride=doc_stride,
                     max_query_length=max_query_length)  # fmt: skip


def test_questions_longer_than_max_query_length_are_cut(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    who, what = tokenizer.convert_tokens_to_ids(["who", "what"])
    row = span_features([squad_row("the normans were in normandy", "who what who what who")], tokenizer,
                        max_query_length=2)[0]  # fmt: skip
    assert row["input_ids"][:4] == [tokenizer.cls_token_id, who, what, tokenizer.sep_token_id]
    assert row["offset_mapping"][4] == [0, 3]  # the context starts right after the cut question


def test_answer_token_span_is_the_tokens_overlapping_the_answer_characters(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    # "(" ends exactly where the answer starts: it does not overlap it, so the answer starts at "rollo"
    row = span_features([squad_row("(rollo) swore", text="rollo", start=1)], tokenizer)[0]
    assert tokenizer.convert_ids_to_tokens(row["input_ids"][3:6]) == ["(", "rollo", ")"]  # after [CLS] who [SEP]
    assert (row["start_positions"], row["end_positions"]) == (4, 4)
    # an answer that covers no token (a space) cannot be labelled: it points at [CLS]
    row = span_features([squad_row("rollo swore", text=" ", start=5)], tokenizer)[0]
    assert (row["start_positions"], row["end_positions"]) == (0, 0)


def test_span_tasks_refuse_a_tokenizer_without_offsets():
    class SlowTokenizer:  # a pure-Python tokenizer: no offset mappings (transformers 5 has few left; others may)
        is_fast = False

    for tokenizer in (SlowTokenizer(), object()):  # says it is not fast; says nothing
        with pytest.raises(UserError, match=r"^span tasks need a fast tokenizer \(offset mappings\); load it with "
                                            r"use_fast=True$"):
            span_features([squad_row("rollo swore")], tokenizer)


def test_feature_columns_and_types_per_task_kind(glue, tmp_path):
    """The columns the fine-tuning loop reads, with the types written down in features.py's docstring."""
    from datasets import Features, List, Value

    tokenizer = tiny_tokenizer(tmp_path / "tok")
    inputs = ("input_ids", "token_type_ids", "attention_mask")
    flat = lambda label: Features({**{k: List(Value("int32")) for k in inputs}, "labels": label})  # noqa: E731
    sst2 = featurize(get_task("sst2"), load_task("sst2", {"path": str(glue / "SST-2")})["train"], tokenizer, 16)
    assert sst2.features == flat(Value("int64"))
    stsb = featurize(get_task("stsb"), load_task("stsb", {"path": str(glue / "STS-B")})["train"], tokenizer, 16)
    assert stsb.features == flat(Value("float32"))
    swag = featurize(get_task("swag"), load_task("swag", {"path": str(write_swag(tmp_path / "swag"))})["train"],
                     tokenizer, 16)  # fmt: skip
    assert swag.features == Features({**{k: List(List(Value("int32"))) for k in inputs}, "labels": Value("int64")})
    squad = span_features([squad_row("rollo swore")], tokenizer)
    assert squad.features == Features({**{k: List(Value("int32")) for k in inputs}, "start_positions": Value("int64"),
                                       "end_positions": Value("int64"), "example_id": Value("string"),
                                       "offset_mapping": List(List(Value("int32"))),
                                       "token_is_max_context": List(Value("bool"))})  # fmt: skip


def test_span_defaults_are_google_run_squad_s(tmp_path):
    """doc_stride 128 and max_query_length 64 by default: a 70-token question keeps 64, so at max_seq_length 200 a
    window holds 200 - 64 - 3 = 133 context tokens, and a 300-token context gets windows starting at 0, 128, 256."""
    import datasets

    tokenizer = tiny_tokenizer(tmp_path / "tok")
    words = ["the", "normans", "were", "in", "normandy", "rollo"] * 50
    row = squad_row(" ".join(words), question=" ".join(["who"] * 70))
    data = datasets.Dataset.from_list([row], features=hub_features(get_task("squad_v2")))
    windows = featurize(get_task("squad_v2"), data, tokenizer, 200)
    first_context = [w["offset_mapping"].index(next(o for o in w["offset_mapping"] if o is not None)) for w in windows]
    assert first_context == [66, 66, 66]  # [CLS] + 64 question tokens + [SEP]
    char_of_word = lambda i: len(" ".join(words[:i])) + (i > 0)  # noqa: E731
    assert [w["offset_mapping"][66][0] for w in windows] == [char_of_word(0), char_of_word(128), char_of_word(256)]


def test_warning_when_windows_cannot_overlap(tmp_path, caplog):
    """At max_seq_length 32 and max_query_length 16 the shortest window holds 32 - 16 - 3 = 13 tokens: a
    doc_stride of 13 leaves no overlap (warned, with the advice max_seq_length // 4), 12 does not."""
    import logging

    tokenizer = tiny_tokenizer(tmp_path / "tok")
    caplog.set_level(logging.WARNING, logger="sparsebert.data.features")
    span_features([squad_row("rollo swore")], tokenizer, max_query_length=16, doc_stride=12)
    assert caplog.records == []
    span_features([squad_row("rollo swore")], tokenizer, max_query_length=16, doc_stride=13)
    assert [r.getMessage() for r in caplog.records] == [
        "doc_stride 13 >= the shortest window (13 tokens): windows will not overlap and answers across a window "
        "boundary cannot be learned or found; at max_seq_length 32 use a doc_stride of about 8"]


FEATURIZE_A_SAVED_SPLIT = """
import sys
from pathlib import Path

import datasets
from _task_files import tiny_tokenizer

from sparsebert.data import features
from sparsebert.data.features import featurize
from sparsebert.data.tasks import get_task

folder = Path(sys.argv[1])
assert Path(features.__file__).is_relative_to(folder), features.__file__  # the copy, not the installed package
out = featurize(get_task("sst2"), datasets.load_from_disk(folder / "split"), tiny_tokenizer(folder / "tok"), 8)
print(out[0]["input_ids"], out.cache_files[0]["filename"])
"""


@pytest.mark.slow
def test_a_hub_tasks_cached_features_are_rebuilt_after_features_py_is_edited(tmp_path):
    """A hub task's split is file-backed: datasets keeps its features in a cache file keyed by the hash of the
    mapped function, which names this package's functions without their code. Featurized twice by unchanged code
    (two processes, as two fine-tuning jobs), the second reads that file; by a features.py edited in place in
    between, it must compute the new features, not read the old ones (it did: the old ids came back)."""
    import shutil
    import subprocess
    import sys

    import datasets

    from sparsebert.data import features

    package = tmp_path / "src" / "sparsebert"
    shutil.copytree(Path(features.__file__).parents[1], package, ignore=shutil.ignore_patterns("__pycache__"))
    rows = [{"sentence": "the normans were", "label": 1, "idx": 0}]
    datasets.Dataset.from_list(rows, features=hub_features(get_task("sst2"))).save_to_disk(tmp_path / "split")
    tests = Path(__file__).parent
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": f"{package.parent}:{tests}",
           "HF_DATASETS_OFFLINE": "1"}

    def featurized() -> tuple[list[int], str]:
        out = subprocess.run([sys.executable, "-c", FEATURIZE_A_SAVED_SPLIT, str(tmp_path)], env=env,
                             capture_output=True, text=True, check=True).stdout.split("] ")  # fmt: skip
        return [int(i) for i in out[0].strip("[").split(", ")], out[1].strip()

    first = featurized()
    assert first[0][:5] != [7] * 5 and featurized() == first  # the cache file reused
    source = package / "data" / "features.py"
    edit = ('out["input_ids"].append(ids + [pad] * padding)',
            'out["input_ids"].append([7] * len(ids) + [pad] * padding)')
    assert edit[0] in source.read_text()
    source.write_text(source.read_text().replace(*edit))
    ids, cache_file = featurized()
    assert ids[:5] == [7] * 5 and cache_file != first[1]
