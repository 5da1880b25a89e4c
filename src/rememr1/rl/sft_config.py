"""What `rememr1 sft` trains on and how: `SFTConfig`, apart from the trainer (`rl.sft`)
so that the command line can read its options without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import require
from ..options import option
from .optim import OptimConfig
from .policy import ModelConfig


@dataclass(kw_only=True)
class SFTConfig:
    """What `rememr1 sft` trains on and how (see the module docstring). The model and its
    LoRA settings (`model.lora`, `lora_rank`, `lora_alpha`, `lora_targets`) are the same
    `ModelConfig` RL reads; `rememr1 sft` trains LoRA unless told `--full`."""

    traces: list[str]
    out: str
    model: ModelConfig = field(default_factory=lambda: ModelConfig(lora=True))
    epochs: int = option(1, "Passes over the traces.", flag="--epochs")
    max_steps: int | None = option(None, "Stop after this many updates.", flag="--max-steps")
    batch_size: int = option(16, "Agent steps per update.", flag="--batch-size", short="-B")
    max_length: int | None = option(
        None, "Skip examples longer than this many tokens (default: the model's window).", flag="--max-length")
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-4, warmup_steps=10,
                                                                     weight_decay=0.0))
    seed: int = option(0, "Example order and initialisation seed.", flag="--seed")
    save_every: int = option(50, "Checkpoint every N updates (0: only at the end).", flag="--save-every")
    keep_last: int | None = 2

    def __post_init__(self) -> None:
        require(bool(self.traces), "traces", "give at least one trace file")
        require(self.epochs >= 1, "epochs", "must be at least 1")
        require(self.max_steps is None or self.max_steps >= 1, "max_steps", "must be at least 1")
        require(self.batch_size >= 1, "batch_size", "must be at least 1")
        require(self.save_every >= 0, "save_every", "must be >= 0 (0: only at the end)")


__all__ = ["SFTConfig"]
