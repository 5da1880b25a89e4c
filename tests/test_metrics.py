"""Metrics against hand-computed cases, the official scorer's quirks, and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rememr1.metrics import (
    aggregate,
    exact_match,
    extract_answer,
    extract_answer_is,
    extract_boxed,
    f1_score,
    normalize_answer,
    score,
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
    # strict: an empty answer matches nothing; official containment: "" is in everything
    assert sub_exact_match("", ["Obama"]) == 0.0
    assert sub_exact_match("The.", ["Obama"]) == 0.0  # normalises to ""
    assert sub_exact_match("", ["Obama"], empty_matches=True) == 1.0


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


# ---------------------------------------------------------------------------- extraction


def test_extract_boxed_last_and_nested():
    assert extract_boxed(r"first \boxed{A} then \boxed{B}") == "B"
    assert extract_boxed(r"\boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert extract_boxed(r"\boxed { spaced }") == "spaced"
    assert extract_boxed(r"\boxed{}") == ""
    assert extract_boxed("no box here") is None
    assert extract_boxed(None) is None


def test_extract_boxed_unclosed():
    assert extract_boxed(r"answer: \boxed{Paris") is None
    # an unclosed box after a complete one: the last *complete* box counts
    assert extract_boxed(r"\boxed{Paris} or maybe \boxed{Lyon") == "Paris"
    assert extract_boxed(r"\boxed{a{b}") is None


def test_extract_boxed_tail_quirk():
    early = r"\boxed{Paris}" + " filler" * 60  # box 420 characters before the end
    assert extract_boxed(early) == "Paris"
    assert extract_boxed(early, tail_chars=300) is None
    late = "x" * 1000 + r"\boxed{Lyon}"
    assert extract_boxed(late, tail_chars=300) == "Lyon"
    # the opening is cut off by the tail window: not found
    cut = r"\boxed{" + "y" * 295 + "}"
    assert extract_boxed(cut) == "y" * 295
    assert extract_boxed(cut, tail_chars=300) is None


def test_extract_answer_is():
    assert extract_answer_is("Reasoning... So the answer is Paris.") == "Paris"
    assert extract_answer_is("The answer is: **Marie Curie**!\nHope that helps.") == "Marie Curie"
    assert extract_answer_is("the answer is A. Wait, the answer is B.") == "B"
    assert extract_answer_is("I do not know.") is None
    assert extract_answer_is("the answer is") is None


def test_extract_answer_modes():
    text = r"I think the answer is Rome, so \boxed{\text{Paris}}"
    assert extract_answer(text) == "Paris"
    assert extract_answer(text, unwrap_text=False) == r"\text{Paris}"
    assert extract_answer(text, boxed=False) == r"Rome, so \boxed{\text{Paris}}"
    assert extract_answer(r"\boxed{\textbf{\text{X}}}") == "X"
    # a wrapper that does not span the whole content is left alone
    assert extract_answer(r"\boxed{\text{a} and \text{b}}") == r"\text{a} and \text{b}"


# ---------------------------------------------------------------------------- scoring modes


def test_score_strict_uses_every_alias():
    s = score("USA", ["United States", "USA"])
    assert s == {"em": 1.0, "sub_em": 1.0, "f1": 1.0, "failed": False, "mode": "strict"}


def test_score_official_uses_first_alias_only():
    s = score("USA", ["United States", "USA"], mode="official")
    assert (s["em"], s["sub_em"], s["f1"]) == (0.0, 0.0, 0.0)
    assert score("United States", ["United States", "USA"], mode="official")["em"] == 1.0


def test_score_failure_and_empty():
    assert score(None, ["x"])["failed"] is True
    assert score(None, ["x"], mode="official")["failed"] is True
    assert score("", ["x"])["sub_em"] == 0.0
    assert score("", ["x"], mode="official")["sub_em"] == 1.0  # containment quirk


def test_score_rejects_bad_input():
    with pytest.raises(ValueError):
        score("x", [], mode="strict")
    with pytest.raises(ValueError):
        score("x", ["x"], mode="lenient")


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


def test_aggregate_official_drops_failures():
    items = [("Paris", ["Paris", "x"]), (None, ["Rome"]), ("Bonn", ["Berlin", "Bonn"])]
    agg = aggregate([score(p, g, mode="official") for p, g in items])
    assert agg["mode"] == "official"
    assert (agg["n"], agg["n_total"], agg["n_dropped"]) == (2, 3, 1)
    assert agg["accuracy"] == pytest.approx(50.0)  # Paris right, Bonn vs first alias wrong
    strict = aggregate([score(p, g) for p, g in items])
    assert strict["accuracy"] == pytest.approx(200 / 3)  # 2 of 3 with every alias


def test_aggregate_mode_checks_and_empty():
    with pytest.raises(ValueError):
        aggregate([score("a", ["a"]), score("a", ["a"], mode="official")])
    with pytest.raises(ValueError):
        aggregate([score("a", ["a"])], mode="official")
    empty = aggregate([], mode="official")
    assert empty["n"] == 0 and empty["accuracy"] is None and empty["mode"] == "official"
    only_failed = aggregate([score(None, ["a"], mode="official")])
    assert only_failed["n"] == 0 and only_failed["n_dropped"] == 1


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
