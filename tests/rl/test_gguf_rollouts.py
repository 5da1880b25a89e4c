"""`rollout.engine: llamacpp`: LoRA runs sample on llama.cpp with the adapter exported each
step. The refusals run on the tiny policy (seconds); two real steps on the built-in model
check that the second step samples with the adapter the first step's update produced."""

from __future__ import annotations

import pytest
import torch

from rememr1.errors import InputError
from rememr1.rl.config import load_config
from rememr1.rl.trainer import Trainer

from .test_trainer import _start_adapter, make_tiny_policy, read_metrics, tiny_overrides, write_parquet


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"model": make_tiny_policy(root / "model"), "data": write_parquet(root / "train.parquet")}


def test_unknown_engine_is_refused():
    with pytest.raises(InputError, match="engine"):
        load_config(None, {"rollout.engine": "vllm"})


def test_llamacpp_engine_needs_a_lora_run(tiny, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny, tmp_path / "r", **{"rollout.engine": "llamacpp"}))
    with pytest.raises(InputError, match="model.lora"):
        Trainer(cfg, quiet=True)


def test_llamacpp_engine_needs_the_gguf_of_another_base(tiny, tmp_path):
    start = _start_adapter(tiny["model"], tmp_path / "start")
    lora = {"model.path": str(start), "model.lora": True, "rollout.engine": "llamacpp"}
    with pytest.raises(InputError, match="engine_model"):
        Trainer(load_config(None, tiny_overrides(tiny, tmp_path / "a", **lora)), quiet=True)
    missing = {**lora, "rollout.engine_model": str(tmp_path / "nope.gguf")}
    with pytest.raises(InputError, match="no such GGUF"):
        Trainer(load_config(None, tiny_overrides(tiny, tmp_path / "b", **missing)), quiet=True)


@pytest.mark.slow
def test_each_step_samples_with_the_adapter_of_the_last_update(tmp_path):
    import gguf
    from safetensors.torch import load_file

    from rememr1.backends.adapters import builtin_adapter_dir

    start = builtin_adapter_dir()
    data = write_parquet(tmp_path / "d.parquet", n=2, facts=4)  # 2 chunks of 48 tokens
    out = tmp_path / "run"
    cfg = load_config(None, {
        "data.train": [str(data)], "out": str(out), "steps": 2, "save_every": 1,
        "model.device": "cpu", "model.lora": True, "rollout.engine": "llamacpp",
        "model.path": str(start), "rollout.group_size": 4, "rollout.batch_size": 1, "agent.chunk_size": 48,
        "rollout.sampling.max_new_tokens": 32, "optim.lr": 1e-2, "optim.warmup_steps": 0,
    })
    Trainer(cfg, quiet=True).train()
    lines = read_metrics(out)
    assert [x["step"] for x in lines] == [1, 2]
    assert all(x["steps_per_rollout"] == 3.0 and x["sequences"] > 0 for x in lines)
    assert lines[0]["grad_norm"] > 0  # the torch policy scored llama.cpp's samples
    # Step 2's rollouts ran on the GGUF export of checkpoint-1's adapter, which the first
    # update moved away from the start.
    after_one = load_file(out / "checkpoint-1" / "adapter_model.safetensors")
    key = next(k for k in after_one if "layers.0.self_attn.v_proj.lora_B" in k)
    assert not torch.equal(after_one[key], load_file(start / "adapter_model.safetensors")[key])
    reader = gguf.GGUFReader(str(out / ".rollout" / "rollout-adapter.gguf"))
    exported = {t.name: t for t in reader.tensors}["blk.0.attn_v.weight.lora_b"]
    b = torch.from_numpy(exported.data.astype("float32").reshape(after_one[key].shape))
    torch.testing.assert_close(b, after_one[key].float(), atol=1e-3, rtol=1e-2)
