"""The agent's options (apart from the model and the sampling), validated at construction.

    cfg = AgentConfig(method="memagent", chunk_size=5000, retriever="bm25")

Evaluation keeps one in its run record; RL training embeds one (`TrainConfig.agent`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..compat import AgentCompat
from ..errors import InputError
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

    method: str = "rememr1"
    chunk_size: int | None = None
    max_context_tokens: int | None = None
    retriever: str = "tfidf"
    top_k: int = 1
    fallback: str = "keep"
    templates: str | None = None
    rag_chunk_size: int = 512  # rag: size of the retrieved chunks
    rag_top_k: int = 8
    answer_format: str = "boxed"
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
