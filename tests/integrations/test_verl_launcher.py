"""`rememr1 train --engine verl`: the verl command from a rememr1 training config, without
verl installed (the launcher imports none; composition against verl's own config is
tests/integrations/test_verl.py (e), in .venv-verl)."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from rememr1.errors import InputError
from rememr1.integrations.verl.launcher import hydra_value, mini_batches, verl_overrides
from rememr1.integrations.verl.options import VerlOptions
from rememr1.rl.config import load_config


def overrides_of(**values):
    cfg = load_config("hotpotqa-qwen2.5-3b", values)
    return cfg, dict(o.split("=", 1) for o in verl_overrides(cfg, model_path="/models/q"))


def test_paper_config_becomes_v1_overrides():
    cfg, ov = overrides_of()
    assert ov["trainer.use_v1"] == "true" and ov["trainer.v1.trainer_mode"] == "rememr1"
    assert ov["actor_rollout_ref.rollout.n"] == str(cfg.rollout.group_size)
    assert ov["data.train_batch_size"] == str(cfg.rollout.batch_size)
    assert ov["actor_rollout_ref.rollout.name"] == "vllm"
    assert ov["actor_rollout_ref.rollout.calculate_log_probs"] == "true"
    assert ov["actor_rollout_ref.actor.kl_loss_type"] == "low_var_kl"
    assert float(ov["actor_rollout_ref.actor.kl_loss_coef"]) == cfg.loss.kl_beta
    assert float(ov["actor_rollout_ref.actor.clip_ratio_c"]) == cfg.loss.dual_clip_c
    assert float(ov["actor_rollout_ref.actor.optim.lr"]) == cfg.optim.lr
    longest = int(ov["data.max_prompt_length"]) + int(ov["data.max_response_length"])
    assert int(ov["data.max_prompt_length"]) >= cfg.agent.chunk_size + 2 * cfg.rollout.sampling.max_new_tokens
    assert ov["actor_rollout_ref.actor.use_dynamic_bsz"] == "true"
    assert int(ov["actor_rollout_ref.actor.ppo_max_token_len_per_gpu"]) >= longest
    # 128 questions in mini-batches of 8: 16 updates a step, whatever the steps per episode
    assert ov["+rememr1.mini_batches"] == "16" == str(mini_batches(cfg))
    # warm-up in verl's unit (scheduler steps once per training step): 20 updates / 16 per step
    assert ov["actor_rollout_ref.actor.optim.lr_warmup_steps"] == "2"
    assert ov["+rememr1.advantage.alpha"] == "0.8" and ov["+rememr1.agent.chunk_size"] == "5000"


def test_section_round_trips_to_the_options_every_verl_process_reads():
    cfg, ov = overrides_of(**{"compat": "official", "advantage.alpha": 0.5, "agent.top_k": 2})
    section: dict = {}
    for key, value in ov.items():
        if key.startswith("+rememr1."):
            *path, last = key[len("+rememr1."):].split(".")
            node = section
            for p in path:
                node = node.setdefault(p, {})
            import yaml

            node[last] = yaml.safe_load(value)
    opts = VerlOptions.from_config({"rememr1": section})
    assert opts.agent == cfg.agent and opts.reward == cfg.reward and opts.advantage == cfg.advantage
    assert opts.advantage.alpha == 0.5 and opts.advantage.double_state is True


def test_cluster_section_and_extra_overrides():
    cfg, ov = overrides_of(**{"verl.nnodes": 4, "verl.n_gpus_per_node": 8, "verl.rollout_tp": 2,
                              "verl.overrides": ["trainer.logger=[console]"]})
    assert (ov["trainer.nnodes"], ov["trainer.n_gpus_per_node"]) == ("4", "8")
    assert ov["actor_rollout_ref.rollout.tensor_model_parallel_size"] == "2"
    assert ov["trainer.logger"] == "[console]"  # the extra override comes last and wins


@pytest.mark.parametrize("value, text", [("a b", "'a b'"), ("1.5", "'1.5'"), ("true", "'true'"),
                                         ("data/x.parquet", "data/x.parquet"), (None, "null"),
                                         (["a", 2], "[a,2]"), ("it's", "'it\\'s'")])
def test_hydra_values_are_quoted_where_hydra_would_misread_them(value, text):
    assert hydra_value(value) == text


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="verl reads parquet"):
        json_file = tmp_path / "train.json"
        json_file.write_text("[]")
        verl_overrides(load_config(None, {"data.train": [str(json_file)]}), model_path="/m", check_files=True)
    with pytest.raises(InputError, match="rollout_tp"):
        load_config(None, {"verl.rollout_tp": 3})


def test_cli_dry_run_prints_the_command_and_a_bad_engine_fails():
    exe = [sys.executable, "-m", "rememr1", "train"]
    out = subprocess.run([*exe, "--engine", "verl", "--config", "hotpotqa-qwen2.5-3b", "--dry-run",
                          "--set", "verl.n_gpus_per_node=4"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    argv = shlex.split(out.stdout.replace("\\\n", " "))
    assert argv[1:3] == ["-m", "verl.trainer.main_ppo"]
    assert "trainer.n_gpus_per_node=4" in argv and "+rememr1.advantage.alpha=0.8" in argv
    bad = subprocess.run([*exe, "--engine", "ray"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "unknown engine" in bad.stderr
