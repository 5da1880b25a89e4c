"""Periodic validation of the policy on the dev file, through the evaluation runner.

    metrics = validate(policy, cfg, out_dir=run / "eval" / "step-20", step=20)
    metrics["eval_sub_em"]          # strict sub-EM, or the official scorer's under compat: official

Results land in `OUT/eval/step-N` as any `rememr1 eval` run (JSONL per item, report.md);
the metrics and the report come from the lines `run_eval` returns, not from reading them back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends.base import SamplingParams
from ..errors import require
from ..agent import AgentConfig, get_method


@dataclass(kw_only=True)
class EvalConfig:
    """Validation on `data.dev` (sub-EM) of up to `max_items` items, `batch_size` at a time.

    sampling -- the `SamplingParams` of validation: temperature 0.7 and top_p 0.95 (the
              paper's evaluation settings, `SamplingParams`' own defaults; temperature 0 =
              greedy), max_new_tokens the rollout's in a loaded config; seed None = the
              run's seed.
    """

    max_items: int | None = 64
    sampling: SamplingParams = field(default_factory=lambda: get_method(AgentConfig().method).sampling())
    batch_size: int = 64
    at_start: bool = False

    def __post_init__(self) -> None:
        require(self.max_items is None or self.max_items >= 1, "max_items", "must be at least 1")
        require(self.batch_size >= 1, "batch_size", "must be at least 1")


def validate(policy, cfg, *, out_dir: Path, step: int) -> dict[str, Any]:
    """Sub-EM (and EM, F1) of the current `policy` (`rl.policy.Policy`) on `cfg.data.dev`
    (`cfg` a TrainConfig)."""
    from ..eval import agent_record, default_scoring, run_eval, score_line, write_report
    from ..metrics import aggregate
    from .data import expand_files
    from .rollout import policy_agent

    e = cfg.eval
    t0 = time.perf_counter()

    def make_agent(method: str):
        return policy_agent(policy.model, policy.tokenizer, cfg.rollout, cfg.agent, seed=cfg.seed,
                            sampling=e.sampling, batch_size=e.batch_size, autocast=policy.autocast)

    run_config = {
        "model": f"{policy.name}@step-{step}", **agent_record(cfg.agent),
        "max_new_tokens": e.sampling.max_new_tokens, "temperature": e.sampling.temperature,
        "top_p": e.sampling.top_p, "seed": cfg.seed if e.sampling.seed is None else e.sampling.seed,
        "compat": cfg.compat,
    }
    lines = run_eval(expand_files([cfg.data.dev], "data.dev"), make_agent=make_agent,
                     methods=[cfg.agent.method], out_dir=out_dir, config=run_config,
                     limit=e.max_items, concurrency=e.batch_size)
    write_report(out_dir, lines=lines)  # from the lines run_eval returned: nothing is read back
    mode = default_scoring(run_config)
    agg = aggregate([score_line(x, mode, cfg.agent.answer_format) for x in lines])

    def frac(key: str) -> float | None:
        return None if agg[key] is None else agg[key] / 100.0

    return {
        "step": step,
        "eval_sub_em": frac("accuracy"),
        "eval_em": frac("em"),
        "eval_f1": frac("f1"),
        "eval_items": agg["n"],
        "eval_seconds": time.perf_counter() - t0,
    }


__all__ = ["EvalConfig", "validate"]
