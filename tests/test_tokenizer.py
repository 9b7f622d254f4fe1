"""Tokenizer step: a WordPiece trained on a tiny corpus round-trips through BertTokenizerFast."""

import json
import re

import pytest
from transformers import BertTokenizerFast

from sparsebert.cli import main
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


@pytest.fixture
def trained(corpus_dir, tmp_path):
    # Built per test, not once per module: mutmut credits a module-scoped fixture's calls to the first test only.
    out = tmp_path / "tokenizer"
    main(["tokenizer", "--corpus", str(corpus_dir), "--params", '{"vocab_size": 200, "min_frequency": 1}',
          "--out", str(out)])
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


def test_a_pretrained_tokenizers_casing_must_be_the_configs(corpus_dir, tmp_path):
    """A cased tokenizer under the schema's lowercase: true ran cased while stats.json recorded lowercase (and the
    other way round); each is one error naming both. The matching setting loads, and the tokenizer is cased."""
    cased = tmp_path / "cased"
    tokenizer.build_tokenizer(corpus_dir, {"vocab_size": 200, "min_frequency": 1, "lowercase": False}, cased)
    with pytest.raises(UserError, match=rf"^tokenizer.pretrained '{re.escape(str(cased))}' is cased, but "
                                        r"tokenizer.lowercase is True: set tokenizer.lowercase: False$"):
        tokenizer.build_tokenizer(None, {"pretrained": str(cased)}, tmp_path / "a")
    uncased = tmp_path / "uncased"
    tokenizer.build_tokenizer(corpus_dir, {"vocab_size": 200, "min_frequency": 1}, uncased)
    with pytest.raises(UserError, match=r"is uncased, but tokenizer.lowercase is False: set tokenizer.lowercase: True$"):
        tokenizer.build_tokenizer(None, {"pretrained": str(uncased), "lowercase": False}, tmp_path / "b")
    stats = tokenizer.build_tokenizer(None, {"pretrained": str(cased), "lowercase": False}, tmp_path / "c")
    assert stats["params"]["lowercase"] is False
    assert BertTokenizerFast.from_pretrained(str(tmp_path / "c")).tokenize("The") == ["The"]  # not "the"


def test_unknown_pretrained_name_is_a_user_error(tmp_path):
    name = str(tmp_path / "no-such-tokenizer")
    message = rf"^could not load pretrained tokenizer '{re.escape(name)}': OSError: Repo id must be"
    with pytest.raises(UserError, match=message):
        tokenizer.build_tokenizer(None, {"pretrained": name}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_corpus_is_a_user_error_and_leaves_no_output(tmp_path):
    with pytest.raises(UserError, match=r"corpus directory not found: .*nowhere"):
        tokenizer.build_tokenizer(tmp_path / "nowhere", {}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_load_tokenizer_names_a_missing_directory(tmp_path):
    with pytest.raises(UserError, match=r"tokenizer directory not found or incomplete: .*missing"):
        tokenizer.load_tokenizer(tmp_path / "missing")


def test_stats_record_the_filled_params_and_the_padding_id(trained):
    stats = json.loads((trained / "stats.json").read_text())
    assert stats["pad_token_id"] == 0
    assert stats["params"] == {"vocab_size": 200, "min_frequency": 1, "lowercase": True, "pretrained": None}


def test_vocabulary_is_the_specials_then_the_learned_tokens_sorted(trained):
    # The trainer numbers tokens in hash-map order; sorted ids make equal vocabularies equal files. (Equal
    # trainings are not tested: merge tie-breaks can still swap a rare token, huggingface/tokenizers#1794.)
    vocab = (trained / "vocab.txt").read_text().splitlines()  # by id
    assert vocab[5:] == sorted(vocab[5:]) and len(set(vocab)) == len(vocab)
    assert json.loads((trained / "tokenizer.json").read_text())["model"]["vocab"] == {t: i for i, t in enumerate(vocab)}


SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Zzqqjj appears once here.", "The fox is quick."]


def test_vocab_size_caps_the_vocabulary_once_the_alphabet_fits():
    # The alphabet here (letters, "##" continuations, punctuation, specials) is 53 tokens: a cap of 80 is reached.
    assert len(tokenizer.train_wordpiece(iter(SENTENCES * 2), 80, True, 1)) == 80
    assert len(tokenizer.train_wordpiece(iter(SENTENCES * 2), 500, True, 1)) < 500


def test_min_frequency_keeps_a_word_seen_once_out_of_the_vocabulary():
    # "zzqqjj" occurs once: none of its letter pairs reaches a count of 2, so it stays in letters.
    once = tokenizer.train_wordpiece(iter(SENTENCES), 500, True, 1)
    twice = tokenizer.train_wordpiece(iter(SENTENCES), 500, True, 2)
    assert once.tokenize("zzqqjj") == ["zzqqjj"]
    assert twice.tokenize("zzqqjj") == ["z", "##z", "##q", "##q", "##j", "##j"]
    assert twice.decode(twice("zzqqjj")["input_ids"], skip_special_tokens=True) == "zzqqjj"  # "##" joins pieces
    assert twice.tokenize("quick") == ["quick"]  # twice in the text


def test_a_cased_vocabulary_keeps_capitals_in_memory_and_after_a_reload(corpus_dir, tmp_path):
    cased = tokenizer.train_wordpiece(iter(SENTENCES * 2), 500, False, 1)
    assert "The" in cased.get_vocab() and "the" in cased.get_vocab()
    assert cased.tokenize("The Quick") == ["The", "[UNK]"]  # no word starts with a capital Q here
    assert cased.decode(cased("The fox")["input_ids"], skip_special_tokens=True) == "The fox"
    tokenizer.build_tokenizer(corpus_dir, {"vocab_size": 200, "min_frequency": 1, "lowercase": False}, tmp_path / "c")
    reloaded = tokenizer.load_tokenizer(tmp_path / "c")
    assert reloaded.tokenize("The fox") == ["The", "fox"] and reloaded.tokenize("the fox") == ["the", "fox"]


def test_save_vocab_txt_writes_one_token_per_line_in_id_order(tmp_path):
    class Vocab:
        def get_vocab(self):
            return {"b": 2, "[PAD]": 0, "##a": 1}

    tokenizer.save_vocab_txt(Vocab(), tmp_path / "vocab.txt")
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8") == "[PAD]\n##a\nb\n"


def test_load_tokenizer_loads_a_directory_and_names_a_broken_one(trained, tmp_path):
    loaded = tokenizer.load_tokenizer(trained)
    assert loaded.get_vocab() == BertTokenizerFast.from_pretrained(str(trained)).get_vocab()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match=rf"^{re.escape(str(broken))}: could not load tokenizer: JSONDecodeError: "):
        tokenizer.load_tokenizer(broken)


@pytest.mark.parametrize("missing", [{"pad_token": None}, {"mask_token": None},
                                     {"pad_token": None, "mask_token": None}])
def test_a_pretrained_tokenizer_without_pad_or_mask_is_refused_and_leaves_no_output(tmp_path, missing):
    source = tmp_path / "no-pad"
    source.mkdir()
    (source / "vocab.txt").write_text("[UNK]\n[CLS]\n[SEP]\n[PAD]\n[MASK]\nhello\n")
    (source / "tokenizer_config.json").write_text(json.dumps(missing))
    with pytest.raises(UserError, match=rf"^tokenizer {re.escape(str(source))} lacks a \[PAD\] or \[MASK\] token$"):
        tokenizer.build_tokenizer(None, {"pretrained": str(source)}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_training_without_a_corpus_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"^--corpus is required to train a tokenizer \(or set params.pretrained\)$"):
        tokenizer.build_tokenizer(None, {}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_log_line_names_the_size_the_source_the_time_and_the_output(corpus_dir, trained, tmp_path, caplog):
    with caplog.at_level("INFO", logger="sparsebert.data.tokenizer"):
        tokenizer.build_tokenizer(corpus_dir, {"vocab_size": 80, "min_frequency": 1}, tmp_path / "t")
        tokenizer.build_tokenizer(None, {"pretrained": str(trained)}, tmp_path / "p")
    size = len(BertTokenizerFast.from_pretrained(str(trained)))
    t, p = (re.escape(str(path)) for path in (tmp_path / "t", tmp_path / "p"))
    expected = [rf"tokenizer: vocab 80 \(WordPiece trained on the corpus\) in \d s -> {t}",
                rf"tokenizer: vocab {size} \({re.escape(str(trained))}\) in \d s -> {p}"]  # under 10 s
    assert len(caplog.messages) == 2
    assert all(re.fullmatch(pattern, line) for pattern, line in zip(expected, caplog.messages)), caplog.messages


def test_the_cli_needs_an_output_directory(corpus_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tokenizer", "--corpus", str(corpus_dir)])
    assert exit_info.value.code == 2 and "the following arguments are required: --out" in capsys.readouterr().err
