"""Loading a training configuration: YAML plus overrides into one validated `TrainConfig`.

    cfg = load_config("revhop-smollm2-cpu", {"steps": 5, "rollout.group_size": 2})
    cfg = load_config(None, {"data.train": ["train.parquet"], "out": "runs/t1"})

A config file has the `TrainConfig` scalars at the top level (out, steps, save_every,
eval_every, log_every, seed, keep_last, compat) and one section per concern, each the
config object of the module that owns it (and validates itself):

    model:   rl.policy.ModelConfig       path (None = built-in SmolLM2-135M-Instruct), ref_path, dtype, ...
    data:    rl.data.DataConfig          train (files or globs), dev, shuffle_seed, max_items
    agent:   agent.AgentConfig           method, chunk_size, retriever, top_k, fallback, templates,
                                         answer_format, compat.* (the agent's official-code switches)
    rollout: rl.rollout.RolloutConfig    group_size, batch_size, sampling.* (a SamplingParams:
                                         max_new_tokens, temperature, top_p, seed, stop), engine, ...
    reward:  rl.rewards.RewardConfig     official-code switches, outcome metric
    advantage: rl.advantages.AdvantageConfig   alpha, scale_by_std, double_state, singleton_raw
    loss:    rl.loss.LossConfig          clip_low, clip_high, dual_clip_c, kl_beta, entropy_coef, agg
    optim:   rl.optim.OptimConfig        lr, warmup_steps, mini_batch_size, max_tokens_per_micro_batch, bf16, ...
    eval:    rl.validation.EvalConfig    max_items, sampling.* (a SamplingParams), batch_size, at_start
    distributed: rl.distributed.DistributedConfig   strategy (replicate | fsdp) under torchrun
    verl:    rl.verl_config.VerlConfig   nnodes, n_gpus_per_node, rollout_tp, ... (--engine verl)

Keys are dotted paths ("rollout.group_size", "rollout.sampling.temperature",
"agent.compat.memory_set") or top-level names ("steps"); sections nest as the objects do.
Two defaults follow other keys: `rollout.sampling.max_new_tokens` is the method's
(`Method.default_max_new_tokens`, as in `ask` and `eval`), and `eval.sampling.max_new_tokens`
the rollout's. `compat: official` turns on every official-code switch of `agent.compat`
(with the trainer's retrieval timing), `reward` and `advantage` (SPEC §9); keys set
explicitly win over the preset. Keys renamed since earlier versions (`RENAMED_KEYS`, e.g.
`loss.alpha` -> `advantage.alpha`) are still read, with a warning. Every unknown key and every value of
the wrong type or out of range is an `InputError` naming the key, so a typo never silently
falls back to a default. `--config` takes a path or the name of a packaged config
(`rememr1/configs/*.yaml`, listed by `packaged_configs()`).
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

from ..agent import AgentConfig, get_method
from ..compat import PRESETS, AgentCompat
from ..errors import InputError, RememrError, require
from ..options import option
from .advantages import AdvantageConfig
from .data import DataConfig
from .distributed import DistributedConfig
from .loss import LossConfig
from .optim import OptimConfig
from .policy import ModelConfig
from .rewards import RewardConfig
from .rollout import RolloutConfig
from .validation import EvalConfig
from .verl_config import VerlConfig

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TrainConfig:
    """The whole run. `save_every`/`eval_every` 0 = never (a checkpoint is still written at
    the end and on Ctrl-C); `keep_last` = how many checkpoints to keep (None = all)."""

    out: str = option("runs/train", "Run directory (checkpoints, metrics.jsonl, tb/, eval/); rerunning resumes.",
                      flag="--out", short="-o")
    steps: int = option(200, "Training steps in all.", flag="--steps")
    save_every: int = option(50, "Checkpoint every N steps (0: only at the end).", flag="--save-every")
    eval_every: int = option(0, "Validate on --dev every N steps (0: never).", flag="--eval-every")
    log_every: int = 1
    seed: int = option(0, "Sampling and initialisation seed.", flag="--seed")
    keep_last: int | None = None
    compat: str = "none"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    verl: VerlConfig = field(default_factory=VerlConfig)

    def __post_init__(self) -> None:
        require(self.steps >= 1, "steps", f"must be at least 1, got {self.steps}")
        for key in ("save_every", "eval_every"):
            require(getattr(self, key) >= 0, key, "must be >= 0 (0 = never)")
        require(self.log_every >= 1, "log_every", "must be at least 1")
        require(self.keep_last is None or self.keep_last >= 1, "keep_last", "must be at least 1")
        require(bool(self.out.strip()), "out", "must name a directory")
        require(self.compat in PRESETS, "compat",
                f"unknown value {self.compat!r}; choose one of: {', '.join(PRESETS)}")
        method = get_method(self.agent.method)
        require(method.trainable, "agent.method",
                f"{method.name} has no memory steps to train; choose a memory method")

    def to_dict(self) -> dict[str, Any]:
        """Plain values (tuples as lists), as `config.yaml` holds them."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# The sections of a config file: the config objects a TrainConfig embeds.
SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "agent": AgentConfig,
    "rollout": RolloutConfig,
    "reward": RewardConfig,
    "advantage": AdvantageConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "eval": EvalConfig,
    "distributed": DistributedConfig,
    "verl": VerlConfig,
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


def _flatten(data: dict[str, Any], where: str, cls: type = TrainConfig, prefix: str = "") -> dict[str, Any]:
    """{"rollout": {"group_size": 4}} -> {"rollout.group_size": 4}, down to the fields that
    are config objects themselves (`agent.compat`)."""
    flat: dict[str, Any] = {}
    nested = _nested_fields(cls)
    for key, value in data.items():
        key = str(key)
        if key in nested:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise InputError(f"{where}: section {prefix + key!r} must be a mapping")
            flat.update(_flatten(value, where, nested[key], f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _nested_fields(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def _scalar_fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(hints[f.name])}


def known_keys(cls: type = TrainConfig, prefix: str = "") -> list[str]:
    keys = [prefix + name for name in _scalar_fields(cls)]
    for name, sub in _nested_fields(cls).items():
        keys += known_keys(sub, f"{prefix}{name}.")
    return keys


# Keys renamed since earlier versions -> their names now. Still read (a saved run's
# config.yaml, a script), with a warning; a mapping that sets both is an error.
RENAMED_KEYS = {
    "loss.alpha": "advantage.alpha",
    "loss.scale_by_std": "advantage.scale_by_std",
    "reward.double_state_advantage": "advantage.double_state",
    "reward.singleton_raw_advantage": "advantage.singleton_raw",
    "rollout.max_new_tokens": "rollout.sampling.max_new_tokens",
    "rollout.temperature": "rollout.sampling.temperature",
    "rollout.top_p": "rollout.sampling.top_p",
    "eval.max_new_tokens": "eval.sampling.max_new_tokens",
    "eval.temperature": "eval.sampling.temperature",
    "eval.top_p": "eval.sampling.top_p",
}
ROLLOUT_TOKENS = "rollout.sampling.max_new_tokens"
EVAL_TOKENS = "eval.sampling.max_new_tokens"


def _renamed(flat: dict[str, Any], where: str, *, warn: bool = True) -> dict[str, Any]:
    """`flat` with renamed keys under their new names (a None value, "the default" in
    older saved configs, is dropped)."""
    out = dict(flat)
    for old, new in RENAMED_KEYS.items():
        if old not in out:
            continue
        value = out.pop(old)
        if new in out:
            raise InputError(f"{where}: {old!r} is the old name of {new!r}; give only {new!r}")
        if warn:
            log.warning("%s: config key %r is now %r", where, old, new)
        if value is not None:
            out[new] = value
    return out


def _derived_defaults(flat: dict[str, Any]) -> dict[str, Any]:
    """Fill the defaults that follow other keys: the rollout's token budget per step from
    the method (`Method.default_max_new_tokens`), validation's from the rollout's."""
    out = dict(flat)
    if ROLLOUT_TOKENS not in out:
        try:
            method = get_method(str(out.get("agent.method") or AgentConfig().method))
        except RememrError:
            method = None  # reported by AgentConfig's own validation
        if method is not None:
            out[ROLLOUT_TOKENS] = method.default_max_new_tokens
    if EVAL_TOKENS not in out and ROLLOUT_TOKENS in out:
        out[EVAL_TOKENS] = out[ROLLOUT_TOKENS]
    return out


def _preset_keys(preset: str) -> dict[str, Any]:
    """The flat keys a compatibility preset sets (`compat: official`)."""
    if preset != "official":
        return {}
    keys: dict[str, Any] = {}
    for section, value in (("agent.compat", AgentCompat.official(training=True)),
                           ("reward", RewardConfig.official()),
                           ("advantage", AdvantageConfig.official())):
        for f in dataclasses.fields(value):
            if isinstance(getattr(value, f.name), bool):
                keys[f"{section}.{f.name}"] = getattr(value, f.name)
    return keys


def build_config(flat: dict[str, Any], *, where: str = "config", warn_renamed: bool = True) -> TrainConfig:
    """A validated TrainConfig from a flat {dotted key: value} mapping; a compatibility
    preset (`compat`) fills the switches the mapping does not set, and the token budgets
    that follow other keys are filled (`_derived_defaults`)."""
    flat = _renamed(flat, where, warn=warn_renamed)
    preset = str(flat.get("compat") or "none")
    if preset not in PRESETS:
        raise InputError(f"compat: unknown value {preset!r}; choose one of: {', '.join(PRESETS)}")
    return _build(TrainConfig, _derived_defaults({**_preset_keys(preset), **flat}), where=where, prefix="")


def build_section(cls: type, flat: dict[str, Any], *, where: str) -> Any:
    """A config object of class `cls` (a section, or another config such as `SFTConfig`)
    from dotted keys, validated the way `build_config` validates a TrainConfig."""
    return _build(cls, flat, where=where, prefix="")


def _field_default(cls: type, name: str) -> Any:
    """The default a dataclass gives field `name` (None when it has none)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _build(cls: type, flat: dict[str, Any], *, where: str, prefix: str, base: Any = None):
    """`cls` from the keys under `prefix`, the fields they leave out taken from `base`
    (the default the enclosing object gives this section, e.g. the rollout's sampling at
    temperature 1.0) or from `cls`'s own defaults; each object validates itself, and its
    error is reported under the key path of the section."""
    scalars, nested = _scalar_fields(cls), _nested_fields(cls)
    values: dict[str, Any] = {}
    if base is not None:
        values = {name: getattr(base, name) for name in scalars}
    below: dict[str, dict[str, Any]] = {name: {} for name in nested}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if rest and head in nested:
            below[head][rest] = value
        elif not rest and head in scalars:
            values[head] = _coerce(value, scalars[head], prefix + key)
        else:
            raise _unknown(prefix + key, where)
    for name, sub in nested.items():
        sub_base = getattr(base, name) if base is not None else _field_default(cls, name)
        values[name] = _build(sub, below[name], where=where, prefix=f"{prefix}{name}.", base=sub_base)
    try:
        return cls(**values)
    except ValueError as exc:  # require(): "field: message"
        raise InputError(f"{prefix}{exc}") from None
    except RememrError as exc:  # an object that validates with one-line user errors
        raise InputError(f"{prefix[:-1]}: {exc}" if prefix else str(exc)) from None


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
    if origin in (list, tuple):
        if isinstance(value, (str, Path)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{key}: expected a list, got {value!r}")
        items = [_coerce(v, typing.get_args(tp)[0], key) for v in value]
        return tuple(items) if origin is tuple else items
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


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a TrainConfig from `TrainConfig.to_dict()` output (as saved with a run)."""
    return build_config(_flatten(data, "saved config"), where="saved config", warn_renamed=False)


__all__ = [
    "RENAMED_KEYS",
    "SECTIONS",
    "TrainConfig",
    "build_config",
    "config_from_dict",
    "load_config",
    "packaged_configs",
    "resolve_config_path",
]
