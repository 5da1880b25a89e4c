"""The one generation interface every backend implements, and what all of them share.

A backend turns chat requests into texts plus accounting (token counts, latency, finish
reason). The agent engine, evaluation and RL rollouts only ever talk to this interface,
so adding a backend never touches the agent.

    gen = await backend.asubmit(ChatRequest(messages=[{"role": "user", "content": "hi"}]),
                                SamplingParams(max_new_tokens=32, temperature=0.0))
    gens = backend.generate([request, ...], sampling)      # a batch, synchronously
    gen.text, gen.finish_reason, gen.completion_tokens

Shared here, once: validated sampling settings (`SamplingParams`), the per-request plan
(prompt size, the token cap cut to the context window, the seed: `Backend.plan`), error
generations (a request that fails alone becomes a Generation, never an exception), and a
dynamic batcher (`DynamicBatcher`) for backends whose `generate` is faster on batches:
requests from many episodes that wait at the same moment go into one call. Each backend
only does its own transport.
"""

from __future__ import annotations

import asyncio
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from rememr1.errors import InputError
from rememr1.options import option


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """How to sample. A value object, separate from the model, as in vLLM; it validates
    itself at construction.

    `seed` makes a request reproducible where the backend supports it; a per-request seed
    on `ChatRequest` overrides it (batched callers give each sample its own seed so the
    result does not depend on how requests were grouped).
    """

    max_new_tokens: int = option(
        1024, "token budget per step (default: the method's, 2048 rememr1, 1024 memagent)",
        flag="--max-new-tokens", cli_default=None)
    temperature: float = option(0.7, "sampling temperature (0 = greedy)", flag="--temperature")
    top_p: float = option(0.95, "nucleus sampling: smallest set of tokens with this much probability",
                          flag="--top-p")
    seed: int | None = option(None, "sampling seed (per step, independent of batching)", flag="--seed",
                              cli_default=0)
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise InputError(f"max new tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise InputError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"top-p must be in (0, 1], got {self.top_p}")
        object.__setattr__(self, "stop", tuple(self.stop))

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


# ----------------------------------------------------------------- shared per request


def clamp_max_new_tokens(prompt_tokens: int, max_new_tokens: int, context_window: int) -> int | None:
    """How many tokens may be generated: `max_new_tokens`, cut to what fits after the
    prompt; None when the prompt alone fills the window (nothing can be generated)."""
    room = context_window - prompt_tokens
    if room <= 0:
        return None
    return max(0, min(max_new_tokens, room))


def window_error(prompt_tokens: int, context_window: int) -> str:
    return (f"prompt has {prompt_tokens} tokens but the context window is {context_window}; "
            "shorten the prompt (smaller chunks) or use a larger context window")


def map_finish_reason(reason: str | None) -> str:
    """An OpenAI-style finish reason as ours: only a token cap means the text was cut;
    a content filter is an error; anything else (eos, stop string, tool call) is a stop."""
    if reason == "length":
        return FINISH_LENGTH
    if reason == "content_filter":
        return FINISH_ERROR
    return FINISH_STOP


def error_generation(message: str, start: float, *, prompt_tokens: int = 0) -> Generation:
    """The Generation of a request that failed on its own; `start` is its perf_counter()."""
    return Generation(text="", finish_reason=FINISH_ERROR, prompt_tokens=prompt_tokens,
                      completion_tokens=0, seconds=time.perf_counter() - start, error=message)


@dataclass(frozen=True)
class RequestPlan:
    """A request ready for transport: its prompt size (and ids, where the backend knows
    them exactly), how many tokens it may generate, and its seed."""

    request: ChatRequest
    prompt_tokens: int
    max_new: int
    seed: int | None
    start: float
    prompt_ids: tuple[int, ...] | None = None


# ---------------------------------------------------------------------------- backend


class Backend(ABC):
    """Base class for model backends.

    Subclasses implement `generate` (a batch, synchronously) and may override `asubmit`
    (one request, awaited) with their own transport; `prompt_ids` (exact prompt tokens
    after the chat template) where they can. `context_window` is the model's maximum
    sequence length (prompt + completion). A backend that sets `batching = True` gets its
    `asubmit` from a `DynamicBatcher` over its `generate`.
    """

    name: str = "base"
    model_name: str = ""
    context_window: int = 8192
    batching: bool = False  # concurrent asubmit calls share generate() calls
    max_batch_size: int = 8

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

    async def asubmit(self, request: ChatRequest, sampling: SamplingParams) -> Generation:
        """One request, awaited: what the engine calls for every agent step."""
        if self.batching:
            return await self._batcher().submit(request, sampling)
        return (await asyncio.to_thread(self.generate, [request], sampling))[0]

    async def release_loop(self) -> None:  # noqa: B027 - optional hook
        """Free what `asubmit` bound to the running event loop (clients, connections); the
        engine calls it when it is done with the loop."""

    async def agenerate(
        self, requests: Sequence[ChatRequest], sampling: SamplingParams
    ) -> list[Generation]:
        return list(await asyncio.gather(*(self.asubmit(r, sampling) for r in requests)))

    def prompt_ids(self, request: ChatRequest) -> list[int] | None:
        """Token ids of the request after the chat template, or None when the backend
        cannot know them exactly (then `count_prompt_tokens` estimates)."""
        return None

    def count_prompt_tokens(self, request: ChatRequest) -> int:
        """Tokens of the request after the chat template (estimate where unknown)."""
        ids = self.prompt_ids(request)
        if ids is not None:
            return len(ids)
        text = "".join(m["content"] for m in request.messages)
        return len(self.tokenizer.encode(text)) + 8 * len(request.messages)

    def plan(self, request: ChatRequest, sampling: SamplingParams) -> RequestPlan | Generation:
        """The shared per-request setup: prompt size, the token cap cut to fit the
        window, the seed (request's, else the sampling's). A request that cannot run comes
        back as its final Generation (template error, prompt over the window, no room)."""
        start = time.perf_counter()
        cap = request.max_new_tokens if request.max_new_tokens is not None else sampling.max_new_tokens
        try:
            ids = self.prompt_ids(request)
            if ids is not None:
                n = len(ids)
            else:
                # A token covers at least one byte: when even the byte count fits, skip
                # tokenizing (the server reports the real count); estimate ~4 bytes/token.
                upper = sum(len(str(m.get("content", "")).encode()) for m in request.messages)
                upper += 16 * len(request.messages)
                n = upper // 4 if upper + cap <= self.context_window else self.count_prompt_tokens(request)
        except Exception as exc:  # a template error concerns this request only
            return error_generation(f"cannot apply the chat template: {exc}", start)
        max_new = clamp_max_new_tokens(n, cap, self.context_window)
        if max_new is None:
            note = "" if ids is not None else " (estimated)"
            return error_generation(window_error(n, self.context_window) + note, start, prompt_tokens=n)
        prompt = tuple(ids) if ids is not None else None
        if max_new == 0:
            return Generation(text="", finish_reason=FINISH_LENGTH, prompt_tokens=n, completion_tokens=0,
                              seconds=0.0, prompt_ids=prompt, completion_ids=() if prompt else None)
        seed = request.seed if request.seed is not None else sampling.seed
        return RequestPlan(request=request, prompt_tokens=n, max_new=max_new, seed=seed, start=start,
                           prompt_ids=prompt)

    def _batcher(self) -> DynamicBatcher:
        batcher = self.__dict__.get("_dynamic_batcher")
        if batcher is None:
            batcher = self.__dict__.setdefault("_dynamic_batcher",
                                               DynamicBatcher(self.generate, self.max_batch_size))
        return batcher

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (servers, threads, memory)."""
        batcher = self.__dict__.pop("_dynamic_batcher", None)
        if batcher is not None:
            batcher.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DynamicBatcher:
    """Requests submitted from many asyncio tasks, generated together.

    A worker thread takes whatever requests are waiting when it is free (up to
    `max_batch_size`, with the same sampling settings) and runs them through `generate`
    in one call, so episodes at different steps share a forward pass. Requests submitted
    within one turn of the event loop are handed over together (a flush scheduled with
    `call_soon`), and a batch's results are delivered to the loop in one callback, so the
    episodes a batch releases submit their next requests as one batch too.
    """

    def __init__(self, generate, max_batch_size: int):
        self._generate = generate
        self.max_batch_size = max(1, int(max_batch_size))
        self._queue: deque = deque()
        self._cond = threading.Condition()
        self._staged: dict[Any, list] = {}  # loop -> submissions not yet handed over
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batch_sizes: list[int] = []  # every generate() call's size (diagnostic)

    async def submit(self, request: ChatRequest, sampling: SamplingParams) -> Generation:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        staged = self._staged.setdefault(loop, [])
        if not staged:
            loop.call_soon(self._flush, loop)
        staged.append((request, sampling, future, loop))
        return await future

    def _flush(self, loop) -> None:
        items = self._staged.pop(loop, [])
        with self._cond:
            if self._closed:
                for *_, future, _ in items:
                    future.set_exception(RuntimeError("the backend was closed"))
                return
            self._queue.extend(items)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="rememr1-batcher", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _take(self) -> list | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            sampling = self._queue[0][1]
            batch, rest = [], deque()
            while self._queue and len(batch) < self.max_batch_size:
                item = self._queue.popleft()
                (batch if item[1] == sampling else rest).append(item)
            self._queue.extendleft(reversed(rest))
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            requests = [item[0] for item in batch]
            self.batch_sizes.append(len(batch))
            try:
                outcome: Any = self._generate(requests, batch[0][1])
                error = None
            except BaseException as exc:  # delivered to the awaiting tasks
                outcome, error = None, exc
            by_loop: dict[Any, list] = {}
            for k, (_, _, future, loop) in enumerate(batch):
                by_loop.setdefault(loop, []).append((future, None if error else outcome[k]))
            for loop, pairs in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_deliver, pairs, error)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    pass

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _deliver(pairs, error) -> None:
    for future, result in pairs:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


__all__ = [
    "FINISH_ERROR", "FINISH_LENGTH", "FINISH_STOP", "Backend", "ChatRequest", "DynamicBatcher",
    "Generation", "RequestPlan", "SamplingParams", "Tokenizer", "clamp_max_new_tokens",
    "error_generation", "map_finish_reason", "window_error",
]
