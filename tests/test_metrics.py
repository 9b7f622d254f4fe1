"""Metrics against values computed by hand, with the leaderboards' names."""

import itertools
import math
import warnings

import numpy as np
import pytest

from sparsebert import metrics
from sparsebert.data.tasks import get_task


def test_accuracy_f1_matthews_by_hand():
    pred, gold = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    # tp=2 fp=1 fn=1 tn=1
    assert metrics.accuracy(pred, gold) == pytest.approx(3 / 5)
    assert metrics.f1(pred, gold) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    mcc = (2 * 1 - 1 * 1) / math.sqrt((2 + 1) * (2 + 1) * (1 + 1) * (1 + 1))
    assert metrics.matthews_correlation(pred, gold) == pytest.approx(mcc)


def test_pearson_spearman_by_hand():
    assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert metrics.spearmanr([1, 2, 3, 4], [1, 4, 9, 100]) == pytest.approx(1.0)
    # x = [1, 2, 3], y = [1, 3, 2]: cov = 0.5 (sample), var = 1, 1 -> r = 0.5
    assert metrics.pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert metrics.pearson([2, 2, 2], [1, 2, 3]) == 0.0  # constant prediction: no correlation, not NaN


def test_glue_names_per_task():
    assert metrics.task_metrics(get_task("cola"), [1, 0], [1, 0]) == {"matthews_correlation": 1.0}
    mrpc = metrics.task_metrics(get_task("mrpc"), [1, 1, 0, 0], [1, 0, 0, 0])
    assert mrpc == pytest.approx({"accuracy": 0.75, "f1": 2 / 3, "combined_score": (0.75 + 2 / 3) / 2})
    assert set(metrics.task_metrics(get_task("qqp"), [1, 0], [1, 1])) == {"accuracy", "f1", "combined_score"}
    stsb = metrics.task_metrics(get_task("stsb"), [1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    assert stsb == pytest.approx({"pearson": 0.5, "spearmanr": 0.5, "combined_score": 0.5})
    assert metrics.task_metrics(get_task("mnli"), [0, 1, 2, 2], [0, 1, 2, 0]) == {"accuracy": 0.75}
    assert metrics.task_metrics(get_task("swag"), [3, 1], [3, 2]) == {"accuracy": 0.5}


@pytest.mark.parametrize("raw,normalized", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  an   apple, a pear ", "apple pear"),
    ("theory of the atom", "theory of atom"),  # only whole-word articles go
    ("U.S.A.", "usa"),
    ("", ""),
])  # fmt: skip
def test_squad_normalization(raw, normalized):
    assert metrics.normalize_answer(raw) == normalized


@pytest.mark.parametrize("version", ["v1.1", "v2.0"])
def test_squad_exact_and_f1_by_hand(version):
    assert metrics.squad_exact("The Normans", "normans.") == 1.0
    # pred "normans in normandy" vs gold "the normans": common 1, p = 1/3, r = 1/1 -> f1 = 0.5
    assert metrics.squad_f1("normans in normandy", "the normans", version) == pytest.approx(0.5)
    assert metrics.squad_f1("", "Rollo", version) == 0.0


def test_squad_f1_of_two_empty_answers_differs_by_version():
    """"a" and "the" both normalize to empty. evaluate-v1.1.py: no common token -> 0. evaluate-v2.0.py: an empty
    side scores 1 when both are empty (that is how "no answer" is right on an unanswerable question)."""
    assert metrics.squad_exact("a", "the") == 1.0
    assert metrics.squad_f1("a", "the", "v1.1") == 0.0
    assert metrics.squad_f1("a", "the", "v2.0") == 1.0
    with pytest.raises(ValueError, match=r"^unknown SQuAD version 'v3'; valid: v1\.1, v2\.0$"):
        metrics.squad_f1("a", "the", "v3")


def test_squad_v1_keeps_every_gold_answer_as_evaluate_v1_1_does():
    """evaluate-v1.1.py scores against every gold as given, even one that normalizes to empty (v2.0's dropping
    of such golds used to be applied to v1.1 too). By hand:
    - "" vs ["The"]: normalized "" == "" -> EM 1; no common token -> F1 0 (v2.0's rules gave 1 and 1);
    - "the" vs ["The", "Paris"]: EM 1 against "The"; F1 0 against both (v2.0's rules: only "Paris", 0 and 0);
    - "Paris!" vs ["Paris"]: EM 1, F1 1.
    EM (1 + 1 + 1) / 3 = 100 %, F1 (0 + 0 + 1) / 3 = 33.3 %."""
    refs = {"article": ["The"], "article_or_name": ["The", "Paris"], "name": ["Paris"]}
    preds = {"article": "", "article_or_name": "the", "name": "Paris!"}
    assert metrics.squad_v1(preds, refs) == pytest.approx({"exact_match": 100.0, "f1": 100 / 3})
    with pytest.raises(ValueError, match=r"^1 questions have no gold answer, e\.g\. \['none'\]; SQuAD v1\.1 has no "
                                         r"unanswerable questions \(score them as v2\.0\)$"):
        metrics.squad_v1({**preds, "none": ""}, {**refs, "none": []})
    empty = {f"q{i}": [] for i in range(5)}  # the message shows the first three, sorted
    with pytest.raises(ValueError, match=r"^5 questions have no gold answer, e\.g\. \['q0', 'q1', 'q2'\]; "):
        metrics.squad_v1(dict.fromkeys(empty, ""), empty)


def test_squad_v2_has_answer_is_a_non_empty_gold_list_as_evaluate_v2_0_says():
    """evaluate-v2.0.py: a question is HasAns when its answer list is non-empty (bool(qa['answers'])), even if
    every answer normalizes to empty; scoring drops such golds and falls back to "". By hand:
    - "" vs ["The"]: HasAns; golds -> [""]: EM 1, F1 1 (both empty);
    - "the" vs ["The", "Paris"]: HasAns; golds -> ["Paris"]: EM 0, F1 0 (an empty side, the other not);
    - "" vs []: NoAns; EM 1, F1 1.
    Overall 2/3; HasAns (1 + 0) / 2 = 50 % of 2 questions; NoAns 100 % of 1 (the old rule counted "article" as
    NoAns)."""
    refs = {"article": ["The"], "article_or_name": ["The", "Paris"], "none": []}
    preds = {"article": "", "article_or_name": "the", "none": ""}
    assert metrics.squad_v2(preds, refs) == pytest.approx({
        "exact": 200 / 3, "f1": 200 / 3, "total": 3,
        "HasAns_exact": 50.0, "HasAns_f1": 50.0, "HasAns_total": 2,
        "NoAns_exact": 100.0, "NoAns_f1": 100.0, "NoAns_total": 1,
    })  # fmt: skip


def test_squad_v1_best_of_gold():
    refs = {"q1": ["Denver Broncos", "The Denver Broncos!"], "q2": ["10th century", "the 10th"]}
    preds = {"q1": "denver broncos", "q2": "10th"}
    # q1: EM 1, F1 1. q2: EM 1 against "the 10th", F1 1 -> both 100; then a partial answer
    assert metrics.squad_v1(preds, refs) == pytest.approx({"exact_match": 100.0, "f1": 100.0})
    preds["q2"] = "century"  # EM 0; F1 vs "10th century": p=1, r=1/2 -> 2/3 (vs "the 10th": 0)
    assert metrics.squad_v1(preds, refs) == pytest.approx({"exact_match": 50.0, "f1": 100 * (1 + 2 / 3) / 2})
    with pytest.raises(ValueError, match="no prediction"):
        metrics.squad_v1({}, refs)


def test_squad_v2_no_answer_scoring_and_splits():
    refs = {"has1": ["Rollo"], "has2": ["King Charles III"], "no1": [], "no2": []}
    preds = {"has1": "Rollo", "has2": "Charles", "no1": "", "no2": "Rollo"}
    # has1: 1/1; has2: EM 0, F1 p=1 r=1/3 -> 0.5; no1: empty vs empty -> 1/1; no2: answer where none -> 0/0
    out = metrics.squad_v2(preds, refs)
    assert out == pytest.approx({
        "exact": 50.0, "f1": 100 * (1 + 0.5 + 1 + 0) / 4, "total": 4,
        "HasAns_exact": 50.0, "HasAns_f1": 75.0, "HasAns_total": 2,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2,
    })  # fmt: skip
    spec = get_task("squad_v2")
    assert set(spec.metrics) <= set(metrics.task_metrics(spec, preds, refs))
    assert metrics.task_metrics(get_task("squad_v1"), {"a": "x"}, {"a": ["x"]}) == {"exact_match": 100.0, "f1": 100.0}


def test_matthews_correlation_negative_and_unlike_kappa():
    """tp=1 fp=3 fn=2 tn=4: MCC = (1*4 - 3*2) / sqrt(4*3*7*6) = -2 / sqrt(504), below 0 (so not |MCC|) and not
    Cohen's kappa (p_o = 0.5, p_e = 0.4*0.3 + 0.6*0.7 = 0.54: kappa = -0.04 / 0.46); scikit-learn agrees."""
    from sklearn.metrics import cohen_kappa_score, matthews_corrcoef

    pred = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    gold = [1, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    mcc = metrics.matthews_correlation(pred, gold)
    assert mcc == pytest.approx(-2 / math.sqrt(504)) == matthews_corrcoef(gold, pred)
    assert cohen_kappa_score(gold, pred) == pytest.approx(-0.04 / 0.46)
    assert mcc != pytest.approx(-0.04 / 0.46, abs=1e-3)


def test_f1_of_the_positive_class_and_its_zero_cases():
    assert metrics.f1([0, 0, 1, 1], [1, 1, 0, 0]) == 0.0  # no true positive
    # nothing predicted positive and nothing positive: 0 (GLUE's convention), and no warning about it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.f1([0, 0, 0], [0, 0, 0]) == 0.0
        assert metrics.f1([0, 0, 0], [0, 1, 0]) == 0.0
    # the positive class is label 1: tp=1 fp=0 fn=1 -> 2/3 (label 0 as positive: tp=3 fp=1 fn=0 -> 6/7)
    assert metrics.f1([1, 0, 0, 0, 0], [1, 1, 0, 0, 0]) == pytest.approx(2 / 3)


def test_constant_inputs_give_zero_correlation_not_nan():
    for fn in (metrics.pearson, metrics.spearmanr):
        assert fn([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
        assert fn([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) == 0.0
        # a standard deviation of exactly 1 is not constant: x = [0, 2] has std 1, r = 1
        assert fn([0.0, 2.0, 1.0], [0.0, 2.0, 1.0]) == pytest.approx(1.0)
        assert fn([1.0, 2.0, 3.0], [0.0, 2.0, 1.0]) == pytest.approx(0.5)
        assert fn([0.0, 2.0, 1.0], [1.0, 3.0, 2.0]) == pytest.approx(1.0)
        # ten equal floats whose np.std is 5.6e-17, not 0 (the mean is rounded): still a constant
        assert np.std([0.3] * 10) > 0 and fn([0.3] * 10, list(range(10))) == 0.0


def test_regression_metrics_computed_in_float64():
    """The fine-tuning loop hands over float32 predictions; scipy's pearsonr would compute in float32."""
    x = np.array([0.1, 0.7, 0.25, 0.9, 0.33, 0.61], dtype=np.float32)
    y = np.array([0.2, 0.5, 0.31, 0.95, 0.12, 0.77], dtype=np.float32)
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    r = float(np.sum((xd - xd.mean()) * (yd - yd.mean())) / np.sqrt(np.sum((xd - xd.mean()) ** 2) * np.sum((yd - yd.mean()) ** 2)))
    out = metrics.task_metrics(get_task("stsb"), x, y)
    assert out["pearson"] == pytest.approx(r, rel=1e-12, abs=0)
    out = metrics.task_metrics(get_task("stsb"), list(map(float, x)), y)
    assert out["pearson"] == pytest.approx(r, rel=1e-12, abs=0)


def test_squad_f1_counts_repeated_tokens_once_per_match():
    # pred "the the cat cat cat" -> "cat cat cat" (articles go); gold "cat sat cat": common = min(3, 2) = 2 cats,
    # p = 2/3, r = 2/3 -> f1 = 2/3 (counting every predicted token found in gold would give p = 1)
    assert metrics.squad_f1("the the cat cat cat", "cat sat cat", "v1.1") == pytest.approx(2 / 3)
    # pred "x y x" vs gold "y x y y": common = min(2, 1) x + min(1, 3) y = 2; p = 2/3, r = 2/4 -> 2pr/(p+r) = 4/7
    assert metrics.squad_f1("x y x", "y x y y", "v2.0") == pytest.approx(4 / 7)


def test_error_messages_name_the_problem():
    refs = {f"q{i}": ["x"] for i in range(5)}
    with pytest.raises(ValueError, match=r"^5 question ids have no prediction, e\.g\. \['q0', 'q1', 'q2'\]$"):
        metrics.squad_v1({}, refs)

    class Spec:
        kind, metrics = "ranking", ("accuracy",)

    with pytest.raises(ValueError, match=r"^unknown task kind 'ranking'$"):
        metrics.task_metrics(Spec, [1], [1])


def test_correlations_equal_sklearn_and_scipy_on_random_cases():
    """The numpy correlations equal their reference libraries: binary and 3-class MCC (balanced, skewed, a
    class missing from the predictions), Pearson and Spearman with and without ties."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import matthews_corrcoef

    rng = np.random.default_rng(0)
    for trial in range(200):
        k, n = (2, 3)[trial % 2], int(rng.integers(5, 300))
        y = rng.integers(0, k, n)
        y_hat = np.where(rng.random(n) < rng.random(), y, rng.integers(0, k - (trial % 5 == 0), n))
        assert metrics.matthews_correlation(y_hat, y) == pytest.approx(matthews_corrcoef(y, y_hat), abs=1e-12)
        a = rng.normal(size=n) if trial % 3 else rng.integers(0, 5, n).astype(float)  # integers: ties
        b = a * rng.normal() + rng.normal(size=n)
        assert metrics.pearson(a, b) == pytest.approx(pearsonr(a, b)[0], abs=1e-12)
        assert metrics.spearmanr(a, b) == pytest.approx(spearmanr(a, b)[0], abs=1e-12)


def test_perfect_correlation_is_exactly_one_despite_rounding():
    """y = c x is perfectly (anti-)correlated, but in floating point the raw ratio cov / sqrt(var var) can come out
    as +-1.0000000000000002: a correlation past +-1 must not leave the metric (scipy's pearsonr, which sums in
    another order, agrees within 1e-15). Which (x, c) overshoot depends on the BLAS kernel behind `@` (OpenBLAS's
    Haswell and SkylakeX dot products round differently: x = 0..3, c = 0.3 overshoots under one and not the
    other), so a grid of them is checked, and at least one must overshoot here for the test to bite."""
    from scipy.stats import pearsonr

    overshooting = 0
    for n, c in itertools.product(range(3, 12), (0.1, 0.2, 0.3, 0.7, 1.1, 1.3, 3.7, -0.3, -0.7, -3.7)):
        x = np.arange(float(n))
        y = c * x
        a, b = x - x.mean(), y - y.mean()
        r = metrics.pearson(x, y)
        assert -1.0 <= r <= 1.0 and r == pytest.approx(pearsonr(x, y)[0], abs=1e-15), (n, c)
        if abs((a @ b) / np.sqrt((a @ a) * (b @ b))) > 1:
            overshooting += 1
            assert r == math.copysign(1.0, c), (n, c)
    assert overshooting  # 10 of the 90 with either kernel


@pytest.mark.filterwarnings("ignore:A single label was found")  # sklearn, on the all-constant case
def test_matthews_correlation_of_a_constant_side_is_zero_like_sklearn():
    """A constant prediction (or a constant reference) leaves the MCC undefined (0 / 0); sklearn's
    matthews_corrcoef reports 0 for it, not NaN and not 1, whichever side is constant."""
    from sklearn.metrics import matthews_corrcoef

    gold = [0, 1, 1, 0, 1]
    for pred, ref in (([1] * 5, gold), (gold, [1] * 5), ([2] * 5, gold), ([0] * 5, [0] * 5)):
        assert metrics.matthews_correlation(pred, ref) == 0.0 == matthews_corrcoef(ref, pred)


def test_correlations_accept_boolean_predictions_like_scipy():
    """A binary prediction handed over as booleans (or integers) is a number for scipy's pearsonr and spearmanr;
    ours must take it the same way (a bool array has no `max - min` of its own: it is cast to float first)."""
    from scipy.stats import pearsonr, spearmanr

    flags, scores = np.array([True, False, True, True, False]), np.array([0.9, 0.2, 0.4, 0.7, 0.5])
    for x, y in ((flags, scores), (scores, flags), (flags.astype(int), scores), (scores, flags.astype(int))):
        assert metrics.pearson(x, y) == pytest.approx(pearsonr(x.astype(float), y.astype(float))[0], abs=1e-12)
        assert metrics.spearmanr(x, y) == pytest.approx(spearmanr(x.astype(float), y.astype(float))[0], abs=1e-12)
