"""Corpus step: shard format, stats, sources (embedded mix size, wiki/play parsing), bad input."""

import itertools
import json
import random
import types
from pathlib import Path

import pytest
from _reference_hash import owner

from sparsebert import recipes
from sparsebert.cli import main
from sparsebert.data import corpus
from sparsebert.io import UserError

DOC_1 = "The cat sat on the mat. It was warm.\nThen it slept all day!\n"
DOC_2 = "Dogs bark at night. Nobody knows why.\n"
DOC_3 = "A single sentence here\n"


def write_texts(root: Path) -> str:
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.txt").write_text(DOC_1 + "\n\n" + DOC_2)
    write_rows(root / "b.jsonl", [DOC_3])
    return str(root / "*")


def write_rows(path: Path, texts: list[str], column: str = "text") -> str:
    """A JSON-lines file of one {column: text} object per text; returns its path."""
    path.write_text("".join(json.dumps({column: t}) + "\n" for t in texts))
    return str(path)


def build(tmp_path, **params):
    params = {"source": "text_files", "text_files": {"glob": write_texts(tmp_path / "texts")}, "num_proc": 1, **params}
    return corpus.build_corpus(params, tmp_path / "corpus"), tmp_path / "corpus"


def test_shards_hold_one_sentence_per_line_and_a_blank_line_between_documents(tmp_path):
    stats, out = build(tmp_path)
    text = (out / "shard-00000.txt").read_text()
    assert text == ("The cat sat on the mat.\nIt was warm.\nThen it slept all day!\n\n"
                    "Dogs bark at night.\nNobody knows why.\n\n"
                    "A single sentence here\n\n")
    assert list(corpus.read_corpus(out)) == [
        ["The cat sat on the mat.", "It was warm.", "Then it slept all day!"],
        ["Dogs bark at night.", "Nobody knows why."],
        ["A single sentence here"],
    ]


def test_a_rebuild_gives_the_same_bytes(tmp_path, monkeypatch):
    """The corpus is a DVC output and is compared across SLURM and local runs: no timing in it (here the clock
    jumps 1 s further at every reading, so no two runs take as long), and forked workers keep the order."""
    clock = itertools.accumulate(itertools.count())
    monkeypatch.setattr(corpus.time, "time", lambda: float(next(clock)))
    params = {"source": "text_files", "text_files": {"glob": write_texts(tmp_path / "texts")}, "num_proc": 2}
    one, two = tmp_path / "one", tmp_path / "two"
    corpus.build_corpus(params, one)
    corpus.build_corpus(params, two)
    files = sorted(p.name for p in one.iterdir())
    assert "stats.json" in files and files == sorted(p.name for p in two.iterdir())
    for name in files:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


def test_stats_count_documents_sentences_words_bytes_per_source(tmp_path):
    stats, out = build(tmp_path, shards=2)  # two files for two shards: a file each
    assert stats["sources"]["a"] == {"documents": 2, "sentences": 5, "words": 21,
                                     "bytes": len(DOC_1) + len(DOC_2) + 2}
    assert stats["sources"]["b"] == {"documents": 1, "sentences": 1, "words": 4, "bytes": len(DOC_3) + 1}
    assert stats["total"]["documents"] == 3 and stats["total"]["words"] == 25
    assert stats["shards"] == {"shard-00000.txt": {"documents": 2, "sentences": 5},
                               "shard-00001.txt": {"documents": 1, "sentences": 1}}
    assert json.loads((out / "stats.json").read_text())["total"] == stats["total"]


def many_documents(path: Path, n: int = 60) -> list[list[str]]:
    """n documents of 1-4 one-line sentences, written as one .txt file; returned as read_corpus gives them."""
    documents = [[f"Document {d} line {i} says {'more ' * (d % 5)}words" for i in range(1 + d % 4)] for d in range(n)]
    path.write_text("\n\n".join("\n".join(document) for document in documents) + "\n")
    return documents


def sharded_build(tmp_path, name: str, shards: int, glob: str) -> Path:
    """The workflow's way: one `--shard K` job per shard (here in reverse order), then `--merge`."""
    params = json.dumps({"source": "text_files", "text_files": {"glob": glob}, "shards": shards, "num_proc": 1})
    out = tmp_path / name
    for k in reversed(range(shards)):
        main(["corpus", "--params", params, "--out", str(out), "--shard", str(k), "--threads", "1"])
    main(["corpus", "--params", params, "--out", str(out), "--merge"])
    return out


@pytest.mark.parametrize("files", [1, 6])  # fewer files than shards: by document hash; more: by file
def test_shards_hold_every_document_exactly_once_whatever_the_shard_count(tmp_path, files):
    (tmp_path / "texts").mkdir()
    documents = [d for f in range(files) for d in many_documents(tmp_path / "texts" / f"part{f}.txt", n=60 // files)]
    one = sharded_build(tmp_path, "one", 1, str(tmp_path / "texts" / "*.txt"))
    four = sharded_build(tmp_path, "four", 4, str(tmp_path / "texts" / "*.txt"))
    assert sorted(map(tuple, corpus.read_corpus(one))) == sorted(map(tuple, documents))
    per_shard = [list(map(tuple, corpus.read_corpus(four, shards=[name]))) for name in corpus.corpus_shards(four)]
    assert len(per_shard) == 4 and all(per_shard), [len(s) for s in per_shard]  # every shard got documents
    assert sorted(d for shard in per_shard for d in shard) == sorted(map(tuple, documents))  # each exactly once
    stats = json.loads((four / "stats.json").read_text())
    assert [stats["shards"][n]["documents"] for n in sorted(stats["shards"])] == [len(s) for s in per_shard]
    assert stats["total"] == json.loads((one / "stats.json").read_text())["total"]


def test_merging_before_every_shard_is_built_is_an_error_naming_the_missing_ones(tmp_path):
    many_documents(tmp_path / "t.txt")
    params = {"source": "text_files", "text_files": {"glob": str(tmp_path / "t.txt")}, "shards": 3, "num_proc": 1}
    corpus.build_shard(params, tmp_path / "c", 1)
    with pytest.raises(UserError, match=r"shard\(s\) not built yet: .*shard-00000\.json, .*shard-00002\.json"):
        corpus.merge_shards(params, tmp_path / "c")
    assert not (tmp_path / "c" / "stats.json").exists()
    with pytest.raises(UserError, match=r"--shard 3: the corpus has shards 0\.\.2"):
        corpus.build_shard(params, tmp_path / "c", 3)
    corpus.build_shard(params, tmp_path / "c", 0)
    with pytest.raises(UserError, match=r"shard-00000\.json was built for 3 shards, not 2"):
        corpus.merge_shards({**params, "shards": 2}, tmp_path / "c")


def test_cli_writes_the_same_corpus(tmp_path):
    glob = write_texts(tmp_path / "texts")
    main(["corpus", "--params", json.dumps({"source": "text_files", "text_files": {"glob": glob}, "num_proc": 1}),
          "--out", str(tmp_path / "corpus")])
    assert json.loads((tmp_path / "corpus" / "stats.json").read_text())["total"]["sentences"] == 6


def test_hub_source_goes_through_datasets_load_dataset(tmp_path):
    rows = write_rows(tmp_path / "rows.jsonl", [f"Row {i} says hello. It ends here." for i in range(5)])
    params = {"source": "hub", "num_proc": 1, "hub": {"datasets": [{"path": "json", "data_files": rows,
                                                                     "group_rows": 2}], "max_documents": 2}}
    stats = corpus.build_corpus(params, tmp_path / "corpus")
    assert stats["total"]["documents"] == 2 and stats["total"]["sentences"] == 8


@pytest.mark.parametrize("streaming, files", [(True, 4), (True, 1), (False, 1)])
def test_hub_shards_hold_every_document_once(tmp_path, streaming, files):
    """Streamed from 4 files (2 shards): each job reads its own files; from 1 file: every job reads it and
    keeps its hash's documents; downloaded: each job its own row range."""
    texts = [f"Row {i} says hello. It ends with number {i}." for i in range(24)]
    paths = [tmp_path / f"rows{f}.jsonl" for f in range(files)]
    for f, path in enumerate(paths):
        write_rows(path, texts[f::files])
    hub = {"datasets": [{"path": "json", "data_files": [str(p) for p in paths]}], "streaming": streaming}
    built = {n: corpus.build_corpus({"source": "hub", "num_proc": 1, "shards": n, "hub": hub}, tmp_path / f"c{n}")
             for n in (1, 2)}
    one = sorted(" ".join(d) for d in corpus.read_corpus(tmp_path / "c1"))
    shards = [[" ".join(d) for d in corpus.read_corpus(tmp_path / "c2", shards=[name])]
              for name in corpus.corpus_shards(tmp_path / "c2")]
    assert one == sorted(texts) and sorted(shards[0] + shards[1]) == one and all(shards)
    assert built[2]["total"] == built[1]["total"]


@pytest.mark.parametrize("streaming", [True, False])
def test_hub_shards_take_contiguous_rows_so_grouped_rows_stay_neighbours(tmp_path, monkeypatch, streaming):
    """group_rows makes pseudo-documents of consecutive rows (BookCorpus sentences): a shard job must read a
    contiguous run of rows (files, streamed) in order. datasets < 3.1 defaulted shard() to every n-th row (file):
    emulated here by a shard() whose default is contiguous=False, so only an explicit contiguous=True passes."""
    import datasets

    for cls in (datasets.Dataset, datasets.IterableDataset):
        original = cls.shard
        monkeypatch.setattr(cls, "shard", lambda self, num_shards, index, contiguous=False, _f=original, **kw:
                            _f(self, num_shards, index, contiguous=contiguous, **kw))
    paths = [tmp_path / f"rows{f}.jsonl" for f in range(4)]  # 4 files of 4 rows: rows 0-3, 4-7, ...
    for f, path in enumerate(paths):
        write_rows(path, [f"Row {i} ends here." for i in range(4 * f, 4 * f + 4)])
    hub = {"datasets": [{"path": "json", "data_files": [str(p) for p in paths], "group_rows": 2}],
           "streaming": streaming}
    shard_1 = list(corpus.hub_documents(hub, corpus.Shard(1, 2)))  # rows 8..15, two by two
    assert [[int(p.split()[1]) for p in paragraphs] for _, paragraphs in shard_1] == [[8, 9], [10, 11], [12, 13],
                                                                                      [14, 15]]


def test_embedded_mix_has_at_least_two_million_words():
    documents = corpus.embedded_documents(corpus.DEFAULTS["embedded"], seed=0)
    words = {}
    for source, paragraphs in documents:
        words[source] = words.get(source, 0) + sum(len(p.split()) for p in paragraphs)
    assert sum(words.values()) >= 2_000_000, words
    assert set(words) == {"shakespeare", "kjv", "wikipedia", "lee"} and min(words.values()) > 50_000
    # Sentence splitting keeps every character (checked on a sample: splitting it all takes ~20 s).
    for document in documents[:50]:
        _, sentences = corpus.split_document(document)
        assert "".join("".join(sentences).split()) == "".join("".join(document[1]).split())


def test_embedded_max_words_caps_the_mix():
    documents = corpus.embedded_documents({"sources": ["kjv", "lee"], "max_words": 20_000}, seed=1)
    words = sum(len(p.split()) for _, ps in documents for p in ps)
    assert 20_000 <= words < 25_000 and {s for s, _ in documents} == {"kjv", "lee"}


def test_play_parsing_drops_speakers_directions_and_front_matter():
    play = ("HAMLET\n\nby William Shakespeare\n\nPERSONS.\n\nHamlet, a prince.\n\nACT I.\n\n"
            "Scene I. Elsinore.\n\n[Enter Bernardo.]\n\nBer.\nWho's there?\nStand.\n\nFRAN.\nNay, answer me.\n\n"
            "Scene II. A room.\n\nKING.\nThough yet of Hamlet.\n")
    assert list(corpus.play_documents(play)) == [["Who's there? Stand.", "Nay, answer me."],
                                                 ["Though yet of Hamlet."]]


def test_wikitext_is_reduced_to_prose():
    markup = ("{{Infobox|name=x {{nested}}}}\n'''Aruba''' is an [[island country|island]] in the "
              "[[Caribbean]].<ref>{{cite web|url=x}}</ref> It is small.<!-- hidden -->\n"
              "[[File:Map.png|thumb|A [[map]] caption]]\n* a list item that is not prose at all\n"
              "== History ==\nThe island was settled by [http://example.org the Arawak] long ago.\n"
              "== References ==\nSome reference text that should be dropped entirely.\n")
    assert corpus.strip_wikitext(markup) == ["Aruba is an island in the Caribbean. It is small.",
                                             "The island was settled by the Arawak long ago."]


def test_a_byte_order_mark_is_not_part_of_the_first_word(tmp_path):
    """Files saved by some editors start with a UTF-8 byte order mark: it must not stick to the first word
    (whole-file and line-by-line reading), and a bad byte after it is still reported on its own line."""
    from sparsebert.data import corpus

    good = tmp_path / "bom.txt"
    good.write_bytes(b"\xef\xbb\xbfHello there.\nSecond line.\n")
    assert corpus.read_text(good) == "Hello there.\nSecond line.\n"
    assert list(corpus.read_lines(good)) == ["Hello there.\n", "Second line.\n"]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xef\xbb\xbfok\nbad \xff here\n")
    with pytest.raises(UserError, match=r"bad\.txt:2: not valid UTF-8 \(byte 0xff\)"):
        corpus.read_text(bad)


@pytest.mark.parametrize("paragraph, sentences", [("She said “Stop.” Then he left.", 2),
                                                   ("He asked “Why?” Nobody answered.", 2),
                                                   ("He said ‘Stop.’ Then he left.", 1),  # pysbd's choices
                                                   ("She wrote «Stop.» Then he left.", 1)])
def test_a_sentence_end_before_a_closing_quote_is_split_as_pysbd_splits_it(paragraph, sentences):
    """The shortcut that skips pysbd on paragraphs without a likely sentence end must see ends followed by
    curly or angle closing quotes: the sentences must be pysbd's own (the reference)."""
    import pysbd

    reference = [s.strip() for s in pysbd.Segmenter(language="en", clean=False).segment(paragraph)]
    assert len(reference) == sentences and corpus.split_sentences(paragraph) == reference


def test_a_very_long_paragraph_is_split_by_pysbd_in_blocks(monkeypatch):
    """pysbd's time grows about quadratically with its input (a book stored as one line took up to an hour):
    past LONG_PARAGRAPH characters it gets blocks of a few thousand. Each block's sentences are pysbd's own on
    that block; a block's last sentence (maybe cut at a false end, as "Mr. ") starts the next block instead."""
    import pysbd

    pysbd_segment, calls = pysbd.Segmenter(language="en", clean=False).segment, []
    monkeypatch.setattr(corpus, "_segmenter", type("Recorder", (), {"segment": staticmethod(
        lambda text: calls.append((text, pysbd_segment(text))) or calls[-1][1])}))
    sentences = ["Mr. Smith went to Washington on the early train.", "She said “Stop.” Then he left the room.",
                 "It was e.g. a test of patience!", "Why did nobody answer the letter?"]
    paragraph = " ".join(f"{s} Line {i} ends here." for i in range(300) for s in sentences)
    assert len(paragraph) > 20_000  # LONG_PARAGRAPH
    got = corpus.split_sentences(paragraph)
    assert len(calls) > 3 and max(len(text) for text, _ in calls) < 10_000
    kept = [s for _, found in calls[:-1] for s in found[:-1]] + calls[-1][1]  # every block's last one redone
    assert got == [s.strip() for s in kept]
    assert "".join(text[: len(text) - len(found[-1])] for text, found in calls[:-1]) + calls[-1][0] == paragraph
    assert sentences[0] in got and "Mr." not in got  # no cut at a false end
    short, before = paragraph[:2000].strip(), len(calls)
    corpus.split_sentences(short)
    assert len(calls) == before + 1 and calls[-1][0] == short  # a shorter paragraph: one call, whole


def test_a_zero_width_only_sentence_is_dropped_and_the_corpus_reads_back(tmp_path):
    """A paragraph of a lone U+FEFF (scraped text) was kept as a sentence; first in a shard, reading the shard
    back strips it as a byte order mark and leaves an empty line: the corpus must build AND read back."""
    assert corpus.split_sentences("\ufeff") == [] and corpus.split_sentences(" \u200b \ufeff ") == []
    assert corpus.split_sentences("Hi there. \u200b") == ["Hi there."]
    write_rows(tmp_path / "a.jsonl", ["\ufeff\nHello there, world. Goodbye now."])
    corpus.build_corpus({"source": "text_files", "text_files": {"glob": str(tmp_path / "*.jsonl")}, "num_proc": 1},
                        tmp_path / "corpus")
    assert list(corpus.read_corpus(tmp_path / "corpus")) == [["Hello there, world.", "Goodbye now."]]


def test_non_utf8_input_is_an_error_naming_file_and_line(tmp_path):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "bad.txt").write_bytes(b"fine line\nbad \xff byte\n")
    with pytest.raises(UserError, match=r"bad\.txt:2: not valid UTF-8"):
        corpus.build_corpus({"source": "text_files", "text_files": {"glob": str(tmp_path / "texts/*.txt")}},
                            tmp_path / "corpus")
    assert not (tmp_path / "corpus").exists()


def test_empty_corpus_is_an_error_and_leaves_no_output(tmp_path):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "empty.txt").write_text("\n\n   \n")
    with pytest.raises(UserError, match="corpus is empty"):
        corpus.build_corpus({"source": "text_files", "text_files": {"glob": str(tmp_path / "texts/*.txt")},
                             "num_proc": 1}, tmp_path / "corpus")
    assert not (tmp_path / "corpus").exists()
    assert not list(tmp_path.glob(".corpus*"))


@pytest.mark.parametrize("content, message", [
    ("{not json}\n", r"bad\.jsonl:1: malformed JSON"),
    ('{"body": "x"}\n', r"bad\.jsonl: record 1 has no string field 'text'"),
])
def test_malformed_jsonl_is_an_error_naming_the_file(tmp_path, content, message):
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(UserError, match=message):
        corpus.build_corpus({"source": "text_files", "text_files": {"glob": str(tmp_path / "*.jsonl")}},
                            tmp_path / "corpus")
    assert not (tmp_path / "corpus").exists()


def test_no_matching_files_is_an_error(tmp_path):
    with pytest.raises(UserError, match="no files match"):
        corpus.build_corpus({"source": "text_files", "text_files": {"glob": str(tmp_path / "*.txt")}}, tmp_path / "c")


def test_a_shard_that_got_no_document_is_read_as_empty(tmp_path):
    """Two shards, two files, one holding no text: shard 1 is an empty file listed with 0 documents. The
    corpus must read back (the tokenizer and examples steps read it), and the empty shard yields nothing."""
    (tmp_path / "a.txt").write_text("First one. Second one.\n\nDoc two starts. And goes on.\n")
    (tmp_path / "b.txt").write_text("\n")
    params = {"source": "text_files", "text_files": {"glob": str(tmp_path / "*.txt")}, "shards": 2, "num_proc": 1}
    stats = corpus.build_corpus(params, tmp_path / "corpus")
    assert stats["shards"]["shard-00001.txt"]["documents"] == 0
    assert list(corpus.read_corpus(tmp_path / "corpus")) == [["First one.", "Second one."],
                                                            ["Doc two starts.", "And goes on."]]
    assert list(corpus.read_corpus(tmp_path / "corpus", shards=["shard-00001.txt"])) == []


def test_reading_a_truncated_or_missing_corpus_is_an_error_naming_the_file(tmp_path):
    _, out = build(tmp_path)
    shard = out / "shard-00000.txt"
    shard.write_text(shard.read_text()[:-30])
    with pytest.raises(UserError, match=r"shard-00000\.txt: truncated shard"):
        list(corpus.read_corpus(out))
    shard.write_text("one\n\ntwo\n\n")
    with pytest.raises(UserError, match=r"shard-00000\.txt: corrupt or truncated shard"):
        list(corpus.read_corpus(out))
    shard.write_text("")  # emptied, while stats.json lists its documents
    with pytest.raises(UserError, match=r"shard-00000\.txt: truncated shard"):
        list(corpus.read_corpus(out))
    with pytest.raises(UserError, match="corpus directory not found"):
        list(corpus.read_corpus(tmp_path / "nowhere"))


def test_a_merge_logs_the_totals_and_each_source_and_records_the_source_and_params(tmp_path, caplog):
    # a.txt: 2 documents, 3 + 2 sentences, 6 + 3 + 5 + 4 + 3 = 21 words, 100 bytes with the blank lines;
    # b.jsonl: 1 document, 1 sentence, 4 words
    glob = write_texts(tmp_path / "texts")
    with caplog.at_level("INFO", logger="sparsebert.data.corpus"):
        out = sharded_build(tmp_path, "corpus", 2, glob)
    assert caplog.messages[-3:] == [  # the merge's lines, after the shard jobs'
        "corpus: 3 documents, 6 sentences, 25 words, 0.0 MB in 2 shards",
        "corpus:   a                 2 documents        5 sentences        21 words",
        "corpus:   b                 1 documents        1 sentences         4 words",
    ]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["sources"]["a"] == {"bytes": 100, "documents": 2, "sentences": 5, "words": 21}
    params = {"source": "text_files", "text_files": {"glob": glob}, "shards": 2, "num_proc": 1}
    assert stats["source"] == "text_files" and stats["params"] == recipes.fill("corpus", params)


@pytest.mark.parametrize("shards, more", [(5, ""), (6, " and 1 more"), (7, " and 2 more")])
def test_a_merge_names_the_first_five_missing_shards_and_counts_the_rest(tmp_path, shards, more):
    params = {"source": "text_files", "text_files": {"glob": str(tmp_path / "*.txt")}, "shards": shards}
    with pytest.raises(UserError) as error:
        corpus.merge_shards(params, tmp_path)
    missing = ", ".join(str(tmp_path / f"shard-0000{i}.json") for i in range(5))
    assert str(error.value) == f"corpus shard(s) not built yet: {missing}{more} (run `sparsebert corpus --shard K`)"


def corpus_messages(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == corpus.log.name]


def shard_counts(index: int, count: int, hub=None, **total) -> dict:
    """A shard job's counts file (shard-NNNNN.json) as build_shard writes it: one source, "a"."""
    counts = {"documents": 1, "sentences": 2, "words": 3, "bytes": 4, **total}
    stats = {"sources": {"a": counts}, "total": counts, "shard": {"index": index, "count": count}}
    return stats if hub is None else {**stats, "hub": hub}


def test_shards_that_read_different_commits_are_an_error_naming_the_first_shard(tmp_path):
    hubs = [[{"path": "user/books", "name": None, "revision": c * 40}] for c in "12"]
    for index, hub in enumerate(hubs):
        (tmp_path / f"shard-0000{index}.json").write_text(json.dumps(shard_counts(index, 2, hub)))
    with pytest.raises(UserError) as error:
        corpus.merge_shards({"source": "hub", "shards": 2}, tmp_path)
    assert str(error.value) == (f"{tmp_path / 'shard-00001'}.json read the hub datasets at {hubs[1]}, shard-00000 at "
                                f"{hubs[0]}: pin `revision` in corpus.hub.datasets and rebuild the shards")


def test_the_merge_logs_the_size_in_millions_of_bytes(tmp_path, caplog):
    (tmp_path / "shard-00000.json").write_text(json.dumps(shard_counts(0, 1, bytes=1_350_000)))
    with caplog.at_level("INFO", logger="sparsebert.data.corpus"):
        corpus.merge_shards({"source": "text_files", "text_files": {"glob": "x"}}, tmp_path)
    assert corpus_messages(caplog)[0] == "corpus: 1 documents, 2 sentences, 3 words, 1.4 MB in 1 shards"


# ------------------------------------------------------------------------------------------ one shard job


def test_a_shard_job_records_its_counts_and_logs_its_rate(tmp_path, monkeypatch, caplog):
    clock = iter([100.0, 100.5])  # the job's start and end: 0.5 s
    monkeypatch.setattr(corpus, "time", types.SimpleNamespace(time=lambda: next(clock)))
    params = {"source": "text_files", "text_files": {"glob": write_texts(tmp_path / "texts")}, "num_proc": 1}
    with caplog.at_level("INFO", logger="sparsebert.data.corpus"):
        corpus.build_shard(params, tmp_path / "new" / "corpus", 0)  # its parent folders are made
    assert json.loads((tmp_path / "new" / "corpus" / "shard-00000.json").read_text()) == {
        "sources": {"a": {"documents": 2, "sentences": 5, "words": 21, "bytes": 100},
                    "b": {"documents": 1, "sentences": 1, "words": 4, "bytes": 24}},
        "total": {"documents": 3, "sentences": 6, "words": 25, "bytes": 124}, "shard": {"index": 0, "count": 1}}
    assert corpus_messages(caplog) == ["corpus: shard-00000: 3 documents, 6 sentences, 25 words (50 words/s)"]


def test_a_shard_file_that_cannot_be_created_is_the_error_reported(tmp_path, monkeypatch):
    def read_only(documents, path):
        raise PermissionError(f"{path}: read-only file system")

    monkeypatch.setattr(corpus, "write_shard", read_only)
    params = {"source": "text_files", "text_files": {"glob": write_texts(tmp_path / "texts")}, "num_proc": 1}
    with pytest.raises(PermissionError, match="read-only file system"):
        corpus.build_shard(params, tmp_path / "corpus", 0)
    assert not list((tmp_path / "corpus").iterdir())


def test_a_document_without_sentences_is_skipped_and_the_next_ones_written(tmp_path):
    counts = corpus.write_shard([("a", ["One."]), ("a", []), ("b", ["Two.", "Three."])], tmp_path / "shard.txt")
    assert (tmp_path / "shard.txt").read_text() == "One.\n\nTwo.\nThree.\n\n"
    assert counts == {"sources": {"a": {"documents": 1, "sentences": 1, "words": 1, "bytes": 6},
                                  "b": {"documents": 1, "sentences": 2, "words": 2, "bytes": 13}},
                      "total": {"documents": 2, "sentences": 3, "words": 3, "bytes": 19}}


class InProcessPool:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap(self, func, items, chunksize=1):
        return map(func, items)


def fake_pools(monkeypatch) -> list:
    """multiprocessing, recorded: each pool made is listed as (start method, processes); it maps in this process."""
    pools = []

    class Context:
        def __init__(self, method):
            self.method = method

        def Pool(self, processes):
            pools.append((self.method, processes))
            return InProcessPool()

    monkeypatch.setattr(corpus.multiprocessing, "get_context", Context)
    return pools


def test_threads_set_the_sentence_splitting_processes_at_every_entry_point(tmp_path, monkeypatch):
    pools = fake_pools(monkeypatch)
    params = {"source": "text_files", "text_files": {"glob": write_texts(tmp_path / "texts")}, "num_proc": 1}
    corpus.build_shard(params, tmp_path / "a", 0, threads=3)
    corpus.build_corpus(params, tmp_path / "b", threads=4)
    for out, step in (("c", ["--shard", "0"]), ("d", [])):
        main(["corpus", "--params", json.dumps(params), "--out", str(tmp_path / out), *step, "--threads", "5"])
    assert pools == [("fork", 3), ("fork", 4), ("fork", 5), ("fork", 5)]


@pytest.mark.parametrize("num_proc, cores, pool", [(1, 4, None), (2, 4, ("fork", 2)), (None, 4, ("fork", 4)),
                                                   (None, None, None)])  # None: split in this process
def test_without_threads_num_proc_or_else_all_cores_split_sentences(tmp_path, monkeypatch, num_proc, cores, pool):
    pools = fake_pools(monkeypatch)
    monkeypatch.setattr(corpus.os, "cpu_count", lambda: cores)
    params = {"source": "text_files", "text_files": {"glob": write_texts(tmp_path / "texts")}, "num_proc": num_proc}
    corpus.build_shard(params, tmp_path / "corpus", 0)
    assert pools == ([] if pool is None else [pool])


def test_the_cli_needs_an_output_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    params = {"source": "text_files", "text_files": {"glob": write_texts(tmp_path / "texts")}, "num_proc": 1}
    with pytest.raises(SystemExit) as exit:
        main(["corpus", "--params", json.dumps(params)])
    assert exit.value.code == 2 and "the following arguments are required: --out" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- sources


def test_an_embedded_shard_keeps_the_documents_of_the_seeded_mix_that_hash_to_it(monkeypatch):
    documents = [("a", [f"Text number {i} here.", "And a second paragraph."]) for i in range(12)]
    monkeypatch.setattr(corpus, "EMBEDDED_SOURCES", {"a": lambda: iter(documents)})
    mix = list(documents)
    random.Random(5).shuffle(mix)
    params = {"source": "embedded", "embedded": {"sources": ["a"]}, "seed": 5}
    for index in range(2):
        expected = [d for d in mix if owner("\n".join(d[1]), 2) == index]
        assert corpus.shard_documents(params, corpus.Shard(index, 2)) == (expected, len(expected)) and expected


def test_an_unknown_source_is_an_error_naming_the_choices():
    with pytest.raises(UserError) as error:
        corpus.shard_documents({"source": "web"}, corpus.Shard())
    assert str(error.value) == "unknown corpus source 'web'; choose embedded, text_files or hub"


def test_text_files_without_a_glob_is_an_error():
    with pytest.raises(UserError) as error:
        list(corpus.text_file_documents({"glob": None}, corpus.Shard()))
    assert str(error.value) == "source text_files needs text_files.glob (e.g. 'texts/**/*.txt')"


def test_a_double_star_glob_reaches_nested_folders(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "top.txt").write_text("Top level text.\n")
    (tmp_path / "a" / "b" / "deep.txt").write_text("Deep down text.\n")
    assert list(corpus.text_file_documents({"glob": str(tmp_path / "**" / "*.txt")}, corpus.Shard())) == [
        ("deep", ["Deep down text."]), ("top", ["Top level text."])]


def test_jsonl_text_is_read_from_text_field_by_default_text(tmp_path):
    (tmp_path / "rows.jsonl").write_text(json.dumps({"text": "Line one.\n\nLine two.", "body": "Other."}) + "\n")
    glob = str(tmp_path / "*.jsonl")
    assert list(corpus.text_file_documents({"glob": glob}, corpus.Shard())) == [("rows", ["Line one.", "Line two."])]
    assert list(corpus.text_file_documents({"glob": glob, "text_field": "body"}, corpus.Shard())) == [
        ("rows", ["Other."])]


def test_jsonl_documents_of_fewer_files_than_shards_go_to_the_shard_they_hash_to(tmp_path):
    texts = [f"Document {i} is here." for i in range(8)]
    write_rows(tmp_path / "rows.jsonl", texts)
    for index in range(2):
        expected = [("rows", [t]) for t in texts if owner(t, 2) == index]
        assert list(corpus.text_file_documents({"glob": str(tmp_path / "rows.jsonl")}, corpus.Shard(index, 2))) == (
            expected) and expected


def test_a_streamed_dataset_in_fewer_files_than_shards_is_read_whole_by_every_job(tmp_path, caplog):
    rows = write_rows(tmp_path / "rows.jsonl", [f"Row {i} ends." for i in range(5)])
    cfg = {"datasets": [{"path": "json", "data_files": rows, "group_rows": 2}]}  # streaming: the default
    documents = [["Row 0 ends.", "Row 1 ends."], ["Row 2 ends.", "Row 3 ends."], ["Row 4 ends."]]
    for index in range(2):
        caplog.clear()
        with caplog.at_level("WARNING", logger="sparsebert.data.corpus"):
            got = list(corpus.hub_documents(cfg, corpus.Shard(index, 2)))
        assert got == [(rows, d) for d in documents if owner("\n".join(d), 2) == index]
        assert corpus_messages(caplog) == [f"corpus: hub dataset {rows} is stored in 1 file(s), fewer than 2 shards: "
                                           "every shard job streams all of it (use streaming: false, or fewer shards)"]


def test_a_downloaded_dataset_gives_each_job_its_row_range(tmp_path, caplog):
    rows = write_rows(tmp_path / "rows.jsonl", [f"Row {i} ends." for i in range(4)])
    cfg = {"datasets": [{"path": "json", "data_files": rows}], "streaming": False}
    with caplog.at_level("WARNING", logger="sparsebert.data.corpus"):
        assert list(corpus.hub_documents(cfg, corpus.Shard(1, 2))) == [(rows, ["Row 2 ends."]), (rows, ["Row 3 ends."])]
    assert corpus_messages(caplog) == []


def test_a_streamed_dataset_in_as_many_files_as_shards_gives_each_job_its_file(tmp_path, caplog):
    files = [write_rows(tmp_path / f"rows{f}.jsonl", [f"File {f} row {i}." for i in range(3)]) for f in range(2)]
    with caplog.at_level("WARNING", logger="sparsebert.data.corpus"):
        got = list(corpus.hub_documents({"datasets": [{"path": "json", "data_files": files}]}, corpus.Shard(1, 2)))
    assert got == [(str(files), [f"File 1 row {i}."]) for i in range(3)] and corpus_messages(caplog) == []


def test_a_group_is_group_rows_consecutive_rows_and_empty_groups_are_skipped(tmp_path):
    """Rows i // group_rows form a document, text or not (so a row range of whole groups holds the same documents
    in any job); a row with no text (empty or null) adds nothing, and a group of such rows is no document."""
    rows = write_rows(tmp_path / "rows.jsonl", ["", "A one.", "B two.", "C three.", "", None, "D four."])
    cfg = {"datasets": [{"path": "json", "data_files": rows, "group_rows": 2}]}
    assert list(corpus.hub_documents(cfg, corpus.Shard())) == [(rows, ["A one."]), (rows, ["B two.", "C three."]),
                                                                (rows, ["D four."])]


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_a_downloaded_datasets_documents_do_not_depend_on_the_shard_count(tmp_path, shards):
    """streaming: false (paper.yaml): each job takes whole groups of rows counted from the dataset's first row. A
    job's contiguous row range restarted the grouping at its own first row: with group_rows 4 over 10 rows, 2
    shards gave [0-3], [4], [5-8], [9] and 3 shards [0-3], [4-6], [7-9] (the review's reproducer)."""
    rows = write_rows(tmp_path / "rows.jsonl", [f"Row {i} ends." for i in range(10)])
    cfg = {"datasets": [{"path": "json", "data_files": rows, "group_rows": 4}], "streaming": False}
    got = [[int(p.split()[1]) for p in paragraphs] for index in range(shards)
           for _, paragraphs in corpus.hub_documents(cfg, corpus.Shard(index, shards))]
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_hub_text_that_is_not_a_string_is_one_error_naming_the_dataset(tmp_path):
    rows = write_rows(tmp_path / "rows.jsonl", [["a", "list"]])
    with pytest.raises(UserError, match=rf"^hub dataset {rows}: column 'text' holds list, not text$"):
        list(corpus.hub_documents({"datasets": [{"path": "json", "data_files": rows}]}, corpus.Shard()))


def test_max_documents_caps_what_a_job_reads_of_each_dataset(tmp_path):
    first = write_rows(tmp_path / "a.jsonl", ["A one.", "A two."])
    second = write_rows(tmp_path / "b.jsonl", ["B one.", "B two."])
    cfg = {"datasets": [{"path": "json", "data_files": first}, {"path": "json", "data_files": second}],
           "max_documents": 1}
    assert list(corpus.hub_documents(cfg, corpus.Shard())) == [(first, ["A one."]), (second, ["B one."])]


def test_a_dataset_without_the_text_column_is_an_error_naming_its_columns(tmp_path):
    rows = write_rows(tmp_path / "rows.jsonl", ["Some text."], column="body")
    with pytest.raises(UserError) as error:
        list(corpus.hub_documents({"datasets": [{"path": "json", "data_files": rows}]}, corpus.Shard()))
    assert str(error.value) == f"hub dataset {rows} has no column 'text' (columns: ['body'])"


def test_a_dataset_that_cannot_be_loaded_is_one_line_naming_the_spec_and_the_error(monkeypatch):
    import datasets

    def offline(**kwargs):
        raise ConnectionError("the hub is unreachable")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError) as error:
        list(corpus.hub_documents({"datasets": [{"path": "bookcorpus/bookcorpus", "group_rows": 256}]}, corpus.Shard()))
    assert str(error.value) == ("could not load hub dataset {'path': 'bookcorpus/bookcorpus', 'split': 'train'}: "
                                "ConnectionError: the hub is unreachable")


@pytest.mark.parametrize("spec, name", [({"path": "bookcorpus/bookcorpus"}, "bookcorpus/bookcorpus"),
                                        ({"path": "json", "data_files": "rows.jsonl"}, "rows.jsonl"),
                                        ({"path": "text", "data_files": ["a.txt", "b.txt"]}, "['a.txt', 'b.txt']"),
                                        ({"path": "csv", "data_files": "rows.csv"}, "rows.csv"),
                                        ({"path": "parquet", "data_files": "rows.parquet"}, "rows.parquet")])
def test_hub_documents_are_named_by_their_repository_or_their_local_files(monkeypatch, spec, name):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda **kw: datasets.Dataset.from_dict({"text": ["One row."]}))
    assert list(corpus.hub_documents({"datasets": [spec]}, corpus.Shard())) == [(name, ["One row."])]


# ------------------------------------------------------------------------------------------------ reading


@pytest.mark.parametrize("stats, message", [
    (None, "{stats} not found: {dir} is not a finished `sparsebert corpus` output"),
    ({"shards": []}, "{stats}: corrupt corpus stats ('shards' is not a mapping)"),
    ({"shards": {}}, "{dir}: the corpus is empty (no shards in stats.json)"),
])
def test_bad_corpus_stats_are_an_error_saying_what_is_wrong(tmp_path, stats, message):
    if stats is not None:
        (tmp_path / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(UserError) as error:
        corpus.corpus_shards(tmp_path)
    assert str(error.value) == message.format(stats=tmp_path / "stats.json", dir=tmp_path)


def test_reading_an_unlisted_or_a_missing_shard_is_an_error_naming_it(tmp_path):
    _, out = build(tmp_path)
    with pytest.raises(UserError) as error:
        list(corpus.read_corpus(out, shards=["shard-00009.txt"]))
    assert str(error.value) == f"{out / 'stats.json'} lists no shard 'shard-00009.txt' (it has 1 shards)"
    (out / "shard-00000.txt").unlink()
    with pytest.raises(UserError) as error:
        list(corpus.read_corpus(out))
    assert str(error.value) == f"{out / 'shard-00000.txt'}: shard listed in stats.json is missing"


def test_max_documents_stops_the_reading_after_that_many(tmp_path):
    _, out = build(tmp_path)
    assert list(corpus.read_corpus(out, max_documents=2)) == [
        ["The cat sat on the mat.", "It was warm.", "Then it slept all day!"],
        ["Dogs bark at night.", "Nobody knows why."]]


def test_an_empty_first_shard_does_not_end_the_reading(tmp_path):
    (tmp_path / "a.txt").write_text("\n")
    (tmp_path / "b.txt").write_text("Only document here. It has two sentences.\n")
    params = {"source": "text_files", "text_files": {"glob": str(tmp_path / "*.txt")}, "shards": 2, "num_proc": 1}
    corpus.build_corpus(params, tmp_path / "corpus")
    assert list(corpus.read_corpus(tmp_path / "corpus")) == [["Only document here.", "It has two sentences."]]


def test_an_empty_line_inside_a_document_is_an_error_naming_the_document(tmp_path):
    (tmp_path / "stats.json").write_text(json.dumps({"shards": {"shard-00000.txt": {"documents": 2, "sentences": 4}}}))
    (tmp_path / "shard-00000.txt").write_text("One.\nTwo.\n\nThree.\n \n\n")
    with pytest.raises(UserError) as error:
        list(corpus.read_corpus(tmp_path))
    assert str(error.value) == f"{tmp_path / 'shard-00000.txt'}: document 2 has an empty line inside it (corrupt shard)"


# An article as the wikimedia/wikipedia datasets hold it: their script strips the markup but keeps each section
# heading as a line, list items, and the category names (without "Category:") at the end.
WIKIMEDIA_ARTICLE = """Anarchism is a political philosophy and movement that rejects all involuntary authority.
It was first used in the 19th century.

Etymology and terminology
The term anarchism is a compound word composed from the word anarchy and a suffix.
History
Origins of the modern movement
Ideas resembling it appear in many older texts, as "the old sources" say.)
Some thinkers of the Enlightenment wrote of a society without a state!
Proudhon
Godwin and the early writers
See also
List of anarchist organisations in the world today.
References
Barclay, Harold, People Without Government: An Anthropology of Anarchy (2nd ed.), Left Bank Books, 1990.
Political culture
Social theories"""


def test_wikipedia_prose_keeps_the_running_text_of_a_wikimedia_article():
    """Lines of 5+ words ending a sentence (its closing quote or bracket allowed), up to the first end section:
    no headings (of any length), list entries or category names; and the cleaned rows through hub_documents."""
    assert corpus.wikipedia_prose(WIKIMEDIA_ARTICLE) == [
        "Anarchism is a political philosophy and movement that rejects all involuntary authority.",
        "It was first used in the 19th century.",
        "The term anarchism is a compound word composed from the word anarchy and a suffix.",
        'Ideas resembling it appear in many older texts, as "the old sources" say.)',
        "Some thinkers of the Enlightenment wrote of a society without a state!"]
    assert corpus.wikipedia_prose("References\nA long line that ends a sentence here.") == []


def test_hub_wikipedia_rows_are_cleaned_where_the_spec_says_so(tmp_path):
    rows = write_rows(tmp_path / "rows.jsonl", [WIKIMEDIA_ARTICLE, "Heading only\nCategory name"])
    spec = {"path": "json", "data_files": rows}
    cleaned = list(corpus.hub_documents({"datasets": [{**spec, "clean": "wikipedia"}]}, corpus.Shard()))
    assert cleaned == [(rows, corpus.wikipedia_prose(WIKIMEDIA_ARTICLE))]  # the second row has no prose: no document
    (raw,) = list(corpus.hub_documents({"datasets": [spec]}, corpus.Shard()))[:1]
    assert "Etymology and terminology" in raw[1] and "Social theories" in raw[1]
    assert recipes.fill("corpus", {})["hub"]["datasets"][0] == {"path": "wikimedia/wikipedia", "name": "20231101.en",
                                                                 "clean": "wikipedia"}


def test_a_glob_that_matches_folders_reads_only_the_files(tmp_path):
    """`texts/**` matches the folders too: they are skipped (reading one raised IsADirectoryError)."""
    write_texts(tmp_path / "texts" / "sub")
    docs = list(corpus.text_file_documents({"glob": str(tmp_path / "texts" / "**")}, corpus.Shard()))
    assert [name for name, _ in docs] == ["a", "a", "b"]


def test_the_sentence_pool_reads_its_input_a_bounded_batch_at_a_time():
    """Pool.imap alone pulled every document before the first result came back: a job's memory then followed
    its share of the corpus. With 2 processes a batch is 4 x 2 x 32 = 256 documents."""
    pulled = []

    def documents():
        for i in range(2000):
            pulled.append(i)
            yield "src", [f"Sentence {i} is here."]

    split = corpus.sentence_documents(documents(), num_proc=2)
    assert next(split) == ("src", ["Sentence 0 is here."])
    assert len(pulled) <= 2 * 256
    assert [s for _, (s,) in split] == [f"Sentence {i} is here." for i in range(1, 2000)]  # all of them, in order
