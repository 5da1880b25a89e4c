"""`rememr1 data revhop|longctx` as the lead mounts them (typer sub-app)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rememr1.cli.data import app
from rememr1.errors import InputError

runner = CliRunner()


def test_revhop_command(tmp_path):
    out = tmp_path / "rh"
    res = runner.invoke(app, ["revhop", "--out", str(out), "--lengths", "4k", "--hops", "2,3",
                              "--order", "reverse", "-n", "2", "--seed", "1", "--format", "json"])
    assert res.exit_code == 0, res.output
    files = sorted(p.name for p in out.iterdir())
    assert files == ["eval_revhop_h2_reverse_4k.json", "eval_revhop_h3_reverse_4k.json"]
    items = json.loads((out / files[1]).read_text())
    assert len(items) == 2 and all(it["hops"] == 3 and it["seed"] == 1 for it in items)
    assert str(out / files[0]) in res.stdout


def test_longctx_command(tmp_path, hotpot_file):
    out = tmp_path / "lc"
    res = runner.invoke(app, ["longctx", "--source", str(hotpot_file), "--docs", "30,40",
                              "--out", str(out), "--compat", "-n", "3", "--min-distance", "5"])
    assert res.exit_code == 0, res.output
    main = json.loads((out / "eval_hotpotqa_30.json").read_text())
    assert len(main) == 3 and all(it["num_docs"] == 30 for it in main)
    assert (out / "eval_hotpotqa_40.json").exists()


@pytest.mark.parametrize("args", [
    ["revhop", "--out", "x", "--order", "sideways", "-n", "1", "--lengths", "4k"],
    ["revhop", "--out", "x", "--hops", "two", "-n", "1"],
    ["longctx", "--source", "missing.json", "--out", "x", "--docs", "50"],
    ["longctx", "--source", "missing.json", "--out", "x", "--docs", "5o"],
])
def test_errors_are_input_errors(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, args)
    assert isinstance(res.exception, InputError), res.output
