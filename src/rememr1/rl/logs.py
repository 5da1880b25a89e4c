"""What a training run reports: `metrics.jsonl` (one line per step and per validation),
TensorBoard events in `OUT/tb`, and a one-line summary per step on stderr.

    log = RunLog(out, total_steps=200, log_every=1, quiet=False)
    log.open(resume_step=0)           # drops lines of steps after the checkpoint resumed from
    log.train(metrics); log.eval(step, metrics)
    log.close()

Only rank 0 of a distributed run logs (`rl.distributed`); `reward_metrics` turns the
rewards of every rank's rollouts into the batch means a line reports. The two format
metrics measure different things and are named for it:

* `format_reward`: the mean format reward r_fmt over every step of every rollout (the
  share of well-formed steps, `records.well_formed`, unless an official-code reward switch
  changes what r_fmt checks);
* `well_formed_rollout_rate`: the share of rollouts whose every step is well formed
  (`records.well_formed`), a stricter number.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..records import FINAL_STEP, well_formed
from .rewards import EpisodeRewards

log = logging.getLogger(__name__)

# Every line of metrics.jsonl has these keys (None where a quantity does not apply).
METRIC_KEYS = (
    "step", "epoch", "outcome_reward", "state_reward", "memory_gain", "callback_bonus",
    "format_reward", "well_formed_rollout_rate", "answer_rate", "recall_rate", "truncated_rate",
    "response_length", "steps_per_rollout", "advantage_abs_mean", "sequences", "tokens",
    "completion_tokens", "loss", "pg_loss", "kl", "entropy", "clip_frac", "dual_clip_frac",
    "approx_kl", "grad_norm", "lr", "updates", "micro_batches", "max_tokens_per_micro_batch",
    "seconds_rollout", "seconds_reference", "seconds_update", "seconds_step",
    "gen_tokens_per_s", "train_tokens_per_s", "peak_rss_gb", "world_size",
)


def mean(xs: Sequence[float]) -> float | None:
    return float(sum(xs) / len(xs)) if xs else None


def rollout_summary(rollouts) -> list[tuple[int, list[tuple[bool, int, bool]]]]:
    """What `reward_metrics` needs of each rollout, small enough to gather across ranks:
    (number of steps, [(truncated, completion tokens, well formed) per step])."""
    return [(len(r.steps), [(s.truncated, s.completion_tokens, well_formed(s)) for s in r.steps])
            for r in rollouts]


def reward_metrics(rewards: Sequence[EpisodeRewards], rollouts) -> dict[str, Any]:
    """Batch means of the reward parts and behaviour rates over all rollouts; `rollouts`
    as given by `rollout_summary`, in the same order as `rewards`."""
    steps = [s for _, per_step in rollouts for s in per_step]
    whole = [float(bool(per_step) and all(ok for _, _, ok in per_step)) for _, per_step in rollouts]
    return {
        "outcome_reward": mean([e.outcome for e in rewards]),
        "state_reward": mean([x for e in rewards for x in e.state]),
        "memory_gain": mean([x for e in rewards for x, k in zip(e.memory_gain, e.kinds) if k != FINAL_STEP]),
        "callback_bonus": mean([x for e in rewards for x, k in zip(e.callback, e.kinds) if k != FINAL_STEP]),
        "format_reward": mean([x for e in rewards for x in e.format]),
        "well_formed_rollout_rate": mean(whole),
        "answer_rate": mean([float(e.answer is not None) for e in rewards]),
        "recall_rate": mean([e.recall_rate for e in rewards]),
        "truncated_rate": mean([float(t) for t, _, _ in steps]),
        "response_length": mean([float(n) for _, n, _ in steps]),
        "steps_per_rollout": mean([float(n) for n, _ in rollouts]),
    }


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


class RunLog:
    """metrics.jsonl + TensorBoard + console lines of one run directory."""

    def __init__(self, out: Path, *, total_steps: int, log_every: int, quiet: bool):
        self.out = Path(out)
        self.total_steps = total_steps
        self.log_every = log_every
        self.quiet = quiet
        self._console = None
        self._fh = None
        self._writer = None

    def say(self, msg: str) -> None:
        if self.quiet:
            log.info(msg)
            return
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)
        self._console.print(msg, markup=False)

    def open(self, *, resume_step: int) -> None:
        path = self.out / "metrics.jsonl"
        if path.exists():  # drop lines of steps after the checkpoint we resumed from
            keep = []
            for raw in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(raw).get("step", 0) <= resume_step:
                        keep.append(raw)
                except ValueError:
                    continue
            path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
        self._fh = path.open("a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional: metrics.jsonl has everything
            log.warning("tensorboard is not installed; writing metrics.jsonl only")
            self._writer = None
        else:
            self._writer = SummaryWriter(log_dir=str(self.out / "tb"), purge_step=resume_step + 1)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _line(self, line: dict[str, Any]) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps(line) + "\n")
            self._fh.flush()

    def _scalars(self, prefix: str, m: dict[str, Any], step: int) -> None:
        if self._writer is None:
            return
        for k, v in m.items():
            if k != "step" and isinstance(v, (int, float)) and v is not None:
                self._writer.add_scalar(f"{prefix}/{k.removeprefix('eval_')}", v, step)
        self._writer.flush()

    def train(self, m: dict[str, Any]) -> None:
        self._line({"type": "train", **m})
        self._scalars("train", m, m["step"])
        if m["step"] % self.log_every == 0 or m["step"] == self.total_steps:
            self.say(
                f"step {m['step']}/{self.total_steps}  outcome_reward {_fmt(m['outcome_reward'])}  "
                f"state_reward {_fmt(m['state_reward'])}  format_reward {_fmt(m['format_reward'])}  "
                f"well_formed_rollout_rate {_fmt(m['well_formed_rollout_rate'])}  "
                f"recall_rate {_fmt(m['recall_rate'])}  kl {_fmt(m['kl'])}  loss {_fmt(m['loss'])}  "
                f"{m['seconds_step']:.1f}s (rollout {m['seconds_rollout']:.1f}, reference "
                f"{m['seconds_reference']:.1f}, update {m['seconds_update']:.1f})  "
                f"peak {_fmt(m['peak_rss_gb'])} GB"
            )

    def sft(self, m: dict[str, Any]) -> None:
        """One supervised update (`rl.sft`): a metrics line and scalars; the progress bar
        is its console line."""
        self._line({"type": "sft", **m})
        self._scalars("sft", m, m["step"])

    def eval(self, step: int, m: dict[str, Any]) -> None:
        self._line({"type": "eval", **m})
        self._scalars("eval", m, step)
        self.say(f"eval step {step}: sub-EM {_fmt(m['eval_sub_em'])} on {m['eval_items']} items "
                 f"({m['eval_seconds']:.1f}s)")


__all__ = ["METRIC_KEYS", "RunLog", "mean", "reward_metrics", "rollout_summary"]
