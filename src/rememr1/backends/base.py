"""The one generation interface every backend implements.

A backend turns a batch of chat requests into texts plus accounting (token counts,
latency, finish reason). The agent loop, evaluation and RL rollouts only ever talk to
this interface, so adding a backend never touches the agent.

    gens = backend.generate([ChatRequest(messages=[{"role": "user", "content": "hi"}])],
                            SamplingParams(max_new_tokens=32, temperature=0.0))
    gens[0].text, gens[0].finish_reason, gens[0].completion_tokens
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Protocol, Sequence


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """How to sample. A value object, separate from the model, as in vLLM.

    `seed` makes a request reproducible where the backend supports it; a per-request seed
    on `ChatRequest` overrides it (batched callers give each sample its own seed so the
    result does not depend on how requests were grouped).
    """

    max_new_tokens: int = 1024
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class ChatRequest:
    """One conversation to continue: a list of {role, content} messages."""

    messages: tuple[dict, ...] | list[dict]
    seed: int | None = None
    max_new_tokens: int | None = None  # per-request cap, overrides SamplingParams.max_new_tokens


FINISH_STOP = "stop"  # the model ended its reply (EOS or a stop string)
FINISH_LENGTH = "length"  # cut off by the token limit: the reply is incomplete
FINISH_ERROR = "error"  # the backend failed for this request; `error` says why


@dataclass(frozen=True)
class Generation:
    """What a backend returns for one request."""

    text: str
    finish_reason: str  # one of FINISH_STOP, FINISH_LENGTH, FINISH_ERROR
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # wall time attributed to this request
    error: str | None = None
    # Filled by backends that run the model in-process (hf); used by RL training.
    prompt_ids: tuple[int, ...] | None = field(default=None, repr=False)
    completion_ids: tuple[int, ...] | None = field(default=None, repr=False)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == FINISH_LENGTH


class Tokenizer(Protocol):
    """The policy model's tokenizer, as the chunker needs it."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class Backend(ABC):
    """Base class for model backends.

    Subclasses implement `generate`; `agenerate` defaults to running it in a thread.
    `context_window` is the model's maximum sequence length (prompt + completion).
    """

    name: str = "base"
    model_name: str = ""
    context_window: int = 8192

    @property
    @abstractmethod
    def tokenizer(self) -> Tokenizer: ...

    @abstractmethod
    def generate(
        self, requests: Sequence[ChatRequest], sampling: SamplingParams
    ) -> list[Generation]:
        """Generate one reply per request, in order. Never raises for a single failed
        request when others succeeded: that request gets finish_reason="error". Raises
        BackendError when the backend as a whole cannot work (server down, no model)."""

    async def agenerate(
        self, requests: Sequence[ChatRequest], sampling: SamplingParams
    ) -> list[Generation]:
        return await asyncio.to_thread(self.generate, requests, sampling)

    def count_prompt_tokens(self, request: ChatRequest) -> int:
        """Tokens of the request after the chat template (estimate where unknown)."""
        text = "".join(m["content"] for m in request.messages)
        return len(self.tokenizer.encode(text)) + 8 * len(request.messages)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (servers, threads, memory)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
