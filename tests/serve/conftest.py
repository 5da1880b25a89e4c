"""Fixtures for the server tests: the app on 127.0.0.1 in a uvicorn thread, a scripted
backend whose answers can be checked, and slow or failing backends.

The fact backend answers from what it read: each memory step keeps the section's
"The code of X is Y." sentences, the final step boxes the code named for the question's X,
so an answer is right only when its own document and question reached the model.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request  # at module level: FastAPI reads the handlers' annotations

from conftest import CharTokenizer, ScriptedBackend
from rememr1.agent import Agent, AgentConfig
from rememr1.backends.base import Backend, Generation, SamplingParams
from rememr1.serve import ServeSettings, create_app

FACT = re.compile(r"The code of (\w+) is (\w+)\.")


def fact_script(prompt: str, i: int) -> str:
    section = re.search(r"<section>\n(.*?)\n</section>", prompt, re.S)
    if section is not None:  # keep the facts, and the unfinished sentence the section ends on
        memory = re.search(r"<memory>\n(.*?)\n</memory>", prompt, re.S).group(1)
        kept = FACT.findall(memory)
        tail = memory.split("[[", 1)[1][:-2] if "[[" in memory else ""
        text = tail + section.group(1)
        facts = kept + FACT.findall(text)
        rest = text[text.rfind(".") + 1:]
        return "<update>" + " ".join(f"The code of {k} is {v}." for k, v in facts) + "[[" + rest + "]]</update>"
    subject = re.search(r"What is the code of (\w+)\?", prompt)
    codes = dict(FACT.findall(prompt))
    return r"\boxed{" + codes.get(subject.group(1) if subject else "", "unknown") + "}"


def fact_document(subject: str, code: str, filler: int = 6) -> str:
    noise = "Ships came and went from the harbour all year. " * filler
    return f"{noise}The code of decoy{subject} is WRONG. {noise}The code of {subject} is {code}. {noise}"


def make_agents(backend: Backend, methods=("rememr1", "memagent"), **kw) -> dict[str, Agent]:
    return {m: Agent(backend, AgentConfig(method=m, chunk_size=200, **kw), SamplingParams(max_new_tokens=64, seed=0))
            for m in methods}


class Server:
    """The app on a free port of 127.0.0.1, served by uvicorn in a thread."""

    def __init__(self, app, port: int | None = None):
        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self):
        self._thread.start()
        deadline = time.time() + 20
        while not self._server.started:
            if time.time() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self._server.should_exit = True
        self._thread.join(timeout=20)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture
def serve():
    """serve(agents, **settings) -> a started Server; all are stopped at the end."""
    started = []

    def start(agents, **settings):
        server = Server(create_app(agents, ServeSettings(**settings))).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture
def fact_backend():
    return ScriptedBackend(fact_script)


class SlowBackend(Backend):
    """Every request waits `delay` seconds (or until `gate` is set); records what ran,
    what was cancelled mid-request, and the most requests in flight."""

    name = model_name = "slow"
    context_window = 100_000

    def __init__(self, delay: float = 0.05, gate: threading.Event | None = None, fail: BaseException | None = None):
        self.delay, self.gate, self.fail = delay, gate, fail
        self.started = self.finished = self.cancelled = self.in_flight = self.peak = 0
        self.samplings: list[SamplingParams] = []

    @property
    def tokenizer(self):
        return CharTokenizer()

    def generate(self, requests, sampling):
        raise AssertionError("the engine submits one request at a time")

    async def asubmit(self, request, sampling):
        if self.fail is not None:
            raise self.fail
        self.started += 1
        self.samplings.append(sampling)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.gate is not None:
                while not self.gate.is_set():
                    await asyncio.sleep(0.01)
            else:
                await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        self.finished += 1
        prompt = request.messages[-1]["content"]
        return Generation(text=fact_script(prompt, 0), finish_reason="stop", prompt_tokens=len(prompt),
                          completion_tokens=8, seconds=self.delay)


def fake_upstream(chat) -> FastAPI:
    """An OpenAI-compatible upstream listing one model, "up", whose chat completions are
    `await chat(request)` (a `Request`): for rememr1's openai backend to talk to."""
    up = FastAPI()

    async def models():
        return {"object": "list", "data": [{"id": "up", "object": "model", "owned_by": "test"}]}

    async def completions(request: Request):
        return await chat(request)

    up.add_api_route("/v1/models", models, methods=["GET"])
    up.add_api_route("/v1/chat/completions", completions, methods=["POST"])
    return up


def completion(text: str, prompt_tokens: int = 5, completion_tokens: int = 3) -> dict:
    return {"id": "u", "object": "chat.completion", "created": 0, "model": "up",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
