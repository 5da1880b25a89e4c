"""The text shape of a long context: numbered document blocks with blank lines between.

Every context this package writes or rebuilds (the HotpotQA-based files and index-only
contexts of `hotpot.py`, `build_longctx`, RevHop) is laid out as MemAgent's files are,
numbering from 1:

    Document 1:
    {title}
    {text}

    Document 2:
    ...

This module is the one place that shape is written. `document_block(i, document)` is block
i (0-based) together with the separator before it, so the concatenation of blocks
0..n-1 is the whole text and a lazy context can yield blocks one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

DOCUMENT_TEMPLATE = "Document {i}:\n{document}"
DOCUMENT_SEPARATOR = "\n\n"


def paragraph_text(title: str, sentences: Sequence[str] | str) -> str:
    """One paragraph as the originals write it: title, newline, sentences joined as is."""
    body = sentences if isinstance(sentences, str) else "".join(sentences)
    return f"{title}\n{body}"


def document_block(index: int, document: str) -> str:
    """Document `index` (0-based) of a context, preceded by the separator unless first."""
    return (DOCUMENT_SEPARATOR if index else "") + DOCUMENT_TEMPLATE.format(i=index + 1, document=document)


def join_documents(paragraphs: Sequence[str]) -> str:
    """The long-context text: "Document {i}:\\n{paragraph}" blocks (i from 1), blank lines
    between them."""
    return "".join(document_block(i, d) for i, d in enumerate(paragraphs))
