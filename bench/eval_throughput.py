"""Evaluation throughput and per-item cost, side by side in one run (built-in model, CPU).

    python bench/eval_throughput.py                       # ~10 minutes on 2 cores
    python bench/eval_throughput.py --lengths 2k,4k,8k -n 4 --k 4 --backends llamacpp,hf

Part 1: the same RevHop items with `rememr1` at concurrency 1 and at concurrency k, on
each backend: items per second and document tokens per second.
Part 2: per-item cost (seconds, model tokens) of `full-context`, `rememr1` and `memagent`
by context length on the first backend.

Prints two tables and writes bench/results/eval_throughput.json. The items come from the
RevHop generator, so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rememr1 import Agent, AgentConfig, SamplingParams, load_backend
from rememr1.data.loaders import load_samples
from rememr1.data.records import iter_context_text
from rememr1.data.revhop import generate_revhop
from rememr1.data.lengths import length_of

HERE = Path(__file__).resolve().parent


def make_items(lengths: list[str], n: int, out: Path) -> dict[str, list]:
    paths = generate_revhop(out_dir=out, lengths=lengths, hops=[2], orders=["reverse"], n=n,
                            seed=0, formats=["json"])
    by_len = {}
    for p in paths:
        samples = load_samples(p)
        by_len[length_of(samples[0].metadata)] = samples
    return by_len


def run_items(backend, samples, *, method: str, concurrency: int, chunk_size: int, max_new: int) -> dict:
    agent = Agent(backend, AgentConfig(method=method, chunk_size=chunk_size),
                  SamplingParams(max_new_tokens=max_new, temperature=0.7, seed=0))
    eps = (agent.episode(iter_context_text(s.context), s.question, index=i) for i, s in enumerate(samples))
    t = time.perf_counter()
    done = list(agent.run_iter(eps, concurrency=concurrency))
    wall = time.perf_counter() - t
    results = [e.result() for e in done]
    doc_tokens = sum(r.document_tokens for r in results)
    return {
        "method": method,
        "concurrency": concurrency,
        "items": len(results),
        "wall_s": wall,
        "items_per_s": len(results) / wall,
        "doc_tokens_per_s": doc_tokens / wall,
        "s_per_item": wall / len(results),
        "model_tokens_per_item": sum(r.usage.prompt_tokens + r.usage.completion_tokens for r in results) / len(results),
        "steps_per_item": sum(len(r.steps) for r in results) / len(results),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default="2k,4k,8k")
    ap.add_argument("-n", type=int, default=4, help="items per length")
    ap.add_argument("--k", type=int, default=4, help="the higher concurrency")
    ap.add_argument("--backends", default="llamacpp,hf")
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--out", default=str(HERE / "results" / "eval_throughput.json"))
    args = ap.parse_args()
    console = Console()
    lengths = args.lengths.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        items = make_items(lengths, args.n, Path(tmp))
    mid = lengths[len(lengths) // 2]
    common = dict(chunk_size=args.chunk_size, max_new=args.max_new_tokens)

    throughput = []
    backends = args.backends.split(",")
    for name in backends:
        be = load_backend(name, concurrency=args.k)
        for conc in (1, args.k):
            row = run_items(be, items[mid], method="rememr1", concurrency=conc, **common)
            throughput.append({"backend": name, "length": mid, **row})
            console.log(f"{name} concurrency {conc}: {row['items_per_s']:.3f} items/s")
        be.close()
    t = Table(title=f"rememr1 throughput, {len(items[mid])} RevHop items of {mid} tokens")
    for col in ("backend", "concurrency", "items/s", "doc tokens/s", "s/item"):
        t.add_column(col, justify="right")
    for r in throughput:
        t.add_row(r["backend"], str(r["concurrency"]), f"{r['items_per_s']:.3f}",
                  f"{r['doc_tokens_per_s']:.0f}", f"{r['s_per_item']:.1f}")
    console.print(t)

    cost = []
    be = load_backend(backends[0], concurrency=args.k)
    for length in lengths:
        for method in ("full-context", "rememr1", "memagent"):
            row = run_items(be, items[length], method=method, concurrency=args.k, **common)
            cost.append({"backend": backends[0], "length": length, **row})
            console.log(f"{length} {method}: {row['s_per_item']:.1f} s/item")
    be.close()
    t = Table(title=f"Per-item cost by context length ({backends[0]}, concurrency {args.k})")
    for col in ("length", "method", "s/item", "model tokens/item", "steps/item"):
        t.add_column(col, justify="right")
    for r in cost:
        t.add_row(r["length"], r["method"], f"{r['s_per_item']:.1f}",
                  f"{r['model_tokens_per_item']:.0f}", f"{r['steps_per_item']:.1f}")
    console.print(t)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "throughput": throughput, "cost": cost}, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
