"""Shared test fixtures: a scripted backend that drives the agent deterministically.

The scripted backend is for tests only; the product's default path uses a real model.
"""

from __future__ import annotations

import json
import random
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


# -- Small HotpotQA-style fixture files written by the tests themselves (data and cli tests) --
N_QUESTIONS = 30
N_SHARED = 40


def hotpot_records(n_questions: int = N_QUESTIONS, seed: int = 7) -> list[dict]:
    """HotpotQA original-format records: 2 gold paragraphs per question (unique) and 8
    distractors drawn from a shared set, so paragraphs repeat across questions."""
    rng = random.Random(seed)
    shared = [
        [f"Shared {k}", [f"Shared fact {k} one. ", f"Shared fact {k} two."]] for k in range(N_SHARED)
    ]
    out = []
    for q in range(n_questions):
        gold = [
            [f"Gold {q} A", [f"Gold {q} A first. ", f"Gold {q} A second."]],
            [f"Gold {q} B", [f"Gold {q} B only."]],
        ]
        ctx = gold + rng.sample(shared, 8)
        rng.shuffle(ctx)
        out.append({
            "_id": f"q{q:03d}",
            "question": f"What links gold {q} A and gold {q} B",  # no '?': normalised
            "answer": f"answer {q}",
            "type": "bridge" if q % 2 else "comparison",
            "level": "hard",
            "supporting_facts": [[f"Gold {q} A", 0], [f"Gold {q} A", 1], [f"Gold {q} B", 0]],
            "context": ctx,
        })
    return out


def flashrag_records(hotpot: list[dict]) -> list[dict]:
    """The same questions in FlashRAG's layout."""
    out = []
    for r in hotpot:
        out.append({
            "id": r["_id"],
            "question": r["question"],
            "golden_answers": [r["answer"]],
            "metadata": {
                "type": r["type"],
                "level": r["level"],
                "supporting_facts": {
                    "title": [t for t, _ in r["supporting_facts"]],
                    "sent_id": [s for _, s in r["supporting_facts"]],
                },
                "context": {
                    "title": [t for t, _ in r["context"]],
                    "sentences": [s for _, s in r["context"]],
                },
            },
        })
    return out


@pytest.fixture
def hotpot_file(tmp_path):
    p = tmp_path / "hotpot_dev_distractor_v1.json"
    p.write_text(json.dumps(hotpot_records()))
    return p


@pytest.fixture
def flashrag_jsonl(tmp_path):
    p = tmp_path / "hotpotqa_dev_flashrag.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in flashrag_records(hotpot_records())) + "\n")
    return p
