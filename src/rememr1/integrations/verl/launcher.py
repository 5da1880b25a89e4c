"""`rememr1 train --engine verl`: a rememr1 training config as a verl V1 command line.

    argv = verl_command(load_config("hotpotqa-qwen2.5-3b"))   # [python, -m, verl.trainer.main_ppo, ...]
    rememr1 train --engine verl --config X.yaml --dry-run       # prints it
    rememr1 train --engine verl --config X.yaml                 # runs it

`verl_overrides(cfg)` translates the one config both trainers read into Hydra overrides of
verl's `ppo_trainer` config: model, data, G, batch, lengths, learning rate and schedule,
clip ranges and dual clip, KL loss (k3 = verl's `low_var_kl`), entropy, aggregation, the
`+rememr1.*` section every verl process reads (`options.VerlOptions`: agent, rewards,
advantages, mini-batches, seed), `trainer.use_v1=True` with the registered trainer `rememr1`, vLLM (or
SGLang) as the rollout engine with `calculate_log_probs`, the agent loop `rememr1`, and
dynamic batch sizes with a per-GPU token budget above the longest step. The cluster side
(nodes, GPUs per node, rollout tensor parallelism, offload, extra overrides) is the
config's `verl:` section (`rl.verl_config.VerlConfig`). Composition against verl's own config is tested in
`.venv-verl` (tests/integrations); this module imports no verl.

Units that differ between the trainers, converted here:

* mini-batches: ours are counted in questions; verl's V1 counts rows. `rememr1.mini_batches`
  = ceil(batch_size / mini_batch_size) makes verl take as many optimizer updates per step
  as `rememr1 train` (`trainer.ReMemR1Trainer`);
* warm-up: ours counts optimizer updates, verl's scheduler steps once per training step, so
  `lr_warmup_steps` = ceil(warmup_steps / (mini-batches x epochs));
* `optim.max_tokens_per_micro_batch` (padded tokens on one device) becomes
  `ppo_max_token_len_per_gpu`, raised to the longest possible step when smaller.
"""

from __future__ import annotations

import glob
import math
import re
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import InputError
from ...rl.verl_config import VerlConfig
from .options import SECTION, VerlOptions

if TYPE_CHECKING:
    from ...rl.config import TrainConfig

TRAINER_NAME = "rememr1"  # trainer.ReMemR1Trainer (kept here so no verl import is needed)
AGENT_NAME = "rememr1"  # agent_loop.ReMemR1AgentLoop
DEFAULT_CHUNK = 5000
# Step prompt beyond the chunk and the two memories (current, recalled): instructions,
# question, tags and the chat template. Generous, so a prompt is never cut.
PROMPT_OVERHEAD = 1024
PLACEHOLDER_DATA = "data/train.parquet"


# ------------------------------------------------------------------------------ lengths


def step_lengths(cfg: TrainConfig) -> tuple[int, int]:
    """(longest step prompt, longest step response) in tokens: a chunk, two memories (each
    at most one reply) and the instructions; one reply."""
    reply = cfg.rollout.sampling.max_new_tokens
    chunk = cfg.agent.chunk_size or DEFAULT_CHUNK
    return chunk + 2 * reply + PROMPT_OVERHEAD, reply


def mini_batches(cfg: TrainConfig) -> int:
    """Optimizer updates per pass over a step's rows, as `rememr1 train` counts them."""
    size = cfg.optim.mini_batch_size or cfg.rollout.batch_size
    return math.ceil(cfg.rollout.batch_size / min(size, cfg.rollout.batch_size))


def verl_options(cfg: TrainConfig) -> VerlOptions:
    """The `rememr1:` section of the verl config for this training config."""
    return VerlOptions(agent=cfg.agent, reward=cfg.reward, advantage=cfg.advantage,
                       max_new_tokens=cfg.rollout.sampling.max_new_tokens,
                       mini_batches=mini_batches(cfg), seed=cfg.seed)


# ------------------------------------------------------------------------------ overrides

_SAFE = re.compile(r"^[A-Za-z0-9_./:+~@-]+$")
_NOT_STRINGS = re.compile(r"^([-+]?(\d[\d_]*\.?\d*([eE][-+]?\d+)?|\.\d+)|true|false|null|nan|inf|-inf)$", re.I)


def hydra_value(value: Any) -> str:
    """A Python value as a Hydra override value (strings quoted where Hydra would read them
    as something else)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    text = str(value)
    if _SAFE.match(text) and not _NOT_STRINGS.match(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _section_overrides(prefix: str, values: dict[str, Any]) -> list[str]:
    out = []
    for key, value in values.items():
        if isinstance(value, dict):
            out += _section_overrides(f"{prefix}.{key}", value)
        else:
            out.append(f"+{prefix}.{key}={hydra_value(value)}")
    return out


def _data_files(patterns: list[str], what: str, *, check: bool) -> list[str]:
    files: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(Path(pattern).expanduser())))
        if not matches and check:
            raise InputError(f"{what}: no file matches {pattern}")
        files += [str(Path(m).resolve()) for m in matches] or [pattern]
    for f in files:
        if check and not f.endswith(".parquet"):
            raise InputError(f"{what}: verl reads parquet (schema A); {f} is not one "
                             "(rememr1 data ... --format parquet writes it)")
    return files


def model_directory(cfg: TrainConfig) -> str:
    """The policy as verl loads it: a Hugging Face directory (the built-in model converted)."""
    if cfg.model.path is None:
        from ...backends.builtin import builtin_hf_dir

        return str(builtin_hf_dir())
    path = Path(cfg.model.path).expanduser()
    if path.suffix.lower() == ".gguf":
        raise InputError(f"verl loads Hugging Face model directories, not GGUF files: {cfg.model.path}")
    if (path / "adapter_config.json").is_file():
        raise InputError(f"{cfg.model.path} is a LoRA adapter; verl needs the base model directory "
                         "(merge the adapter first)")
    return str(path.resolve()) if path.exists() else str(cfg.model.path)


def verl_overrides(cfg: TrainConfig, verl: VerlConfig | None = None, *, model_path: str | None = None,
                   check_files: bool = False) -> list[str]:
    """Hydra overrides of verl's `ppo_trainer` config that train `cfg` on verl's V1 trainer."""
    from . import agent_loop_config_path

    verl = verl or getattr(cfg, "verl", None) or VerlConfig()
    prompt_len, response_len = step_lengths(cfg)
    budget = max(verl.max_tokens_per_gpu or cfg.optim.max_tokens_per_micro_batch or 0, prompt_len + response_len)
    updates = mini_batches(cfg)
    warmup = math.ceil(cfg.optim.warmup_steps / (updates * cfg.optim.epochs)) if cfg.optim.warmup_steps else 0
    train = _data_files(cfg.data.train or [PLACEHOLDER_DATA], "data.train", check=check_files)
    dev = _data_files([cfg.data.dev], "data.dev", check=check_files) if cfg.data.dev else None
    validate = dev is not None and cfg.eval_every > 0
    out_dir = Path(cfg.out).expanduser().resolve()
    actor = "actor_rollout_ref.actor"
    rollout = "actor_rollout_ref.rollout"
    pairs: list[tuple[str, Any]] = [
        # the trainer: V1, ReMemR1's advantage and update count
        ("trainer.use_v1", True),
        ("trainer.v1.trainer_mode", TRAINER_NAME),
        ("algorithm.adv_estimator", "grpo"),
        ("algorithm.norm_adv_by_std_in_grpo", cfg.advantage.scale_by_std),
        ("algorithm.use_kl_in_reward", False),
        # model
        ("actor_rollout_ref.model.path", model_path or model_directory(cfg)),
        ("actor_rollout_ref.model.enable_gradient_checkpointing", cfg.model.gradient_checkpointing),
        ("actor_rollout_ref.model.use_remove_padding", True),
        # data (schema A parquet: verl's RLHFDataset reads it as is)
        ("data.train_files", train),
        ("data.val_files", dev or train),
        ("data.prompt_key", "prompt"),
        ("data.train_batch_size", cfg.rollout.batch_size),
        ("data.max_prompt_length", prompt_len),
        ("data.max_response_length", response_len),
        ("data.seed", cfg.data.shuffle_seed),
        ("data.train_max_samples", cfg.data.max_items if cfg.data.max_items else -1),
        ("data.val_max_samples", cfg.eval.max_items if cfg.eval.max_items else -1),
        # rollout: vLLM/SGLang servers, the rememr1 agent loop, G samples, their log-probs
        (f"{rollout}.name", verl.rollout_engine),
        (f"{rollout}.mode", "async"),
        (f"{rollout}.n", cfg.rollout.group_size),
        (f"{rollout}.temperature", cfg.rollout.sampling.temperature),
        (f"{rollout}.top_p", cfg.rollout.sampling.top_p),
        (f"{rollout}.calculate_log_probs", True),
        (f"{rollout}.tensor_model_parallel_size", verl.rollout_tp),
        (f"{rollout}.gpu_memory_utilization", verl.gpu_memory_utilization),
        (f"{rollout}.max_num_batched_tokens", max(8192, prompt_len + response_len)),
        (f"{rollout}.enable_prefix_caching", True),
        (f"{rollout}.agent.default_agent_loop", AGENT_NAME),
        (f"{rollout}.agent.agent_loop_config_path", str(agent_loop_config_path())),
        (f"{rollout}.val_kwargs.temperature", cfg.eval.sampling.temperature),
        (f"{rollout}.val_kwargs.top_p", cfg.eval.sampling.top_p),
        (f"{rollout}.val_kwargs.do_sample", cfg.eval.sampling.temperature > 0),
        (f"{rollout}.val_kwargs.n", 1),
        # actor: the objective of rl.loss (SPEC §4)
        (f"{actor}.optim.lr", cfg.optim.lr),
        (f"{actor}.optim.lr_warmup_steps", warmup),
        (f"{actor}.optim.weight_decay", cfg.optim.weight_decay),
        (f"{actor}.optim.betas", [cfg.optim.adam_beta1, cfg.optim.adam_beta2]),
        (f"{actor}.optim.clip_grad", cfg.optim.grad_clip),
        (f"{actor}.ppo_mini_batch_size", min(cfg.optim.mini_batch_size or cfg.rollout.batch_size,
                                             cfg.rollout.batch_size)),
        (f"{actor}.ppo_epochs", cfg.optim.epochs),
        (f"{actor}.use_dynamic_bsz", True),
        (f"{actor}.ppo_max_token_len_per_gpu", budget),
        (f"{actor}.clip_ratio_low", cfg.loss.clip_low),
        (f"{actor}.clip_ratio_high", cfg.loss.clip_high),
        # verl always applies the dual clip; "no dual clip" is a bound no ratio reaches
        (f"{actor}.clip_ratio_c", cfg.loss.dual_clip_c if cfg.loss.dual_clip_c is not None else 1e9),
        (f"{actor}.use_kl_loss", cfg.loss.kl_beta > 0),
        (f"{actor}.kl_loss_coef", cfg.loss.kl_beta),
        (f"{actor}.kl_loss_type", "low_var_kl"),
        (f"{actor}.entropy_coeff", cfg.loss.entropy_coef),
        (f"{actor}.loss_agg_mode", "token-mean" if cfg.loss.agg == "token-mean" else "seq-mean-token-mean"),
        (f"{actor}.fsdp_config.param_offload", verl.param_offload),
        (f"{actor}.fsdp_config.optimizer_offload", verl.optimizer_offload),
        # cluster, checkpoints, validation
        ("trainer.nnodes", verl.nnodes),
        ("trainer.n_gpus_per_node", verl.n_gpus_per_node),
        ("trainer.total_training_steps", cfg.steps),
        ("trainer.save_freq", cfg.save_every if cfg.save_every > 0 else -1),
        ("trainer.test_freq", cfg.eval_every if validate else -1),
        ("trainer.val_before_train", validate),
        ("trainer.default_local_dir", str(out_dir)),
        ("trainer.max_actor_ckpt_to_keep", cfg.keep_last),
        ("trainer.project_name", verl.project),
        ("trainer.experiment_name", out_dir.name or "rememr1"),
        ("trainer.logger", list(verl.logger)),
    ]
    if cfg.model.lora:
        pairs += [("actor_rollout_ref.model.lora_rank", cfg.model.lora_rank),
                  ("actor_rollout_ref.model.lora_alpha", cfg.model.lora_alpha)]
    overrides = [f"{key}={hydra_value(value)}" for key, value in pairs]
    overrides += _section_overrides(SECTION, verl_options(cfg).to_section())
    return overrides + list(verl.overrides)


def verl_command(cfg: TrainConfig, *, python: str | None = None, **kwargs) -> list[str]:
    """The whole command: `python -m verl.trainer.main_ppo OVERRIDE...`."""
    return [python or sys.executable, "-m", "verl.trainer.main_ppo", *verl_overrides(cfg, **kwargs)]


def format_command(argv: list[str]) -> str:
    """The command as a shell would take it, one override per line."""
    head, rest = argv[:3], argv[3:]
    return " \\\n    ".join([shlex.join(head), *(shlex.quote(a) for a in rest)])


def run_verl(cfg: TrainConfig, *, dry_run: bool = False) -> int:
    """Print (`dry_run`) or run verl's trainer on `cfg`; the exit status."""
    import importlib.util
    import subprocess

    argv = verl_command(cfg, check_files=not dry_run)
    if not cfg.data.train:
        print(f"note: no training data given; the command reads {PLACEHOLDER_DATA}", file=sys.stderr)
    if dry_run:
        print(format_command(argv))
        return 0
    if importlib.util.find_spec("verl") is None:
        raise InputError("verl is not installed in this environment: pip install 'rememr1[verl]' "
                         "(or add --dry-run to print the command)")
    return subprocess.call(argv)


__all__ = ["format_command", "hydra_value", "mini_batches", "run_verl", "step_lengths",
           "verl_command", "verl_options", "verl_overrides"]
