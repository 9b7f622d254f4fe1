"""MLM + NSP example construction: rates, label semantics, determinism, invariants, end to end, bad input."""

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from sparsebert.data import corpus, pretraining, tokenizer
from sparsebert.data.pretraining import COLUMNS, IGNORE_INDEX, Vocab
from sparsebert.io import UserError

CLS, SEP, MASK, PAD = 2, 3, 4, 0
DOC_STRIDE = 10_000  # token id = 5 + document * DOC_STRIDE + position: each id says where it came from


def synthetic_vocab(size: int, subword_every: int = 0) -> Vocab:
    is_subword = np.zeros(size, dtype=bool)
    if subword_every:
        is_subword[5::subword_every] = True
    return Vocab(CLS, SEP, MASK, PAD, np.arange(5, size, dtype=np.int32), is_subword)


def synthetic_documents(n_documents: int, seed: int = 0, max_sentence: int = 12):
    """Documents of sentences whose token ids count up from the document's base: text order is recoverable."""
    rng = np.random.default_rng(seed)
    documents = []
    for d in range(n_documents):
        lengths = rng.integers(1, max_sentence + 1, size=rng.integers(2, 60))
        ids = 5 + d * DOC_STRIDE + np.arange(lengths.sum(), dtype=np.int32)
        documents.append(np.split(ids, np.cumsum(lengths)[:-1]))
    return documents


def params(**overrides):
    return pretraining.check_params({"max_seq_length": 64, "max_predictions_per_seq": 20, "dupe_factor": 1,
                                     "seed": 1, **overrides})


def build(documents, vocab, seed=1, **overrides):
    return pretraining.create_examples(documents, vocab, params(**overrides), np.random.default_rng(seed))


@pytest.fixture(scope="module")
def examples():
    documents = synthetic_documents(300)
    vocab = synthetic_vocab(5 + 300 * DOC_STRIDE)
    return build(documents, vocab), vocab


def restore(row):
    """The unmasked token ids of one example (masked positions filled from masked_lm_ids)."""
    ids = row["input_ids"].copy()
    real = row["masked_lm_ids"] != IGNORE_INDEX
    ids[row["masked_lm_positions"][real]] = row["masked_lm_ids"][real]
    return ids


def rows(arrays):
    return [{name: arrays[name][i] for name in COLUMNS} for i in range(len(arrays["input_ids"]))]


def segments(ids, type_ids, attention):
    n = int(attention.sum())
    n_a = int((type_ids[:n] == 0).sum())
    return ids[1 : n_a - 1], ids[n_a : n - 1]


def test_masking_rate_and_80_10_10_replacement(examples):
    arrays, _ = examples
    real = arrays["masked_lm_ids"] != IGNORE_INDEX
    candidates = arrays["attention_mask"].sum() - 3 * len(arrays["input_ids"])
    assert 0.14 < real.sum() / candidates < 0.16
    shown = np.take_along_axis(arrays["input_ids"], arrays["masked_lm_positions"], axis=1)[real]
    original = arrays["masked_lm_ids"][real]
    assert real.sum() > 3000
    assert 0.77 < np.mean(shown == MASK) < 0.83
    assert 0.08 < np.mean(shown == original) < 0.12
    assert 0.08 < np.mean((shown != MASK) & (shown != original)) < 0.12


def test_masked_lm_ids_are_the_original_tokens_and_nsp_labels_mean_what_they_say(examples):
    arrays, _ = examples
    labels = arrays["next_sentence_label"]
    assert 0.46 < labels.mean() < 0.54
    for row in rows(arrays):
        a, b = segments(restore(row), row["token_type_ids"], row["attention_mask"])
        assert len(a) and len(b)
        # Restored text is contiguous within each segment: every masked_lm_id is the original token.
        assert np.all(np.diff(a) == 1) and np.all(np.diff(b) == 1)
        same_document = (a[0] - 5) // DOC_STRIDE == (b[0] - 5) // DOC_STRIDE
        if row["next_sentence_label"] == 0:
            assert same_document and b[0] > a[-1]  # B is the text after A (trimming may drop tokens between)
        else:
            assert not same_document


def test_sequence_length_padding_and_type_invariants(examples):
    arrays, _ = examples
    check_invariants(arrays, seq_len=64, n_pred=20)
    assert {name: a.dtype for name, a in arrays.items()} == {
        **{name: np.dtype(np.int32) for name in COLUMNS[:-1]}, "next_sentence_label": np.dtype(np.int64)}


def check_invariants(arrays, seq_len, n_pred):
    assert set(arrays) == set(COLUMNS)
    n = len(arrays["input_ids"])
    assert arrays["input_ids"].shape == arrays["token_type_ids"].shape == arrays["attention_mask"].shape == (n, seq_len)
    assert arrays["masked_lm_positions"].shape == arrays["masked_lm_ids"].shape == (n, n_pred)
    for row in rows(arrays):
        length = int(row["attention_mask"].sum())
        assert np.all(row["attention_mask"][:length] == 1) and np.all(row["attention_mask"][length:] == 0)
        assert np.all(row["input_ids"][length:] == PAD) and np.all(row["token_type_ids"][length:] == 0)
        ids, types = restore(row), row["token_type_ids"]
        seps = np.flatnonzero(ids[:length] == SEP)
        assert ids[0] == CLS and len(seps) == 2 and seps[1] == length - 1 and seps[0] >= 2 and seps[1] > seps[0] + 1
        assert np.all(types[: seps[0] + 1] == 0) and np.all(types[seps[0] + 1 : length] == 1)
        real = row["masked_lm_ids"] != IGNORE_INDEX
        k = int(real.sum())
        assert 1 <= k <= n_pred and np.all(real[:k]) and np.all(row["masked_lm_positions"][k:] == 0)
        positions = row["masked_lm_positions"][:k]
        assert np.all(np.diff(positions) > 0) and positions[-1] < length
        assert not np.isin(positions, [0, *seps]).any()  # never [CLS] or [SEP]
        assert row["next_sentence_label"] in (0, 1)


def test_stored_rows_give_back_the_built_columns_exactly(examples):
    """On disk a row keeps only the unpadded ids, the start of B and the masked (position, id) pairs, in
    uint16: unpacking must give back every padded column exactly."""
    arrays, _ = examples
    table = pretraining.pack(arrays, np.uint32, np.uint16)  # ids reach 3,000,005 here: uint32
    assert table.schema.field("masked_lm_positions").type.value_type == "uint16"
    back = pretraining.unpack(table, 64, 20, PAD)
    for name in COLUMNS:
        assert np.array_equal(back[name], arrays[name]), name


def test_examples_give_any_rows_in_order_across_record_batches(examples):
    """Three shards' worth of record batches read as one split: rows by list, slice, int and selection equal the
    built arrays indexed by numpy."""
    arrays, _ = examples
    n = len(arrays["input_ids"])
    cuts = [0, n // 3, n // 2, n]
    table = pa.concat_tables([pretraining.pack({k: v[a:b] for k, v in arrays.items()}, np.uint32, np.uint16)
                              for a, b in zip(cuts, cuts[1:])])
    ex = pretraining.Examples(table, {"seq_len": 64, "max_predictions": 20, "pad_id": PAD})
    rows = np.random.default_rng(0).integers(0, n, 50)
    rows[:4] = [n - 1, 0, n // 3, n // 3 - 1]  # both ends and both sides of a batch boundary
    got = ex[rows.tolist()]
    for name in COLUMNS:
        assert np.array_equal(got[name].numpy(), arrays[name][rows]), name
    assert len(ex) == n and np.array_equal(ex[5:9]["input_ids"].numpy(), arrays["input_ids"][5:9])
    assert np.array_equal(ex[7]["masked_lm_ids"].numpy(), arrays["masked_lm_ids"][7])
    assert np.array_equal(ex.select(rows[::-1])[:]["token_type_ids"].numpy(), arrays["token_type_ids"][rows[::-1]])
    ids = arrays["masked_lm_ids"]
    assert np.array_equal(np.concatenate(list(ex.masked_lm_id_chunks())), ids[ids != IGNORE_INDEX])


def test_whole_word_masking_masks_every_piece_of_a_word():
    documents, vocab = synthetic_documents(30), synthetic_vocab(5 + 30 * DOC_STRIDE, subword_every=3)
    arrays = build(documents, vocab, whole_word_mask=True)
    words_seen = 0
    for row in rows(arrays):
        ids, length = restore(row), int(row["attention_mask"].sum())
        masked = set(row["masked_lm_positions"][row["masked_lm_ids"] != IGNORE_INDEX].tolist())
        for p in masked:
            start = p
            while start > 1 and vocab.is_subword[ids[start]] and ids[start - 1] not in (CLS, SEP):
                start -= 1
            end = p + 1
            while end < length and vocab.is_subword[ids[end]]:
                end += 1
            assert set(range(start, end)) <= masked, (p, start, end)
            words_seen += end - start > 1
    assert words_seen > 100  # multi-piece words were actually masked


def test_the_target_length_is_drawn_once_per_document(monkeypatch):
    """Google's create_instances_from_document draws target_seq_length once per document (short_seq_prob
    picks short DOCUMENTS, every chunk of which is short), not once per chunk: count the draws."""
    draws = []
    real = pretraining.target_length
    monkeypatch.setattr(pretraining, "target_length", lambda *args: draws.append(real(*args)) or draws[-1])
    documents = synthetic_documents(8)
    arrays = build(documents, synthetic_vocab(5 + 8 * DOC_STRIDE), short_seq_prob=1.0)
    assert len(arrays["input_ids"]) > 2 * len(documents)  # several chunks per document
    assert len(draws) == len(documents)


@settings(max_examples=60, deadline=None)
@given(n_documents=st.integers(1, 6), max_sentence=st.integers(1, 40), seq_len=st.integers(5, 48),
       n_pred=st.integers(1, 12), prob=st.floats(0.01, 1.0), short=st.floats(0, 1), wwm=st.booleans(),
       seed=st.integers(0, 2**31))
def test_fuzz_example_builder_keeps_its_invariants(n_documents, max_sentence, seq_len, n_pred, prob, short, wwm, seed):
    documents = synthetic_documents(n_documents, seed=seed, max_sentence=max_sentence)
    vocab = synthetic_vocab(5 + n_documents * DOC_STRIDE, subword_every=2)
    arrays = build(documents, vocab, seed=seed, max_seq_length=seq_len, max_predictions_per_seq=n_pred,
                   masked_lm_prob=prob, short_seq_prob=short, whole_word_mask=wwm)
    check_invariants(arrays, seq_len, n_pred)
    if n_documents > 1:
        assert len(arrays["input_ids"]) > 0



def _is_int(v, lo, hi=2**31 - 1):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _is_num(v, test):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf") and test(v)


# The documented range of every example-builder parameter, stated independently of pretraining.check_params.
VALID_PARAMS = {
    "max_seq_length": lambda v: _is_int(v, 5, 2**20), "max_predictions_per_seq": lambda v: _is_int(v, 1),
    "masked_lm_prob": lambda v: _is_num(v, lambda x: 0 < x <= 1), "short_seq_prob": lambda v: _is_num(v, lambda x: 0 <= x <= 1),
    "dupe_factor": lambda v: _is_int(v, 1), "seed": lambda v: _is_int(v, 0, 2**32 - 1),
    "whole_word_mask": lambda v: isinstance(v, bool), "validation_fraction": lambda v: _is_num(v, lambda x: 0 <= x < 1),
    "max_documents": lambda v: v is None or _is_int(v, 1), "num_proc": lambda v: v is None or _is_int(v, 1),
}  # fmt: skip
ANY_VALUE = st.one_of(st.integers(-2, 40), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                      st.floats(0, 1), st.booleans(), st.none(), st.text(max_size=2))


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n_documents=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_fuzz_example_builder_params_give_valid_examples_or_a_user_error(data, n_documents, seed):
    """Random, often invalid parameters: check_params accepts exactly the documented ranges (else a UserError
    naming the parameter and value), and with accepted ones the builder keeps every invariant; no other
    exception either way."""
    keys = sorted(VALID_PARAMS) + ["bogus"]
    overrides = data.draw(st.dictionaries(st.sampled_from(keys), ANY_VALUE, max_size=4), label="params")
    merged = {**pretraining.DEFAULTS, **overrides}
    valid = "bogus" not in overrides and all(check(merged[k]) for k, check in VALID_PARAMS.items())
    event("accepted" if valid else "rejected")
    try:
        checked = pretraining.check_params(overrides)
    except UserError as e:
        assert not valid, f"valid parameters rejected: {overrides}: {e}"
        assert any(k in str(e) for k in overrides), str(e)
        return
    assert valid, f"invalid parameters accepted: {overrides}"
    checked = {**checked, "max_seq_length": min(checked["max_seq_length"], 48)}  # keep the run small
    documents = synthetic_documents(n_documents, seed=seed, max_sentence=20)
    vocab = synthetic_vocab(5 + n_documents * DOC_STRIDE, subword_every=2)
    arrays = pretraining.create_examples(documents, vocab, checked, np.random.default_rng(seed))
    check_invariants(arrays, checked["max_seq_length"], checked["max_predictions_per_seq"])


# ------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()
    text = "\n\n".join(
        " ".join(" ".join(rng.choice(words, rng.integers(3, 12))).capitalize() + "." for _ in range(8))
        for _ in range(40))
    (root / "t.txt").write_text(text + "\n")
    corpus.build_corpus({"source": "text_files", "text_files": {"glob": str(root / "t.txt")}, "num_proc": 1},
                        root / "corpus")
    tokenizer.build_tokenizer(root / "corpus", {"vocab_size": 100, "min_frequency": 1}, root / "tokenizer")
    return root


@pytest.mark.parametrize("files", ["tokenizer.json", "vocab.txt"])  # trained; a bert-base-uncased-style vocab.txt
def test_special_token_strings_in_the_text_are_ordinary_text(pipeline, tmp_path, files):
    """Google's FullTokenizer splits a literal "[SEP]" in corpus text at its punctuation ('[', 'sep', ']'); HF
    fast tokenizers would give the special id, so the corpus could forge [SEP]/[MASK]/[CLS]/[PAD] tokens."""
    import shutil

    for name in ("tokenizer_config.json", files, "vocab.txt"):
        shutil.copy(pipeline / "tokenizer" / name, tmp_path / name)
    tok = tokenizer.load_tokenizer(tmp_path)
    literal = [["Alpha [CLS] beta [SEP] gamma.", "Delta [MASK] eta [PAD] [UNK] mu."]]
    spaced = [["Alpha [ CLS ] beta [ SEP ] gamma.", "Delta [ MASK ] eta [ PAD ] [ UNK ] mu."]]  # no token to match
    ids = pretraining.tokenize_documents(literal, tok)[0]
    forged = {tok.cls_token_id, tok.sep_token_id, tok.mask_token_id, tok.pad_token_id}  # [UNK] is ordinary output
    assert not set(np.concatenate(ids).tolist()) & forged
    assert [s.tolist() for s in ids] == [s.tolist() for s in pretraining.tokenize_documents(spaced, tok)[0]]


def test_end_to_end_writes_examples_with_the_training_columns(pipeline):
    out = pipeline / "examples"
    stats = pretraining.build_examples(pipeline / "corpus", pipeline / "tokenizer",
                                       {"max_seq_length": 32, "max_predictions_per_seq": 5, "dupe_factor": 2,
                                        "validation_fraction": 0.1, "num_proc": 1}, out)
    data = pretraining.load_examples(out)
    assert set(data) == {"train", "validation"} and stats["shards"] == ["shard-00000"]
    assert stats["format"] == {"seq_len": 32, "max_predictions": 5, "pad_id": 0, "ids": "uint16"}
    assert stats["train"]["documents"] + stats["validation"]["documents"] == 40 and stats["validation"]["documents"]
    assert stats["train"]["sequences"] == len(data["train"]) and stats["validation"]["sequences"] == len(data["validation"])
    assert json.loads((out / "stats.json").read_text())["train"]["masked_tokens"] == stats["train"]["masked_tokens"]
    train = {name: t.numpy() for name, t in data["train"][:].items()}
    assert list(train) == list(COLUMNS) and train["input_ids"].shape == (len(data["train"]), 32)
    assert int(train["attention_mask"].sum()) == stats["train"]["tokens"]
    check_invariants(train, 32, 5)


def test_examples_are_the_same_bytes_whatever_the_processes_and_differ_across_seeds(pipeline, tmp_path):
    corpus_dir = tmp_path / "corpus"
    corpus.build_corpus({"source": "text_files", "text_files": {"glob": str(pipeline / "t.txt")}, "shards": 3,
                         "num_proc": 1}, corpus_dir)
    build = lambda out, **p: pretraining.build_examples(corpus_dir, pipeline / "tokenizer", {  # noqa: E731
        "max_seq_length": 32, "max_predictions_per_seq": 5, "dupe_factor": 3, "validation_fraction": 0.2, **p}, out)
    build(tmp_path / "one", num_proc=1)
    build(tmp_path / "two", num_proc=2)  # shards built by forked workers, in whatever order they finish
    files = sorted(str(p.relative_to(tmp_path / "one")) for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(files) == 3 * 3 + 1
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    build(tmp_path / "other", num_proc=1, seed=2)
    assert (tmp_path / "one" / "shard-00000" / "train.arrow").read_bytes() != \
        (tmp_path / "other" / "shard-00000" / "train.arrow").read_bytes()
    # dupe_factor passes draw different masks over the same documents: three passes, about three times the rows.
    once = build(tmp_path / "once", num_proc=1, dupe_factor=1)
    again = json.loads((tmp_path / "one" / "stats.json").read_text())
    assert again["train"]["sequences"] > 2 * once["train"]["sequences"]


def test_no_validation_split_loads_and_pretrains(pipeline, tmp_path):
    out = tmp_path / "examples"
    stats = pretraining.build_examples(pipeline / "corpus", pipeline / "tokenizer",
                                       {"max_seq_length": 32, "max_predictions_per_seq": 5, "dupe_factor": 1,
                                        "validation_fraction": 0.0, "num_proc": 1}, out)
    assert stats["validation"]["sequences"] == 0
    assert set(pretraining.load_examples(out)) == {"train"}


def test_missing_inputs_are_user_errors_and_leave_no_output(pipeline, tmp_path):
    out = tmp_path / "examples"
    with pytest.raises(UserError, match="corpus directory not found"):
        pretraining.build_examples(tmp_path / "nowhere", pipeline / "tokenizer", {}, out)
    with pytest.raises(UserError, match=r"tokenizer directory not found or incomplete: .*no-tokenizer"):
        pretraining.build_examples(pipeline / "corpus", tmp_path / "no-tokenizer", {}, out)
    with pytest.raises(UserError, match=r"examples\.max_seq_length: must be an integer in \[5, 1048576\], got 3"):
        pretraining.build_examples(pipeline / "corpus", pipeline / "tokenizer", {"max_seq_length": 3}, out)
    assert not out.exists()


@pytest.mark.parametrize("damage, message", [
    (lambda text: text.encode()[:-40], r"shard-00000\.txt: truncated shard"),
    (lambda text: b"\xfe" + text.encode(), r"shard-00000\.txt:1: not valid UTF-8"),
])
def test_damaged_shards_are_user_errors_naming_the_file(pipeline, tmp_path, damage, message):
    import shutil

    broken = tmp_path / "corpus"
    shutil.copytree(pipeline / "corpus", broken)
    shard = broken / "shard-00000.txt"
    shard.write_bytes(damage(shard.read_text()))
    with pytest.raises(UserError, match=message):
        pretraining.build_examples(broken, pipeline / "tokenizer", {"num_proc": 1}, tmp_path / "examples")
    assert not (tmp_path / "examples").exists()
