"""The proxy tasks' cards (TaskSpec.description, copied into every card.json) say what data/proxy.py makes.

Each card's claims are checked on rows made from documents whose every word names its document, sentence and
position ("d3s1w4"), so where each word of a row comes from can be read off the row."""

import collections
import random
import re

import pytest

from sparsebert import recipes
from sparsebert.data import proxy
from sparsebert.data.tasks import TASKS

WORDS = 12  # per sentence: a third is 4
DOCS = [[" ".join(f"d{d}s{s}w{w}" for w in range(WORDS)) for s in range(6)] for d in range(10)]


def origin(word: str) -> tuple[int, int, int]:
    """(document, sentence, position) that a word of DOCS comes from."""
    return tuple(map(int, re.fullmatch(r"d(\d+)s(\d+)w(\d+)", word).groups()))


@pytest.fixture  # per test: mutmut credits a module-scoped fixture's calls to the first test only
def rows():
    p = recipes.fill("proxy_tasks", {})
    made = {}
    for name in ("proxy_single", "proxy_qa", "proxy_choice"):
        make = proxy.MAKERS[name]
        made[name] = proxy._sample_until(random.Random(0), 300, lambda rng: make(rng, DOCS, p), name)  # noqa: B023
    return made


def test_proxy_single_card_a_third_of_the_words_replaced(rows):
    """Card: a third of the words (at least two) replaced by words of random corpus sentences. The old card said
    "two words swapped or one replaced": a swap or a single replacement would change at most 2 positions."""
    card = TASKS["proxy_single"].description
    assert "a third of its words (at least two) been replaced by words of random corpus sentences" in card
    assert "swap" not in card
    changed = []
    for row in rows["proxy_single"]:
        if row["label"] == 1:
            continue
        words = row["sentence"].split()
        assert len(words) == WORDS  # replaced in place, nothing added or dropped
        # the source sentence: the one whose word sits at its own position most often (8 of 12 are kept)
        d, s = collections.Counter(origin(w)[:2] for i, w in enumerate(words) if origin(w)[2] == i).most_common(1)[0][0]
        changed.append(sum(w != f"d{d}s{s}w{i}" for i, w in enumerate(words)))
    assert 2 <= min(changed) and max(changed) == WORDS // 3


def test_proxy_qa_card_four_words_of_one_sentence_answer_the_whole_sentence(rows):
    """Card: two sentences of two documents; 'Which sentence has: w1 w2 w3 w4?' with four words of one of them,
    answered by that whole sentence; unanswerable (a third) when the words come from a third document."""
    card = TASKS["proxy_qa"].description
    assert "'Which sentence has: w1 w2 w3 w4?'" in card and "cue" not in card
    unanswerable = 0
    for row in rows["proxy_qa"]:
        asked = re.fullmatch(r"Which sentence has: (\S+) (\S+) (\S+) (\S+)\?", row["question"]).groups()
        words = row["context"].split()
        first, second = " ".join(words[:WORDS]), " ".join(words[WORDS:])
        passage_docs = {origin(words[0])[0], origin(words[-1])[0]}
        assert len(passage_docs) == 2
        assert len({origin(w)[:2] for w in asked}) == 1  # four words of one sentence
        if row["answers"]["text"]:
            (answer,), (start,) = row["answers"]["text"], row["answers"]["answer_start"]
            assert answer in (first, second) and row["context"][start : start + len(answer)] == answer
            assert set(asked) <= set(answer.split())
        else:
            unanswerable += 1
            assert origin(asked[0])[0] not in passage_docs
    assert 0.25 < unanswerable / len(rows["proxy_qa"]) < 0.42  # a third


def test_proxy_choice_card_distractors_end_sentences_of_other_documents(rows):
    """Card: the next sentence's first 2-3 words, its true ending among three endings of sentences of other
    documents cut after as many words. The old card said a shuffled own ending and two of the same document."""
    card = TASKS["proxy_choice"].description
    assert "three endings of sentences of other documents" in card and "same document" not in card
    for row in rows["proxy_choice"]:
        d, s, _ = origin(row["sent1"].split()[0])
        start = row["sent2"].split()
        cut = len(start)
        assert 2 <= cut <= 3 and start == [f"d{d}s{s + 1}w{i}" for i in range(cut)]
        for k in range(4):
            ending = row[f"ending{k}"].split()
            sources = {origin(w)[:2] for w in ending}
            assert len(sources) == 1 and [origin(w)[2] for w in ending] == list(range(cut, WORDS))
            (doc, sentence), = sources
            if k == row["label"]:
                assert (doc, sentence) == (d, s + 1)
            else:
                assert doc != d
