"""One episode: a (document, question) pair being answered, step by step.

    state, what = transition(state, reply, method=METHODS["rememr1"], question=q, retriever=r)
    episode = agent.episode(document, question)   # make_episode(agent.spec, document, question)
    request = episode.next_request()          # the prompt of the next step
    record = episode.consume(generation)      # the reply: state moves on, a StepRecord is made

`transition` turns (state, reply) into the next state; it is the only place that does so,
and inference, evaluation, RL rollouts and the verl agent loop all go through it (via
`Episode.consume`). An Episode never calls a model: the engine (`agent.engine`) does, for
many episodes at once, each at its own pace. Each episode reads the agent's frozen
`EpisodeSpec` (`agent.spec`), never the agent itself.

There is one episode class per kind of method: `MemoryEpisode` (a memory step per chunk,
then the final step: rememr1, memagent, rule-callback), `FullContextEpisode` and
`RagEpisode` (one prompt over the whole document or its retrieved chunks). `make_episode`
picks the class for the spec's method. Each reply is parsed once (`protocol.parse_reply`),
in `Episode.consume`; the state transition and the answer rule read that parse.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from ..backends.base import ChatRequest, Generation
from ..chunking import Chunk, TokenizedDocument
from ..compat import AgentCompat
from ..errors import InputError
from ..memory import Retriever, make_retriever
from ..protocol import (
    ParsedReply,
    answer_of,
    memory_from_reply,
    official_memory,
    official_recall_query,
    parse_reply,
    render_prompt,
)
from ..records import FINAL_STEP, MEMORY_STEP, AnswerResult, RecallHit, StepKind, StepRecord, Usage
from .methods import Method
from .spec import EpisodeSpec


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
    """What one memory step did: the reply's parse, and the memory, query and recalled
    memories `transition` made of it."""

    parsed: ParsedReply
    memory: str
    query: str | None
    hits: tuple[RecallHit, ...]

    @property
    def thinking(self) -> str | None:
        return self.parsed.thinking

    @property
    def n_update(self) -> int:
        return self.parsed.n_update

    @property
    def n_recall(self) -> int:
        return self.parsed.n_recall

    @property
    def update_closed(self) -> bool:
        return self.parsed.update_closed


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
    parsed: ParsedReply | None = None,
) -> tuple[AgentState, Transition]:
    """(state, model reply) -> next state. The one state-transition function.

    The new memory is the reply's <update> (or the fallback); the query its first
    <recall> (rule-callback: the question). The query is searched over the memories of
    *earlier* steps: the history as it was before this step's memory is appended
    (`compat.recall_current`: after, so the new memory is a candidate too). The retriever
    is an append-only index of the history; `sync` brings it to the candidates, so the
    result depends only on the state, never on what the retriever saw before. `compat`
    switches the other official-code behaviours (`rememr1.compat`). `parsed` is
    `parse_reply(reply)` when the caller has it already (`Episode.consume` parses once).
    """
    if parsed is None:
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
    return nxt, Transition(parsed=parsed, memory=memory, query=query, hits=hits)


def recalled_text(hits: Sequence[RecallHit]) -> str:
    """How recalled memories are shown: one hit as is; several separated, oldest first."""
    if len(hits) <= 1:
        return hits[0].text if hits else ""
    ordered = sorted(hits, key=lambda h: h.step)
    return "\n\n".join(f"[memory from section {h.step + 1}]\n{h.text}" for h in ordered)


def request_seed(seed: int | None, sample: int, step: int) -> int | None:
    """A per-request seed that depends on (seed, sample, step) only, so results do not
    depend on how requests were batched."""
    if seed is None:
        return None
    h = hashlib.blake2b(f"{seed}/{sample}/{step}".encode(), digest_size=4).digest()
    return int.from_bytes(h, "little") & 0x7FFFFFFF



class Episode:
    """One (document, question) pair being answered: yields requests, consumes replies.

    The base of the three episode kinds (module docstring): it keeps the state, the step
    records, the answer and the timing; a subclass says what the next prompt is
    (`_prompt`) and what a memory step does to the state.
    """

    def __init__(
        self,
        spec: EpisodeSpec,
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
        self.spec = spec
        self.question = question.strip()
        self.index = index
        self.sample_id = sample_id
        self.tag = tag
        self.method = spec.method
        self.state = AgentState()
        self.records: list[StepRecord] = []
        self.answer: str | None = None
        self.error: str | None = None
        self.done = False
        self.started = time.perf_counter()
        self.finished_at: float | None = None
        self.doc = TokenizedDocument(document, spec.tokenizer, max_tokens=spec.config.max_context_tokens)
        self.spans: list[tuple[int, int]] = []  # memory steps' chunks (none: one prompt)
        self._pending: tuple[ChatRequest, StepKind, Chunk | None] | None = None

    @property
    def n_steps(self) -> int:
        """Model calls this episode makes in all: memory steps plus the final step."""
        return len(self.spans) + 1

    def _prompt(self) -> tuple[StepKind, str, Chunk | None]:
        """The next step: its kind, its prompt and the chunk it shows (if any)."""
        raise NotImplementedError

    def next_request(self) -> ChatRequest | None:
        if self.done:
            return None
        kind, prompt, chunk = self._prompt()
        req = ChatRequest(
            messages=[{"role": "user", "content": prompt}],
            seed=request_seed(self.spec.seed, self.index, self.state.step),
        )
        self._pending = (req, kind, chunk)
        return req

    @property
    def pending_chunk(self) -> Chunk | None:
        """The chunk the pending request shows (None for a final or single-prompt step, or
        when no request is pending): what an oracle policy reads to write its reply."""
        return self._pending[2] if self._pending is not None else None

    def _memory_step(self, before: AgentState, reply: str, parsed: ParsedReply) -> dict:
        """A memory step's outcome (the state moves on); only memory episodes have them."""
        raise NotImplementedError

    def consume(self, gen: Generation) -> StepRecord:
        """The model's reply to the pending request: it is parsed once, the state moves on
        (memory steps go through `transition`) and the step's record is built, once."""
        assert self._pending is not None, "consume() without next_request()"
        req, kind, chunk = self._pending
        self._pending = None
        before = self.state
        parsed = parse_reply(gen.text)
        if kind == MEMORY_STEP:
            outcome = self._memory_step(before, gen.text, parsed)
        else:
            self.answer = answer_of(gen.text, self.spec.config.answer_format, parsed=parsed)
            outcome = dict(memory_after=before.memory, thinking=parsed.thinking, answer=self.answer,
                           n_boxed=parsed.n_boxed, n_recall=parsed.n_recall)
            self.done = True
            self.finished_at = time.perf_counter()
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
            **outcome,
        )
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


class MemoryEpisode(Episode):
    """A memory step per chunk, then the final step from memory (rememr1, memagent,
    rule-callback)."""

    def __init__(self, spec: EpisodeSpec, document: str | Iterable[str], question: str, **kw) -> None:
        super().__init__(spec, document, question, **kw)
        self.retriever = spec.new_retriever() if self.method.recall else None
        self.spans = self.doc.spans(spec.chunk_size)

    def _chunk(self, i: int) -> Chunk:
        s, e = self.spans[i]
        return Chunk(i, s, e, self.doc.decode(s, e))

    def _prompt(self) -> tuple[StepKind, str, Chunk | None]:
        t = self.state.step
        tpl = self.spec.templates
        shown = dict(  # memory None before the first step: the placeholder
            problem=self.question,
            memory=self.state.memory if t > 0 else None,
            recalled=recalled_text(self.state.recalled),
            verbatim_memory=self.spec.config.compat.verbatim_memory,
        )
        if t < len(self.spans):
            chunk = self._chunk(t)
            return MEMORY_STEP, render_prompt(tpl.step, section=chunk.text, **shown), chunk
        return FINAL_STEP, render_prompt(tpl.final, **shown), None

    def _memory_step(self, before: AgentState, reply: str, parsed: ParsedReply) -> dict:
        cfg = self.spec.config
        self.state, tr = transition(
            before, reply, method=self.method, question=self.question, retriever=self.retriever,
            top_k=cfg.top_k, fallback=cfg.fallback, compat=cfg.compat, parsed=parsed,
        )
        return dict(memory_after=tr.memory, thinking=tr.thinking, recall_query=tr.query,
                    recall_hits=list(tr.hits), n_update=tr.n_update, n_recall=tr.n_recall,
                    update_closed=tr.update_closed)


class _SinglePromptEpisode(Episode):
    """No memory steps: one final prompt over a context made from the document."""

    def _context(self) -> str:
        raise NotImplementedError

    def _prompt(self) -> tuple[StepKind, str, Chunk | None]:
        return FINAL_STEP, render_prompt(self.spec.templates.final, problem=self.question,
                                         section=self._context()), None


class FullContextEpisode(_SinglePromptEpisode):
    """full-context: the whole document in one prompt, its middle cut out when it is longer
    than the budget (both ends kept)."""

    def _context(self) -> str:
        budget, n = self.spec.context_budget, len(self.doc)
        if n <= budget:
            return self.doc.text()
        head = budget // 2
        return self.doc.decode(0, head) + "\n...\n" + self.doc.decode(n - (budget - head), n)


class RagEpisode(_SinglePromptEpisode):
    """rag: the document cut into small chunks, the top-k by the question shown in
    document order (as many as the budget holds, at least one)."""

    def _context(self) -> str:
        cfg = self.spec.config
        spans = self.doc.spans(cfg.rag_chunk_size)
        k = max(1, min(cfg.rag_top_k, self.spec.context_budget // cfg.rag_chunk_size))
        retriever = make_retriever(cfg.retriever)
        texts = [self.doc.decode(s, e) for s, e in spans]
        for text in texts:
            retriever.add(text)
        hits = retriever.search(self.question, k=k) or [RecallHit(texts[0], 0, 0.0)]
        return "\n\n".join(texts[h.step] for h in sorted(hits, key=lambda h: h.step))


# The episode class of each kind of method (`Method.single_prompt`).
EPISODE_CLASSES: dict[str | None, type[Episode]] = {
    None: MemoryEpisode,
    "full": FullContextEpisode,
    "rag": RagEpisode,
}


def make_episode(spec: EpisodeSpec, document: str | Iterable[str], question: str, *,
                 index: int = 0, sample_id: str | None = None, tag: object = None) -> Episode:
    """The episode of the spec's method over (document, question)."""
    cls = EPISODE_CLASSES[spec.method.single_prompt]
    return cls(spec, document, question, index=index, sample_id=sample_id, tag=tag)


__all__ = [
    "EPISODE_CLASSES",
    "AgentState",
    "Episode",
    "FullContextEpisode",
    "MemoryEpisode",
    "NO_COMPAT",
    "RagEpisode",
    "Transition",
    "make_episode",
    "recalled_text",
    "request_seed",
    "transition",
]
