"""rememr1's memory agent as a verl agent loop: train ReMemR1 on verl's rollout servers.

    pip install 'rememr1[verl]'
    # verl config: actor_rollout_ref.rollout.agent.default_agent_loop: rememr1
    #              and, optionally, a `rememr1:` section (AgentConfig, RewardConfig, max_new_tokens)
    import rememr1.integrations.verl   # registers the loop under the name "rememr1"

`ReMemR1AgentLoop.run` drives one episode through the same async engine as `ask`, `eval`
and `rememr1 train` (`agent.engine.drive`, hence the one `transition`), against verl's
server manager: the prompt of every step is tokenised once with the policy's chat
template, the server returns token ids, and those ids are what training sees (never
re-tokenised text). Data rows are schema A (MemAgent's parquet): the question in
`raw_prompt`, the document in `context`, the gold answers in `reward_model.ground_truth`.

What reaches the trainer (docs/scale-out.md §3.2 has the reasoning): verl's agent loop
returns one `AgentLoopOutput` per trajectory, and its worker pads and concatenates those
into a batch of the input's size. So the loop returns the final step as the trajectory's
sequence and every step (memory steps and the final one, in order) in
`extra_fields["rememr1_steps"]` (prompt ids, response ids, step index, kind), with the
rollout's rewards in `extra_fields["rememr1_rewards"]` (outcome and per-step state
rewards, `rewards.episode_rewards`). `expand_steps` turns such a batch into one training
row per step with its mixed advantage (`rl.advantages.group_advantages`, grouped by
`uid`), the multi-conversation batch the actor update needs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import (
    AgentLoopBase,
    AgentLoopMetrics,
    AgentLoopOutput,
    register,
)

from ..agent import Agent, AgentConfig
from ..backends.base import FINISH_LENGTH, FINISH_STOP, Backend, ChatRequest, Generation, SamplingParams
from ..backends.tokenization import HFTokenizer
from ..compat import AgentCompat
from ..rewards import EpisodeRewards, RewardConfig, episode_rewards
from ..rl.advantages import group_advantages

AGENT_NAME = "rememr1"


class ServerManagerBackend(Backend):
    """verl's server manager as a rememr1 backend: token ids in, token ids out.

    `sampling_params` are verl's (temperature, top_p, top_k, ...); each request adds its
    own `max_tokens`, the step's budget cut to the context window (`Backend.plan`).
    """

    name = "verl"
    model_name = "verl-policy"

    def __init__(self, server_manager, tokenizer, sampling_params: dict[str, Any], *,
                 context_window: int):
        self.server_manager = server_manager
        self.hf_tokenizer = tokenizer
        self._tokenizer = HFTokenizer(tokenizer)
        self.sampling_params = dict(sampling_params)
        self.context_window = int(context_window)
        eos = tokenizer.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos]) - {None}

    @property
    def tokenizer(self) -> HFTokenizer:
        return self._tokenizer

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        ids = self.hf_tokenizer.apply_chat_template(list(request.messages), add_generation_prompt=True,
                                                    tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # a BatchEncoding
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    def generate(self, requests: Sequence[ChatRequest], sampling: SamplingParams) -> list[Generation]:
        raise NotImplementedError("the verl backend is asynchronous: use asubmit (the engine does)")

    async def asubmit(self, request: ChatRequest, sampling: SamplingParams) -> Generation:
        plan = self.plan(request, sampling)
        if isinstance(plan, Generation):
            return plan
        params = {**self.sampling_params, "max_tokens": plan.max_new}
        out = await self.server_manager.generate(request_id=uuid4().hex, prompt_ids=list(plan.prompt_ids),
                                                 sampling_params=params)
        ids = [int(i) for i in out.token_ids]
        ended = bool(ids) and ids[-1] in self._eos
        finish = FINISH_STOP if ended or len(ids) < plan.max_new else FINISH_LENGTH
        return Generation(
            text=self.hf_tokenizer.decode(ids, skip_special_tokens=True), finish_reason=finish,
            prompt_tokens=len(plan.prompt_ids), completion_tokens=len(ids),
            seconds=time.perf_counter() - plan.start, prompt_ids=plan.prompt_ids,
            completion_ids=tuple(ids),
        )


def options_from(config) -> tuple[AgentConfig, RewardConfig, int]:
    """(AgentConfig, RewardConfig, max new tokens per step) from the `rememr1:` section of
    verl's config (a mapping; absent keys keep their defaults)."""
    section = dict(config.get(AGENT_NAME, None) or {}) if hasattr(config, "get") else {}
    agent_keys = {f.name for f in dataclasses.fields(AgentConfig)}
    reward_keys = {f.name for f in dataclasses.fields(RewardConfig)}
    agent = {k: v for k, v in section.items() if k in agent_keys and k != "compat"}
    compat = AgentCompat(**dict(section.get("compat", None) or {}))
    reward = {k: v for k, v in section.get("reward", {}).items() if k in reward_keys}
    return (AgentConfig(**agent, compat=compat), RewardConfig(**reward),
            int(section.get("max_new_tokens", 2048)))


@register(AGENT_NAME)
class ReMemR1AgentLoop(AgentLoopBase):
    """One ReMemR1 episode per trajectory (module docstring)."""

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput:
        agent_cfg, reward_cfg, max_new = options_from(self.config)
        rollout = self.rollout_config
        window = int(rollout.prompt_length) + int(rollout.response_length)
        backend = ServerManagerBackend(self.server_manager, self.tokenizer, sampling_params,
                                       context_window=window)
        sampling = SamplingParams(max_new_tokens=max_new,
                                  temperature=float(sampling_params.get("temperature", 1.0)),
                                  top_p=float(sampling_params.get("top_p", 1.0)))
        agent = Agent(backend, config=agent_cfg, sampling=sampling)
        messages = list(kwargs["raw_prompt"])
        question = next(m["content"] for m in messages if m.get("role", "user") == "user")
        episode = agent.episode(kwargs["context"], question, index=int(kwargs.get("index", 0) or 0))
        async for _ in agent.arun_iter([episode]):
            pass
        records = episode.records
        golds = list(kwargs["reward_model"]["ground_truth"])
        rewards = episode_rewards(records, golds, reward_cfg)
        final = records[-1]
        response = list(final.completion_ids or ())[: int(rollout.response_length)]
        return AgentLoopOutput(
            prompt_ids=list(final.prompt_ids or ()),
            response_ids=response,
            response_mask=[1] * len(response),
            num_turns=2 * len(records),
            metrics=AgentLoopMetrics(generate_sequences=sum(r.seconds for r in records)),
            extra_fields={
                "rememr1_steps": [
                    {"step": r.step, "kind": str(r.kind), "prompt_ids": list(r.prompt_ids or ()),
                     "response_ids": list(r.completion_ids or ())}
                    for r in records
                ],
                "rememr1_rewards": rewards.to_json(),
            },
        )


def expand_steps(uids: Sequence[str], steps: Sequence[list[dict]], rewards: Sequence[dict], *,
                 alpha: float = 0.8, scale_by_std: bool = False,
                 reward_cfg: RewardConfig | None = None) -> list[dict]:
    """One training row per agent step of every trajectory of a verl batch: the
    `extra_fields` the loop returned (`rememr1_steps`, `rememr1_rewards`) and each row's
    `uid` (rollouts of one question share it). Each row: uid, trajectory index, step,
    kind, prompt_ids, response_ids and the step's mixed advantage."""
    cfg = reward_cfg or RewardConfig()
    by_uid: dict[str, list[int]] = {}
    for i, uid in enumerate(uids):
        by_uid.setdefault(str(uid), []).append(i)
    advantage: dict[int, list[float]] = {}
    for members in by_uid.values():
        eps = [EpisodeRewards(**rewards[i]) for i in members]
        mixed = group_advantages(eps, alpha=alpha, scale_by_std=scale_by_std,
                                 double_state=cfg.double_state_advantage,
                                 singleton_raw=cfg.singleton_raw_advantage)
        advantage.update(zip(members, mixed, strict=True))
    rows = []
    for i, trajectory in enumerate(steps):
        for k, step in enumerate(trajectory):
            rows.append({"uid": str(uids[i]), "trajectory": i, "step": step["step"], "kind": step["kind"],
                         "prompt_ids": step["prompt_ids"], "response_ids": step["response_ids"],
                         "advantage": advantage[i][k]})
    return rows


__all__ = ["AGENT_NAME", "ReMemR1AgentLoop", "ServerManagerBackend", "expand_steps", "options_from"]
