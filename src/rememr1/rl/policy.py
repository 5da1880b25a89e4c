"""The policy being trained and its frozen reference, loaded for training.

    policy = load_policy(ModelConfig(path=None), device="cpu")   # the built-in model
    policy.model, policy.ref, policy.tokenizer, policy.pad_id, policy.autocast

The policy's master weights are always float32 (bf16 AdamW at lr 1e-6 does not move);
`optim.bf16` autocasts its forward passes where that is faster (null decides per device:
on a GPU that supports bfloat16, and on a CPU with native bfloat16 kernels, where the
forward and backward pass measured 1.8x faster on the built-in model; see
bench/train_memory.py). Dropout is off throughout (eval mode), as usual in LLM RL.

`lora: true` trains a LoRA adapter (peft) instead of every weight: the base stays frozen,
the optimizer holds only the adapter's weights, and checkpoints are PEFT adapter
directories (`--adapter`/`--model` take them). Started from an adapter directory (e.g. a
`rememr1 sft` checkpoint or the packaged one), it continues training that adapter, so an
RL result can ship as an adapter; the reference is the starting adapter merged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any


from ..errors import require, require_choice
from ..options import option

if TYPE_CHECKING:  # annotations only; torch is imported where it is used
    import torch

DTYPES = ("auto", "float32", "bfloat16", "float16")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


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
    lora     -- train a LoRA adapter (rank `lora_rank`, scale lora_alpha / lora_rank, on the
                linear layers named in `lora_targets`) on the frozen base; from an adapter
                directory, continue that adapter. The one set of LoRA fields: `rememr1 sft`
                (`rl.sft.SFTConfig.model`) and RL read the same ones.
    """

    path: str | None = option(
        None, "HF model directory or .gguf to train, or an adapter directory to continue (default: the "
        "built-in SmolLM2-135M-Instruct).", flag="--model")
    ref_path: str | None = None
    dtype: str = option("auto", "Reference model dtype: auto | float32 | bfloat16 (the policy's master "
                        "weights are always float32).", flag="--dtype")
    device: str = option("auto", "auto | cpu | cuda | cuda:N.", flag="--device")
    gradient_checkpointing: bool = False
    lora: bool = option(
        False, "Train a LoRA adapter (peft) on the frozen base instead of every weight; from an adapter "
        "directory (an sft checkpoint), continue that adapter.", flag="--lora")
    lora_rank: int = option(16, "LoRA rank.", flag="--lora-rank")
    lora_alpha: int = option(32, "LoRA alpha (scale = alpha / rank).", flag="--lora-alpha")
    lora_targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self) -> None:
        require_choice(self.dtype, DTYPES, "dtype")
        require(self.lora_rank >= 1, "lora_rank", "must be at least 1")
        require(bool(self.lora_targets), "lora_targets", "name at least one linear layer")
        require(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device",
                f"unknown device {self.device!r}; choose auto, cpu, cuda or cuda:N")


def bf16_is_fast(device: torch.device) -> bool:
    """bfloat16 autocast pays off: a GPU with bf16 support, or a CPU with native bf16 kernels."""
    import torch
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
    the policy's forward passes (None: where `bf16_is_fast`). With `cfg.lora` the base is
    loaded and the adapter to train started (`load_lora`). RL and SFT both load here."""
    import torch
    from ..backends.hf import bound_onednn_caches, load_pretrained, pad_token_id, resolve_dtype

    bound_onednn_caches()  # before the first forward pass (see backends.hf)
    source = cfg.path
    if source is None:
        from ..backends.builtin import builtin_hf_dir

        source = str(builtin_hf_dir())
    dev = torch.device(device)
    if cfg.lora:
        model, tokenizer, name = load_lora(cfg, source, resume_from)
    else:
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


def wrap_lora(model, *, rank: int, alpha: int, base_name: str, adapter: str | Path | None = None,
              targets: tuple[str, ...] = LORA_TARGETS):
    """`model` with a trainable LoRA adapter: `adapter` (a PEFT directory) loaded for
    training, or a fresh one of `rank` on `targets` recording `base_name` as its base."""
    import warnings

    from peft import LoraConfig, PeftModel, get_peft_model

    with warnings.catch_warnings():  # transformers' deprecation notes from inside peft
        warnings.simplefilter("ignore", FutureWarning)
        if adapter is not None:
            return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
        lcfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets),
                          task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, lcfg)
    peft_model.peft_config["default"].base_model_name_or_path = base_name
    return peft_model


def load_lora(cfg: ModelConfig, source: str, resume_from: Path | None):
    """(peft model, tokenizer, name) for a LoRA run: the plain base under the adapter being
    trained (the checkpoint's when resuming, else the start adapter's when `source` is an
    adapter directory, else a fresh one of `cfg`'s rank, alpha and targets)."""
    import torch
    from ..backends.adapters import base_name_for, lora_start
    from ..backends.builtin import builtin_hf_dir
    from ..backends.hf import load_pretrained

    base, start = lora_start(source)
    base = base or str(builtin_hf_dir())
    model, tokenizer, name = load_pretrained(base, torch.float32)
    model = wrap_lora(model, rank=cfg.lora_rank, alpha=cfg.lora_alpha, base_name=base_name_for(base),
                      adapter=resume_from or start, targets=tuple(cfg.lora_targets))
    return model, tokenizer, f"{name}+lora"


__all__ = ["LORA_TARGETS", "ModelConfig", "Policy", "bf16_is_fast", "load_lora", "load_policy", "wrap_lora"]
