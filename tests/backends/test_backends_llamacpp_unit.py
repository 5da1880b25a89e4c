"""llamacpp backend logic without running the model: the real built-in GGUF supplies the
vocabulary and chat template (vocab-only load, no weights), a fake `Llama` stands in for
generation. Covers clamping, the too-long prompt, seeds, finish reasons, the instance
pool, per-request failures and path errors."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rememr1.backends import llamacpp
from rememr1.backends.base import ChatRequest, SamplingParams
from rememr1.errors import InputError, BackendError


class FakeLlama:
    """Records each call; replies "x" * max_tokens with a scripted finish reason."""

    created: list[FakeLlama] = []

    def __init__(self, delay: float = 0.0, finish: str = "length", fail_on: str | None = None):
        self.calls: list[dict] = []
        self.resets = 0
        self.delay = delay
        self.finish = finish
        self.fail_on = fail_on
        self.busy = threading.Lock()

    def reset(self):
        self.resets += 1

    def create_chat_completion(self, **kw):
        assert self.busy.acquire(blocking=False), "one Llama used by two threads at once"
        try:
            self.calls.append(kw)
            if self.fail_on and self.fail_on in kw["messages"][-1]["content"]:
                raise RuntimeError("decode failed")
            time.sleep(self.delay)
            n = kw["max_tokens"]
            return {
                "choices": [{"message": {"role": "assistant", "content": "x" * n},
                             "finish_reason": self.finish}],
                "usage": {"prompt_tokens": 11, "completion_tokens": n},
            }
        finally:
            self.busy.release()

    def close(self):
        pass


@pytest.fixture
def fake_backend(monkeypatch):
    """Factory: a LlamaCppBackend on the built-in vocab whose instances are FakeLlamas."""
    real_load = llamacpp.load_llama

    def make(*, delay=0.0, finish="length", fail_on=None, **kwargs):
        instances: list[FakeLlama] = []

        def fake_load(path, **kw):
            if kw.get("vocab_only"):
                return real_load(path, **kw)
            inst = FakeLlama(delay=delay, finish=finish, fail_on=fail_on)
            instances.append(inst)
            return inst

        monkeypatch.setattr(llamacpp, "load_llama", fake_load)
        backend = llamacpp.LlamaCppBackend(None, **kwargs)
        return backend, instances

    return make


def ask(text: str, **kw) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], **kw)


def test_context_from_metadata_and_prompt_count(fake_backend):
    backend, _ = fake_backend()
    assert backend.context_window == 8192  # SmolLM2's trained context (metadata)
    short, longer = ask("hi"), ask("hi " * 50)
    assert backend.count_prompt_tokens(longer) > backend.count_prompt_tokens(short) > 0
    # the chat template adds the system prompt and role markers around the message
    assert backend.count_prompt_tokens(short) > len(backend.tokenizer.encode("hi"))


def test_max_new_tokens_is_clamped_to_the_window(fake_backend):
    backend, instances = fake_backend(n_ctx=64)
    req = ask("Tell me a story.")
    prompt = backend.count_prompt_tokens(req)
    assert prompt < 64
    gen = backend.generate([req], SamplingParams(max_new_tokens=1000))[0]
    assert instances[0].calls[-1]["max_tokens"] == 64 - prompt
    assert gen.finish_reason == "length" and gen.completion_tokens == 64 - prompt
    # a per-request cap overrides the sampling cap
    backend.generate([ask("Tell me a story.", max_new_tokens=3)], SamplingParams(max_new_tokens=1000))
    assert instances[0].calls[-1]["max_tokens"] == 3


def test_prompt_longer_than_window_is_an_error_generation(fake_backend):
    backend, instances = fake_backend(n_ctx=32)
    gens = backend.generate([ask("word " * 100), ask("ok")], SamplingParams(max_new_tokens=4))
    assert gens[0].finish_reason == "error"
    assert "context window is 32" in gens[0].error
    assert gens[0].prompt_tokens > 32
    assert gens[1].finish_reason == "length"  # the other request is unaffected
    assert sum(len(i.calls) for i in instances) == 1


def test_seed_precedence_and_greedy(fake_backend):
    backend, instances = fake_backend()
    backend.generate([ask("a", seed=7), ask("b")], SamplingParams(seed=99, temperature=0.0))
    calls = {c["messages"][0]["content"]: c for c in instances[0].calls}
    assert calls["a"]["seed"] == 7 and calls["b"]["seed"] == 99
    assert calls["a"]["temperature"] == 0.0  # greedy
    with pytest.raises(InputError, match="temperature"):
        SamplingParams(temperature=-1.0)  # sampling settings validate themselves
    assert instances[0].resets == len(instances[0].calls)  # fresh state for every request


def test_finish_reason_stop_is_mapped(fake_backend):
    backend, _ = fake_backend(finish="stop")
    gen = backend.generate([ask("a")], SamplingParams(max_new_tokens=5))[0]
    assert gen.finish_reason == "stop" and not gen.truncated


def test_pool_overlaps_requests_up_to_concurrency(fake_backend):
    backend, instances = fake_backend(delay=0.3, concurrency=3, n_threads=6)
    assert backend.threads_per_instance == 2  # threads are split across instances
    start = time.perf_counter()
    gens = backend.generate([ask(str(i)) for i in range(6)], SamplingParams(max_new_tokens=2))
    elapsed = time.perf_counter() - start
    assert [g.finish_reason for g in gens] == ["length"] * 6
    assert len(instances) == 3  # never more instances than `concurrency`
    assert 0.55 < elapsed < 1.5  # 6 requests x 0.3 s on 3 instances = 2 rounds, not 6
    assert sorted(len(i.calls) for i in instances) == [2, 2, 2]


def test_one_failing_request_does_not_sink_the_batch(fake_backend):
    backend, _ = fake_backend(fail_on="boom")
    gens = backend.generate([ask("fine"), ask("boom"), ask("also fine")], SamplingParams(max_new_tokens=2))
    assert [g.finish_reason for g in gens] == ["length", "error", "length"]
    assert "decode failed" in gens[1].error


def test_missing_and_bad_model_paths(tmp_path):
    with pytest.raises(BackendError, match="model file not found"):
        llamacpp.LlamaCppBackend(str(tmp_path / "nope.gguf"))
    with pytest.raises(BackendError, match="directory"):
        llamacpp.LlamaCppBackend(str(tmp_path))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a gguf file at all" * 10)
    with pytest.raises(BackendError) as err:
        llamacpp.LlamaCppBackend(str(junk))
    assert "cannot load" in str(err.value) and "\n" not in str(err.value)


@pytest.fixture(scope="module")
def vocab_tokenizer():
    from rememr1.backends.builtin import builtin_gguf_path
    from rememr1.backends.tokenization import load_tokenizer

    return load_tokenizer(builtin_gguf_path(verify=False))


def test_tokenizer_round_trip_and_no_special_parsing(vocab_tokenizer):
    text = "Plain text, ünïcödé, 日本語 and 🎉 — with <|im_start|> kept as text."
    ids = vocab_tokenizer.encode(text)
    assert vocab_tokenizer.decode(ids) == text
    assert 1 not in ids  # <|im_start|> is id 1 in SmolLM2; document text must not become it
    assert vocab_tokenizer.encode("") == [] and vocab_tokenizer.decode([]) == ""


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab日本🎉é ")), min_size=1, max_size=30), st.data())
def test_tokenizer_slices_lose_at_most_the_split_character(vocab_tokenizer, text, data):
    ids = vocab_tokenizer.encode(text)
    cut = data.draw(st.integers(0, len(ids)))
    left, right = vocab_tokenizer.decode(ids[:cut]), vocab_tokenizer.decode(ids[cut:])
    assert "\ufffd" not in left + right
    assert text.startswith(left) and text.endswith(right)
    assert len(text) - 1 <= len(left) + len(right) <= len(text)


def test_more_instances_than_cpu_threads_warns(monkeypatch, caplog):
    import logging

    from rememr1.backends import llamacpp

    monkeypatch.setattr(llamacpp, "_available_cpus", lambda: 2)
    with caplog.at_level(logging.WARNING, logger=llamacpp.log.name):
        be = llamacpp.LlamaCppBackend(None, concurrency=3)
        be.close()
        assert "oversubscribe" in caplog.text and "--concurrency 2" in caplog.text
        caplog.clear()
        be = llamacpp.LlamaCppBackend(None, concurrency=2)
        be.close()
        assert "oversubscribe" not in caplog.text
