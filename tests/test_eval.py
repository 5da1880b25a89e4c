"""Evaluation runner: resumable JSONL results, report table and plot, diagnostics."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rememr1.eval import markdown_table, memory_diagnostics, read_lines, summarize, write_report
from rememr1.records import RecallHit, StepRecord

TESTS = Path(__file__).resolve().parent


def write_schema_d(path: Path, n: int) -> None:
    items = []
    for i in range(n):
        items.append({
            "index": i, "id": f"q{i}", "input": f"What is item {i}?",
            "context": f"Document 1:\nItem {i} is answer{i}. " + "filler words here. " * 10,
            "answers": [f"answer{i}"], "num_docs": 50 if i % 2 else 100,
            "is_ordered": True, "is_reverse_ordered": False, "min_distance": 0,
            "evidence_idx": [0], "level": "hard", "type": "bridge",
        })
    path.write_text(json.dumps(items))


RUNNER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from conftest import ScriptedBackend
    from rememr1.agent import Agent
    from rememr1.backends.base import SamplingParams
    from rememr1.eval import run_eval
    import re

    def script(prompt, i):
        if "<section>" in prompt and "</memory>" in prompt:
            sec = re.search(r"<section>\\n(.*?)\\n</section>", prompt, re.S).group(1)
            return "<update>" + sec + "</update>" if "Item" in sec else "nothing new"
        m = re.search(r"Item (\\d+) is (answer\\d+)", prompt)
        return "\\\\boxed{{" + (m.group(2) if m else "none") + "}}"

    be = ScriptedBackend(script)
    kill_after = int(sys.argv[2])
    done = [0]
    def on_item(line):
        done[0] += 1
        if done[0] == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    run_eval([sys.argv[1]], make_agent=lambda m: Agent(be, method=m, chunk_size=64,
             sampling=SamplingParams(max_new_tokens=32, seed=0)),
             methods=["rememr1", "memagent"], out_dir=sys.argv[3], config={{"backend": "scripted"}},
             concurrency=2, on_item=on_item)
""")


def test_resume_after_kill_finds_every_item_exactly_once(tmp_path):
    data = tmp_path / "eval_toy_50.json"
    write_schema_d(data, 7)
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(tests=str(TESTS)))
    out = tmp_path / "run"
    first = subprocess.run([sys.executable, str(script), str(data), "5", str(out)])
    assert first.returncode == -9  # killed part-way
    partial = read_lines(out)
    assert 0 < len(partial) < 14
    second = subprocess.run([sys.executable, str(script), str(data), "0", str(out)])
    assert second.returncode == 0
    lines = read_lines(out)
    keys = [(line["method"], line["id"]) for line in lines]
    assert len(keys) == len(set(keys)) == 14
    assert {m for m, _ in keys} == {"rememr1", "memagent"}
    # the scripted model copies the answer into memory, so every item is right
    assert all(line["judge_sub_em"] == 1.0 for line in lines), [l["pred"] for l in lines]
    for field in ("pred", "response", "judge_em", "judge_sub_em", "judge_f1", "method",
                  "model", "length", "steps", "prompt_tokens", "completion_tokens", "seconds", "error"):
        assert field in lines[0]


def test_truncated_last_line_is_dropped_and_rerun(tmp_path):
    from rememr1.eval import ResultFile

    p = tmp_path / "m" / "f.jsonl"
    p.parent.mkdir()
    p.write_text(json.dumps({"id": "a"}) + "\n" + '{"id": "b", "pr')
    rf = ResultFile(p)
    assert rf.done == {"a"}
    rf.write({"id": "b"})
    rf.close()
    assert [json.loads(x)["id"] for x in p.read_text().splitlines()] == ["a", "b"]


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


def test_memory_diagnostics():
    def rec(step, before, after, recalled=()):
        return StepRecord(step=step, kind="memory", messages=[], reply="", finish_reason="stop",
                          prompt_tokens=1, completion_tokens=1, seconds=0.0,
                          memory_before=before, memory_after=after,
                          recalled_in=[RecallHit(t, 0, 1.0) for t in recalled])

    steps = [
        rec(0, "", "Maren Isle built by Tolland Yard"),
        rec(1, "Maren Isle built by Tolland Yard", "lens on the Maren Isle"),
        rec(2, "lens on the Maren Isle", "lens on the Maren Isle",
            recalled=["Maren Isle built by Tolland Yard"]),
    ]
    d = memory_diagnostics(steps, {"bridge_1": "Maren Isle", "answer": "Tolland Yard"})
    assert d["bridge_1"] == {"name": "Maren Isle", "entered": 0, "at_end": True, "recalled_back": False}
    assert d["answer"] == {"name": "Tolland Yard", "entered": 0, "at_end": False, "recalled_back": True}


def test_eval_cli_errors(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "rememr1", "eval", *args], capture_output=True)

    p = run(str(tmp_path / "nope*.json"), "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and b"no files match" in p.stderr and b"Traceback" not in p.stderr
    p = run(str(tmp_path / "missing"), "--report")
    assert p.returncode == 2 and b"no such run directory" in p.stderr
    empty = tmp_path / "emptyrun"
    empty.mkdir()
    p = run(str(empty), "--report")
    assert p.returncode == 2 and b"no results" in p.stderr


@pytest.mark.slow
def test_tiny_end_to_end_eval_with_builtin_model(tmp_path):
    """Two RevHop items, two methods, the built-in model: lines, table and plot agree."""
    def cli(*args):
        p = subprocess.run([sys.executable, "-m", "rememr1", *args], capture_output=True, timeout=900)
        assert p.returncode == 0, p.stderr.decode()
        return p.stdout.decode()

    cli("data", "revhop", "--out", str(tmp_path / "rh"), "--lengths", "2k", "--hops", "2",
        "--order", "reverse", "-n", "2", "--format", "json")
    out = tmp_path / "run"
    table = cli("eval", str(tmp_path / "rh" / "*.json"), "--method", "rememr1,memagent",
                "--out", str(out), "--chunk-size", "1024", "--max-new-tokens", "24", "--quiet")
    lines = read_lines(out)
    assert len(lines) == 4
    assert {(x["method"], x["length"]) for x in lines} == {("rememr1", "2k"), ("memagent", "2k")}
    for x in lines:
        assert x["steps"] == x["n_chunks"] + 1 >= 3
        assert x["model"] == "SmolLM2-135M-Instruct+lora"  # the packaged adapter, by default
        assert set(x["diagnostics"]) >= {"bridge_1", "answer"}
    summary = json.loads((out / "summary.json").read_text())
    for row in summary["rows"]:
        mine = [x for x in lines if x["method"] == row["method"]]
        assert row["n"] == len(mine) == 2
        assert row["accuracy"] == pytest.approx(100 * sum(x["judge_sub_em"] for x in mine) / 2)
    assert (out / "accuracy.png").stat().st_size > 1000
    assert (out / "report.md").read_text().strip() == table.strip()


def test_retry_errors_drops_failed_lines(tmp_path):
    from rememr1.eval import ResultFile

    p = tmp_path / "m" / "f.jsonl"
    p.parent.mkdir()
    p.write_text(json.dumps({"id": "a", "error": None}) + "\n" + json.dumps({"id": "b", "error": "timeout"}) + "\n")
    rf = ResultFile(p)
    assert rf.done == {"a", "b"}
    rf.drop_errors()
    assert rf.done == {"a"}
    rf.write({"id": "b", "error": None})
    rf.close()
    assert [json.loads(x)["id"] for x in p.read_text().splitlines()] == ["a", "b"]


def test_steps_line_marks_well_formed_updates(scripted):
    from rememr1.agent import Agent
    from rememr1.eval import steps_line

    replies = iter(["<update>kept one</update>", "no tags at all", "<update>a</update><update>b</update>",
                    "<update>cut off", "\\boxed{x}"])
    agent = Agent(scripted(lambda prompt, i: next(replies)), chunk_size=10)
    result = agent.answer("word " * 8, "Which word?")
    line = steps_line("id", result.steps, {})
    assert [s["update_ok"] for s in line["steps"]] == [True, False, False, False, None]
