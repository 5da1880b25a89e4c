"""RevHop: determinism, evidence order and gaps, validity checks that reject planted
violations, lazy streaming with bounded memory, token estimate, output schemas."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rememr1.data import generate_revhop, load_samples, parse_length
from rememr1.data.records import LazyContext
from rememr1.data.revhop import (
    RevHopInvalid,
    Special,
    build_content,
    check_content,
    check_layout,
    format_length,
    make_item,
    sample_content,
)
from rememr1.data.revhop_world import (
    Paragraph,
    World,
    build_world,
    normalize_name,
)
from rememr1.data.tokens import WORDS_TO_TOKENS, WordEstimate, make_token_counter, measure_ratio
from rememr1.errors import InputError

DOC_RE = re.compile(r"(?:^|\n\n)Document (\d+):\n")


def blocks(text: str) -> list[str]:
    """The document blocks as the generator emits them (separator included from the 2nd)."""
    starts = [m.start() for m in DOC_RE.finditer(text)]
    return [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]


def title(block: str) -> str:
    return block.lstrip("\n").split("\n")[1]


def test_parse_length():
    assert parse_length("4k") == 4096
    assert parse_length("16K") == 16384
    assert parse_length("1m") == 1048576
    assert parse_length("1.5m") == 1572864
    assert parse_length("5000") == 5000
    assert parse_length(300) == 300
    for bad in ("", "4g", "k", "-3", "0"):
        with pytest.raises(InputError):
            parse_length(bad)
    assert format_length(4096) == "4k" and format_length(1048576) == "1m" and format_length(5000) == "5000"


def test_deterministic_across_runs_and_workers(tmp_path):
    kw = dict(lengths=["4k", "6k"], hops=[2, 3], orders=["reverse", "random"], n=3, seed=5)
    a = generate_revhop(out_dir=tmp_path / "a", **kw)
    b = generate_revhop(out_dir=tmp_path / "b", **kw)
    c = generate_revhop(out_dir=tmp_path / "c", workers=2, **kw)
    assert len(a) == 16  # 8 groups x (json + parquet)
    for pa_, pb, pc in zip(a, b, c):
        assert pa_.name == pb.name == pc.name
        assert pa_.read_bytes() == pb.read_bytes() == pc.read_bytes()
    d = generate_revhop(out_dir=tmp_path / "d", **{**kw, "seed": 6, "lengths": ["4k"]})
    assert d[1].read_bytes() != a[1].read_bytes()


def test_same_question_across_lengths_and_orders():
    c = WordEstimate()
    items = [make_item(seed=1, length=L, hops=3, order=o, index=4, counter=c)
             for L in (4096, 9000) for o in ("reverse", "forward")]
    assert len({(it["input"], it["answers"][0]) for it in items}) == 1
    assert len({it["context"] for it in items}) == 4
    other = make_item(seed=1, length=4096, hops=3, order="reverse", index=5, counter=c)
    assert other["input"] != items[0]["input"]


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


def test_chain_subjects_never_in_filler():
    it = make_item(seed=4, length=30000, hops=3, order="forward", index=2, counter=WordEstimate())
    bl = blocks(it["context"])
    subjects = [e["name"] for e in it["chain"][:-1]]
    for s in subjects:
        assert sum(title(b) == s for b in bl) == 1


# ------------------------------------------------------------------- validity checks


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(0)


@pytest.fixture(scope="module")
def content(world):
    return sample_content(world, seed=0, hops=3, index=0)


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


def test_check_layout_rejects_wrong_order_or_gap():
    check_layout([900, 500, 100], "reverse", 300)
    with pytest.raises(RevHopInvalid, match="reverse"):
        check_layout([100, 500, 900], "reverse", 300)
    with pytest.raises(RevHopInvalid, match="forward"):
        check_layout([900, 500, 100], "forward", 300)
    with pytest.raises(RevHopInvalid, match="closer"):
        check_layout([100, 350, 900], "forward", 300)


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


# ---------------------------------------------------------------- lazy contexts


def test_million_token_item_streams_in_bounded_memory(tmp_path):
    (path,) = generate_revhop(out_dir=tmp_path, lengths=["1m"], hops=[3], orders=["reverse"],
                              n=1, formats=["json"])
    raw = json.loads(path.read_text())[0]
    assert isinstance(raw["context"], dict) and raw["lazy"]
    assert path.stat().st_size < 200_000  # a spec, not megabytes of text
    (s,) = load_samples(path)
    assert isinstance(s.context, LazyContext)
    ctx = s.context
    tracemalloc.start()
    try:
        total = biggest = n_docs = 0
        for piece in ctx.iter_text():
            total += len(piece)
            biggest = max(biggest, len(piece))
            n_docs += piece.count("Document ")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 3_000_000  # about a million tokens of text ...
    assert biggest < 300_000  # ... in pieces of at most ~256K characters
    assert peak < 1_500_000  # never more than a small window in memory
    assert n_docs >= raw["num_docs"]
    assert raw["tokens"] <= parse_length("1m") and raw["tokens"] > parse_length("1m") - 400


def test_lazy_and_materialised_contexts_are_identical(tmp_path):
    kw = dict(lengths=["5k"], hops=[2], orders=["forward"], n=2, seed=9, formats=["json"])
    (text_path,) = generate_revhop(out_dir=tmp_path / "t", **kw)
    (lazy_path,) = generate_revhop(out_dir=tmp_path / "l", lazy_above=1000, **kw)
    plain = load_samples(text_path)
    lazy = load_samples(lazy_path)
    assert all(isinstance(s.context, str) for s in plain)
    assert all(isinstance(s.context, LazyContext) for s in lazy)
    assert [str(s.context) for s in lazy] == [s.context for s in plain]
    # lazy contexts travel to worker processes as their small spec
    clone = pickle.loads(pickle.dumps(lazy[0].context))
    assert str(clone) == plain[0].context
    assert [s.metadata["evidence_token_offsets"] for s in lazy] == [
        s.metadata["evidence_token_offsets"] for s in plain]


# ------------------------------------------------------------- outputs and tokens


def test_schema_d_and_schema_a_outputs(tmp_path):
    paths = generate_revhop(out_dir=tmp_path, lengths=["4k"], hops=[2], orders=["reverse"], n=3)
    names = sorted(p.name for p in paths)
    assert names == ["eval_revhop_h2_reverse_4k.json", "train_revhop_h2_reverse_4k.parquet"]
    d = load_samples(tmp_path / names[0])
    a = load_samples(tmp_path / names[1])
    assert [s.metadata["schema"] for s in d + a] == ["D"] * 3 + ["A"] * 3
    for sd, sa in zip(d, a):
        assert sd.question == sa.question and sd.answers == sa.answers
        assert sd.context == sa.context
        assert sa.metadata["data_source"] == "revhop"
        assert sa.metadata["num_docs"] == sd.metadata["num_docs"]
        assert sa.metadata["reward_style"] == "rule"
        m = sd.metadata
        for key in ("evidence_idx", "is_ordered", "is_reverse_ordered", "min_distance", "level",
                    "type", "hops", "order", "seed", "evidence_token_offsets", "num_docs"):
            assert key in m
        assert (m["hops"], m["order"], m["seed"]) == (2, "reverse", 0)
    assert len({s.id for s in d}) == 3


def test_bad_options(tmp_path):
    base = dict(out_dir=tmp_path, lengths=["4k"], hops=[2], orders=["reverse"], n=1)
    with pytest.raises(InputError, match="order"):
        generate_revhop(**{**base, "orders": ["sideways"]})
    with pytest.raises(InputError, match="format"):
        generate_revhop(**{**base, "formats": ["csv"]})
    with pytest.raises(InputError, match="hops"):
        generate_revhop(**{**base, "hops": [0]})
    with pytest.raises(InputError, match="tokenizer"):
        generate_revhop(**{**base, "tokenizer": str(tmp_path / "no-such-tokenizer")})


def test_word_estimate_matches_builtin_tokenizer():
    """The documented words->tokens ratio holds against SmolLM2 on RevHop text."""
    smol = make_token_counter("smollm2")
    it = make_item(seed=7, length=16384, hops=2, order="reverse", index=0, counter=WordEstimate())
    ratio = measure_ratio([it["context"]], smol)
    assert abs(ratio - WORDS_TO_TOKENS) / WORDS_TO_TOKENS < 0.04


def test_named_tokenizer_counts_tokens():
    smol = make_token_counter("smollm2")
    it = make_item(seed=7, length=6000, hops=2, order="forward", index=1, counter=smol)
    assert it["token_counter"] == "smollm2-135m-instruct"
    whole = smol.count(it["context"])
    assert abs(whole - it["tokens"]) <= 0.02 * it["tokens"]
    assert it["tokens"] <= 6000
