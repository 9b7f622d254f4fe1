"""`sparsebert proxy-tasks`: PROXY downstream tasks built from the embedded corpus, one per task shape.

These are not GLUE / SQuAD / SWAG. They exist so that every fine-tuning head, featurization path and metric
runs for real offline; their names start with `proxy_` and their cards say "proxy" wherever they appear.

Each task must be learnable by the default's tiny pretrained model and not by a constant prediction. The
learning curves (docs/cpu_default.md, benchmarks/learning_curves.py) show why that rules out classes that differ only in
word order: the default's dense model predicts masked words about as well with its positions shuffled (a bag
of context words). So the tasks rest on what MLM + NSP pretraining does teach a small model, which words and
topics belong together; each card reports the chance level and a bag-of-words baseline (logistic / ridge
regression on word counts of each segment plus their overlap) on the dev set:

  proxy_single      CoLA-shaped  intact sentence (1) vs the same sentence with a third of its words (at least
                                 two) replaced by words of random corpus sentences (0): both classes have the
                                 corpus's word distribution; what differs is whether the words fit together
  proxy_pair        MNLI-shaped  sentence2 is the next sentence / elsewhere in the same document / another document
  proxy_regression  STS-B-shaped sentence2 = sentence1 after random swaps and replacements;
                                 score = 5 x fraction of sentence1's word bigrams kept
  proxy_qa          SQuAD v2-shaped  the passage is two sentences of two documents; the question is four words of
                                 one of them (in random order): the answer is that whole sentence. A third of the
                                 questions (SQuAD v2.0's train share) take their words from a third document:
                                 unanswerable
  proxy_choice      SWAG-shaped  the true ending of the next sentence vs the endings of sentences of three
                                 other documents (cut after the same number of words)

Dev examples come from held-out documents only; everything is deterministic given `seed`. Each task is
written in the original file format of its shape (GLUE TSV, SQuAD v2.0 JSON, SWAG CSV) with a card.json,
so it loads through the same `load_task(name, {"path": ...})` code as the real benchmarks.
"""

from __future__ import annotations

import argparse
import collections
import logging
import random
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.multiclass import OneVsRestClassifier

from sparsebert import metrics, recipes
from sparsebert.data import formats
from sparsebert.data.formats import load_task
from sparsebert.data.tasks import TASKS
from sparsebert.io import UserError, atomic_dir, atomic_write_json, load_params

log = logging.getLogger(__name__)

# Keys, defaults and their meaning: the `proxy_tasks` definition in workflow/schemas/config.schema.yaml.
DEFAULTS = recipes.defaults("proxy_tasks")
PROXY_TASKS = ("proxy_single", "proxy_pair", "proxy_regression", "proxy_qa", "proxy_choice")

Documents = list[list[str]]  # documents -> sentences


# ------------------------------------------------------------------------------------------ corpus split


def split_documents(documents: Documents, dev_fraction: float, seed: int) -> tuple[Documents, Documents]:
    """Shuffle documents (by seed) and hold out whole ones until they hold `dev_fraction` of the sentences."""
    if len(documents) < 2:
        raise UserError(f"the corpus has {len(documents)} document(s); proxy tasks need >= 2 (train and dev)")
    order = list(range(len(documents)))
    random.Random(f"{seed}-split").shuffle(order)
    total = sum(map(len, documents))
    dev, held = [], 0
    for i in order[:-1]:  # at least one training document
        if held >= dev_fraction * total:
            break
        dev.append(i)
        held += len(documents[i])
    dev_set = set(dev)
    return [d for i, d in enumerate(documents) if i not in dev_set], [documents[i] for i in dev]


QUESTION_WORDS = 4  # proxy_qa: a question is this many words of its sentence
CHOICE_CUTS = (2, 3)  # proxy_choice: sent2 is the next sentence's first 2 or 3 words, the ending the rest,
ENDING_WORDS = 3  # at least this many words (the distractors' endings too)


def _fits(sentence: str, p: dict) -> bool:
    return p["min_words"] <= len(sentence.split()) <= p["max_words"]


def impossible_settings(p: dict, names: list[str]) -> list[tuple[str, str, list[str]]]:
    """(key, why, the tasks of `names` it hits) for each word limit of `p` that no sentence can meet: each maker
    would reject every draw and the job fail late, as if the corpus were too small (config validation asks)."""
    low, high, qa_words = p["min_words"], p["max_words"], p["qa_context_words"]
    proxies, found = [t for t in names if t in PROXY_TASKS], []
    if low > high and proxies:
        return [("proxy_tasks.min_words", f"{low} > proxy_tasks.max_words {high}: no sentence fits", proxies)]
    if "proxy_qa" in names:
        shortest = max(low, QUESTION_WORDS)
        if high < QUESTION_WORDS:
            found.append(("proxy_tasks.max_words", f"{high} < {QUESTION_WORDS}: a question takes {QUESTION_WORDS} "
                                                   f"words of a sentence", ["proxy_qa"]))
        elif qa_words < 2 * shortest:
            found.append(("proxy_tasks.qa_context_words", f"{qa_words} < 2 x {shortest}: no passage of two sentences "
                                                          f"of at least {shortest} words fits", ["proxy_qa"]))
    if "proxy_choice" in names and high < CHOICE_CUTS[0] + ENDING_WORDS:
        found.append(("proxy_tasks.max_words", f"{high} < {CHOICE_CUTS[0] + ENDING_WORDS}: a next sentence holds "
                                               f"{CHOICE_CUTS[0]}-{CHOICE_CUTS[1]} opening words and an ending of at "
                                               f"least {ENDING_WORDS}", ["proxy_choice"]))
    return found


def _sample_until(rng: random.Random, n: int, make, what: str) -> list[dict]:
    """Call make(rng) until n examples (None = this draw failed); give up when under 2% of draws succeed."""
    rows, tries = [], 0
    while len(rows) < n:
        tries += 1
        if tries >= 1000 and 50 * len(rows) < tries:
            raise UserError(f"{what}: the corpus is too small for {n} examples (got {len(rows)}); "
                            f"lower train_examples/dev_examples or use a bigger corpus")  # fmt: skip
        row = make(rng)
        if row is not None:
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ the tasks


def make_single(rng: random.Random, docs: Documents, p: dict) -> dict | None:
    sentence = rng.choice(rng.choice(docs))
    if not _fits(sentence, p):
        return None
    if rng.random() < 0.5:
        return {"sentence": sentence, "label": 1}
    words = sentence.split()
    corrupted = list(words)
    for i in rng.sample(range(len(words)), max(2, len(words) // 3)):
        corrupted[i] = rng.choice(rng.choice(rng.choice(docs)).split())  # a word drawn as the corpus uses them
    if [w.lower() for w in corrupted] == [w.lower() for w in words]:
        return None  # the draws changed nothing
    return {"sentence": " ".join(corrupted), "label": 0}


def make_pair(rng: random.Random, docs: Documents, p: dict) -> dict | None:
    doc = rng.choice(docs)
    if len(doc) < 4:
        return None
    i = rng.randrange(len(doc) - 1)
    label = rng.randrange(3)  # next, same_document, other_document
    if label == 0:
        second = doc[i + 1]
    elif label == 1:
        far = [j for j in range(len(doc)) if abs(j - i) >= 2]
        second = doc[rng.choice(far)]
    else:
        other = rng.choice(docs)
        if other is doc:
            return None
        second = rng.choice(other)
    if not (_fits(doc[i], p) and _fits(second, p)):
        return None
    return {"sentence1": doc[i], "sentence2": second, "label": label}


def bigram_overlap(original: list[str], corrupted: list[str]) -> float:
    """Fraction of `original`'s word bigrams (with multiplicity) still present in `corrupted`."""
    before = list(zip(original, original[1:]))
    after = list(zip(corrupted, corrupted[1:]))
    kept = sum((collections.Counter(before) & collections.Counter(after)).values())
    return kept / len(before)


def make_regression(rng: random.Random, docs: Documents, p: dict) -> dict | None:
    sentence = rng.choice(rng.choice(docs))
    if not _fits(sentence, p):
        return None
    words = sentence.split()
    corrupted = list(words)
    for _ in range(rng.randrange(6)):  # 0-5 edits: word swaps (invisible to BoW) or replacements
        if rng.random() < 0.5:
            i, j = rng.sample(range(len(corrupted)), 2)
            corrupted[i], corrupted[j] = corrupted[j], corrupted[i]
        else:
            corrupted[rng.randrange(len(corrupted))] = rng.choice(rng.choice(rng.choice(docs)).split())
    score = round(5 * bigram_overlap(words, corrupted), 3)
    return {"sentence1": sentence, "sentence2": " ".join(corrupted), "label": score}


def make_qa(rng: random.Random, docs: Documents, p: dict) -> dict | None:
    if len(docs) < 3:
        return None  # _sample_until then says the corpus is too small
    picked = rng.sample(range(len(docs)), 3)
    usable = [[s for s in docs[d] if _fits(s, p) and len(s.split()) >= QUESTION_WORDS] for d in picked]
    if not all(usable):
        return None
    first, second, elsewhere = (rng.choice(sentences) for sentences in usable)
    context = f"{first} {second}"
    if len(context.split()) > p["qa_context_words"]:
        return None
    row = {"title": f"proxy documents {picked[0]} and {picked[1]}", "context": context}
    if rng.random() < 1 / 3:
        return {**row, "question": _question(rng, elsewhere), "answers": {"text": [], "answer_start": []}}
    answer, start = (first, 0) if rng.random() < 0.5 else (second, len(first) + 1)
    return {**row, "question": _question(rng, answer), "answers": {"text": [answer], "answer_start": [start]}}


def _question(rng: random.Random, sentence: str) -> str:
    return f"Which sentence has: {' '.join(rng.sample(sentence.split(), QUESTION_WORDS))}?"


def make_choice(rng: random.Random, docs: Documents, p: dict) -> dict | None:
    d = rng.randrange(len(docs))
    doc = docs[d]
    if len(doc) < 2:
        return None
    i = rng.randrange(len(doc) - 1)
    context, following = doc[i], doc[i + 1].split()
    cut = rng.randint(*CHOICE_CUTS)  # sent2 = the first words of the next sentence; the ending completes it
    if not _fits(context, p) or not cut + ENDING_WORDS <= len(following) <= p["max_words"]:
        return None
    endings = [following[cut:]]
    for _ in range(3):  # distractors: sentences of other documents, cut the same way
        other = rng.choice(docs)
        cuts = [s.split()[cut:] for s in other]
        cuts = [e for e in cuts if ENDING_WORDS <= len(e) <= p["max_words"]]
        if other is doc or not cuts:
            return None
        endings.append(rng.choice(cuts))
    order = list(range(4))
    rng.shuffle(order)
    row = {"video-id": f"proxy-{d}", "fold-ind": str(i), "sent1": context,
           "sent2": " ".join(following[:cut]), "gold-source": "gold", "label": order.index(0)}  # fmt: skip
    row["startphrase"] = f"{row['sent1']} {row['sent2']}"
    row.update({f"ending{k}": " ".join(endings[order[k]]) for k in range(4)})
    return row


MAKERS = {"proxy_single": make_single, "proxy_pair": make_pair, "proxy_regression": make_regression,
          "proxy_qa": make_qa, "proxy_choice": make_choice}  # fmt: skip


def make_task(name: str, train_docs: Documents, dev_docs: Documents, p: dict) -> dict[str, list[dict]]:
    """Hub-schema rows for the train and dev split of proxy task `name`, deterministic in p["seed"]."""
    make = MAKERS[name]
    splits = {}
    for split, docs, n in (("train", train_docs, p["train_examples"]), ("validation", dev_docs, p["dev_examples"])):
        rng = random.Random(f"{p['seed']}-{name}-{split}")
        rows = _sample_until(rng, n, lambda r: make(r, docs, p), f"{name} {split}")
        if name == "proxy_qa":
            for k, row in enumerate(rows):
                row["id"] = f"{name}-{split}-{k:06d}"
        splits[split] = rows
    return splits


# ------------------------------------------------------------------------------------------ baselines


BOW_METHOD = ("logistic regression (ridge for proxy_regression) on the word counts of each segment plus "
              "shared-word indicators, trained on train, scored on dev; proxy_qa: answerable-or-not only, "
              "since a bag of words cannot point at a span")


def _segments(vectorizer: CountVectorizer, first: list[str], second: list[str] | None = None):
    """Bag-of-words features: counts of each segment and, for pairs, which words they share."""
    a = vectorizer.transform(first)
    if second is None:
        return a
    b = vectorizer.transform(second)
    return sparse.hstack([a, b, (a.multiply(b) > 0).astype(np.float64)]).tocsr()


def logistic_regression() -> OneVsRestClassifier:
    # liblinear one-vs-rest: seconds on 4000 sparse count vectors where lbfgs multinomial takes ~30 s
    return OneVsRestClassifier(LogisticRegression(solver="liblinear"))


def _majority(labels: list) -> float:
    return max(labels.count(c) for c in set(labels)) / len(labels)


def bow_baseline(name: str, train: list[dict], dev: list[dict]) -> tuple[dict, dict]:
    """(chance level, bag-of-words baseline) on the dev split, named like the task's metrics."""
    if name == "proxy_qa":
        return _qa_baseline(train, dev)
    if name == "proxy_choice":
        return _choice_baseline(train, dev)
    fields = TASKS[name].text_fields
    vectorizer = CountVectorizer().fit([r[f] for r in train for f in fields])
    x = lambda rows: _segments(vectorizer, *([r[f] for r in rows] for f in fields))  # noqa: E731
    y_train, gold = [r["label"] for r in train], [r["label"] for r in dev]
    if name == "proxy_regression":
        pred = Ridge().fit(x(train), y_train).predict(x(dev))  # alpha 1
        return {"pearson": 0.0, "spearmanr": 0.0}, metrics.glue_regression(pred, gold)
    pred = logistic_regression().fit(x(train), y_train).predict(x(dev))
    chance = {"accuracy": _majority(gold)}
    bow = {"accuracy": metrics.accuracy(pred, gold)}
    if name == "proxy_single":
        chance["matthews_correlation"] = 0.0
        bow["matthews_correlation"] = metrics.matthews_correlation(pred, gold)
    return chance, bow


def _qa_baseline(train: list[dict], dev: list[dict]) -> tuple[dict, dict]:
    """A bag of words cannot point at a span; what it can try is to tell answerable from unanswerable."""
    vectorizer = CountVectorizer(token_pattern=r"\S+").fit([r[f] for r in train for f in ("question", "context")])
    x = lambda rows: _segments(vectorizer, [r["question"] for r in rows], [r["context"] for r in rows])  # noqa: E731
    has_answer = lambda rows: [int(bool(r["answers"]["text"])) for r in rows]  # noqa: E731
    classifier = logistic_regression().fit(x(train), has_answer(train))
    gold = has_answer(dev)
    # Chance for SQuAD-style scoring: always answer "no answer" (exact = f1 = share of unanswerable questions).
    references = {r["id"]: r["answers"]["text"] for r in dev}
    always_null = metrics.squad_v2({qid: "" for qid in references}, references)
    chance = {"exact": always_null["exact"], "f1": always_null["f1"],
              "has_answer_accuracy": _majority(gold)}
    return chance, {"has_answer_accuracy": metrics.accuracy(classifier.predict(x(dev)), gold)}


def _choice_baseline(train: list[dict], dev: list[dict]) -> tuple[dict, dict]:
    """Score each (context, ending) with a logistic regression on ending counts + context overlap; argmax."""
    context = lambda r: f"{r['sent1']} {r['sent2']}"  # noqa: E731
    vectorizer = CountVectorizer().fit([context(r) for r in train] + [r[f"ending{k}"] for r in train for k in range(4)])

    def x(rows):
        ctx = [context(r) for r in rows for _ in range(4)]
        endings = [r[f"ending{k}"] for r in rows for k in range(4)]
        b, a = vectorizer.transform(endings), vectorizer.transform(ctx)
        return sparse.hstack([b, (a.multiply(b) > 0).astype(np.float64)]).tocsr()

    is_gold = [int(k == r["label"]) for r in train for k in range(4)]
    classifier = logistic_regression().fit(x(train), is_gold)
    scores = classifier.decision_function(x(dev)).reshape(-1, 4)
    return {"accuracy": 0.25}, {"accuracy": metrics.accuracy(scores.argmax(1), [r["label"] for r in dev])}


# ------------------------------------------------------------------------------------------ writing


def write_task(name: str, splits: dict[str, list[dict]], folder: Path) -> None:
    """Write the rows of each split in the original format of the task's shape."""
    spec = TASKS[name]
    for split, filename in spec.files:
        path = folder / filename
        if spec.file_format == "glue_tsv":
            formats.write_glue_tsv(spec, path, splits[split])
        elif spec.file_format == "squad_json":
            formats.write_squad_json(path, splits[split])  # SQuAD v2.0, the default: with is_impossible
        else:
            formats.write_swag_csv(path, splits[split])


def build_proxy_tasks(documents: Documents, params: dict, out, names=PROXY_TASKS) -> dict[str, dict]:
    """Build, write (atomically, one folder per task) and describe the proxy tasks; return their cards."""
    p = recipes.fill("proxy_tasks", params)  # a UserError for a bad key or value, before anything is written
    train_docs, dev_docs = split_documents(documents, p["dev_fraction"], p["seed"])
    cards = {}
    for name in names:
        splits = make_task(name, train_docs, dev_docs, p)
        chance, bow = bow_baseline(name, splits["train"], splits["validation"])
        spec = TASKS[name]
        card = {
            "name": name, "proxy": True, "description": spec.description, "kind": spec.kind,
            "file_format": spec.file_format, "files": dict(spec.files),
            "sizes": {split: len(rows) for split, rows in splits.items()},
            "documents": {"train": len(train_docs), "validation": len(dev_docs)},
            "metrics": list(spec.metrics), "main_metric": spec.main_metric,
            "chance": chance, "bow_baseline": bow, "bow_baseline_method": BOW_METHOD, "params": p,
        }  # fmt: skip
        with atomic_dir(Path(out) / name) as tmp:
            write_task(name, splits, tmp)
            load_task(name, {"path": str(tmp)})  # prove it reads back through the benchmarks' code path
            atomic_write_json(tmp / "card.json", card)
        log.info("%s (PROXY): %s; chance %s; bag-of-words %s", name, card["sizes"], _fmt(chance), _fmt(bow))
        cards[name] = card
    return cards


def _fmt(scores: dict) -> str:
    return ", ".join(f"{k}={v:.3f}" for k, v in scores.items())


# ------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="corpus directory written by `sparsebert corpus`")
    parser.add_argument("--params", help=f"JSON/YAML mapping or file; keys and defaults: {DEFAULTS}")
    parser.add_argument("--out", required=True, help="tasks directory, e.g. data/tasks (one folder per task)")
    parser.add_argument("--tasks", nargs="+", default=list(PROXY_TASKS), choices=PROXY_TASKS)


def run(args) -> None:
    from sparsebert.data.corpus import read_corpus

    params = recipes.fill("proxy_tasks", load_params(args.params))  # before the corpus is read
    build_proxy_tasks(list(read_corpus(args.corpus)), params, args.out, args.tasks)
