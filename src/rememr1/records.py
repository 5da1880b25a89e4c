"""The one record type per agent step, and the per-question result built from them.

Traces (`--trace`), evaluation diagnostics, rewards and RL training all read `StepRecord`;
nothing else describes what happened at a step. `well_formed` is the one rule for whether
a step's reply followed the protocol's format.
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
        """Every field of this step as JSON (token ids left out); traces on disk use the
        shorter step line of `eval.lines.step_line`, which also reads this shape."""
        d = asdict(self)
        d.pop("prompt_ids")
        d.pop("completion_ids")
        d["kind"] = StepKind(self.kind).value
        d["prompt"] = d.pop("messages")
        if self.chunk_span is not None:
            d["chunk_span"] = list(self.chunk_span)
        d["recalled_from_step"] = [h.step for h in self.recalled_in]
        return d


def well_formed(step: StepRecord, *, limit_recalls: bool = True) -> bool:
    r"""The one rule for a well-formed step, read from the counts the agent recorded when
    it parsed the reply. The format reward (`rl.rewards.format_reward`), the step lines of
    `eval` (their `well_formed` field), the trainer's format metrics and the learning
    bench all use it.

    Memory step: exactly one <update> block, closed, with a non-empty memory, and at most
    one <recall> block (`limit_recalls=False`: any number, the official reward's view).
    Final step: exactly one complete \boxed{} with a non-empty answer.
    """
    if step.kind == FINAL_STEP:
        return step.n_boxed == 1 and bool(step.answer and step.answer.strip())
    ok = step.n_update == 1 and step.update_closed and bool(step.memory_after.strip())
    return ok and (step.n_recall <= 1 or not limit_recalls)


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

    def summary_json(self) -> dict[str, Any]:
        """The last trace line (`eval.lines.trace_lines`): the answer and totals."""
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
