"""Running an evaluation (`eval.run`): resumable JSONL results, retries, the lines run_eval returns."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rememr1.eval import read_lines

TESTS = Path(__file__).resolve().parents[1]


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
    from rememr1.agent import Agent, AgentConfig
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
    run_eval([sys.argv[1]], make_agent=lambda m: Agent(be, AgentConfig(method=m, chunk_size=64),
             SamplingParams(max_new_tokens=32, seed=0)),
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


def test_run_eval_returns_the_lines_it_wrote_and_found(tmp_path, scripted):
    """The lines run_eval returns are the saved ones, in order; a rerun with nothing left
    to do returns the same lines (found on disk) without running the model."""
    from rememr1.agent import Agent, AgentConfig
    from rememr1.backends.base import SamplingParams
    from rememr1.eval import run_eval

    data = tmp_path / "eval_toy_50.json"
    write_schema_d(data, 4)
    be = scripted(lambda prompt, i: "<update>notes</update>" if "<section>" in prompt else "\\boxed{answer1}")

    def go(**kw):
        return run_eval([data], make_agent=lambda m: Agent(be, AgentConfig(method=m, chunk_size=64),
                                                           SamplingParams(max_new_tokens=16, seed=0)),
                        methods=["rememr1", "memagent"], out_dir=tmp_path / "run",
                        config={"backend": "scripted"}, **kw)

    first = go(limit=3)
    saved = read_lines(tmp_path / "run")
    assert sorted(json.dumps(x, sort_keys=True) for x in first) == sorted(json.dumps(x, sort_keys=True) for x in saved)
    assert [(x["method"], x["id"]) for x in first] == [(m, f"q{i}") for m in ("rememr1", "memagent") for i in range(3)]
    calls = len(be.requests)
    assert go(limit=3) == first and len(be.requests) == calls  # nothing to do: found on disk
    more = go()  # one more item per method; the first three are found, not rerun
    assert len(more) == 8 and [x for x in more if x["id"] != "q3"] == first
