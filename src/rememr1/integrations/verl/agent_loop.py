"""The ReMemR1 agent as a verl agent loop: one training row per agent step.

Registered as "rememr1" (`actor_rollout_ref.rollout.agent.default_agent_loop: rememr1`) in
every process that imports verl (the `verl.plugins` entry point imports `plugin.py`), and
also listed in the packaged `agent_loops.yaml` for `agent.agent_loop_config_path`.

`ReMemR1AgentLoop.run` drives one episode through the engine every other path uses
(`Agent.arun_iter`, hence `agent.episode.transition`) against verl's server client
(`backend.ServerManagerBackend`): each step's prompt is tokenised once with the policy's
chat template and the ids the server returns are what training sees. The rewards are
`rememr1.rl.rewards.episode_rewards` of the step records.

What it returns, for verl's V1 trainer (`trainer.use_v1`, the default since verl 0.9): a
list with one `AgentLoopOutput` per step that produced tokens (memory steps, then the
final answer), which V1 stores as rows `{uid}_{session}_{i}`. Every output carries the
step's prompt ids, response ids and mask, the server's log-probs (on all outputs or on
none: V1 needs the same keys on every row), and `extra_fields["rememr1"]` with the step
index, kind, outcome and that step's state reward and parts; the last output carries
`reward_score` (the outcome) and `extra_fields["reward_extra_info"]`, which V1 copies to
the earlier rows. The ReMemR1 advantage is computed from those fields by
`trainer.ReMemR1Trainer`. Under the legacy trainer (one row per trajectory) only the
final step comes back, with a warning, once per process, that memory steps are not
trained.

Data rows are schema A (MemAgent's parquet, what verl's RLHFDataset reads): the question
in `raw_prompt` (the first user message), the document in `context`, the gold answers in
`reward_model.ground_truth`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import (
    AgentLoopBase,
    AgentLoopMetrics,
    AgentLoopOutput,
    register,
)

from ...agent import Agent
from ...backends.base import SamplingParams
from ...errors import InputError
from ...metrics import sub_exact_match
from ...records import StepRecord
from ...rl.rewards import EpisodeRewards, episode_rewards
from ...rl.rollout import rollout_index, trainable_steps
from .backend import ServerManagerBackend
from .options import SECTION, VerlOptions

AGENT_NAME = "rememr1"
STEP_FIELD = "rememr1"  # extra_fields key of each row's step information

log = logging.getLogger(__name__)
_warned_legacy = False


def row_question(row: dict[str, Any]) -> tuple[str, str, list[str]]:
    """(question, document, gold answers) of a schema-A dataset row, as verl passes it."""
    try:
        messages = list(row["raw_prompt"])
        question = next(m["content"] for m in messages if m.get("role", "user") == "user")
        document = row["context"]
        golds = row["reward_model"]["ground_truth"]
    except (KeyError, StopIteration, TypeError) as exc:
        raise InputError(f"a verl data row lacks a schema-A field ({exc}): need raw_prompt (prompt), "
                         "context and reward_model.ground_truth") from None
    golds = [golds] if isinstance(golds, str) else [str(g) for g in golds]
    return str(question), str(document), golds


def step_fields(rewards: EpisodeRewards, i: int) -> dict[str, Any]:
    """The i-th step's entry of `extra_fields[STEP_FIELD]`: enough to rebuild the episode's
    `EpisodeRewards` from its rows (`trainer.rows_to_episodes`)."""
    return {
        "step": int(rewards.steps[i]), "kind": str(rewards.kinds[i]), "outcome": float(rewards.outcome),
        "state": float(rewards.state[i]), "memory_gain": float(rewards.memory_gain[i]),
        "callback": float(rewards.callback[i]), "format": float(rewards.format[i]),
        "recalled": bool(rewards.recalled[i]),
    }


def reward_extra_info(rewards: EpisodeRewards, golds: Sequence[str]) -> dict[str, float]:
    """Scalars verl logs per episode (validation: `acc` is the papers' sub-EM accuracy)."""
    return {
        "acc": float(sub_exact_match(rewards.answer, golds)),
        "outcome": float(rewards.outcome),
        "state_mean": sum(rewards.state) / len(rewards.state) if rewards.state else 0.0,
        "format_reward": float(rewards.mean_format_reward),
        "recall_rate": float(rewards.recall_rate),
        "steps": float(len(rewards.steps)),
    }


def _uses_v1(config, kwargs: dict[str, Any]) -> bool:
    try:
        from omegaconf import OmegaConf

        flag = OmegaConf.select(config, "trainer.use_v1", default=None)
    except Exception:  # a plain mapping in a test
        flag = None
    return bool(flag) if flag is not None else "session_id" in kwargs


@register(AGENT_NAME)
class ReMemR1AgentLoop(AgentLoopBase):
    """One ReMemR1 episode; one output per trainable step (module docstring)."""

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> list[AgentLoopOutput] | AgentLoopOutput:
        opts = VerlOptions.from_config(self.config.get(SECTION, None) if hasattr(self.config, "get") else None)
        rollout = self.rollout_config
        response_length = int(rollout.response_length)
        backend = ServerManagerBackend(
            self.server_manager, self.tokenizer, sampling_params,
            context_window=int(rollout.prompt_length) + response_length, request_id=uuid4().hex,
        )
        sampling = SamplingParams(max_new_tokens=min(opts.step_tokens, response_length),
                                  temperature=float(sampling_params.get("temperature", 1.0)),
                                  top_p=float(sampling_params.get("top_p", 1.0)), seed=opts.seed)
        agent = Agent(backend, config=opts.agent, sampling=sampling)
        question, document, golds = row_question(kwargs)
        v1 = _uses_v1(self.config, kwargs)
        if v1:  # the n sessions of one prompt sample differently, reproducibly
            index = rollout_index(int(kwargs.get("global_steps", 0) or 0), str(kwargs.get("uid", "")),
                                  int(kwargs.get("session_id", 0) or 0))
        else:
            index = int(kwargs.get("index", 0) or 0)
        episode = agent.episode(document, question, index=index)
        async for _ in agent.arun_iter([episode]):
            pass
        rewards = episode_rewards(episode.records, golds, opts.reward)
        outputs = self._outputs(episode.records, rewards, backend, response_length,
                                global_steps=kwargs.get("global_steps"))
        if not outputs:
            raise RuntimeError(f"no agent step produced tokens (first error: {episode.error or 'none'})")
        outputs[-1].reward_score = float(rewards.outcome)
        outputs[-1].extra_fields["reward_extra_info"] = reward_extra_info(rewards, golds)
        if v1:
            return outputs
        global _warned_legacy
        if not _warned_legacy:
            _warned_legacy = True
            log.warning("verl's legacy trainer takes one row per trajectory: only the final step of each "
                        "ReMemR1 episode is trained, its memory steps are not (set trainer.use_v1=True)")
        return outputs[-1]

    @staticmethod
    def _outputs(records: Sequence[StepRecord], rewards: EpisodeRewards, backend: ServerManagerBackend,
                 response_length: int, *, global_steps: Any) -> list[AgentLoopOutput]:
        rows = []
        for i, record in trainable_steps(records):  # nothing sampled: nothing to train
            response = list(record.completion_ids)[:response_length]
            reply = backend.reply_for(record.prompt_ids, record.completion_ids)
            server_fields = dict(reply.extra_fields) if reply is not None else {}
            extra = {STEP_FIELD: step_fields(rewards, i)}
            for key in ("min_global_steps", "max_global_steps"):  # V1's staleness tags
                value = server_fields.get(key)
                extra[key] = value if value is not None else global_steps
            log_probs = None
            if reply is not None and reply.log_probs is not None and len(reply.log_probs) >= len(response):
                log_probs = list(reply.log_probs[: len(response)])
            rows.append((record, response, log_probs, extra))
        with_log_probs = bool(rows) and all(lp is not None for _, _, lp, _ in rows)
        return [
            AgentLoopOutput(
                prompt_ids=list(record.prompt_ids), response_ids=response, response_mask=[1] * len(response),
                response_logprobs=log_probs if with_log_probs else None, num_turns=2,
                metrics=AgentLoopMetrics(generate_sequences=float(record.seconds)), extra_fields=extra,
            )
            for record, response, log_probs, extra in rows
        ]


__all__ = ["AGENT_NAME", "STEP_FIELD", "ReMemR1AgentLoop", "reward_extra_info", "row_question", "step_fields"]
