"""The facts records carry for the oracle: candidate facts are every later-hop statement."""

from __future__ import annotations

import pytest

from rememr1.data.revhop.item import make_item
from rememr1.data.revhop.world import build_world
from rememr1.data.tokens import WordEstimate

from .conftest import blocks, title


@pytest.mark.parametrize("hops", [2, 3])
def test_candidate_facts_are_every_later_hop_relation_statement(hops):
    """candidate_facts lists, in document order, each statement of a hop-2..H relation:
    the evidence of those hops among them, each sentence in its own document block."""
    it = make_item(seed=5, length=4096, hops=hops, order="reverse", index=0, counter=WordEstimate())
    bl = blocks(it["context"])
    later = {f["relation"] for f in it["evidence_facts"] if f["hop"] > 1}
    cands = it["candidate_facts"]
    assert {c["relation"] for c in cands} == later and len(cands) > hops
    assert [c["doc"] for c in cands] == sorted(c["doc"] for c in cands)
    for c in cands:
        block = bl[c["doc"]]
        assert c["sentence"] in block and c["object"] in c["sentence"] and title(block) == c["subject"]
    keys = {(c["subject"], c["relation"], c["object"]) for c in cands}
    for f in it["evidence_facts"]:
        assert ((f["subject"], f["relation"], f["object"]) in keys) == (f["hop"] > 1)
    # every world entity's block states all its relations, so each later-hop one is listed
    world = {e.name: e for e in build_world(5).entities}
    listed = {(c["doc"], c["relation"]) for c in cands}
    checked = 0
    for i, block in enumerate(bl):
        ent = world.get(title(block))
        if ent is not None and title(block) not in it["decoy_names"]:
            for r in set(ent.rel) & later:
                assert (i, r) in listed
                checked += 1
    assert checked >= len(cands) - 2 * hops  # all but decoys/siblings with item-local names
