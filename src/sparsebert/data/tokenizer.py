"""`sparsebert tokenizer`: a BERT WordPiece tokenizer trained on the corpus, or a named pretrained one.

Either way the output is a Hugging Face tokenizer directory that `BertTokenizerFast.from_pretrained(out)`
loads. Trained vocabularies put [PAD] at id 0, as BERT's do (the examples step pads with the tokenizer's pad id),
and use BERT's normalizer (clean text, split CJK, optional lowercase + accent stripping), pre-tokenizer,
post-processor and decoder.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from sparsebert import recipes
from sparsebert.data.corpus import read_corpus
from sparsebert.io import UserError, atomic_dir, atomic_write_json, load_params

log = logging.getLogger(__name__)

DEFAULTS = recipes.defaults("tokenizer")  # keys and meaning: workflow/schemas/config.schema.yaml
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] first: id 0


def corpus_sentences(corpus_dir: str | os.PathLike) -> Iterator[str]:
    for document in tqdm(read_corpus(corpus_dir), desc="tokenizer: reading corpus", unit="doc", mininterval=2):
        yield from document


def train_wordpiece(sentences: Iterator[str], vocab_size: int, lowercase: bool, min_frequency: int):
    """Train a BERT-style WordPiece tokenizer; return it wrapped as a transformers BertTokenizerFast.

    The "##" continuation prefix and the [UNK] token are the tokenizers library's WordPiece defaults; the
    normalizer strips accents exactly when it lowercases (BERT's uncased models)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    tokenizer = Tokenizer(models.WordPiece())
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator(sentences, trainer)
    # The trainer numbers its "##" alphabet in hash-map order, which changes from run to run (and through
    # merge tie-breaks can even swap a rare token; huggingface/tokenizers#1794). WordPiece matches the
    # longest token whatever its id, so renumbering (specials first, then sorted) makes equal vocabularies
    # equal files; the tokenizer directory is an output to keep (DVC), not something to retrain and expect
    # bit-identical.
    learned = sorted(set(tokenizer.get_vocab()) - set(SPECIAL_TOKENS))
    tokenizer.model = models.WordPiece({token: i for i, token in enumerate(SPECIAL_TOKENS + learned)})
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    # transformers 5's BertTokenizerFast sets this post-processor itself; 4.x (which pyproject allows) does not.
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    # do_lower_case is saved in tokenizer_config.json, and a reload applies it over the normalizer above.
    return BertTokenizerFast(tokenizer_object=tokenizer, do_lower_case=lowercase)


def save_vocab_txt(tokenizer, path: Path) -> None:
    """vocab.txt (one token per line, by id): what BERT's original code and slow tokenizers read."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    path.write_text("".join(token + "\n" for token, _ in vocab), encoding="utf-8")


def load_tokenizer(path: str | os.PathLike):
    """Load a tokenizer directory written by this step, or fail with a UserError naming it."""
    from transformers import BertTokenizerFast

    path = Path(path)
    if not (path / "tokenizer.json").is_file() and not (path / "vocab.txt").is_file():
        raise UserError(f"tokenizer directory not found or incomplete: {path} (run `sparsebert tokenizer` first)")
    try:
        return BertTokenizerFast.from_pretrained(str(path))
    except Exception as e:
        raise UserError(f"{path}: could not load tokenizer: {type(e).__name__}: {e}") from None


def build_tokenizer(corpus: str | os.PathLike | None, params: dict, out: str | os.PathLike) -> dict:
    params = recipes.fill("tokenizer", params)  # before anything is written
    start = time.time()
    if params["pretrained"]:
        from transformers import BertTokenizerFast

        try:  # a hub name (bert-base-uncased, the paper's) or a local tokenizer directory
            tokenizer = BertTokenizerFast.from_pretrained(str(params["pretrained"]))
        except Exception as e:
            raise UserError(f"could not load pretrained tokenizer {params['pretrained']!r}: {type(e).__name__}: {e}") from None
        cased = not getattr(tokenizer, "do_lower_case", True)
        if cased == bool(params["lowercase"]):  # stats.json would record a casing the tokenizer does not apply
            raise UserError(f"tokenizer.pretrained {params['pretrained']!r} is {'cased' if cased else 'uncased'}, but "
                            f"tokenizer.lowercase is {params['lowercase']}: set tokenizer.lowercase: {not cased}")
    else:
        if corpus is None:
            raise UserError("--corpus is required to train a tokenizer (or set params.pretrained)")
        tokenizer = train_wordpiece(corpus_sentences(corpus), int(params["vocab_size"]), bool(params["lowercase"]),
                                    int(params["min_frequency"]))
    if tokenizer.pad_token_id is None or tokenizer.mask_token_id is None:
        raise UserError(f"tokenizer {params['pretrained'] or out} lacks a [PAD] or [MASK] token")
    stats = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, "params": params}
    with atomic_dir(out) as tmp:
        tokenizer.save_pretrained(str(tmp))  # tokenizer.json + tokenizer_config.json
        save_vocab_txt(tokenizer, tmp / "vocab.txt")
        atomic_write_json(tmp / "stats.json", stats)
    log.info("tokenizer: vocab %d (%s) in %.0f s -> %s", stats["vocab_size"],
             params["pretrained"] or "WordPiece trained on the corpus", time.time() - start, out)
    return stats


def add_arguments(parser) -> None:
    parser.add_argument("--corpus", help="corpus directory from `sparsebert corpus` (not needed with params.pretrained)")
    parser.add_argument("--params", help="JSON/YAML mapping or file: vocab_size, lowercase, pretrained, min_frequency")
    parser.add_argument("--out", required=True, help="output tokenizer directory, e.g. data/tokenizer")


def run(args) -> None:
    build_tokenizer(args.corpus, load_params(args.params), args.out)
