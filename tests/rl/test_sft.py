"""Supervised warm-start: the training text is the chat the model will see, the loss is on
replies only, LoRA and full runs write checkpoints `--model` loads, and a resumed run
continues as an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rememr1.agent import Agent, AgentConfig
from rememr1.data.oracle import TokenizerBackend, write_traces
from rememr1.data.revhop import make_item
from rememr1.data.tokens import make_token_counter
from rememr1.errors import InputError
from rememr1.rl.optim import OptimConfig
from rememr1.rl.policy import ModelConfig
from rememr1.rl.sft import SFTConfig, SFTTrainer, encode_examples

from .test_trainer import _tokenizer, make_tiny_policy


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> Path:
    """Oracle traces of two RevHop items, chunked with the tiny model's (SmolLM2) tokenizer."""
    from rememr1.backends.tokenization import HFTokenizer

    path = tmp_path_factory.mktemp("traces") / "traces.jsonl"
    agent = Agent(TokenizerBackend(HFTokenizer(_tokenizer())), AgentConfig(method="rememr1", chunk_size=256))
    records = [make_item(seed=5, length=700, hops=2, order="reverse", index=i,
                         counter=make_token_counter(None)) for i in range(2)]
    write_traces(iter(records), path, agent)
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_policy(tmp_path_factory.mktemp("tiny") / "model")


def _cfg(traces, model, out, **extra) -> SFTConfig:
    optim = OptimConfig(lr=extra.pop("lr", 1e-2), warmup_steps=0, weight_decay=0.0,
                        max_tokens_per_micro_batch=4096, bf16=False)
    model_cfg = ModelConfig(path=str(model), device="cpu", lora=extra.pop("lora", True))
    return SFTConfig(traces=[str(traces)], out=str(out), model=model_cfg, batch_size=4,
                     save_every=extra.pop("save_every", 0), optim=optim, **extra)


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_training_text_is_the_chat_with_the_reply_and_loss_only_on_the_reply(traces):
    tok = _tokenizer()
    rows = [json.loads(line) for line in traces.read_text().splitlines()]
    seqs, skipped = encode_examples(rows, tok, max_length=100_000)
    assert skipped == 0 and len(seqs) == len(rows)
    for row, s in zip(rows, seqs):
        chat = tok.apply_chat_template(row["messages"] + [{"role": "assistant", "content": row["reply"]}],
                                       tokenize=False)
        assert chat.startswith(tok.decode(list(s.prompt_ids) + list(s.completion_ids)))
        assert s.completion_ids[-1] == tok.eos_token_id
        assert tok.decode(list(s.completion_ids[:-1])) == row["reply"]
    short, skipped = encode_examples(rows, tok, max_length=min(s.length for s in seqs))
    assert skipped == len(rows) - len(short) > 0


def test_lora_learns_the_replies_and_checkpoints_load_as_a_model(traces, tiny_model, tmp_path):
    from rememr1.backends.hf import load_pretrained

    out = tmp_path / "lora"
    last = SFTTrainer(_cfg(traces, tiny_model, out, max_steps=8, epochs=20), quiet=True).train()
    losses = _losses(out)
    assert len(losses) == 8 and losses[-1] < losses[0] - 1.0  # nats per reply token
    assert (last / "adapter_config.json").is_file() and not (last / "config.json").exists()
    merged, _, _ = load_pretrained(str(last), torch.float32)
    base, _, _ = load_pretrained(str(tiny_model), torch.float32)
    changed = [n for n, p in merged.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed and all("proj" in n for n in changed)  # only the adapted linear layers moved


def test_lora_run_from_an_adapter_continues_that_adapter(traces, tiny_model, tmp_path):
    """A second stage given the first's adapter as its model trains that adapter further
    (not a new one stacked over it): one adapter over the original base comes out, and
    training starts at the loss where the first stage ended."""
    from rememr1.backends.adapters import adapter_chain, adapter_root

    one = SFTTrainer(_cfg(traces, tiny_model, tmp_path / "one", max_steps=8, epochs=20), quiet=True).train()
    two = SFTTrainer(_cfg(traces, one, tmp_path / "two", max_steps=2, epochs=20), quiet=True).train()
    assert adapter_chain(two) == [two] and adapter_root(two) == adapter_root(one) == str(tiny_model.resolve())
    first, second = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert second[0] < first[0] - 1.0  # started from the first stage's adapter, not from zero
    from safetensors.torch import load_file

    w1, w2 = (load_file(str(d / "adapter_model.safetensors")) for d in (one, two))
    assert w1.keys() == w2.keys() and any(not torch.equal(w1[k], w2[k]) for k in w1)


def test_resumed_run_matches_an_uninterrupted_one(traces, tiny_model, tmp_path):
    whole = tmp_path / "whole"
    SFTTrainer(_cfg(traces, tiny_model, whole, max_steps=4, epochs=5), quiet=True).train()
    part = tmp_path / "part"
    SFTTrainer(_cfg(traces, tiny_model, part, max_steps=2, epochs=5, save_every=1), quiet=True).train()
    resumed = SFTTrainer(_cfg(traces, tiny_model, part, max_steps=4, epochs=5), quiet=True)
    assert resumed.step == 2  # found the adapter checkpoint (not a fresh start)
    resumed.train()
    assert _losses(part) == pytest.approx(_losses(whole), rel=1e-4)


def test_full_fine_tuning_writes_a_plain_model_directory(traces, tiny_model, tmp_path):
    last = SFTTrainer(_cfg(traces, tiny_model, tmp_path / "full", max_steps=1, lora=False, lr=1e-3),
                      quiet=True).train()
    assert (last / "config.json").is_file() and not (last / "adapter_config.json").exists()


def test_missing_traces_is_a_one_line_error(tiny_model, tmp_path):
    with pytest.raises(InputError, match="no files match"):
        SFTTrainer(_cfg(tmp_path / "none_*.jsonl", tiny_model, tmp_path / "o", max_steps=1), quiet=True)


def test_final_replies_the_reader_could_not_reach_are_left_out(traces, tiny_model, tmp_path):
    rows = [json.loads(line) for line in traces.read_text().splitlines()]
    finals = [r for r in rows if r["kind"] == "final"]
    assert finals and all(r["complete"] for r in finals)  # 2-hop: always reachable
    marked = tmp_path / "marked.jsonl"
    marked.write_text("".join(json.dumps({**r, "complete": False} if r is finals[0] else r) + "\n"
                              for r in rows))
    full = SFTTrainer(_cfg(traces, tiny_model, tmp_path / "a", max_steps=1), quiet=True)
    part = SFTTrainer(_cfg(marked, tiny_model, tmp_path / "b", max_steps=1), quiet=True)
    assert (full.unreachable, part.unreachable) == (0, 1)
    assert len(part.examples) == len(full.examples) - 1
