"""Supervised warm-start on oracle traces (SPEC §11): LoRA or full fine-tuning, loss on the
reply tokens only, so that RL starts from a model that already follows the protocol.

    rememr1 data revhop --out data/warm --lengths 2k --hops 2,3 --order reverse,forward -n 100 --traces
    rememr1 sft --traces 'data/warm/traces_*.jsonl' --out runs/sft          # LoRA on the built-in model
    rememr1 train --model runs/sft/checkpoint-120 --data 'data/warm/train_*.parquet' --out runs/rl

Each trace line (`data.oracle`) is one agent step: its prompt is put through the model's
chat template exactly as the hf backend does at inference (`HFBackend.prompt_ids`), the
reply is the completion, followed by the end-of-turn token so the model learns to stop.
Steps are shuffled per epoch (seeded), `batch_size` of them make one update, packed into
micro-batches by the same token budget as RL (`rl.sequences`, `rl.budget`), and the loss
is the mean negative log-likelihood per reply token of the update.

Checkpoints `OUT/checkpoint-N` are what `--model` takes everywhere (ask, eval, train): a
LoRA run writes a PEFT adapter directory (adapter_config.json + adapter_model.safetensors,
its base named in the config; `backends.adapters` merges it on load), a full run a plain
HF model directory; both hold `trainer_state.pt`. Rerunning the same command resumes from
the newest checkpoint and continues with the same order of examples. Metrics go to
`OUT/metrics.jsonl` (one line per update) and TensorBoard.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from . import checkpoint as ckpt
from .budget import MemoryPlan, free_bytes, limit_malloc_caching
from .interrupts import Interrupts
from .logs import RunLog
from .optim import make_optimizer
from .policy import load_policy
from .sequences import TrainSequence, completion_logprobs, pack_micro_batches
from .sft_config import SFTConfig


def trace_files(patterns: Sequence[str]) -> list[Path]:
    """Trace files named by paths or globs (each pattern must match something)."""
    from .data import expand_files

    return [Path(p) for p in expand_files(list(patterns), "--traces")]


def encode_examples(rows: Sequence[dict[str, Any]], tokenizer, *, max_length: int) -> tuple[list[TrainSequence], int]:
    """Trace rows as training sequences: prompt ids through the chat template (as the hf
    backend builds them), completion = reply ids + end of turn. Returns (sequences,
    number skipped for exceeding `max_length`)."""
    from ..backends.hf import chat_prompt_ids

    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputError("the model's tokenizer has no end-of-turn token to end replies with")
    seqs, skipped = [], 0
    for i, row in enumerate(rows):
        prompt = chat_prompt_ids(tokenizer, row["messages"])
        reply = tokenizer(row["reply"], add_special_tokens=False)["input_ids"] + [eos]
        if len(prompt) + len(reply) > max_length:
            skipped += 1
            continue
        seqs.append(TrainSequence(prompt_ids=tuple(prompt), completion_ids=tuple(reply), advantage=1.0,
                                  question=i))
    return seqs, skipped


class SFTTrainer:
    """One supervised warm-start run (see the module docstring)."""

    def __init__(self, cfg: SFTConfig, *, quiet: bool = False) -> None:
        from ..backends.hf import resolve_device
        from ..data.oracle import read_traces

        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        ckpt.clean_partial(self.out)
        limit_malloc_caching()
        rows = read_traces(trace_files(cfg.traces))
        # A final reply the oracle could not reach from what the reader saw (marked
        # complete=false) would teach guessing; it is left out.
        self.unreachable = sum(1 for r in rows if r.get("complete") is False)
        rows = [r for r in rows if r.get("complete") is not False]
        resume = ckpt.latest_checkpoint(self.out)
        device = resolve_device(cfg.model.device)
        torch.manual_seed(cfg.seed)
        # The one loader of RL and SFT (`rl.policy.load_policy`): a LoRA run resumes from the
        # adapter over the original base, a full run from the checkpoint's weights; a LoRA
        # run whose model is an adapter continues training that adapter (its rank and
        # targets) over the adapter's base, so one adapter comes out, which both backends
        # apply alone.
        self.policy = load_policy(cfg.model, device=device, bf16=cfg.optim.bf16, with_reference=False,
                                  resume_from=resume)
        model = self.model = self.policy.model
        window = int(getattr(model.config, "max_position_embeddings", 0) or 8192)
        self.examples, skipped = encode_examples(rows, self.policy.tokenizer,
                                                 max_length=cfg.max_length or window)
        if not self.examples:
            raise InputError(f"every trace example is longer than {cfg.max_length or window} tokens")
        self.skipped = skipped
        self.steps_per_epoch = math.ceil(len(self.examples) / cfg.batch_size)
        total = self.steps_per_epoch * cfg.epochs
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total
        self.optimizer, self.scheduler = make_optimizer(model.parameters(), cfg.optim)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        plan = MemoryPlan.for_model(model, checkpointing=cfg.model.gradient_checkpointing,
                                    trainable_params=trainable)
        free = free_bytes(str(self.policy.device))
        self.token_budget = cfg.optim.max_tokens_per_micro_batch or plan.default_budget(
            free, self.policy.device.type)
        plan.check(self.token_budget, free, longest=max(s.length for s in self.examples),
                   checkpointing=cfg.model.gradient_checkpointing)
        self.step = 0
        if resume is not None:
            state = ckpt.load_state(resume)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            ckpt.set_rng_state(state["rng"])
            self.step = int(state["step"])
        self.trainable = trainable
        self.log = RunLog(self.out, total_steps=self.total_steps, log_every=1, quiet=quiet)
        (self.out / "sft_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, default=str))

    def batch(self, step: int) -> list[TrainSequence]:
        """The examples of update `step` (0-based): a seeded shuffle per epoch, so a resumed
        run sees the same order as an uninterrupted one."""
        epoch, at = divmod(step, self.steps_per_epoch)
        order = list(range(len(self.examples)))
        random.Random(f"sft:{self.cfg.seed}:{epoch}").shuffle(order)
        size = self.cfg.batch_size
        return [self.examples[i] for i in order[at * size : (at + 1) * size]]

    def update(self, seqs: Sequence[TrainSequence]) -> dict[str, Any]:
        """One optimizer update on `seqs`: mean NLL per reply token, accumulated over
        micro-batches; returns its metrics."""
        tokens = sum(len(s.completion_ids) for s in seqs)
        self.model.train(False)  # dropout stays off (LoRA dropout is 0)
        self.optimizer.zero_grad(set_to_none=True)
        nll = 0.0
        micros = pack_micro_batches(seqs, self.token_budget)
        for micro in micros:
            logp, mask, _ = completion_logprobs(self.model, micro, pad_id=self.policy.pad_id,
                                                autocast=self.policy.autocast)
            loss = -(logp * mask).sum() / tokens
            loss.backward()
            nll += float(loss.detach())
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": nll, "tokens": tokens, "examples": len(seqs), "micro_batches": len(micros),
                "grad_norm": grad_norm}

    def save(self) -> Path:
        state = {"step": self.step, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": ckpt.rng_state(),
                 "lora": self.cfg.model.lora}
        # LoRA leaves the embeddings alone: say so, or peft looks the base up on the hub.
        options = {"save_embedding_layers": False} if self.cfg.model.lora else {}
        with warnings.catch_warnings():  # transformers' deprecation notes from inside peft
            warnings.simplefilter("ignore", FutureWarning)
            path = ckpt.save_checkpoint(self.out, self.step, model=self.model,
                                        tokenizer=self.policy.tokenizer, state=state, **options)
        ckpt.prune_checkpoints(self.out, self.cfg.keep_last)
        return path

    def train(self) -> Path:
        """Run to `total_steps` (resuming where a checkpoint left off); returns the last
        checkpoint."""
        from rich.console import Console

        from ..progress import StepProgress

        self.log.open(resume_step=self.step)
        kind = f"LoRA r={self.cfg.model.lora_rank}" if self.cfg.model.lora else "full"
        self.log.say(f"sft: {len(self.examples)} steps of oracle traces ({self.skipped} too long and "
                     f"{self.unreachable} unreachable final replies left out), "
                     f"{kind}, {self.trainable / 1e6:.2f}M trainable parameters, {self.total_steps} updates "
                     f"of {self.cfg.batch_size}, micro-batch budget {self.token_budget} tokens"
                     + (f", resuming after update {self.step}" if self.step else ""))
        last = ckpt.latest_checkpoint(self.out)
        try:
            bar = StepProgress(self.total_steps, console=Console(stderr=True), disable=self.log.quiet,
                               label="sft")
            with Interrupts(self.log.say) as intr, bar:
                bar.advance(steps=self.step)
                while self.step < self.total_steps:
                    t0 = time.perf_counter()
                    intr.phase = "update"
                    m = self.update(self.batch(self.step))
                    intr.phase = "idle"
                    self.step += 1
                    m.update(step=self.step, epoch=(self.step - 1) // self.steps_per_epoch,
                             lr=self.scheduler.get_last_lr()[0], seconds_step=time.perf_counter() - t0)
                    m["train_tokens_per_s"] = m["tokens"] / m["seconds_step"]
                    self.log.sft(m)
                    bar.advance(info=f"loss {m['loss']:.3f}")
                    every = self.cfg.save_every
                    if intr.requested or (every and self.step % every == 0) or self.step == self.total_steps:
                        last = self.save()
                    if intr.requested:
                        raise KeyboardInterrupt
        finally:
            self.log.close()
        return last


__all__ = ["SFTConfig", "SFTTrainer", "encode_examples", "trace_files"]
