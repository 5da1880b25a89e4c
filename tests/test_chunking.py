"""Chunking by the model's tokenizer: exact spans, lazy input, linear work, truncation."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rememr1.chunking import TokenizedDocument
from rememr1.errors import InputError

from conftest import CharTokenizer


class CountingTokenizer(CharTokenizer):
    def __init__(self):
        self.calls: list[int] = []

    def encode(self, text):
        self.calls.append(len(text))
        return super().encode(text)


@settings(max_examples=100, deadline=None)
@given(text=st.text(min_size=1, max_size=3000).filter(str.strip),
       size=st.integers(min_value=1, max_value=500))
def test_chunks_cover_document_exactly(text, size):
    doc = TokenizedDocument(text, CharTokenizer())
    chunks = list(doc.chunks(size))
    assert "".join(c.text for c in chunks) == text
    assert all(c.end - c.start <= size for c in chunks)
    assert [c.start for c in chunks] == list(range(0, len(text), size))


def test_multi_million_token_document_is_tokenised_in_linear_work():
    words = ("lorem ipsum dolor sit amet " * 80_000)  # 2.16M characters = tokens here
    tok = CountingTokenizer()
    doc = TokenizedDocument(words, tok)
    assert len(doc) == len(words)
    # every character is encoded exactly once, in bounded blocks
    assert sum(tok.calls) == len(words)
    assert max(tok.calls) <= 2 * 16_384 + 1
    assert doc.decode(len(doc) - 5, len(doc)) == "amet "


def test_lazy_pieces_equal_one_string():
    text = "".join(f"Document {i}:\nsome words here.\n\n" for i in range(3000))
    pieces = (text[i:i + 7000] for i in range(0, len(text), 7000))
    a = TokenizedDocument(text, CharTokenizer())
    b = TokenizedDocument(pieces, CharTokenizer())
    assert a.ids.tolist() == b.ids.tolist()


def test_block_cuts_fall_before_whitespace():
    tok = CountingTokenizer()
    seen = []
    orig = tok.encode

    def encode(text):
        seen.append(text)
        return orig(text)

    tok.encode = encode
    TokenizedDocument("word " * 20_000, tok)
    assert len(seen) > 1
    assert all(block[0] == " " for block in seen[1:])  # a cut never splits a word


def test_centre_truncation():
    doc = TokenizedDocument("a" * 50 + "b" * 100 + "c" * 50, CharTokenizer(), max_tokens=101)
    assert doc.truncated and doc.original_tokens == 200 and len(doc) == 101
    assert doc.text() == "a" * 50 + "b" + "c" * 50  # first half, last half (+1)


def test_empty_and_bad_sizes():
    with pytest.raises(InputError, match="empty"):
        TokenizedDocument(" \n\t ", CharTokenizer())
    with pytest.raises(InputError, match="empty"):
        TokenizedDocument(iter([]), CharTokenizer())
    with pytest.raises(InputError, match="positive"):
        TokenizedDocument("x", CharTokenizer()).spans(0)
