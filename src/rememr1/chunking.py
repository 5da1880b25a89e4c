"""Cut a document into chunks of the policy model's own tokens.

The document is tokenised once, in blocks of about 16K characters split just before a
whitespace character (so BPE/SentencePiece tokenizers, which attach the leading space to
the next word, give the same tokens as for the whole string in practice), and held as one
int32 array: 4 bytes a token, linear time, a multi-million-token document is fine. Chunks
are decoded lazily from that array.

Simplification, stated honestly: a tokenizer that merges across whitespace could tokenise a
block boundary differently from the whole text; the chunk text is still exactly the
document's text, only the chunk boundary can move by a token.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .backends.base import Tokenizer
from .errors import InputError

DEFAULT_CHUNK_SIZE = 5000
_BLOCK_CHARS = 16_384


def _blocks(pieces: Iterable[str]) -> Iterator[str]:
    """Re-cut a stream of text pieces into blocks of about _BLOCK_CHARS characters,
    each cut placed just before a whitespace character."""
    carry = ""
    for piece in pieces:
        carry += piece
        pos = 0  # cut by moving an index: re-slicing the rest each time would be quadratic
        while len(carry) - pos > 2 * _BLOCK_CHARS:
            lo, hi = pos + _BLOCK_CHARS // 2, pos + 2 * _BLOCK_CHARS
            cut = max(carry.rfind(" ", lo, hi), carry.rfind("\n", lo, hi))
            if cut <= pos:
                cut = pos + _BLOCK_CHARS
            yield carry[pos:cut]
            pos = cut
        carry = carry[pos:]
    if carry:
        yield carry


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int  # token offsets [start, end) in the (possibly truncated) document
    end: int
    text: str


class TokenizedDocument:
    """A document as one token-id array, with optional centre truncation."""

    def __init__(
        self,
        text: str | Iterable[str],
        tokenizer: Tokenizer,
        *,
        max_tokens: int | None = None,
    ) -> None:
        pieces = [text] if isinstance(text, str) else text
        arrays = []
        has_text = False
        for block in _blocks(pieces):
            has_text = has_text or bool(block.strip())
            ids = tokenizer.encode(block)
            if ids:
                arrays.append(np.asarray(ids, dtype=np.int32))
        ids = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)
        self.original_tokens = int(ids.size)
        if self.original_tokens == 0 or not has_text:
            raise InputError("the document is empty")
        self.truncated = False
        if max_tokens is not None and ids.size > max_tokens:
            # Centre truncation: keep the first and the last halves, drop the middle.
            head = max_tokens // 2
            ids = np.concatenate([ids[:head], ids[ids.size - (max_tokens - head) :]])
            self.truncated = True
        self.ids = ids
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return int(self.ids.size)

    def spans(self, chunk_size: int) -> list[tuple[int, int]]:
        if chunk_size <= 0:
            raise InputError(f"chunk size must be positive, got {chunk_size}")
        n = len(self)
        return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]

    def decode(self, start: int, end: int) -> str:
        return self.tokenizer.decode(self.ids[start:end].tolist())

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        for i, (s, e) in enumerate(self.spans(chunk_size)):
            yield Chunk(i, s, e, self.decode(s, e))

    def text(self) -> str:
        return self.decode(0, len(self))
