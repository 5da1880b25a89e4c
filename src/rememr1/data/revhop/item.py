"""One RevHop record: an item's content laid out at one length and order, as a schema-D
record (context as text, or as a spec above `lazy_above` tokens), and its schema-A
training row.
"""

from __future__ import annotations

from typing import Any

from rememr1.data.lengths import format_length
from rememr1.data.revhop.content import RevHopInvalid, sample_content
from rememr1.data.revhop.context import RevHopContext, make_spec
from rememr1.data.revhop.facts import candidate_facts, evidence_facts
from rememr1.data.revhop.layout import check_layout, layout_item, resolve_gap
from rememr1.data.revhop.world import build_world
from rememr1.data.tokens import TokenCounter
from rememr1.errors import InputError

LAZY_ABOVE = 1_000_000


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
    spec = make_spec(
        seed=seed, world_scale=world_scale, key=lay.key, excluded=content.excluded,
        num_docs=lay.num_docs, tokens=lay.tokens,
        specials=[(s.doc_idx, s.para.title, s.para.text) for s in lay.specials],
    )
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
        "evidence_facts": evidence_facts(content, ev),
        # Facts of the later hops' relations anywhere in the text: what a reader who does
        # not yet know the bridge would have to keep (the oracle's candidates).
        "candidate_facts": [] if lazy else candidate_facts(world, content, lay),
        "lazy": lazy,
    }


def to_training_row(rec: dict[str, Any]) -> dict[str, Any]:
    """Schema A row (MemAgent/ReMemR1 RL parquet) for a text-context record."""
    return {
        "data_source": "revhop",
        "prompt": [{"role": "user", "content": rec["input"]}],
        "context": rec["context"],
        "reward_model": {"ground_truth": list(rec["answers"]), "style": "rule"},
        "extra_info": {"index": rec["index"], "question": rec["input"], "num_docs": rec["num_docs"]},
    }
