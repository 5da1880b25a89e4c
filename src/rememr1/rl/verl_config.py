"""The `verl:` section of a training config: the cluster side of `rememr1 train --engine verl`.

A value object of the config layer (`rl.config` embeds it beside the other sections), so
the config loader never imports the verl integration; `integrations.verl.launcher` reads
it to write verl's command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import require, require_choice

ROLLOUT_ENGINES = ("vllm", "sglang")


@dataclass(kw_only=True)
class VerlConfig:
    """The cluster side of a verl run (the `verl:` section of a training config).

    nnodes, n_gpus_per_node -- verl's `trainer.nnodes`, `trainer.n_gpus_per_node` (Ray cluster).
    rollout_engine          -- "vllm" (default) or "sglang".
    rollout_tp              -- tensor-parallel size of each rollout server.
    gpu_memory_utilization  -- share of GPU memory the rollout engine may take.
    max_tokens_per_gpu      -- dynamic-batch token budget per GPU (None: the training
                               config's max_tokens_per_micro_batch, at least the longest step).
    param_offload, optimizer_offload -- FSDP CPU offload of the actor.
    logger                  -- verl's tracking backends.
    project                 -- verl's project name (the experiment is the run directory's name).
    overrides               -- extra Hydra overrides, appended last (they win).
    """

    nnodes: int = 1
    n_gpus_per_node: int = 8
    rollout_engine: str = "vllm"
    rollout_tp: int = 1
    gpu_memory_utilization: float = 0.6
    max_tokens_per_gpu: int | None = None
    param_offload: bool = False
    optimizer_offload: bool = False
    logger: list[str] = field(default_factory=lambda: ["console", "tensorboard"])
    project: str = "rememr1"
    overrides: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        require(self.nnodes >= 1, "nnodes", "must be at least 1")
        require(self.n_gpus_per_node >= 1, "n_gpus_per_node", "must be at least 1")
        require(self.rollout_tp >= 1, "rollout_tp", "must be at least 1")
        require(self.n_gpus_per_node % self.rollout_tp == 0 or self.rollout_tp % self.n_gpus_per_node == 0,
                "rollout_tp", f"must divide n_gpus_per_node ({self.n_gpus_per_node}) or be a multiple of it")
        require(0 < self.gpu_memory_utilization <= 1, "gpu_memory_utilization", "must be in (0, 1]")
        require(self.max_tokens_per_gpu is None or self.max_tokens_per_gpu >= 16, "max_tokens_per_gpu",
                "must be at least 16 (or null)")
        require_choice(self.rollout_engine, ROLLOUT_ENGINES, "rollout_engine")
        for item in self.overrides:
            require("=" in item, "overrides", f"each must be KEY=VALUE, got {item!r}")


__all__ = ["ROLLOUT_ENGINES", "VerlConfig"]
