"""Metrics against hand-computed cases, the official scorer's quirks, and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rememr1.metrics import (
    aggregate,
    exact_match,
    f1_score,
    normalize_answer,
    official_prediction,
    score,
    score_official,
    sub_exact_match,
    wilson_interval,
)

# ---------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  A   cat,  an owl; THE end. ", "cat owl end"),
        ("theatre", "theatre"),  # "the" only as a whole word
        ("U.S.A.", "usa"),
        ("rock-n-roll", "rocknroll"),  # ASCII punctuation is dropped, not replaced by space
        ("Café Müller", "café müller"),  # non-ASCII letters survive
        ("", ""),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


@given(st.text(max_size=60))
def test_normalize_is_idempotent(s):
    assert normalize_answer(normalize_answer(s)) == normalize_answer(s)


# ---------------------------------------------------------------------------- EM / sub-EM / F1


def test_exact_match_any_alias():
    assert exact_match("the United States", ["USA", "United States"]) == 1.0
    assert exact_match("United States of America", ["USA", "United States"]) == 0.0
    assert exact_match(None, ["x"]) == 0.0
    assert exact_match("Paris", "paris.") == 1.0  # a bare string is one alias


def test_sub_exact_match_both_directions():
    assert sub_exact_match("Barack Obama", ["Obama"]) == 1.0  # gold inside prediction
    assert sub_exact_match("Obama", ["Barack Obama"]) == 1.0  # prediction inside gold
    assert sub_exact_match("Bush", ["Barack Obama", "Obama"]) == 0.0
    # plain substring, not word-level: "ama" is inside "obama"
    assert sub_exact_match("ama", ["Obama"]) == 1.0


def test_sub_exact_match_empty_prediction():
    # an empty answer matches nothing, though "" is a substring of every string
    assert sub_exact_match("", ["Obama"]) == 0.0
    assert sub_exact_match("The.", ["Obama"]) == 0.0  # normalises to ""


def test_f1_hand_computed():
    # pred "new york city" vs gold "york city": common 2, P = 2/3, R = 1 -> F1 = 0.8
    assert f1_score("New York City", ["York City"]) == pytest.approx(0.8)
    # repeated tokens are counted with multiplicity: pred "a b b" -> [b, b] after
    # article removal; gold "b c": common 1, P = 1/2, R = 1/2 -> 0.5
    assert f1_score("a b b", ["b c"]) == pytest.approx(0.5)
    # best alias wins
    assert f1_score("York City", ["Boston", "york city"]) == 1.0
    assert f1_score("Boston", ["York City"]) == 0.0


def test_f1_yes_no_rule():
    assert f1_score("yes", ["no"]) == 0.0
    assert f1_score("yes it is", ["yes"]) == 0.0  # gold is yes, prediction differs
    assert f1_score("no", ["no answer"]) == 0.0  # pred is "no", gold is "no answer"
    assert f1_score("Yes.", ["yes"]) == 1.0
    # the rule looks at the whole normalised answer: "no doubt" is not a bare "no", so
    # partial overlap counts (P = 1, R = 2/4 -> F1 = 2/3)
    assert f1_score("no doubt", ["no doubt about it"]) == pytest.approx(2 / 3)


@given(st.text(max_size=30), st.lists(st.text(max_size=30), min_size=1, max_size=3))
def test_metric_consistency(pred, golds):
    em, sub, f1 = exact_match(pred, golds), sub_exact_match(pred, golds), f1_score(pred, golds)
    assert 0.0 <= f1 <= 1.0
    if em and normalize_answer(pred):
        assert sub == 1.0
    if em and normalize_answer(pred) and f1 < 1.0:
        pytest.fail("exact match must give F1 1")


# ---------------------------------------------------------------------------- scoring modes


def test_score_strict_uses_every_alias():
    s = score("USA", ["United States", "USA"])
    assert s == {"em": 1.0, "sub_em": 1.0, "f1": 1.0, "failed": False, "dropped": False,
                 "mode": "strict"}


def test_score_official_uses_first_alias_only():
    s = score_official(r"\boxed{USA}", ["United States", "USA"])
    assert (s["em"], s["sub_em"], s["f1"]) == (0.0, 0.0, 0.0)
    assert score_official(r"\boxed{United States}", ["United States", "USA"])["em"] == 1.0


def test_score_failure_and_empty():
    assert score(None, ["x"])["failed"] is True
    assert score("", ["x"])["sub_em"] == 0.0
    # official: an empty box scores 0 and is not dropped; an empty reply is dropped
    s = score_official(r"\boxed{}", ["x"])
    assert (s["sub_em"], s["dropped"]) == (0.0, False)
    assert score_official("", ["x"])["dropped"] is True
    assert score_official("  \n", ["x"])["dropped"] is False  # whitespace-only: kept, 0
    assert score_official(r"\boxed{x}", ["x"], failed=True)["dropped"] is True


def test_official_prediction_rules():
    # the text after the last </think>; the whole reply when nothing follows it
    assert official_prediction(r"<think>\boxed{a}</think> so \boxed{b}") == "b"
    assert official_prediction(r"<think>\boxed{a}</think>   ") == "a"
    # unclosed last box: nothing, even with an earlier closed one
    assert official_prediction(r"\boxed{a} then \boxed{b") is None
    # the "\boxed X$" spelling wins wherever it is
    assert official_prediction(r"\boxed Paris$ and later \boxed{Lyon}") == "Paris"
    # F1 is rounded to two decimals per item: P = 1/2, R = 1 -> 2/3 -> 0.67
    assert score_official(r"\boxed{x y}", ["y"])["f1"] == 0.67
    assert score_official(r"\boxed{new york city}", ["york city"])["f1"] == 0.8
    assert official_prediction("so the answer is Paris.", "answer-is") == "Paris"


def test_score_rejects_bad_input():
    with pytest.raises(ValueError):
        score("x", [])
    with pytest.raises(ValueError):
        score_official("x", [])


def test_aggregate_strict_counts_failures_as_wrong():
    items = [("Paris", ["Paris"]), (None, ["Rome"]), ("Berlin", ["Bonn"]), ("Bonn city", ["Bonn"])]
    agg = aggregate([score(p, g) for p, g in items])
    assert agg["mode"] == "strict"
    assert (agg["n"], agg["n_dropped"], agg["n_failed"]) == (4, 0, 1)
    assert agg["accuracy"] == pytest.approx(50.0)  # Paris, "Bonn city" ⊇ "bonn"
    assert agg["em"] == pytest.approx(25.0)
    # F1: 1 + 0 + 0 + (P=1/2, R=1 -> 2/3) over 4
    assert agg["f1"] == pytest.approx(100 * (1 + 2 / 3) / 4)
    lo, hi = wilson_interval(2, 4)
    assert (agg["ci_low"], agg["ci_high"]) == pytest.approx((100 * lo, 100 * hi))


def test_aggregate_official_drops_only_failed_generations():
    items = [
        (r"\boxed{Paris}", ["Paris", "x"], False),
        ("", ["Rome"], False),  # empty output: the official client's failure marker
        (r"\boxed{Rome}", ["Rome"], True),  # an error anywhere in the episode
        ("no box at all", ["Bonn"], False),  # kept, scores 0
        (r"\boxed{Bonn}", ["Berlin", "Bonn"], False),  # first alias only
    ]
    agg = aggregate([score_official(r, g, failed=f) for r, g, f in items])
    assert agg["mode"] == "official"
    assert (agg["n"], agg["n_total"], agg["n_dropped"], agg["n_failed"]) == (3, 5, 2, 1)
    assert agg["accuracy"] == pytest.approx(100 / 3)


def test_aggregate_mode_checks_and_empty():
    with pytest.raises(ValueError):
        aggregate([score("a", ["a"]), score_official(r"\boxed{a}", ["a"])])
    empty = aggregate([])
    assert empty["n"] == 0 and empty["accuracy"] is None
    only_failed = aggregate([score_official("", ["a"])])
    assert only_failed["n"] == 0 and only_failed["n_dropped"] == 1 and only_failed["mode"] == "official"


# ---------------------------------------------------------------------------- Wilson interval


def test_wilson_known_values():
    # 5/10: centre 0.5, half-width 1.96/1.38416 * sqrt(0.025 + 3.8416/400) = 0.26341
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.23659, abs=1e-5)
    assert hi == pytest.approx(0.76341, abs=1e-5)
    # 0/10: upper bound z^2/(n + z^2) = 3.8416/13.8416
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(3.8416 / 13.8416)
    assert wilson_interval(10, 10)[0] == pytest.approx(10 / 13.8416)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_matches_formula_and_contains_estimate(kn):
    k, n = kn
    lo, hi = wilson_interval(k, n)
    p, z = k / n, 1.96
    # the Wilson bounds are the roots of (p - q)^2 = z^2 q (1 - q) / n in q
    a = 1 + z * z / n
    b = -(2 * p + z * z / n)
    c = p * p
    disc = math.sqrt(b * b - 4 * a * c)
    assert lo == pytest.approx(max(0.0, (-b - disc) / (2 * a)), abs=1e-9)
    assert hi == pytest.approx(min(1.0, (-b + disc) / (2 * a)), abs=1e-9)
    assert 0.0 <= lo <= p <= hi <= 1.0
    # more data at the same rate gives a narrower interval
    lo4, hi4 = wilson_interval(4 * k, 4 * n)
    assert hi4 - lo4 < hi - lo
