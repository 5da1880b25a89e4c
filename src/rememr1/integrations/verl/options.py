"""The `rememr1:` section of a verl config: what the agent loop and the trainer read.

The launcher (`launcher.py`) writes it from a rememr1 training config as Hydra overrides
(`+rememr1.agent.chunk_size=5000`, `+rememr1.reward.outcome_metric=em`,
`+rememr1.advantage.alpha=0.8`, ...); every verl process reads it back with
`VerlOptions.from_config(config)`. Absent keys keep rememr1's defaults, so a hand-written
verl config needs only the keys it changes. The sections are the objects `rememr1 train`
reads (`AgentConfig`, `RewardConfig`, `AdvantageConfig`), so both trainers take the same
settings. No verl import, so the launcher runs where verl is not installed.

    rememr1:
      agent: {method: rememr1, chunk_size: 5000, retriever: tfidf, compat: {memory_set: false}}
      reward: {outcome_metric: em}
      advantage: {alpha: 0.8, scale_by_std: false}   # alpha 1.0 = verl's own GRPO
      max_new_tokens: 2048         # per agent step (absent: the method's default)
      mini_batches: 16             # optimizer updates per pass over a step's rows (x ppo_epochs)
      seed: 0                      # sampling seed (per request: seed, session, step)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...agent import AgentConfig, get_method
from ...compat import AgentCompat
from ...errors import InputError
from ...rl.advantages import AdvantageConfig
from ...rl.rewards import RewardConfig

SECTION = "rememr1"


def _plain(value: Any) -> Any:
    """An OmegaConf node (or anything mapping-like) as plain Python containers."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # the launcher's environment may lack omegaconf
        pass
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _only_known(cls: type, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return dict(values)


@dataclass(frozen=True, kw_only=True)
class VerlOptions:
    """The rememr1 settings every verl process needs (module docstring)."""

    agent: AgentConfig = field(default_factory=AgentConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    max_new_tokens: int | None = None
    mini_batches: int = 1
    seed: int | None = 0

    def __post_init__(self) -> None:
        if (self.max_new_tokens is not None and self.max_new_tokens < 1) or self.mini_batches < 1:
            raise InputError(f"{SECTION}.max_new_tokens and {SECTION}.mini_batches must be at least 1")

    @property
    def step_tokens(self) -> int:
        """Tokens one agent step may generate: `max_new_tokens`, or the method's default."""
        return self.max_new_tokens or get_method(self.agent.method).default_max_new_tokens

    @classmethod
    def from_config(cls, config: Any) -> VerlOptions:
        """From a whole verl config (its `rememr1` section, if any) or the section itself."""
        data = _plain(config) if config is not None else {}
        if isinstance(data, Mapping) and SECTION in data:
            data = _plain(data[SECTION]) or {}
        elif isinstance(data, Mapping) and ("actor_rollout_ref" in data or "trainer" in data):
            data = {}
        data = dict(data or {})
        agent = dict(data.pop("agent", None) or {})
        compat = AgentCompat(**_only_known(AgentCompat, agent.pop("compat", None) or {}, f"{SECTION}.agent.compat"))
        agent_cfg = AgentConfig(**_only_known(AgentConfig, agent, f"{SECTION}.agent"), compat=compat)
        reward = RewardConfig(**_only_known(RewardConfig, data.pop("reward", None) or {}, f"{SECTION}.reward"))
        values = _only_known(AdvantageConfig, data.pop("advantage", None) or {}, f"{SECTION}.advantage")
        try:
            advantage = AdvantageConfig(**values)
        except ValueError as exc:  # require(): "field: message"
            raise InputError(f"{SECTION}.advantage.{exc}") from None
        scalars = _only_known(cls, data, SECTION)
        return cls(agent=agent_cfg, reward=reward, advantage=advantage, **scalars)

    def to_section(self) -> dict[str, Any]:
        """The section as plain values, `None`s left out (verl's config keeps them as nulls)."""
        agent = {k: v for k, v in dataclasses.asdict(self.agent).items() if v is not None}
        out: dict[str, Any] = {
            "agent": agent,
            "reward": dataclasses.asdict(self.reward),
            "advantage": dataclasses.asdict(self.advantage),
            "mini_batches": self.mini_batches,
        }
        if self.max_new_tokens is not None:
            out["max_new_tokens"] = self.max_new_tokens
        if self.seed is not None:
            out["seed"] = self.seed
        return out


__all__ = ["SECTION", "VerlOptions"]
