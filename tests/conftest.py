"""Shared test fixtures: a scripted backend that drives the agent deterministically.

The scripted backend is for tests only; the product's default path uses a real model.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from rememr1.backends.base import Backend, ChatRequest, Generation, SamplingParams


class CharTokenizer:
    """One token per character: exact round trips, trivial to reason about."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(i) for i in ids)


class ScriptedBackend(Backend):
    """Replies come from `script(prompt_text, call_index) -> str`; every request is kept.
    Like the in-process hf backend it batches dynamically: `batches` records the size of
    every `generate` call (requests waiting together go into one)."""

    name = "scripted"
    model_name = "scripted"
    batching = True
    max_batch_size = 10_000

    def __init__(self, script: Callable[[str, int], str], *, context_window: int = 100_000):
        self.script = script
        self.context_window = context_window
        self.requests: list[ChatRequest] = []
        self.batches: list[int] = []
        self._tok = CharTokenizer()

    @property
    def tokenizer(self):
        return self._tok

    def generate(self, requests, sampling: SamplingParams):
        self.batches.append(len(requests))
        out = []
        for req in requests:
            t = time.perf_counter()
            prompt = req.messages[-1]["content"]
            text = self.script(prompt, len(self.requests))
            self.requests.append(req)
            out.append(
                Generation(
                    text=text,
                    finish_reason="stop",
                    prompt_tokens=len(prompt),
                    completion_tokens=len(text),
                    seconds=time.perf_counter() - t,
                )
            )
        return out

    @property
    def prompts(self) -> list[str]:
        return [r.messages[-1]["content"] for r in self.requests]


@pytest.fixture
def scripted():
    return ScriptedBackend
