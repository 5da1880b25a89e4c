"""How much of the agent's time is spent outside the model, and what retrieval costs.

    python bench/overhead.py                   # built-in model on llama.cpp, ~2 minutes
    python bench/overhead.py --backend hf --chunks 4

Part 1 runs the built-in model over a synthetic document of --chunks chunks and splits
the wall time of each step into time inside `backend.generate` and everything else
(prompt building, chunk decoding, parsing, retrieval, bookkeeping). Target: under 1%.
Part 2 (bench/retrieval.py) times one recall query as the history grows to 1,000
memories: our incremental TF-IDF against refitting TfidfVectorizer per query (what the
official code does), BM25 and word overlap, side by side.

Prints tables and writes bench/results/overhead.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import retrieval  # noqa: E402  (bench/retrieval.py)

from rememr1 import Agent, AgentConfig, SamplingParams, load_backend  # noqa: E402


def synthetic_document(n_words: int, seed: int = 0) -> str:
    import random

    rng = random.Random(seed)
    words = "harbour ship lens yard steamer light tower crew survey channel pilot grain".split()
    paras = []
    for i in range(0, n_words, 80):
        paras.append(f"Paragraph {i // 80}: " + " ".join(rng.choice(words) for _ in range(80)) + ".")
    return "\n\n".join(paras)


class TimedBackend:
    """Wraps a backend and records the wall time spent inside generate()."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[float] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, requests, sampling):
        t = time.perf_counter()
        out = self.inner.generate(requests, sampling)
        self.calls.append(time.perf_counter() - t)
        return out


def agent_overhead(backend_name: str, chunks: int, chunk_size: int, max_new: int) -> dict:
    be = load_backend(backend_name)
    timed = TimedBackend(be)
    agent = Agent(timed, AgentConfig(chunk_size=chunk_size), SamplingParams(max_new_tokens=max_new, temperature=0.7, seed=0))
    doc = synthetic_document(int(chunks * chunk_size * 0.7))
    step_walls: list[float] = []
    last = [time.perf_counter()]

    def on_step(ep, rec):
        now = time.perf_counter()
        step_walls.append(now - last[0])
        last[0] = now

    t0 = time.perf_counter()
    ep = agent.episode(doc, "Which yard built the steamer that carried the lens?")
    tokenize_s = time.perf_counter() - t0
    last[0] = time.perf_counter()
    agent.run([ep], on_step=on_step)
    total = time.perf_counter() - t0
    gen = sum(timed.calls)
    per_step = [w - g for w, g in zip(step_walls, timed.calls)]
    be.close()
    return {
        "backend": backend_name,
        "steps": len(step_walls),
        "document_tokens": len(ep.doc),
        "wall_s": total,
        "generate_s": gen,
        "tokenize_s": tokenize_s,
        "outside_generation_s": total - gen,
        "outside_share_pct": 100 * (total - gen) / total,
        "outside_per_step_ms_mean": 1000 * sum(per_step) / len(per_step),
        "outside_per_step_ms_max": 1000 * max(per_step),
        "completion_tokens": ep.result().usage.completion_tokens,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="llamacpp")
    ap.add_argument("--chunks", type=int, default=6)
    ap.add_argument("--chunk-size", type=int, default=1000)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--out", default=str(HERE / "results" / "overhead.json"))
    args = ap.parse_args()
    console = Console(width=max(Console().width, 120))

    agent = agent_overhead(args.backend, args.chunks, args.chunk_size, args.max_new_tokens)
    t = Table(title=f"Agent time outside generation ({agent['backend']}, built-in model)")
    for col in ("steps", "doc tokens", "wall s", "generate s", "outside s", "outside %", "ms/step mean", "ms/step max"):
        t.add_column(col, justify="right")
    t.add_row(
        str(agent["steps"]), str(agent["document_tokens"]), f"{agent['wall_s']:.2f}",
        f"{agent['generate_s']:.2f}", f"{agent['outside_generation_s']:.3f}",
        f"{agent['outside_share_pct']:.2f}", f"{agent['outside_per_step_ms_mean']:.2f}",
        f"{agent['outside_per_step_ms_max']:.2f}",
    )
    console.print(t)

    sizes = tuple(int(s) for s in args.sizes.split(","))
    rows = retrieval.run(sizes=sizes)
    retrieval.print_table(rows, console)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"agent": agent, "retrieval": rows}, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
