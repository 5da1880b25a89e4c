"""Where paragraphs go: evidence in the requested order, at least the gap apart, at the
recorded token offsets; filler up to the target and never about a chain subject."""

from __future__ import annotations

import pytest

from rememr1.data.revhop.content import RevHopInvalid
from rememr1.data.revhop.item import make_item
from rememr1.data.revhop.layout import check_layout
from rememr1.data.revhop.world import normalize_name
from rememr1.data.tokens import WordEstimate
from rememr1.errors import InputError

from .conftest import blocks, title


@pytest.mark.parametrize("order", ["reverse", "forward", "random"])
@pytest.mark.parametrize("hops", [1, 2, 4])
def test_evidence_order_gaps_and_offsets(order, hops):
    counter = WordEstimate()
    length = 12000
    for index in range(3):
        it = make_item(seed=2, length=length, hops=hops, order=order, index=index, counter=counter)
        bl = blocks(it["context"])
        assert len(bl) == it["num_docs"]
        # recompute every block's token offset from the text itself
        offsets, t = [], 0
        for b in bl:
            offsets.append(t)
            t += counter.count(b)
        assert t == it["tokens"] <= length
        assert t > length - 400  # filled up to (about) the target
        chain = it["chain"]
        ev = it["evidence_idx"]
        for k in range(hops):
            b = bl[ev[k]]
            assert title(b) == chain[k]["name"]  # hop k+1's paragraph is about e_k ...
            assert chain[k + 1]["name"] in b  # ... and names e_(k+1)
        got = [offsets[i] for i in ev]
        assert got == it["evidence_token_offsets"]
        if order == "forward":
            assert got == sorted(got) and it["is_ordered"]
        elif order == "reverse":
            assert got == sorted(got, reverse=True) and it["is_reverse_ordered"]
        gap = length // (2 * hops) if hops > 1 else 0
        assert it["requested_min_gap"] == gap
        s = sorted(got)
        assert all(b - a >= gap for a, b in zip(s, s[1:]))
        # the question names only the start entity
        q = normalize_name(it["input"])
        assert normalize_name(chain[0]["name"]) in q
        for e in chain[1:]:
            assert normalize_name(e["name"]) not in q
        assert it["answers"] == [chain[-1]["name"]]
        assert it["bridge_entities"] == [e["name"] for e in chain[1:-1]]


def test_explicit_min_gap_and_too_short_length():
    it = make_item(seed=0, length=20000, hops=3, order="reverse", index=0,
                   counter=WordEstimate(), min_gap=6000)
    s = sorted(it["evidence_token_offsets"])
    assert s[1] - s[0] >= 6000 and s[2] - s[1] >= 6000
    with pytest.raises(InputError, match="too short"):
        make_item(seed=0, length=4000, hops=3, order="reverse", index=0,
                  counter=WordEstimate(), min_gap=3000)


def test_chain_subjects_never_in_filler():
    it = make_item(seed=4, length=30000, hops=3, order="forward", index=2, counter=WordEstimate())
    bl = blocks(it["context"])
    subjects = [e["name"] for e in it["chain"][:-1]]
    for s in subjects:
        assert sum(title(b) == s for b in bl) == 1


def test_check_layout_rejects_wrong_order_or_gap():
    check_layout([900, 500, 100], "reverse", 300)
    with pytest.raises(RevHopInvalid, match="reverse"):
        check_layout([100, 500, 900], "reverse", 300)
    with pytest.raises(RevHopInvalid, match="forward"):
        check_layout([900, 500, 100], "forward", 300)
    with pytest.raises(RevHopInvalid, match="closer"):
        check_layout([100, 350, 900], "forward", 300)
