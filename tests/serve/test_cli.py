"""The `rememr1 serve` command: what it refuses before loading a model, and (slow) the
built-in model served end to end, queried with the openai client, stopped with Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "harbor_report.txt"


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until the server at `url` lists its models (it must not exit first)."""
    deadline = time.time() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            if httpx.get(url + "/models", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.time() < deadline, "the server did not start"
        time.sleep(0.2)


def ctrl_c(proc: subprocess.Popen) -> str:
    """Ctrl-C the server; its stderr once it has exited."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=30)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def rememr1(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rememr1", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, needle", [
    (["--host", "0.0.0.0"], "refusing to listen on 0.0.0.0 without an API key"),
    (["--host", "192.168.1.20"], "without an API key"),
    (["--method", "rememr1,wizard"], "unknown method 'wizard'"),
    (["--max-episodes", "0"], "max-episodes must be at least 1"),
    (["--api-key", "k", "--backend", "nope"], "unknown backend"),
])
def test_serve_refuses_bad_options_with_one_line(args, needle):
    proc = rememr1("serve", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and needle in proc.stderr and "Traceback" not in proc.stderr


def test_serve_options_come_from_ask():
    serve = rememr1("serve", "--help").stdout
    ask = rememr1("ask", "--help").stdout
    for flag in ("--backend", "--base-url", "--chunk-size", "--retriever", "--compat", "--whole-reply-memory",
                 "--adapter", "--tokenizer", "--max-new-tokens", "--templates"):
        assert flag in ask and flag in serve, flag
    for flag in ("--api-key", "--upstream-api-key", "--max-queue", "--trace-dir", "--request-timeout"):
        assert flag in serve, flag


@pytest.mark.slow
def test_builtin_model_served_and_stopped_with_ctrl_c(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rememr1", "serve", "--port", str(port), "--method", "rememr1,memagent",
         "--chunk-size", "160", "--max-new-tokens", "48", "--trace-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        url = f"http://127.0.0.1:{port}/v1"
        wait_ready(url, proc)
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
        assert [m.id for m in client.models.list()] == ["rememr1", "memagent"]
        document = EXAMPLE.read_text()[:1800]
        reply = client.chat.completions.create(
            model="rememr1", messages=[{"role": "user", "content": document},
                                       {"role": "user", "content": "Which company built the ship?"}])
        assert isinstance(reply.choices[0].message.content, str) and reply.choices[0].message.content.strip()
        assert reply.choices[0].finish_reason in ("stop", "length")
        trace = httpx.get(f"{url}/traces/{reply.id}").text.splitlines()
        assert len(trace) >= 4  # several memory steps, the final step, the summary
        assert reply.usage.prompt_tokens > 160 * (len(trace) - 2) and reply.usage.completion_tokens > 0
        bad = httpx.post(url + "/chat/completions", content=b"{oops", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]["message"]
    finally:
        stderr = ctrl_c(proc)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr  # a clean stop
    assert "serving rememr1, memagent with" in stderr


def test_ctrl_c_ends_open_requests_at_once_and_exits_cleanly():
    """Ctrl-C while requests wait on a slow upstream: each client is told 503 (a stream gets
    an error event) within seconds, the server exits 0 and logs no traceback."""
    import asyncio
    import threading

    from .conftest import Server, fake_upstream

    seen = []

    async def never_answers(request):
        seen.append(1)
        while not await request.is_disconnected():
            await asyncio.sleep(0.05)

    up = fake_upstream(never_answers)

    with Server(up) as upstream, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        proc = subprocess.Popen(
            [sys.executable, "-m", "rememr1", "serve", "--port", str(port), "--backend", "openai", "--base-url",
             upstream.url, "--model", "up", "--method", "rememr1", "--chunk-size", "200"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{port}/v1"
        try:
            wait_ready(url, proc)
            messages = [{"role": "user", "content": "word " * 200}, {"role": "user", "content": "q?"}]
            outcome = {}

            def plain():
                outcome["plain"] = httpx.post(url + "/chat/completions", timeout=60,
                                              json={"model": "rememr1", "messages": messages})

            def streamed():
                c = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=60)
                try:
                    list(c.chat.completions.create(model="rememr1", messages=messages, stream=True))
                except openai.APIError as e:
                    outcome["stream"] = e

            threads = [threading.Thread(target=plain), threading.Thread(target=streamed)]
            for t in threads:
                t.start()
            deadline = time.time() + 30
            while len(seen) < 2:
                assert time.time() < deadline, "the requests did not reach the upstream"
                time.sleep(0.05)
        finally:
            started = time.time()
            stderr = ctrl_c(proc)
            exited = time.time() - started
        for t in threads:
            t.join(timeout=30)
    assert exited < 8
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr
    assert outcome["plain"].status_code == 503 and outcome["plain"].json()["error"]["code"] == "shutting_down"
    assert "shutting down" in str(outcome["stream"])
