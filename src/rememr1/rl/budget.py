"""How many tokens a training micro-batch may hold, and the refusal when it cannot fit.

    plan = MemoryPlan.for_model(policy, checkpointing=False)
    budget = plan.default_budget(free_bytes("cpu"), "cpu")  # optim.max_tokens_per_micro_batch: null
    plan.check(budget, free_bytes("cpu"), longest=5600)    # InputError with a suggestion

The estimate is deliberately simple: what an update adds to what is already resident (the
loaded policy and reference weights) is the optimizer state (AdamW: two float32 moments)
and the gradients, 12 bytes per trainable parameter, plus the activations the backward pass
keeps for one micro-batch, proportional to its (padded) tokens, plus a few slices of
output-projection logits. Activations per token and layer were measured on CPU for the
built-in model (about 8 hidden + 4.5 intermediate floats without gradient checkpointing;
the layer inputs plus a few recomputed layers with it) and carry a 1.25 safety factor, as
allocator fragmentation adds to what tensors need. It is an estimate, not a guarantee:
`bench/train_memory.py` measures the real peak.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from .sequences import LOGIT_CHUNK_BYTES

SAFETY = 1.25
# The default budget's ceiling. On CPU, forward + backward throughput of the built-in model
# (bf16 autocast) was 310 / 320-416 / 400-459 / 288 tokens/s at 512 / 1K / 2K / 4K tokens
# per micro-batch, while the step's peak memory grows ~1.4 MB per token: 1K keeps the
# issue-11 training command under 6 GB for 10-20% less speed than 2K (raise
# optim.max_tokens_per_micro_batch where memory allows). GPUs keep gaining up to ~16K.
MAX_DEFAULT_BUDGET = {"cpu": 1024, "cuda": 16384}
# Share of the free memory the default budget may plan for.
DEFAULT_SHARE = 0.5


def free_bytes(device: str) -> int:
    """Memory available to this process on `device` now (RAM for the CPU)."""
    import torch

    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def limit_malloc_caching() -> None:
    """Ask glibc to hand big freed blocks back to the OS (Linux only; else a no-op).

    By default glibc raises its mmap threshold after large frees, so activation tensors of
    one micro-batch end up on the heap and the next micro-batch's land elsewhere: measured
    on the built-in model, peak RSS was 20-40% above what the tensors needed. A fixed 4 MiB
    threshold keeps large tensors mmapped and returned on free.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 4 * 2**20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes an update needs beyond the resident weights: `fixed` + `per_token` x tokens."""

    fixed: int  # gradients + optimizer state + logit slices
    per_token: int  # activations kept for backward, per padded token

    @classmethod
    def for_model(cls, model, *, checkpointing: bool, trainable_params: int | None = None) -> MemoryPlan:
        cfg = model.config
        get = getattr(cfg, "get_text_config", None)
        cfg = get() if callable(get) else cfg
        hidden = int(cfg.hidden_size)
        inter = int(getattr(cfg, "intermediate_size", 4 * hidden))
        layers = int(cfg.num_hidden_layers)
        layer = (8 * hidden + 4.5 * inter) * 4  # bytes kept per token and layer (float32)
        per_token = (layers * hidden * 4 + 3 * layer) if checkpointing else layers * layer
        if trainable_params is None:
            trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        fixed = 12 * trainable_params + 4 * LOGIT_CHUNK_BYTES
        return cls(fixed=int(fixed), per_token=int(per_token * SAFETY))

    def need(self, tokens: int) -> int:
        return self.fixed + self.per_token * tokens

    def fits(self, free: int) -> int:
        """The most tokens a micro-batch may hold within `free` bytes (0: none)."""
        return max(0, (free - self.fixed) // self.per_token)

    def default_budget(self, free: int, device_type: str = "cpu") -> int:
        """The budget for `optim.max_tokens_per_micro_batch: null`: what fits in half the
        free memory, at most MAX_DEFAULT_BUDGET for the device type, at least 256."""
        cap = MAX_DEFAULT_BUDGET.get(device_type, MAX_DEFAULT_BUDGET["cuda"])
        return int(min(cap, max(256, self.fits(int(free * DEFAULT_SHARE)))))

    def check(self, budget: int, free: int, *, longest: int, checkpointing: bool) -> None:
        """Refuse, with a one-line suggestion, a budget (or a sequence longer than it) that
        cannot fit in 90% of `free` bytes."""
        tokens = max(budget, longest)
        need = self.need(tokens)
        room = int(0.9 * free)
        if need <= room:
            return
        gb = 2**30
        fit = self.fits(room)
        what = (f"a micro-batch of {tokens} tokens" if longest <= budget
                else f"the longest training sequence ({longest} tokens)")
        advice = []
        if fit >= longest:
            advice.append(f"set optim.max_tokens_per_micro_batch to {fit} or less")
        else:
            advice.append("shorten the sequences (agent.chunk_size, rollout.sampling.max_new_tokens)")
        if not checkpointing:
            advice.append("set model.gradient_checkpointing: true")
        raise InputError(
            f"training would need about {need / gb:.1f} GB more memory for {what} "
            f"(optimizer state and gradients {self.fixed / gb:.1f} GB, activations "
            f"{self.per_token * tokens / gb:.1f} GB) but {free / gb:.1f} GB is free; "
            + " or ".join(advice)
        )


def longest_sequence(chunk_size: int, max_new_tokens: int, prompt_overhead: int = 512) -> int:
    """An upper estimate of a training sequence's length before any rollout ran: the
    instructions and question, a chunk, memory and recalled memory (each at most one reply
    long) and the reply."""
    return int(prompt_overhead + chunk_size + 3 * max_new_tokens)


__all__ = ["MemoryPlan", "free_bytes", "limit_malloc_caching", "longest_sequence"]
