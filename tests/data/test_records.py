"""The record type and the str/lazy context contract."""

from __future__ import annotations

import pytest

from rememr1.data import LazyContext, Sample, context_to_str, iter_context_text


class Pieces(LazyContext):
    def __init__(self, pieces):
        self.pieces = pieces

    def iter_text(self):
        yield from self.pieces


def test_plain_string_is_one_piece():
    assert list(iter_context_text("abc def")) == ["abc def"]
    assert list(iter_context_text("")) == []


def test_lazy_context_streams_and_materialises():
    ctx = Pieces(["Document 1:\nA\n", "x\n\n", "Document 2:\nB\ny"])
    assert list(iter_context_text(ctx)) == ctx.pieces
    assert str(ctx) == "Document 1:\nA\nx\n\nDocument 2:\nB\ny"
    assert context_to_str(ctx) == str(ctx)
    s = Sample(id="1", question="q?", answers=["a"], context=ctx)
    assert s.is_lazy and s.context_text() == str(ctx)
    assert not Sample(id="2", question="q?", answers=["a"], context="t").is_lazy


def test_other_context_types_are_rejected():
    with pytest.raises(TypeError):
        list(iter_context_text(["not", "a", "context"]))
