"""`rememr1 serve`'s app with real clients: the official `openai` client (sync, async,
streaming) and raw HTTP (httpx) against the app served by uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import openai
import pytest

from rememr1.agent import Agent, AgentConfig
from rememr1.backends.base import SamplingParams
from rememr1.errors import BackendError, BackendTimeout

from .conftest import SlowBackend, fact_document, make_agents, wait_until


def client(server, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)


def ask(document: str, question: str) -> list[dict]:
    return [{"role": "user", "content": document}, {"role": "user", "content": question}]


# ------------------------------------------------------------------- openai client


def test_sync_client_answers_from_the_document_with_usage_summed(serve, fact_backend):
    server = serve(make_agents(fact_backend))
    doc = fact_document("lens", "K7Q")
    reply = client(server).chat.completions.create(model="rememr1", messages=ask(doc, "What is the code of lens?"))
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.choices[0].message.content == "K7Q"
    assert reply.choices[0].finish_reason == "stop" and reply.model == "rememr1"
    # usage is the sum over every step of the same episode answered directly
    direct = make_agents(fact_backend)["rememr1"].answer(doc, "What is the code of lens?")
    assert len(direct.steps) > 2
    assert reply.usage.prompt_tokens == direct.usage.prompt_tokens
    assert reply.usage.completion_tokens == direct.usage.completion_tokens
    assert reply.usage.total_tokens == direct.usage.prompt_tokens + direct.usage.completion_tokens
    assert reply.model_extra.get("rememr1") is None  # no trace unless asked


def test_models_list_the_methods_and_the_model_name_picks_one(serve, fact_backend):
    server = serve(make_agents(fact_backend, methods=("rememr1", "memagent", "rag")))
    c = client(server)
    assert [m.id for m in c.models.list()] == ["rememr1", "memagent", "rag"]
    doc = fact_document("bell", "B22")
    for method in ("rememr1", "memagent"):
        reply = c.chat.completions.create(model=method, messages=ask(doc, "What is the code of bell?"),
                                          extra_body={"rememr1": {"trace": True}})
        trace = reply.model_extra["rememr1"]["trace"]
        assert trace[-1]["type"] == "result" and trace[-1]["method"] == method
        assert ("<recalled_memory>" in trace[0]["prompt"][0]["content"]) == (method == "rememr1")
    with pytest.raises(openai.NotFoundError, match="rememr1, memagent, rag"):
        c.chat.completions.create(model="gpt-4o", messages=ask(doc, "What is the code of bell?"))


def test_the_clients_sampling_settings_apply_to_every_step(serve):
    backend = SlowBackend(delay=0.0)
    server = serve(make_agents(backend))
    messages = ask(fact_document("tar", "T1"), "What is the code of tar?")
    c = client(server)
    c.chat.completions.create(model="rememr1", messages=messages)
    assert {(s.temperature, s.top_p, s.seed) for s in backend.samplings} == {(0.7, 0.95, 0)}  # the server's
    backend.samplings.clear()
    reply = c.chat.completions.create(model="rememr1", messages=messages, temperature=0, top_p=0.5, seed=11)
    assert reply.choices[0].message.content == "T1" and len(backend.samplings) > 2
    assert {(s.temperature, s.top_p, s.seed, s.max_new_tokens) for s in backend.samplings} == {(0.0, 0.5, 11, 64)}


def test_async_client_and_content_parts(serve, fact_backend):
    server = serve(make_agents(fact_backend))

    async def main():
        c = openai.AsyncOpenAI(base_url=server.url, api_key="x", max_retries=0)
        parts = [{"type": "text", "text": fact_document("gate", "G5")},
                 {"type": "text", "text": "What is the code of gate?"}]
        one = await c.chat.completions.create(model="memagent", messages=[{"role": "user", "content": parts}])
        # a system prompt and earlier turns are document text too
        two = await c.chat.completions.create(model="rememr1", messages=[
            {"role": "system", "content": "You answer questions."},
            {"role": "user", "content": fact_document("mast", "M1")},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "What is the code of mast?"}])
        await c.close()
        return one, two

    one, two = asyncio.run(main())
    assert one.choices[0].message.content == "G5" and two.choices[0].message.content == "M1"


def test_streaming_sends_keepalives_then_the_answer(serve):
    backend = SlowBackend(delay=0.08)
    server = serve(make_agents(backend), keepalive_s=0.03)
    messages = ask(fact_document("oar", "Z9"), "What is the code of oar?")
    stream = client(server).chat.completions.create(model="rememr1", messages=messages, stream=True,
                                                    stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Z9"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8 * backend.finished
    assert len({c.id for c in chunks}) == 1
    # on the wire: keep-alive comments while the agent reads, [DONE] at the end
    with httpx.stream("POST", server.url + "/chat/completions", timeout=30,
                      json={"model": "rememr1", "messages": messages, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines.count(": keep-alive") >= 2 and lines[-1] == "data: [DONE]"
    assert lines.index(": keep-alive") < lines.index(next(x for x in lines if '"Z9"' in x))


def test_concurrent_requests_each_answered_once_with_its_own_answer(serve, fact_backend):
    server = serve(make_agents(fact_backend), max_episodes=4, max_queue=32)
    n = 16
    subjects = [(f"item{i}", f"C{i * 7 + 3}") for i in range(n)]

    async def main():
        c = openai.AsyncOpenAI(base_url=server.url, api_key="x", max_retries=0)
        replies = await asyncio.gather(*(
            c.chat.completions.create(model="rememr1" if i % 2 else "memagent",
                                      messages=ask(fact_document(s, code, filler=3 + i % 4), f"What is the code of {s}?"))
            for i, (s, code) in enumerate(subjects)))
        await c.close()
        return replies

    replies = asyncio.run(main())
    assert [r.choices[0].message.content for r in replies] == [code for _, code in subjects]
    assert len({r.id for r in replies}) == n
    finals = [p for p in fact_backend.prompts if "<section>" not in p]
    assert len(finals) == n  # one final step per request: none answered twice
    assert sorted(f.split("What is the code of ")[1].split("?")[0] for f in finals) == sorted(s for s, _ in subjects)


# -------------------------------------------------------------------- traces, viewer


def test_trace_on_request_and_from_the_trace_dir(serve, fact_backend, tmp_path):
    from rememr1.viewer.data import load_trace

    server = serve(make_agents(fact_backend), trace_dir=tmp_path / "traces")
    c = client(server)
    reply = c.chat.completions.create(model="rememr1", messages=ask(fact_document("keel", "Q3"), "What is the code of keel?"),
                                      extra_body={"rememr1": {"trace": True}})
    trace = reply.model_extra["rememr1"]["trace"]
    steps = [line for line in trace if line.get("type") != "result"]
    assert [s["kind"] for s in steps][-1] == "final" and steps[-1]["answer"] == "Q3"
    assert sum(s["prompt_tokens"] for s in steps) == reply.usage.prompt_tokens
    r = httpx.get(f"{server.url}/traces/{reply.id}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert lines == trace
    # `rememr1 view` reads it like an `ask --trace` file
    path = tmp_path / "traces" / f"{reply.id}.jsonl"
    item = load_trace(path)["payload"]["items"][0]
    assert item["pred"] == "Q3" and len(item["steps"]) == len(steps)
    for bad in ("chatcmpl-nope", "..%2F..%2Fetc%2Fpasswd", "chatcmpl-" + "0" * 32):
        r = httpx.get(f"{server.url}/traces/{bad}")
        assert r.status_code == 404 and "message" in r.json()["error"]


def test_traces_are_404_without_a_trace_dir(serve, fact_backend):
    server = serve(make_agents(fact_backend))
    r = httpx.get(f"{server.url}/traces/chatcmpl-{'a' * 32}")
    assert r.status_code == 404 and "--trace-dir" in r.json()["error"]["message"]


# ----------------------------------------------------------------------- bad input


def test_bad_requests_are_openai_errors_and_the_server_keeps_serving(serve, fact_backend):
    server = serve(make_agents(fact_backend))
    url = server.url + "/chat/completions"
    good = {"model": "rememr1", "messages": ask(fact_document("rope", "R4"), "What is the code of rope?")}
    cases = {
        b'{"model": "rememr1", "messages": [': "malformed JSON",
        b"not json at all": "malformed JSON",
        json.dumps({"model": "rememr1", "messages": "hello"}).encode(): "messages",
        json.dumps({**good, "stream": "yes"}).encode(): "stream",
        json.dumps({**good, "temperature": "hot"}).encode(): "temperature",
        json.dumps({**good, "temperature": 7}).encode(): "temperature",
        json.dumps({**good, "model": 3}).encode(): "model",
        json.dumps({**good, "n": 2}).encode(): "n",
        json.dumps({"model": "rememr1", "messages": []}).encode(): "messages",
        json.dumps({"model": "rememr1"}).encode(): "messages",
        json.dumps({"model": "rememr1", "messages": ask("doc", "   ")}).encode(): "question is empty",
        json.dumps({"model": "rememr1", "messages": [{"role": "user", "content": "only a question?"}]}).encode():
            "document is empty",
        json.dumps({"model": "rememr1", "messages": [*ask("doc", "q?"), {"role": "assistant", "content": "a"}]}).encode():
            "last message must be the user's",
        json.dumps({"model": "rememr1", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "q?"}]}]}).encode(): "text parts",
        json.dumps({"model": "rememr1", "messages": [{"role": "wizard", "content": "x"}, *ask("d", "q")]}).encode(): "role",
        b'{"model": "rememr1", "messages": [{"role": "user", "content": "doc \xff\xfe"}, '
        b'{"role": "user", "content": "q?"}]}': "not valid UTF-8",
        b'{"model": "rememr1", "messages": [{"role": "user", "content": "doc \\ud800"}, '
        b'{"role": "user", "content": "q?"}]}': "malformed JSON",  # a lone surrogate is not text
    }
    for body, needle in cases.items():
        r = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 400, (body, r.text)
        err = r.json()["error"]
        assert needle in err["message"] and err["type"] == "invalid_request_error", (body, err)
        assert "Traceback" not in r.text
    r = httpx.post(url, json={"model": "rememr1", "messages": [{"role": "user", "content": 5}, *ask("d", "q?")]})
    assert r.json()["error"]["param"] == "messages.0.content"  # where, without pydantic's union tags
    r = httpx.get(url)
    assert r.status_code == 405 and "error" in r.json()
    r = httpx.get(server.url + "/nowhere")
    assert r.status_code == 404 and "error" in r.json()
    # the openai client sees them as its own error classes
    with pytest.raises(openai.BadRequestError, match="question is empty"):
        client(server).chat.completions.create(model="rememr1", messages=ask("doc", ""))
    r = httpx.post(url, json=good, timeout=30)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "R4"


def test_oversize_documents_and_message_counts_are_413(serve, fact_backend):
    server = serve(make_agents(fact_backend), max_document_bytes=2000, max_messages=3)
    url = server.url + "/chat/completions"
    r = httpx.post(url, json={"model": "rememr1", "messages": ask("word " * 500, "q?")})
    assert r.status_code == 413 and "2000" in r.json()["error"]["message"]
    r = httpx.post(url, json={"model": "rememr1", "messages": [{"role": "user", "content": "a"}] * 3 + ask("d", "q?")})
    assert r.status_code == 413 and "messages" in r.json()["error"]["message"]
    huge = b'{"model": "rememr1", "messages": [{"role": "user", "content": "' + b"x" * 1_100_000 + b'"}]}'
    r = httpx.post(url, content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    with pytest.raises(openai.APIStatusError) as info:
        client(server).chat.completions.create(model="rememr1", messages=ask("é" * 1500, "q?"))
    assert info.value.status_code == 413
    # just under the limit is answered
    doc = fact_document("deck", "D8", filler=2)
    assert len(doc.encode()) < 2000
    assert client(server).chat.completions.create(
        model="rememr1", messages=ask(doc, "What is the code of deck?")).choices[0].message.content == "D8"


# ------------------------------------------------------------------------------ auth


def test_api_key_is_required_and_checked(serve, fact_backend):
    server = serve(make_agents(fact_backend), api_key="s3cret")
    messages = ask(fact_document("hull", "H2"), "What is the code of hull?")
    with pytest.raises(openai.AuthenticationError):
        client(server, api_key="wrong").chat.completions.create(model="rememr1", messages=messages)
    with pytest.raises(openai.AuthenticationError):
        client(server, api_key="wrong").models.list()
    for headers in ({}, {"Authorization": "s3cret"}, {"Authorization": "Basic s3cret"},
                    {"Authorization": "Bearer s3cret-and-more"}):
        r = httpx.post(server.url + "/chat/completions", json={"model": "rememr1", "messages": messages},
                       headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"
    assert not fact_backend.requests  # nothing reached the model
    ok = client(server, api_key="s3cret").chat.completions.create(model="rememr1", messages=messages)
    assert ok.choices[0].message.content == "H2"


# ------------------------------------------------------------------ capacity, timeout


def test_beyond_episodes_and_queue_is_429_with_retry_after(serve):
    gate = threading.Event()
    backend = SlowBackend(gate=gate)
    server = serve(make_agents(backend), max_episodes=1, max_queue=1)
    messages = ask(fact_document("sail", "S1"), "What is the code of sail?")
    results = []

    def call():
        results.append(client(server).chat.completions.create(model="rememr1", messages=messages))

    threads = [threading.Thread(target=call) for _ in range(2)]
    threads[0].start()
    assert wait_until(lambda: backend.started == 1)
    threads[1].start()  # waits in the queue
    time.sleep(0.3)
    assert backend.started == 1  # one episode at a time
    with pytest.raises(openai.RateLimitError) as info:
        client(server).chat.completions.create(model="rememr1", messages=messages)
    assert int(info.value.response.headers["retry-after"]) >= 1
    gate.set()
    for t in threads:
        t.join(timeout=30)
    assert [r.choices[0].message.content for r in results] == ["S1", "S1"]
    assert backend.peak == 1
    # capacity is free again
    assert client(server).chat.completions.create(model="rememr1", messages=messages).choices[0].message.content == "S1"


def test_request_timeout_is_504_and_cancels_the_episode(serve):
    backend = SlowBackend(delay=5.0)
    server = serve(make_agents(backend), request_timeout=0.3)
    t0 = time.perf_counter()
    with pytest.raises(openai.APIStatusError) as info:
        client(server).chat.completions.create(model="rememr1", messages=ask("d " * 50, "What is the code of x?"))
    assert info.value.status_code == 504 and "timeout" in info.value.message
    assert time.perf_counter() - t0 < 3
    assert wait_until(lambda: backend.cancelled == 1) and backend.finished == 0


# ----------------------------------------------------------------------- disconnect


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_disconnects_cancels_its_episode(serve, stream):
    backend = SlowBackend(delay=3.0)
    server = serve(make_agents(backend))
    body = {"model": "rememr1", "messages": ask("d " * 500, "What is the code of x?"), "stream": stream}
    with pytest.raises(httpx.ReadTimeout):
        with httpx.stream("POST", server.url + "/chat/completions", json=body, timeout=0.5) as r:
            for _ in r.iter_lines():
                pass
    assert wait_until(lambda: backend.cancelled == 1, timeout=2.5)  # well before its 3 s reply
    time.sleep(0.3)
    assert backend.started == 1 and backend.finished == 0  # no further step was sent
    backend.delay = 0.01
    ok = client(server).chat.completions.create(model="rememr1", messages=ask(fact_document("pin", "P0"), "What is the code of pin?"))
    assert ok.choices[0].message.content == "P0"


# ------------------------------------------------------------------ upstream failures


def test_backend_failures_are_502_and_504(serve):
    down = SlowBackend(fail=BackendError("cannot reach server at http://127.0.0.1:9/v1: connection refused"))
    slow = SlowBackend(fail=BackendTimeout("server at http://x did not answer within 1 s (timeout)"))
    for backend, status in ((down, 502), (slow, 504)):
        server = serve(make_agents(backend))
        with pytest.raises(openai.APIStatusError) as info:
            client(server).chat.completions.create(model="rememr1", messages=ask("d " * 50, "q?"))
        assert info.value.status_code == status
        assert info.value.body["type"] == "server_error" and "Traceback" not in info.value.message
        stream = client(server).chat.completions.create(model="rememr1", messages=ask("d " * 50, "q?"), stream=True)
        with pytest.raises(openai.APIError, match="connection refused|timeout"):
            list(stream)


def test_upstream_openai_server_going_down_is_502_and_recovers(serve):
    """A real upstream: rememr1 on its openai backend, against a server that then stops."""
    from rememr1.backends.openai_compat import OpenAIBackend

    from .conftest import Server, completion, fact_script, fake_upstream

    async def chat(request):
        body = await request.json()
        return completion(fact_script(body["messages"][-1]["content"], 0))

    up = fake_upstream(chat)
    upstream = Server(up).__enter__()
    backend = OpenAIBackend("up", base_url=upstream.url, max_retries=0, timeout=5)
    try:
        server = serve({"rememr1": Agent(backend, AgentConfig(chunk_size=200), SamplingParams(max_new_tokens=32))})
        messages = ask(fact_document("buoy", "U6"), "What is the code of buoy?")
        c = client(server)
        first = c.chat.completions.create(model="rememr1", messages=messages, extra_body={"rememr1": {"trace": True}})
        second = c.chat.completions.create(model="rememr1", messages=messages)  # same connection pool
        assert first.choices[0].message.content == second.choices[0].message.content == "U6"
        steps = len(first.model_extra["rememr1"]["trace"]) - 1
        assert steps > 2 and first.usage.total_tokens == 8 * steps  # the upstream's usage, summed
        upstream.__exit__(None, None, None)
        with pytest.raises(openai.InternalServerError) as info:
            c.chat.completions.create(model="rememr1", messages=messages)
        assert info.value.status_code == 502 and "cannot reach" in info.value.message
        upstream = Server(up, port=upstream.port).__enter__()
        assert c.chat.completions.create(model="rememr1", messages=messages).choices[0].message.content == "U6"
    finally:
        upstream.__exit__(None, None, None)
        backend.close()
