"""The memory agent: one state-transition function and one loop, for every method.

    from rememr1 import Agent
    agent = Agent()                                   # built-in model on llama.cpp
    result = agent.answer(open("report.txt").read(), "Who built the ship?")
    result.answer, result.steps, result.usage

Per sample the agent reads chunk after chunk. At each memory step the model sees the
question, the recalled memory, its current memory and the chunk, and replies with an
<update> (its new memory) and maybe a <recall> query. `transition` turns (state, reply)
into the next state; it is the only place that does so, and inference, evaluation and RL
rollouts all go through it. After the last chunk a final prompt asks for `\\boxed{}`.

Methods are configurations of this one loop (`METHODS`):
  rememr1        recall blocks on, the model writes the query
  memagent       no recall: the memory is simply overwritten
  rule-callback  recall blocks on, the question itself is the query at every step
  full-context   no memory steps: the whole document (middle-truncated) in one prompt
  rag            no memory steps: the top-k chunks retrieved by the question in one prompt

Many samples run in lockstep: each round asks every unfinished episode for its next
request and sends them to the backend as one batch (one `generate` call on `hf`;
overlapping requests on `openai`/`llamacpp`). Simplification: a round waits for its
slowest request; samples with fewer chunks finish early and drop out.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

from .backends.base import Backend, ChatRequest, Generation, SamplingParams
from .chunking import DEFAULT_CHUNK_SIZE, Chunk, TokenizedDocument
from .compat import AgentCompat
from .errors import InputError
from .memory import Retriever, make_retriever
from .protocol import (
    ANSWER_FORMATS,
    TemplateSet,
    answer_of,
    load_templates,
    memory_from_reply,
    official_memory,
    official_recall_query,
    parse_reply,
    render_prompt,
)
from .records import FINAL_STEP, MEMORY_STEP, AnswerResult, RecallHit, StepRecord, Usage


@dataclass(frozen=True, kw_only=True)
class Method:
    name: str
    recall: bool = False  # show <recalled_memory> and run retrieval after each step
    query_from_question: bool = False  # rule-callback: the question is the query
    single_prompt: str | None = None  # "full" or "rag": no memory steps
    default_max_new_tokens: int = 1024


METHODS: dict[str, Method] = {
    "rememr1": Method(name="rememr1", recall=True, default_max_new_tokens=2048),
    "memagent": Method(name="memagent", default_max_new_tokens=1024),
    "rule-callback": Method(
        name="rule-callback", recall=True, query_from_question=True, default_max_new_tokens=2048
    ),
    "full-context": Method(name="full-context", single_prompt="full"),
    "rag": Method(name="rag", single_prompt="rag"),
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}") from None


# ------------------------------------------------------------------ state and transition


@dataclass(frozen=True)
class AgentState:
    """What the agent knows before a memory step.

    `history` holds the memories written so far, in order (each distinct memory once
    under the `memory_set` compatibility switch); `history_steps[i]` is the step that
    wrote `history[i]`. `memory` is the latest memory ("" before the first step);
    `recalled` is what the next prompt shows as recalled memory.
    """

    step: int = 0
    memory: str = ""
    recalled: tuple[RecallHit, ...] = ()
    history: tuple[str, ...] = ()
    history_steps: tuple[int, ...] = ()  # default: memory i was written by step i

    def __post_init__(self) -> None:
        if not self.history_steps and self.history:
            object.__setattr__(self, "history_steps", tuple(range(len(self.history))))
        if len(self.history_steps) != len(self.history):
            raise ValueError("history_steps must name the step of every history entry")


@dataclass(frozen=True)
class Transition:
    """What one memory step did, as read from the model's reply."""

    thinking: str | None
    memory: str
    query: str | None
    hits: tuple[RecallHit, ...]
    n_update: int
    n_recall: int
    update_closed: bool


NO_COMPAT = AgentCompat()


def transition(
    state: AgentState,
    reply: str,
    *,
    method: Method,
    question: str,
    retriever: Retriever | None,
    top_k: int = 1,
    fallback: str = "keep",
    compat: AgentCompat = NO_COMPAT,
) -> tuple[AgentState, Transition]:
    """(state, model reply) -> next state. The one state-transition function.

    The new memory is the reply's <update> (or the fallback); the query its first
    <recall> (rule-callback: the question). The query is searched over the memories of
    *earlier* steps: the history as it was before this step's memory is appended
    (`compat.recall_current`: after, so the new memory is a candidate too). The retriever
    is an append-only index of the history; `sync` brings it to the candidates, so the
    result depends only on the state, never on what the retriever saw before. `compat`
    switches the other official-code behaviours (`rememr1.compat`).
    """
    parsed = parse_reply(reply)
    if compat.whole_reply_memory:
        memory = official_memory(reply)
    else:
        memory = memory_from_reply(parsed, reply, state.memory, fallback)
    query: str | None = None
    if method.recall:
        if method.query_from_question:
            query = question
        elif compat.official_recall:
            query = official_recall_query(reply)
        else:
            query = parsed.recall
    history, steps = state.history, state.history_steps
    if not (compat.memory_set and memory in history):
        history, steps = history + (memory,), steps + (state.step,)
    candidates = len(history) if compat.recall_current else len(state.history)
    hits: tuple[RecallHit, ...] = ()
    if query is not None and retriever is not None and candidates:
        retriever.sync(history[:candidates])
        hits = tuple(
            replace(h, step=steps[h.step])  # index in the history -> the step that wrote it
            for h in retriever.search(query, k=top_k, limit=candidates)
        )
    nxt = AgentState(
        step=state.step + 1,
        memory=memory,
        recalled=hits,
        history=history,
        history_steps=steps,
    )
    return nxt, Transition(
        thinking=parsed.thinking,
        memory=memory,
        query=query,
        hits=hits,
        n_update=parsed.n_update,
        n_recall=parsed.n_recall,
        update_closed=parsed.update_closed,
    )


def recalled_text(hits: Sequence[RecallHit]) -> str:
    """How recalled memories are shown: one hit as is; several separated, oldest first."""
    if len(hits) <= 1:
        return hits[0].text if hits else ""
    ordered = sorted(hits, key=lambda h: h.step)
    return "\n\n".join(f"[memory from section {h.step + 1}]\n{h.text}" for h in ordered)


# ------------------------------------------------------------------------------ options


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """Everything that shapes an episode, apart from the model and the sampling."""

    method: str = "rememr1"
    chunk_size: int | None = None  # None: DEFAULT_CHUNK_SIZE, shrunk to fit the window
    max_context_tokens: int | None = None  # cap on document tokens (centre truncation)
    retriever: str = "tfidf"
    top_k: int = 1
    fallback: str = "keep"  # what memory a reply without <update> leaves (protocol.FALLBACKS)
    templates: str | None = None  # directory with replacement template files
    rag_chunk_size: int = 512  # rag: size of the retrieved chunks
    rag_top_k: int = 8
    answer_format: str = "boxed"  # how the final reply states the answer (protocol.ANSWER_FORMATS)
    compat: AgentCompat = NO_COMPAT  # official-code behaviours (rememr1.compat)


def _request_seed(seed: int | None, sample: int, step: int) -> int | None:
    """A per-request seed that depends on (seed, sample, step) only, so results do not
    depend on how requests were batched."""
    if seed is None:
        return None
    h = hashlib.blake2b(f"{seed}/{sample}/{step}".encode(), digest_size=4).digest()
    return int.from_bytes(h, "little") & 0x7FFFFFFF


# ----------------------------------------------------------------------------- episodes


class Episode:
    """One (document, question) pair being answered: yields requests, consumes replies."""

    def __init__(
        self,
        agent: Agent,
        document: str | Iterable[str],
        question: str,
        *,
        index: int = 0,
        sample_id: str | None = None,
        tag: object = None,
    ) -> None:
        """`index` seeds the per-step sampling; `tag` is any object the caller wants to
        find on the episode again (evaluation keeps its sample there)."""
        if not question or not question.strip():
            raise InputError("the question is empty")
        self.agent = agent
        self.question = question.strip()
        self.index = index
        self.sample_id = sample_id
        self.tag = tag
        self.method = agent.method
        self.state = AgentState()
        self.records: list[StepRecord] = []
        self.answer: str | None = None
        self.error: str | None = None
        self.done = False
        self.started = time.perf_counter()
        self.finished_at: float | None = None
        self.doc = TokenizedDocument(
            document, agent.backend.tokenizer, max_tokens=agent.config.max_context_tokens
        )
        self.retriever = agent.make_retriever() if self.method.recall else None
        if self.method.single_prompt is None:
            self.spans = self.doc.spans(agent.chunk_size)
        else:
            self.spans = []
        self._pending: tuple[ChatRequest, str, Chunk | None] | None = None

    @property
    def n_steps(self) -> int:
        """Model calls this episode makes in all: memory steps plus the final step."""
        return len(self.spans) + 1

    def _chunk(self, i: int) -> Chunk:
        s, e = self.spans[i]
        return Chunk(i, s, e, self.doc.decode(s, e))

    def next_request(self) -> ChatRequest | None:
        if self.done:
            return None
        t = self.state.step
        tpl = self.agent.templates
        chunk: Chunk | None = None
        if self.method.single_prompt is not None:
            kind = FINAL_STEP
            prompt = render_prompt(tpl.final, problem=self.question, section=self._context())
        else:
            shown = dict(  # memory None before the first step: the placeholder
                problem=self.question,
                memory=self.state.memory if t > 0 else None,
                recalled=recalled_text(self.state.recalled),
                verbatim_memory=self.agent.config.compat.verbatim_memory,
            )
            if t < len(self.spans):
                kind = MEMORY_STEP
                chunk = self._chunk(t)
                prompt = render_prompt(tpl.step, section=chunk.text, **shown)
            else:
                kind = FINAL_STEP
                prompt = render_prompt(tpl.final, **shown)
        req = ChatRequest(
            messages=[{"role": "user", "content": prompt}],
            seed=_request_seed(self.agent.sampling.seed, self.index, t),
        )
        self._pending = (req, kind, chunk)
        return req

    def _context(self) -> str:
        """The document for single-prompt methods, fitted to the model's window."""
        budget = self.agent.single_prompt_budget()
        if self.method.single_prompt == "full":
            n = len(self.doc)
            if n <= budget:
                return self.doc.text()
            head = budget // 2  # middle truncation: keep both ends
            return self.doc.decode(0, head) + "\n...\n" + self.doc.decode(n - (budget - head), n)
        # rag: top-k chunks by the question, shown in document order
        cfg = self.agent.config
        spans = self.doc.spans(cfg.rag_chunk_size)
        k = max(1, min(cfg.rag_top_k, budget // cfg.rag_chunk_size))
        retriever = make_retriever(cfg.retriever)
        texts = [self.doc.decode(s, e) for s, e in spans]
        for text in texts:
            retriever.add(text)
        hits = retriever.search(self.question, k=k) or [RecallHit(texts[0], 0, 0.0)]
        return "\n\n".join(texts[h.step] for h in sorted(hits, key=lambda h: h.step))

    def consume(self, gen: Generation) -> StepRecord:
        assert self._pending is not None, "consume() without next_request()"
        req, kind, chunk = self._pending
        self._pending = None
        before = self.state
        rec = StepRecord(
            step=before.step,
            kind=kind,
            messages=list(req.messages),
            reply=gen.text,
            finish_reason=gen.finish_reason,
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens,
            seconds=gen.seconds,
            chunk=chunk.text if chunk else "",
            chunk_span=(chunk.start, chunk.end) if chunk else None,
            memory_before=before.memory,
            recalled_in=list(before.recalled),
            error=gen.error,
            prompt_ids=gen.prompt_ids,
            completion_ids=gen.completion_ids,
        )
        if kind == MEMORY_STEP:
            cfg = self.agent.config
            self.state, tr = transition(
                before,
                gen.text,
                method=self.method,
                question=self.question,
                retriever=self.retriever,
                top_k=cfg.top_k,
                fallback=cfg.fallback,
                compat=cfg.compat,
            )
            rec.memory_after = tr.memory
            rec.thinking = tr.thinking
            rec.recall_query = tr.query
            rec.recall_hits = list(tr.hits)
            rec.n_update, rec.n_recall, rec.update_closed = tr.n_update, tr.n_recall, tr.update_closed
        else:
            parsed = parse_reply(gen.text)
            rec.memory_after = before.memory
            rec.thinking = parsed.thinking
            rec.answer = answer_of(gen.text, self.agent.config.answer_format)
            rec.n_boxed = parsed.n_boxed
            rec.n_recall = parsed.n_recall
            self.answer = rec.answer
            self.done = True
            self.finished_at = time.perf_counter()
        if gen.error and self.error is None:
            self.error = gen.error
        self.records.append(rec)
        return rec

    def result(self) -> AnswerResult:
        usage = Usage()
        for r in self.records:
            usage.add(r)
        usage.seconds = (self.finished_at or time.perf_counter()) - self.started
        return AnswerResult(
            question=self.question,
            answer=self.answer,
            steps=self.records,
            usage=usage,
            method=self.method.name,
            document_tokens=self.doc.original_tokens,
            n_chunks=len(self.spans),
            truncated_document=self.doc.truncated,
            error=self.error,
            sample_id=self.sample_id,
        )


StepCallback = Callable[[Episode, StepRecord], None]


# -------------------------------------------------------------------------------- agent


class Agent:
    """A model plus a method: answers questions over long documents.

    `backend` is any `Backend` (default: the built-in model on llama.cpp). Options are
    keyword-only; `sampling` is a `SamplingParams` value (defaults: the paper's evaluation
    settings, temperature 0.7, top-p 0.95, and the method's token budget).
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        method: str = "rememr1",
        sampling: SamplingParams | None = None,
        chunk_size: int | None = None,
        max_new_tokens: int | None = None,
        retriever: str = "tfidf",
        top_k: int = 1,
        max_context_tokens: int | None = None,
        fallback: str = "keep",
        templates: str | None = None,
        answer_format: str = "boxed",
        compat: AgentCompat = NO_COMPAT,
        config: AgentConfig | None = None,
    ) -> None:
        if config is None:
            config = AgentConfig(
                method=method,
                chunk_size=chunk_size,
                max_context_tokens=max_context_tokens,
                retriever=retriever,
                top_k=top_k,
                fallback=fallback,
                templates=templates,
                answer_format=answer_format,
                compat=compat,
            )
        self.config = config
        self.method = get_method(config.method)
        if config.top_k < 1:
            raise InputError(f"top-k must be at least 1, got {config.top_k}")
        if config.answer_format not in ANSWER_FORMATS:
            raise InputError(f"unknown answer format {config.answer_format!r}; choose one of: "
                             + ", ".join(ANSWER_FORMATS))
        if config.compat.tfidf_model_tokens and config.retriever != "tfidf":
            raise InputError(f"model-token TF-IDF (--tfidf-model-tokens, part of --compat official) "
                             f"needs --retriever tfidf, not {config.retriever!r}")
        self.templates: TemplateSet = load_templates(config.method, config.templates)
        if backend is None:
            from .backends import load_backend

            backend = load_backend("llamacpp")
        self.backend = backend
        sampling = sampling or SamplingParams(max_new_tokens=self.method.default_max_new_tokens)
        if max_new_tokens is not None:
            sampling = replace(sampling, max_new_tokens=max_new_tokens)
        if sampling.max_new_tokens < 1:
            raise InputError("max new tokens must be at least 1")
        self.sampling = sampling
        self.chunk_size = self._fit_chunk_size()
        if self.method.recall or self.method.single_prompt == "rag":
            self.make_retriever()  # fail early on an unknown name or option

    def make_retriever(self) -> Retriever:
        """A fresh retriever for one episode's history, as the config and its compatibility
        switches ask (the policy tokenizer's pieces for TF-IDF, a top-1 at zero)."""
        cfg = self.config
        options = {"tokenizer": self.backend.tokenizer} if cfg.compat.tfidf_model_tokens else {}
        return make_retriever(cfg.retriever, top_at_zero=cfg.compat.recall_at_zero, **options)

    # Prompt room taken by instructions and the question (a generous estimate).
    PROMPT_OVERHEAD = 512

    def _fit_chunk_size(self) -> int:
        """The chunk size: as asked, or the default shrunk so that instructions, memory,
        recalled memory (each at most one reply long), the chunk and the reply fit."""
        window = self.backend.context_window
        reply = self.sampling.max_new_tokens
        memories = (2 if self.method.recall else 1) * reply
        fit = window - reply - memories - self.PROMPT_OVERHEAD
        if self.config.chunk_size is not None:
            if self.config.chunk_size <= 0:
                raise InputError(f"chunk size must be positive, got {self.config.chunk_size}")
            return self.config.chunk_size
        if fit < 256:
            raise InputError(
                f"the model's window ({window} tokens) leaves no room for a chunk with "
                f"max new tokens {reply}; lower --max-new-tokens or set --chunk-size"
            )
        return min(DEFAULT_CHUNK_SIZE, fit)

    def single_prompt_budget(self) -> int:
        return max(
            256, self.backend.context_window - self.sampling.max_new_tokens - self.PROMPT_OVERHEAD
        )

    def episode(
        self,
        document: str | Iterable[str],
        question: str,
        *,
        index: int = 0,
        sample_id: str | None = None,
        tag: object = None,
    ) -> Episode:
        return Episode(self, document, question, index=index, sample_id=sample_id, tag=tag)

    def run_iter(
        self,
        episodes: Iterable[Episode],
        *,
        on_step: StepCallback | None = None,
        max_batch: int | None = None,
    ) -> Iterator[Episode]:
        """Drive episodes to completion in lockstep rounds (see module docstring),
        yielding each as soon as it finishes.

        `episodes` is consumed lazily: at most `max_batch` are in flight (all, if None),
        so a generator of episodes never tokenises more documents than it needs to.
        """
        source = iter(episodes)
        active: list[Episode] = []
        exhausted = False
        while True:
            while not exhausted and (max_batch is None or len(active) < max_batch):
                ep = next(source, None)
                if ep is None:
                    exhausted = True
                else:
                    active.append(ep)
            if not active:
                return
            requests = [e.next_request() for e in active]
            gens = self.backend.generate(requests, self.sampling)
            if len(gens) != len(requests):
                raise RuntimeError(
                    f"backend {self.backend.name} returned {len(gens)} replies for "
                    f"{len(requests)} requests"
                )
            still = []
            for ep, gen in zip(active, gens):
                rec = ep.consume(gen)
                if on_step is not None:
                    on_step(ep, rec)
                if ep.done:
                    yield ep
                else:
                    still.append(ep)
            active = still

    def run(
        self,
        episodes: Sequence[Episode],
        *,
        on_step: StepCallback | None = None,
        max_batch: int | None = None,
    ) -> list[AnswerResult]:
        """Run episodes to completion; results in the order given."""
        for _ in self.run_iter(episodes, on_step=on_step, max_batch=max_batch):
            pass
        return [e.result() for e in episodes]

    def answer(
        self,
        document: str | Iterable[str],
        question: str,
        *,
        on_step: StepCallback | None = None,
    ) -> AnswerResult:
        """Answer one question over one document."""
        return self.run([self.episode(document, question)], on_step=on_step)[0]

    def answer_many(
        self,
        items: Iterable[tuple[str | Iterable[str], str]],
        *,
        on_step: StepCallback | None = None,
        max_batch: int | None = None,
    ) -> list[AnswerResult]:
        """Answer many (document, question) pairs, their steps batched together."""
        eps = [self.episode(d, q, index=i) for i, (d, q) in enumerate(items)]
        return self.run(eps, on_step=on_step, max_batch=max_batch)


__all__ = [
    "Agent",
    "AgentConfig",
    "AgentState",
    "Episode",
    "METHODS",
    "Method",
    "Transition",
    "transition",
]
