"""openai backend against a closed port and a small fake OpenAI-compatible HTTP server
(stdlib http.server): error messages, model resolution, field mapping, concurrency."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rememr1.backends import load_backend
from rememr1.backends.base import ChatRequest, SamplingParams
from rememr1.backends.openai_compat import OpenAIBackend
from rememr1.errors import BackendError


class FakeServer:
    """Answers /v1/models and /v1/chat/completions; records bodies and peak concurrency.
    A message containing "boom" gets a 500; an unknown model gets a 404."""

    def __init__(self, models=("alpha", "beta"), delay=0.0):
        self.models = list(models)
        self.delay = delay
        self.bodies: list[dict] = []
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in server.models]})
                else:
                    self._send(404, {"error": {"message": "no such route"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.bodies.append(body)
                    server.active += 1
                    server.peak = max(server.peak, server.active)
                try:
                    time.sleep(server.delay)
                    content = body["messages"][-1]["content"]
                    if body["model"] not in server.models:
                        return self._send(404, {"error": {"message": f"model {body['model']} not found"}})
                    if "boom" in content:
                        return self._send(500, {"error": {"message": "internal kaboom"}})
                    n = body["max_tokens"]
                    self._send(200, {
                        "id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo {content}"},
                                     "finish_reason": "length" if n < 5 else "stop"}],
                        "usage": {"prompt_tokens": 17, "completion_tokens": min(n, 3), "total_tokens": 20},
                    })
                finally:
                    with server.lock:
                        server.active -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_server():
    servers = []

    def start(**kw):
        servers.append(FakeServer(**kw))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def backends():
    made = []

    def make(**kw):
        made.append(OpenAIBackend(**kw))
        return made[-1]

    yield make
    for b in made:
        b.close()


def ask(text, **kw):
    return ChatRequest(messages=[{"role": "user", "content": text}], **kw)


def test_closed_port_fails_fast_with_one_line(free_port):
    url = f"http://127.0.0.1:{free_port()}/v1"
    start = time.perf_counter()
    with pytest.raises(BackendError) as err:
        load_backend("openai", base_url=url, max_retries=3)
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert message == f"cannot reach server at {url}: connection refused"


def test_model_resolution(fake_server, backends):
    server = fake_server(models=("alpha", "beta"))
    assert backends(base_url=server.url).model_name == "alpha"  # None -> first listed
    assert backends(model="beta", base_url=server.url).model_name == "beta"
    with pytest.raises(BackendError) as err:
        backends(model="gamma", base_url=server.url)
    message = str(err.value)
    assert "'gamma' not found" in message and "alpha, beta" in message and "\n" not in message


def test_fields_are_mapped(fake_server, backends):
    server = fake_server()
    backend = backends(base_url=server.url, api_key="k")
    gens = backend.generate(
        [ask("one", seed=5), ask("two", max_new_tokens=2)],
        SamplingParams(max_new_tokens=50, temperature=0.3, top_p=0.9, seed=11, stop=("END",)),
    )
    assert [g.text for g in gens] == ["echo one", "echo two"]
    assert [g.finish_reason for g in gens] == ["stop", "length"]  # "length" preserved
    assert gens[1].truncated
    assert all(g.prompt_tokens == 17 for g in gens)  # from usage, not estimated
    assert [g.completion_tokens for g in gens] == [3, 2]
    bodies = {b["messages"][-1]["content"]: b for b in server.bodies}
    assert bodies["one"]["seed"] == 5 and bodies["two"]["seed"] == 11  # request seed wins
    assert bodies["one"]["max_tokens"] == 50 and bodies["two"]["max_tokens"] == 2
    assert bodies["one"]["stop"] == ["END"]
    assert bodies["one"]["temperature"] == 0.3 and bodies["one"]["top_p"] == 0.9


def test_concurrency_limit_is_respected_and_used(fake_server, backends):
    server = fake_server(delay=0.3)
    backend = backends(base_url=server.url, concurrency=3)
    start = time.perf_counter()
    gens = backend.generate([ask(f"q{i}") for i in range(6)], SamplingParams(max_new_tokens=8))
    elapsed = time.perf_counter() - start
    assert all(g.finish_reason == "stop" for g in gens)
    assert server.peak == 3 and backend.peak_in_flight == 3
    assert elapsed < 1.5  # two rounds of 0.3 s, not six
    server.peak = 0
    serial = backends(base_url=server.url, concurrency=1)
    serial.generate([ask(f"s{i}") for i in range(3)], SamplingParams(max_new_tokens=8))
    assert server.peak == 1


def test_server_error_fails_only_that_request(fake_server, backends):
    server = fake_server()
    backend = backends(base_url=server.url, max_retries=0)
    gens = backend.generate([ask("fine"), ask("boom"), ask("fine too")], SamplingParams(max_new_tokens=8))
    assert [g.finish_reason for g in gens] == ["stop", "error", "stop"]
    assert "500" in gens[1].error and "kaboom" in gens[1].error


def test_timeout_is_a_clear_error(fake_server, backends):
    server = fake_server(delay=2.0)
    backend = backends(base_url=server.url, timeout=0.5, max_retries=0)
    start = time.perf_counter()
    with pytest.raises(BackendError, match=r"did not answer within 0.5 s"):
        backend.generate([ask("slow")], SamplingParams(max_new_tokens=8))
    assert time.perf_counter() - start < 1.8


def test_model_gone_after_start_lists_what_is_left(fake_server, backends):
    server = fake_server(models=("alpha", "beta"))
    backend = backends(model="alpha", base_url=server.url, max_retries=0)
    server.models = ["beta"]
    with pytest.raises(BackendError, match=r"'alpha' not found .* available: beta"):
        backend.generate([ask("hi")], SamplingParams(max_new_tokens=8))


def test_agenerate_inside_a_running_loop(fake_server, backends):
    server = fake_server()
    backend = backends(base_url=server.url)

    async def main():
        return await backend.agenerate([ask("x"), ask("y")], SamplingParams(max_new_tokens=8))

    gens = asyncio.run(main())
    assert [g.text for g in gens] == ["echo x", "echo y"]
    assert backend.generate([ask("z")], SamplingParams(max_new_tokens=8))[0].text == "echo z"


def test_window_clamp_and_too_long_prompt(fake_server, backends):
    server = fake_server()
    backend = backends(base_url=server.url, context_window=60)
    short = ask("hello")
    estimate = backend.count_prompt_tokens(short)
    gens = backend.generate([short, ask("word " * 200)], SamplingParams(max_new_tokens=1000))
    assert server.bodies[0]["max_tokens"] == 60 - estimate
    assert len(server.bodies) == 1  # the oversized prompt was never sent
    assert gens[1].finish_reason == "error" and "context window is 60" in gens[1].error


def test_tokenizer_falls_back_to_builtin_with_warning(fake_server, backends, caplog):
    server = fake_server()
    backend = backends(base_url=server.url)
    with caplog.at_level(logging.WARNING, logger="rememr1.backends.openai_compat"):
        ids = backend.tokenizer.encode("hello world")
    assert ids and backend.tokenizer.decode(ids) == "hello world"
    assert any("built-in" in r.getMessage() for r in caplog.records)
    assert backend.context_window == 8192
