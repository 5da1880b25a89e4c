"""LoRA adapters: PEFT directories load merged wherever a model does, the GGUF LoRA export
gives llama.cpp the same model as the merged weights, and the built-in default applies
the packaged adapter only to the built-in model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rememr1.backends.adapters import ADAPTER_CONFIG, BUILTIN_BASE, adapter_base, resolve_adapter
from rememr1.errors import BackendError

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def random_adapter(model, out: Path, *, scale: float, base: str) -> Path:
    """A PEFT adapter with random A and B (scaled) for `model`, saved to `out`."""
    torch.manual_seed(0)
    pm = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS,
                                                     init_lora_weights=False))
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.mul_(scale)
    pm.peft_config["default"].base_model_name_or_path = base
    pm.save_pretrained(out, save_embedding_layers=False)
    return out


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rememr1.backends.builtin import builtin_hf_dir

    out = tmp_path_factory.mktemp("base")
    tok = AutoTokenizer.from_pretrained(str(builtin_hf_dir()))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    torch.manual_seed(1)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_adapter_directory_loads_as_base_plus_scaled_update(tiny_base, tmp_path):
    from rememr1.backends.hf import load_pretrained

    base, _, _ = load_pretrained(str(tiny_base), torch.float32)
    adapter = random_adapter(base, tmp_path / "ad", scale=1.0, base=str(tiny_base))
    assert adapter_base(adapter) == str(tiny_base)
    merged, _, name = load_pretrained(str(adapter), torch.float32)
    fresh, _, _ = load_pretrained(str(tiny_base), torch.float32)
    from safetensors.torch import load_file

    w = load_file(str(adapter / "adapter_model.safetensors"))
    a = w["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"]
    b = w["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"]
    expected = fresh.model.layers[1].mlp.down_proj.weight + (16 / 8) * b @ a
    assert torch.allclose(merged.model.layers[1].mlp.down_proj.weight, expected, atol=1e-5)
    assert name == "ad"
    assert all(p.requires_grad for p in merged.parameters())  # trainable, as a plain model (RL from SFT)


def test_adapter_trained_over_another_adapter_loads_with_it(tiny_base, tmp_path):
    """An adapter whose recorded base is another adapter directory brings that one along:
    loading it gives base + first update + second update (not the second alone), and
    llama.cpp, which applies one adapter, refuses it in one line."""
    from rememr1.backends.adapters import adapter_chain, adapter_root
    from rememr1.backends.hf import load_pretrained

    base, _, _ = load_pretrained(str(tiny_base), torch.float32)
    first = random_adapter(base, tmp_path / "first", scale=1.0, base=str(tiny_base))
    over_first, _, _ = load_pretrained(str(first), torch.float32)
    second = random_adapter(over_first, tmp_path / "second", scale=0.5, base=str(first))
    assert adapter_chain(second) == [first, second] and adapter_root(second) == str(tiny_base)
    both, _, _ = load_pretrained(str(second), torch.float32)
    also, _, _ = load_pretrained(str(tiny_base), torch.float32, adapter=second)
    fresh, _, _ = load_pretrained(str(tiny_base), torch.float32)
    from safetensors.torch import load_file

    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_{}.weight"
    w1, w2 = (load_file(str(d / "adapter_model.safetensors")) for d in (first, second))
    expected = fresh.model.layers[0].self_attn.q_proj.weight + 2 * (w1[key.format("B")] @ w1[key.format("A")]
                                                                   + w2[key.format("B")] @ w2[key.format("A")])
    for model in (both, also):
        assert torch.allclose(model.model.layers[0].self_attn.q_proj.weight, expected, atol=1e-5)
    with pytest.raises(BackendError, match="trained over the adapter .*first"):
        resolve_adapter(str(second), None, for_gguf=True, base_gguf=tmp_path / "unused.gguf")
    # three deep: each adapter merged once
    third = random_adapter(both, tmp_path / "third", scale=0.25, base=str(second))
    assert adapter_chain(third) == [first, second, third]
    w3 = load_file(str(third / "adapter_model.safetensors"))
    three, _, _ = load_pretrained(str(third), torch.float32)
    expected = expected + 2 * w3[key.format("B")] @ w3[key.format("A")]
    assert torch.allclose(three.model.layers[0].self_attn.q_proj.weight, expected, atol=1e-5)


def test_adapter_whose_base_is_missing_is_one_line(tmp_path):
    (tmp_path / ADAPTER_CONFIG).write_text(json.dumps({"base_model_name_or_path": "/nowhere/model"}))
    with pytest.raises(BackendError, match="base model of adapter .* is not here"):
        adapter_base(tmp_path)
    (tmp_path / ADAPTER_CONFIG).write_text(json.dumps({"base_model_name_or_path": BUILTIN_BASE}))
    assert adapter_base(tmp_path) is None  # the built-in model, no download


def test_default_adapter_is_only_for_the_builtin_model(tmp_path):
    from rememr1.backends.adapters import builtin_adapter_dir

    assert resolve_adapter(True, "some/model.gguf", for_gguf=True) is None
    assert resolve_adapter(False, None, for_gguf=False) is None
    assert resolve_adapter(True, None, for_gguf=False) == builtin_adapter_dir()
    with pytest.raises(BackendError, match="adapter not found"):
        resolve_adapter(str(tmp_path / "missing"), None, for_gguf=False)
    with pytest.raises(BackendError, match="not a PEFT adapter directory"):
        resolve_adapter(str(tmp_path), None, for_gguf=False)


def test_rope_permutation_is_the_gguf_layout():
    """The builtin HF weights (read back from the GGUF, un-permuted) permuted again are the
    GGUF's own q and k tensors: the layout lora_B of q/k must follow."""
    import gguf

    from rememr1.backends.builtin import builtin_gguf_path, builtin_hf_dir
    from rememr1.backends.gguf_lora import rope_permute
    from safetensors.numpy import load_file

    hf = load_file(str(next(builtin_hf_dir().glob("*.safetensors"))))
    reader = gguf.GGUFReader(str(builtin_gguf_path()))
    tensors = {t.name: t for t in reader.tensors}
    for name, heads in (("attn_q", 9), ("attn_k", 3)):
        t = tensors[f"blk.0.{name}.weight"]
        stored = gguf.dequantize(t.data, t.tensor_type).reshape(t.shape[::-1])
        hf_w = hf[f"model.layers.0.self_attn.{name[-1]}_proj.weight"]
        assert np.allclose(rope_permute(hf_w, heads), stored, atol=1e-6)
        assert not np.allclose(hf_w, stored, atol=1e-3)


@pytest.mark.slow
def test_llamacpp_with_gguf_lora_matches_the_merged_hf_model(tmp_path):
    """A strong random adapter: llama.cpp (base GGUF + exported LoRA) and transformers
    (weights merged) give the same next-token distributions; the base model does not."""
    from rememr1.backends.builtin import builtin_gguf_path
    from rememr1.backends.gguf_lora import write_gguf_lora
    from rememr1.backends.hf import load_pretrained
    from rememr1.backends.loading import load_llama

    model, tok, _ = load_pretrained(None, torch.float32)
    adapter = random_adapter(model, tmp_path / "ad", scale=2.0, base=BUILTIN_BASE)
    gguf_file = write_gguf_lora(adapter, tmp_path / "ad.gguf", base_gguf=builtin_gguf_path())
    ids = tok("The capital of France is Paris. The capital of Italy is")["input_ids"]
    merged, _, _ = load_pretrained(str(adapter), torch.float32)
    with torch.no_grad():
        hf_logits = merged(torch.tensor([ids])).logits[0].numpy()
        base_logits = load_pretrained(None, torch.float32)[0](torch.tensor([ids])).logits[0].numpy()

    def llama_logits(**kw):
        llm = load_llama(builtin_gguf_path(), n_ctx=128, logits_all=True, **kw)
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])

    def similarity(a, b):
        a, b = a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True)
        return float(np.mean((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)))

    with_lora = llama_logits(lora_path=str(gguf_file))
    assert similarity(with_lora, hf_logits) > 0.99  # 0.998 measured; 0.85 without the q/k permutation
    assert similarity(with_lora, base_logits) < 0.5  # the adapter matters
    assert (with_lora.argmax(-1) == hf_logits.argmax(-1)).mean() > 0.9
