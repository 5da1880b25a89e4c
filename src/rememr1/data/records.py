"""The one record type every data file is loaded into, and lazily built long documents.

Whatever the source (MemAgent/ReMemR1 parquet or JSON, RULER JSON, our own generators),
evaluation and training see a `Sample`:

    s = Sample(id="q1", question="Who ...?", answers=["Ada"], context="Document 1: ...")
    for piece in iter_context_text(s.context):   # works for str and LazyContext alike
        ...

A context of several million tokens need not be one Python string: a `LazyContext`
produces its text piece by piece (`iter_text()`), deterministically, so a chunker can
consume it with bounded memory. `str(ctx)` materialises the whole text; use it only for
small documents.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Union


class LazyContext(ABC):
    """A document whose text is produced on demand, in order, in pieces.

    Subclasses implement `iter_text()`: it yields the document as consecutive text pieces
    (a few KB to a few MB each) whose concatenation is the document; calling it twice
    yields the same pieces. Pieces end on document/paragraph boundaries where the
    subclass can arrange it, so cutting at a piece boundary never splits a word.
    """

    @abstractmethod
    def iter_text(self) -> Iterator[str]:
        """Yield the document text in order, piece by piece."""

    def __str__(self) -> str:
        """The whole document as one string (materialises it: small documents only)."""
        return "".join(self.iter_text())

    def describe(self) -> dict[str, Any]:
        """A few facts about the document for logs (subclasses add what they know)."""
        return {"kind": type(self).__name__}


def group_pieces(blocks: Iterable[str], piece_chars: int) -> Iterator[str]:
    """Join consecutive text blocks into pieces of at least `piece_chars` characters (the
    last may be shorter), each ending at a block boundary: how lazy contexts yield text."""
    buf: list[str] = []
    size = 0
    for block in blocks:
        buf.append(block)
        size += len(block)
        if size >= piece_chars:
            yield "".join(buf)
            buf, size = [], 0
    if buf:
        yield "".join(buf)


Context = Union[str, LazyContext]


def iter_context_text(ctx: Context) -> Iterator[str]:
    """Yield the text of a context in order: a plain string as one piece, a lazy
    context piece by piece. Consumers never need to know which kind they got."""
    if isinstance(ctx, str):
        if ctx:
            yield ctx
        return
    if isinstance(ctx, LazyContext):
        yield from ctx.iter_text()
        return
    raise TypeError(f"context must be str or LazyContext, not {type(ctx).__name__}")


def agent_document(ctx: Context) -> str | Iterator[str]:
    """A context as the agent takes it: the text itself, or the pieces of a lazy context
    (so a multi-million-token document is never one string)."""
    return iter_context_text(ctx) if isinstance(ctx, LazyContext) else ctx


def context_to_str(ctx: Context) -> str:
    """Materialise a context as one string (for small documents and tests)."""
    return ctx if isinstance(ctx, str) else str(ctx)


@dataclass
class Sample:
    """One question over one document.

    `id` is unique within its file. `answers` lists the accepted aliases (first = the
    main one). `metadata` keeps the schema's other fields (num_docs, evidence_idx,
    data_source, hops, order, ...) plus `schema` (A/B/C/D) and `source_file`.
    """

    id: str
    question: str
    answers: list[str]
    context: Context
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_lazy(self) -> bool:
        return isinstance(self.context, LazyContext)

    def context_text(self) -> str:
        """The whole context as one string (materialises lazy contexts)."""
        return context_to_str(self.context)
