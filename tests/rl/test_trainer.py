"""The RL trainer end to end on a tiny random Llama (seconds), plus config loading, data
order, resume and Ctrl-C behaviour; one real step on the built-in model (slow).

The tiny policy uses the built-in model's tokenizer (so the agent's prompts tokenise as
in real runs) and a planted output bias: a large constant in one embedding dimension
plus a per-token weight in that dimension of the output head make " Paris", " the" and
the end-of-sequence token likely. With the "reply" memory fallback the memory is the
reply itself, so the memory-gain reward (answer "Paris") varies between rollouts and the
advantages, loss and gradients are not zero.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rememr1.errors import InputError
from rememr1.rl import trainer as trainer_mod
from rememr1.rl.config import load_config, packaged_configs
from rememr1.rl.trainer import DataStream, Trainer

# What every metrics line must report (issue 4: rewards and parts, rates, KL, clipping,
# entropy, lengths, seconds per phase, throughput, optimiser state).
REQUIRED_METRICS = (
    "step", "outcome_reward", "state_reward", "memory_gain", "callback_bonus", "format_reward",
    "well_formed_rollout_rate", "recall_rate", "kl", "clip_frac", "entropy", "response_length",
    "seconds_rollout", "seconds_reference", "seconds_update", "gen_tokens_per_s",
    "train_tokens_per_s", "lr", "grad_norm", "loss",
)


def _tokenizer():
    from transformers import AutoTokenizer

    from rememr1.backends.builtin import builtin_hf_dir

    return AutoTokenizer.from_pretrained(str(builtin_hf_dir()))


def make_tiny_policy(out: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=False, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    bias = {
        tok.encode(" Paris", add_special_tokens=False)[0]: 1.7,
        tok.encode(" the", add_special_tokens=False)[0]: 2.3,
        tok.eos_token_id: 2.0,
    }
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 4.0
        model.lm_head.weight[:, 0] = 0.0
        for token, b in bias.items():
            model.lm_head.weight[token, 0] = b
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def write_parquet(path: Path, n: int = 3, facts: int = 12) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for i in range(n):
        ctx = " ".join(f"Fact {j}: the river number {j} flows north of town {i}." for j in range(facts))
        rows.append({
            "prompt": [{"role": "user", "content": f"Which city is capital number {i}?"}],
            "context": ctx,
            "reward_model": {"ground_truth": ["Paris"], "style": "rule"},
            "data_source": "test",
            "extra_info": {"index": i, "question": f"Which city is capital number {i}?", "num_docs": 1},
        })
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"model": make_tiny_policy(root / "model"), "data": write_parquet(root / "train.parquet")}


def tiny_overrides(tiny, out: Path, **extra) -> dict:
    base = {
        "model.path": str(tiny["model"]), "model.device": "cpu", "data.train": [str(tiny["data"])],
        "out": str(out), "steps": 2, "save_every": 1, "rollout.group_size": 4,
        "rollout.batch_size": 2, "agent.chunk_size": 64, "rollout.sampling.max_new_tokens": 8,
        "agent.fallback": "reply", "optim.lr": 1e-2, "optim.warmup_steps": 0,
        "optim.max_tokens_per_micro_batch": 4096,
    }
    return {**base, **extra}


def read_metrics(out: Path) -> list[dict]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x["type"] == "train"]


@pytest.fixture(scope="module")
def run_a(tiny, tmp_path_factory):
    """Two uninterrupted steps, a checkpoint after each."""
    out = tmp_path_factory.mktemp("run") / "a"
    validation = {"eval_every": 2, "data.dev": str(tiny["data"]), "eval.max_items": 2}
    Trainer(load_config(None, tiny_overrides(tiny, out, **validation)), quiet=True).train()
    return out


def test_two_steps_write_full_metrics(run_a):
    lines = read_metrics(run_a)
    assert [x["step"] for x in lines] == [1, 2]
    for line in lines:
        missing = [k for k in REQUIRED_METRICS if line.get(k) is None]
        assert not missing, missing
        # every step of every rollout (2 questions x G=4) is one training sequence
        assert line["steps_per_rollout"] == 5.0  # 4 chunks of 64 tokens + the final step
        assert line["sequences"] == 2 * 4 * 5
        assert line["lr"] == pytest.approx(1e-2)
        assert line["grad_norm"] > 0  # the planted bias makes rewards, hence advantages, vary
        assert line["loss"] != 0
        assert min(line["seconds_rollout"], line["seconds_reference"], line["seconds_update"]) > 0
    # Step 1 starts at the reference policy: the k3 KL is exactly 0; the update moves away.
    assert lines[0]["kl"] == 0.0
    assert lines[1]["kl"] > 0
    assert list((run_a / "tb").glob("events.out.tfevents.*"))


def test_validation_runs_through_the_eval_runner(run_a):
    evals = [json.loads(x) for x in (run_a / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in evals if x["type"] == "eval"]
    assert [x["step"] for x in evals] == [2]  # eval_every=2
    assert evals[0]["eval_items"] == 2 and 0.0 <= evals[0]["eval_sub_em"] <= 1.0
    lines = [json.loads(x) for x in (run_a / "eval" / "step-2" / "rememr1" / "train.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all("judge_sub_em" in x for x in lines)
    assert evals[0]["eval_sub_em"] == sum(x["judge_sub_em"] for x in lines) / 2
    assert (run_a / "eval" / "step-2" / "report.md").is_file()


def test_checkpoint_is_a_loadable_hf_directory(run_a, tiny):
    from safetensors.torch import load_file

    from rememr1.agent import Agent, AgentConfig
    from rememr1.backends import load_backend
    from rememr1.backends.base import SamplingParams

    ck1, ck2 = run_a / "checkpoint-1", run_a / "checkpoint-2"
    assert (ck1 / "config.json").is_file() and (ck1 / "trainer_state.pt").is_file()
    w0 = load_file(tiny["model"] / "model.safetensors")
    w1 = load_file(ck1 / "model.safetensors")
    w2 = load_file(ck2 / "model.safetensors")
    assert w0.keys() == w1.keys()
    name = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(w0[name], w1[name]) and not torch.equal(w1[name], w2[name])
    backend = load_backend("hf", model=str(ck1), device="cpu")  # what `rememr1 ask --backend hf` does
    agent = Agent(backend, AgentConfig(chunk_size=64), SamplingParams(max_new_tokens=4))
    result = agent.answer("The capital of Testland is Paris. " * 5, "What is the capital of Testland?")
    assert result.steps and result.steps[0].prompt_ids is not None


def test_interrupt_saves_and_resume_reproduces_next_step(run_a, tiny, tmp_path, monkeypatch):
    """Ctrl-C in step 2's rollout saves checkpoint-1 (save_every=0: only the interrupt
    saves); rerunning resumes there and computes the same step-2 loss as run A."""
    out = tmp_path / "b"
    real = trainer_mod.collect_rollouts
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(kwargs["step"])
        if kwargs["step"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "collect_rollouts", interrupted)
    overrides = tiny_overrides(tiny, out, save_every=0)
    with pytest.raises(KeyboardInterrupt):
        Trainer(load_config(None, overrides), quiet=True).train()
    assert calls == [1, 2]
    assert (out / "checkpoint-1" / "trainer_state.pt").is_file()
    assert not (out / "checkpoint-2").exists()
    monkeypatch.setattr(trainer_mod, "collect_rollouts", real)

    resumed = Trainer(load_config(None, overrides), quiet=True)
    assert resumed.step == 1
    resumed.train()
    a, b = read_metrics(run_a), read_metrics(out)
    assert [x["step"] for x in b] == [1, 2]
    assert b[1]["loss"] == pytest.approx(a[1]["loss"], abs=1e-6, rel=0)
    assert b[1]["grad_norm"] == pytest.approx(a[1]["grad_norm"], abs=1e-6, rel=0)
    assert b[1]["outcome_reward"] == a[1]["outcome_reward"]


def _start_adapter(model_dir: Path, out: Path) -> Path:
    """A LoRA adapter over the tiny model whose B matrices are non-zero (as after SFT)."""
    from rememr1.backends.hf import load_pretrained
    from rememr1.rl.policy import wrap_lora

    model, tok, _ = load_pretrained(str(model_dir), torch.float32)
    peft_model = wrap_lora(model, rank=4, alpha=8, base_name=str(model_dir.resolve()))
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    peft_model.save_pretrained(out, save_embedding_layers=False)
    tok.save_pretrained(out)
    return out


def test_lora_run_trains_the_start_adapter_over_a_frozen_base_and_resumes(tiny, tmp_path):
    """`model.lora` from an adapter directory trains that adapter: checkpoints are adapter
    directories over the untouched base, step 1's KL is 0 (the reference is the start
    adapter, merged), and an interrupted run resumes to the same step 2."""
    from safetensors.torch import load_file

    from rememr1.backends.adapters import adapter_base, is_adapter_dir
    from rememr1.backends.hf import load_pretrained

    start = _start_adapter(tiny["model"], tmp_path / "start")
    lora = {"model.path": str(start), "model.lora": True}
    whole = tmp_path / "whole"
    trainer = Trainer(load_config(None, tiny_overrides(tiny, whole, **lora)), quiet=True)
    trainable = [n for n, p in trainer.policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    trainer.train()
    lines = read_metrics(whole)
    assert lines[0]["kl"] == 0.0 and lines[1]["kl"] > 0 and lines[1]["grad_norm"] > 0
    ck = whole / "checkpoint-2"
    assert is_adapter_dir(ck) and not (ck / "model.safetensors").exists()
    assert adapter_base(ck) == str(tiny["model"].resolve())
    w0, w2 = load_file(start / "adapter_model.safetensors"), load_file(ck / "adapter_model.safetensors")
    assert w0.keys() == w2.keys() and any(not torch.equal(w0[k], w2[k]) for k in w0)
    merged, _, _ = load_pretrained(str(ck), torch.float32)  # what --model / --adapter load
    base, _, _ = load_pretrained(str(tiny["model"]), torch.float32)
    assert torch.equal(merged.state_dict()["model.embed_tokens.weight"], base.state_dict()["model.embed_tokens.weight"])

    part = tmp_path / "part"
    Trainer(load_config(None, tiny_overrides(tiny, part, steps=1, **lora)), quiet=True).train()
    resumed = Trainer(load_config(None, tiny_overrides(tiny, part, **lora)), quiet=True)
    assert resumed.step == 1  # found the adapter checkpoint (not a fresh start)
    resumed.train()
    assert [x["step"] for x in read_metrics(part)] == [1, 2]
    assert read_metrics(part)[1]["loss"] == pytest.approx(lines[1]["loss"], abs=1e-6, rel=0)


def test_resume_refuses_a_changed_configuration(run_a, tiny, tmp_path):
    out = tmp_path / "c"
    shutil.copytree(run_a, out)
    with pytest.raises(InputError, match="rollout.group_size"):
        Trainer(load_config(None, tiny_overrides(tiny, out, **{"rollout.group_size": 2})), quiet=True)
    # More steps is an allowed change: the run just continues.
    t = Trainer(load_config(None, tiny_overrides(tiny, out, steps=3)), quiet=True)
    assert t.step == 2


# --------------------------------------------------------------------------- pieces


def test_data_stream_covers_each_epoch_and_resumes():
    s = DataStream(5, seed=3)
    first = s.next(3) + s.next(3) + s.next(4)  # crosses into epoch 1
    assert sorted(first[:5]) == list(range(5))
    assert s.epoch == 1 and s.offset == 5
    again = DataStream(5, seed=3)
    again.next(2)
    resumed = DataStream(5, seed=3, **again.state())
    assert resumed.next(8) == first[2:]


def test_load_config_errors_and_coercion(tmp_path):
    with pytest.raises(InputError, match="did you mean 'rollout.group_size'"):
        load_config(None, {"rollout.gruop_size": 4})
    with pytest.raises(InputError, match="unknown key 'nonsense'"):
        load_config(None, {"nonsense": 1})
    with pytest.raises(InputError, match="rollout.group_size: expected an integer"):
        load_config(None, {"rollout.group_size": "four"})
    with pytest.raises(InputError, match="advantage.alpha"):
        load_config(None, {"advantage.alpha": 1.5})
    with pytest.raises(InputError, match="agent.method"):
        load_config(None, {"agent.method": "full-context"})
    with pytest.raises(InputError, match="agent.compat.memory_sett"):
        load_config(None, {"agent.compat.memory_sett": True})
    with pytest.raises(InputError, match="agent: top-k"):
        load_config(None, {"agent.top_k": 0})
    with pytest.raises(InputError, match="reward"):
        load_config(None, {"reward.outcome_metric": "bleu"})
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("steps: 7\noptim:\n  lr: 1e-6\nrollout:\n  group_size: 3\n")
    cfg = load_config(cfg_file, {"rollout.group_size": 5})
    assert cfg.steps == 7 and cfg.optim.lr == 1e-6  # YAML reads 1e-6 as a string
    assert cfg.rollout.group_size == 5  # overrides win
    cfg_file.write_text("rollout: [1, 2]\n")
    with pytest.raises(InputError, match="section 'rollout' must be a mapping"):
        load_config(cfg_file)
    with pytest.raises(InputError, match="config not found"):
        load_config(tmp_path / "missing.yaml")


def test_sampling_sections_renamed_keys_and_defaults_that_follow_other_keys(caplog):
    from rememr1.agent import get_method
    from rememr1.rl.config import config_from_dict

    # the token budget per step is the method's default (as in `ask`), validation's the rollout's
    mem = load_config(None, {"agent.method": "memagent"})
    assert mem.rollout.sampling.max_new_tokens == get_method("memagent").default_max_new_tokens == 1024
    assert mem.eval.sampling.max_new_tokens == 1024
    assert load_config(None, {"rollout.sampling.max_new_tokens": 96}).eval.sampling.max_new_tokens == 96
    # a key under a section keeps the section's other defaults (rollouts at 1.0 / 1.0)
    cfg = load_config(None, {"rollout.sampling.temperature": 0.5, "rollout.sampling.stop": ["</x>"]})
    s, e = cfg.rollout.sampling, cfg.eval.sampling
    assert (s.temperature, s.top_p, s.stop) == (0.5, 1.0, ("</x>",))
    assert (e.temperature, e.top_p) == (0.7, 0.95)
    assert config_from_dict(cfg.to_dict()) == cfg  # what config.yaml holds reads back the same
    with pytest.raises(InputError, match="rollout.sampling.temperature: must be > 0"):
        load_config(None, {"rollout.sampling.temperature": 0})
    # keys of earlier versions are read under their new names, with a warning
    old = load_config(None, {"loss.alpha": 0.5, "rollout.temperature": 0.9, "eval.max_new_tokens": 12,
                             "reward.double_state_advantage": True})
    assert old.advantage.alpha == 0.5 and old.advantage.double_state
    assert old.rollout.sampling.temperature == 0.9 and old.eval.sampling.max_new_tokens == 12
    assert "'loss.alpha' is now 'advantage.alpha'" in caplog.text
    with pytest.raises(InputError, match="give only 'advantage.alpha'"):
        load_config(None, {"loss.alpha": 0.5, "advantage.alpha": 0.6})


def test_packaged_configs_load_by_name():
    assert {"revhop-smollm2-cpu", "hotpotqa-qwen2.5-3b"} <= set(packaged_configs())
    paper = load_config("hotpotqa-qwen2.5-3b")
    assert (paper.rollout.group_size, paper.rollout.batch_size, paper.optim.lr) == (16, 128, 1e-6)
    assert (paper.agent.chunk_size, paper.rollout.sampling.max_new_tokens, paper.advantage.alpha) == (5000, 2048, 0.8)
    assert paper.optim.warmup_steps == 20 and paper.loss.kl_beta == 0.001
    cpu = load_config("revhop-smollm2-cpu.yaml")
    assert cpu.model.path is None and cpu.rollout.group_size == 4


def test_cli_maps_options_to_config_keys(tiny, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rememr1.cli import app

    seen = {}

    class FakeTrainer:
        def __init__(self, cfg, quiet=False):
            seen["cfg"] = cfg
            self.out = Path(cfg.out)

        def train(self):
            return []

    monkeypatch.setattr(trainer_mod, "Trainer", FakeTrainer)
    result = CliRunner().invoke(app, [
        "train", "--data", str(tiny["data"]), "--out", str(tmp_path / "o"), "--steps", "3",
        "--group-size", "6", "--alpha", "1.0", "--lr", "3e-6", "--set", "loss.kl_beta=0",
        "--max-new-tokens", "64", "--set", "rollout.sampling.temperature=0.8",
        "--lora", "--set", "model.lora_rank=8", "--rollout-engine", "llamacpp",
    ])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert cfg.data.train == [str(tiny["data"])] and cfg.steps == 3
    assert cfg.model.lora and cfg.model.lora_rank == 8 and cfg.rollout.engine == "llamacpp"
    assert cfg.rollout.group_size == 6 and cfg.advantage.alpha == 1.0 and cfg.optim.lr == 3e-6
    assert cfg.loss.kl_beta == 0.0
    assert cfg.rollout.sampling.max_new_tokens == cfg.eval.sampling.max_new_tokens == 64
    assert cfg.rollout.sampling.temperature == 0.8
    assert cfg.compat == "none" and not cfg.agent.compat.active()
    official = CliRunner().invoke(app, [
        "train", "--data", str(tiny["data"]), "--out", str(tmp_path / "o2"), "--compat", "official",
        "--no-memory-set", "--top-k", "2", "--temperature", "0.9",
    ])
    assert official.exit_code == 0, official.output
    cfg = seen["cfg"]
    assert cfg.reward.official_outcome and cfg.advantage.double_state and cfg.advantage.singleton_raw
    assert cfg.agent.compat.whole_reply_memory and not cfg.agent.compat.recall_current
    assert not cfg.agent.compat.memory_set  # an explicit switch wins over the preset
    # the agent's and the sampling's own flags reach their keys (declared on those fields)
    assert cfg.agent.top_k == 2 and cfg.rollout.sampling.temperature == 0.9
    bad = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "o")])
    assert isinstance(bad.exception, InputError) and "no training data" in str(bad.exception)


# ---------------------------------------------------------------------- real model


@pytest.mark.slow
def test_one_step_on_the_builtin_model(tmp_path):
    data = write_parquet(tmp_path / "d.parquet", n=1, facts=4)  # ~80 tokens: 2 chunks of 48
    out = tmp_path / "run"
    cfg = load_config(None, {
        "data.train": [str(data)], "out": str(out), "steps": 1, "model.device": "cpu",
        "rollout.group_size": 2, "rollout.batch_size": 1, "agent.chunk_size": 48,
        "rollout.sampling.max_new_tokens": 32,
    })
    trainer = Trainer(cfg, quiet=True)
    (line,) = trainer.train()
    assert line["steps_per_rollout"] == 3.0  # 2 memory steps + the final step
    assert 0 < line["sequences"] <= 6
    assert line["kl"] == 0.0 and line["grad_norm"] is not None
    assert (out / "checkpoint-1" / "config.json").is_file()


def test_refuses_a_budget_that_cannot_fit(tiny, tmp_path, monkeypatch):
    """Too little free memory: one clear error before any rollout, not the OOM killer."""
    monkeypatch.setattr(trainer_mod, "free_bytes", lambda device: 64 * 2**20)
    with pytest.raises(InputError, match="more memory") as e:
        Trainer(load_config(None, tiny_overrides(tiny, tmp_path / "o")), quiet=True)
    assert "\n" not in str(e.value)


def test_micro_batches_follow_the_token_budget(tiny, tmp_path, monkeypatch):
    """Every forward pass the update makes holds at most the budget's padded tokens (or a
    single sequence), the passes together score every sequence of the step exactly once,
    and the count reported is the count run."""
    from rememr1.rl.sequences import micro_batch_tokens

    real = trainer_mod.completion_logprobs
    update_passes: list[list] = []

    def recording(model, micro, **kw):
        if kw.get("with_entropy"):  # the update's passes (reference scoring takes no entropy)
            update_passes.append(list(micro))
        return real(model, micro, **kw)

    monkeypatch.setattr(trainer_mod, "completion_logprobs", recording)
    out = tmp_path / "budget"
    small = tiny_overrides(tiny, out, steps=1, **{"optim.max_tokens_per_micro_batch": 700})
    (line,) = [m for m in Trainer(load_config(None, small), quiet=True).train()]
    assert line["max_tokens_per_micro_batch"] == 700
    assert line["micro_batches"] == len(update_passes) > 1
    assert all(micro_batch_tokens(m) <= 700 or len(m) == 1 for m in update_passes)
    scored = [id(s) for m in update_passes for s in m]
    assert len(scored) == len(set(scored)) == line["sequences"] - line["sequences_skipped"]


# ------------------------------------------------------------------- data parallel

DDP_SCRIPT = """
import sys, torch
from rememr1.rl.config import load_config
from rememr1.rl.trainer import Trainer
import json
overrides = json.loads(sys.argv[1])
t = Trainer(load_config(None, overrides), quiet=True)
t.train()
torch.save({k: v.detach().clone() for k, v in t.rollout_model.state_dict().items()},
           f"{overrides['out']}/weights-rank{t.dist.rank}-of-{t.dist.world_size}.pt")
"""


@pytest.mark.parametrize("strategy", ["replicate", "fsdp"])
def test_two_ranks_match_one_process(tiny, tmp_path, strategy):
    """torchrun with 2 CPU processes (gloo), one step: both ranks end with identical
    weights, equal to a single-process run on the same data and seed; with FSDP the
    weights compared are the whole copy every rank generates with."""
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(DDP_SCRIPT)
    common = {"steps": 1, "save_every": 0, "rollout.batch_size": 2, "loss.kl_beta": 0.001,
              "optim.bf16": False, "distributed.strategy": strategy}
    single = tiny_overrides(tiny, tmp_path / "single", **common)
    double = tiny_overrides(tiny, tmp_path / "double", **common)
    proc = subprocess.run([sys.executable, str(script), json.dumps(single)], capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script), json.dumps(double)], capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    one = torch.load(tmp_path / "single" / "weights-rank0-of-1.pt")
    r0 = torch.load(tmp_path / "double" / "weights-rank0-of-2.pt")
    r1 = torch.load(tmp_path / "double" / "weights-rank1-of-2.pt")
    for name in one:
        assert torch.equal(r0[name], r1[name]), name  # the ranks agree exactly
        torch.testing.assert_close(r0[name], one[name], atol=1e-6, rtol=1e-5)
    assert one.keys() == r0.keys()
    # rank 0 alone wrote the run's files, with metrics over both ranks' rollouts
    lines = read_metrics(tmp_path / "double")
    assert len(lines) == 1 and lines[0]["world_size"] == 2
    assert lines[0]["sequences"] == read_metrics(tmp_path / "single")[0]["sequences"]
    assert lines[0]["loss"] == pytest.approx(read_metrics(tmp_path / "single")[0]["loss"], abs=1e-6)
    assert (tmp_path / "double" / "checkpoint-1").is_dir()
    # the checkpoint holds no per-rank state: one process resumes the 2-rank run
    resumed = Trainer(load_config(None, {**double, "steps": 2}), quiet=True)
    assert resumed.step == 1 and resumed.dist.world_size == 1
    resumed.train()
    assert [x["step"] for x in read_metrics(tmp_path / "double")] == [1, 2]


def test_load_policy_bounds_onednn_caches_before_any_forward(tiny, monkeypatch):
    # oneDNN reads its cache sizes at first use; the trainer's policy loader sets them
    # (backends.hf.bound_onednn_caches) so bf16 steps on CPU do not grow memory per shape.
    import os

    from rememr1.backends.hf import ONEDNN_CACHE_ENTRIES, ONEDNN_CACHE_VARS
    from rememr1.rl.policy import ModelConfig, load_policy

    for var in ONEDNN_CACHE_VARS:
        monkeypatch.delenv(var, raising=False)
    load_policy(ModelConfig(path=str(tiny["model"])), device="cpu", with_reference=False)
    assert all(os.environ[v] == str(ONEDNN_CACHE_ENTRIES) for v in ONEDNN_CACHE_VARS)
