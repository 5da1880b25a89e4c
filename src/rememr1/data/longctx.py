"""Build long-context multi-hop evaluation files (schema D) from a local QA file.

    rememr1 data longctx --source hotpot_dev_distractor_v1.json --docs 50,200,800,6400 --out data/hotpotqa

For every requested document count N, each question's own paragraphs (gold and
distractors) are joined with paragraphs sampled uniformly from the pool of all paragraphs
of the file, shuffled, and written as "Document {i}:\\n{title}\\n{text}" blocks separated by
blank lines (SPEC §5). Output per N: `eval_{name}_{N}.json`, plus
`eval_{name}_{N}_min_distance_{d}.json` holding the items whose evidence appears in reverse
order with at least d documents between consecutive evidence paragraphs.

Permutation: by default every item gets its own shuffle (seeded by seed, N and the item);
`compat=True` uses the originals' single permutation per N (Python's `random.Random(4)`
shuffle of range(N)), so gold paragraphs sit in the same slots for every question.

Item selection follows the originals: with `n` set, 5n questions are sampled (seeded) as
candidates; the main file holds the first n, each min-distance subset the first n
candidates that qualify. Unlike the originals the same candidates are used at every N (so
lengths compare the same questions) and every random draw is per item, so the files do
not depend on the worker count. Above `index_only_above` documents the context is stored
as paragraph indices into the sorted pool (MemAgent's index-only form); the loaders
rebuild it given the same source file.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rememr1.data.documents import join_documents
from rememr1.data.hotpot import SourceQuestion, build_pool, read_source
from rememr1.data.io import JsonArrayWriter
from rememr1.data.parallel import ordered_map
from rememr1.data.seeding import item_rng
from rememr1.errors import InputError

DEFAULT_MIN_DISTANCES = (100, 200, 400, 800, 1600)
COMPAT_SEED = 4
INDEX_ONLY_ABOVE = 10_000

ProgressFn = Callable[[str, int, int], None]  # (description, completed, total)


@dataclass
class _Job:
    """What a worker needs to know about one question (pool indices, not text)."""

    qi: int  # position in the candidate list
    own: list[int]  # pool indices of the question's own paragraphs
    evidence: list[int]  # indices into `own` of the supporting paragraphs
    n_docs: int


@dataclass
class _Plan:
    docs: list[int]  # pool indices in final document order
    evidence_idx: list[int]  # 0-based document positions of the evidence, evidence order
    is_ordered: bool
    is_reverse_ordered: bool
    min_distance: int | None


# Worker-process state: the paragraph pool and run options (set by _init).
_POOL: Sequence[str] = ()
_OPTS: dict[str, Any] = {}


def _init(pool: Sequence[str], opts: dict[str, Any]) -> None:
    global _POOL, _OPTS
    _POOL = pool
    _OPTS = opts


def compat_permutation(n: int) -> list[int]:
    """The originals' fixed shuffle for n documents."""
    perm = list(range(n))
    random.Random(COMPAT_SEED).shuffle(perm)
    return perm


def _evidence_flags(ev: list[int]) -> tuple[bool, bool, int | None]:
    s = sorted(ev)
    min_d = min(b - a for a, b in zip(s, s[1:])) if len(s) > 1 else None
    return ev == s, ev == sorted(ev, reverse=True), min_d


def plan_item(
    job: _Job, *, pool_size: int, seed: int, compat_perm: Sequence[int] | None, key: Any
) -> _Plan:
    """Choose and order the documents of one item (a pure function of its arguments).
    `compat_perm`: the fixed permutation to use, or None for a per-item shuffle."""
    own, evidence = list(job.own), list(job.evidence)
    n = job.n_docs
    if len(own) > n:
        # Fewer documents than the question's own paragraphs: keep the evidence first,
        # then the question's distractors, in file order.
        if len(evidence) > n:
            raise InputError(
                f"--docs {n} is smaller than the {len(evidence)} evidence paragraphs of a question"
            )
        keep = sorted(set(evidence) | set(
            [i for i in range(len(own)) if i not in evidence][: n - len(evidence)]
        ))
        remap = {old: new for new, old in enumerate(keep)}
        own = [own[i] for i in keep]
        evidence = [remap[e] for e in evidence]
    rng = item_rng(seed, "longctx", n, key)
    own_set = set(own)
    if n >= pool_size:
        extra = [i for i in range(pool_size) if i not in own_set]
    else:
        k = n - len(own)
        cand = rng.sample(range(pool_size), min(pool_size, k + len(own)))
        extra = [i for i in cand if i not in own_set][:k]
    all_docs = own + extra
    if compat_perm is not None:
        perm = list(compat_perm) if len(compat_perm) == len(all_docs) else compat_permutation(len(all_docs))
    else:
        perm = list(range(len(all_docs)))
        rng.shuffle(perm)
    docs = [all_docs[p] for p in perm]
    where = {old: new for new, old in enumerate(perm)}
    ev = [where[e] for e in evidence]
    is_ord, is_rev, min_d = _evidence_flags(ev)
    return _Plan(docs, ev, is_ord, is_rev, min_d)


def _plan(job: _Job) -> _Plan:
    return plan_item(
        job, pool_size=len(_POOL), seed=_OPTS["seed"], compat_perm=_OPTS.get("compat_perm"),
        key=_OPTS["keys"][job.qi],
    )


def _flags(job: _Job) -> tuple[bool, int | None]:
    p = _plan(job)
    return p.is_reverse_ordered, p.min_distance


def _render(job: _Job) -> str:
    """One schema-D record, serialised (done in the worker: JSON-escaping megabytes of
    text is the expensive part)."""
    p = _plan(job)
    q: dict[str, Any] = _OPTS["records"][job.qi]
    context: Any
    if len(p.docs) > _OPTS["index_only_above"]:
        context = p.docs
    else:
        context = join_documents([_POOL[i] for i in p.docs])
    rec = {
        "context": context,
        "input": q["question"],
        "answers": q["answers"],
        "num_docs": len(p.docs),
        "index": q["index"],
        "is_ordered": p.is_ordered,
        "is_reverse_ordered": p.is_reverse_ordered,
        "min_distance": p.min_distance,
        "evidence_idx": p.evidence_idx,
        "level": q["level"],
        "type": q["type"],
        "id": q["id"],
        "permutation": f"fixed-seed{COMPAT_SEED}" if _OPTS["compat"] else "per-item",
        "seed": _OPTS["seed"],
    }
    return json.dumps(rec, ensure_ascii=False)


def default_name(source: Path) -> str:
    stem = source.name.lower()
    if "hotpot" in stem:
        return "hotpotqa"
    if "2wiki" in stem:
        return "2wikimultihopqa"
    return re.sub(r"[^A-Za-z0-9]+", "_", source.stem).strip("_") or "data"


def select_candidates(n_questions: int, n: int | None, seed: int) -> list[int]:
    """Indices of the candidate questions, in the order files are filled."""
    if n is None:
        return list(range(n_questions))
    if n < 1:
        raise InputError("-n must be at least 1")
    return item_rng(seed, "longctx-select").sample(range(n_questions), min(n_questions, 5 * n))


def build_longctx(
    source: str | os.PathLike,
    *,
    docs: Sequence[int],
    out_dir: str | os.PathLike,
    seed: int = 0,
    compat: bool = False,
    min_distances: Sequence[int] = DEFAULT_MIN_DISTANCES,
    n: int | None = None,
    workers: int = 1,
    name: str | None = None,
    index_only_above: int = INDEX_ONLY_ABOVE,
    progress: ProgressFn | None = None,
) -> list[Path]:
    """Write schema-D files for each document count in `docs`; return their paths."""
    src = Path(source)
    if not docs:
        raise InputError("--docs needs at least one document count")
    if any(d < 1 for d in docs):
        raise InputError(f"--docs values must be positive, got {list(docs)}")
    if any(d < 1 for d in min_distances):
        raise InputError(f"--min-distance values must be positive, got {list(min_distances)}")
    questions, _skipped = read_source(src)
    if not questions:
        raise InputError(f"{src}: no question has all its supporting paragraphs in its context")
    pool = build_pool(path=src)
    index = {p: i for i, p in enumerate(pool)}
    cands = select_candidates(len(questions), n, seed)
    chosen: list[SourceQuestion] = [questions[i] for i in cands]
    records = [
        {"question": q.question, "answers": q.answers, "index": q.position, "level": q.level,
         "type": q.type, "id": q.id}
        for q in chosen
    ]
    own = [[index[p] for p in q.paragraphs] for q in chosen]
    name = name or default_name(src)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    opts = {
        "seed": seed, "compat": compat, "records": records, "index_only_above": index_only_above,
        "keys": [q.id or q.position for q in chosen],
    }
    written: list[Path] = []
    limit = n if n is not None else len(chosen)
    for n_docs in docs:
        jobs = [_Job(i, own[i], chosen[i].evidence, n_docs) for i in range(len(chosen))]
        if compat:
            opts["compat_perm"] = compat_permutation(min(n_docs, len(pool)))
        # Phase 1: evidence layout of every candidate (cheap), to decide file membership.
        flags = list(ordered_map(_flags, jobs, workers=workers, initializer=_init, initargs=(pool, opts)))
        main = list(range(min(limit, len(jobs))))
        subsets: dict[int, list[int]] = {}
        for d in min_distances:
            members = [i for i, (rev, md) in enumerate(flags) if rev and md is not None and md >= d]
            if members:
                subsets[d] = members[:limit]
        needed = sorted(set(main).union(*subsets.values()))
        # Phase 2: render the needed items in candidate order, streaming into the files.
        paths = {None: out / f"eval_{name}_{n_docs}.json"}
        paths.update({d: out / f"eval_{name}_{n_docs}_min_distance_{d}.json" for d in subsets})
        member_of = {None: set(main), **{d: set(m) for d, m in subsets.items()}}
        with ExitStack() as stack:
            writers = {k: stack.enter_context(JsonArrayWriter(p)) for k, p in paths.items()}
            rendered = ordered_map(
                _render, [jobs[i] for i in needed], workers=workers, initializer=_init,
                initargs=(pool, opts),
            )
            for done, (qi, text) in enumerate(zip(needed, rendered), start=1):
                for k, w in writers.items():
                    if qi in member_of[k]:
                        w.write(text)
                if progress:
                    progress(f"longctx {name} N={n_docs}", done, len(needed))
        written.extend(paths.values())
    return written
