"""Corpus step: shard format, stats, sources (embedded mix size, wiki/play parsing), bad input."""

import itertools
import json
from pathlib import Path

import pytest

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
    (root / "b.jsonl").write_text(json.dumps({"text": DOC_3}) + "\n")
    return str(root / "*")


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
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"Row {i} says hello. It ends here."}) + "\n" for i in range(5)))
    params = {"source": "hub", "num_proc": 1, "hub": {"datasets": [{"path": "json", "data_files": str(rows),
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
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[f::files]))
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
        path.write_text("".join(json.dumps({"text": f"Row {i} ends here."}) + "\n" for i in range(4 * f, 4 * f + 4)))
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
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "\ufeff\nHello there, world. Goodbye now."}) + "\n")
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
        f"corpus: 3 documents, 6 sentences, 25 words, 0.0 MB in 2 shards -> {out}",
        "corpus:   a                 2 documents        5 sentences        21 words",
        "corpus:   b                 1 documents        1 sentences         4 words",
    ]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["sources"]["a"] == {"bytes": 100, "documents": 2, "sentences": 5, "words": 21}
    params = {"source": "text_files", "text_files": {"glob": glob}, "shards": 2, "num_proc": 1}
    assert stats["source"] == "text_files" and stats["params"] == recipes.fill("corpus", params)


def test_a_merge_names_the_first_five_missing_shards_and_counts_the_rest(tmp_path):
    params = {"source": "text_files", "text_files": {"glob": str(tmp_path / "*.txt")}, "shards": 7}
    with pytest.raises(UserError) as error:
        corpus.merge_shards(params, tmp_path)
    missing = ", ".join(str(tmp_path / f"shard-0000{i}.json") for i in range(5))
    assert str(error.value) == f"corpus shard(s) not built yet: {missing} and 2 more (run `sparsebert corpus --shard K`)"
