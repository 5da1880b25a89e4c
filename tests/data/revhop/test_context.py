"""Lazy contexts: a million-token item streams in bounded memory, a lazy context equals
the materialised text, and loading one does not import the generator."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tracemalloc

from rememr1.data import generate_revhop, load_samples, parse_length
from rememr1.data.records import LazyContext


def test_million_token_item_streams_in_bounded_memory(tmp_path):
    (path,) = generate_revhop(out_dir=tmp_path, lengths=["1m"], hops=[3], orders=["reverse"],
                              n=1, formats=["json"])
    raw = json.loads(path.read_text())[0]
    assert isinstance(raw["context"], dict) and raw["lazy"]
    assert path.stat().st_size < 200_000  # a spec, not megabytes of text
    (s,) = load_samples(path)
    assert isinstance(s.context, LazyContext)
    ctx = s.context
    tracemalloc.start()
    try:
        total = biggest = n_docs = 0
        for piece in ctx.iter_text():
            total += len(piece)
            biggest = max(biggest, len(piece))
            n_docs += piece.count("Document ")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 3_000_000  # about a million tokens of text ...
    assert biggest < 300_000  # ... in pieces of at most ~256K characters
    assert peak < 1_500_000  # never more than a small window in memory
    assert n_docs >= raw["num_docs"]
    assert raw["tokens"] <= parse_length("1m") and raw["tokens"] > parse_length("1m") - 400


def test_lazy_and_materialised_contexts_are_identical(tmp_path):
    kw = dict(lengths=["5k"], hops=[2], orders=["forward"], n=2, seed=9, formats=["json"])
    (text_path,) = generate_revhop(out_dir=tmp_path / "t", **kw)
    (lazy_path,) = generate_revhop(out_dir=tmp_path / "l", lazy_above=1000, **kw)
    plain = load_samples(text_path)
    lazy = load_samples(lazy_path)
    assert all(isinstance(s.context, str) for s in plain)
    assert all(isinstance(s.context, LazyContext) for s in lazy)
    assert [str(s.context) for s in lazy] == [s.context for s in plain]
    # lazy contexts travel to worker processes as their small spec
    clone = pickle.loads(pickle.dumps(lazy[0].context))
    assert str(clone) == plain[0].context
    assert [s.metadata["evidence_token_offsets"] for s in lazy] == [
        s.metadata["evidence_token_offsets"] for s in plain]


def test_loading_a_lazy_context_does_not_import_the_generator(tmp_path):
    """The loaders rebuild a lazy RevHop context through `revhop.context` alone: in a fresh
    interpreter, loading such a file and reading its text leaves the generator's modules
    (content, layout, facts, item, write) unimported."""
    (path,) = generate_revhop(out_dir=tmp_path, lengths=["2k"], hops=[2], orders=["reverse"],
                              n=1, formats=["json"], lazy_above=1000)
    script = (
        "import sys\n"
        "from rememr1.data.loaders import load_samples\n"
        f"(s,) = load_samples({str(path)!r})\n"
        "assert type(s.context).__name__ == 'RevHopContext', type(s.context)\n"
        "assert str(s.context).startswith('Document 1:')\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('rememr1.data.revhop'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = set(proc.stdout.split())
    assert "rememr1.data.revhop.context" in loaded
    generator = {f"rememr1.data.revhop.{m}" for m in ("content", "layout", "facts", "item", "write")}
    assert not loaded & generator, f"loading a lazy context imported {sorted(loaded & generator)}"
