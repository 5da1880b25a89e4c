"""Training configuration: one dataclass per concern, loaded from YAML plus overrides.

    cfg = load_config("revhop-smollm2-cpu", {"steps": 5, "rollout.group_size": 2})
    cfg = load_config(None, {"data.train": ["train.parquet"], "out": "runs/t1"})

A config file has the `TrainConfig` scalars at the top level (out, steps, save_every,
eval_every, log_every, seed, keep_last, compat) and one section per concern:

    model:   path (None = the built-in SmolLM2-135M-Instruct), ref_path, dtype, device, ...
    data:    train (files or globs), dev, shuffle_seed, max_items
    rollout: method, group_size, batch_size, chunk_size, max_new_tokens, temperature, ...
    reward:  `rememr1.rewards.RewardConfig` fields (official-code switches, outcome metric)
    agent_compat: `rememr1.compat.AgentCompat` fields (the agent's official-code switches)
    loss:    clip_low, clip_high, dual_clip_c, kl_beta, entropy_coef, agg, alpha, scale_by_std
    optim:   lr, warmup_steps, weight_decay, grad_clip, mini_batch_size, grad_accum, bf16, ...
    eval:    max_items, temperature, top_p, batch_size, max_new_tokens

`compat: official` turns on every official-code switch of `agent_compat` (with the
trainer's retrieval timing) and `reward` (SPEC §9); keys set explicitly win over the
preset. Overrides use dotted keys ("rollout.group_size") or top-level names ("steps"). Every
unknown key and every value of the wrong type or out of range is an `InputError` naming
the key, so a typo never silently falls back to a default. `--config` takes a path or the
name of a packaged config (`rememr1/configs/*.yaml`, listed by `packaged_configs()`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

from ..compat import PRESETS, AgentCompat
from ..errors import InputError
from ..protocol import ANSWER_FORMATS
from ..rewards import RewardConfig

TRAINABLE_METHODS = ("rememr1", "memagent", "rule-callback")
DTYPES = ("auto", "float32", "bfloat16", "float16")
AGGREGATIONS = ("token-mean", "seq-mean")  # as rememr1.rl.loss.AGGREGATIONS (torch-free here)
RETRIEVERS = ("tfidf", "bm25", "overlap", "dense")
FALLBACKS = ("keep", "reply", "empty")


@dataclass(kw_only=True)
class ModelConfig:
    """The policy and the frozen reference model.

    path     -- HF model directory (or .gguf); None = the built-in SmolLM2-135M-Instruct,
                converted once to an HF directory. The policy's master weights are always
                float32, whatever the checkpoint's dtype.
    ref_path -- the KL reference; None = a frozen copy of the initial policy.
    dtype    -- dtype the reference model's weights are held in ("auto": bfloat16 on a GPU
                that supports it, else float32).
    """

    path: str | None = None
    ref_path: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    gradient_checkpointing: bool = False


@dataclass(kw_only=True)
class DataConfig:
    """Training questions: schema-A parquet (MemAgent's files unchanged) or any schema the
    loaders read; `train` entries may be globs. `max_items` keeps the first N questions
    (before shuffling); every epoch is a fresh permutation seeded by (shuffle_seed, epoch)."""

    train: list[str] = field(default_factory=list)
    dev: str | None = None
    shuffle_seed: int = 0
    max_items: int | None = None


@dataclass(kw_only=True)
class RolloutConfig:
    """How episodes are sampled: G rollouts for each of `batch_size` questions per step,
    all in flight together; `generation_batch_size` caps one `generate` call."""

    method: str = "rememr1"
    group_size: int = 16
    batch_size: int = 128
    chunk_size: int = 5000
    max_new_tokens: int = 2048
    temperature: float = 1.0
    top_p: float = 1.0
    retriever: str = "tfidf"
    top_k: int = 1
    max_context_tokens: int | None = None
    fallback: str = "keep"
    templates: str | None = None
    answer_format: str = "boxed"
    generation_batch_size: int = 64


@dataclass(kw_only=True)
class LossConfig:
    """The objective (SPEC §4): PPO clip with dual clip, k3 KL to the reference, entropy
    bonus, and the advantage mix A = alpha A_out + (1 - alpha) A_state."""

    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip_c: float | None = 3.0
    kl_beta: float = 0.001
    entropy_coef: float = 0.0
    agg: str = "token-mean"
    alpha: float = 0.8
    scale_by_std: bool = False


@dataclass(kw_only=True)
class OptimConfig:
    """AdamW on float32 master weights, linear warm-up then constant lr, gradient clipping.

    mini_batch_size  -- questions (with all their rollouts' steps) per optimiser update;
                        None = the whole batch (one update per step, on-policy).
    micro_batch_size -- sequences per forward/backward pass; None = split each mini-batch
                        into `grad_accum` passes. Gradients of the passes are summed.
    bf16             -- autocast forward passes of the policy (rollout, update) to bfloat16.
    """

    lr: float = 1e-6
    warmup_steps: int = 20
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    mini_batch_size: int | None = None
    grad_accum: int = 1
    micro_batch_size: int | None = None
    epochs: int = 1
    bf16: bool = False


@dataclass(kw_only=True)
class EvalConfig:
    """Periodic validation on `data.dev` through the evaluation code (sub-EM). Sampling
    defaults are the paper's evaluation settings; max_new_tokens None = the rollout's."""

    max_items: int | None = 64
    temperature: float = 0.7
    top_p: float = 0.95
    batch_size: int = 64
    max_new_tokens: int | None = None
    at_start: bool = False


@dataclass(kw_only=True)
class TrainConfig:
    """The whole run. `save_every`/`eval_every` 0 = never (a checkpoint is still written at
    the end and on Ctrl-C); `keep_last` = how many checkpoints to keep (None = all)."""

    out: str = "runs/train"
    steps: int = 200
    save_every: int = 50
    eval_every: int = 0
    log_every: int = 1
    seed: int = 0
    keep_last: int | None = None
    compat: str = "none"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    agent_compat: AgentCompat = field(default_factory=AgentCompat)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "rollout": RolloutConfig,
    "reward": RewardConfig,
    "agent_compat": AgentCompat,
    "loss": LossConfig,
    "optim": OptimConfig,
    "eval": EvalConfig,
}


# ------------------------------------------------------------------------------ loading


def packaged_configs() -> list[str]:
    """Names of the configs shipped with the package (`rememr1/configs/*.yaml`)."""
    root = resources.files("rememr1") / "configs"
    try:
        return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))
    except (FileNotFoundError, NotADirectoryError):
        return []


def resolve_config_path(name_or_path: str) -> Path:
    """A config file from a path, or from the name of a packaged config."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    stem = p.name[:-5] if p.name.endswith(".yaml") else p.name
    if stem in packaged_configs():
        return Path(str(resources.files("rememr1") / "configs" / f"{stem}.yaml"))
    names = ", ".join(packaged_configs()) or "none"
    raise InputError(f"config not found: {name_or_path} (not a file; packaged configs: {names})")


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The run's configuration: defaults, then the YAML file (a path or packaged name),
    then `overrides` (dotted keys). Raises InputError for unknown keys and bad values."""
    raw: dict[str, Any] = {}
    where = "config"
    if path is not None:
        import yaml

        file = resolve_config_path(str(path))
        where = str(file)
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" (line {mark.line + 1})" if mark is not None else ""
            raise InputError(f"{where} is not valid YAML{at}") from None
        except OSError as exc:
            raise InputError(f"cannot read {where}: {exc.strerror or exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InputError(f"{where}: the top level must be a mapping of keys to values")
        raw = _flatten(loaded, where)
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key] = value
    return build_config(raw, where=where)


def _flatten(data: dict[str, Any], where: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        if key in SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise InputError(f"{where}: section {key!r} must be a mapping")
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[key] = value
    return flat


def _top_fields() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig) if f.name not in SECTIONS}


def known_keys() -> list[str]:
    keys = list(_top_fields())
    for name, cls in SECTIONS.items():
        keys += [f"{name}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def _preset_keys(preset: str) -> dict[str, Any]:
    """The flat keys a compatibility preset sets (`compat: official`)."""
    if preset != "official":
        return {}
    keys: dict[str, Any] = {}
    for section, value in (("agent_compat", AgentCompat.official(training=True)),
                           ("reward", RewardConfig.official())):
        for f in dataclasses.fields(value):
            if isinstance(getattr(value, f.name), bool):
                keys[f"{section}.{f.name}"] = getattr(value, f.name)
    return keys


def build_config(flat: dict[str, Any], *, where: str = "config") -> TrainConfig:
    """A validated TrainConfig from a flat {dotted key: value} mapping; a compatibility
    preset (`compat`) fills the switches the mapping does not set."""
    preset = str(flat.get("compat") or "none")
    _choice(preset, PRESETS, "compat")
    flat = {**_preset_keys(preset), **flat}
    top_types = _top_fields()
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in flat.items():
        section, _, name = key.partition(".")
        if name and section in SECTIONS:
            cls = SECTIONS[section]
            hints = typing.get_type_hints(cls)
            if name not in hints or name not in {f.name for f in dataclasses.fields(cls)}:
                raise _unknown(key, where)
            sections[section][name] = _coerce(value, hints[name], key)
        elif not name and key in top_types:
            top[key] = _coerce(value, top_types[key], key)
        else:
            raise _unknown(key, where)
    built: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        try:
            built[name] = cls(**sections[name])
        except ValueError as exc:  # RewardConfig validates itself
            raise InputError(f"{name}: {exc}") from None
    cfg = TrainConfig(**top, **built)
    validate(cfg)
    return cfg


def _unknown(key: str, where: str) -> InputError:
    import difflib

    close = difflib.get_close_matches(key, known_keys(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return InputError(f"{where}: unknown key {key!r}{hint}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` as type `tp` (int, float, str, bool, list[str], X | None)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "~")):
            return None
        return _coerce(value, args[0], key)
    if origin is list:
        if isinstance(value, (str, Path)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, typing.get_args(tp)[0], key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.strip().lower() in ("true", "yes", "1", "on")
        raise InputError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise InputError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise InputError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise InputError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-6" (no dot) as a string
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise InputError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, Path)):
            return str(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise InputError(f"{key}: expected a string, got {value!r}")
    return value


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise InputError(f"{key}: {msg}")


def _choice(value: str, choices: tuple[str, ...], key: str) -> None:
    _check(value in choices, key, f"unknown value {value!r}; choose one of: {', '.join(choices)}")


def validate(cfg: TrainConfig) -> None:
    """Range and choice checks (types were checked while loading)."""
    _check(cfg.steps >= 1, "steps", f"must be at least 1, got {cfg.steps}")
    for key in ("save_every", "eval_every"):
        _check(getattr(cfg, key) >= 0, key, "must be >= 0 (0 = never)")
    _check(cfg.log_every >= 1, "log_every", "must be at least 1")
    _check(cfg.keep_last is None or cfg.keep_last >= 1, "keep_last", "must be at least 1")
    _check(bool(cfg.out.strip()), "out", "must name a directory")
    m = cfg.model
    _choice(m.dtype, DTYPES, "model.dtype")
    _check(m.device in ("auto", "cpu", "cuda") or m.device.startswith("cuda:"), "model.device",
           f"unknown device {m.device!r}; choose auto, cpu, cuda or cuda:N")
    d = cfg.data
    _check(d.max_items is None or d.max_items >= 1, "data.max_items", "must be at least 1")
    r = cfg.rollout
    _choice(r.method, TRAINABLE_METHODS, "rollout.method")
    _choice(r.retriever, RETRIEVERS, "rollout.retriever")
    _choice(r.fallback, FALLBACKS, "rollout.fallback")
    _choice(r.answer_format, ANSWER_FORMATS, "rollout.answer_format")
    _check(not cfg.agent_compat.tfidf_model_tokens or r.retriever == "tfidf",
           "agent_compat.tfidf_model_tokens", f"needs rollout.retriever tfidf, not {r.retriever!r}")
    for key in ("group_size", "batch_size", "chunk_size", "max_new_tokens", "top_k", "generation_batch_size"):
        _check(getattr(r, key) >= 1, f"rollout.{key}", f"must be at least 1, got {getattr(r, key)}")
    _check(r.group_size >= 2, "rollout.group_size",
           "must be at least 2: advantages are relative to the other rollouts of a question")
    _check(r.temperature > 0, "rollout.temperature", "must be > 0 (training needs sampled rollouts)")
    _check(0 < r.top_p <= 1, "rollout.top_p", "must be in (0, 1]")
    _check(r.max_context_tokens is None or r.max_context_tokens >= 1, "rollout.max_context_tokens",
           "must be at least 1")
    lo = cfg.loss
    _check(0 <= lo.clip_low < 1, "loss.clip_low", "must be in [0, 1)")
    _check(lo.clip_high >= 0, "loss.clip_high", "must be >= 0")
    _check(lo.dual_clip_c is None or lo.dual_clip_c > 1, "loss.dual_clip_c", "must be > 1 (or null to disable)")
    _check(lo.kl_beta >= 0, "loss.kl_beta", "must be >= 0")
    _choice(lo.agg, AGGREGATIONS, "loss.agg")
    _check(0 <= lo.alpha <= 1, "loss.alpha", f"must be in [0, 1], got {lo.alpha}")
    o = cfg.optim
    _check(o.lr > 0, "optim.lr", "must be > 0")
    _check(o.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
    _check(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    _check(o.grad_clip > 0, "optim.grad_clip", "must be > 0")
    _check(o.grad_accum >= 1, "optim.grad_accum", "must be at least 1")
    _check(o.epochs >= 1, "optim.epochs", "must be at least 1")
    _check(o.mini_batch_size is None or o.mini_batch_size >= 1, "optim.mini_batch_size", "must be at least 1")
    _check(o.micro_batch_size is None or o.micro_batch_size >= 1, "optim.micro_batch_size", "must be at least 1")
    e = cfg.eval
    _check(e.max_items is None or e.max_items >= 1, "eval.max_items", "must be at least 1")
    _check(e.temperature >= 0, "eval.temperature", "must be >= 0 (0 = greedy)")
    _check(0 < e.top_p <= 1, "eval.top_p", "must be in (0, 1]")
    _check(e.batch_size >= 1, "eval.batch_size", "must be at least 1")
    _check(e.max_new_tokens is None or e.max_new_tokens >= 1, "eval.max_new_tokens", "must be at least 1")


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a TrainConfig from `TrainConfig.to_dict()` output (as saved with a run)."""
    return build_config(_flatten(data, "saved config"), where="saved config")


__all__ = [
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RewardConfig",
    "RolloutConfig",
    "TrainConfig",
    "build_config",
    "config_from_dict",
    "load_config",
    "packaged_configs",
    "resolve_config_path",
]
