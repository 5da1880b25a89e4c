"""A RevHop document as stored and as rebuilt: the spec and the lazy context.

A RevHop context is fully described by a small *spec*: the world (seed, scale), the
item's key, the entities filler must not describe, the number of documents and the text
of the few special paragraphs (evidence, siblings, decoys) with their positions. Every
other document is filler paragraph j, re-rendered from (key, j) alone. Records above
`--lazy-above` tokens store the spec instead of the text; the loaders rebuild them here.

This module is what reading a RevHop file needs, and nothing more: it must not import the
generator (content, layout, item, write), so loading a dataset never pulls it in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from rememr1.data.documents import document_block, paragraph_text
from rememr1.data.records import LazyContext, group_pieces
from rememr1.data.revhop.world import Paragraph, World, build_world, render_entity
from rememr1.data.seeding import item_rng
from rememr1.errors import InputError

GENERATOR_VERSION = 1
PIECE_CHARS = 1 << 18  # ~256K characters per lazily produced text piece
SPEC_FIELDS = ("seed", "world_scale", "key", "excluded", "num_docs", "specials")


def paragraph_block(doc_idx: int, title: str, text: str) -> str:
    """Document `doc_idx` (0-based) of a RevHop context: a paragraph as a document block."""
    return document_block(doc_idx, paragraph_text(title, text))


def filler_paragraph(world: World, excluded: frozenset[int], key: Sequence[Any], j: int) -> Paragraph:
    """Filler paragraph j of an item: a world entity other than the chain subjects,
    rendered with its own RNG, so it can be regenerated from (key, j) alone."""
    rng = item_rng("filler", *key, j)
    n = len(world.entities)
    eid = rng.randrange(n)
    while eid in excluded:
        eid = (eid + 1) % n
    return render_entity(world, world.entities[eid], rng)


def make_spec(
    *, seed: int, world_scale: float, key: Sequence[Any], excluded: frozenset[int] | Sequence[int],
    num_docs: int, tokens: int, specials: Sequence[tuple[int, str, str]],
) -> dict[str, Any]:
    """The stored form of a context; `specials` are (document index, title, text)."""
    return {
        "generator": "revhop", "version": GENERATOR_VERSION, "seed": seed,
        "world_scale": world_scale, "key": list(key), "excluded": sorted(excluded),
        "num_docs": num_docs, "tokens": tokens,
        "specials": [[d, title, text] for d, title, text in specials],
    }


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
            yield paragraph_block(doc, title, text)

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
    missing = [k for k in SPEC_FIELDS if k not in spec]
    if missing:
        raise InputError(f"{where}: RevHop context spec lacks {', '.join(missing)}")
    return RevHopContext(spec)
