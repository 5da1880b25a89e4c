"""Can the trainer learn at all? `Trainer.train()` end to end on a task a tiny model must
learn in a few dozen steps, and the same run with the advantages' sign flipped, which
must not.

The task: every document names four cities and says which one answers the question; the
reward is the outcome reward (alpha = 1: exact match of the boxed answer). The answer is
always the same city, so this checks the trainer's direction (sign, masks, which tokens
get the loss, log-prob temperature, the optimizer's parameters), not reading.

The policy: a tiny Llama with the built-in model's tokenizer whose layers start switched
off, with planted weights (below) that make it reply `\\boxed{CITY}` with the four cities
equally likely. So held-out success starts near 25% and most groups of 8 rollouts have
signal; every weight is trained. Held-out success is the trainer's own validation
(`eval.at_start`, then every `eval_every` steps) on 48 questions that are not trained on,
one sample each at the rollout temperature, with the same seeds before and after (a
paired comparison).

Measured (seed 0, 48 held-out questions): 0.12 at the start, 0.42 after 8 steps, 0.83 after
16 and 0.90 after 24; with the sign flipped 0.12 -> 0.00, and with the advantages zeroed
0.12 at every evaluation (the control that must not move). About a minute on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rememr1.rl import trainer as trainer_mod
from rememr1.rl.config import load_config
from rememr1.rl.trainer import Trainer

CITIES = ("Paris", "Rome", "London", "Boston")
GOLD = "Paris"
STEPS = 16
MARGIN = 0.25  # held-out success must rise at least this much (absolute)


def _tokenizer():
    from transformers import AutoTokenizer

    from rememr1.backends.builtin import builtin_hf_dir

    return AutoTokenizer.from_pretrained(str(builtin_hf_dir()))


def _question(i: int) -> tuple[str, str]:
    order = [CITIES[(i + k) % len(CITIES)] for k in range(len(CITIES))]
    doc = (f"Ledger {i}. The courier visited {', '.join(order[:-1])} and {order[-1]}. "
           f"The city that answers riddle {i} is {GOLD}.")
    return doc, f"Which city answers riddle {i}?"


def _write(path: Path, ids: range) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for i in ids:
        doc, q = _question(i)
        rows.append({"prompt": [{"role": "user", "content": q}], "context": doc,
                     "reward_model": {"ground_truth": [GOLD], "style": "rule"}, "data_source": "learn",
                     "extra_info": {"index": i, "question": q, "num_docs": 1}})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _bigram_policy(out: Path) -> Path:
    """A tiny Llama whose layers are switched off (zero output projections), so each next
    token depends on the current one only, with planted weights that make it reply
    `\\boxed{CITY}` and stop, the four cities equally likely after `{`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rememr1.backends.hf import chat_prompt_ids

    tok = _tokenizer()

    def one(text: str) -> int:
        (token,) = tok.encode(text, add_special_tokens=False)
        return token

    header_end = chat_prompt_ids(tok, [{"role": "user", "content": "x"}])[-1]  # the assistant header's last token
    chain = [header_end, one("\\"), one("box"), one("ed"), one("{")]
    cities = [one(c) for c in CITIES]
    close, eos = one("}"), tok.eos_token_id
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                      tie_word_embeddings=False, eos_token_id=eos, bos_token_id=tok.bos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    # After the final norm a token planted in dimension i is sqrt(16) e_i, so a weight of
    # 3.5 gives its successor a logit of 14: about 95% of the mass against 49K others.
    state = {t: i for i, t in enumerate(chain)} | {c: len(chain) for c in cities} | {close: len(chain) + 1}
    successors = {i: [chain[i + 1]] for i in range(len(chain) - 1)}
    successors |= {len(chain) - 1: cities, len(chain): [close], len(chain) + 1: [eos]}
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        for token, dim in state.items():
            model.model.embed_tokens.weight[token] = 0.0
            model.model.embed_tokens.weight[token, dim] = 1.0
        for dim, nxt in successors.items():
            model.lm_head.weight[:, dim] = 0.0
            for token in nxt:
                model.lm_head.weight[token, dim] = 3.5
    model.generation_config.eos_token_id = eos
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("learn")
    return {"model": _bigram_policy(root / "model"), "train": _write(root / "train.parquet", range(8)),
            "dev": _write(root / "dev.parquet", range(100, 148))}


def _run(task, out: Path) -> list[float]:
    """Held-out success at step 0 and every 8 steps of one training run."""
    cfg = load_config(None, {
        "model.path": str(task["model"]), "model.device": "cpu", "data.train": [str(task["train"])],
        "data.dev": str(task["dev"]), "out": str(out), "steps": STEPS, "save_every": 0,
        "eval_every": 8, "eval.at_start": True, "eval.max_items": None, "eval.sampling.temperature": 1.0,
        "eval.sampling.top_p": 1.0, "eval.sampling.max_new_tokens": 8, "rollout.group_size": 8, "rollout.batch_size": 4,
        "rollout.sampling.temperature": 1.0, "rollout.sampling.max_new_tokens": 8, "agent.chunk_size": 128,
        "advantage.alpha": 1.0, "loss.kl_beta": 0.0, "optim.lr": 1e-2, "optim.warmup_steps": 0,
        "optim.max_tokens_per_micro_batch": 8192, "seed": 0,
    })
    Trainer(cfg, quiet=True).train()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [x["eval_sub_em"] for x in lines if x["type"] == "eval"]


def test_the_trainer_raises_held_out_success_and_the_flipped_control_does_not(task, tmp_path, monkeypatch):
    curve = _run(task, tmp_path / "learn")
    assert len(curve) == 1 + STEPS // 8
    assert 0.05 <= curve[0] <= 0.6, curve  # the start leaves room both ways
    assert curve[-1] >= curve[0] + MARGIN, curve

    real = trainer_mod.group_advantages

    def flipped(*args, **kwargs):
        return [[-a for a in row] for row in real(*args, **kwargs)]

    monkeypatch.setattr(trainer_mod, "group_advantages", flipped)
    control = _run(task, tmp_path / "flipped")
    assert control[0] == curve[0]  # same start, same held-out seeds
    assert control[-1] <= control[0] + 0.05, control


def test_leaving_out_zero_advantage_sequences_gives_the_same_update(task, tmp_path):
    """Groups of two rollouts often score alike (advantage 0): the trainer leaves those
    sequences out of the passes; the update must equal the one that scores them all."""
    from safetensors.torch import load_file

    def run(out: Path, skip: bool) -> tuple[list[dict], dict]:
        cfg = load_config(None, {
            "model.path": str(task["model"]), "model.device": "cpu", "data.train": [str(task["train"])],
            "out": str(out), "steps": 2, "save_every": 2, "rollout.group_size": 2, "rollout.batch_size": 4,
            "rollout.sampling.temperature": 1.0, "rollout.sampling.max_new_tokens": 8, "agent.chunk_size": 128,
            "advantage.alpha": 1.0, "loss.kl_beta": 0.0, "optim.lr": 1e-2, "optim.warmup_steps": 0,
            "optim.max_tokens_per_micro_batch": 8192, "optim.skip_zero_advantage": skip, "seed": 0,
        })
        lines = Trainer(cfg, quiet=True).train()
        return lines, load_file(str(out / "checkpoint-2" / "model.safetensors"))

    skipping, weights = run(tmp_path / "skip", True)
    assert sum(x["sequences_skipped"] for x in skipping) > 0
    assert any(x["sequences_skipped"] < x["sequences"] for x in skipping)  # some were trained on
    everything, expected = run(tmp_path / "all", False)
    assert all(x["sequences_skipped"] == 0 for x in everything)
    for a, b in zip(skipping, everything):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-7)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, atol=1e-6, rtol=1e-5)
