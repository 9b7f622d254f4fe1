"""The example builder's steps (sparsebert/data/pretraining.py) worked by hand with a scripted random stream.

Google's create_pretraining_data.py is the reference: one target length per document, chunks of sentences up to
it, a random split point for A, B the rest of the chunk or (half the time) sentences of another document, the
unused sentences put back, the longer segment truncated one token at a time from a random end, then MLM masking
80/10/10 over tokens (or whole words, `whole_word_mask`). Where the builder departs from it (README, "Paper recipe":
one-sentence chunks, the masked count, the random token), the cases follow the module's docstring. `Script` returns the draws a test lists, in order, and records every call with its
arguments, so each case checks the draws' ranges as well as what the builder made of them. Each expected value
below was worked out by hand from the rules above (see the comments), not by running the code.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _scripted import Scripted

from sparsebert.data import pretraining
from sparsebert.data.pretraining import Vocab

CLS, SEP, MASK, PAD = 1, 2, 3, 0


class Script(Scripted):
    """A numpy Generator stand-in: each call takes the next scripted value and is recorded."""

    def random(self, size=None):
        value = np.asarray(self._next(("random", size)), dtype=float)
        return value if size is not None else value[()]

    def integers(self, low, high=None):
        return self._next(("integers", low, high))

    def permutation(self, x):
        return np.asarray(self._next(("permutation", x.tolist() if hasattr(x, "tolist") else x)))

    def choice(self, a, size=None):
        return np.asarray(self._next(("choice", len(a), size)))


def ids(*sentences):
    return [np.asarray(s, dtype=np.int32) for s in sentences]


def pairs(documents, index, rng, max_num_tokens=8, short_seq_prob=0.1):
    out = [(a.tolist(), b.tolist(), r) for a, b, r in
           pretraining.document_pairs(documents, index, rng, max_num_tokens, short_seq_prob)]
    assert rng.done(), "draws left over"
    return out


def test_a_chunk_reaching_the_target_splits_into_a_and_its_continuation():
    # target 8 (0.5 >= 0.1); sentences of 3, 2, 4 tokens reach 9 >= 8 at the third; not random (0.7); A ends after
    # sentence 2 (integers(1, 3) -> 2): A = 5 tokens, B = 4; 9 > 8: cut A (the longer) from the front (0.3 < 0.5).
    # The last sentence alone is skipped.
    rng = Script(0.5, 0.7, 2, 0.3)
    documents = [ids([1, 2, 3], [4, 5], [6, 7, 8, 9], [10])]
    assert pairs(documents, 0, rng) == [([2, 3, 4, 5], [6, 7, 8, 9], False)]
    assert rng.calls == [("random", None), ("random", None), ("integers", 1, 3), ("random", None)]


def test_a_draw_equal_to_a_probability_takes_the_other_branch():
    # target: 0.1 is not < 0.1, so the full 8; is_random: 0.5 is not < 0.5, so a real continuation; the cut:
    # 0.5 is not < 0.5, so from the back.
    rng = Script(0.1, 0.5, 2, 0.5)
    documents = [ids([1, 2, 3], [4, 5], [6, 7, 8, 9], [10]), ids([20, 21])]
    assert pairs(documents, 0, rng) == [([1, 2, 3, 4], [6, 7, 8, 9], False)]


def test_a_short_target_and_a_random_next_from_another_document():
    # target: 0.05 < 0.1 -> integers(2, 9) -> 4. Chunk [1 2 3][4 5] reaches 5 >= 4; random (0.2); A = sentence 1
    # (integers(1, 2) -> 1); other document: integers(1) -> 0, which is this one's index, so document 1; from its
    # sentence 1 (integers(3) -> 1): [22 23 24] already gives 3 >= 4 - 3 tokens. Sentence [4 5] goes back.
    # Next chunk [4 5][6 7 8 9] (6 >= 4): real (0.9), A = [4 5]. [10] alone is skipped.
    rng = Script(0.05, 4, 0.2, 1, 0, 1, 0.9, 1)
    documents = [ids([1, 2, 3], [4, 5], [6, 7, 8, 9], [10]), ids([20, 21], [22, 23, 24], [25])]
    assert pairs(documents, 0, rng) == [([1, 2, 3], [22, 23, 24], True), ([4, 5], [6, 7, 8, 9], False)]
    assert rng.calls == [("random", None), ("integers", 2, 9), ("random", None), ("integers", 1, 2),
                         ("integers", 1, None), ("integers", 3, None), ("random", None), ("integers", 1, 2)]


def test_a_random_b_stops_at_the_room_left_and_skips_this_document():
    # target 8; chunk [1 2 3][4..8] reaches 8 = target, before the last sentence; random (0.0); A = [1 2 3];
    # other: integers(2) -> 1 >= index 0, so document 2; from its sentence 0: 4 < 8 - 3, then 5 >= 5: stop before
    # [35]. [4..8] goes back: chunk [4..8][9 10], the document's end; real (0.9), A = [4..8].
    rng = Script(0.5, 0.0, 1, 1, 0, 0.9, 1)
    documents = [ids([1, 2, 3], [4, 5, 6, 7, 8], [9, 10]), ids([20, 21]), ids([30, 31, 32, 33], [34], [35])]
    assert pairs(documents, 0, rng) == [([1, 2, 3], [30, 31, 32, 33, 34], True), ([4, 5, 6, 7, 8], [9, 10], False)]
    assert rng.calls == [("random", None), ("random", None), ("integers", 1, 2), ("integers", 2, None),
                         ("integers", 3, None), ("random", None), ("integers", 1, 2)]


def test_one_sentence_with_a_random_b_and_the_next_chunk_counted_from_zero():
    # target 4 (0.05; integers(2, 9) -> 4). [1 2 3 4] alone reaches 4; random (0.2): no continuation, A is the
    # sentence (no split draw), B from document 1 (integers(1) -> 0 -> 1; from sentence 0: 2 >= 0). Nothing goes
    # back. Next chunk: [10 11 12] is 3 < 4; with [13 14] 5 >= 4 at the end: random (0.2), A = [10 11 12]
    # (integers(1, 2) -> 1), B from document 1 again; [13 14] goes back, then alone at the end: skipped.
    rng = Script(0.05, 4, 0.2, 0, 0, 0.2, 1, 0, 0)
    documents = [ids([1, 2, 3, 4], [10, 11, 12], [13, 14]), ids([20, 21])]
    assert pairs(documents, 0, rng) == [([1, 2, 3, 4], [20, 21], True), ([10, 11, 12], [20, 21], True)]
    assert rng.calls == [("random", None), ("integers", 2, 9), ("random", None), ("integers", 1, None),
                         ("integers", 1, None), ("random", None), ("integers", 1, 2), ("integers", 1, None),
                         ("integers", 1, None)]


def test_one_long_sentence_takes_the_next_as_its_continuation():
    # target 8; the first sentence alone has 9 >= 8; real (0.6): a continuation needs two sentences, so the next
    # one joins; A = sentence 0; 9 + 2 > 8: three cuts from A (longer each time): front, back, front.
    rng = Script(0.5, 0.6, 1, 0.1, 0.9, 0.2)
    documents = [ids([1, 2, 3, 4, 5, 6, 7, 8, 9], [10, 11]), ids([20, 21])]
    assert pairs(documents, 0, rng) == [([3, 4, 5, 6, 7, 8], [10, 11], False)]


def test_a_one_document_split_has_no_random_next():
    # target 8; [1 2][3 4] ends the document; "random" (0.1), but there is no other document: a real pair.
    rng = Script(0.5, 0.1, 1)
    assert pairs([ids([1, 2], [3, 4])], 0, rng) == [([1, 2], [3, 4], False)]
    # One long sentence that drew "random" has no continuation and no other document: no pair; [10 11] alone at
    # the end is skipped.
    rng = Script(0.5, 0.1)
    assert pairs([ids([1, 2, 3, 4, 5, 6, 7, 8, 9], [10, 11])], 0, rng) == []


@pytest.mark.parametrize("draws, expected", [((0.7, 0.4), ([2, 3], [4, 5])), ((0.2, 0.6), ([1, 2], [5, 6]))])
def test_truncation_cuts_b_when_the_segments_are_equally_long(draws, expected):
    # 3 + 3 > 4: equal, so B first (from the back at 0.7, the front at 0.2); then A (3 > 2), front 0.4, back 0.6.
    rng = Script(*draws)
    a, b = pretraining.truncate_pair(np.array([1, 2, 3]), np.array([4, 5, 6]), 4, rng)
    assert (a.tolist(), b.tolist()) == expected and rng.done()


def test_target_length_draws_between_2_and_the_maximum():
    rng = Script(0.0, 7)
    assert pretraining.target_length(rng, 8, 0.1) == 7
    assert rng.calls == [("random", None), ("integers", 2, 9)]


# ------------------------------------------------------------------------------------------------ masking

def vocab():
    is_subword = np.zeros(50, dtype=bool)
    is_subword[7] = True  # id 7 is a "##" piece
    return Vocab(CLS, SEP, MASK, PAD, np.arange(4, 50, dtype=np.int32), is_subword)


def test_whole_words_are_masked_80_10_10():
    # Candidates: positions 1 2 3 4 6 (not CLS/SEP); words: [1] [2 3] (7 is a piece of 6's word) [4] [6] (after
    # the SEP at 5). 5 x 0.6 = 3 predictions. Words in the order 1, 3, 0, 2: [2 3] (2 <= 3), [6] (3 = 3): done.
    # Draws: position 2 0.8 (not < 0.8, not >= 0.9: kept), position 3 0.9 (random: 42), position 6 0.1 (MASK).
    tokens = np.array([CLS, 5, 6, 7, 8, SEP, 9, SEP], dtype=np.int32)
    rng = Script([1, 3, 0, 2], [0.8, 0.9, 0.1], [42])
    masked, positions, labels = pretraining.mask_tokens(tokens, rng, vocab(), 0.6, 5, whole_word_mask=True)
    assert masked.tolist() == [CLS, 5, 6, 42, 8, SEP, MASK, SEP]
    assert positions.tolist() == [2, 3, 6] and labels.tolist() == [6, 7, 9]
    assert rng.calls == [("permutation", 4), ("random", 3), ("choice", 46, 1)] and rng.done()


def test_a_word_that_would_overshoot_the_budget_is_skipped():
    # 5 x 0.4 = 2 predictions: word [6] first (1 <= 2), then [2 3] (3 > 2: skipped), [1] (2 = 2): done.
    tokens = np.array([CLS, 5, 6, 7, 8, SEP, 9, SEP], dtype=np.int32)
    rng = Script([3, 1, 0, 2], [0.0, 0.0], [])
    masked, positions, labels = pretraining.mask_tokens(tokens, rng, vocab(), 0.4, 5, whole_word_mask=True)
    assert positions.tolist() == [1, 6] and masked.tolist() == [CLS, MASK, 6, 7, 8, SEP, MASK, SEP]


def test_a_piece_right_after_cls_starts_a_word():
    # The first candidate starts a word even when it is a "##" piece: words [1] [2]; 2 x 0.5 = 1 prediction.
    tokens = np.array([CLS, 7, 5, SEP], dtype=np.int32)
    rng = Script([1, 0], [0.5], [])
    _, positions, _ = pretraining.mask_tokens(tokens, rng, vocab(), 0.5, 5, whole_word_mask=True)
    assert positions.tolist() == [2] and rng.calls[0] == ("permutation", 2)


def test_at_least_one_token_is_predicted_without_whole_words():
    # 2 x 0.1 rounds to 0: still 1 prediction, the first of the permuted candidates.
    tokens = np.array([CLS, 5, 6, SEP], dtype=np.int32)
    rng = Script([2, 1], [0.5], [])
    masked, positions, labels = pretraining.mask_tokens(tokens, rng, vocab(), 0.1, 5, whole_word_mask=False)
    assert positions.tolist() == [2] and labels.tolist() == [6] and masked.tolist() == [CLS, 5, MASK, SEP]
    assert rng.calls[0] == ("permutation", [1, 2])


# ------------------------------------------------------------------------------------ storage and splits

def test_storage_types_are_the_narrowest_that_hold_the_values():
    assert pretraining.id_type(2**16) == np.uint16 and pretraining.id_type(2**16 + 1) == np.uint32
    assert pretraining.position_type(2**16) == np.uint16 and pretraining.position_type(2**16 + 1) == np.uint32


def test_the_built_columns_have_the_model_input_types():
    documents = [ids([5, 6, 8], [9, 10], [11, 12, 13]), ids([20, 21], [22, 23])]
    params = pretraining.check_params({"max_seq_length": 16, "max_predictions_per_seq": 4})
    arrays = pretraining.create_examples(documents, vocab(), params, np.random.default_rng(0))
    assert {name: a.dtype for name, a in arrays.items()} == {
        **{name: np.dtype(np.int32) for name in pretraining.COLUMNS}, "next_sentence_label": np.dtype(np.int64)}
    rows = pretraining.pack(arrays, np.uint16, np.uint16)
    back = pretraining.unpack(rows, 16, 4, PAD)
    assert all(back[name].dtype == np.int64 and np.array_equal(back[name], arrays[name]) for name in back)


def test_documents_split_by_the_validation_fraction():
    documents = [[f"document {i}.", "Second sentence."] for i in range(4000)]
    held_out = np.mean([pretraining.split_of(d, 0.5, 0) == "validation" for d in documents])
    assert 0.46 < held_out < 0.54
    assert all(pretraining.split_of(d, 0.0, 0) == "train" for d in documents[:100])
    assert all(pretraining.split_of(d, 1.0, 0) == "validation" for d in documents[:100])


# ------------------------------------------------------------------------------------------ shard merging

def shard(path, fmt, train, validation, params=None):
    """A built shard's stats.json: its storage format, counts and the params it was built with (`params` filled
    with the schema's defaults, as `sparsebert examples` records them)."""
    path.mkdir(parents=True)
    built = {key: value for key, value in pretraining.check_params(params or {}).items() if key != "num_proc"}
    (path / "stats.json").write_text(json.dumps({"format": fmt, "params": built, "train": train,
                                                 "validation": validation}))


def counts(sequences, random_next, documents=2):
    return {"documents": documents, "sequences": sequences, "tokens": 10 * sequences, "masked_tokens": sequences,
            "random_next": random_next}


def test_merged_stats_add_the_shards_counts(tmp_path, caplog):
    fmt = {"seq_len": 16, "max_predictions": 4, "pad_id": 0, "ids": "uint16"}
    shard(tmp_path / "shard-00000", fmt, counts(3, 1), counts(0, 0, 0), {"max_seq_length": 16})
    shard(tmp_path / "shard-00001", fmt, counts(4, 2), counts(2, 1), {"max_seq_length": 16})
    with caplog.at_level("INFO"):
        stats = pretraining.merge_shards(tmp_path, ["shard-00000", "shard-00001"], {"max_seq_length": 16, "num_proc": 3})
    assert stats["train"] == {"documents": 4, "sequences": 7, "tokens": 70, "masked_tokens": 7,
                              "random_next_fraction": 0.4286}  # 3 / 7
    assert stats["validation"] == {"documents": 2, "sequences": 2, "tokens": 20, "masked_tokens": 2,
                                   "random_next_fraction": 0.5}
    assert stats["format"] == fmt and stats["shards"] == ["shard-00000", "shard-00001"]
    assert "num_proc" not in stats["params"] and stats["params"]["max_seq_length"] == 16
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("examples:")] == [
        "examples: train              7 sequences,          70 tokens,          7 masked tokens, 0.429 random next, "
        "from 4 documents",
        "examples: validation         2 sequences,          20 tokens,          2 masked tokens, 0.500 random next, "
        "from 2 documents"]


def test_a_split_without_sequences_has_no_random_next_fraction(tmp_path, caplog):
    fmt = {"seq_len": 16}
    shard(tmp_path / "shard-00000", fmt, counts(3, 1), counts(0, 0, 0))
    with caplog.at_level("INFO"):
        assert pretraining.merge_shards(tmp_path, ["shard-00000"], {})["validation"]["random_next_fraction"] is None
    assert caplog.records[-1].getMessage().endswith("0 masked tokens, 0.000 random next, from 0 documents")


@pytest.mark.parametrize("case", ["missing", "format", "empty"])
def test_shards_that_cannot_merge_are_one_error(tmp_path, case):
    shard(tmp_path / "shard-00000", {"seq_len": 16}, counts(0 if case == "empty" else 3, 0), counts(0, 0, 0))
    if case == "format":
        shard(tmp_path / "shard-00001", {"seq_len": 32}, counts(3, 0), counts(0, 0, 0))
    names = ["shard-00000"] if case == "empty" else ["shard-00000", "shard-00001"]
    with pytest.raises(pretraining.UserError) as error:
        pretraining.merge_shards(tmp_path, names, {})
    assert str(error.value) == {
        "missing": f"examples shard(s) not built yet: {tmp_path}/shard-00001/stats.json (run `sparsebert examples "
                   f"--shard`)",
        "format": f"{tmp_path}/shard-00001/stats.json: format {{'seq_len': 32}} differs from the other shards' "
                  f"{{'seq_len': 16}} (built with another tokenizer or params: rebuild all shards)",
        "empty": f"{tmp_path}: no training examples could be built (too few documents or sentences)"}[case]


@pytest.mark.parametrize("case", ["other dupe_factor", "other seed", "merge asks otherwise", "no record"])
def test_shards_built_with_other_params_do_not_merge(tmp_path, case):
    """Shards of one examples directory built with other settings (some shards rerun after a params change
    under --rerun-triggers mtime, or copied in) would mix two datasets, and the merged stats.json would record
    the merge call's params as theirs: one error naming the shard, the key and both values. num_proc may differ
    (the same bytes either way)."""
    shard(tmp_path / "shard-00000", {"seq_len": 16}, counts(3, 0), counts(0, 0, 0), {"num_proc": 1})
    second = {"other dupe_factor": {"dupe_factor": 4}, "other seed": {"seed": 7}}.get(case, {"num_proc": 2})
    shard(tmp_path / "shard-00001", {"seq_len": 16}, counts(3, 0), counts(0, 0, 0), second)
    asked = {"masked_lm_prob": 0.2} if case == "merge asks otherwise" else {}
    if case == "no record":
        stats = json.loads((tmp_path / "shard-00001" / "stats.json").read_text())
        (tmp_path / "shard-00001" / "stats.json").write_text(json.dumps({k: v for k, v in stats.items() if k != "params"}))
    defaults = pretraining.check_params({})
    with pytest.raises(pretraining.UserError) as error:
        pretraining.merge_shards(tmp_path, ["shard-00000", "shard-00001"], asked)
    rebuild = "(the params changed since: rebuild all shards)"
    assert str(error.value) == {
        "other dupe_factor": f"{tmp_path}/shard-00001/stats.json: built with dupe_factor = 4, the merge asks for "
                             f"{defaults['dupe_factor']} {rebuild}",
        "other seed": f"{tmp_path}/shard-00001/stats.json: built with seed = 7, the merge asks for "
                      f"{defaults['seed']} {rebuild}",
        "merge asks otherwise": f"{tmp_path}/shard-00000/stats.json: built with masked_lm_prob = "
                                f"{defaults['masked_lm_prob']}, the merge asks for 0.2 {rebuild}",
        "no record": f"{tmp_path}/shard-00001/stats.json: no record of the params the shard was built with (built "
                     f"by an older sparsebert): rebuild all shards"}[case]
    assert not (tmp_path / "stats.json").exists()
    shard(tmp_path / "shard-00002", {"seq_len": 16}, counts(3, 0), counts(0, 0, 0), {"num_proc": 4})
    assert pretraining.merge_shards(tmp_path, ["shard-00000", "shard-00002"], {"num_proc": 8})["params"] == {
        key: value for key, value in defaults.items() if key != "num_proc"}


def test_a_pass_too_long_for_arrow_list_offsets_is_one_error():
    """2^31 tokens in one pass of one shard would wrap Arrow's int32 list offsets without an error. A stand-in
    that has only a length holds them: no memory, and code that went on past the check fails at once instead of
    copying 2^31 tokens (a mutation run was killed for memory so)."""

    class Tokens:
        def __len__(self):
            return 2**31

    values = Tokens()
    with pytest.raises(pretraining.UserError, match=r"^one pass of a corpus shard holds 2,147,483,648 tokens, more "
                                                    r"than an Arrow list column takes \(2\^31 - 1\): split the corpus "
                                                    r"into more shards \(corpus.shards\)$"):
        pretraining._lists(values, np.array([2**31]))
    assert pretraining._lists(np.arange(5, dtype=np.uint16), np.array([2, 0, 3])).to_pylist() == [[0, 1], [], [2, 3, 4]]
