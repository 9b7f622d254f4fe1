"""The proxy tasks' row makers (sparsebert/data/proxy.py) worked by hand with a scripted random stream.

`Script` stands in for random.Random: each call takes the next scripted value (an index for choice, the indices
for sample, a permutation for shuffle) and is recorded with the size it drew from, so a case checks the draws'
ranges as well as the row made of them. Sentences are named by their words ("a1 a2 a3"); each expected row was
worked out by hand from proxy.py's docstring and the cards (tests/test_proxy_cards.py), not by running the code.
"""

from __future__ import annotations

import pytest
from _scripted import Scripted

from sparsebert.data import proxy

P = {"min_words": 3, "max_words": 6, "qa_context_words": 9}


class Script(Scripted):
    """A random.Random stand-in (tests/_scripted.py)."""

    def choice(self, seq):
        return seq[self._next(("choice", len(seq)))]

    def random(self):
        return self._next(("random",))

    def randrange(self, n):
        return self._next(("randrange", n))

    def randint(self, a, b):
        return self._next(("randint", a, b))

    def sample(self, population, k):
        return [population[i] for i in self._next(("sample", len(population), k))]

    def shuffle(self, x):
        x[:] = [x[i] for i in self._next(("shuffle", len(x)))]


def made(maker, docs, *draws, p=P):
    rng = Script(*draws)
    row = maker(rng, docs, p)
    assert rng.done(), "draws left over"
    return row, rng.calls


# ------------------------------------------------------------------------------------------ proxy_single

SINGLE = [["a b c d e f", "g h"], ["u v w x y z"]]


def test_single_replaces_a_third_of_the_words_at_least_two_by_corpus_words():
    # 6 words: max(2, 6 // 3) = 2 positions, 0 and 4, get "w" and "z" of document 1 (draws: document, sentence,
    # word). 0.5 is not < 0.5: the corrupted branch.
    row, calls = made(proxy.make_single, SINGLE, 0, 0, 0.5, [0, 4], 1, 0, 2, 1, 0, 5)
    assert row == {"sentence": "w b c d z f", "label": 0}
    assert calls == [("choice", 2), ("choice", 2), ("random",), ("sample", 6, 2),
                     ("choice", 2), ("choice", 1), ("choice", 6), ("choice", 2), ("choice", 1), ("choice", 6)]


def test_single_keeps_the_sentence_intact_half_the_time_and_skips_one_that_does_not_fit():
    assert made(proxy.make_single, SINGLE, 0, 0, 0.49)[0] == {"sentence": "a b c d e f", "label": 1}
    assert made(proxy.make_single, SINGLE, 0, 1) == (None, [("choice", 2), ("choice", 2)])  # "g h": 2 < 3 words


def test_single_drops_a_draw_that_changed_only_the_case():
    docs = [["The cat sat down"], ["the cat"]]  # 4 words: 2 positions; "the" and "cat" put back lowercased
    assert made(proxy.make_single, docs, 0, 0, 0.9, [0, 1], 1, 0, 0, 1, 0, 1)[0] is None


# ------------------------------------------------------------------------------------------ proxy_pair

PAIR = [["s0 a b", "s1 a b", "s2 a b", "s3 a b", "s4 a b"], ["t0 c d", "t1 c d"], ["u0 e f", "u1 e f", "u2 e f"],
        ["v0 g h", "v1 g h", "v2 g h", "v3 g h"], ["w0 i j", "w1", "w2 i j", "w3 i j"]]  # fmt: skip


def test_pair_label_0_is_the_next_sentence():
    row, calls = made(proxy.make_pair, PAIR, 0, 1, 0)
    assert row == {"sentence1": "s1 a b", "sentence2": "s2 a b", "label": 0}
    assert calls == [("choice", 5), ("randrange", 4), ("randrange", 3)]
    assert made(proxy.make_pair, PAIR, 3, 2, 0)[0] == {"sentence1": "v2 g h", "sentence2": "v3 g h", "label": 0}


def test_pair_label_1_is_a_sentence_at_least_two_away_in_the_same_document():
    row, calls = made(proxy.make_pair, PAIR, 0, 1, 1, 1)  # from s1: s3 or s4 (s0 and s2 are neighbours)
    assert row == {"sentence1": "s1 a b", "sentence2": "s4 a b", "label": 1}
    assert calls[-1] == ("choice", 2)


def test_pair_label_2_is_a_sentence_of_another_document():
    row, calls = made(proxy.make_pair, PAIR, 0, 1, 2, 1, 1)
    assert row == {"sentence1": "s1 a b", "sentence2": "t1 c d", "label": 2}
    assert calls[-2:] == [("choice", 5), ("choice", 2)]
    assert made(proxy.make_pair, PAIR, 0, 1, 2, 0)[0] is None  # the same document drawn again


def test_pair_needs_four_sentences_and_both_sentences_fitting():
    assert made(proxy.make_pair, PAIR, 2) == (None, [("choice", 5)])  # 3 sentences
    assert made(proxy.make_pair, PAIR, 4, 0, 0)[0] is None  # "w1" follows: 1 word
    assert made(proxy.make_pair, PAIR, 4, 1, 0)[0] is None  # "w1" first


# ------------------------------------------------------------------------------------------ proxy_regression

REGRESSION = [["a b c d"], ["x y"]]


def test_regression_swap_keeps_one_bigram_of_three():
    # one edit (randrange(6) -> 1), a swap (0.2 < 0.5) of positions 2 and 3: "a b d c" keeps (a, b) of
    # (a, b), (b, c), (c, d): 5 x 1/3 = 1.667 (3 decimals)
    row, calls = made(proxy.make_regression, REGRESSION, 0, 0, 1, 0.2, [2, 3])
    assert row == {"sentence1": "a b c d", "sentence2": "a b d c", "label": 1.667}
    assert calls == [("choice", 2), ("choice", 1), ("randrange", 6), ("random",), ("sample", 4, 2)]


def test_regression_replacement_keeps_two_bigrams_of_three():
    # 0.5 is not < 0.5: a replacement by "y" of document 1 (the word is drawn first: Python evaluates the right
    # side of an assignment before its target) at position 3: "a b c y" keeps (a, b), (b, c)
    row, calls = made(proxy.make_regression, REGRESSION, 0, 0, 1, 0.5, 1, 0, 1, 3)
    assert row == {"sentence1": "a b c d", "sentence2": "a b c y", "label": 3.333}
    assert calls[3:] == [("random",), ("choice", 2), ("choice", 1), ("choice", 2), ("randrange", 4)]


def test_regression_without_edits_scores_5_and_skips_a_sentence_that_does_not_fit():
    assert made(proxy.make_regression, REGRESSION, 0, 0, 0)[0] == {"sentence1": "a b c d", "sentence2": "a b c d",
                                                                   "label": 5.0}  # fmt: skip
    assert made(proxy.make_regression, REGRESSION, 1, 0)[0] is None


# ------------------------------------------------------------------------------------------ proxy_qa

QA = [["a1 a2 a3 a4", "a5 a6"], ["b1 b2 b3 b4 b5"], ["c1 c2 c3 c4"], ["d1 d2 d3"]]
B = "b1 b2 b3 b4 b5"


def test_qa_answer_in_the_second_sentence_starts_after_the_first_and_a_space():
    # documents 0, 1, 2; their usable sentences (fitting, >= 4 words): one each. 9 context words <= 9.
    # 1/3 is not < 1/3: answerable; 0.5 is not < 0.5: the second sentence. Question: its words 5, 1, 3, 2.
    row, calls = made(proxy.make_qa, QA, [0, 1, 2], 0, 0, 0, 1 / 3, 0.5, [4, 0, 2, 1])
    assert row == {"title": "proxy documents 0 and 1", "context": f"a1 a2 a3 a4 {B}",
                   "question": "Which sentence has: b5 b1 b3 b2?", "answers": {"text": [B], "answer_start": [12]}}
    assert calls == [("sample", 4, 3), ("choice", 1), ("choice", 1), ("choice", 1), ("random",), ("random",),
                     ("sample", 5, 4)]  # fmt: skip


def test_qa_answer_in_the_first_sentence_starts_at_0():
    row, _ = made(proxy.make_qa, QA, [1, 0, 2], 0, 0, 0, 0.4, 0.49, [0, 1, 2, 3])
    assert row == {"title": "proxy documents 1 and 0", "context": f"{B} a1 a2 a3 a4",
                   "question": "Which sentence has: b1 b2 b3 b4?", "answers": {"text": [B], "answer_start": [0]}}


def test_qa_a_third_are_unanswerable_with_words_of_a_third_document():
    row, calls = made(proxy.make_qa, QA[:3], [0, 1, 2], 0, 0, 0, 0.3, [3, 2, 1, 0])
    assert row == {"title": "proxy documents 0 and 1", "context": f"a1 a2 a3 a4 {B}",
                   "question": "Which sentence has: c4 c3 c2 c1?", "answers": {"text": [], "answer_start": []}}
    assert calls[0] == ("sample", 3, 3) and calls[-1] == ("sample", 4, 4)


def test_qa_skips_too_few_documents_a_document_without_a_usable_sentence_and_a_long_context():
    assert made(proxy.make_qa, QA[:2]) == (None, [])
    assert made(proxy.make_qa, QA, [0, 3, 1]) == (None, [("sample", 4, 3)])  # "d1 d2 d3": under 4 words
    assert made(proxy.make_qa, QA, [0, 1, 2], 0, 0, 0, p={**P, "qa_context_words": 8})[0] is None  # 9 > 8


# ------------------------------------------------------------------------------------------ proxy_choice

CHOICE = [["x0 x1 x2", "a1 a2 a3", "n1 n2 n3 n4 n5 n6"], ["b1 b2 b3 b4 b5 b6"], ["c1 c2 c3 c4 c5"],
          ["e1 e2 e3 e4 e5 e6 e7 e8 e9"], ["z1 z2 z3"], ["f1 f2 f3", "g1 g2 g3 g4 g5 g6"],
          ["q1 q2", "r1 r2 r3 r4 r5 r6"], ["h1 h2 h3", "k1 k2 k3 k4 k5"]]  # fmt: skip


def test_choice_gold_ending_completes_the_next_sentence_among_shuffled_distractors():
    # document 0, sentence 1 and the next; cut after 3 words: 3 + 3 <= 6 <= 6 words. Distractors cut after 3
    # words too: "b4 b5 b6" (3 words, the least), "e4 ... e9" (6, the most), "b4 b5 b6". Shuffled to
    # [2, 0, 3, 1]: the gold ending (index 0) lands at position 1.
    row, calls = made(proxy.make_choice, CHOICE, 0, 1, 3, 1, 0, 3, 0, 1, 0, [2, 0, 3, 1])
    assert row == {"video-id": "proxy-0", "fold-ind": "1", "sent1": "a1 a2 a3", "sent2": "n1 n2 n3",
                   "gold-source": "gold", "label": 1, "startphrase": "a1 a2 a3 n1 n2 n3",
                   "ending0": "e4 e5 e6 e7 e8 e9", "ending1": "n4 n5 n6", "ending2": "b4 b5 b6", "ending3": "b4 b5 b6"}
    assert calls == [("randrange", 8), ("randrange", 2), ("randint", 2, 3), ("choice", 8), ("choice", 1),
                     ("choice", 8), ("choice", 1), ("choice", 8), ("choice", 1), ("shuffle", 4)]  # fmt: skip


def test_choice_from_a_two_sentence_document_cut_after_two_words():
    row, _ = made(proxy.make_choice, CHOICE, 5, 0, 2, 1, 0, 1, 0, 1, 0, [0, 1, 2, 3])
    assert row["label"] == 0 and (row["fold-ind"], row["sent2"], row["ending0"]) == ("0", "g1 g2", "g3 g4 g5 g6")
    assert [row[f"ending{k}"] for k in (1, 2, 3)] == ["b3 b4 b5 b6"] * 3


@pytest.mark.parametrize("draws, why", [
    ((4,), "one sentence: no next one"),
    ((6, 0, 3), "the context, 2 words, does not fit"),
    ((7, 0, 3), "the next sentence, 5 words, is under cut + 3"),
    ((0, 1, 3, 0), "a distractor from the same document"),
    ((0, 1, 3, 2), "the other document has no ending of 3 to 6 words after the cut"),
])  # fmt: skip
def test_choice_skips(draws, why):
    assert made(proxy.make_choice, CHOICE, *draws)[0] is None, why
