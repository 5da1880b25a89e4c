"""What an item says: one question per (seed, hops, index), siblings and decoys that are
safe, and validity checks that reject planted violations."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rememr1.data.revhop.content import (
    RevHopInvalid,
    Special,
    build_content,
    check_content,
    sample_content,
)
from rememr1.data.revhop.item import make_item
from rememr1.data.revhop.world import Paragraph, build_world, normalize_name
from rememr1.data.tokens import WordEstimate

from .conftest import blocks, title


def test_same_question_across_lengths_and_orders():
    c = WordEstimate()
    items = [make_item(seed=1, length=L, hops=3, order=o, index=4, counter=c)
             for L in (4096, 9000) for o in ("reverse", "forward")]
    assert len({(it["input"], it["answers"][0]) for it in items}) == 1
    assert len({it["context"] for it in items}) == 4
    other = make_item(seed=1, length=4096, hops=3, order="reverse", index=5, counter=c)
    assert other["input"] != items[0]["input"]


def test_siblings_and_decoys_present_and_safe():
    it = make_item(seed=3, length=8192, hops=3, order="reverse", index=1, counter=WordEstimate())
    bl = blocks(it["context"])
    assert len(it["sibling_idx"]) == 6 and len(it["decoy_idx"]) == 4
    names = [e["name"] for e in it["chain"]]
    for dname in it["decoy_names"]:
        assert dname not in names
        # one letter away from a chain name
        assert any(len(dname) == len(n) and sum(a != b for a, b in zip(dname, n)) == 1 for n in names)
        na, nd = normalize_name(it["answers"][0]), normalize_name(dname)
        assert na not in nd and nd not in na
    assert {title(bl[i]) for i in it["decoy_idx"]} == set(it["decoy_names"])
    # siblings share the schema (same kind) as the hop's subject but are other entities
    world = build_world(3)
    kind = {e.name: e.kind for e in world.entities}
    chain_kinds = {e["kind"] for e in it["chain"][:-1]}
    for i in it["sibling_idx"]:
        assert title(bl[i]) not in names and kind[title(bl[i])] in chain_kinds


def test_sampled_content_passes(world, content):
    check_content(content, world)  # no exception


def test_rejects_conflicting_statement(world, content):
    subj, rel = content.chain_names[1], content.relations[1]
    liar = Paragraph(f"{subj}", f"{subj} is described here.", ((subj, rel, "Somewhere Else"),))
    bad = dataclasses.replace(content, others=content.others + [Special(liar, "sibling")])
    with pytest.raises(RevHopInvalid, match="not unique"):
        check_content(bad, world)


def test_rejects_lexical_shortcut(world, content):
    start_word = [w for w in content.chain_names[0].split() if w.lower() not in ("the", "of")][0]
    ev2 = content.evidence[1]
    leaky = Special(dataclasses.replace(ev2.para, text=ev2.para.text + f" It admired {start_word}."),
                    "evidence", hop=2)
    bad = dataclasses.replace(content, evidence=[content.evidence[0], leaky, *content.evidence[2:]])
    with pytest.raises(RevHopInvalid, match="shortcut"):
        check_content(bad, world)


def test_rejects_answer_contained_in_other_name(world, content):
    bad = dataclasses.replace(content, decoy_names=content.decoy_names + [content.answer + "son"])
    with pytest.raises(RevHopInvalid, match="contain"):
        check_content(bad, world)


def test_rejects_bridge_named_in_question(world, content):
    bad = dataclasses.replace(content, question=content.question[:-1] + f" and {content.chain_names[1]}?")
    with pytest.raises(RevHopInvalid, match="question names"):
        check_content(bad, world)


def test_rejects_evidence_that_does_not_state_its_hop(world, content):
    ev1 = content.evidence[0]
    mute = Special(dataclasses.replace(ev1.para, facts=()), "evidence", hop=1)
    bad = dataclasses.replace(content, evidence=[mute, *content.evidence[1:]])
    with pytest.raises(RevHopInvalid):
        check_content(bad, world)


def test_rejects_filler_that_may_describe_chain(world, content):
    bad = dataclasses.replace(content, excluded=frozenset())
    with pytest.raises(RevHopInvalid, match="filler"):
        check_content(bad, world)


def test_generator_skips_a_chain_with_a_planted_world_violation():
    """Plant a name containing item 0's answer into the world: the same chain is now
    rejected, and the generator picks another item that passes."""
    clean = build_world(11)
    good = sample_content(clean, seed=11, hops=2, index=0)
    ents = [dataclasses.replace(e) for e in clean.entities]
    victim = next(e for e in ents if e.id not in good.chain and e.kind == "org")
    victim.name = f"{good.answer} Memorial Trust"
    planted = dataclasses.replace(
        clean, entities=ents,
        names=frozenset(e.name for e in ents),
        norm_names=tuple(normalize_name(e.name) for e in ents),
    )
    import random as _random

    again = build_content(planted, good.chain, good.relations, _random.Random(0))
    with pytest.raises(RevHopInvalid, match="contain"):
        check_content(again, planted)
    chosen = sample_content(planted, seed=11, hops=2, index=0)
    assert chosen.chain != good.chain
    check_content(chosen, planted)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 3), hops=st.integers(1, 5), index=st.integers(0, 500))
def test_any_sampled_item_is_valid_and_resolves(seed, hops, index):
    world = build_world(seed)
    c = sample_content(world, seed=seed, hops=hops, index=index)
    check_content(c, world)
    # following the world's relations from the start entity reaches the answer
    e = world.entities[c.chain[0]]
    for r in c.relations:
        e = world.entities[e.rel[r]]
    assert e.name == c.answer
    assert len(set(c.chain)) == hops + 1
