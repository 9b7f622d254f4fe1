"""SQuAD sliding windows and span decoding: labels land on the right tokens, decoding returns the exact text."""

import datasets
import numpy as np
import pytest
from _task_files import tiny_tokenizer, write_squad

from sparsebert import metrics
from sparsebert.data.features import context_windows, featurize, max_context_flags
from sparsebert.data.qa import postprocess_predictions
from sparsebert.data.formats import load_task
from sparsebert.data.tasks import get_task, hub_features
from sparsebert.io import UserError

# 40 one-token words (all in the tiny vocabulary); the answer "Rollo swore" is words 11-12.
WORDS = ["the", "normans", "were", "in", "normandy"] * 8
WORDS[11], WORDS[12] = "Rollo", "swore"
CONTEXT = " ".join(WORDS)
ANSWER_START = CONTEXT.index("Rollo swore")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def squad_rows(rows):
    return datasets.Dataset.from_list(rows, features=hub_features(get_task("squad_v2")))


def long_example(answerable=True):
    answers = {"text": ["Rollo swore"] if answerable else [], "answer_start": [ANSWER_START] if answerable else []}
    return {"id": "q1", "title": "t", "context": CONTEXT, "question": "who", "answers": answers}


def windows(tokenizer, answerable=True):
    # max_seq_length 16 - [CLS] who [SEP] ... [SEP] = 12 context tokens per window, starts 8 apart
    return featurize(get_task("squad_v2"), squad_rows([long_example(answerable)]), tokenizer, 16, doc_stride=8)


def test_window_starts_follow_doc_stride():
    assert context_windows(40, 12, 8) == [(0, 12), (8, 20), (16, 28), (24, 36), (32, 40)]
    assert context_windows(5, 12, 8) == [(0, 5)]
    assert context_windows(0, 12, 8) == [(0, 0)]


def test_answer_across_a_window_boundary_is_labelled_in_the_window_that_holds_it(tokenizer):
    features = windows(tokenizer)
    assert features["example_id"] == ["q1"] * 5
    # window 0 holds tokens 0-11: the answer (11-12) crosses its end, so it is labelled [CLS] there
    assert features["start_positions"] == [0, 6, 0, 0, 0]
    assert features["end_positions"] == [0, 7, 0, 0, 0]
    window = features[1]
    offsets = window["offset_mapping"]
    assert offsets[:3] == [None, None, None] and offsets[15] is None  # [CLS] who [SEP] ... [SEP]
    assert CONTEXT[offsets[6][0] : offsets[7][1]] == "Rollo swore"
    assert window["token_type_ids"][:3] == [0, 0, 0] and window["token_type_ids"][3:] == [1] * 13
    assert len(window["input_ids"]) == 16 and all(len(o) == 16 for o in features["offset_mapping"])


def test_unanswerable_questions_point_at_cls(tokenizer):
    features = windows(tokenizer, answerable=False)
    assert set(features["start_positions"]) == set(features["end_positions"]) == {0}


def logits_for(features, spans: dict[int, tuple[int, int, float]]):
    """start/end logits [num_features, L]: -5 everywhere, `score` at (start, end) of the given windows."""
    n, length = len(features), len(features[0]["input_ids"])
    start, end = np.full((n, length), -5.0), np.full((n, length), -5.0)
    for f, (s, e, score) in spans.items():
        start[f, s] = end[f, e] = score
    return start, end


def test_decoding_returns_the_exact_context_text_across_windows(tokenizer):
    features, examples = windows(tokenizer), squad_rows([long_example()])
    start, end = logits_for(features, {1: (6, 7, 5.0)})
    predictions, _ = postprocess_predictions(examples, features, start, end)
    assert predictions == {"q1": "Rollo swore"}  # original case, though the tokenizer lowercases


def test_decoding_skips_invalid_and_too_long_spans(tokenizer):
    features, examples = windows(tokenizer), squad_rows([long_example()])
    start, end = logits_for(features, {1: (6, 7, 2.0), 2: (9, 4, 9.0)})  # window 2: end before start
    start[3, 1], end[3, 1] = 20.0, 20.0  # window 3: a question token, not context
    start[4, 5], end[4, 10] = 8.0, 8.0  # window 4 (tokens 32-39): tokens 34-39, 6 tokens long
    predictions, _ = postprocess_predictions(examples, features, start, end, max_answer_length=3)
    assert predictions == {"q1": "Rollo swore"}
    predictions, _ = postprocess_predictions(examples, features, start, end, max_answer_length=6)
    assert predictions == {"q1": " ".join(WORDS[34:40])}


def test_each_context_token_has_one_max_context_window():
    windows = [(0, 12), (8, 20), (16, 28)]
    flags = max_context_flags(windows)
    assert [len(f) for f in flags] == [12, 12, 12]
    owners = [start + i for w, (start, _) in enumerate(windows) for i, f in enumerate(flags[w]) if f]
    assert sorted(owners) == list(range(28))  # every token, exactly once
    owner = {start + i: w for w, (start, _) in enumerate(windows) for i, f in enumerate(flags[w]) if f}
    # token 9: 9 left / 2 right in window 0 (min 2) vs 1 / 10 in window 1 (min 1) -> window 0
    # token 11: 11 / 0 in window 0 vs 3 / 8 in window 1 -> window 1; token 19: 0 right in window 1 -> window 2
    assert [owner[t] for t in (9, 11, 15, 17, 19)] == [0, 1, 1, 1, 2]
    assert max_context_flags([(0, 5), (2, 7)])[0][3] is True  # token 3: min 1 in both, a tie: the first
    assert max_context_flags([(0, 5)]) == [[True] * 5]


def test_decoding_takes_a_start_token_only_from_its_max_context_window(tokenizer):
    features, examples = windows(tokenizer), squad_rows([long_example()])
    # context token 11 ("Rollo") is the last token of window 0 (position 3 + 11) and well inside window 1
    assert features[0]["token_is_max_context"][14] is False and features[1]["token_is_max_context"][6] is True
    assert features[0]["token_is_max_context"][:3] == [False] * 3  # [CLS] who [SEP]
    start, end = logits_for(features, {0: (14, 14, 9.0), 1: (6, 7, 5.0)})
    predictions, _ = postprocess_predictions(examples, features, start, end)
    assert predictions == {"q1": "Rollo swore"}  # "Rollo" from window 0 scores higher but sits at its edge
    without_flags = {k: features[k] for k in ("example_id", "offset_mapping")}
    predictions, _ = postprocess_predictions(examples, without_flags, start, end)
    assert predictions == {"q1": "Rollo"}


def test_null_answer_rule(tokenizer):
    features, examples = windows(tokenizer), squad_rows([long_example()])
    start, end = logits_for(features, {1: (6, 7, 3.0)})  # best span scores 6
    start[:, 0], end[:, 0] = 4.0, 4.0  # [CLS] in every window: score_null = 8
    predictions, diffs = postprocess_predictions(examples, features, start, end, version_2=True)
    assert predictions == {"q1": ""} and diffs["q1"] == pytest.approx(2.0)
    predictions, _ = postprocess_predictions(examples, features, start, end, version_2=True,
                                             null_score_diff_threshold=2.5)  # fmt: skip
    assert predictions == {"q1": "Rollo swore"}
    # score_null is the smallest over windows: one window sure of an answer is enough
    start[1, 0] = end[1, 0] = 1.0  # window 1: score_null = 2 < 6
    predictions, diffs = postprocess_predictions(examples, features, start, end, version_2=True)
    assert predictions == {"q1": "Rollo swore"} and diffs["q1"] == pytest.approx(-4.0)


@pytest.mark.parametrize("version,name", [("v1.1", "squad_v1"), ("v2.0", "squad_v2")])
def test_oracle_logits_score_100_end_to_end(tmp_path, tokenizer, version, name):
    """file -> load_task -> featurize -> logits from the labels -> decode -> metrics: a perfect score."""
    spec = get_task(name)
    dev = load_task(name, {"path": str(write_squad(tmp_path, version))})["validation"]
    features = featurize(spec, dev, tokenizer, 32, doc_stride=8, max_query_length=8)
    assert len(features) > len(dev)  # the context needs several windows
    spans = {f: (s, e, 10.0) for f, (s, e) in enumerate(zip(features["start_positions"], features["end_positions"]))}
    start, end = logits_for(features, spans)
    predictions, _ = postprocess_predictions(dev, features, start, end, version_2=spec.unanswerable)
    assert predictions["q1"] == "Rollo" and predictions["q2"] == "10th century"
    scores = metrics.task_metrics(spec, predictions, metrics.squad_references(dev))
    assert scores[spec.main_metric] == pytest.approx(100.0)
    if spec.unanswerable:
        assert predictions["q3"] == "" and scores["NoAns_total"] == 1 and scores["HasAns_total"] == 2


# ------------------------------------------------------------------------------------------ decoding rules, by hand
# One hand-made window: [CLS] q q [SEP] (positions 0-3, not context), then 40 context words "c0 .. c39" at
# positions 4-43, then [SEP] and padding up to L = 64 (not context). Offsets are written out, not tokenized.

CTX_WORDS = [f"c{i}" for i in range(40)]
CTX = " ".join(CTX_WORDS)
L, FIRST = 64, 4  # window length; position of context word 0


def hand_window():
    starts = [sum(len(w) + 1 for w in CTX_WORDS[:i]) for i in range(40)]
    offsets = [None] * FIRST + [[s, s + len(w)] for s, w in zip(starts, CTX_WORDS)]
    features = {"example_id": ["q"], "offset_mapping": [offsets + [None] * (L - len(offsets))]}
    return {"id": ["q"], "context": [CTX]}, features


def words(first: int, last: int) -> str:
    """The context text of words first..last (inclusive)."""
    return " ".join(CTX_WORDS[first : last + 1])


def hand_logits(starts: dict[int, float], ends: dict[int, float], fill: float = -10.0):
    start, end = np.full((1, L), fill), np.full((1, L), fill)
    for p, v in starts.items():
        start[0, p] = v
    for p, v in ends.items():
        end[0, p] = v
    return start, end


def decode(start, end, **kw):
    examples, features = hand_window()
    return postprocess_predictions(examples, features, start, end, **kw)


def test_answer_length_limit_at_the_limit_and_one_past_it():
    # A 30-token span (words 0-29) is allowed by the default max_answer_length 30; a 31-token one is not, and
    # a lower-scoring 1-token span (word 35) wins instead.
    start, end = hand_logits({FIRST: 5.0, FIRST + 35: 1.0}, {FIRST + 29: 5.0, FIRST + 35: 1.0})
    assert decode(start, end)[0] == {"q": words(0, 29)}
    start, end = hand_logits({FIRST: 5.0, FIRST + 35: 1.0}, {FIRST + 30: 5.0, FIRST + 35: 1.0})
    assert decode(start, end)[0] == {"q": words(35, 35)}
    # the same with an explicit limit: 3 tokens at limit 3, not at limit 2 (limit + 1)
    start, end = hand_logits({FIRST + 10: 5.0, FIRST + 35: 1.0}, {FIRST + 12: 5.0, FIRST + 35: 1.0})
    assert decode(start, end, max_answer_length=3)[0] == {"q": words(10, 12)}
    assert decode(start, end, max_answer_length=2)[0] == {"q": words(35, 35)}


def test_only_the_n_best_starts_are_considered():
    """20 higher starts (words 10-29) have no valid end among the 20 best ends (word 1, then padding); the one
    valid start (word 0) ranks 21st: found with n_best_size 21, not with the default 20."""
    starts = {FIRST + w: 9.0 for w in range(10, 30)} | {FIRST: 1.0}
    ends = {FIRST + 1: 10.0} | {p: 9.0 for p in range(45, 64)}  # word 1, then 19 padding positions
    start, end = hand_logits(starts, ends)
    assert decode(start, end)[0] == {"q": ""}
    assert decode(start, end, n_best_size=21)[0] == {"q": words(0, 1)}


def test_a_start_whose_best_end_is_before_it_still_gets_its_next_end():
    # start word 10; best end word 5 (before it: invalid), second-best end word 12: span 10-12 (score 17), not the
    # best span of a weaker start (words 0-5, score -10 + 9)
    start, end = hand_logits({FIRST + 10: 9.0}, {FIRST + 5: 9.0, FIRST + 12: 8.0})
    assert decode(start, end)[0] == {"q": words(10, 12)}


def test_no_valid_span_means_no_answer():
    # all the mass on [CLS], the question and padding: no span is valid
    start, end = hand_logits({0: 9.0, 1: 8.0, 50: 7.0}, {0: 9.0, 2: 8.0, 60: 7.0}, fill=-1e9)
    start[0, FIRST:FIRST + 40] = end[0, FIRST:FIRST + 40] = -np.inf  # no context token can be chosen either
    assert decode(start, end) == ({"q": ""}, {})
    predictions, diffs = decode(start, end, version_2=True)
    assert predictions == {"q": ""} and diffs == {"q": float("inf")}


def test_null_answer_defaults_and_a_difference_exactly_at_the_threshold():
    start, end = hand_logits({0: 3.0, FIRST + 7: 2.0}, {0: 3.0, FIRST + 8: 2.0})  # null 6, best span 4: diff 2
    assert decode(start, end) == ({"q": words(7, 8)}, {})  # v1 (the default) never answers "no answer"
    assert decode(start, end, version_2=True) == ({"q": ""}, {"q": 2.0})  # default threshold 0: 2 > 0
    assert decode(start, end, version_2=True, null_score_diff_threshold=2.0)[0] == {"q": words(7, 8)}  # not > 2
    start, end = hand_logits({0: 2.25, FIRST + 7: 2.0}, {0: 2.25, FIRST + 8: 2.0})  # diff 0.5 > 0
    assert decode(start, end, version_2=True)[0] == {"q": ""}


def test_logits_longer_than_the_offsets_are_not_context():
    """Positions past a window's offset mapping (logits padded to a longer length) are never a span end."""
    examples, features = hand_window()
    features["offset_mapping"][0] = features["offset_mapping"][0][: FIRST + 6]  # words 0-5 only: length 10
    start, end = hand_logits({10: 9.0, FIRST + 4: 8.0}, {10: 9.0, FIRST + 5: 8.0})
    predictions, _ = postprocess_predictions(examples, features, start, end)
    assert predictions == {"q": words(4, 5)}


def test_an_answer_is_labelled_only_in_windows_that_hold_all_of_it(tokenizer):
    """Windows of 12 context tokens start at tokens 0, 8, 16, ... An answer starting exactly at a window's first
    token is inside it; one that starts one token before a window's start is not (it is labelled [CLS])."""
    def labels(first_word, last_word):
        text = " ".join(WORDS[first_word : last_word + 1])
        start = len(" ".join(WORDS[:first_word])) + 1
        row = {**long_example(), "answers": {"text": [text], "answer_start": [start]}}
        features = featurize(get_task("squad_v2"), squad_rows([row]), tokenizer, 16, doc_stride=8)
        return features["start_positions"], features["end_positions"]

    assert labels(8, 9) == ([3 + 8, 3 + 0, 0, 0, 0], [3 + 9, 3 + 1, 0, 0, 0])  # window 1 starts at token 8
    assert labels(7, 8) == ([3 + 7, 0, 0, 0, 0], [3 + 8, 0, 0, 0, 0])  # crosses window 1's start


def test_span_window_layout_with_padding(tokenizer):
    # a 5-token context in a 16-token window: [CLS] who [SEP] c0..c4 [SEP] then 7 [PAD]
    row = {**long_example(), "context": "the normans were in normandy", "answers": {"text": [], "answer_start": []}}
    window = featurize(get_task("squad_v2"), squad_rows([row]), tokenizer, 16, doc_stride=8)[0]
    assert window["token_type_ids"] == [0] * 3 + [1] * 6 + [0] * 7
    assert window["attention_mask"] == [1] * 9 + [0] * 7
    assert window["token_is_max_context"] == [False] * 3 + [True] * 5 + [False] * 8
    assert window["offset_mapping"] == [None] * 3 + [[0, 3], [4, 11], [12, 16], [17, 19], [20, 28]] + [None] * 8


def test_max_seq_length_must_leave_room_for_one_context_token(tokenizer):
    row = {**long_example(), "context": "the normans", "answers": {"text": [], "answer_start": []}}
    with pytest.raises(UserError, match=r"^max_seq_length 4 leaves no room for the context after a 1-token question; "
                                        r"raise it or lower max_query_length$"):  # fmt: skip
        featurize(get_task("squad_v2"), squad_rows([row]), tokenizer, 4, doc_stride=1)
    windows = featurize(get_task("squad_v2"), squad_rows([row]), tokenizer, 5, doc_stride=1)  # 1 token per window
    assert [w["input_ids"][3] for w in windows] == tokenizer.convert_tokens_to_ids(["the", "normans"])


def test_the_longer_window_wins_a_tie_in_context():
    # token 2: min(2, 1) = 1 in window (0, 4) and min(1, 3) = 1 in window (1, 6); + 0.01 x length: 1.04 < 1.05
    assert max_context_flags([(0, 4), (1, 6)]) == [[True, True, False, False], [False, True, True, True, True]]
