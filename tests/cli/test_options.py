"""The command line's options come from the config dataclasses: one declaration each."""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass

import pytest
import typer
from typer.testing import CliRunner

from rememr1.agent import AgentConfig
from rememr1.backends import BackendOptions
from rememr1.backends.base import SamplingParams
from rememr1.cli import app
from rememr1.cli.options import config_options
from rememr1.compat import AgentCompat
from rememr1.options import documented_fields, option

runner = CliRunner()


@dataclass(frozen=True, kw_only=True)
class Knobs:
    size: int | None = option(None, "how big", flag="--size")
    rate: float = option(0.5, "how fast", flag="--rate", short="-r")
    seed: int | None = option(None, "which draw", flag="--seed", cli_default=3)
    strict: bool = option(False, "be strict", flag="--strict", tristate=True)
    hidden: int = option(7, "config only")  # no flag: not on the command line
    plain: int = 1  # not declared with option()


def _app(**groups):
    seen = {}
    demo = typer.Typer()

    @demo.command()
    @config_options(**groups)
    def run(name: str = typer.Option("x", "--name"), knobs: dict = None) -> None:
        seen.update(name=name, knobs=knobs)

    return demo, seen


def test_fields_become_options_with_their_defaults():
    demo, seen = _app(knobs=Knobs)
    assert runner.invoke(demo, []).exit_code == 0
    assert seen == {"name": "x", "knobs": {"size": None, "rate": 0.5, "seed": 3, "strict": None}}
    assert runner.invoke(demo, ["--size", "4", "-r", "0.25", "--seed", "9", "--no-strict"]).exit_code == 0
    assert seen["knobs"] == {"size": 4, "rate": 0.25, "seed": 9, "strict": False}
    assert runner.invoke(demo, ["--strict"]).exit_code == 0
    assert seen["knobs"]["strict"] is True
    Knobs(**seen["knobs"])  # the dict builds the config as it is


def test_help_is_the_fields_help_and_unflagged_fields_stay_off():
    demo, _ = _app(knobs=Knobs)
    out = runner.invoke(demo, ["--help"], env={"COLUMNS": "200"}).output
    assert "how big" in out and "how fast" in out and "be strict" in out
    assert "--hidden" not in out and "--plain" not in out
    assert runner.invoke(demo, ["--hidden", "1"]).exit_code != 0


def test_an_option_declared_twice_is_refused():
    @dataclass
    class Clash:
        name: str = option("y", "again", flag="--other-name")

    with pytest.raises(TypeError, match="declared twice"):
        _app(knobs=Clash)


@pytest.mark.parametrize("command", ["ask", "eval", "serve"])
def test_every_flagged_field_is_an_option_of_the_agent_commands(command):
    out = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250"}).output
    flags = set(re.findall(r"(--[a-z][a-z-]+)", out))
    for cls in (AgentConfig, SamplingParams, BackendOptions, AgentCompat):
        for f, info in documented_fields(cls):
            if info.flag is None or f.name == "method" or (command == "serve" and f.name == "api_key"):
                continue
            assert info.flag in flags, f"{command} lacks {info.flag} ({cls.__name__}.{f.name})"


def _field_flags(cls, seen=None) -> set[str]:
    """Every flag declared on a field of `cls` or of the config dataclasses it embeds."""
    import typing

    seen = set() if seen is None else seen
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            _field_flags(hints[f.name], seen)
    seen.update(info.flag for _, info in documented_fields(cls) if info.flag)
    return seen


# Spelled by a command on purpose: eval and serve take a list of methods, and serve's
# --api-key is the key its own clients send (the upstream one is --upstream-api-key).
OWN_FLAGS = {"--method", "--api-key"}


@pytest.mark.parametrize("name", ["ask", "eval", "serve", "train", "sft"])
def test_no_command_declares_a_config_field_again(name):
    """A command's options that a config field declares are generated from that field,
    never written again by hand: each such option has one definition, on its field."""
    command = next(c.callback for c in app.registered_commands
                   if (c.name or c.callback.__name__) == name)
    sources = getattr(command, "generated_from", ())
    assert sources, f"{name} declares all its options by hand"
    flags = set().union(*(_field_flags(cls) for cls in sources))
    generated = {n for names in command.option_groups.values() for n in names}
    for p in inspect.signature(command).parameters.values():
        if p.name in generated or not isinstance(p.default, typer.models.OptionInfo):
            continue
        own = {d.split("/")[0] for d in p.default.param_decls}
        assert not (own & flags) - OWN_FLAGS, f"{name} --{p.name} restates {own & flags}"


def test_ask_builds_the_library_defaults(monkeypatch, tmp_path):
    """With no options, `ask` runs the agent with AgentConfig() and the method's sampling."""
    from conftest import ScriptedBackend

    built = {}

    def load(self):
        built["backend"] = self
        return ScriptedBackend(lambda prompt, i: "\\boxed{x}" if "question" in prompt.lower() and i else "<update>m</update>")

    import rememr1.agent

    real = rememr1.agent.Agent

    def agent(backend, *, config, sampling):
        built["config"], built["sampling"] = config, sampling
        return real(backend, config=config, sampling=sampling)

    monkeypatch.setattr(BackendOptions, "load", load)
    monkeypatch.setattr(rememr1.agent, "Agent", agent)
    doc = tmp_path / "d.txt"
    doc.write_text("a short document about nothing in particular.")
    res = runner.invoke(app, ["ask", str(doc), "-q", "what?", "--quiet"])
    assert res.exit_code == 0, res.output
    assert built["config"] == AgentConfig()
    assert built["backend"] == BackendOptions()
    assert built["sampling"] == dataclasses.replace(SamplingParams(), max_new_tokens=2048, seed=0)
