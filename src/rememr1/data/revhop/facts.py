"""The facts of a laid-out item, as records carry them for the oracle (`oracle.py`).

`evidence_facts`: each hop's subject, relation, object and the sentence stating it.
`candidate_facts`: every statement, anywhere in the document, of a hop-2..H relation, in
document order - what a reader who does not yet know the bridge would have to keep.
"""

from __future__ import annotations

import re
from typing import Any

from rememr1.data.revhop.content import ItemContent, RevHopInvalid, Special
from rememr1.data.revhop.context import filler_paragraph
from rememr1.data.revhop.layout import Layout
from rememr1.data.revhop.world import World


def evidence_facts(content: ItemContent, evidence: list[Special]) -> list[dict[str, Any]]:
    """One entry per evidence paragraph (in the order given): hop, subject, relation,
    object and the sentence that states it."""
    return [
        {"hop": s.hop, "subject": content.chain_names[s.hop - 1],
         "relation": content.relations[s.hop - 1], "object": content.chain_names[s.hop],
         "sentence": fact_sentence(s.para.text, content.chain_names[s.hop])}
        for s in evidence
    ]


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
