"""Benchmark: cost of one recall query as the memory history grows.

    python bench/retrieval.py [--sizes 10 100 1000] [--queries 50]

Compares, for histories of N memories (deterministic synthetic memory texts of 150-300
words each):

- ``tfidf``: our incremental TF-IDF retriever (rememr1.memory, "tfidf");
- ``sklearn_refit``: what the official code does at every query: fit a fresh
  ``TfidfVectorizer()`` on the whole history, transform the query, cosine, argmax;
- ``bm25``: the bm25s-based retriever;
- ``overlap``: the word-overlap retriever.

Two timings per retriever, mean milliseconds:

- ``*_query_ms``: a query against a history of N memories that did not change since the
  previous query (BM25 reuses its index);
- ``*_step_ms``: what the agent does at each step: add one memory to a history of N - 1,
  then query (BM25 must reindex). The refit baseline costs the same either way.

``tfidf_agrees`` is the fraction of queries where our top-1 is the refit baseline's (with
ties resolved toward the later memory, as ours are).

Prints a table and writes ``bench/results/retrieval.json``. Other bench scripts can use
it with ``sys.path.insert(0, bench_dir); import retrieval; retrieval.run(...)``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

try:
    from rememr1.memory import make_retriever
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from rememr1.memory import make_retriever

RESULTS = Path(__file__).resolve().parent / "results" / "retrieval.json"
LEXICAL = ("tfidf", "bm25", "overlap")

_FUNCTION_WORDS = ("the of and to in a is was that for on with as by at from his her it "
                   "which who were be has had not this are an but also after".split())
_SYLLABLES = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]


def _vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


class TextGenerator:
    """Deterministic memory-like texts: Zipf-distributed content words plus function words."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.vocab = _vocabulary(self.rng)
        ranks = np.arange(1, len(self.vocab) + 1)
        self.weights = list(1.0 / ranks)
        # Capitalised "names" make some terms rare and distinctive, as entities are.
        self.names = [w.capitalize() for w in self.rng.sample(self.vocab, 300)]

    def _sentence(self) -> str:
        n = self.rng.randint(8, 20)
        content = self.rng.choices(self.vocab, weights=self.weights, k=n)
        out = []
        for w in content:
            if self.rng.random() < 0.45:
                out.append(self.rng.choice(_FUNCTION_WORDS))
            out.append(self.rng.choice(self.names) if self.rng.random() < 0.08 else w)
        return " ".join(out).capitalize() + "."

    def memory(self) -> str:
        target = self.rng.randint(150, 300)
        sentences, words = [], 0
        while words < target:
            s = self._sentence()
            sentences.append(s)
            words += len(s.split())
        return " ".join(sentences)

    def query(self, history: list[str]) -> str:
        """Some words of one earlier memory plus a few random ones (a partial-evidence query)."""
        source = self.rng.choice(history).rstrip(".").replace(".", "").split()
        picked = self.rng.sample(source, min(len(source), self.rng.randint(3, 7)))
        picked += self.rng.choices(self.vocab, k=self.rng.randint(0, 3))
        self.rng.shuffle(picked)
        return " ".join(picked)


def sklearn_refit_top1(history: list[str], query: str) -> int | None:
    """The official behaviour: refit TF-IDF on the whole history at every query."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    vec = TfidfVectorizer()
    docs = vec.fit_transform(history)
    scores = cosine_similarity(vec.transform([query]), docs)[0]
    best = scores.max()
    if best <= 0:
        return None
    return int(np.flatnonzero(scores >= best - 1e-9).max())  # ties -> later, like ours


def _mean_ms(fn, items) -> float:
    total = 0.0
    for item in items:
        t = time.perf_counter()
        fn(item)
        total += time.perf_counter() - t
    return 1000.0 * total / len(items)


def run(sizes=(10, 100, 1000), queries: int = 50, *, seed: int = 0) -> list[dict]:
    """Mean ms per query (and per agent step) for each retriever at each history size."""
    rows = []
    for n in sizes:
        gen = TextGenerator(seed)
        history = [gen.memory() for _ in range(n)]
        qs = [gen.query(history) for _ in range(queries)]
        row: dict = {
            "n_memories": n,
            "queries": queries,
            "mean_words_per_memory": round(float(np.mean([len(t.split()) for t in history])), 1),
        }

        # Query against a fixed history.
        full = {}
        for name in LEXICAL:
            r = make_retriever(name)
            for text in history:
                r.add(text)
            r.search(qs[0])  # warm-up (builds the BM25 index once)
            row[f"{name}_query_ms"] = _mean_ms(lambda q, r=r: r.search(q, k=1), qs)
            full[name] = r
        row["sklearn_refit_ms"] = _mean_ms(lambda q, h=history: sklearn_refit_top1(h, q), qs)

        # Agent step: add the N-th memory, then query. Each repetition starts from a copy
        # of a retriever holding N - 1 memories, made outside the timed region.
        for name in LEXICAL:
            base = make_retriever(name)
            for text in history[:-1]:
                base.add(text)
            base.search(qs[0])
            total = 0.0
            for q in qs:
                r = copy.deepcopy(base)
                t = time.perf_counter()
                r.add(history[-1])
                r.search(q, k=1)
                total += time.perf_counter() - t
            row[f"{name}_step_ms"] = 1000.0 * total / len(qs)

        agree = 0
        for q in qs:
            ours = full["tfidf"].search(q, k=1)
            ref = sklearn_refit_top1(history, q)
            agree += (ours[0].step if ours else None) == ref
        row["tfidf_agrees"] = agree / len(qs)
        row["refit_over_incremental"] = row["sklearn_refit_ms"] / row["tfidf_query_ms"]
        rows.append(row)
    return rows


def _environment() -> dict:
    import bm25s
    import sklearn

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "scikit-learn": sklearn.__version__,
        "bm25s": getattr(bm25s, "__version__", "?"),
    }


def print_table(rows: list[dict], console=None) -> None:
    """The side-by-side table of `run`'s rows (also used by bench/overhead.py)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Recall cost per query / per agent step (mean ms)")
    for col in ("N", "words/mem", "tfidf (ours)", "sklearn refit", "bm25", "overlap",
                "tfidf step", "bm25 step", "overlap step", "refit/ours", "top-1 agree"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["n_memories"]), f"{r['mean_words_per_memory']:.0f}",
            f"{r['tfidf_query_ms']:.3f}", f"{r['sklearn_refit_ms']:.3f}",
            f"{r['bm25_query_ms']:.3f}", f"{r['overlap_query_ms']:.3f}",
            f"{r['tfidf_step_ms']:.3f}", f"{r['bm25_step_ms']:.3f}",
            f"{r['overlap_step_ms']:.3f}", f"{r['refit_over_incremental']:.1f}x",
            f"{100 * r['tfidf_agrees']:.0f}%",
        )
    console = console or Console()
    if console.width < 150:  # keep the table readable when piped or in a narrow terminal
        console = Console(width=150)
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    rows = run(tuple(args.sizes), args.queries)

    print_table(rows)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": _environment(), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
