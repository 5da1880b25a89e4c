"""`rememr1 train`: RL training of the memory agent from a config file and/or options.

    rememr1 train --config revhop-smollm2-cpu --data data/revhop-train/train_*.parquet --out runs/t1
    rememr1 train --config hotpotqa-qwen2.5-3b            # MemAgent's hotpotqa_train_32k.parquet
    rememr1 train --data train.parquet --out runs/t2 --steps 20 --group-size 4 --batch-size 2
    rememr1 train --config hotpotqa-qwen2.5-3b --compat official   # as the official code trains
    rememr1 train --config hotpotqa-qwen2.5-3b --engine verl --dry-run   # the verl V1 command
    rememr1 sft --traces 'data/warm/traces_*.jsonl' --out runs/sft  # warm-start first (rl/sft.py)
    python -m rememr1.rl.cli train --help

`train` is a plain typer command function; the main CLI registers it with
`app.command("train")(train)`. Options override the config file; `--set KEY=VALUE`
reaches any config key (`--set loss.kl_beta=0 --set optim.bf16=true`). Rerunning a
command with the same `--out` resumes from the newest checkpoint there.
"""

from __future__ import annotations

from typing import Any, Optional

import typer

from ..errors import InputError

ENGINES = ("rememr1", "verl")

# CLI option -> config key.
OPTION_KEYS = {
    "model": "model.path",
    "data": "data.train",
    "dev": "data.dev",
    "out": "out",
    "steps": "steps",
    "group_size": "rollout.group_size",
    "batch_size": "rollout.batch_size",
    "chunk_size": "agent.chunk_size",
    "max_new_tokens": "rollout.max_new_tokens",
    "method": "agent.method",
    "alpha": "loss.alpha",
    "lr": "optim.lr",
    "save_every": "save_every",
    "eval_every": "eval_every",
    "seed": "seed",
    "device": "model.device",
    "dtype": "model.dtype",
    "bf16": "optim.bf16",
    "lora": "model.lora",
    "rollout_engine": "rollout.engine",
    "compat": "compat",
}


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


def train(
    config: Optional[str] = typer.Option(None, "--config", "-c", help="YAML config file, or the name of a packaged config (revhop-smollm2-cpu, hotpotqa-qwen2.5-3b)."),
    model: Optional[str] = typer.Option(None, "--model", help="HF model directory or .gguf to train (default: the built-in SmolLM2-135M-Instruct)."),
    data: Optional[list[str]] = typer.Option(None, "--data", help="Training file(s) or globs: schema-A parquet (MemAgent's files work unchanged) or any supported schema. Repeatable."),
    dev: Optional[str] = typer.Option(None, "--dev", help="Dev file for periodic validation (sub-EM)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Run directory (checkpoints, metrics.jsonl, tb/, eval/); rerunning resumes."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps in all."),
    group_size: Optional[int] = typer.Option(None, "--group-size", "-G", help="Rollouts per question (G)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-B", help="Questions per step."),
    chunk_size: Optional[int] = typer.Option(None, "--chunk-size", help="Document tokens per chunk."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Token budget per agent step."),
    method: Optional[str] = typer.Option(None, "--method", help="rememr1 | memagent | rule-callback."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Advantage mix: alpha * outcome + (1 - alpha) * state."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate."),
    save_every: Optional[int] = typer.Option(None, "--save-every", help="Checkpoint every N steps (0: only at the end)."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Validate on --dev every N steps (0: never)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampling and initialisation seed."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Reference model dtype: auto | float32 | bfloat16 (the policy's master weights are always float32)."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bfloat16 autocast for the policy's forward passes (default: where the device has fast bf16 kernels)."),
    lora: Optional[bool] = typer.Option(None, "--lora/--no-lora", help="Train a LoRA adapter (peft) on the frozen base instead of every weight; from an adapter directory (an sft checkpoint), continue that adapter. Rank: --set model.lora_rank=N."),
    rollout_engine: Optional[str] = typer.Option(None, "--rollout-engine", help="hf | llamacpp: what samples the rollouts. llamacpp (LoRA runs) exports the adapter to GGUF every step and samples on llama.cpp, about 2x faster on a CPU; base GGUF: --set rollout.engine_model=PATH (default: the built-in model's)."),
    compat: Optional[str] = typer.Option(None, "--compat", help="none | official: train as the official ReMemR1 code does (its memory, history, retrieval, recall parsing, rewards and advantages; SPEC §9). Single switches: --set agent.compat.NAME=false, --set reward.NAME=false."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Any config key: --set loss.kl_beta=0.0 (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", help="No per-step lines on stderr."),
    engine: str = typer.Option("rememr1", "--engine", help="rememr1 | verl: this trainer, or verl's V1 trainer on GPUs (python -m verl.trainer.main_ppo with the same config; cluster keys: --set verl.nnodes=2 ...; docs/scale-out.md)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --engine verl: print the verl command instead of running it."),
) -> None:
    """Train the agent with RL (multi-level rewards, GRPO-style advantages, PPO loss)."""
    from .config import load_config

    values = dict(locals())
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    if dry_run and engine != "verl":
        raise InputError("--dry-run prints the verl command: add --engine verl")
    overrides: dict[str, Any] = {}
    for option, key in OPTION_KEYS.items():
        value = values[option]
        if value is None or (option == "data" and not value):
            continue
        overrides[key] = value
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

    from .trainer import Trainer

    trainer = Trainer(cfg, quiet=quiet)
    trainer.train()
    typer.echo(str(trainer.out))


def sft(
    traces: list[str] = typer.Option(..., "--traces", help="Oracle trace files or globs (traces_*.jsonl from `rememr1 data revhop --traces`). Repeatable."),
    out: str = typer.Option(..., "--out", "-o", help="Run directory (checkpoints, metrics.jsonl, tb/); rerunning resumes."),
    model: Optional[str] = typer.Option(None, "--model", help="HF model directory, .gguf or adapter directory to start from (default: the built-in SmolLM2-135M-Instruct)."),
    lora: bool = typer.Option(True, "--lora/--full", help="Train a LoRA adapter (default) or every weight."),
    rank: int = typer.Option(16, "--rank", help="LoRA rank."),
    lora_alpha: int = typer.Option(32, "--lora-alpha", help="LoRA alpha (scale = alpha / rank)."),
    epochs: int = typer.Option(1, "--epochs", help="Passes over the traces."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many updates."),
    batch_size: int = typer.Option(16, "--batch-size", "-B", help="Agent steps per update."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default 2e-4 for LoRA, 2e-5 full)."),
    warmup_steps: int = typer.Option(10, "--warmup-steps", help="Linear warm-up updates."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens-per-micro-batch", help="Padded tokens per micro-batch (default: what fits, at most 1K on CPU)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Skip examples longer than this many tokens (default: the model's window)."),
    save_every: int = typer.Option(50, "--save-every", help="Checkpoint every N updates (0: only at the end)."),
    seed: int = typer.Option(0, "--seed", help="Example order and initialisation seed."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bfloat16 autocast (default: where fast)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Supervised warm-start on oracle traces (LoRA or full), before RL."""
    from .optim import OptimConfig
    from .policy import ModelConfig
    from .sft import SFTConfig, SFTTrainer

    cfg = SFTConfig(
        traces=list(traces), out=out, model=ModelConfig(path=model, device=device), lora=lora,
        lora_rank=rank, lora_alpha=lora_alpha, epochs=epochs, max_steps=max_steps,
        batch_size=batch_size, max_length=max_length, seed=seed, save_every=save_every,
        optim=OptimConfig(lr=lr or (2e-4 if lora else 2e-5), warmup_steps=warmup_steps, weight_decay=0.0,
                          max_tokens_per_micro_batch=max_tokens, bf16=bf16),
    )
    typer.echo(str(SFTTrainer(cfg, quiet=quiet).train()))


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command("train")(train)
app.command("sft")(sft)


def main() -> None:
    """`python -m rememr1.rl.cli train|sft`: the training commands alone, errors as one line."""
    import sys

    from ..errors import RememrError

    try:
        app()
    except RememrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
