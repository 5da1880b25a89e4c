"""hf backend pieces that need torch but no model: option checks, path errors, the top-p
filter, per-row seeded sampling, and how a generated row is cut into a completion."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from rememr1.backends import hf  # noqa: E402
from rememr1.errors import BackendError, InputError  # noqa: E402


def test_option_validation():
    with pytest.raises(InputError, match="dtype"):
        hf.resolve_dtype("int4", "cpu")
    with pytest.raises(InputError, match="device"):
        hf.resolve_device("tpu")
    assert hf.resolve_dtype("auto", "cpu") == torch.float32
    assert hf.resolve_dtype("bfloat16", "cpu") == torch.bfloat16


def test_model_path_errors(tmp_path):
    with pytest.raises(BackendError, match="model not found"):
        hf.HFBackend(str(tmp_path / "missing"), device="cpu")
    with pytest.raises(BackendError, match="no config.json"):
        hf.HFBackend(str(tmp_path), device="cpu")
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"0")
    with pytest.raises(BackendError, match=".gguf"):
        hf.HFBackend(str(weights), device="cpu")


def test_top_p_filter_hand_case():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    kept = lambda p: torch.isfinite(hf.top_p_filter(logits, p))[0].tolist()  # noqa: E731
    assert kept(0.7) == [True, True, False, False]  # 0.5 < 0.7, 0.8 >= 0.7: two tokens
    assert kept(0.5) == [True, False, False, False]  # the first token alone reaches 0.5
    assert kept(0.96) == [True, True, True, True]
    assert kept(0.01) == [True, False, False, False]  # never empty


def _draws(sampler, scores, steps):
    return [sampler(None, scores).argmax(dim=-1).tolist() for _ in range(steps)]


def test_seeded_sampler_rows_are_independent_of_the_batch():
    torch.manual_seed(0)
    scores = torch.randn(3, 50)
    batch = hf.SeededSampler([11, 22, 33], temperature=1.0, top_p=1.0)
    alone = hf.SeededSampler([22], temperature=1.0, top_p=1.0)
    together = _draws(batch, scores, 20)
    single = _draws(alone, scores[1:2], 20)
    assert [row[1] for row in together] == [row[0] for row in single]
    # the forced logits allow exactly one token per row
    out = hf.SeededSampler([1, 2, 3], temperature=1.0, top_p=1.0)(None, scores)
    assert torch.isfinite(out).sum(dim=-1).tolist() == [1, 1, 1]
    # different seeds on identical rows give different draws
    twin = hf.SeededSampler([1, 2], temperature=1.0, top_p=1.0)
    draws = _draws(twin, scores[:1].repeat(2, 1), 20)
    assert [d[0] for d in draws] != [d[1] for d in draws]


def test_seeded_sampler_small_top_p_is_argmax():
    scores = torch.tensor([[0.0, 3.0, 1.0, 2.9]])
    sampler = hf.SeededSampler([5], temperature=1.0, top_p=0.01)
    assert {d[0] for d in _draws(sampler, scores, 10)} == {1}


class _LetterTokenizer:
    """id i -> letter chr(96 + i); id 0 is the EOS special token."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(96 + i) for i in ids if not (skip_special_tokens and i == 0))


@pytest.fixture
def cutter():
    backend = hf.HFBackend.__new__(hf.HFBackend)
    backend._eos_ids = {0}
    backend.tokenizer_hf = _LetterTokenizer()
    return backend


def test_cut_completion(cutter):
    # EOS ends the reply and is kept in the ids (the policy must learn to stop)
    assert cutter._cut_completion([1, 2, 3, 0, 0, 0], ()) == ([1, 2, 3, 0], "stop")
    assert cutter._cut_completion([1, 2, 3], ()) == ([1, 2, 3], "length")
    # a stop string ends the ids at the token that completes it
    assert cutter._cut_completion([1, 2, 3, 4, 5], ("bc",)) == ([1, 2, 3], "stop")
    assert cutter._cut_completion([1, 2, 3, 4], ("zz",)) == ([1, 2, 3, 4], "length")


# A process that runs bfloat16 linear layers on 300 new sequence lengths, then prints how
# much its resident memory grew (GB). oneDNN keys its caches by shape.
_SHAPES_SCRIPT = """
import os, random, psutil, torch
from rememr1.backends.hf import bound_onednn_caches
bound_onednn_caches()
lin = torch.nn.Linear(64, 64)
def run(n):
    for _ in range(n):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            lin(torch.randn(random.randint(1, 6), random.randint(100, 900), 64))
random.seed(0)
run(20)
before = psutil.Process().memory_info().rss
run(300)
print((psutil.Process().memory_info().rss - before) / 2**30)
"""


def _growth_gb(env_caches: str | None) -> float:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in hf.ONEDNN_CACHE_VARS}
    if env_caches is not None:
        env.update(dict.fromkeys(hf.ONEDNN_CACHE_VARS, env_caches))
    out = subprocess.run([sys.executable, "-c", _SHAPES_SCRIPT], env=env, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def test_bound_onednn_caches_keeps_a_users_setting(monkeypatch):
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "7")
    hf.bound_onednn_caches()
    import os

    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(hf.ONEDNN_CACHE_ENTRIES)
    assert os.environ["LRU_CACHE_CAPACITY"] == "7"


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no oneDNN bfloat16 kernels")
def test_bounded_onednn_caches_stop_memory_growing_with_new_shapes():
    # torch's defaults (1024 entries) let memory grow with every new length (about 0.2 GB
    # over 300 lengths here); the bound keeps it nearly flat.
    unbounded = _growth_gb("1024")
    bounded = _growth_gb(None)
    assert unbounded > 0.05
    assert bounded < unbounded / 4
