"""Command-line options generated from the config dataclasses, so each is declared once.

    @app.command()
    @config_options(agent=AgentConfig, sampling=SamplingParams, backend=BackendOptions,
                    compat=AgentCompat, exclude={"method"})
    def ask(document: str = typer.Argument(...), agent: dict = None, sampling: dict = None, ...):
        ...   # agent == {"chunk_size": ..., "top_k": ...}: the fields given on the command line

Every field declared with `rememr1.options.option(..., flag=...)` becomes a typer option
with that flag, the field's type, its default (or `cli_default`) and its help; the
command receives one dict per group, keyed by field name. This is how `ask`, `eval` and
`serve` share the agent, sampling, backend and compatibility options without restating
them (as TRL builds its command line from its config classes).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from typing import Any, Optional

import typer

from ..compat import PANEL as COMPAT_PANEL
from ..compat import PRESETS
from ..options import UNSET, documented_fields, option_info



def preset_option(default: str | None = "none"):
    """The compatibility preset (`--compat`): the one option that is not a config field (it
    picks a set of them). `train` passes None, so a config file's preset stands."""
    return typer.Option(
        default, "--compat", rich_help_panel=COMPAT_PANEL,
        help=f"{' | '.join(PRESETS)}: behave like the official ReMemR1 code (memory, history, retrieval, "
        "recall parsing; eval also scores officially; train also its rewards and advantages, SPEC §9). "
        "Switches below override the preset.",
    )


PRESET_OPTION = preset_option()


def _plain(tp: Any) -> Any:
    """`X | None` as Optional[X] (what typer reads), other types as they are."""
    args = typing.get_args(tp)
    if (typing.get_origin(tp) in (typing.Union, types.UnionType)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return Optional[rest[0]] if len(rest) == 1 else tp
    return tp


def _param(name: str, info, tp: Any, default: Any, *, switch: bool = False,
           show_default: bool = True) -> inspect.Parameter:
    """The typer parameter of one flagged field: its flag (`--x/--no-x` for a `switch`),
    short alias, help and panel; Optional when its default is None."""
    decls = [f"{info.flag}/--no-{info.flag.removeprefix('--')}" if switch else info.flag]
    if info.short:
        decls.append(info.short)
    if default is None and typing.get_origin(tp) is not typing.Union:
        tp = Optional[tp]
    opt = typer.Option(default, *decls, help=info.help, rich_help_panel=info.panel, show_default=show_default)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=tp)


def params_of(cls, *, exclude: set[str] | frozenset[str] = frozenset()) -> list[inspect.Parameter]:
    """The typer parameters of `cls`'s fields that have a flag (see the module docstring)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f, info in documented_fields(cls):
        if info.flag is None or f.name in exclude:
            continue
        if info.tristate:
            out.append(_param(f.name, info, bool, None, switch=True, show_default=False))
            continue
        if info.cli_default is not UNSET:
            default = info.cli_default
        elif f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory()
        out.append(_param(f.name, info, _plain(hints[f.name]), default))
    return out


def config_options(*, exclude: set[str] | frozenset[str] = frozenset(), **groups):
    """Give the decorated command the options of each config class in `groups` (name ->
    class), less the fields named in `exclude`; it receives each group as a dict under
    the group's name. The command's own parameters come first in `--help`."""

    def decorate(fn):
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name not in groups]
        taken = {p.name for p in own}
        injected: dict[str, list[inspect.Parameter]] = {}
        for name, cls in groups.items():
            params = params_of(cls, exclude=exclude)
            clash = taken & {p.name for p in params}
            if clash:  # a programming error, caught by the CLI tests
                raise TypeError(f"options declared twice: {sorted(clash)}")
            taken |= {p.name for p in params}
            injected[name] = params

        @functools.wraps(fn)
        def wrapper(**kwargs):
            for name, params in injected.items():
                kwargs[name] = {p.name: kwargs.pop(p.name) for p in params}
            return fn(**kwargs)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        params += [p for ps in injected.values() for p in ps]
        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        wrapper.option_groups = {name: [p.name for p in ps] for name, ps in injected.items()}
        wrapper.generated_from = tuple(groups.values())  # for the tests: one declaration per option
        return wrapper

    return decorate


def key_params(cls, *, exclude: set[str] | frozenset[str] = frozenset(),
               prefix: str = "") -> list[tuple[str, inspect.Parameter]]:
    """(dotted key, typer parameter) for every flagged field of `cls` and of the config
    dataclasses it embeds (`TrainConfig`: "rollout.group_size", "agent.compat.memory_set",
    ...), less the keys or sections in `exclude`. Every option defaults to None (unset),
    so a config file's value stands unless the option is given; a bool is `--x/--no-x`."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if key in exclude:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += key_params(tp, exclude=exclude, prefix=key + ".")
            continue
        info = option_info(f)
        if info is None or info.flag is None:
            continue
        tp = _plain(tp)
        base = typing.get_args(tp)[0] if typing.get_origin(tp) is typing.Union else tp
        out.append((key, _param(key.replace(".", "__"), info, base, None, switch=base is bool, show_default=False)))
    return out


def config_keys(cls, *, exclude: set[str] | frozenset[str] = frozenset()):
    """Give the decorated command an option for every flagged field of `cls` and its
    sections (`key_params`); it receives the ones given as `overrides`, {dotted key: value},
    for `rl.config.load_config`. The command's own parameters come first in `--help`."""

    def decorate(fn):
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "overrides"]
        keyed = key_params(cls, exclude=exclude)
        clash = {p.name for p in own} & {p.name for _, p in keyed}
        flags = [d for _, p in keyed for d in p.default.param_decls]
        if clash or len(flags) != len(set(flags)):
            raise TypeError(f"options declared twice: {sorted(clash) or sorted(flags)}")

        @functools.wraps(fn)
        def wrapper(**kwargs):
            overrides = {}
            for key, p in keyed:
                value = kwargs.pop(p.name)
                if value is not None and value != []:
                    overrides[key] = value
            return fn(overrides=overrides, **kwargs)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + [p for _, p in keyed]
        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        wrapper.option_groups = {"overrides": [p.name for _, p in keyed]}
        wrapper.generated_from = (cls,)
        return wrapper

    return decorate


def options_of(command, *, exclude: set[str]):
    """Give the decorated command all of `command`'s options but those in `exclude` (same
    flags, help and defaults, declared once, in `command`); it receives them as one dict,
    `opts`, and `command`'s option groups (`config_options`) as dicts inside it."""
    borrowed = [p for p in inspect.signature(command).parameters.values() if p.name not in exclude]
    names = [p.name for p in borrowed]
    groups = getattr(command, "option_groups", {})

    def decorate(fn):
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "opts"]

        @functools.wraps(fn)
        def wrapper(**kwargs):
            opts = {name: kwargs.pop(name) for name in names}
            for group, fields in groups.items():
                opts[group] = {k: opts.pop(k) for k in fields if k in opts}
            return fn(opts=opts, **kwargs)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + borrowed
        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        wrapper.option_groups = {"opts": [n for fields in groups.values() for n in fields if n in names]}
        wrapper.generated_from = getattr(command, "generated_from", ())
        return wrapper

    return decorate


__all__ = ["PRESET_OPTION", "config_keys", "config_options", "key_params", "options_of", "params_of", "preset_option"]
