"""Declaring a user-facing option once: a dataclass field that also carries its help text
and command-line flag.

    @dataclass(frozen=True, kw_only=True)
    class AgentConfig:
        top_k: int = option(1, "memories recalled per query", flag="--top-k")

The field's default is the library default and the command line's; its help is the
command line's. `rememr1.cli.options` builds the typer options of `ask`, `eval`, `serve`
(and the training commands) from these fields, so a flag's name, default and help are
written in one place. A field declared with `option(...)` but no `flag` is a config-only
setting (YAML / `--set`), documented by its help all the same.
"""

from __future__ import annotations

import dataclasses
from typing import Any

_KEY = "rememr1.option"


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # "no command-line default of its own": the field's default applies


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    """What the command line needs of a field beyond its type and default.

    help        -- one line for `--help` (and the docs)
    flag        -- the long flag ("--top-k"); None = not on the command line
    short       -- a one-letter alias ("-m")
    panel       -- the `--help` section it is listed under
    cli_default -- the command line's default where it differs from the library's
                   (e.g. a fixed sampling seed on the command line, None in the library)
    tristate    -- a bool that is None unless given (`--x/--no-x`): it overrides a preset
    """

    help: str = ""
    flag: str | None = None
    short: str | None = None
    panel: str | None = None
    cli_default: Any = UNSET
    tristate: bool = False


def option(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None,
           short: str | None = None, panel: str | None = None, cli_default: Any = UNSET,
           tristate: bool = False, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its help and flag (see the module docstring)."""
    info = OptionInfo(help=help, flag=flag, short=short, panel=panel, cli_default=cli_default,
                      tristate=tristate)
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={_KEY: info})
    return dataclasses.field(default=default, metadata={_KEY: info})


def option_info(f: dataclasses.Field) -> OptionInfo | None:
    """The OptionInfo of a dataclass field, or None for a field declared without `option`."""
    return f.metadata.get(_KEY)


def documented_fields(cls) -> list[tuple[dataclasses.Field, OptionInfo]]:
    """The fields of dataclass `cls` declared with `option`, in declaration order."""
    return [(f, info) for f in dataclasses.fields(cls) if (info := option_info(f)) is not None]


__all__ = ["UNSET", "OptionInfo", "documented_fields", "option", "option_info"]
