"""Scheduling: the engine (every episode at its own pace) against lockstep rounds and a
one-coroutine-per-item reference client, on the same simulated server; and the hf
backend's dynamic batching against its raw batched throughput.

    python bench/scheduling.py                      # server part (~2 min) + hf part (~5 min)
    python bench/scheduling.py --skip-hf            # server part only (keeps the saved hf part)
    python bench/scheduling.py --report             # reprint the saved tables

Server part: an OpenAI-compatible HTTP server in this process (FastAPI + uvicorn) answers
every chat request after its own latency, drawn from a seeded log-normal keyed on the
request's question and section (so all clients see the same latency for the same work),
with unlimited parallelism; it counts the peak number of requests in flight. Each client
answers `--items` questions over documents of `--chunks` chunks (chunks + 1 requests per
item) at concurrency 1, 8 and 48:
* engine    -- `rememr1`'s agent on the openai backend (the path `rememr1 eval` takes);
* lockstep  -- the previous policy: rounds of requests, each waiting for its slowest reply;
* reference -- one coroutine per item with a semaphore, the official client's shape,
  using the official `openai` async client and the same prompts' tags and chunks.

hf part: the built-in model on the hf backend, RevHop-like 2K-token documents in chunks of
1024 tokens, 64 new tokens: items/s and generated tokens/s at concurrency 1 and 8, and the
raw throughput of `generate` on batches of 8 prompts of the same lengths (the ceiling).

Writes bench/results/scheduling.json. Targets (issue 10): engine wall time <= 0.9x the
reference's at 48 in flight; hf at concurrency 8 >= 70% of the raw batched throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import socket
import threading
import time
from pathlib import Path

from fastapi import FastAPI, Request  # noqa: E402 - FastAPI reads the handler's annotations
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "scheduling.json"
SENTENCE = "The harbour log records ships, cargo and weather for every day of the year. "


# ------------------------------------------------------------------------ the server


class SimServer:
    """A simulated OpenAI-compatible server with per-request latency and no capacity limit."""

    def __init__(self, *, mean: float, sigma: float, seed: int):
        self.mean, self.sigma, self.seed = mean, sigma, seed
        self.in_flight = self.peak = self.requests = 0
        self.chain: dict[str, float] = {}  # summed latency of each item's requests
        self.port = _free_port()
        self._server = None

    def latency(self, key: str) -> float:
        h = hashlib.blake2b(f"{self.seed}/{key}".encode(), digest_size=8).digest()
        u1 = (int.from_bytes(h[:4], "little") + 1) / (2**32 + 2)
        u2 = (int.from_bytes(h[4:], "little") + 1) / (2**32 + 2)
        z = math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)  # Box-Muller
        mu = math.log(self.mean) - self.sigma**2 / 2  # so that the mean is `mean`
        return math.exp(mu + self.sigma * z)

    def app(self):
        app = FastAPI()

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": "sim", "object": "model", "owned_by": "bench"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            prompt = body["messages"][-1]["content"]
            self.requests += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            key = _work_key(prompt)
            latency = self.latency(key)
            question = key.split("|")[0]
            self.chain[question] = self.chain.get(question, 0.0) + latency
            try:
                await asyncio.sleep(latency)
            finally:
                self.in_flight -= 1
            text = ("<update>the harbour log lists ships</update>" if "<section>" in prompt
                    else r"\boxed{Orrin Yard}")
            return {"id": "x", "object": "chat.completion", "created": 0, "model": "sim",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": 12,
                              "total_tokens": len(prompt) // 4 + 12}}

        return app

    def start(self) -> None:
        import uvicorn

        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="error",
                                limit_concurrency=100_000, backlog=4096)
        self._server = uvicorn.Server(config)
        thread = threading.Thread(target=self._server.run, daemon=True)
        thread.start()
        while not self._server.started:
            time.sleep(0.05)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    def reset(self) -> None:
        self.peak = self.requests = 0
        self.chain = {}

    @property
    def critical_path(self) -> float:
        """The slowest item's summed latency: no client can finish all items sooner."""
        return max(self.chain.values(), default=0.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _work_key(prompt: str) -> str:
    """What identifies a request's work in every client: its question and its section."""
    import re

    q = re.search(r"<problem>\s*(.*?)\s*</problem>", prompt, re.S)
    s = re.search(r"<section>\s*(.*?)\s*</section>", prompt, re.S)
    return (q.group(1) if q else "") + "|" + (s.group(1)[:200] if s else "final")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------ the clients


def items(n: int, chunks: int, chunk_tokens: int, tokenizer) -> list[tuple[str, str]]:
    unit = len(tokenizer.encode(SENTENCE))
    out = []
    for i in range(n):
        doc = f"Item {i}. " + SENTENCE * (chunks * chunk_tokens // unit)
        ids = tokenizer.encode(doc)[: chunks * chunk_tokens]
        out.append((tokenizer.decode(ids), f"Who built the lens for lighthouse {i}?"))
    return out


def run_engine(url: str, work, *, concurrency: int, chunk: int) -> float:
    from rememr1.agent import Agent, AgentConfig
    from rememr1.backends import load_backend
    from rememr1.backends.base import SamplingParams

    with load_backend("openai", base_url=url, model="sim", concurrency=concurrency) as be:
        agent = Agent(be, AgentConfig(chunk_size=chunk), SamplingParams(max_new_tokens=64, seed=0))
        eps = (agent.episode(d, q, index=i) for i, (d, q) in enumerate(work))
        t0 = time.perf_counter()
        n = sum(1 for _ in agent.run_iter(eps, concurrency=concurrency))
        assert n == len(work)
        return time.perf_counter() - t0


def run_lockstep(url: str, work, *, concurrency: int, chunk: int) -> float:
    """The previous policy: every round sends the next request of every open episode and
    waits for all replies before the next round."""
    from rememr1.agent import Agent, AgentConfig
    from rememr1.backends import load_backend
    from rememr1.backends.base import SamplingParams

    with load_backend("openai", base_url=url, model="sim", concurrency=concurrency) as be:
        agent = Agent(be, AgentConfig(chunk_size=chunk), SamplingParams(max_new_tokens=64, seed=0))
        source = iter([agent.episode(d, q, index=i) for i, (d, q) in enumerate(work)])
        t0 = time.perf_counter()
        active: list = []
        while True:
            while len(active) < concurrency and (ep := next(source, None)) is not None:
                active.append(ep)
            if not active:
                break
            gens = be.generate([e.next_request() for e in active], agent.sampling)
            for e, g in zip(active, gens):
                e.consume(g)
            active = [e for e in active if not e.done]
        return time.perf_counter() - t0


def run_reference(url: str, work, *, concurrency: int, chunk: int, tokenizer) -> float:
    """One coroutine per item with a semaphore, as the official evaluation client: chunk
    the document with the tokenizer, one request per chunk (memory = the reply), then the
    final request; the same tags, hence the same simulated latencies."""
    import openai

    async def main() -> float:
        client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=600)
        sem = asyncio.Semaphore(concurrency)

        async def one(doc: str, q: str):
            async with sem:
                ids = tokenizer.encode(doc)
                memory = "No previous memory"
                for at in range(0, len(ids), chunk):
                    section = tokenizer.decode(ids[at : at + chunk])
                    msg = (f"<problem>\n{q}\n</problem>\n<memory>\n{memory}\n</memory>\n"
                           f"<section>\n{section}\n</section>\nUpdated memory:")
                    r = await client.chat.completions.create(
                        model="sim", messages=[{"role": "user", "content": msg}],
                        max_tokens=64, temperature=0.7, top_p=0.95)
                    memory = r.choices[0].message.content
                msg = f"<problem>\n{q}\n</problem>\n<memory>\n{memory}\n</memory>\nYour answer:"
                r = await client.chat.completions.create(
                    model="sim", messages=[{"role": "user", "content": msg}],
                    max_tokens=64, temperature=0.7, top_p=0.95)
                return r.choices[0].message.content

        t0 = time.perf_counter()
        await asyncio.gather(*(one(d, q) for d, q in work))
        elapsed = time.perf_counter() - t0
        await client.close()
        return elapsed

    return asyncio.run(main())


def server_part(args) -> list[dict]:
    from rememr1.backends.builtin import builtin_gguf_path
    from rememr1.backends.tokenization import load_tokenizer

    tok = load_tokenizer(builtin_gguf_path())
    work = items(args.items, args.chunks, args.chunk_size, tok)
    server = SimServer(mean=args.latency, sigma=args.sigma, seed=args.seed)
    server.start()
    rows = []
    try:
        for c in [int(x) for x in args.concurrency.split(",")]:
            for name, fn in (("engine", run_engine), ("lockstep", run_lockstep), ("reference", run_reference)):
                server.reset()
                kwargs = {"tokenizer": tok} if name == "reference" else {}
                wall = fn(server.url, work, concurrency=c, chunk=args.chunk_size, **kwargs)
                rows.append({"client": name, "concurrency": c, "wall_s": wall,
                             "items_per_s": len(work) / wall, "requests": server.requests,
                             "peak_in_flight": server.peak, "critical_path_s": server.critical_path})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        server.stop()
    return rows


# ---------------------------------------------------------------------------- hf part


def hf_part(args) -> dict:
    import torch

    from rememr1.agent import Agent, AgentConfig
    from rememr1.backends.base import ChatRequest, SamplingParams
    from rememr1.backends.hf import HFBackend

    torch.manual_seed(0)
    be = HFBackend(None, device="cpu", max_batch_size=8)
    work = items(8, 2, 1024, be.tokenizer)
    sampling = SamplingParams(max_new_tokens=64, temperature=0.7, top_p=0.95, seed=0)
    out: dict = {}
    for c in (1, 8):
        agent = Agent(be, AgentConfig(chunk_size=1024), sampling)
        eps = [agent.episode(d, q, index=i) for i, (d, q) in enumerate(work)]
        t0 = time.perf_counter()
        for _ in agent.run_iter(eps, concurrency=c):
            pass
        wall = time.perf_counter() - t0
        gen = sum(r.completion_tokens for e in eps for r in e.records)
        out[f"engine_c{c}"] = {"wall_s": wall, "items_per_s": len(work) / wall, "gen_tokens": gen,
                               "gen_tokens_per_s": gen / wall}
        print(json.dumps({f"engine_c{c}": out[f"engine_c{c}"]}), flush=True)
    # the ceiling: generate() on batches of 8 of the engine's own first-step prompts
    agent = Agent(be, AgentConfig(chunk_size=1024), sampling)
    reqs = [agent.episode(d, q, index=i).next_request() for i, (d, q) in enumerate(work)]
    t0 = time.perf_counter()
    gens = be.generate([ChatRequest(r.messages, seed=r.seed) for r in reqs], sampling)
    wall = time.perf_counter() - t0
    tokens = sum(g.completion_tokens for g in gens)
    out["raw_batch8"] = {"wall_s": wall, "gen_tokens": tokens, "gen_tokens_per_s": tokens / wall,
                         "prompt_tokens": sum(g.prompt_tokens for g in gens)}
    out["share_c8"] = out["engine_c8"]["gen_tokens_per_s"] / out["raw_batch8"]["gen_tokens_per_s"]
    print(json.dumps({"raw_batch8": out["raw_batch8"], "share_c8": out["share_c8"]}), flush=True)
    return out


def show(results: dict) -> None:
    console = Console()
    rows = results.get("server", [])
    if rows:
        a = results["args"]
        t = Table(title=f"{a['items']} items x {a['chunks'] + 1} requests, simulated server "
                        f"(latency log-normal, mean {a['latency']} s, sigma {a['sigma']})")
        for col in ("concurrency", "client", "wall s", "items/s", "peak in flight", "vs reference",
                    "slowest item's latency s"):
            t.add_column(col, justify="right")
        ref = {r["concurrency"]: r["wall_s"] for r in rows if r["client"] == "reference"}
        for r in rows:
            t.add_row(str(r["concurrency"]), r["client"], f"{r['wall_s']:.2f}", f"{r['items_per_s']:.2f}",
                      str(r["peak_in_flight"]), f"{r['wall_s'] / ref[r['concurrency']]:.2f}x",
                      f"{r.get('critical_path_s', float('nan')):.2f}")
        console.print(t)
    hf = results.get("hf")
    if hf:
        t = Table(title="hf backend, built-in model, CPU: 8 items of 2 x 1024-token chunks, 64 new tokens")
        for col in ("run", "wall s", "items/s", "generated tokens/s"):
            t.add_column(col, justify="right")
        for key in ("engine_c1", "engine_c8"):
            r = hf[key]
            t.add_row(key.replace("engine_c", "engine, concurrency "), f"{r['wall_s']:.1f}",
                      f"{r['items_per_s']:.3f}", f"{r['gen_tokens_per_s']:.1f}")
        r = hf["raw_batch8"]
        t.add_row("raw generate(), batch of 8 first-step prompts", f"{r['wall_s']:.1f}", "-",
                  f"{r['gen_tokens_per_s']:.1f}")
        console.print(t)
        console.print(f"engine at concurrency 8 reaches {100 * hf['share_c8']:.0f}% of the raw batched "
                      "generation throughput (target >= 70%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--chunks", type=int, default=8, help="chunks per document (requests = chunks + 1)")
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--concurrency", default="1,8,48")
    ap.add_argument("--latency", type=float, default=0.05, help="mean seconds per request")
    ap.add_argument("--sigma", type=float, default=0.8, help="log-normal spread of latencies")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    if args.report:
        show(json.loads(RESULTS.read_text()))
        return
    results = {"args": vars(args), "server": server_part(args)}
    if not args.skip_hf:
        results["hf"] = hf_part(args)
    elif RESULTS.exists() and "hf" in (old := json.loads(RESULTS.read_text())):
        results["hf"] = old["hf"]  # keep the last hf measurement
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    show(results)


if __name__ == "__main__":
    main()
