"""A PEFT LoRA adapter as a GGUF LoRA file that llama.cpp applies at run time.

    write_gguf_lora("runs/sft/checkpoint-60", "adapter.gguf", base_gguf=builtin_gguf_path())
    Llama(model_path=base, lora_path="adapter.gguf")          # what the llamacpp backend does

Format (what llama.cpp's adapter loader reads): the base architecture, `general.type =
adapter`, `adapter.type = lora`, `adapter.lora.alpha`; per adapted weight two tensors
named after the base GGUF tensor, `blk.N.attn_q.weight.lora_a` ([r, in] as PyTorch lays
out lora_A) and `.lora_b` ([out, r]). Llama-family GGUF files store the query and key
projections with their rows permuted for llama.cpp's rotary layout, so lora_B of those two
(the rows of B A) gets the same permutation. Tensors are written as float16.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import BackendError

# PEFT module path (Llama-style HF names) -> GGUF tensor name stem.
GGUF_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_TENSOR = re.compile(
    r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)"
    r"\.lora_([AB])\.weight$"
)
ARCHITECTURES = ("llama",)


def rope_permute(rows, n_head: int):
    """The row permutation Llama GGUF files apply to q/k projections (per head, the two
    rotary halves interleaved), on a [out, ...] numpy array."""
    shape = rows.shape
    return rows.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _field(reader, key: str):
    f = reader.fields.get(key)
    if f is None:
        return None
    value = f.parts[f.data[0]]
    return bytes(value).decode() if value.dtype.kind == "u" and key.endswith("architecture") else value[0]


def write_gguf_lora(adapter_dir: str | Path, out: str | Path, *, base_gguf: str | Path) -> Path:
    """Convert the PEFT adapter in `adapter_dir` for the base model `base_gguf`; returns
    `out` (written atomically)."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    adapter_dir, out = Path(adapter_dir), Path(out)
    try:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read the adapter in {adapter_dir}: {exc}") from None
    if cfg.get("use_rslora") or cfg.get("use_dora"):
        raise BackendError("rsLoRA and DoRA adapters have no GGUF LoRA form; merge them instead")
    reader = gguf.GGUFReader(str(base_gguf))
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise BackendError(f"GGUF LoRA export supports {', '.join(ARCHITECTURES)} models, not {arch}")
    n_head = int(_field(reader, f"{arch}.attention.head_count"))
    n_kv = int(_field(reader, f"{arch}.attention.head_count_kv") or n_head)
    base_names = {t.name for t in reader.tensors}
    tmp = out.with_name(out.name + ".part")
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(cfg["lora_alpha"]))
    for name in sorted(tensors):
        m = _TENSOR.match(name)
        if m is None:
            raise BackendError(f"adapter tensor {name} has no GGUF LoRA equivalent")
        layer, module, ab = m.groups()
        stem = f"blk.{layer}.{GGUF_NAMES[module]}.weight"
        if stem not in base_names:
            raise BackendError(f"the base model has no tensor {stem} for adapter tensor {name}")
        arr = tensors[name].astype(np.float32)
        if ab == "B" and module == "self_attn.q_proj":
            arr = rope_permute(arr, n_head)
        elif ab == "B" and module == "self_attn.k_proj":
            arr = rope_permute(arr, n_kv)
        writer.add_tensor(f"{stem}.lora_{ab.lower()}", np.ascontiguousarray(arr.astype(np.float16)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out


__all__ = ["GGUF_NAMES", "rope_permute", "write_gguf_lora"]
