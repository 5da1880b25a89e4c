"""`rememr1 serve` against the agent called directly: the server's overhead per request,
and throughput at 1 and 8 concurrent clients against `Agent.answer_many`.

    python bench/serve.py              # ~3 min on 2 cores; writes bench/results/serve.json
    python bench/serve.py --report     # reprint the saved table

One backend for all: the simulated OpenAI-compatible server of bench/scheduling.py (a
seeded log-normal latency per request, keyed on the request's question and section, and
unlimited parallelism, so capacity is never what limits), run in a process of its own.
* direct -- this process: an `Agent` on the openai backend pointed at the simulator;
  `agent.answer` one item after another, and `agent.answer_many(..., concurrency=8)`.
* served -- `rememr1 serve --backend openai` (a subprocess, same agent options) pointed at
  the same simulator; the official `openai` client here sends each item as a chat request
  (the document, then the question), one after another or from 8 clients at once.
Both send byte-identical prompts, so the simulator gives them the same latencies and the
difference is the server's own cost. Overhead per request: served minus direct wall time
of the same item, items interleaved (median and mean), against `await agent.aanswer` on one
event loop that keeps the backend's HTTP client (as the server does). The synchronous
`agent.answer` is shown too: each call runs a fresh event loop and so opens a fresh client,
which costs more than the whole server does. Targets (issue 25): under 5 ms added per
request; served at 8 clients >= 90% of answer_many's items/s at concurrency 8.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "serve.json"
sys.path.insert(0, str(HERE))

from scheduling import SimServer, _free_port, items  # noqa: E402  (the scheduling bench's simulator)


def run_simulator(port: int, mean: float, sigma: float, seed: int) -> None:
    """The simulator alone, until killed (`--simulator PORT`)."""
    server = SimServer(mean=mean, sigma=sigma, seed=seed)
    server.port = port
    server.start()
    while True:
        time.sleep(3600)


def _wait_for(url: str, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(url + "/models", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not start")


def agent_flags(args) -> list[str]:
    """The agent options both sides use (the served side gets them as `rememr1 serve` flags)."""
    return ["--chunk-size", str(args.chunk_size), "--max-new-tokens", "64", "--seed", "0",
            "--concurrency", str(args.backend_concurrency)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=48, help="items for the 8-client throughput runs")
    ap.add_argument("--latency-items", type=int, default=24, help="items for the overhead and 1-client runs")
    ap.add_argument("--repeats", type=int, default=3, help="8-client runs of each side (the median is kept)")
    ap.add_argument("--chunks", type=int, default=4, help="chunks per document (requests = chunks + 1)")
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--latency", type=float, default=0.15, help="mean simulated seconds per model request")
    ap.add_argument("--sigma", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend-concurrency", type=int, default=64, help="HTTP requests in flight to the simulator")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--simulator", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.simulator:
        run_simulator(args.simulator, args.latency, args.sigma, args.seed)
        return
    if args.report:
        show(json.loads(RESULTS.read_text()))
        return
    results = measure(args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    show(results)


def measure(args) -> dict:
    import openai

    from rememr1.agent import Agent, AgentConfig
    from rememr1.backends import load_backend
    from rememr1.backends.builtin import builtin_gguf_path
    from rememr1.backends.tokenization import load_tokenizer
    from rememr1.agent import get_method

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sim_port, port = _free_port(), _free_port()
    sim_url, url = f"http://127.0.0.1:{sim_port}/v1", f"http://127.0.0.1:{port}/v1"
    procs = [subprocess.Popen([sys.executable, __file__, "--simulator", str(sim_port), "--latency", str(args.latency),
                               "--sigma", str(args.sigma), "--seed", str(args.seed)],
                              stderr=subprocess.PIPE, text=True, env=env)]
    try:
        _wait_for(sim_url, procs[0], "the simulator")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "rememr1", "serve", "--port", str(port), "--backend", "openai",
             "--base-url", sim_url, "--model", "sim", "--method", "rememr1", "--max-episodes", "64",
             "--max-queue", "256", "--log-level", "warning", *agent_flags(args)],
            stderr=subprocess.PIPE, text=True, env=env))
        _wait_for(url, procs[1], "rememr1 serve")

        tok = load_tokenizer(builtin_gguf_path())
        work = items(max(args.items, args.latency_items), args.chunks, args.chunk_size, tok)
        be = load_backend("openai", base_url=sim_url, model="sim", concurrency=args.backend_concurrency)
        agent = Agent(be, AgentConfig(chunk_size=args.chunk_size), get_method("rememr1").sampling(64, temperature=0.7, top_p=0.95, seed=0))
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)

        def served(doc: str, q: str) -> str:
            r = client.chat.completions.create(model="rememr1", messages=[{"role": "user", "content": doc},
                                                                         {"role": "user", "content": q}])
            return r.choices[0].message.content

        for doc, q in work[:3]:  # warm-up: connections, tokenizer
            assert agent.answer(doc, q).answer == served(doc, q)

        # overhead: the same item through each, interleaved
        sync_s = [_timed(lambda: agent.answer(doc, q).answer) for doc, q in work[: args.latency_items]]
        direct_s, served_s = asyncio.run(_interleaved(agent, url, work[: args.latency_items]))
        diffs = sorted(1000 * (s - d) for s, d in zip(served_s, direct_s))
        overhead = {"median_ms": statistics.median(diffs), "mean_ms": statistics.fmean(diffs),
                    "p90_ms": diffs[int(0.9 * (len(diffs) - 1))], "direct_mean_s": statistics.fmean(direct_s),
                    "served_mean_s": statistics.fmean(served_s), "answer_mean_s": statistics.fmean(sync_s),
                    "vs_answer_ms": 1000 * (statistics.fmean(served_s) - statistics.fmean(sync_s)),
                    "requests_per_item": args.chunks + 1}
        print(json.dumps({"overhead": overhead}), flush=True)

        throughput = []
        for clients, batch, repeats in ((1, work[: args.latency_items], 1), (8, work[: args.items], args.repeats)):
            direct, served = [], []
            for _ in range(repeats):  # alternated, medians kept: the machine may be shared
                t0 = time.perf_counter()
                results = agent.answer_many(batch, concurrency=clients)
                direct.append(len(batch) / (time.perf_counter() - t0))
                assert all(r.answer for r in results)
                served.append(len(batch) / _served_throughput(url, batch, clients))
            row = {"clients": clients, "items": len(batch), "repeats": repeats,
                   "answer_many_items_per_s": statistics.median(direct),
                   "served_items_per_s": statistics.median(served)}
            row["share"] = row["served_items_per_s"] / row["answer_many_items_per_s"]
            throughput.append(row)
            print(json.dumps(row), flush=True)
        be.close()
        client.close()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
    share8 = next(r["share"] for r in throughput if r["clients"] == 8)
    return {"args": {k: v for k, v in vars(args).items() if k not in ("report", "simulator")},
            "overhead": overhead, "throughput": throughput,
            "targets": {"overhead_ms_under": 5.0, "share_at_8_at_least": 0.9},
            "met": {"overhead": overhead["median_ms"] < 5.0, "throughput": share8 >= 0.9}}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    assert fn()
    return time.perf_counter() - t0


async def _interleaved(agent, url: str, work) -> tuple[list[float], list[float]]:
    """Each item through `await agent.aanswer` (one event loop, the backend's HTTP client
    kept, as the server keeps it), then through the server; wall seconds of each."""
    import openai

    from rememr1.agent.engine import hold_loop

    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
    direct, served = [], []
    async with hold_loop(agent.backend):
        for doc, q in work:
            t0 = time.perf_counter()
            a = (await agent.aanswer(doc, q)).answer
            t1 = time.perf_counter()
            r = await client.chat.completions.create(
                model="rememr1", messages=[{"role": "user", "content": doc}, {"role": "user", "content": q}])
            t2 = time.perf_counter()
            assert a == r.choices[0].message.content, (a, r)
            direct.append(t1 - t0)
            served.append(t2 - t1)
    await client.close()
    return direct, served


def _served_throughput(url: str, batch, clients: int) -> float:
    """Wall time for `clients` openai clients to get every item answered."""
    import openai

    async def run() -> float:
        client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
        queue = list(batch)

        async def worker():
            while queue:
                doc, q = queue.pop()
                r = await client.chat.completions.create(
                    model="rememr1", messages=[{"role": "user", "content": doc}, {"role": "user", "content": q}])
                assert r.choices[0].message.content

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
        await client.close()
        return wall

    return asyncio.run(run())


def show(results: dict) -> None:
    console = Console(width=150)
    a, o = results["args"], results["overhead"]
    t = Table(title=f"rememr1 serve vs the agent called directly; simulated server, {a['chunks'] + 1} model "
                    f"requests per item, latency log-normal mean {a['latency']} s")
    for col in ("measure", "direct (Agent)", "served (openai client)", "served vs direct", "target"):
        t.add_column(col, justify="right")
    n = a["latency_items"]
    t.add_row(f"s per item, one at a time ({n} items): await aanswer", f"{o['direct_mean_s']:.4f}",
              f"{o['served_mean_s']:.4f}", f"{o['median_ms']:+.2f} ms median (mean {o['mean_ms']:+.2f}, "
              f"p90 {o['p90_ms']:+.2f})", "< 5 ms")
    t.add_row(f"s per item, one at a time ({n} items): answer()", f"{o['answer_mean_s']:.4f}",
              f"{o['served_mean_s']:.4f}", f"{o['vs_answer_ms']:+.2f} ms mean", "")
    for r in results["throughput"]:
        runs = f", median of {r['repeats']} runs" if r.get("repeats", 1) > 1 else ""
        t.add_row(f"items/s, {r['clients']} client{'s' if r['clients'] > 1 else ''} ({r['items']} items{runs})",
                  f"{r['answer_many_items_per_s']:.2f}", f"{r['served_items_per_s']:.2f}", f"{100 * r['share']:.0f}%",
                  ">= 90%" if r["clients"] == 8 else "")
    console.print(t)
    met = results["met"]
    console.print(f"overhead target {'met' if met['overhead'] else 'MISSED'}; "
                  f"throughput target {'met' if met['throughput'] else 'MISSED'}")


if __name__ == "__main__":
    main()
