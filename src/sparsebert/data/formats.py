"""Loading a task (`load_task`: the hub, or a folder of files), and the readers (and, for the proxy tasks,
writers) of the benchmarks' original file formats.

- GLUE TSV as distributed by the GLUE benchmark: tab-separated, no quoting; a header row except CoLA.
  Columns are found by name (MRPC: `Quality  #1 ID  #2 ID  #1 String  #2 String`; STS-B: `... sentence1
  sentence2 score`; QQP: `id qid1 qid2 question1 question2 is_duplicate`; MNLI: `... sentence1 sentence2
  ... gold_label`; QNLI: `index question sentence label`; RTE/WNLI: `index sentence1 sentence2 label`;
  SST-2: `sentence label`; CoLA, header-less: `source label author_label sentence`).
- SQuAD v1.1 / v2.0 JSON: {"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
  "answers": [{"text", "answer_start"}], "is_impossible" (v2)}]}]}]}.
- SWAG CSV (train.csv / val.csv): `,video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0..3,label`.

Files are UTF-8, with or without a leading byte order mark (GLUE's MRPC train.tsv and dev.tsv start with one).
Every reader returns a `datasets.Dataset` with the hub's features (`tasks.hub_features`), rows in file order,
and turns any problem into one `UserError` naming the file and, where it applies, the line.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
from pathlib import Path

import datasets

from sparsebert.data import hub
from sparsebert.data.tasks import TaskSpec, get_task, hub_features
from sparsebert.io import UserError, atomic_write_text

SWAG_COLUMNS = ("video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
                "ending0", "ending1", "ending2", "ending3", "label")  # fmt: skip


def load_task(name: str, source: dict) -> datasets.DatasetDict:
    """Train split plus the evaluation splits of task `name`, from the hub or from a local folder.

    source: {"hub": true} (optionally with "revision": a branch, tag or commit of the task's hub repository) or
    {"path": DIR} where DIR holds the task's files in their original format.
    """
    return read_task(name, source)[0]


def read_task(name: str, source: dict) -> tuple[datasets.DatasetDict, dict]:
    """`load_task`, and the record of what it read: the hub repository, configuration and commit
    (`hub.load`), or the folder and each file's sha256."""
    spec = get_task(name)
    if source.get("path"):
        splits, digests = {}, {}
        for split, filename in spec.files:
            splits[split], digests[filename] = read_split(spec, source["path"], filename)
        return datasets.DatasetDict(splits), {"path": str(source["path"]), "sha256": digests}
    if source.get("hub"):
        if not spec.hub_path:
            raise UserError(f"task {name!r} has no hub copy; give a local source {{'path': DIR}}")
        loaded, record = hub.load({"path": spec.hub_path, "name": spec.hub_config, "revision": source.get("revision")})
        splits = {split: loaded[split] for split, _ in spec.files}
        for split, ds in splits.items():
            if ds.features != hub_features(spec):
                raise UserError(f"{spec.hub_path} {split}: features {ds.features} differ from the declared "
                                f"{hub_features(spec)}; update hub_features()")  # fmt: skip
        return datasets.DatasetDict(splits), record
    raise UserError(f"task source for {name!r} must be {{'hub': true}} or {{'path': DIR}}, got {source!r}")


def read_split(spec: TaskSpec, folder, filename: str) -> tuple[datasets.Dataset, str]:
    """One split's file -> its rows, and the sha256 of the bytes they were read from."""
    path = Path(folder) / filename
    if not path.is_file():
        expected = ", ".join(f for _, f in spec.files)
        raise UserError(f"{path}: file not found (task {spec.name} reads {expected} from {folder})")
    data = path.read_bytes()
    # utf-8-sig: a leading byte order mark is not text. GLUE's download_glue_data.py writes one at the start of
    # MRPC's train.tsv and dev.tsv (read as UTF-8, the first column is '\ufeffQuality'), Windows editors too.
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:  # utf-8-sig counts from after the mark
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {bom + e.start})") from None
    readers = {"glue_tsv": read_glue_tsv, "squad_json": read_squad_json, "swag_csv": read_swag_csv}
    rows = readers[spec.file_format](spec, path, text)
    return datasets.Dataset.from_list(rows, features=hub_features(spec)), hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# GLUE TSV


def _parse_label(spec: TaskSpec, value: str, where: str):
    if spec.kind == "regression":
        try:
            return float(value)
        except ValueError:
            raise UserError(f"{where}: score {value!r} is not a number") from None
    if value in spec.label_names:  # MNLI / QNLI / RTE spell labels out
        return spec.label_names.index(value)
    if value.isdigit() and int(value) < len(spec.label_names):  # CoLA / SST-2 / MRPC / QQP / WNLI use ids
        return int(value)
    raise UserError(f"{where}: label {value!r} is not one of {list(spec.label_names)} or their ids")


def _checked_rows(reader, header: list[str], path: Path, kind: str):
    """("file:line", row) for each non-empty row, which must have as many fields as the header."""
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if not row:
            continue
        if len(row) != len(header):
            raise UserError(f"{where}: expected {len(header)} {kind} fields {header}, got {len(row)}")
        yield where, row


def read_glue_tsv(spec: TaskSpec, path: Path, text: str) -> list[dict]:
    # GLUE files are not quoted: a `"` is part of the sentence, so QUOTE_NONE.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = list(spec.tsv_names) if spec.tsv_names else next(reader, None)
    if header is None:
        raise UserError(f"{path}: empty file, expected a header row")
    missing = [c for c in spec.tsv_columns if c not in header]
    if missing:
        raise UserError(f"{path}:1: missing column(s) {missing} for task {spec.name}; header is {header}")
    *text_columns, label_column = [header.index(c) for c in spec.tsv_columns]
    rows = []
    for where, row in _checked_rows(reader, header, path, "tab-separated"):
        example = {field: row[i] for field, i in zip(spec.text_fields, text_columns)}
        example["label"] = _parse_label(spec, row[label_column], where)
        example["idx"] = len(rows)
        rows.append(example)
    return rows


def write_glue_tsv(spec: TaskSpec, path: Path, rows: list[dict]) -> None:
    """Write hub-schema rows as a GLUE TSV that `read_glue_tsv` reads back for `spec`."""

    def clean(s: str) -> str:  # no quoting in GLUE TSV: tabs/newlines inside a field would break rows
        return " ".join(str(s).split())

    lines = []
    if spec.tsv_names:  # CoLA layout: source, label id, '*' marking unacceptable in the source, sentence
        for r in rows:
            lines.append(["proxy", str(r["label"]), "" if r["label"] else "*", clean(r[spec.text_fields[0]])])
    else:
        lines.append(["index", *spec.tsv_columns])
        for i, r in enumerate(rows):
            label = f"{r['label']:.3f}" if spec.kind == "regression" else spec.label_names[r["label"]]
            lines.append([str(i), *(clean(r[f]) for f in spec.text_fields), label])
    atomic_write_text(path, "".join("\t".join(line) + "\n" for line in lines))


# ---------------------------------------------------------------------------------------------------------
# SQuAD JSON


def _line_of(text: str, needle: str) -> int:
    """1-based line of the first occurrence of `needle` in the raw file (for error messages)."""
    pos = text.find(needle)
    return text.count("\n", 0, pos) + 1 if pos >= 0 else 1


def _where(path: Path, text: str, qa: dict) -> str:
    """'file:line: question ID' of a question that fails. Only computed on failure: it scans the file, so
    computing it for every question made loading quadratic in the file's size (minutes for SQuAD's train set)."""
    qid = str(qa.get("id", ""))
    return f"{path}:{_line_of(text, json.dumps(qid))}: question {qid!r}"


class _BadQuestion(ValueError):
    """A question that cannot be read; `read_squad_json` adds where it is."""


def read_squad_json(spec: TaskSpec, path: Path, text: str) -> list[dict]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: malformed JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise UserError(f"{path}: not a SQuAD file: expected a JSON object with a 'data' list")
    rows = []
    for article in obj["data"]:
        for paragraph in article.get("paragraphs", []):
            for qa in paragraph.get("qas", []):
                try:
                    rows.append(_squad_row(spec, article, paragraph, qa))
                except (KeyError, TypeError) as e:
                    raise UserError(f"{_where(path, text, qa)}: missing or malformed field {e}") from None
                except _BadQuestion as e:
                    raise UserError(f"{_where(path, text, qa)}: {e}") from None
    if not rows:
        raise UserError(f"{path}: no questions found")
    return rows


def _squad_row(spec: TaskSpec, article: dict, paragraph: dict, qa: dict) -> dict:
    context = paragraph["context"]
    answers = [] if qa.get("is_impossible", False) else qa["answers"]
    if not answers and not spec.unanswerable:
        raise _BadQuestion("no answers (unanswerable questions only exist in SQuAD v2.0)")
    for answer in answers:
        start, answer_text = answer["answer_start"], answer["text"]
        found = context[start : start + len(answer_text)]
        if not isinstance(start, int) or found != answer_text:
            raise _BadQuestion(f"answer {answer_text!r} does not match the context at answer_start {start} "
                               f"(context has {found!r} there)")  # fmt: skip
    return {
        "id": str(qa["id"]),
        "title": article.get("title", ""),
        "context": context,
        "question": qa["question"],
        "answers": {"text": [a["text"] for a in answers], "answer_start": [a["answer_start"] for a in answers]},
    }


def write_squad_json(path: Path, rows: list[dict], version: str = "v2.0") -> None:
    """Write hub-schema SQuAD rows back to the original nesting (articles -> paragraphs -> questions)."""
    articles: dict[str, dict[str, list]] = {}
    for r in rows:
        qa = {"id": r["id"], "question": r["question"],
              "answers": [{"text": t, "answer_start": s} for t, s in zip(r["answers"]["text"],
                                                                          r["answers"]["answer_start"])]}  # fmt: skip
        if version == "v2.0":
            qa["is_impossible"] = not qa["answers"]
        articles.setdefault(r["title"], {}).setdefault(r["context"], []).append(qa)
    data = [{"title": title, "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs.items()]}
            for title, paragraphs in articles.items()]  # fmt: skip
    atomic_write_text(path, json.dumps({"version": version, "data": data}, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------------------
# SWAG CSV


def read_swag_csv(spec: TaskSpec, path: Path, text: str) -> list[dict]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise UserError(f"{path}: empty file, expected a header row")
    missing = [c for c in SWAG_COLUMNS if c not in header]
    if missing:
        raise UserError(f"{path}:1: missing column(s) {missing}; a SWAG CSV has {list(SWAG_COLUMNS)}")
    column = {name: header.index(name) for name in SWAG_COLUMNS}
    rows = []
    for where, row in _checked_rows(reader, header, path, "comma-separated"):
        example = {name: row[i] for name, i in column.items()}
        endings = [example[f"ending{k}"] for k in range(4)]
        if not all(e.strip() for e in endings):
            raise UserError(f"{where}: fewer than 4 endings ({sum(bool(e.strip()) for e in endings)} non-empty)")
        if example["label"] not in spec.label_names:
            raise UserError(f"{where}: label {example['label']!r} is not one of 0, 1, 2, 3")
        example["label"] = spec.label_names.index(example["label"])
        rows.append(example)
    return rows


def write_swag_csv(path: Path, rows: list[dict]) -> None:
    """Write hub-schema SWAG rows as the original CSV (leading unnamed index column included)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["", *SWAG_COLUMNS])
    for i, r in enumerate(rows):
        writer.writerow([i, *(r[c] for c in SWAG_COLUMNS)])
    atomic_write_text(path, out.getvalue())
