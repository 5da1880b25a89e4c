"""The one record type per agent step, and the per-question result built from them.

Traces (`--trace`), evaluation diagnostics, rewards and RL training all read `StepRecord`;
nothing else describes what happened at a step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class StepKind(str, Enum):
    """What a step did. A str enum: it compares and serialises as "memory" / "final"."""

    MEMORY = "memory"  # read a chunk, rewrite the memory, maybe ask for a recall
    FINAL = "final"  # answer from memory (or, for single-prompt methods, from context)

    def __str__(self) -> str:
        return self.value


MEMORY_STEP = StepKind.MEMORY
FINAL_STEP = StepKind.FINAL


@dataclass(frozen=True)
class RecallHit:
    """An earlier memory returned by the retriever."""

    text: str
    step: int  # index of the step that wrote this memory
    score: float


@dataclass(frozen=True)
class StepRecord:
    """Everything about one model call of one episode, built once when its reply is in
    (`agent.Episode.consume`); frozen.

    Memory steps are numbered 0..T-1 (one per chunk); the final step has index T.
    `memory_before` is the memory shown in the prompt, `memory_after` the memory the step
    produced (for the final step both are the last memory). `recalled_in` is what the
    prompt showed in <recalled_memory>; `recall_query`/`recall_hits` are this step's query
    and what it retrieved, which the *next* prompt shows.
    """

    step: int
    kind: StepKind
    messages: list[dict]  # the chat request sent to the model
    reply: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    chunk: str = ""  # the document text this step read (empty for the final step)
    chunk_span: tuple[int, int] | None = None  # [start, end) token offsets in the document
    memory_before: str = ""
    memory_after: str = ""
    thinking: str | None = None
    recalled_in: list[RecallHit] = field(default_factory=list)
    recall_query: str | None = None
    recall_hits: list[RecallHit] = field(default_factory=list)
    answer: str | None = None  # final step: content of the last \boxed{}
    # Format bookkeeping for rewards: counts of well-formed blocks in the reply.
    n_update: int = 0
    n_recall: int = 0
    n_boxed: int = 0
    update_closed: bool = True
    error: str | None = None
    # Token ids (in-process backends only); used by RL training, not written to traces.
    prompt_ids: tuple[int, ...] | None = field(default=None, repr=False)
    completion_ids: tuple[int, ...] | None = field(default=None, repr=False)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    def to_json(self) -> dict[str, Any]:
        """The trace line for this step (token ids left out)."""
        d = asdict(self)
        d.pop("prompt_ids")
        d.pop("completion_ids")
        d["kind"] = StepKind(self.kind).value
        d["prompt"] = d.pop("messages")
        if self.chunk_span is not None:
            d["chunk_span"] = list(self.chunk_span)
        d["recalled_from_step"] = [h.step for h in self.recalled_in]
        return d


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_seconds: float = 0.0  # time spent inside the backend
    seconds: float = 0.0  # wall time of the whole answer

    def add(self, rec: StepRecord) -> None:
        self.prompt_tokens += rec.prompt_tokens
        self.completion_tokens += rec.completion_tokens
        self.model_seconds += rec.seconds


@dataclass
class AnswerResult:
    """The outcome of answering one question over one document."""

    question: str
    answer: str | None  # None when no answer could be extracted
    steps: list[StepRecord]
    usage: Usage
    method: str
    document_tokens: int = 0
    n_chunks: int = 0
    truncated_document: bool = False  # the total-context cap cut the document
    error: str | None = None
    sample_id: str | None = None

    @property
    def response(self) -> str:
        """The final step's raw reply (what the original scorers call the response)."""
        return self.steps[-1].reply if self.steps else ""

    def trace_json(self) -> list[dict[str, Any]]:
        """The whole trace, as `ask --trace` writes it: one line per step, then the summary
        (`rememr1 view` reads it)."""
        return [r.to_json() for r in self.steps] + [self.summary_json()]

    def summary_json(self) -> dict[str, Any]:
        """The last trace line: the answer and totals."""
        return {
            "type": "result",
            "sample_id": self.sample_id,
            "question": self.question,
            "answer": self.answer,
            "method": self.method,
            "error": self.error,
            "document_tokens": self.document_tokens,
            "n_chunks": self.n_chunks,
            "truncated_document": self.truncated_document,
            "steps": len(self.steps),
            **asdict(self.usage),
        }
