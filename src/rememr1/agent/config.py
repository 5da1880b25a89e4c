"""The agent's options (apart from the model and the sampling), validated at construction.

    cfg = AgentConfig(method="memagent", chunk_size=5000, retriever="bm25")

Evaluation keeps one in its run record; RL training embeds one (`TrainConfig.agent`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..compat import AgentCompat
from ..errors import InputError
from ..options import option
from ..protocol import ANSWER_FORMATS, FALLBACKS
from .methods import get_method


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """Everything that shapes an episode, apart from the model and the sampling.

    chunk_size         -- document tokens per memory step (None: 5000, shrunk to fit the window)
    max_context_tokens -- cap on document tokens (keeps the first and last halves)
    retriever, top_k   -- how recall queries are answered (`memory.RETRIEVERS`)
    fallback           -- memory when a reply has no <update> (`protocol.FALLBACKS`)
    templates          -- directory with replacement prompt templates
    answer_format      -- how the final reply states the answer (`protocol.ANSWER_FORMATS`)
    compat             -- official-code behaviours (`rememr1.compat`)
    """

    # `eval` and `serve` take a list of methods instead (their own --method).
    method: str = option("rememr1", "rememr1 | memagent | rule-callback | full-context | rag", flag="--method")
    chunk_size: int | None = option(
        None, "tokens per chunk (default 5000, shrunk to fit the model's window)", flag="--chunk-size")
    max_context_tokens: int | None = option(
        None, "cap on document tokens (keeps the first and last halves)", flag="--max-context-tokens")
    retriever: str = option("tfidf", "tfidf | bm25 | overlap | dense", flag="--retriever")
    top_k: int = option(1, "memories recalled per query", flag="--top-k")
    fallback: str = option("keep", "memory when a reply has no <update>: keep | reply | empty", flag="--fallback")
    templates: str | None = option(None, "directory with replacement prompt templates", flag="--templates")
    rag_chunk_size: int = option(512, "rag: tokens per retrieved chunk", flag="--rag-chunk-size")
    rag_top_k: int = option(8, "rag: chunks retrieved per question", flag="--rag-top-k")
    answer_format: str = option(
        "boxed", "how the final reply states the answer: boxed (last \\boxed{}) | answer-is (text after "
        "'the answer is')", flag="--answer-format")
    compat: AgentCompat = field(default_factory=AgentCompat)

    def __post_init__(self) -> None:
        from ..memory import RETRIEVERS

        get_method(self.method)
        if self.retriever not in RETRIEVERS:
            raise InputError(f"unknown retriever {self.retriever!r}; choose one of: "
                             + ", ".join(sorted(RETRIEVERS)))
        if self.top_k < 1:
            raise InputError(f"top-k must be at least 1, got {self.top_k}")
        if self.chunk_size is not None and self.chunk_size <= 0:
            raise InputError(f"chunk size must be positive, got {self.chunk_size}")
        if self.max_context_tokens is not None and self.max_context_tokens < 1:
            raise InputError(f"the context cap must be at least 1 token, got {self.max_context_tokens}")
        if self.fallback not in FALLBACKS:
            raise InputError(f"unknown fallback {self.fallback!r}; choose one of: {', '.join(FALLBACKS)}")
        if self.answer_format not in ANSWER_FORMATS:
            raise InputError(f"unknown answer format {self.answer_format!r}; choose one of: "
                             + ", ".join(ANSWER_FORMATS))
        if self.compat.tfidf_model_tokens and self.retriever != "tfidf":
            raise InputError(f"model-token TF-IDF (--tfidf-model-tokens, part of --compat official) "
                             f"needs --retriever tfidf, not {self.retriever!r}")


__all__ = ["AgentConfig"]
