"""Tokenizer step: a WordPiece trained on a tiny corpus round-trips through BertTokenizerFast."""

import json

import pytest
from transformers import BertTokenizerFast

from sparsebert.data import corpus, tokenizer
from sparsebert.io import UserError

TEXT = ("The quick brown fox jumps over the lazy dog. A wizard's job is to vex chumps quickly in fog.\n"
        "Pack my box with five dozen liquor jugs! How vexingly quick daft zebras jump.\n\n"
        "Sphinx of black quartz, judge my vow. The five boxing wizards jump quickly.\n")


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    (root / "t.txt").write_text(TEXT * 3)
    corpus.build_corpus({"source": "text_files", "text_files": {"glob": str(root / "t.txt")}, "num_proc": 1},
                        root / "corpus")
    return root / "corpus"


@pytest.fixture(scope="module")
def trained(corpus_dir):
    out = corpus_dir.parent / "tokenizer"
    tokenizer.build_tokenizer(corpus_dir, {"vocab_size": 200, "min_frequency": 1}, out)
    return out


def test_trained_tokenizer_round_trips_through_bert_tokenizer_fast(trained):
    tok = BertTokenizerFast.from_pretrained(str(trained))
    assert tok.pad_token_id == 0 and tok.convert_ids_to_tokens(0) == "[PAD]"
    assert len(tok) <= 200 and json.loads((trained / "stats.json").read_text())["vocab_size"] == len(tok)
    text = "the quick brown fox jumps over the lazy dog."
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode(tok("The Quick FOX")["input_ids"], skip_special_tokens=True) == "the quick fox"  # lowercase
    pair = tok("five boxing wizards", "jump quickly")
    assert pair["token_type_ids"] == [0] * 5 + [1] * 3  # [CLS] five boxing wizards [SEP] | jump quickly [SEP]
    assert tok.unk_token_id in tok("vexing ΩΩΩ")["input_ids"]  # characters never seen in training
    vocab = (trained / "vocab.txt").read_text().splitlines()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and len(vocab) == len(tok)


def test_pretrained_branch_loads_and_saves_a_named_tokenizer(trained, tmp_path):
    # The paper config names bert-base-uncased (hub); offline, a directory stands in for the name.
    out = tmp_path / "pretrained"
    stats = tokenizer.build_tokenizer(None, {"pretrained": str(trained)}, out)
    loaded, original = BertTokenizerFast.from_pretrained(str(out)), BertTokenizerFast.from_pretrained(str(trained))
    assert loaded.get_vocab() == original.get_vocab() and stats["vocab_size"] == len(original)
    assert loaded("jump quickly")["input_ids"] == original("jump quickly")["input_ids"]


def test_unknown_pretrained_name_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="could not load pretrained tokenizer"):
        tokenizer.build_tokenizer(None, {"pretrained": str(tmp_path / "no-such-tokenizer")}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_corpus_is_a_user_error_and_leaves_no_output(tmp_path):
    with pytest.raises(UserError, match=r"corpus directory not found: .*nowhere"):
        tokenizer.build_tokenizer(tmp_path / "nowhere", {}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_load_tokenizer_names_a_missing_directory(tmp_path):
    with pytest.raises(UserError, match=r"tokenizer directory not found or incomplete: .*missing"):
        tokenizer.load_tokenizer(tmp_path / "missing")
