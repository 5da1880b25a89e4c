"""Multi-hop QA source files (HotpotQA, FlashRAG-style) and the paragraph pool.

Two source layouts are read into one shape, `SourceQuestion`:
- HotpotQA original JSON: a list of {_id, question, answer, context: [[title, [sentences]]],
  supporting_facts: [[title, sent_id]], type, level}.
- FlashRAG-style JSON Lines / parquet: {id, question, golden_answers, metadata: {context:
  {title: [...], sentences|content: [[...]]}, supporting_facts: {title: [...], ...},
  type, level}}.

A paragraph is the string f"{title}\\n{''.join(sentences)}"; the *pool* of a file is the
sorted set of all its paragraphs. MemAgent's index-only evaluation files (above 10,000
documents) store contexts as indices into exactly this pool, and join the documents as
"Document {i}:\\n{paragraph}" separated by blank lines, i counting from 1 (checked against
MemAgent's evaluation scripts); `IndexedContext` rebuilds them that way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from rememr1.data.documents import document_block, paragraph_text
from rememr1.data.io import field_names, iter_records
from rememr1.data.records import LazyContext, group_pieces
from rememr1.errors import InputError

@dataclass
class SourceQuestion:
    """One question of a multi-hop source file, normalised."""

    position: int  # row number in the source file
    id: str
    question: str
    answers: list[str]
    paragraphs: list[str]  # the question's own paragraphs (gold + distractors), file order
    evidence: list[int]  # indices into `paragraphs` of the supporting paragraphs, in order
    level: Any = None
    type: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def _norm_question(q: str) -> str:
    q = q.strip()
    if q and not q.endswith("?"):
        q += "?"
    return q


def _dedupe(seq: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for x in seq:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def _from_hotpot(pos: int, rec: dict[str, Any], path: Path) -> SourceQuestion | None:
    ctx = rec["context"]
    if not isinstance(ctx, list):
        raise InputError(f"{path}: record {pos}: 'context' must be a list of [title, sentences]")
    titles, paras = [], []
    for entry in ctx:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2):
            raise InputError(f"{path}: record {pos}: context entries must be [title, sentences]")
        title, sents = entry
        titles.append(title)
        paras.append(paragraph_text(title, sents))
    sup = [f[0] if isinstance(f, (list, tuple)) else f for f in rec.get("supporting_facts") or []]
    return _finish(
        pos, path, rec.get("_id", rec.get("id", pos)), rec["question"],
        [rec["answer"]] if isinstance(rec["answer"], str) else list(rec["answer"]),
        titles, paras, sup, rec.get("level"), rec.get("type"),
    )


def _from_flashrag(pos: int, rec: dict[str, Any], path: Path) -> SourceQuestion | None:
    meta = rec.get("metadata") or {}
    ctx = meta.get("context")
    if not isinstance(ctx, dict) or "title" not in ctx:
        raise InputError(f"{path}: record {pos}: metadata.context must hold 'title' and 'sentences'")
    titles = list(ctx["title"])
    bodies = ctx.get("sentences", ctx.get("content"))
    if bodies is None or len(bodies) != len(titles):
        raise InputError(f"{path}: record {pos}: metadata.context needs one 'sentences' entry per title")
    paras = [paragraph_text(t, s) for t, s in zip(titles, bodies)]
    sf = meta.get("supporting_facts") or {}
    sup = list(sf.get("title", [])) if isinstance(sf, dict) else [f[0] for f in sf]
    answers = rec["golden_answers"]
    answers = [answers] if isinstance(answers, str) else [str(a) for a in answers]
    return _finish(
        pos, path, rec.get("id", pos), rec["question"], answers, titles, paras, sup,
        meta.get("level"), meta.get("type"),
    )


def _finish(pos, path, qid, question, answers, titles, paras, sup_titles, level, qtype):
    # Each supporting title counts once, in order of first mention. (The originals list a
    # title once per supporting sentence, which makes their min_distance 0 for most
    # questions; one index per paragraph is what the field means.)
    sup = _dedupe(sup_titles)
    if not sup or not all(t in titles for t in sup):
        return None  # the originals skip questions whose evidence is not in their context
    # Duplicate paragraphs within one question collapse to one document.
    uniq = _dedupe(paras)
    evidence = _dedupe([uniq.index(paras[titles.index(t)]) for t in sup])
    return SourceQuestion(
        position=pos, id=str(qid), question=_norm_question(str(question)),
        answers=[str(a) for a in answers], paragraphs=uniq, evidence=evidence,
        level=level, type=qtype,
    )


def read_source(path: str | os.PathLike) -> tuple[list[SourceQuestion], int]:
    """Read a HotpotQA or FlashRAG-style file. Returns (questions, n_skipped), skipping
    questions whose supporting paragraphs are missing from their context."""
    p = Path(path)
    out: list[SourceQuestion] = []
    skipped = 0
    kind = None
    for pos, rec in enumerate(iter_records(p)):
        if kind is None:
            if "context" in rec and "answer" in rec and "question" in rec:
                kind = "hotpot"
            elif "golden_answers" in rec and "question" in rec and "metadata" in rec:
                kind = "flashrag"
            else:
                raise InputError(
                    f"{p}: not a HotpotQA file (question, answer, context, supporting_facts) "
                    f"nor FlashRAG-style (question, golden_answers, metadata.context); "
                    f"fields seen: {field_names(rec)}"
                )
        try:
            q = _from_hotpot(pos, rec, p) if kind == "hotpot" else _from_flashrag(pos, rec, p)
        except KeyError as e:
            raise InputError(f"{p}: record {pos} lacks field {e.args[0]!r}") from None
        if q is None:
            skipped += 1
        else:
            out.append(q)
    if kind is None:
        raise InputError(f"{p}: no records")
    return out, skipped


def _pool_paragraphs(path: Path) -> Iterator[str]:
    for pos, rec in enumerate(iter_records(path)):
        if "context" in rec and isinstance(rec["context"], list):
            for entry in rec["context"]:
                if isinstance(entry, (list, tuple)) and len(entry) == 2:
                    yield paragraph_text(entry[0], entry[1])
        elif isinstance((rec.get("metadata") or {}).get("context"), dict):
            ctx = rec["metadata"]["context"]
            bodies = ctx.get("sentences", ctx.get("content")) or []
            for t, s in zip(ctx.get("title", []), bodies):
                yield paragraph_text(t, s)
        else:
            raise InputError(
                f"{path}: record {pos} has no paragraphs (expected HotpotQA 'context' or "
                f"FlashRAG 'metadata.context'); fields seen: {field_names(rec)}"
            )


def build_pool(questions: Sequence[SourceQuestion] | None = None, *, path=None) -> list[str]:
    """The sorted set of all paragraphs, from parsed questions or straight from a file
    (the file form also counts paragraphs of questions the builder skips, as the
    originals' pool does)."""
    if path is not None:
        return sorted(set(_pool_paragraphs(Path(path))))
    assert questions is not None
    return sorted({p for q in questions for p in q.paragraphs})


@lru_cache(maxsize=4)
def _cached_pool(resolved: str, mtime_ns: int, size: int) -> tuple[str, ...]:
    return tuple(build_pool(path=resolved))


def load_pool(path: str | os.PathLike) -> tuple[str, ...]:
    """The paragraph pool of a source file, cached per file version."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"HotpotQA dev file not found: {p}")
    st = p.stat()
    return _cached_pool(str(p.resolve()), st.st_mtime_ns, st.st_size)


class IndexedContext(LazyContext):
    """A document given as indices into a paragraph pool (MemAgent's index-only form).

    Yields the "Document {i}:\\n..." text in pieces of about `piece_chars` characters,
    each ending at a document boundary.
    """

    def __init__(self, pool: Sequence[str], indices: Sequence[int], *, piece_chars: int = 1 << 20):
        self.pool = pool
        self.indices = list(indices)
        self.piece_chars = piece_chars

    def iter_text(self) -> Iterator[str]:
        blocks = (document_block(i, self.pool[idx]) for i, idx in enumerate(self.indices))
        return group_pieces(blocks, self.piece_chars)

    def describe(self) -> dict[str, Any]:
        return {"kind": "index-only", "num_docs": len(self.indices)}
