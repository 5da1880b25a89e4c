"""The memory agent: a model plus a method, answering questions over long documents.

    from rememr1 import Agent, AgentConfig
    agent = Agent()                                   # built-in model on llama.cpp
    agent = Agent(backend, AgentConfig(method="memagent", chunk_size=5000), SamplingParams(seed=0))
    result = agent.answer(open("report.txt").read(), "Who built the ship?")
    result.answer, result.steps, result.usage
    results = agent.answer_many([(doc1, q1), (doc2, q2)], concurrency=8)
    async for ep in agent.arun_iter(episodes, concurrency=64): ...   # from async code

Per sample the agent reads chunk after chunk. At each memory step the model sees the
question, the recalled memory, its current memory and the chunk, and replies with an
<update> (its new memory) and maybe a <recall> query; `agent.episode.transition` turns
(state, reply) into the next state. After the last chunk a final prompt asks for
`\\boxed{}`. Methods are configurations of this one loop (`agent.methods`). Episodes run
on the engine (`agent.engine`): each at its own pace, many at once; each reads the frozen
`EpisodeSpec` (`agent.spec`) the agent builds once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from functools import partial

from ..backends.base import Backend, SamplingParams
from ..chunking import DEFAULT_CHUNK_SIZE
from ..errors import InputError
from ..memory import Retriever, make_retriever
from ..protocol import TemplateSet, load_templates
from ..records import AnswerResult
from .config import AgentConfig
from .engine import StepCallback, drive, run_sync
from .episode import Episode, make_episode
from .methods import get_method
from .spec import EpisodeSpec


class Agent:
    """A model plus a method: answers questions over long documents.

    `Agent(backend, config, sampling)`: `backend` is any `Backend` (default: the built-in
    model on llama.cpp), `config` an `AgentConfig` (default: rememr1 with its defaults),
    `sampling` a `SamplingParams` (default: the paper's evaluation settings, temperature
    0.7, top-p 0.95, and the method's token budget). Every option lives in one of those
    two values; the agent builds the frozen `EpisodeSpec` its episodes read once, here.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        config: AgentConfig | None = None,
        sampling: SamplingParams | None = None,
    ) -> None:
        config = AgentConfig() if config is None else config
        if not isinstance(config, AgentConfig):
            raise TypeError(f"config must be an AgentConfig, not {type(config).__name__}")
        if sampling is not None and not isinstance(sampling, SamplingParams):
            raise TypeError(f"sampling must be a SamplingParams, not {type(sampling).__name__}")
        self.config = config
        self.method = get_method(config.method)
        self.templates: TemplateSet = load_templates(config.method, config.templates)
        if backend is None:
            from ..backends import load_backend

            backend = load_backend("llamacpp")
        self.backend = backend
        self.sampling = sampling or self.method.sampling()
        self.chunk_size = self._fit_chunk_size()
        self.spec = EpisodeSpec(
            config=config,
            method=self.method,
            templates=self.templates,
            tokenizer=backend.tokenizer,
            chunk_size=self.chunk_size,
            context_budget=max(256, backend.context_window - self.sampling.max_new_tokens
                               - self.PROMPT_OVERHEAD),
            new_retriever=self._retriever_factory(),
            seed=self.sampling.seed,
        )
        if self.method.recall or self.method.single_prompt == "rag":
            self.make_retriever()  # fail early on an unknown name or option

    def _retriever_factory(self) -> Callable[[], Retriever]:
        """Fresh retrievers for episodes' histories, as the config and its compatibility
        switches ask (the policy tokenizer's pieces for TF-IDF, a top-1 at zero)."""
        cfg = self.config
        options = {"tokenizer": self.backend.tokenizer} if cfg.compat.tfidf_model_tokens else {}
        return partial(make_retriever, cfg.retriever, top_at_zero=cfg.compat.recall_at_zero, **options)

    def make_retriever(self) -> Retriever:
        """A fresh retriever for one episode's history (`spec.new_retriever`)."""
        return self.spec.new_retriever()

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
            return self.config.chunk_size
        if fit < 256:
            raise InputError(
                f"the model's window ({window} tokens) leaves no room for a chunk with "
                f"max new tokens {reply}; lower --max-new-tokens or set --chunk-size"
            )
        return min(DEFAULT_CHUNK_SIZE, fit)

    def episode(
        self,
        document: str | Iterable[str],
        question: str,
        *,
        index: int = 0,
        sample_id: str | None = None,
        tag: object = None,
    ) -> Episode:
        """A new episode of this agent's method over (document, question) (`make_episode`)."""
        return make_episode(self.spec, document, question, index=index, sample_id=sample_id, tag=tag)

    # -- running episodes --------------------------------------------------------------

    def arun_iter(
        self,
        episodes: Iterable[Episode],
        *,
        on_step: StepCallback | None = None,
        concurrency: int | None = None,
    ) -> AsyncIterator[Episode]:
        """Drive episodes to completion on the engine (`agent.engine.drive`): each at its
        own pace, at most `concurrency` open (None: all), each yielded as it finishes.
        `episodes` is consumed lazily, so a generator never builds more than it needs."""
        return drive(episodes, backend=self.backend, sampling=self.sampling,
                     concurrency=concurrency, on_step=on_step)

    def run_iter(
        self,
        episodes: Iterable[Episode],
        *,
        on_step: StepCallback | None = None,
        concurrency: int | None = None,
    ) -> Iterator[Episode]:
        """`arun_iter` for synchronous code: finished episodes, as they finish."""
        return run_sync(lambda: self.arun_iter(episodes, on_step=on_step, concurrency=concurrency))

    def run(
        self,
        episodes: Sequence[Episode],
        *,
        on_step: StepCallback | None = None,
        concurrency: int | None = None,
    ) -> list[AnswerResult]:
        """Run episodes to completion; results in the order given."""
        for _ in self.run_iter(episodes, on_step=on_step, concurrency=concurrency):
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

    async def aanswer(
        self,
        document: str | Iterable[str],
        question: str,
        *,
        on_step: StepCallback | None = None,
    ) -> AnswerResult:
        """`answer`, awaited (for code that already runs an event loop)."""
        episode = self.episode(document, question)
        async for _ in self.arun_iter([episode], on_step=on_step):
            pass
        return episode.result()

    def answer_many(
        self,
        items: Iterable[tuple[str | Iterable[str], str]],
        *,
        on_step: StepCallback | None = None,
        concurrency: int | None = None,
    ) -> list[AnswerResult]:
        """Answer many (document, question) pairs, all in flight together (or at most
        `concurrency`); results in the order given."""
        eps = [self.episode(d, q, index=i) for i, (d, q) in enumerate(items)]
        return self.run(eps, on_step=on_step, concurrency=concurrency)


__all__ = ["Agent"]
