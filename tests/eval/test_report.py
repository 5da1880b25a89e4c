"""The report of a run (`eval.report`): strict and official scoring, the table, the files."""

import json

import pytest

from rememr1.eval import markdown_table, summarize, write_report


def _line(method, length, pred, answers, error=None, response=None):
    if response is None:
        response = "" if error else f"so \\boxed{{{pred}}}"
    return {"method": method, "length": length, "pred": pred, "answers": answers,
            "response": response, "error": error, "seconds": 1.0, "prompt_tokens": 10,
            "completion_tokens": 5}


def test_summary_strict_vs_official_and_table():
    lines = [
        _line("rememr1", "50", "Paris", ["paris"]),
        _line("rememr1", "50", None, ["rome"], error="timeout"),
        _line("rememr1", "50", "Lyon", ["Marseille", "Lyon"]),  # second alias only
        _line("memagent", "100", "x", ["y"]),
    ]
    strict = {(r["method"], r["length"]): r for r in summarize(lines, mode="strict")}
    official = {(r["method"], r["length"]): r for r in summarize(lines, mode="official")}
    assert strict[("rememr1", "50")]["accuracy"] == pytest.approx(200 / 3)  # any alias counts
    assert strict[("rememr1", "50")]["n"] == 3
    assert official[("rememr1", "50")]["n"] == 2  # failure dropped
    assert official[("rememr1", "50")]["accuracy"] == pytest.approx(50.0)  # first alias only
    table = markdown_table(summarize(lines), "strict")
    assert "| rememr1 |" in table and "66.7" in table and "strict" in table
    assert table.splitlines()[0] == "| method | 50 | 100 |"  # lengths sorted numerically


def test_report_files_agree_with_lines(tmp_path):
    out = tmp_path / "run"
    (out / "rememr1").mkdir(parents=True)
    lines = [_line("rememr1", "4k", "Oslo", ["oslo"]), _line("rememr1", "16k", "Bergen", ["Tromso"])]
    for i, line in enumerate(lines):
        line["id"] = str(i)
    (out / "rememr1" / "f.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    table, rows = write_report(out)
    assert (out / "accuracy.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert {(r["length"], r["accuracy"]) for r in summary["rows"]} == {("4k", 100.0), ("16k", 0.0)}
    assert table.splitlines()[0] == "| method | 4k | 16k |"




def test_report_from_given_lines_matches_the_report_from_disk(tmp_path):
    """`write_report(lines=...)` (what validation passes: run_eval's lines) writes what
    reading the directory back would."""
    out = tmp_path / "run"
    (out / "rememr1").mkdir(parents=True)
    lines = [_line("rememr1", "2k", "Oslo", ["oslo"]), _line("rememr1", "2k", "x", ["y"], error="timeout")]
    for i, line in enumerate(lines):
        line["id"] = str(i)
    (out / "rememr1" / "f.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    from_disk = write_report(out)
    summary = (out / "summary.json").read_text()
    (out / "rememr1" / "f.jsonl").unlink()
    assert write_report(out, lines=lines) == from_disk
    assert (out / "summary.json").read_text() == summary
