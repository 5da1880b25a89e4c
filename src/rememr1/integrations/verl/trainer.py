"""The ReMemR1 trainer for verl's V1 (TransferQueue) trainer: verl's sync PPO trainer with
ReMemR1's advantage and rememr1's count of optimizer updates.

Registered as "rememr1" (`trainer.v1.trainer_mode=rememr1`) with verl's `register_trainer`,
in every process that imports verl (the `verl.plugins` entry point). It runs exactly as
verl's `sync` trainer (it reports `trainer_mode == "sync"` to verl's own code: the same
replay buffer, refill and checkpoint behaviour) and changes two steps:

* **Advantages** (`_compute_advantage`): verl's step runs first (GRPO over the final row of
  each session, broadcast to the session's rows). With `rememr1.advantage.alpha < 1` the rows' step
  fields (`agent_loop.STEP_FIELD`) are read back, each rollout's `EpisodeRewards` rebuilt
  (`rows_to_episodes`; padding rows, tagged `is_padding` by verl, are skipped), and
  `rl.advantages.group_advantages` (the outcome term over a question's G rollouts, the state
  term over the rollouts at the same step, with the run's `AdvantageConfig` whole) is
  written to every response token of each row. At alpha = 1 verl's `grpo` with
  `norm_adv_by_std_in_grpo = advantage.scale_by_std` is the same advantage, so it stands
  (tested).
* **Mini-batches** (`_get_required_batch_multiple`, `_update_actor`): V1 counts actor
  mini-batches in rows (`ppo_mini_batch_size x n`), so an episode of 8 steps would make
  about 8 times the optimizer updates of the paper or `rememr1 train`. Here each pass over
  a step's rows (`actor.ppo_epochs` passes) makes `rememr1.mini_batches` updates, which the
  launcher sets to ceil(questions per step / questions per mini-batch), as `rememr1 train`
  counts them: the batch is padded to a multiple of data-parallel size x mini-batches, and
  each update takes that share of the rows. Rows are not grouped by question inside a
  mini-batch (verl balances sequence lengths across ranks first).

Both override private methods of `verl.trainer.ppo.v1.trainer_base.PPOTrainer`, which is why
the `[verl]` extra pins verl exactly and `tests/integrations` runs them against it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
import transfer_queue as tq
from tensordict import TensorDict
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from ...rl.rewards import EpisodeRewards
from ...rl.advantages import group_advantages
from .agent_loop import STEP_FIELD
from .options import VerlOptions

TRAINER_NAME = "rememr1"


def split_key(key: str) -> tuple[str, str, int]:
    """(uid, session, index) of a V1 row key `{uid}_{session}_{index}`."""
    uid, session, index = key.rsplit("_", 2)
    return uid, session, int(index)


def rows_to_episodes(keys: Sequence[str], fields: Sequence[dict[str, Any]]) -> dict[str, dict[str, tuple[EpisodeRewards, list[int]]]]:
    """Per uid (question), per session (rollout): the `EpisodeRewards` rebuilt from the rows'
    step fields, with the row positions of its steps in step order. Rows without step
    fields (not from the rememr1 loop) are left out."""
    by_session: dict[tuple[str, str], list[tuple[int, int, dict]]] = defaultdict(list)
    for pos, (key, extra) in enumerate(zip(keys, fields, strict=True)):
        step = (extra or {}).get(STEP_FIELD) if isinstance(extra, dict) else None
        if step is None:
            continue
        uid, session, _ = split_key(key)
        by_session[(uid, session)].append((int(step["step"]), pos, step))
    out: dict[str, dict[str, tuple[EpisodeRewards, list[int]]]] = defaultdict(dict)
    for (uid, session), rows in by_session.items():
        rows.sort(key=lambda r: r[0])
        steps = [r[2] for r in rows]
        episode = EpisodeRewards(
            outcome=float(steps[0]["outcome"]), answer=None, steps=[int(s["step"]) for s in steps],
            kinds=[str(s["kind"]) for s in steps], memory_gain=[float(s["memory_gain"]) for s in steps],
            callback=[float(s["callback"]) for s in steps], format=[float(s["format"]) for s in steps],
            state=[float(s["state"]) for s in steps], recalled=[bool(s["recalled"]) for s in steps],
        )
        out[uid][session] = (episode, [r[1] for r in rows])
    return out


def row_advantages(keys: Sequence[str], fields: Sequence[dict[str, Any]], opts: VerlOptions) -> dict[int, float]:
    """Row position -> the ReMemR1 advantage of that row's step (`group_advantages` per uid)."""
    values: dict[int, float] = {}
    for sessions in rows_to_episodes(keys, fields).values():
        episodes = [episode for episode, _ in sessions.values()]
        mixed = group_advantages(episodes, opts.advantage)
        for (_, positions), per_step in zip(sessions.values(), mixed, strict=True):
            values.update(zip(positions, per_step, strict=True))
    return values


class _RowMiniBatches:
    """The actor worker group, as `_update_actor` sees it: every update takes `rows` rows."""

    def __init__(self, worker_group, rows: int):
        self._worker_group = worker_group
        self._rows = rows

    def update_actor(self, batch):
        batch.extra_info.update(mini_batch_size=self._rows, global_batch_size=self._rows)
        return self._worker_group.update_actor(batch)

    def __getattr__(self, name):
        return getattr(self._worker_group, name)


@register_trainer(TRAINER_NAME)
class ReMemR1Trainer(PPOTrainerSync):
    """verl's sync V1 trainer with the ReMemR1 advantage and update count (module docstring)."""

    # verl branches on the mode's name (replay buffer, refill, checkpoints); this trainer is
    # the sync one under another name, so verl's code reads "sync". Assignments are ignored.
    @property
    def trainer_mode(self) -> str:
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, _value: str) -> None:
        pass

    @property
    def rememr1(self) -> VerlOptions:
        opts = getattr(self, "_rememr1_options", None)
        if opts is None:
            opts = self._rememr1_options = VerlOptions.from_config(self.config)
        return opts

    def _compute_advantage(self, batch, metrics: dict):
        batch = super()._compute_advantage(batch, metrics)
        opts = self.rememr1
        if opts.advantage.alpha >= 1.0:  # verl's grpo on the final rows is the outcome advantage
            return batch
        real = [i for i, tag in enumerate(batch.tags) if not tag.get("is_padding", False)]
        keys = [batch.keys[i] for i in real]
        if not keys:
            return batch
        data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id,
                               select_fields=["extra_fields", "response_mask"])
        extra = list(data["extra_fields"])
        extra = [e.data if hasattr(e, "data") and not isinstance(e, dict) else e for e in extra]
        values = row_advantages(keys, extra, opts)
        missing = len(keys) - len(values)
        if missing:
            raise RuntimeError(f"{missing} of {len(keys)} rows carry no rememr1 step fields: "
                               "run the rememr1 agent loop (rollout.agent.default_agent_loop=rememr1)")
        masks = data["response_mask"].unbind()
        advantages = torch.nested.as_nested_tensor(
            [mask.to(torch.float32) * values[pos] for pos, mask in enumerate(masks)], layout=torch.jagged)
        tq.kv_batch_put(keys=keys, partition_id=batch.partition_id,
                        fields=TensorDict({"advantages": advantages, "returns": advantages.clone()},
                                          batch_size=len(keys)))
        flat = list(values.values())
        metrics["rememr1/advantage/mean"] = sum(flat) / len(flat)
        metrics["rememr1/advantage/max"] = max(flat)
        metrics["rememr1/advantage/min"] = min(flat)
        return batch

    def _get_required_batch_multiple(self, dp_size: int) -> int:
        if self.use_critic:
            raise ValueError("the rememr1 trainer trains no critic: use algorithm.adv_estimator=grpo")
        return dp_size * self.rememr1.mini_batches

    def _update_actor(self, batch, metrics: dict):
        rows = math.ceil(len(batch) / self.rememr1.mini_batches)
        worker_group = self.actor_rollout_wg
        self.actor_rollout_wg = _RowMiniBatches(worker_group, rows)
        try:
            return super()._update_actor(batch, metrics)
        finally:
            self.actor_rollout_wg = worker_group


__all__ = ["TRAINER_NAME", "ReMemR1Trainer", "row_advantages", "rows_to_episodes", "split_key"]
