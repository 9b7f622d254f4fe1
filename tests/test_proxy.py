"""Proxy tasks: deterministic, held-out dev documents, original formats, baselines between chance and 100%."""

import json
import random

import pytest

from sparsebert import recipes
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


@pytest.fixture
def built(tmp_path):
    # Built per test (0.2 s), not once per module: mutmut credits a module-scoped fixture's calls to the first test.
    corpus = write_corpus(tmp_path / "corpus", tiny_documents())
    out = tmp_path / "tasks"
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
    squad = json.loads((out / "proxy_qa" / "dev-v2.0.json").read_text())
    qas = [qa for article in squad["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]]
    assert squad["version"] == "v2.0" and all(qa["is_impossible"] == (not qa["answers"]) for qa in qas)
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
    assert sorted(p.name for p in again.iterdir()) == ["proxy_qa", "proxy_single"]
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
    # 4 documents of 5 sentences: dev_fraction 0.2 holds out one, and a proxy_qa row takes three
    with pytest.raises(UserError, match=r"^proxy_qa validation: the corpus is too small for 80 examples \(got 0\)"):
        proxy.build_proxy_tasks(tiny_documents(n_docs=4, n_sentences=5), PARAMS, tmp_path / "o", ["proxy_qa"])
    assert not (tmp_path / "o").exists()
    with pytest.raises(UserError, match=r"^the corpus has 1 document\(s\); proxy tasks need >= 2 \(train and dev\)$"):
        proxy.split_documents(tiny_documents(n_docs=1), 0.1, 0)


@pytest.mark.parametrize("n_docs, dev_fraction, dev_docs", [
    (4, 0.25, 1),  # 5 of 20 sentences reach 0.25 exactly: one document
    (4, 0.3, 2),  # 5 < 6: a second one
    (2, 0.9, 1),  # at least one training document stays
    (2, 0.0, 0),
])  # fmt: skip
def test_dev_documents_are_held_out_whole_until_they_reach_the_fraction(n_docs, dev_fraction, dev_docs):
    documents = tiny_documents(n_docs=n_docs, n_sentences=5)
    train, dev = proxy.split_documents(documents, dev_fraction, seed=0)
    assert (len(train), len(dev)) == (n_docs - dev_docs, dev_docs)
    assert sorted(map(tuple, train + dev)) == sorted(map(tuple, documents))


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


def test_each_card_records_the_task_its_files_documents_params_and_which_scores(built):
    _, out = built
    # 40 documents of 12 sentences: dev_fraction 0.2 holds out whole documents until 96 sentences, i.e. 8 of them.
    expected = {  # kind, file format, metrics, main metric
        "proxy_single": ("classification", "glue_tsv", ["matthews_correlation", "accuracy"], "matthews_correlation"),
        "proxy_pair": ("classification", "glue_tsv", ["accuracy"], "accuracy"),
        "proxy_regression": ("regression", "glue_tsv", ["pearson", "spearmanr", "combined_score"], "combined_score"),
        "proxy_qa": ("span", "squad_json", ["exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1"],
                     "f1"),
        "proxy_choice": ("multiple_choice", "swag_csv", ["accuracy"], "accuracy"),
    }
    files = {"glue_tsv": {"train": "train.tsv", "validation": "dev.tsv"},
             "squad_json": {"train": "train-v2.0.json", "validation": "dev-v2.0.json"},
             "swag_csv": {"train": "train.csv", "validation": "val.csv"}}
    scores = {"proxy_single": ({"accuracy", "matthews_correlation"},) * 2, "proxy_pair": ({"accuracy"},) * 2,
              "proxy_regression": ({"pearson", "spearmanr"}, {"pearson", "spearmanr", "combined_score"}),
              "proxy_qa": ({"exact", "f1", "has_answer_accuracy"}, {"has_answer_accuracy"}),
              "proxy_choice": ({"accuracy"},) * 2}  # (chance, bag of words)
    for name, (kind, file_format, metric_names, main_metric) in expected.items():
        card = json.loads((out / name / "card.json").read_text())
        assert {k: v for k, v in card.items() if k not in ("chance", "bow_baseline")} == {
            "name": name, "proxy": True, "description": get_task(name).description, "kind": kind,
            "file_format": file_format, "files": files[file_format], "sizes": {"train": 240, "validation": 80},
            "documents": {"train": 32, "validation": 8}, "metrics": metric_names, "main_metric": main_metric,
            "bow_baseline_method": proxy.BOW_METHOD,
            "params": {**recipes.defaults("proxy_tasks"), **PARAMS},
        }, name  # fmt: skip
        assert (set(card["chance"]), set(card["bow_baseline"])) == scores[name], name
    regression = json.loads((out / "proxy_regression" / "card.json").read_text())
    assert regression["chance"] == {"pearson": 0.0, "spearmanr": 0.0}
    assert json.loads((out / "proxy_choice" / "card.json").read_text())["chance"] == {"accuracy": 0.25}
    assert json.loads((out / "proxy_single" / "card.json").read_text())["chance"]["matthews_correlation"] == 0.0


def test_the_log_line_gives_sizes_chance_and_the_bag_of_words_score(tmp_path, caplog):
    with caplog.at_level("INFO", logger="sparsebert.data.proxy"):
        cards = proxy.build_proxy_tasks(tiny_documents(), PARAMS, tmp_path, ["proxy_choice", "proxy_single"])
    choice, single = cards["proxy_choice"]["bow_baseline"], cards["proxy_single"]
    assert caplog.messages == [
        f"proxy_choice (PROXY): {{'train': 240, 'validation': 80}}; chance accuracy=0.250; bag-of-words "
        f"accuracy={choice['accuracy']:.3f}",
        f"proxy_single (PROXY): {{'train': 240, 'validation': 80}}; chance accuracy="
        f"{single['chance']['accuracy']:.3f}, matthews_correlation=0.000; bag-of-words accuracy="
        f"{single['bow_baseline']['accuracy']:.3f}, matthews_correlation="
        f"{single['bow_baseline']['matthews_correlation']:.3f}",
    ]


def test_a_sentence_fits_from_min_words_to_max_words_inclusive():
    p = {"min_words": 3, "max_words": 5}
    assert [proxy._fits(" ".join("w" * n), p) for n in range(2, 7)] == [False, True, True, True, False]


@pytest.mark.parametrize("successes, calls", [(0, 999), (20, 1000)])
def test_sampling_gives_up_once_under_2_percent_of_at_least_1000_draws_succeed(successes, calls):
    # The check before draw t (from 1000 on): give up when 50 x rows < t. With 20 rows, t = 1000 passes
    # (1000 < 1000 is false) and t = 1001 gives up: 1,000 draws.
    made = []

    def make(rng):
        made.append(rng)
        return {} if len(made) <= successes else None

    with pytest.raises(UserError) as error:
        proxy._sample_until(random.Random(0), successes + 1, make, "proxy_x train")
    assert len(made) == calls
    assert str(error.value) == (f"proxy_x train: the corpus is too small for {successes + 1} examples (got "
                                f"{successes}); lower train_examples/dev_examples or use a bigger corpus")
    assert len(proxy._sample_until(random.Random(0), 3, lambda rng: {}, "x")) == 3


def every_length_documents(n_docs=12, longest=20) -> list[list[str]]:
    """Documents holding a sentence of every length 1..longest, the lengths in a per-document order."""
    rng = random.Random(1)
    documents = []
    for d in range(n_docs):
        lengths = rng.sample(range(1, longest + 1), longest)
        documents.append([" ".join(f"d{d}s{k}w{i}" for i in range(n)) for k, n in enumerate(lengths)])
    return documents


# Word limits at either side of each bound (smoke-like: qa_context_words 28, max_words 14; min_words 6).
LIMITS = [
    {"min_words": 6, "max_words": 14, "qa_context_words": 28},
    {"min_words": 15, "max_words": 14, "qa_context_words": 40},  # min > max
    {"min_words": 14, "max_words": 14, "qa_context_words": 28},  # min = max, a passage of exactly two
    {"min_words": 6, "max_words": 14, "qa_context_words": 11},  # 11 < 2 x 6
    {"min_words": 6, "max_words": 14, "qa_context_words": 12},
    {"min_words": 2, "max_words": 3, "qa_context_words": 28},  # under a question's 4 words; under choice's 5
    {"min_words": 2, "max_words": 4, "qa_context_words": 8},
    {"min_words": 2, "max_words": 5, "qa_context_words": 7},  # 7 < 2 x 4 (the question's words)
    {"min_words": 2, "max_words": 2, "qa_context_words": 28},
]


@pytest.mark.parametrize("limits", LIMITS, ids=lambda p: "{min_words}-{max_words}-{qa_context_words}".format(**p))
def test_the_settings_named_impossible_are_those_no_draw_can_meet(limits):
    # Each maker drawn up to 20,000 times from documents with sentences of every length: it makes no example
    # exactly when config validation names its task (a near miss is met by some draw; a miss by none, nor does it
    # crash). The rarest near miss, proxy_pair at min_words = max_words, succeeds in about 1 draw of 1,300 (two
    # sentences of the one length, of two documents): 15 expected, none with probability e^-15.
    documents, p = every_length_documents(), {**proxy.DEFAULTS, **limits}
    flagged = {task for _, _, tasks in proxy.impossible_settings(p, list(proxy.PROXY_TASKS)) for task in tasks}
    rng = random.Random(0)
    made = {task for task in proxy.PROXY_TASKS
            if any(proxy.MAKERS[task](rng, documents, p) is not None for _ in range(20_000))}
    assert made == set(proxy.PROXY_TASKS) - flagged


def test_the_impossible_settings_name_their_key_and_only_the_run_s_tasks():
    p = {**proxy.DEFAULTS, "min_words": 2, "max_words": 3}
    assert proxy.impossible_settings(p, ["proxy_single", "proxy_qa", "proxy_choice"]) == [
        ("proxy_tasks.max_words", "3 < 4: a question takes 4 words of a sentence", ["proxy_qa"]),
        ("proxy_tasks.max_words", "3 < 5: a next sentence holds 2-3 opening words and an ending of at least 3",
         ["proxy_choice"])]
    assert proxy.impossible_settings(p, ["proxy_single", "proxy_pair"]) == []
    p = {**proxy.DEFAULTS, "min_words": 7, "max_words": 6}
    assert proxy.impossible_settings(p, ["sst2", "proxy_pair", "proxy_qa"]) == [
        ("proxy_tasks.min_words", "7 > proxy_tasks.max_words 6: no sentence fits", ["proxy_pair", "proxy_qa"])]
    assert proxy.impossible_settings(p, ["sst2"]) == []  # no proxy task: nothing to build from the corpus


# Bag-of-words baselines on made-up rows whose answer only the segments' shared words give away: the words of
# each segment alone are drawn alike for every label.
WORDS = [f"w{i}" for i in range(30)]


def _apart(rng: random.Random, k: int, avoid: list[str]) -> list[str]:
    return rng.sample([w for w in WORDS if w not in avoid], k)


def test_pair_baseline_sees_which_words_the_two_sentences_share():
    rng = random.Random(0)
    rows = []
    for _ in range(800):
        first = _apart(rng, 3, [])
        second, label = _apart(rng, 3, first), rng.randrange(2)
        if label:
            second[rng.randrange(3)] = rng.choice(first)
        rows.append({"sentence1": " ".join(first), "sentence2": " ".join(second), "label": label})
    chance, bow = proxy.bow_baseline("proxy_pair", rows[:600], rows[600:])
    assert chance["accuracy"] == max(sum(r["label"] for r in rows[600:]), sum(1 - r["label"] for r in rows[600:])) / 200
    assert bow["accuracy"] > 0.9


def test_qa_baseline_tells_answerable_questions_by_the_words_they_share_with_the_passage():
    rng = random.Random(1)
    rows = []
    for k in range(800):
        context = _apart(rng, 6, [])
        answerable = rng.random() < 0.5
        question = rng.sample(context, 2) if answerable else _apart(rng, 2, context)
        answers = {"text": [context[0]], "answer_start": [0]} if answerable else {"text": [], "answer_start": []}
        rows.append({"id": str(k), "question": " ".join(question), "context": " ".join(context), "answers": answers})
    chance, bow = proxy.bow_baseline("proxy_qa", rows[:600], rows[600:])
    unanswerable = sum(not r["answers"]["text"] for r in rows[600:]) / 200
    assert chance == {"exact": 100 * unanswerable, "f1": 100 * unanswerable,
                      "has_answer_accuracy": max(unanswerable, 1 - unanswerable)}
    assert set(bow) == {"has_answer_accuracy"} and bow["has_answer_accuracy"] > 0.9


def test_choice_baseline_picks_the_ending_that_shares_words_with_the_context():
    rng = random.Random(2)
    rows = []
    for k in range(400):
        context = _apart(rng, 4, [])
        endings = [_apart(rng, 3, context) for _ in range(4)]
        label = rng.randrange(4)
        endings[label][rng.randrange(3)] = rng.choice(context)
        rows.append({"sent1": " ".join(context[:2]), "sent2": " ".join(context[2:]), "label": label,
                     **{f"ending{i}": " ".join(e) for i, e in enumerate(endings)}})
    chance, bow = proxy.bow_baseline("proxy_choice", rows[:300], rows[300:])
    assert chance == {"accuracy": 0.25} and bow["accuracy"] > 0.9


@pytest.mark.parametrize("args, message", [
    (["--out", "o"], "the following arguments are required: --corpus"),
    (["--corpus", "c"], "the following arguments are required: --out"),
    (["--corpus", "c", "--out", "o", "--tasks", "cola"], "argument --tasks: invalid choice: 'cola'"),
])  # fmt: skip
def test_the_cli_needs_a_corpus_an_output_and_proxy_task_names(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["proxy-tasks", *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
