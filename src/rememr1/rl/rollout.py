"""RL rollouts: G sampled episodes per question through the agent's own loop.

    agent = policy_agent(policy, tokenizer, cfg.rollout, cfg.agent, seed=cfg.seed)
    groups = collect_rollouts(agent, samples, group_size=4, step=7)
    for group in groups:                 # one group per question, G rollouts each
        for r in group:
            r.steps                      # StepRecords: each is one training sequence
            r.steps[0].prompt_ids, r.steps[0].completion_ids

Nothing here re-implements the agent: episodes are `Agent.episode(...)` objects driven by
the engine (`Agent.run_iter`), so a rollout sees exactly the prompts, parsing, state
transition and retrieval that `ask` and `eval` use. All G x B episodes of a step are in
flight together, each at its own pace; the hf backend batches whatever requests wait when
the model is free (at most `generation_batch_size` per `generate` call), so episodes at
different steps share a forward pass.

Seeding: the sampling seed of every request is derived from (run seed, episode index,
step within the episode), and the episode index from (training step, question id, g), so a
rollout can be replayed exactly by evaluation code given the same index and sampling
(tests/rl/test_rollout.py does that) and does not depend on batch composition.

Steps whose completion is truncated (finish "length") stay as they are: the memory the
agent kept is what the truncated reply gave. Steps with no completion tokens (the prompt
left no room, or the backend failed) stay in the record for rewards but carry nothing
to train on (`trainable_steps`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..agent import METHODS, Agent, AgentConfig, Episode, StepCallback, get_method
from ..backends.base import SamplingParams
from ..data.records import Sample, agent_document
from ..errors import InputError, require, require_choice
from ..options import option
from ..records import AnswerResult, StepRecord

log = logging.getLogger(__name__)


TRAINABLE_METHODS = tuple(name for name, m in METHODS.items() if m.trainable)
ENGINES = ("hf", "llamacpp")


@dataclass(kw_only=True)
class RolloutConfig:
    """How episodes are sampled: G rollouts for each of `batch_size` questions per step,
    all in flight together; `generation_batch_size` caps one `generate` call (hf engine).
    What an episode does (method, chunking, retrieval, ...) is the run's `AgentConfig`.

    sampling -- the `SamplingParams` every rollout request uses: max_new_tokens per agent
              step (default: the method's, as in `ask`; a loaded config takes the run's
              method), temperature and top_p (default 1.0, the paper's rollouts), stop;
              seed None = the run's seed.

    engine -- what samples: "hf" (the torch policy itself) or "llamacpp" (LoRA runs: the
              adapter exported to GGUF each step, `rl.gguf_rollouts`; rollouts about 2x
              faster on a CPU); `engine_model` the base GGUF (empty: the built-in model's),
              `engine_parallel` sequences decoded together in one llama.cpp context
              (continuous batching, shared prompt prefixes evaluated once:
              `backends.llamacpp_parallel`); 1 = a pool of `engine_concurrency`
              instances, one sequence each."""

    group_size: int = option(16, "Rollouts per question (G).", flag="--group-size", short="-G")
    batch_size: int = option(128, "Questions per step.", flag="--batch-size", short="-B")
    sampling: SamplingParams = field(
        default_factory=lambda: get_method(AgentConfig().method).sampling(temperature=1.0, top_p=1.0))
    generation_batch_size: int = 64
    engine: str = option(
        "hf", "hf | llamacpp: what samples the rollouts. llamacpp (LoRA runs) exports the adapter to GGUF "
        "every step and samples on llama.cpp, several sequences at once, much faster on a CPU; base GGUF: "
        "--set rollout.engine_model=PATH (default: the built-in model's).", flag="--rollout-engine")
    engine_model: str | None = None
    engine_concurrency: int = 2
    engine_parallel: int = 32

    def __post_init__(self) -> None:
        require_choice(self.engine, ENGINES, "engine")
        for key in ("group_size", "batch_size", "generation_batch_size", "engine_concurrency",
                    "engine_parallel"):
            require(getattr(self, key) >= 1, key, f"must be at least 1, got {getattr(self, key)}")
        require(self.group_size >= 2, "group_size",
                "must be at least 2: advantages are relative to the other rollouts of a question")
        require(self.sampling.temperature > 0, "sampling.temperature",
                "must be > 0 (training needs sampled rollouts)")


def rollout_index(step: int, question_id: str, g: int) -> int:
    """The episode index (which seeds its sampling) of rollout g of a question at a
    training step: a 31-bit hash of the three, independent of batching and order."""
    digest = hashlib.blake2b(f"rollout/{step}/{question_id}/{g}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


@dataclass
class Rollout:
    """One sampled episode of one question."""

    sample: Sample
    question: int  # position of the question in the step's batch
    g: int  # which of the G rollouts
    index: int  # the episode index that seeded its sampling
    result: AnswerResult

    @property
    def steps(self) -> list[StepRecord]:
        return self.result.steps


def trainable_steps(steps: Sequence[StepRecord]) -> list[tuple[int, StepRecord]]:
    """(position, record) of the steps that give a training sequence: token ids known and
    at least one generated token."""
    return [
        (i, s) for i, s in enumerate(steps)
        if s.prompt_ids is not None and s.completion_ids
    ]


def policy_agent(
    model,
    tokenizer,
    cfg: RolloutConfig,
    agent: AgentConfig,
    *,
    seed: int,
    sampling: SamplingParams | None = None,
    batch_size: int | None = None,
    autocast: bool = False,
) -> Agent:
    """An Agent with `agent`'s options on the policy being trained (hf backend over the
    live model object). `sampling` defaults to the rollout's (`cfg.sampling`); evaluation
    passes its own. `autocast`: generate under bfloat16 autocast.
    """
    from ..backends.hf import HFBackend

    backend = HFBackend.from_objects(
        model, tokenizer, name="policy", max_batch_size=batch_size or cfg.generation_batch_size,
        autocast=autocast,
    )
    return rollout_agent(backend, cfg, agent, seed=seed, sampling=sampling)


def rollout_agent(backend, cfg: RolloutConfig, agent: AgentConfig, *, seed: int,
                  sampling: SamplingParams | None = None) -> Agent:
    """An Agent with `agent`'s options on `backend` (one that returns token ids), sampling
    with `sampling` (default: the rollout's, `cfg.sampling`); a sampling seed of None
    becomes `seed`, the run's."""
    sampling = sampling or cfg.sampling
    if sampling.seed is None:
        sampling = dataclasses.replace(sampling, seed=seed)
    return Agent(backend, config=agent, sampling=sampling)


def collect_rollouts(
    agent: Agent,
    samples: Sequence[Sample],
    *,
    group_size: int,
    step: int,
    keys: Sequence[str] | None = None,
    on_step: StepCallback | None = None,
) -> list[list[Rollout]]:
    """G rollouts of every sample, all run together; one list of G per question, in the
    order of `samples`. `keys` (default: the sample ids) name the questions for seeding
    and must be unique within the batch. A question whose episode cannot be built (empty
    question or document) is skipped with a warning."""
    keys = [str(s.id) for s in samples] if keys is None else [str(k) for k in keys]
    if len(keys) != len(samples) or len(set(keys)) != len(keys):
        raise ValueError("need one unique key per sample")
    if agent.sampling.seed is None:
        raise ValueError("rollouts need a seeded agent (SamplingParams.seed)")
    if agent.sampling.greedy:
        raise ValueError("rollouts need sampling (temperature > 0): greedy rollouts of a group are identical")
    episodes: list[Episode] = []
    slots: list[tuple[int, int, Sample]] = []
    for q, (sample, key) in enumerate(zip(samples, keys)):
        try:
            made = [
                agent.episode(
                    agent_document(sample.context),
                    sample.question,
                    index=rollout_index(step, key, g),
                    sample_id=str(sample.id),
                    tag=(q, g),
                )
                for g in range(group_size)
            ]
        except InputError as exc:
            log.warning("skipping question %s: %s", sample.id, exc)
            continue
        episodes.extend(made)
        slots.extend((q, g, sample) for g in range(group_size))
    for _ in agent.run_iter(episodes, on_step=on_step, concurrency=None):
        pass
    groups: dict[int, list[Rollout]] = {}
    for ep, (q, g, sample) in zip(episodes, slots):
        groups.setdefault(q, []).append(
            Rollout(sample=sample, question=q, g=g, index=ep.index, result=ep.result())
        )
    return [groups[q] for q in sorted(groups)]


__all__ = ["ENGINES", "Rollout", "RolloutConfig", "TRAINABLE_METHODS", "collect_rollouts",
           "policy_agent", "rollout_agent", "rollout_index", "trainable_steps"]
