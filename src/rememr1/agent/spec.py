"""What every episode of one agent reads: built once by `Agent`, frozen, shared.

    spec = agent.spec
    spec.method.name, spec.chunk_size, spec.context_budget, spec.seed
    retriever = spec.new_retriever()      # a fresh history index for one episode

An `Episode` receives this spec, never the `Agent`: the spec holds the agent's options
(`config`) and what the agent derived from them and from the model once: the method's row
of the table, its prompt templates, the model's tokenizer, the chunk size fitted to the
window, the document budget of single-prompt methods, the retriever factory, and the
sampling seed per-request seeds are drawn from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..backends.base import Tokenizer
from ..memory import Retriever
from ..protocol import TemplateSet
from .config import AgentConfig
from .methods import Method


@dataclass(frozen=True, kw_only=True)
class EpisodeSpec:
    """Everything an episode reads apart from its document and question.

    config          -- the agent's options (top-k, fallback, answer format, switches, ...)
    method          -- the row of `methods.METHODS` that `config.method` names
    templates       -- the method's prompts (`protocol.load_templates`)
    tokenizer       -- the model's tokenizer, which cuts documents into tokens
    chunk_size      -- document tokens per memory step (`config.chunk_size`, or fitted)
    context_budget  -- document tokens that single-prompt methods show in their one prompt
    new_retriever   -- a fresh retriever over the memory history, one per episode
    seed            -- the sampling seed (`SamplingParams.seed`); None: unseeded requests
    """

    config: AgentConfig
    method: Method
    templates: TemplateSet
    tokenizer: Tokenizer
    chunk_size: int
    context_budget: int
    new_retriever: Callable[[], Retriever]
    seed: int | None = None


__all__ = ["EpisodeSpec"]
