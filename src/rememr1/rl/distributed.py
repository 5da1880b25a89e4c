"""Data parallelism on torch.distributed: which rank does what, and the few collectives the
trainer needs.

    torchrun --nproc-per-node 4 -m rememr1 train --config my.yaml     # 4 processes, one step each
    accelerate launch -m rememr1 train --config my.yaml               # the same, via accelerate

A step's questions are dealt out round-robin (rank r takes questions r, r + N, ...); each
rank runs the rollouts of its questions, computes their rewards and advantages (a
question's G rollouts stay on one rank, so group statistics are local), and accumulates
gradients over its share of each mini-batch with the loss normalised by the *global*
token (or sequence) count. Gradients are then summed across ranks, so every rank takes the
same optimizer step, and the update equals the single-process update on the same data up
to float summation order. Rank 0 alone writes metrics, validation results and checkpoints;
a checkpoint holds full (unsharded) weights and optimizer state keyed by parameter name,
so a run resumes under any world size and either strategy.

Two strategies (`distributed.strategy`):
* `replicate` (default, DDP-style): every rank holds the whole policy, reference and
  optimizer; gradients are summed with one all-reduce of a flat buffer per update (DDP
  without its bucketing overlap with backward).
* `fsdp`: the policy and reference are sharded with FSDP2 (`fully_shard`, one unit per
  decoder layer): weights, gradients and optimizer state take 1/N of the memory each, so
  a model whose training state does not fit one device can train. Rollouts need whole
  weights: every rank keeps an unsharded copy of the policy for generation, refreshed
  from the shards after each update (as verl syncs its inference engine). Sharded forward
  passes are collective, so every rank runs the same number of micro-batches (ranks with
  fewer run empty ones).

Without torchrun's environment (`WORLD_SIZE` unset or 1) everything here is a no-op.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any


from ..errors import require_choice

if TYPE_CHECKING:  # annotations only; torch is imported where it is used
    import torch

# Collective timeout: rank 0 validates and saves while the others wait at a barrier.
TIMEOUT = datetime.timedelta(hours=4)
STRATEGIES = ("replicate", "fsdp")


@dataclass(kw_only=True)
class DistributedConfig:
    """How ranks share the model (module docstring); ignored in a single process."""

    strategy: str = "replicate"

    def __post_init__(self) -> None:
        require_choice(self.strategy, STRATEGIES, "strategy")


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This rank's share of a list: items rank, rank + N, ..."""
        return items[self.rank :: self.world_size]

    def device(self, requested: str) -> str:
        """The device of this rank: `cuda` becomes `cuda:<local rank>` under torchrun."""
        import torch
        if self.enabled and requested in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return requested

    # -- collectives (no-ops in a single process) -----------------------------------------

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of a list of floats over the ranks."""
        import torch
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        torch.distributed.all_reduce(t)
        return t.cpu().tolist()

    def max(self, value: float) -> float:
        import torch
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return float(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (picklable objects)."""
        import torch
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def sum_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Sum the gradients of `params` over the ranks, in place (missing grads count 0)."""
        import torch
        if not self.enabled:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        torch.distributed.all_reduce(flat)
        at = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[at : at + n].view_as(p.grad))
            at += n

    def barrier(self) -> None:
        import torch
        if self.enabled:
            torch.distributed.barrier()

    def _comm_device(self) -> torch.device:
        import torch
        backend = torch.distributed.get_backend()
        return torch.device(f"cuda:{self.local_rank}") if backend == "nccl" else torch.device("cpu")

    def close(self) -> None:
        import torch
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _decoder_layers(model) -> list[torch.nn.Module]:
    from .sequences import _decoder

    layers = getattr(_decoder(model), "layers", None)
    if layers is None:
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__} to shard")
    return list(layers)


def shard_model(model) -> None:
    """FSDP2 in place: one unit per decoder layer plus the root (a causal LM, or a module
    holding one as `.lm`). FSDP averages gradients over the ranks; the trainer, whose loss
    is normalised by global counts, multiplies its loss by the world size to get the sum
    (a gradient divide factor of 1 would need a reduction op gloo lacks)."""
    from torch.distributed.fsdp import fully_shard

    for layer in _decoder_layers(getattr(model, "lm", model)):
        fully_shard(layer)
    fully_shard(model)


def full_state_dict(model, *, rank0_only: bool = False) -> dict[str, torch.Tensor]:
    """The whole model's weights by name (gathered from the shards), on every rank or only
    on rank 0 (CPU)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                 cpu_offload=rank0_only))


def optimizer_state(model, optimizer) -> dict[str, Any]:
    """The optimizer's state keyed by parameter name, unsharded, on CPU (rank 0 when sharded)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model, optimizer, state: dict[str, Any], *, sharded: bool) -> None:
    """Load what `optimizer_state` saved (from any world size or strategy)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if not any(isinstance(k, str) for k in state.get("state", {})):  # a version-1 checkpoint
        optimizer.load_state_dict(state)
        return
    options = (StateDictOptions(full_state_dict=True, broadcast_from_rank0=True) if sharded
               else StateDictOptions(full_state_dict=False))
    set_optimizer_state_dict(model, optimizer, optim_state_dict=state, options=options)


def from_env(device: str = "auto") -> Dist:
    """Join the process group torchrun / accelerate set up (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT); a single process without them. NCCL on GPUs, gloo on CPU."""
    import torch
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    dist = Dist(rank=rank, world_size=world, local_rank=local)
    if not torch.distributed.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local)
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
    return dist


__all__ = ["Dist", "DistributedConfig", "STRATEGIES", "from_env", "full_state_dict",
           "load_optimizer_state", "optimizer_state", "shard_model"]
