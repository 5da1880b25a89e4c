"""The engine: every episode at its own pace, a concurrency limit, results as they finish,
dynamic batching for in-process backends."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from rememr1.agent import Agent, AgentConfig
from rememr1.backends.base import Backend, Generation, SamplingParams
from rememr1.errors import BackendError


class CharTok:
    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


class LatencyBackend(Backend):
    """An async server stand-in: a request whose question mentions "slow" takes `slow`
    seconds, others `fast`; unlimited parallelism; records start/end times and in-flight peak."""

    name = model_name = "latency"

    def __init__(self, fast=0.01, slow=0.2, fail_after=None):
        self.fast, self.slow, self.fail_after = fast, slow, fail_after
        self.log: list[tuple[str, float, float]] = []
        self.in_flight = self.peak = self.calls = 0

    @property
    def tokenizer(self):
        return CharTok()

    def generate(self, requests, sampling):  # not used by the engine
        raise AssertionError("the engine submits one request at a time")

    async def asubmit(self, request, sampling):
        prompt = request.messages[-1]["content"]
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise BackendError("server went away")
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        t0 = time.perf_counter()
        q = re.search(r"<problem>\n(.*?)\n</problem>", prompt, re.S).group(1)
        await asyncio.sleep(self.slow if "slow" in q else self.fast)
        self.in_flight -= 1
        self.log.append((q, t0, time.perf_counter()))
        text = "<update>m</update>" if "<section>" in prompt else r"\boxed{a}"
        return Generation(text=text, finish_reason="stop", prompt_tokens=1, completion_tokens=1,
                          seconds=time.perf_counter() - t0)


def agent(backend, **kw):
    return Agent(backend, AgentConfig(chunk_size=10, **kw), SamplingParams(max_new_tokens=4, seed=0))


def test_fast_episode_does_not_wait_for_slow_one():
    be = LatencyBackend(fast=0.01, slow=0.25)
    a = agent(be)
    eps = [a.episode("x" * 50, "slow question?"), a.episode("y" * 50, "fast question?")]
    t0 = time.perf_counter()
    order = [e.question for e in a.run_iter(eps)]
    elapsed = time.perf_counter() - t0
    assert order == ["fast question?", "slow question?"]  # yielded as each finishes
    fast_end = max(end for q, _, end in be.log if q.startswith("fast"))
    slow_first_end = min(end for q, _, end in be.log if q.startswith("slow"))
    # the fast episode's 6 steps all finished before the slow episode's first reply came
    assert fast_end < slow_first_end
    # lockstep rounds would take 6 x 0.25 s as well, but the fast episode would end last-1
    assert elapsed < 6 * 0.25 + 0.5


def test_concurrency_limit_and_lazy_source():
    be = LatencyBackend(fast=0.02)
    a = agent(be)
    built = []

    def source():
        for i in range(10):
            built.append(i)
            yield a.episode("z" * 30, f"question {i}?")

    seen = 0
    for _ in a.run_iter(source(), concurrency=3):
        seen += 1
        assert len(built) <= seen + 3  # never more than 3 open beyond those finished
    assert seen == 10 and be.peak == 3


def test_backend_failure_is_raised_and_stops_the_rest():
    be = LatencyBackend(fail_after=5)
    a = agent(be)
    eps = [a.episode("w" * 40, f"q{i}?") for i in range(4)]
    with pytest.raises(BackendError, match="went away"):
        list(a.run_iter(eps))


def test_dynamic_batching_mixes_episodes_at_different_steps(scripted):
    def script(prompt, i):
        return "<update>m</update>" if "<section>" in prompt else r"\boxed{ok}"

    be = scripted(script)
    a = agent(be)
    long_ep = a.episode("l" * 100, "long?")  # 10 chunks
    short = [a.episode("s" * 20, f"short {i}?") for i in range(3)]  # 2 chunks each
    results = a.run([long_ep, *short])
    assert [len(r.steps) for r in results] == [11, 3, 3, 3]
    # the long episode shares its first three calls with the short ones, then runs alone
    assert be.batches[:3] == [4, 4, 4] and set(be.batches[3:]) == {1}


def test_sync_api_inside_a_running_event_loop(scripted):
    be = scripted(lambda p, i: "<update>m</update>" if "<section>" in p else r"\boxed{ok}")
    a = agent(be)

    async def notebook_cell():
        return a.answer("n" * 30, "q?")  # the synchronous API, called from async code

    assert asyncio.run(notebook_cell()).answer == "ok"
    assert asyncio.run(a.aanswer("n" * 30, "q?")).answer == "ok"



def test_ctrl_c_while_episodes_wait_comes_out_as_keyboard_interrupt():
    """Ctrl-C lands in the event loop's wait (the signal handler raises there): the caller
    gets KeyboardInterrupt, with the open episodes cancelled, not a cleanup error."""

    class Interrupted(LatencyBackend):
        async def asubmit(self, request, sampling):
            if self.calls == 0:
                asyncio.get_running_loop().call_later(0.05, ctrl_c)
            return await super().asubmit(request, sampling)

    def ctrl_c():
        raise KeyboardInterrupt

    be = Interrupted(fast=5.0)
    a = agent(be)
    eps = [a.episode("v" * 30, f"q{i}?") for i in range(2)]
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        list(a.run_iter(eps))
    assert be.calls == 2 and be.in_flight == 2 and not be.log  # both cancelled mid-request
    assert time.perf_counter() - started < 2.0  # did not wait for the 5 s replies


def test_concurrent_answers_on_one_loop_share_the_backends_loop_resources():
    """Two `aanswer` calls on one event loop: the first to finish must not release what
    the other still uses; the last one out releases it, once (`engine.hold_loop`)."""
    from rememr1.agent.engine import hold_loop

    class Tracking(LatencyBackend):
        def __init__(self):
            super().__init__(fast=0.01, slow=0.1)
            self.released: list[int] = []

        async def release_loop(self):
            self.released.append(self.in_flight)

    be = Tracking()
    a = agent(be)

    async def both():
        return await asyncio.gather(a.aanswer("x" * 30, "fast?"), a.aanswer("y" * 30, "slow?"))

    results = asyncio.run(both())
    assert [r.answer for r in results] == ["a", "a"]
    assert be.released == [0]  # once, after the slow one, with nothing in flight

    async def held():  # a server holds it for its lifetime: episodes never release it
        async with hold_loop(be):
            await a.aanswer("x" * 30, "q1?")
            await a.aanswer("x" * 30, "q2?")
            assert be.released == [0]
        assert be.released == [0, 0]

    asyncio.run(held())
