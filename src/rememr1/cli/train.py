"""`rememr1 train`: RL training of the memory agent from a config file and/or options.

    rememr1 train --config revhop-smollm2-cpu --data data/revhop-train/train_*.parquet --out runs/t1
    rememr1 train --config hotpotqa-qwen2.5-3b            # MemAgent's hotpotqa_train_32k.parquet
    rememr1 train --data train.parquet --out runs/t2 --steps 20 --group-size 4 --batch-size 2
    rememr1 train --config hotpotqa-qwen2.5-3b --compat official   # as the official code trains
    rememr1 train --config hotpotqa-qwen2.5-3b --engine verl --dry-run   # the verl V1 command
    rememr1 sft --traces 'data/warm/traces_*.jsonl' --out runs/sft  # warm-start first (rl/sft.py)

`train`'s options are the flagged fields of `TrainConfig` and its sections
(`cli.options.config_keys`: `--group-size` is `rollout.group_size`, `--chunk-size` the
agent's `agent.chunk_size`, ...), so each is declared once, on its field. Options override
the config file; `--set KEY=VALUE` reaches any config key (`--set loss.kl_beta=0 --set
optim.bf16=true`). Rerunning a command with the same `--out` resumes from the newest
checkpoint there.
"""

from __future__ import annotations

from typing import Any, Optional

import typer

from ..errors import InputError
from ..rl.config import TrainConfig
from ..rl.sft_config import SFTConfig
from .options import config_keys, preset_option

ENGINES = ("rememr1", "verl")
# Sections left off the command line (reached with --set): validation samples as the
# rollouts do unless told otherwise, and the rollouts' seed follows the run's --seed.
NOT_FLAGS = {"eval.sampling", "rollout.sampling.seed", "distributed", "verl"}


def parse_sets(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings as overrides; values are parsed as YAML scalars/lists."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


@config_keys(TrainConfig, exclude=NOT_FLAGS)
def train(
    config: Optional[str] = typer.Option(None, "--config", "-c", help="YAML config file, or the name of a packaged config (revhop-smollm2-cpu, hotpotqa-qwen2.5-3b)."),
    compat_preset: Optional[str] = preset_option(None),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Any config key: --set loss.kl_beta=0.0 (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", help="No per-step lines on stderr."),
    engine: str = typer.Option("rememr1", "--engine", help="rememr1 | verl: this trainer, or verl's V1 trainer on GPUs (python -m verl.trainer.main_ppo with the same config; cluster keys: --set verl.nnodes=2 ...; docs/scale-out.md)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --engine verl: print the verl command instead of running it."),
    overrides: dict = None,
) -> None:
    """Train the agent with RL (multi-level rewards, GRPO-style advantages, PPO loss)."""
    from ..rl.config import load_config

    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    if dry_run and engine != "verl":
        raise InputError("--dry-run prints the verl command: add --engine verl")
    if compat_preset is not None:
        overrides["compat"] = compat_preset
    overrides.update(parse_sets(set_ or []))
    cfg = load_config(config, overrides)
    if engine == "verl":
        from ..integrations.verl.launcher import run_verl

        status = run_verl(cfg, dry_run=dry_run)
        if status:
            raise typer.Exit(status)
        return
    if not cfg.data.train:
        raise InputError("no training data: give --data FILE or a config with data.train")

    from ..rl.trainer import Trainer

    trainer = Trainer(cfg, quiet=quiet)
    trainer.train()
    typer.echo(str(trainer.out))


@config_keys(SFTConfig, exclude={"traces", "out", "model.dtype"})
def sft(
    traces: list[str] = typer.Option(..., "--traces", help="Oracle trace files or globs (traces_*.jsonl from `rememr1 data revhop --traces`). Repeatable."),
    out: str = typer.Option(..., "--out", "-o", help="Run directory (checkpoints, metrics.jsonl, tb/); rerunning resumes."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    overrides: dict = None,
) -> None:
    """Supervised warm-start on oracle traces (LoRA unless --no-lora), before RL. Defaults
    are `SFTConfig`'s: LoRA rank 16, lr 2e-4 (2e-5 with --no-lora), 10 warm-up updates."""
    from ..rl.config import build_section
    from ..rl.sft import SFTTrainer

    if overrides.get("model.lora") is False and "optim.lr" not in overrides:
        overrides["optim.lr"] = 2e-5  # every weight: a smaller step than an adapter's
    cfg = build_section(SFTConfig, {"traces": list(traces), "out": out, **overrides}, where="sft")
    typer.echo(str(SFTTrainer(cfg, quiet=quiet).train()))
