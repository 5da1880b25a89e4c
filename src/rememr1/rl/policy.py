"""The policy being trained and its frozen reference, loaded for training.

    policy = load_policy(ModelConfig(path=None), device="cpu")   # the built-in model
    policy.model, policy.ref, policy.tokenizer, policy.pad_id, policy.autocast

The policy's master weights are always float32 (bf16 AdamW at lr 1e-6 does not move);
`optim.bf16` autocasts its forward passes where that is faster (null decides per device:
on a GPU that supports bfloat16, and on a CPU with native bfloat16 kernels, where the
forward and backward pass measured 1.8x faster on the built-in model; see
bench/train_memory.py). Dropout is off throughout (eval mode), as usual in LLM RL.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import require, require_choice

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(kw_only=True)
class ModelConfig:
    """The policy and the frozen reference model.

    path     -- HF model directory (or .gguf); None = the built-in SmolLM2-135M-Instruct,
                converted once to an HF directory.
    ref_path -- the KL reference; None = a frozen copy of the initial policy.
    dtype    -- dtype the reference model's weights are held in ("auto": bfloat16 on a GPU
                that supports it, else float32).
    gradient_checkpointing -- recompute each layer in the backward pass instead of keeping
                its activations: about 5x less activation memory per token, more compute.
    """

    path: str | None = None
    ref_path: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        require_choice(self.dtype, DTYPES, "dtype")
        require(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device",
                f"unknown device {self.device!r}; choose auto, cpu, cuda or cuda:N")


def bf16_is_fast(device: torch.device) -> bool:
    """bfloat16 autocast pays off: a GPU with bf16 support, or a CPU with native bf16 kernels."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass
class Policy:
    model: Any
    tokenizer: Any
    name: str
    source: str  # what the run started from (the reference is a copy of it)
    ref: Any | None
    pad_id: int
    device: torch.device
    autocast: bool


def load_policy(cfg: ModelConfig, *, device: str, bf16: bool | None = None,
                resume_from: Path | None = None, with_reference: bool = True) -> Policy:
    """The policy (float32, eval mode, on `device`), from `resume_from` if given, else from
    `cfg.path`; the reference from `cfg.ref_path` or the initial policy. `bf16`: autocast
    the policy's forward passes (None: where `bf16_is_fast`)."""
    from ..backends.hf import load_pretrained, pad_token_id, resolve_dtype

    source = cfg.path
    if source is None:
        from ..backends.builtin import builtin_hf_dir

        source = str(builtin_hf_dir())
    dev = torch.device(device)
    model, tokenizer, name = load_pretrained(str(resume_from or source), torch.float32)
    model.to(dev)
    model.eval()
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    ref = None
    if with_reference:
        ref, _, _ = load_pretrained(cfg.ref_path or source, resolve_dtype(cfg.dtype, dev.type))
        ref.to(dev)
        ref.eval()
        ref.requires_grad_(False)
    autocast = bf16_is_fast(dev) if bf16 is None else bf16
    return Policy(model=model, tokenizer=tokenizer, name=name, source=source, ref=ref,
                  pad_id=pad_token_id(model, tokenizer), device=dev, autocast=autocast)


__all__ = ["ModelConfig", "Policy", "bf16_is_fast", "load_policy"]
