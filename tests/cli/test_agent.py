"""The command line: bad input gets one line and a non-zero exit; real runs trace every step."""

import json
import socket
import subprocess
import sys

import pytest

QUESTION = "Which company built the ship that carried the lens to the Varrow Point lighthouse?"


def run(*args, stdin: bytes | None = None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "rememr1", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )


def assert_one_line_error(proc, code: int, fragment: str):
    err = proc.stderr.decode()
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]


@pytest.fixture
def doc(tmp_path):
    p = tmp_path / "doc.txt"
    p.write_text("The Maren Isle was built by Tolland Yard. " * 20)
    return p


def test_missing_file():
    assert_one_line_error(run("ask", "/nonexistent/doc.txt", "-q", "q?"), 2, "no such file")


def test_directory(tmp_path):
    assert_one_line_error(run("ask", str(tmp_path), "-q", "q?"), 2, "directory")


def test_empty_document(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("  \n\n ")
    assert_one_line_error(run("ask", str(p), "-q", "q?"), 2, "empty")


def test_empty_stdin():
    assert_one_line_error(run("ask", "-", "-q", "q?", stdin=b""), 2, "empty")


def test_empty_question(doc):
    assert_one_line_error(run("ask", str(doc), "-q", "   "), 2, "question is empty")


def test_non_utf8(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    assert_one_line_error(run("ask", str(p), "-q", "q?"), 2, "not valid utf-8")


def test_unreadable_file(doc, monkeypatch):
    # Tests run as root in CI, where chmod cannot make a file unreadable: simulate it.
    from pathlib import Path

    from rememr1.cli import read_document
    from rememr1.errors import InputError

    def deny(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(InputError, match="permission denied"):
        read_document(str(doc))


def test_unknown_backend(doc):
    assert_one_line_error(run("ask", str(doc), "-q", "q?", "--backend", "nope"), 2, "unknown backend")


def test_unknown_method(doc):
    assert_one_line_error(run("ask", str(doc), "-q", "q?", "--method", "nope"), 2, "unknown method")


def test_unknown_model_path(doc):
    proc = run("ask", str(doc), "-q", "q?", "--model", "/nonexistent/model.gguf")
    assert proc.returncode != 0
    assert_one_line_error(proc, proc.returncode, "/nonexistent/model.gguf")


def test_unknown_hf_model_path(doc):
    proc = run("ask", str(doc), "-q", "q?", "--backend", "hf", "--model", "/nonexistent/ckpt")
    assert proc.returncode != 0
    assert_one_line_error(proc, proc.returncode, "/nonexistent/ckpt")


def test_unreachable_server(doc):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run("ask", str(doc), "-q", "q?", "--backend", "openai",
               "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "m", "--timeout", "5",
               timeout=120)
    assert proc.returncode == 1
    assert_one_line_error(proc, 1, f"127.0.0.1:{port}")


def _check_trace(path, n_chunks_expected=None):
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    steps, result = lines[:-1], lines[-1]
    assert result["type"] == "result"
    assert result["steps"] == len(steps) == result["n_chunks"] + 1
    if n_chunks_expected is not None:
        assert result["n_chunks"] == n_chunks_expected
    # the step line of an eval steps file (`eval.lines.step_line`) plus the trace's detail
    fields = ("step", "kind", "span", "memory", "query", "hits", "recalled_in", "finish", "error",
              "answer", "tokens", "well_formed", "prompt", "reply", "memory_before", "prompt_tokens",
              "seconds")
    for i, rec in enumerate(steps):
        for f in fields:
            assert f in rec, f
        assert rec["step"] == i
        assert rec["prompt_tokens"] > 0 and rec["seconds"] >= 0
    spans = [r["span"] for r in steps[:-1]]
    assert spans[0][0] == 0
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous
    assert spans[-1][1] == result["document_tokens"]
    assert steps[-1]["kind"] == "final" and steps[-1]["span"] is None
    assert result["completion_tokens"] == sum(r["tokens"] for r in steps)
    return steps, result


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["llamacpp", "hf"])
def test_builtin_model_end_to_end(backend, tmp_path):
    trace = tmp_path / "trace.jsonl"
    doc = open("examples/harbor_report.txt", "rb").read()
    proc = run("ask", "-", "-q", QUESTION, "--backend", backend, "--chunk-size", "300",
               "--max-new-tokens", "48", "--trace", str(trace), "--quiet", stdin=doc)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip()  # an answer (or the raw reply) on stdout
    steps, result = _check_trace(trace)
    assert result["n_chunks"] >= 2


@pytest.mark.slow
def test_ask_compat_official_traces_whole_reply_memories(tmp_path):
    from rememr1.protocol import official_memory

    trace = tmp_path / "trace.jsonl"
    proc = run("ask", "examples/harbor_report.txt", "-q", QUESTION, "--chunk-size", "300",
               "--max-new-tokens", "48", "--compat", "official", "--trace", str(trace), "--quiet")
    assert proc.returncode == 0, proc.stderr.decode()
    steps, _ = _check_trace(trace)
    memory_steps = steps[:-1]
    for rec in memory_steps:
        assert rec["memory"] == official_memory(rec["reply"])  # the whole reply, always
    # the next prompt shows that memory as written (the model's tags are not defused)
    for rec, nxt in zip(memory_steps, steps[1:]):
        if rec["memory"].strip():
            assert rec["memory"] in nxt["prompt"][0]["content"]


def test_compat_and_scoring_bad_values(doc, tmp_path):
    assert_one_line_error(run("ask", str(doc), "-q", "q?", "--compat", "offical"), 2, "offical")
    assert_one_line_error(run("eval", str(doc), "--out", str(tmp_path / "r"), "--scoring", "lenient"),
                          2, "lenient")
    assert_one_line_error(run("ask", str(doc), "-q", "q?", "--compat", "official", "--retriever", "bm25"),
                          2, "tfidf")


def test_eval_report_official_denominator(tmp_path):
    """A run whose final replies have and lack boxes: the official report drops only the
    failed generation; strict counts everything."""
    out = tmp_path / "run"
    (out / "rememr1").mkdir(parents=True)
    replies = [  # (final reply, error)
        (r"\boxed{Paris}", None), ("I could not find it.", None), (r"\boxed{}", None),
        ("   ", None), ("", "server error 500"), (r"\boxed{Lyon", None),
    ]
    lines = [{"id": str(i), "method": "rememr1", "length": "4k", "answers": ["Paris"],
              "pred": r"Paris" if i == 0 else None, "response": reply, "error": error,
              "seconds": 1.0, "prompt_tokens": 1, "completion_tokens": 1}
             for i, (reply, error) in enumerate(replies)]
    (out / "rememr1" / "f.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    official = run("eval", str(out), "--report", "--scoring", "official")
    assert official.returncode == 0, official.stderr.decode()
    assert "20.0" in official.stdout.decode() and "(n=5)" in official.stdout.decode()
    assert "1 here" in official.stdout.decode()  # one item dropped
    strict = run("eval", str(out), "--report")
    assert "16.7" in strict.stdout.decode() and "(n=6)" in strict.stdout.decode()
    # the report's files, the viewer page included (the CLI writes it: eval sits below the viewer)
    for name in ("report.md", "summary.json", "accuracy.png", "report.html"):
        assert (out / name).stat().st_size > 0, name
