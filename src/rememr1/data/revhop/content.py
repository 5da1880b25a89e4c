"""What a RevHop item says, independent of its length and order: the chain, the question,
the evidence, siblings and decoys, and the checks that make the answer unique.

An item is an H-hop chain e0 --r1--> e1 ... --rH--> eH through the world. The question
names only e0 and the relations; hop k's evidence is the paragraph about e(k-1). Siblings
are paragraphs about other entities that share the hop's bridge or at least its kind;
decoys are item-local entities whose names are one letter away from the chain's. All of
it depends only on (seed, hops, index), so the same question appears at every length
and order. `sample_content` walks chains until one passes `check_content`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rememr1.data.revhop.world import (
    QUESTION_FRAME,
    QUESTION_PHRASE,
    RELATIONS,
    RELATIONS_OF,
    Entity,
    Paragraph,
    World,
    distinctive_words,
    near_miss,
    normalize_name,
    render_entity,
)
from rememr1.data.seeding import item_rng
from rememr1.errors import InputError

MAX_ATTEMPTS = 200


class RevHopInvalid(ValueError):
    """An item failed a validity check (the generator rejects it and tries another)."""


@dataclass
class Special:
    """A non-filler paragraph of an item and where it went."""

    para: Paragraph
    role: str  # "evidence" | "sibling" | "decoy"
    hop: int | None = None  # 1-based hop for evidence
    target: int = 0  # requested token offset
    doc_idx: int = -1  # 0-based document position, after layout
    offset: int = -1  # realised token offset, after layout


@dataclass
class ItemContent:
    """What an item says, independent of length and order (depends on seed, hops, i)."""

    question: str
    answer: str
    chain: list[int]  # entity ids e0..eH
    chain_names: list[str]
    relations: list[str]  # r1..rH
    evidence: list[Special]  # hop order
    others: list[Special]  # siblings and decoys
    excluded: frozenset[int]  # world entity ids filler must not describe
    decoy_names: list[str]
    attempt: int = 0


def make_question(relations: Sequence[str], start_name: str, answer_kind: str) -> str:
    np = "{x}"
    for r in reversed(relations):  # outermost phrase is the last hop
        np = np.replace("{x}", QUESTION_PHRASE[r])
    np = np.replace("{x}", start_name)
    return QUESTION_FRAME[answer_kind].format(np=np)


def _walk(world: World, start: int, hops: int, rng) -> tuple[list[int], list[str]] | None:
    chain, rels = [start], []
    for _ in range(hops):
        cur = world.entities[chain[-1]]
        options = [r for r in RELATIONS_OF[cur.kind] if cur.rel[r] not in chain]
        if not options:
            return None
        r = rng.choice(options)
        rels.append(r)
        chain.append(cur.rel[r])
    return chain, rels


def build_content(
    world: World, chain: list[int], relations: list[str], rng, *, siblings: int = 2,
    decoys: bool = True, attempt: int = 0,
) -> ItemContent:
    """Question, evidence, siblings and decoys for a given chain (no checks)."""
    names = [world.entities[e].name for e in chain]
    answer_kind = RELATIONS[relations[-1]][1]
    question = make_question(relations, names[0], answer_kind)
    evidence = [
        Special(render_entity(world, world.entities[chain[k]], rng), "evidence", hop=k + 1)
        for k in range(len(relations))
    ]
    chain_set = set(chain)
    others: list[Special] = []
    used: set[int] = set(chain)
    for k, r in enumerate(relations):
        subj_kind = world.entities[chain[k]].kind
        sharing = [s for s in world.inverse.get((r, chain[k + 1]), []) if s not in used]
        rng.shuffle(sharing)
        pool = world.by_kind[subj_kind]
        picked = sharing[:siblings]
        for _ in range(50 * siblings):
            if len(picked) >= siblings:
                break
            s = rng.choice(pool)
            if s not in used and s not in picked:
                picked.append(s)
        for s in picked:
            used.add(s)
            others.append(Special(render_entity(world, world.entities[s], rng), "sibling", hop=k + 1))
    decoy_names: list[str] = []
    if decoys:
        taken = set(world.names)
        for j, eid in enumerate(chain):
            ent = world.entities[eid]
            dname = near_miss(ent.name, rng, taken)
            if dname is None:
                continue
            taken.add(dname)
            decoy_names.append(dname)
            rel = {}
            for r in RELATIONS_OF[ent.kind]:
                cands = world.by_kind[RELATIONS[r][1]]
                while True:
                    t = rng.choice(cands)
                    if t not in chain_set:
                        break
                rel[r] = t
            dec = Entity(-1 - j, ent.kind, dname, rel=rel, attrs=dict(ent.attrs))
            others.append(Special(render_entity(world, dec, rng), "decoy"))
    return ItemContent(
        question=question, answer=names[-1], chain=list(chain), chain_names=names,
        relations=list(relations), evidence=evidence, others=others,
        excluded=frozenset(chain[:-1]), decoy_names=decoy_names, attempt=attempt,
    )


def check_content(content: ItemContent, world: World) -> None:
    """Validity checks on what an item states; raises RevHopInvalid naming the problem."""
    q, ans = content.question, content.answer
    specials = content.evidence + content.others
    hops = len(content.relations)
    # 1. Unique answer: every statement of (e(k-1), r_k) in the item names e_k, each hop's
    #    evidence states it, and filler never describes a chain subject.
    stated: dict[tuple[str, str], set[str]] = {}
    for sp in specials:
        for s, r, o in sp.para.facts:
            stated.setdefault((s, r), set()).add(o)
    for k in range(hops):
        subj, rel, obj = content.chain_names[k], content.relations[k], content.chain_names[k + 1]
        objs = stated.get((subj, rel), set())
        if objs != {obj}:
            raise RevHopInvalid(
                f"answer not unique: hop {k + 1} ({subj} --{rel}-->) is stated as {sorted(objs)}"
            )
        ev = content.evidence[k].para
        if (subj, rel, obj) not in ev.facts or subj not in ev.text or obj not in ev.text:
            raise RevHopInvalid(f"hop {k + 1} evidence does not state {subj} --{rel}--> {obj}")
        if content.chain[k] not in content.excluded:
            raise RevHopInvalid(f"filler may describe chain entity {subj}")
    if set(content.decoy_names) & world.names:
        raise RevHopInvalid("a decoy reuses a world name")
    # 2. Bridges and answer never appear in the question.
    nq = normalize_name(q)
    qwords = distinctive_words(q)
    for name in content.chain_names[1:]:
        if normalize_name(name) in nq or distinctive_words(name) & qwords:
            raise RevHopInvalid(f"question names chain entity {name!r}")
    # 3. No lexical shortcut from the question to hops >= 2.
    for k in range(1, hops):
        shared = qwords & distinctive_words(content.evidence[k].para.text)
        if shared:
            raise RevHopInvalid(
                f"lexical shortcut: hop {k + 1} evidence shares {sorted(shared)} with the question"
            )
    # 4. The answer is not contained in another entity's name and contains none.
    na = normalize_name(ans)
    answer_id = content.chain[-1]
    others = [n for eid, n in enumerate(world.norm_names) if eid != answer_id]
    others += [normalize_name(n) for n in content.decoy_names]
    for on in others:
        if na in on or on in na:
            raise RevHopInvalid(f"answer {ans!r} and name {on!r} contain one another")
    if na in nq:
        raise RevHopInvalid("the answer appears in the question")


def sample_content(world: World, *, seed: int, hops: int, index: int, siblings: int = 2,
                   decoys: bool = True) -> ItemContent:
    """The checked content of item `index` for `hops` hops (first chain passing checks)."""
    order = _start_order(world, seed, hops)
    last: Exception | None = None
    for attempt in range(MAX_ATTEMPTS):
        rng = item_rng(seed, "content", hops, index, attempt)
        start = order[(index + attempt * 7919) % len(order)]
        walk = _walk(world, start, hops, rng)
        if walk is None:
            continue
        content = build_content(world, *walk, rng, siblings=siblings, decoys=decoys, attempt=attempt)
        try:
            check_content(content, world)
        except RevHopInvalid as e:
            last = e
            continue
        return content
    raise InputError(
        f"RevHop: no valid {hops}-hop item found for index {index} after {MAX_ATTEMPTS} tries"
        + (f" (last problem: {last})" if last else "") + "; try fewer hops or a larger world"
    )


_START_CACHE: dict[tuple[int, float, int, int], list[int]] = {}


def _start_order(world: World, seed: int, hops: int) -> list[int]:
    """A seeded permutation of start entities: item i starts from the i-th (distinct
    questions for distinct items)."""
    key = (world.seed, world.scale, seed, hops)
    if key not in _START_CACHE:
        order = list(range(len(world.entities)))
        item_rng(seed, "starts", hops).shuffle(order)
        _START_CACHE[key] = order
    return _START_CACHE[key]
