"""The method table: every method is a configuration of the one agent loop.

    rememr1        memory per chunk; the model may write <recall>query</recall>
    memagent       memory per chunk, overwritten; no recall
    rule-callback  like rememr1, but the question itself is the query at every step
    full-context   no memory steps: the whole document (middle-truncated) in one prompt
    rag            no memory steps: the top-k chunks retrieved by the question in one prompt

Templates (`protocol._DEFAULT_FILES`), the CLI's choices and which methods RL can train
all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backends.base import SamplingParams
from ..errors import InputError


@dataclass(frozen=True, kw_only=True)
class Method:
    name: str
    recall: bool = False  # show <recalled_memory> and run retrieval after each step
    query_from_question: bool = False  # rule-callback: the question is the query
    single_prompt: str | None = None  # "full" or "rag": no memory steps
    default_max_new_tokens: int = 1024

    def sampling(self, max_new_tokens: int | None = None, **values) -> SamplingParams:
        """Sampling settings with this method's token budget per step unless
        `max_new_tokens` is given; `values` set the other `SamplingParams` fields. The one
        place the per-method default is applied (ask, eval, serve, rollouts, validation)."""
        return SamplingParams(max_new_tokens=max_new_tokens or self.default_max_new_tokens, **values)

    @property
    def trainable(self) -> bool:
        """RL trains methods whose every step is a model decision over memory."""
        return self.single_prompt is None


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


__all__ = ["METHODS", "Method", "get_method"]
