"""The writers of sparsebert.data.formats (the proxy tasks are stored with them): each writes the original
layout, checked byte for byte on hand-made rows, and its reader gives the rows back."""

from __future__ import annotations

import codecs
import json

import datasets
import pytest

from sparsebert.data import formats
from sparsebert.data.tasks import TASKS
from sparsebert.io import UserError


def test_glue_tsv_is_unquoted_with_label_names_and_whitespace_folded(tmp_path):
    rows = [{"premise": "A\tman  sleeps.", "hypothesis": "He\nrests.", "label": 2},
            {"premise": 'A "quote"', "hypothesis": "x", "label": 0}]
    path = tmp_path / "train.tsv"
    formats.write_glue_tsv(TASKS["mnli"], path, rows)
    assert path.read_bytes().decode() == ("index\tsentence1\tsentence2\tgold_label\n"
                                "0\tA man sleeps.\tHe rests.\tcontradiction\n"
                                '1\tA "quote"\tx\tentailment\n')
    assert formats.read_glue_tsv(TASKS["mnli"], path, path.read_text()) == [
        {"premise": "A man sleeps.", "hypothesis": "He rests.", "label": 2, "idx": 0},
        {"premise": 'A "quote"', "hypothesis": "x", "label": 0, "idx": 1}]


def test_glue_regression_scores_keep_three_decimals(tmp_path):
    path = tmp_path / "train.tsv"
    formats.write_glue_tsv(TASKS["stsb"], path, [{"sentence1": "a", "sentence2": "b", "label": 3.14159}])
    assert path.read_text() == "index\tsentence1\tsentence2\tscore\n0\ta\tb\t3.142\n"
    assert formats.read_glue_tsv(TASKS["stsb"], path, path.read_text())[0]["label"] == 3.142


def test_cola_layout_has_no_header_and_marks_unacceptable_sentences(tmp_path):
    """CoLA's four columns: source, label id, '*' where the original marked the sentence, the sentence."""
    path = tmp_path / "train.tsv"
    formats.write_glue_tsv(TASKS["proxy_single"], path, [{"sentence": "Bad one .", "label": 0},
                                                         {"sentence": "Good one .", "label": 1}])
    assert path.read_text() == "proxy\t0\t*\tBad one .\nproxy\t1\t\tGood one .\n"
    assert [r["label"] for r in formats.read_glue_tsv(TASKS["proxy_single"], path, path.read_text())] == [0, 1]


SQUAD_ROWS = [
    {"id": "q1", "title": "T1", "context": "Rollo swore fealty.", "question": "Who swore?",
     "answers": {"text": ["Rollo"], "answer_start": [0]}},
    {"id": "q2", "title": "T1", "context": "Rollo swore fealty.", "question": "What did he swear?",
     "answers": {"text": [], "answer_start": []}},
    {"id": "q3", "title": "T1", "context": "Another paragraph.", "question": "Which?",
     "answers": {"text": ["Another", "Another paragraph"], "answer_start": [0, 0]}},
    {"id": "q4", "title": "T2", "context": "Second article.", "question": "Second?",
     "answers": {"text": ["Second"], "answer_start": [0]}},
]


def test_squad_json_nests_questions_by_article_and_paragraph(tmp_path):
    path = tmp_path / "dev-v2.0.json"
    formats.write_squad_json(path, SQUAD_ROWS)
    assert json.loads(path.read_text()) == {"version": "v2.0", "data": [
        {"title": "T1", "paragraphs": [
            {"context": "Rollo swore fealty.", "qas": [
                {"id": "q1", "question": "Who swore?", "answers": [{"text": "Rollo", "answer_start": 0}],
                 "is_impossible": False},
                {"id": "q2", "question": "What did he swear?", "answers": [], "is_impossible": True}]},
            {"context": "Another paragraph.", "qas": [
                {"id": "q3", "question": "Which?", "answers": [{"text": "Another", "answer_start": 0},
                                                               {"text": "Another paragraph", "answer_start": 0}],
                 "is_impossible": False}]}]},
        {"title": "T2", "paragraphs": [
            {"context": "Second article.", "qas": [
                {"id": "q4", "question": "Second?", "answers": [{"text": "Second", "answer_start": 0}],
                 "is_impossible": False}]}]}]}
    assert path.read_text().endswith("}\n")
    assert formats.read_squad_json(TASKS["squad_v2"], path, path.read_text()) == SQUAD_ROWS


def test_squad_v1_json_has_no_unanswerable_flag(tmp_path):
    path = tmp_path / "dev-v1.1.json"
    formats.write_squad_json(path, [SQUAD_ROWS[0]], version="v1.1")
    assert json.loads(path.read_text()) == {"version": "v1.1", "data": [{"title": "T1", "paragraphs": [
        {"context": "Rollo swore fealty.", "qas": [
            {"id": "q1", "question": "Who swore?", "answers": [{"text": "Rollo", "answer_start": 0}]}]}]}]}
    assert formats.read_squad_json(TASKS["squad_v1"], path, path.read_text()) == [SQUAD_ROWS[0]]


def test_swag_csv_has_the_unnamed_index_column_and_quotes_commas(tmp_path):
    row = {"video-id": "v1", "fold-ind": "7", "startphrase": "He runs, then", "sent1": "He runs,",
           "sent2": "then", "gold-source": "gold", "ending0": "stops.", "ending1": 'says "hi".', "ending2": "sits.",
           "ending3": "falls.", "label": 1}
    path = tmp_path / "val.csv"
    formats.write_swag_csv(path, [row])
    assert path.read_bytes().decode() == (
        ',video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3,label\n'
        '0,v1,7,"He runs, then","He runs,",then,gold,stops.,"says ""hi"".",sits.,falls.,1\n')
    assert formats.read_swag_csv(TASKS["swag"], path, path.read_text()) == [row]


# ---------------------------------------------------------------------------------------------------------
# Bad input: one UserError, the whole line checked ("{path}" is the file's path)

SQUAD_QUESTION = '{"id": "q1", "question": "Who?", "answers": [{"text": "Rollo", "answer_start": 0}]}'


def squad_file(qas: str, article: str = '"title": "T", ') -> str:
    return '\n{"version": "v2.0", "data": [{' + article + '"paragraphs": [\n{"context": "Rollo swore.", "qas": [\n' + \
        qas + "]}]}]}\n"  # fmt: skip


BAD_FILES = [  # (id, task, text, the error after "{path}")
    ("glue-empty", "mnli", "", ": empty file, expected a header row"),
    ("glue-score-not-a-number", "stsb", "index\tsentence1\tsentence2\tscore\n0\ta\tb\tabc\n",
     ":2: score 'abc' is not a number"),
    ("glue-label-id-out-of-range", "sst2", "sentence\tlabel\nfine .\t2\n",
     ":2: label '2' is not one of ['negative', 'positive'] or their ids"),
    ("glue-row-after-blank-line", "sst2", "sentence\tlabel\nfine .\t1\n\nbad\n",
     ":4: expected 2 tab-separated fields ['sentence', 'label'], got 1"),
    ("squad-not-an-object", "squad_v2", "[1]", ": not a SQuAD file: expected a JSON object with a 'data' list"),
    ("squad-data-not-a-list", "squad_v2", '{"data": {}}',
     ": not a SQuAD file: expected a JSON object with a 'data' list"),
    ("squad-no-questions", "squad_v2", '{"data": [{"title": "T"}, {"paragraphs": [{"context": "c"}]}]}',
     ": no questions found"),
    ("squad-question-line", "squad_v2",
     squad_file(SQUAD_QUESTION + ',\n{"id": "q2", "question": "What?", "answers": [{"text": "x", "answer_start": 0}]}'),
     ":5: question 'q2': answer 'x' does not match the context at answer_start 0 (context has 'R' there)"),
    ("squad-question-without-id", "squad_v2", squad_file('{"question": "Who?", "answers": []}'),
     ":1: question '': missing or malformed field 'id'"),
    ("squad-v1-unanswerable", "squad_v1", squad_file('{"id": "q1", "question": "Who?", "answers": []}'),
     ":4: question 'q1': no answers (unanswerable questions only exist in SQuAD v2.0)"),
    ("swag-empty", "swag", "", ": empty file, expected a header row"),
    ("swag-three-endings", "swag", ",video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,"
     "ending3,label\n0,v,1,s,a,b,gold,e0,e1,e2, ,1\n", ":2: fewer than 4 endings (3 non-empty)"),
    ("swag-label-out-of-range", "swag", ",video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,"
     "ending2,ending3,label\n0,v,1,s,a,b,gold,e0,e1,e2,e3,4\n", ":2: label '4' is not one of 0, 1, 2, 3"),
]


@pytest.mark.parametrize("task, text, message", [pytest.param(t, x, m, id=i) for i, t, x, m in BAD_FILES])
def test_a_bad_file_is_one_error_naming_the_file_and_line(tmp_path, task, text, message):
    spec = TASKS[task]
    path = tmp_path / dict(spec.files)["train"]
    path.write_text(text)
    with pytest.raises(UserError) as error:
        formats.read_split(spec, tmp_path, path.name)
    assert str(error.value) == f"{path}{message}"


def test_a_missing_file_names_the_files_the_task_reads(tmp_path):
    with pytest.raises(UserError) as error:
        formats.read_split(TASKS["mnli"], tmp_path, "dev_matched.tsv")
    assert str(error.value) == (f"{tmp_path}/dev_matched.tsv: file not found (task mnli reads train.tsv, "
                                f"dev_matched.tsv, dev_mismatched.tsv from {tmp_path})")


@pytest.mark.parametrize("mark", [b"", codecs.BOM_UTF8])
def test_a_byte_that_is_not_utf8_is_located_from_the_start_of_the_file(tmp_path, mark):
    path = tmp_path / "train.tsv"
    path.write_bytes(mark + b"sentence\tlabel\n\xff\t1\n")
    with pytest.raises(UserError) as error:
        formats.read_split(TASKS["sst2"], tmp_path, "train.tsv")
    assert str(error.value) == f"{path}: not UTF-8 text (invalid start byte at byte {len(mark) + 15})"


def test_glue_quotes_are_text_and_blank_lines_are_skipped(tmp_path):
    """GLUE TSV has no quoting: a sentence that starts with a quote keeps it."""
    path = tmp_path / "train.tsv"
    text = 'sentence\tlabel\n"A" b , c\t1\n\n"d\t0\n'
    assert formats.read_glue_tsv(TASKS["sst2"], path, text) == [
        {"sentence": '"A" b , c', "label": 1, "idx": 0}, {"sentence": '"d', "label": 0, "idx": 1}]


def test_squad_unanswerable_questions_and_untitled_articles(tmp_path):
    """is_impossible wins over any answers listed; an article without a title gets ''; articles or
    paragraphs without questions are skipped."""
    text = ('{"data": [{"paragraphs": [{"context": "Rollo swore.", "qas": [{"id": "q1", "question": "Who?", '
            '"is_impossible": true}]}, {"context": "empty"}]}, {"title": "no paragraphs"}]}')
    assert formats.read_squad_json(TASKS["squad_v2"], tmp_path / "f.json", text) == [
        {"id": "q1", "title": "", "context": "Rollo swore.", "question": "Who?",
         "answers": {"text": [], "answer_start": []}}]


def test_hub_features_that_differ_from_the_declared_are_one_error(monkeypatch):
    spec = TASKS["rte"]
    other = datasets.Features({"sentence1": datasets.Value("string"), "label": datasets.Value("int64")})
    table = datasets.Dataset.from_dict({"sentence1": ["a"], "label": [1]}, features=other)
    monkeypatch.setattr(formats.hub, "load", lambda spec_: ({"train": table, "validation": table}, {}))
    with pytest.raises(UserError) as error:
        formats.read_task("rte", {"hub": True})
    assert str(error.value) == (f"nyu-mll/glue train: features {other} differ from the declared "
                                f"{formats.hub_features(spec)}; update hub_features()")


def test_a_quoted_swag_field_keeps_its_line_break_as_written(tmp_path):
    """csv reads a line break inside quotes as text only from an unconverted stream (newline='')."""
    header = ",video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3,label\r\n"
    text = header + '0,v,1,s,"a\r\nb",c,gold,e0,e1,e2,e3,2\r\n'
    (row,) = formats.read_swag_csv(TASKS["swag"], tmp_path / "train.csv", text)
    assert row["sent1"] == "a\r\nb" and row["label"] == 2
