"""The optimizer side of training: AdamW on float32 master weights, linear warm-up then a
constant learning rate, gradient clipping, and how an update is cut into passes.

    opt, sched = make_optimizer(model.parameters(), OptimConfig(lr=1e-6))

`mini_batch_size` questions (with all their rollouts' steps) make one optimizer update;
each update's sequences are packed into micro-batches of at most
`max_tokens_per_micro_batch` padded tokens (None: what fits in half the free memory, at
most 1K tokens on CPU and 16K on a GPU, `rl.budget`), whose gradients are accumulated. With `share_prompts` (default) sequences with the same
prompt (a question's rollouts at their first step) go into one micro-batch and that prompt
is evaluated once for all of them (`rl.sequences`; the same numbers, fewer tokens); off
under FSDP. With `skip_zero_advantage` (default), when the loss has no KL and no entropy
term, sequences whose advantage is 0 (a group whose rollouts all scored alike) are left
out of the passes: they add nothing to the gradient, and the loss's denominators still
count them, so the update is the same (tests/rl/test_learnability.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import require
from ..options import option


@dataclass(kw_only=True)
class OptimConfig:
    """AdamW, schedule, clipping and batching of the updates (see the module docstring)."""

    lr: float = option(1e-6, "Peak learning rate.", flag="--lr")
    warmup_steps: int = option(20, "Linear warm-up updates.", flag="--warmup-steps")
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    mini_batch_size: int | None = None
    max_tokens_per_micro_batch: int | None = option(
        None, "Padded tokens per micro-batch (default: what fits, at most 1K on CPU).",
        flag="--max-tokens-per-micro-batch")
    epochs: int = 1
    bf16: bool | None = option(
        None, "bfloat16 autocast for the policy's forward passes (default: where the device has fast bf16 "
        "kernels).", flag="--bf16")
    share_prompts: bool = True  # evaluate a prompt that several sequences share once
    skip_zero_advantage: bool = True  # leave advantage-0 sequences out when no KL/entropy term needs them

    def __post_init__(self) -> None:
        require(self.lr > 0, "lr", "must be > 0")
        require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        require(self.grad_clip > 0, "grad_clip", "must be > 0")
        require(self.epochs >= 1, "epochs", "must be at least 1")
        require(self.mini_batch_size is None or self.mini_batch_size >= 1, "mini_batch_size",
                "must be at least 1")
        require(self.max_tokens_per_micro_batch is None or self.max_tokens_per_micro_batch >= 16,
                "max_tokens_per_micro_batch", "must be at least 16 (or null: chosen for the machine)")


def make_optimizer(params, cfg: OptimConfig):
    """(AdamW, LambdaLR) for the trainable `params`."""
    import torch
    opt = torch.optim.AdamW(
        [p for p in params if p.requires_grad], lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, weight_decay=cfg.weight_decay,
    )
    warm = cfg.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda u: min(1.0, (u + 1) / warm) if warm > 0 else 1.0
    )
    return opt, sched


__all__ = ["OptimConfig", "make_optimizer"]
