"""The one document-block template: every writer of long contexts uses it, so HotpotQA-
based contexts, index-only contexts and RevHop contexts share one text shape."""

from __future__ import annotations

from rememr1.data.documents import document_block, join_documents, paragraph_text
from rememr1.data.hotpot import IndexedContext
from rememr1.data.revhop.context import RevHopContext, make_spec, paragraph_block


def test_blocks_join_into_the_documented_shape():
    assert document_block(0, "A\nx") == "Document 1:\nA\nx"
    assert document_block(2, "C\nz") == "\n\nDocument 3:\nC\nz"
    paras = [paragraph_text("A", ["x", "y"]), paragraph_text("B", "z")]
    assert join_documents(paras) == "Document 1:\nA\nxy\n\nDocument 2:\nB\nz"
    assert join_documents([]) == ""


def test_every_context_writer_uses_the_template():
    pool = [paragraph_text(f"T{i}", f"body {i}.") for i in range(4)]
    idx = [2, 0, 3]
    assert str(IndexedContext(pool, idx, piece_chars=8)) == join_documents([pool[i] for i in idx])
    assert paragraph_block(1, "T", "body") == document_block(1, "T\nbody")
    spec = make_spec(seed=0, world_scale=1.0, key=[0, 1, 1, "forward", 0], excluded=[], num_docs=2,
                     tokens=0, specials=[(0, "Alpha", "One."), (1, "Beta", "Two.")])
    assert str(RevHopContext(spec)) == join_documents(["Alpha\nOne.", "Beta\nTwo."])
