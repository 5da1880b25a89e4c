"""Where an item's paragraphs go: evidence, siblings and decoys at token offsets, filler
up to the target length.

Lengths are in tokens, counted per document block with the item's `TokenCounter`; the
last block that fits ends the document, so it is at most the target and within about one
paragraph of it. The H evidence paragraphs are placed at seeded targets at least
`min_gap` tokens apart, in `reverse` order (hop 1 latest), `forward` order or `random`
order; siblings and decoys at uniform targets. Depends on (seed, length, hops, order,
index).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rememr1.data.revhop.content import ItemContent, RevHopInvalid, Special
from rememr1.data.revhop.context import filler_paragraph, paragraph_block
from rememr1.data.revhop.world import World
from rememr1.data.seeding import item_rng
from rememr1.data.tokens import TokenCounter
from rememr1.errors import InputError

ORDERS = ("reverse", "forward", "random")
# Minimum allowance for the tokens of one document block (paragraphs are ~60-130 SmolLM2
# tokens). Evidence targets are spaced by min_gap + slack, slack = max(this, twice the
# largest special block), so realised offsets (which overshoot a target by less than one
# block) keep at least min_gap between them; check_layout verifies it.
BLOCK_SLACK = 200


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
    biggest = max(counter.count(paragraph_block(1, s.para.title, s.para.text))
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
            tokens += counter.count(paragraph_block(doc, sp.para.title, sp.para.text))
            doc += 1
            continue
        para = filler_paragraph(world, content.excluded, key, j)
        t = counter.count(paragraph_block(doc, para.title, para.text))
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
