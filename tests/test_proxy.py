"""Proxy tasks: deterministic, held-out dev documents, original formats, baselines between chance and 100%."""

import json
import random

import pytest

from sparsebert.cli import main
from sparsebert.data import proxy
from sparsebert.data.formats import load_task
from sparsebert.data.tasks import get_task, hub_features
from sparsebert.io import UserError

PARAMS = {"seed": 3, "train_examples": 240, "dev_examples": 80, "qa_context_words": 30, "dev_fraction": 0.2}


def tiny_documents(n_docs=40, n_sentences=12, seed=0) -> list[list[str]]:
    """Documents of pseudo-sentences: shared function words + a few topic words per document."""
    rng = random.Random(seed)
    common = "the a of and to in he she it was is they said with for on his her that at".split()
    content = [f"{a}{b}" for a in ("ba", "ko", "mi", "tu", "re", "sa", "lo", "ve") for b in ("n", "rt", "x", "l", "m")]
    documents = []
    for _ in range(n_docs):
        topic = rng.sample(content, 8)
        sentences = []
        for _ in range(n_sentences):
            words = [rng.choice(common if rng.random() < 0.5 else topic) for _ in range(rng.randint(8, 16))]
            sentences.append(" ".join(words).capitalize() + ".")
        documents.append(sentences)
    return documents


def write_corpus(folder, documents):
    """The corpus step's output format: shard-*.txt (sentence per line, blank line between documents) + stats."""
    folder.mkdir(parents=True, exist_ok=True)
    halves = {"shard-00000.txt": documents[: len(documents) // 2], "shard-00001.txt": documents[len(documents) // 2 :]}
    for name, docs in halves.items():
        (folder / name).write_text("".join("".join(s + "\n" for s in d) + "\n" for d in docs))
    stats = {n: {"documents": len(d), "sentences": sum(map(len, d))} for n, d in halves.items()}
    (folder / "stats.json").write_text(json.dumps({"shards": stats}))
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    corpus = write_corpus(tmp_path_factory.mktemp("corpus"), tiny_documents())
    out = tmp_path_factory.mktemp("tasks")
    main(["proxy-tasks", "--corpus", str(corpus), "--params", json.dumps(PARAMS), "--out", str(out)])
    return corpus, out


def test_every_shape_is_written_in_its_original_format_and_loads(built):
    _, out = built
    for name in proxy.PROXY_TASKS:
        spec = get_task(name)
        assert sorted(p.name for p in (out / name).iterdir()) == sorted([*dict(spec.files).values(), "card.json"])
        data = load_task(name, {"path": str(out / name)})
        assert {k: len(v) for k, v in data.items()} == {"train": 240, "validation": 80}
        assert all(split.features == hub_features(spec) for split in data.values())
        card = json.loads((out / name / "card.json").read_text())
        assert card["proxy"] is True and card["name"] == name and "PROXY" in card["description"]
    assert {len(set(load_task(n, {"path": str(out / n)})["train"]["label"])) for n in
            ("proxy_single", "proxy_pair", "proxy_choice")} == {2, 3, 4}  # fmt: skip


def test_cards_chance_levels_by_hand_and_baselines_in_range(built):
    _, out = built
    for name in proxy.PROXY_TASKS:
        card = json.loads((out / name / "card.json").read_text())
        dev = load_task(name, {"path": str(out / name)})["validation"]
        if name == "proxy_qa":  # "no answer" everywhere: right on exactly the unanswerable questions
            expected = {"exact": 100 * sum(not a["text"] for a in dev["answers"]) / len(dev)}
        elif name == "proxy_choice":
            expected = {"accuracy": 0.25}
        elif name == "proxy_regression":
            expected = {"pearson": 0.0, "spearmanr": 0.0}
        else:  # the majority class of the dev split
            expected = {"accuracy": max(dev["label"].count(k) for k in set(dev["label"])) / len(dev)}
        for metric, value in expected.items():
            assert card["chance"][metric] == pytest.approx(value), (name, metric)
        for metric, score in card["bow_baseline"].items():
            low = -1.0 if metric in ("matthews_correlation", "pearson", "spearmanr", "combined_score") else 0.0
            assert low <= score <= 1.0, (name, metric, score)


def test_qa_answer_is_the_context_sentence_holding_the_question_words(built):
    documents = tiny_documents()
    dev = load_task("proxy_qa", {"path": str(built[1] / "proxy_qa")})["validation"]
    assert 0.15 < sum(not a["text"] for a in dev["answers"]) / len(dev) < 0.5  # a third expected
    for row in dev:
        words = row["question"].removeprefix("Which sentence has: ").removesuffix("?").split()
        assert len(words) == 4
        # the context: a sentence of one document, a space, a sentence of another
        (d1, first), (d2, second) = [
            next((d, s) for d, doc in enumerate(documents) for s in doc if row["context"].startswith(s + " ")),
            next((d, s) for d, doc in enumerate(documents) for s in doc if row["context"].endswith(" " + s)),
        ]
        assert row["context"] == f"{first} {second}" and d1 != d2
        if row["answers"]["text"]:
            answer, start = row["answers"]["text"][0], row["answers"]["answer_start"][0]
            assert (answer, start) in {(first, 0), (second, len(first) + 1)}
            assert all(w in answer.split() for w in words)
        else:  # four words of one sentence of a third document
            others = [s for d, doc in enumerate(documents) if d not in (d1, d2) for s in doc]
            assert any(all(w in s.split() for w in words) for s in others), row


def test_dev_examples_come_from_held_out_documents(built):
    corpus, out = built
    train_docs, dev_docs = proxy.split_documents(tiny_documents(), PARAMS["dev_fraction"], PARAMS["seed"])
    train_sentences, dev_sentences = {s for d in train_docs for s in d}, {s for d in dev_docs for s in d}
    pair = load_task("proxy_pair", {"path": str(out / "proxy_pair")})
    assert set(pair["validation"]["sentence1"]) <= dev_sentences - train_sentences
    assert set(pair["train"]["sentence1"]) <= train_sentences - dev_sentences
    choice = load_task("proxy_choice", {"path": str(out / "proxy_choice")})
    assert set(choice["validation"]["sent1"]) <= dev_sentences


def test_deterministic_per_seed(built, tmp_path):
    corpus, out = built
    again = tmp_path / "again"
    main(["proxy-tasks", "--corpus", str(corpus), "--params", json.dumps(PARAMS), "--out", str(again),
          "--tasks", "proxy_single", "proxy_qa"])  # fmt: skip
    for name, filename in (("proxy_single", "train.tsv"), ("proxy_qa", "dev-v2.0.json")):
        assert (again / name / filename).read_bytes() == (out / name / filename).read_bytes()
    params = {**proxy.DEFAULTS, **PARAMS, "seed": 4}
    other = proxy.make_task("proxy_single", *proxy.split_documents(tiny_documents(), 0.2, 4), params)
    assert other["train"] != load_task("proxy_single", {"path": str(out / "proxy_single")})["train"].to_list()


def test_bigram_overlap_score():
    words = "a b c d".split()
    assert proxy.bigram_overlap(words, words) == 1.0
    assert proxy.bigram_overlap(words, "b a c d".split()) == pytest.approx(1 / 3)  # only (c, d) survives


def test_bad_params_and_tiny_corpus(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus", tiny_documents(n_docs=4, n_sentences=5))
    with pytest.raises(SystemExit) as exit_info:  # a UserError, printed as one line by the CLI
        main(["proxy-tasks", "--corpus", str(corpus), "--params", '{"sed": 1}', "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "sed" in error[0] and "proxy_tasks" in error[0]  # not argparse's usage message
    assert not (tmp_path / "o").exists()
    with pytest.raises(UserError, match="too small"):  # 5-sentence documents hold no 200-word passage
        proxy.build_proxy_tasks(tiny_documents(n_docs=4, n_sentences=5), {**PARAMS, "qa_context_words": 200},
                                tmp_path / "o", ["proxy_qa"])
    with pytest.raises(UserError, match="need >= 2"):
        proxy.split_documents(tiny_documents(n_docs=1), 0.1, 0)


def test_single_corrupts_a_third_of_the_words_of_a_corpus_sentence(built):
    sentences = {s for d in tiny_documents() for s in d}
    rows = load_task("proxy_single", {"path": str(built[1] / "proxy_single")})["train"]
    for row in rows:
        if row["label"] == 1:
            assert row["sentence"] in sentences
            continue
        words = row["sentence"].split()
        # the original: a corpus sentence of the same length differing in 1..max(2, n // 3) positions (a draw
        # can put back the same word, so fewer than the drawn positions may differ)
        changed = [sum(a != b for a, b in zip(words, s.split())) for s in sentences if len(s.split()) == len(words)]
        assert any(1 <= c <= max(2, len(words) // 3) for c in changed), row
    assert 0.3 < sum(rows["label"]) / len(rows) < 0.7


def test_choice_gold_ending_completes_the_next_sentence_distractors_from_other_documents(built):
    documents = tiny_documents()
    rows = load_task("proxy_choice", {"path": str(built[1] / "proxy_choice")})["validation"]
    for row in rows:
        (doc,) = [d for d in documents if row["sent1"] in d]
        following = doc[doc.index(row["sent1"]) + 1]
        endings = [row[f"ending{k}"] for k in range(4)]
        assert f"{row['sent2']} {endings[row['label']]}" == following
        cut = len(row["sent2"].split())
        for k, ending in enumerate(endings):
            if k != row["label"]:
                sources = [d for d in documents if any(s.split()[cut:] == ending.split() for s in d)]
                assert sources and all(d is not doc for d in sources), (row, ending)


def test_proxy_qa_ceiling_counts_the_shortest_span_some_window_holds():
    """benchmarks/proxy_qa_ceiling.py: a window labelled [CLS] (start 0) holds no answer; of several windows
    holding one, the shortest span counts (spans in tokens: end - start + 1). Example c is held by no window."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from proxy_qa_ceiling import shortest_held_span

    features = {"example_id": ["a", "a", "b", "c", "b"], "start_positions": [0, 5, 3, 0, 10],
                "end_positions": [0, 9, 40, 0, 50]}
    assert dict(shortest_held_span(features)) == {"a": 5, "b": 38}
