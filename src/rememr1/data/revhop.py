"""RevHop: an offline multi-hop long-context benchmark (SPEC §8), generated, not downloaded.

    rememr1 data revhop --out data/revhop --lengths 4k,16k,64k,1m --hops 2,3 --order reverse,forward -n 64
    paths = generate_revhop(out_dir="data/revhop", lengths=["4k"], hops=[2], orders=["reverse"], n=8)

An item is an H-hop chain through a seeded fictional world (`revhop_world`): the question
names only the start entity e0 ("Which city is the birthplace of the author of The
Morvane Letters?"); the bridge entities e1..e(H-1) and the answer eH appear only in the
document. Hop k's evidence is the paragraph about e(k-1), which states r_k(e(k-1)) = e_k.
The document ("Document {i}:\\n{title}\\n{text}" blocks, blank lines between, as in the
HotpotQA-based files) holds:
- the H evidence paragraphs at controlled token offsets with a minimum gap, in
  `reverse` order (hop 1 latest, the last hop earliest: a forward-only memory has already
  read past the later hops when it learns what to look for), `forward` order (control)
  or `random` order;
- siblings: paragraphs of the same kind about other entities that share the hop's bridge
  or at least its schema (memory pressure);
- decoys: item-local entities whose names are one letter away from the chain's names;
- filler: paragraphs about other world entities (never the chain's subjects), up to the
  target length. The world has 5,000 entities at `world_scale=1`; at multi-million-token
  lengths filler entities recur (fresh wording, same facts): 4M tokens is ~54K paragraphs,
  ~11 per entity. Raise `world_scale` for fewer repeats.

Lengths are in tokens (k = 1024), counted per document block with the named tokenizer or
the words x 1.92 estimate (`tokens.py`); the last block that fits ends the document, so
it is at most the target and within about one paragraph of it.

The question, evidence, siblings and decoys of item i depend only on (seed, hops, i), so
the same question appears at every length and order; the layout and filler depend on
(seed, length, hops, order, i). Every random draw is per item, so files are identical for
any worker count. Items above `lazy_above` tokens are stored as a generator spec instead
of text and materialised lazily (`RevHopContext`, bounded memory); the loaders rebuild
them. Schema A parquet (training) is written only for lengths stored as text.

Records also carry `evidence_facts` (each hop's subject, relation, object and sentence)
and, for text contexts, `candidate_facts` (every statement of a hop-2..H relation, in
document order): what `oracle.py` needs to write warm-start traces.

Validity checks run on every item and reject it (the generator then tries another chain)
when: the chain's answer is not unique given everything the item states; a bridge or the
answer is named in the question; a later-hop evidence paragraph shares a distinctive word
with the question (lexical shortcut); the answer is contained in another entity's name or
contains one (sub-EM could not tell them apart). Closed-book answerability is ~0 by
construction: every name is invented.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rememr1.data.io import JsonArrayWriter
from rememr1.data.parallel import ordered_map
from rememr1.data.records import LazyContext, group_pieces
from rememr1.data.revhop_world import (
    QUESTION_FRAME,
    QUESTION_PHRASE,
    RELATIONS,
    RELATIONS_OF,
    Entity,
    Paragraph,
    World,
    build_world,
    distinctive_words,
    near_miss,
    normalize_name,
    render_entity,
)
from rememr1.data.seeding import item_rng
from rememr1.data.tokens import TokenCounter, make_token_counter
from rememr1.errors import InputError

GENERATOR_VERSION = 1
ORDERS = ("reverse", "forward", "random")
FORMATS = ("json", "parquet")
LAZY_ABOVE = 1_000_000
# Minimum allowance for the tokens of one document block (paragraphs are ~60-130 SmolLM2
# tokens). Evidence targets are spaced by min_gap + slack, slack = max(this, twice the
# largest special block), so realised offsets (which overshoot a target by less than one
# block) keep at least min_gap between them; check_layout verifies it.
BLOCK_SLACK = 200
MAX_ATTEMPTS = 200
PIECE_CHARS = 1 << 18  # ~256K characters per lazily produced text piece

ProgressFn = Callable[[str, int, int], None]

_LENGTH_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_length(s: str | int) -> int:
    """'4k' -> 4096, '1m' -> 1048576, '1.5m', '5000' (k = 1024 tokens, as RULER counts)."""
    if isinstance(s, int):
        if s <= 0:
            raise InputError(f"length must be positive, got {s}")
        return s
    m = _LENGTH_RE.match(str(s))
    if not m:
        raise InputError(f"cannot read length {s!r}: use a token count like 4096, 4k, 256k or 1m")
    value = float(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    if value < 1:
        raise InputError(f"length must be positive, got {s!r}")
    return int(value)


def format_length(n: int) -> str:
    """Inverse of parse_length for round numbers: 4096 -> '4k', 1048576 -> '1m'."""
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)}m"
    if n % 1024 == 0:
        return f"{n // 1024}k"
    return str(n)


class RevHopInvalid(ValueError):
    """An item failed a validity check (the generator rejects it and tries another)."""


# ----------------------------------------------------------------------------- items


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


# ---------------------------------------------------------------------------- layout


def _block(doc_idx: int, para_title: str, text: str) -> str:
    return ("\n\n" if doc_idx else "") + f"Document {doc_idx + 1}:\n{para_title}\n{text}"


def filler_paragraph(world: World, excluded: frozenset[int], key: Sequence[Any], j: int) -> Paragraph:
    """Filler paragraph j of an item: a world entity other than the chain subjects,
    rendered with its own RNG, so it can be regenerated from (key, j) alone."""
    rng = item_rng("filler", *key, j)
    n = len(world.entities)
    eid = rng.randrange(n)
    while eid in excluded:
        eid = (eid + 1) % n
    return render_entity(world, world.entities[eid], rng)


def resolve_gap(length: int, hops: int, min_gap: int | float | None) -> int:
    if hops < 2:
        return 0
    if min_gap is None:
        return length // (2 * hops)
    if isinstance(min_gap, float) and 0 < min_gap < 1:
        return int(length * min_gap)
    return int(min_gap)


@dataclass
class Layout:
    num_docs: int
    tokens: int
    specials: list[Special]  # with doc_idx/offset filled, document order
    key: tuple


def layout_item(
    world: World, content: ItemContent, *, seed: int, length: int, order: str, index: int,
    counter: TokenCounter, min_gap: int | float | None = None,
) -> Layout:
    """Place evidence/siblings/decoys at token targets and fill up to `length` tokens."""
    hops = len(content.relations)
    gap = resolve_gap(length, hops, min_gap)
    rng = item_rng(seed, "layout", length, hops, order, index)
    biggest = max(counter.count(_block(1, s.para.title, s.para.text))
                  for s in content.evidence + content.others)
    slack = max(BLOCK_SLACK, 2 * biggest)
    end = length - slack
    span = end - (hops - 1) * (gap + slack)
    if end <= 0 or span < 0:
        raise InputError(
            f"length {length} is too short for {hops} evidence paragraphs {gap} tokens apart; "
            f"use a longer length or a smaller --min-gap"
        )
    slots = sorted(rng.uniform(0, span) for _ in range(hops))
    slots = [int(s + i * (gap + slack)) for i, s in enumerate(slots)]
    if order == "forward":
        assign = list(range(hops))
    elif order == "reverse":
        assign = list(range(hops - 1, -1, -1))
    elif order == "random":
        assign = list(range(hops))
        rng.shuffle(assign)
    else:
        raise InputError(f"unknown order {order!r}: use one of {', '.join(ORDERS)}")
    specials = [Special(ev.para, ev.role, ev.hop) for ev in content.evidence]
    for k, sp in enumerate(specials):
        sp.target = slots[assign[k]]
    for o in content.others:
        specials.append(Special(o.para, o.role, o.hop, target=int(rng.uniform(0, end))))
    queue = sorted(specials, key=lambda s: (s.target, s.role != "evidence"))
    key = (seed, length, hops, order, index)
    tokens = doc = j = 0
    qi = 0
    while True:
        if qi < len(queue) and queue[qi].target <= tokens:
            sp = queue[qi]
            qi += 1
            sp.doc_idx, sp.offset = doc, tokens
            tokens += counter.count(_block(doc, sp.para.title, sp.para.text))
            doc += 1
            continue
        para = filler_paragraph(world, content.excluded, key, j)
        t = counter.count(_block(doc, para.title, para.text))
        if qi >= len(queue) and tokens + t > length:
            break
        tokens += t
        doc += 1
        j += 1
    if tokens > length * 1.1 + slack:
        raise InputError(
            f"length {length} is too short for this item's {len(queue)} special paragraphs "
            f"({tokens} tokens); use a longer length or fewer siblings/decoys"
        )
    return Layout(num_docs=doc, tokens=tokens, specials=sorted(queue, key=lambda s: s.doc_idx), key=key)


def check_layout(offsets_by_hop: Sequence[int], order: str, min_gap: int) -> None:
    """Evidence appears in the requested order with at least `min_gap` tokens between
    consecutive evidence paragraphs; raises RevHopInvalid otherwise."""
    if order == "forward" and list(offsets_by_hop) != sorted(offsets_by_hop):
        raise RevHopInvalid("evidence is not in forward order")
    if order == "reverse" and list(offsets_by_hop) != sorted(offsets_by_hop, reverse=True):
        raise RevHopInvalid("evidence is not in reverse order")
    s = sorted(offsets_by_hop)
    if any(b - a < min_gap for a, b in zip(s, s[1:])):
        raise RevHopInvalid(f"evidence paragraphs closer than {min_gap} tokens")


# --------------------------------------------------------------------------- context


class RevHopContext(LazyContext):
    """A RevHop document regenerated on demand from its spec: the special paragraphs are
    stored, filler paragraph j is re-rendered from (key, j). Memory stays bounded by one
    text piece (~PIECE_CHARS) whatever the document length."""

    def __init__(self, spec: dict[str, Any], *, piece_chars: int = PIECE_CHARS):
        self.spec = spec
        self.piece_chars = piece_chars
        self.world = build_world(spec["seed"], spec["world_scale"])
        self.excluded = frozenset(spec["excluded"])
        self.key = tuple(spec["key"])
        self.specials = {int(p): (t, x) for p, t, x in spec["specials"]}

    def iter_blocks(self) -> Iterator[str]:
        j = 0
        for doc in range(self.spec["num_docs"]):
            if doc in self.specials:
                title, text = self.specials[doc]
            else:
                para = filler_paragraph(self.world, self.excluded, self.key, j)
                title, text = para.title, para.text
                j += 1
            yield _block(doc, title, text)

    def iter_text(self) -> Iterator[str]:
        return group_pieces(self.iter_blocks(), self.piece_chars)

    def describe(self) -> dict[str, Any]:
        return {"kind": "revhop", "num_docs": self.spec["num_docs"], "tokens": self.spec.get("tokens")}

    def __getstate__(self):
        return {"spec": self.spec, "piece_chars": self.piece_chars}

    def __setstate__(self, state):
        self.__init__(state["spec"], piece_chars=state["piece_chars"])


def context_from_spec(spec: dict[str, Any], *, where: str = "") -> RevHopContext:
    """Rebuild a lazily stored RevHop context (used by the loaders)."""
    if spec.get("version") != GENERATOR_VERSION:
        raise InputError(
            f"{where}: RevHop context written by generator version {spec.get('version')}, "
            f"this rememr1 reads version {GENERATOR_VERSION}; regenerate the file"
        )
    missing = [k for k in ("seed", "world_scale", "key", "excluded", "num_docs", "specials") if k not in spec]
    if missing:
        raise InputError(f"{where}: RevHop context spec lacks {', '.join(missing)}")
    return RevHopContext(spec)


# --------------------------------------------------------------------------- records


def make_item(
    *, seed: int, length: int, hops: int, order: str, index: int, counter: TokenCounter,
    min_gap: int | float | None = None, siblings: int = 2, decoys: bool = True,
    world_scale: float = 1.0, lazy_above: int = LAZY_ABOVE,
) -> dict[str, Any]:
    """One schema-D record (context as text, or as a spec above `lazy_above` tokens)."""
    world = build_world(seed, world_scale)
    content = sample_content(world, seed=seed, hops=hops, index=index, siblings=siblings, decoys=decoys)
    lay = layout_item(world, content, seed=seed, length=length, order=order, index=index,
                      counter=counter, min_gap=min_gap)
    ev = sorted((s for s in lay.specials if s.role == "evidence"), key=lambda s: s.hop)
    gap = resolve_gap(length, hops, min_gap)
    try:
        check_layout([s.offset for s in ev], order, gap)
    except RevHopInvalid as e:  # placement could not honour the request: a user setting
        raise InputError(
            f"{format_length(length)} tokens is too short to place {hops} evidence paragraphs "
            f"as asked ({e}); use a longer length or a smaller --min-gap"
        ) from None
    spec = {
        "generator": "revhop", "version": GENERATOR_VERSION, "seed": seed,
        "world_scale": world_scale, "key": list(lay.key), "excluded": sorted(content.excluded),
        "num_docs": lay.num_docs, "tokens": lay.tokens,
        "specials": [[s.doc_idx, s.para.title, s.para.text] for s in lay.specials],
    }
    lazy = length > lazy_above
    context: Any = spec if lazy else "".join(RevHopContext(spec).iter_text())
    evidence_idx = [s.doc_idx for s in ev]
    s_idx = sorted(evidence_idx)
    offs = sorted(s.offset for s in ev)
    return {
        "context": context,
        "input": content.question,
        "answers": [content.answer],
        "num_docs": lay.num_docs,
        "index": index,
        "is_ordered": evidence_idx == s_idx,
        "is_reverse_ordered": evidence_idx == sorted(evidence_idx, reverse=True),
        "min_distance": min((b - a for a, b in zip(s_idx, s_idx[1:])), default=None),
        "evidence_idx": evidence_idx,
        "level": f"{hops}-hop",
        "type": "revhop-chain",
        "id": f"revhop-s{seed}-h{hops}-{order}-{format_length(length)}-{index}",
        "data_source": "revhop",
        "hops": hops,
        "order": order,
        "seed": seed,
        "length": length,
        "tokens": lay.tokens,
        "token_counter": counter.name,
        "evidence_token_offsets": [s.offset for s in ev],
        "min_token_gap": min((b - a for a, b in zip(offs, offs[1:])), default=None),
        "requested_min_gap": gap,
        "chain": [
            {"name": world.entities[e].name, "kind": world.entities[e].kind, "relation": r}
            for e, r in zip(content.chain, content.relations + [None])
        ],
        "bridge_entities": content.chain_names[1:-1],
        "sibling_idx": [s.doc_idx for s in lay.specials if s.role == "sibling"],
        "decoy_idx": [s.doc_idx for s in lay.specials if s.role == "decoy"],
        "decoy_names": content.decoy_names,
        "evidence_facts": [
            {"hop": s.hop, "subject": content.chain_names[s.hop - 1],
             "relation": content.relations[s.hop - 1], "object": content.chain_names[s.hop],
             "sentence": fact_sentence(s.para.text, content.chain_names[s.hop])}
            for s in ev
        ],
        # Facts of the later hops' relations anywhere in the text: what a reader who does
        # not yet know the bridge would have to keep (the oracle's candidates).
        "candidate_facts": [] if lazy else candidate_facts(world, content, lay),
        "lazy": lazy,
    }


def candidate_facts(world: World, content: ItemContent, lay: Layout) -> list[dict[str, Any]]:
    """Every fact in the document, in document order, whose relation is one of hops
    2..H's (the relations a reader must watch before the bridge is known); each with its
    sentence and 0-based document index."""
    relations = set(content.relations[1:])
    if not relations:
        return []
    specials = {s.doc_idx: s.para for s in lay.specials}
    out: list[dict[str, Any]] = []
    j = 0
    for doc in range(lay.num_docs):
        if doc in specials:
            para = specials[doc]
        else:
            para = filler_paragraph(world, content.excluded, lay.key, j)
            j += 1
        for subject, relation, obj in para.facts:
            if relation in relations:
                out.append({"relation": relation, "subject": subject, "object": obj,
                            "sentence": fact_sentence(para.text, obj), "doc": doc})
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def fact_sentence(text: str, obj: str) -> str:
    """The sentence of a paragraph that names `obj` (an evidence paragraph states each of
    its relations in one sentence; the hop's object is named only there)."""
    for sentence in _SENTENCE_END.split(text):
        if obj in sentence:
            return sentence
    raise RevHopInvalid(f"no sentence names {obj!r}")


def to_training_row(rec: dict[str, Any]) -> dict[str, Any]:
    """Schema A row (MemAgent/ReMemR1 RL parquet) for a text-context record."""
    return {
        "data_source": "revhop",
        "prompt": [{"role": "user", "content": rec["input"]}],
        "context": rec["context"],
        "reward_model": {"ground_truth": list(rec["answers"]), "style": "rule"},
        "extra_info": {"index": rec["index"], "question": rec["input"], "num_docs": rec["num_docs"]},
    }


# ------------------------------------------------------------------------- generation

_W: dict[str, Any] = {}


def _init_worker(opts: dict[str, Any]) -> None:
    _W.clear()
    _W.update(opts)
    _W["counter"] = make_token_counter(opts["tokenizer"])
    build_world(opts["seed"], opts["world_scale"])


def _work(job: tuple[int, int, str, int]) -> tuple[str, dict[str, Any] | None]:
    length, hops, order, index = job
    rec = make_item(
        seed=_W["seed"], length=length, hops=hops, order=order, index=index,
        counter=_W["counter"], min_gap=_W["min_gap"], siblings=_W["siblings"],
        decoys=_W["decoys"], world_scale=_W["world_scale"], lazy_above=_W["lazy_above"],
    )
    row = to_training_row(rec) if ("parquet" in _W["formats"] and not rec["lazy"]) else None
    return json.dumps(rec, ensure_ascii=False), row


def _parse_list(values: Sequence[Any] | str, what: str) -> list[Any]:
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    values = list(values)
    if not values:
        raise InputError(f"{what}: give at least one value")
    return values


def generate_revhop(
    *,
    out_dir: str | os.PathLike,
    lengths: Sequence[int | str],
    hops: Sequence[int],
    orders: Sequence[str],
    n: int,
    seed: int = 0,
    workers: int = 1,
    tokenizer: Any = None,
    formats: Sequence[str] = FORMATS,
    min_gap: int | float | None = None,
    siblings: int = 2,
    decoys: bool = True,
    lazy_above: int = LAZY_ABOVE,
    world_scale: float = 1.0,
    progress: ProgressFn | None = None,
) -> list[Path]:
    """Write `eval_revhop_h{H}_{order}_{len}.json` (schema D) and, for lengths stored as
    text, `train_revhop_h{H}_{order}_{len}.parquet` (schema A). Returns the paths."""
    lens = [parse_length(x) for x in _parse_list(lengths, "--lengths")]
    hop_list = [int(h) for h in _parse_list(hops, "--hops")]
    order_list = [str(o).strip() for o in _parse_list(orders, "--order")]
    fmt = [str(f).strip() for f in _parse_list(formats, "--format")]
    for h in hop_list:
        if h < 1:
            raise InputError(f"--hops must be at least 1, got {h}")
    for o in order_list:
        if o not in ORDERS:
            raise InputError(f"unknown order {o!r}: use one of {', '.join(ORDERS)}")
    for f in fmt:
        if f not in FORMATS:
            raise InputError(f"unknown format {f!r}: use json and/or parquet")
    if n < 1:
        raise InputError("-n must be at least 1")
    if siblings < 0:
        raise InputError("--siblings must be 0 or more")
    if not world_scale > 0:
        raise InputError("--world-scale must be positive")
    if not isinstance(tokenizer, (str, os.PathLike, type(None))) and workers > 1:
        workers = 1  # a tokenizer object may not survive pickling; stay in-process
    if isinstance(tokenizer, os.PathLike):
        tokenizer = str(tokenizer)
    make_token_counter(tokenizer)  # fail early on a bad --tokenizer
    opts = {
        "seed": seed, "tokenizer": tokenizer, "min_gap": min_gap, "siblings": siblings,
        "decoys": decoys, "world_scale": world_scale, "lazy_above": lazy_above, "formats": fmt,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    groups = [(L, h, o) for L in lens for h in hop_list for o in order_list]
    jobs = [(L, h, o, i) for (L, h, o) in groups for i in range(n)]
    results = ordered_map(_work, jobs, workers=workers, initializer=_init_worker, initargs=(opts,))
    try:
        _write_groups(results, groups, n, fmt, out, lazy_above, written, progress, len(jobs))
    finally:
        results.close()
    return written


def _write_groups(results, groups, n, fmt, out, lazy_above, written, progress, total) -> None:
    done = 0
    for L, h, o in groups:
        stem = f"revhop_h{h}_{o}_{format_length(L)}"
        json_path = out / f"eval_{stem}.json"
        want_parquet = "parquet" in fmt and L <= lazy_above
        pq_path = out / f"train_{stem}.parquet"
        rows: list[dict[str, Any]] = []
        pq_writer = None
        try:
            with JsonArrayWriter(json_path) if "json" in fmt else _Null() as jw:
                for _ in range(n):
                    text, row = next(results)
                    jw.write(text)
                    if want_parquet and row is not None:
                        rows.append(row)
                        if len(rows) >= 16:
                            pq_writer = _write_rows(pq_path, rows, pq_writer)
                            rows = []
                    done += 1
                    if progress:
                        progress(f"revhop {stem}", done, total)
            if want_parquet:
                pq_writer = _write_rows(pq_path, rows, pq_writer)
                pq_writer.close()
                pq_writer = None
                tmp = pq_path.with_name(pq_path.name + ".part")
                os.replace(tmp, pq_path)
                written.append(pq_path)
        finally:
            if pq_writer is not None:  # failed part-way: drop the partial file
                pq_writer.close()
                pq_path.with_name(pq_path.name + ".part").unlink(missing_ok=True)
        if "json" in fmt:
            written.append(json_path)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def write(self, _):
        pass


def _write_rows(path: Path, rows: list[dict[str, Any]], writer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".part")
    if writer is None:
        schema = pa.schema([
            ("data_source", pa.string()),
            ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
            ("context", pa.large_string()),
            ("reward_model", pa.struct([("ground_truth", pa.list_(pa.string())), ("style", pa.string())])),
            ("extra_info", pa.struct([
                ("index", pa.int64()), ("question", pa.string()), ("num_docs", pa.int64()),
            ])),
        ])
        writer = pq.ParquetWriter(tmp, schema)
    if rows:
        writer.write_table(pa.Table.from_pylist(rows, schema=writer.schema))
    return writer
