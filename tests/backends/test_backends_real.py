"""Real-model tests on the built-in SmolLM2-135M-Instruct: llama.cpp in-process, transformers
(after the one-time GGUF -> HF conversion into the session's temporary cache), and the
openai backend against a real llama.cpp OpenAI-compatible server started here."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from rememr1.backends import builtin
from rememr1.backends.base import ChatRequest, SamplingParams
from rememr1.errors import BackendError

pytestmark = pytest.mark.slow

GREEDY = SamplingParams(max_new_tokens=24, temperature=0.0)
SAMPLED = SamplingParams(max_new_tokens=24, temperature=1.0, top_p=0.95)


def ask(text, **kw):
    return ChatRequest(messages=[{"role": "user", "content": text}], **kw)


SHORT = ask("Name a colour.")
LONG = ask("Here is a short story about a lighthouse keeper who lived alone on a rocky island "
           "and wrote letters he never sent. Summarise the story in one sentence.")


def test_builtin_checksum_and_stamp(session_cache):
    stamp = session_cache / "builtin-gguf-verified.json"
    stamp.unlink(missing_ok=True)
    path = builtin.builtin_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    recorded = json.loads(stamp.read_text())
    assert recorded["sha256"] == builtin.BUILTIN_GGUF_SHA256
    assert recorded["size"] == path.stat().st_size
    with pytest.raises(BackendError, match="checksum mismatch"):
        builtin.verify_sha256(path, "f" * 64)  # the real file really is hashed


# -- llama.cpp ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama():
    from rememr1.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(None, concurrency=2)
    yield backend
    backend.close()


def test_llamacpp_greedy_is_deterministic_and_batch_independent(llama):
    first = llama.generate([SHORT, LONG], GREEDY)
    again = llama.generate([LONG, SHORT], GREEDY)
    assert first[0].text and first[1].text
    assert [g.text for g in first] == [again[1].text, again[0].text]
    assert all(g.finish_reason in ("stop", "length") and g.error is None for g in first)
    assert first[1].prompt_tokens == llama.count_prompt_tokens(LONG)


def test_llamacpp_seed_reproducible_regardless_of_grouping(llama):
    reqs = [ask("Invent a name for a cat.", seed=s) for s in (1, 2, 3)]
    together = [g.text for g in llama.generate(reqs, SAMPLED)]
    shuffled = llama.generate([reqs[2], reqs[0], reqs[1]], SAMPLED)
    alone = [llama.generate([r], SAMPLED)[0].text for r in reqs]
    assert together == [shuffled[1].text, shuffled[2].text, shuffled[0].text] == alone
    assert len(set(together)) > 1  # the seed actually changes the sample


def test_llamacpp_length_finish(llama):
    gen = llama.generate([LONG], SamplingParams(max_new_tokens=4, temperature=0.0))[0]
    assert gen.finish_reason == "length" and gen.completion_tokens == 4


def test_llamacpp_token_ids_path_samples_what_chat_completion_samples(llama):
    """token_ids=True (RL rollouts) returns the ids it sampled, and with the same seed the
    same text as the chat-completion path; ids end with end-of-generation on a stop."""
    from rememr1.backends.llamacpp import LlamaCppBackend

    ids = LlamaCppBackend(None, token_ids=True)
    try:
        reqs = [ask("Invent a name for a cat.", seed=s) for s in (1, 2, 3)] + [LONG]
        sampling = SamplingParams(max_new_tokens=48, temperature=1.0, top_p=0.95, seed=7)
        plain, tok = llama.generate(reqs, sampling), ids.generate(reqs, sampling)
        assert [g.text for g in tok] == [g.text for g in plain]
        eos = ids._vocab.token_eos()
        for req, g in zip(reqs, tok):
            assert list(g.prompt_ids) == ids.prompt_ids(req) and g.completion_tokens == len(g.completion_ids)
            body = list(g.completion_ids[:-1] if g.finish_reason == "stop" else g.completion_ids)
            assert ids.tokenizer.decode(body) == g.text
            assert (g.completion_ids[-1] == eos) == (g.finish_reason == "stop")
        assert "stop" in {g.finish_reason for g in tok}
        cut = ids.generate([LONG], SamplingParams(max_new_tokens=4, temperature=0.0))[0]
        assert cut.finish_reason == "length" and len(cut.completion_ids) == 4
        with pytest.raises(BackendError, match="stop strings"):
            ids.generate([SHORT], SamplingParams(max_new_tokens=4, stop=("x",)))
    finally:
        ids.close()


# -- transformers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf(session_cache):
    from rememr1.backends.hf import HFBackend

    backend = HFBackend(None, device="cpu", max_batch_size=4)
    yield backend
    backend.close()


def test_hf_conversion_happens_once_in_the_cache(hf, session_cache):
    folder = builtin.builtin_hf_dir()
    assert folder.parent.parent == session_cache
    config = folder / "config.json"
    mtime = config.stat().st_mtime_ns
    assert builtin.builtin_hf_dir() == folder and config.stat().st_mtime_ns == mtime
    assert "quantization_config" not in json.loads(config.read_text())
    saved = (folder / "tokenizer_config.json").read_text()
    assert (folder / "chat_template.jinja").exists() or "chat_template" in saved
    assert not [p for p in folder.parent.iterdir() if p.name.endswith(".tmp")]


def test_hf_left_padded_batch_equals_alone(hf):
    batch = hf.generate([SHORT, LONG], GREEDY)
    alone = [hf.generate([r], GREEDY)[0] for r in (SHORT, LONG)]
    assert hf.count_prompt_tokens(LONG) > hf.count_prompt_tokens(SHORT) + 20  # real padding
    assert [g.text for g in batch] == [g.text for g in alone]
    assert [g.completion_ids for g in batch] == [g.completion_ids for g in alone]


def test_hf_ids_match_text_and_finish(hf):
    gen = hf.generate([SHORT], SamplingParams(max_new_tokens=64, temperature=0.0))[0]
    assert gen.completion_tokens == len(gen.completion_ids) > 0
    assert hf.tokenizer_hf.decode(gen.completion_ids, skip_special_tokens=True) == gen.text
    assert list(gen.prompt_ids) == hf.prompt_ids(SHORT)
    if gen.finish_reason == "stop":
        assert gen.completion_ids[-1] in hf._eos_ids and "<|im_end|>" not in gen.text
    cut = hf.generate([LONG], SamplingParams(max_new_tokens=4, temperature=0.0))[0]
    assert cut.finish_reason == "length" and len(cut.completion_ids) == 4


def test_hf_seeded_sampling_independent_of_batch(hf):
    reqs = [ask("Invent a name for a cat.", seed=s) for s in (1, 2)] + [ask("Say something long.", seed=3)]
    together = [g.text for g in hf.generate(reqs, SAMPLED)]
    alone = [hf.generate([r], SAMPLED)[0].text for r in reqs]
    assert together == alone
    assert together[0] != together[1]


def test_hf_from_objects_shares_the_policy(hf):
    from rememr1.backends.hf import HFBackend

    twin = HFBackend.from_objects(hf.model, hf.tokenizer_hf, name="policy")
    assert twin.model is hf.model
    assert twin.generate([SHORT], GREEDY)[0].text == hf.generate([SHORT], GREEDY)[0].text


# -- openai backend against a real llama.cpp server ----------------------------------------


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    for module in ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings"):
        pytest.importorskip(module, reason="llama-cpp-python[server] extras are not installed")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gguf = builtin.builtin_gguf_path()
    # The server logs a lot; a file (not a pipe nobody drains) keeps it from blocking.
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "4096"],
        stdout=log_file, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama.cpp server exited: {log_path.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama.cpp server did not become ready within 90 s")
            time.sleep(0.3)
        yield url, str(gguf)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()


def test_openai_against_llama_server(llama_server):
    from rememr1.backends.openai_compat import OpenAIBackend

    url, gguf = llama_server
    with OpenAIBackend(None, base_url=url, concurrency=4) as backend:
        assert backend.model_name == gguf  # llama.cpp's server lists the model by its path
        gens = backend.generate([SHORT, LONG, SHORT, LONG], GREEDY)
        assert all(g.text and g.error is None for g in gens)
        assert all(g.prompt_tokens > 10 and 0 < g.completion_tokens <= 24 for g in gens)
        assert backend.peak_in_flight == 4  # all four were in flight at once
        cut = backend.generate([LONG], SamplingParams(max_new_tokens=4, temperature=0.0))[0]
        assert cut.finish_reason == "length" and cut.completion_tokens == 4


def test_openai_unknown_model_on_llama_server(llama_server):
    from rememr1.backends.openai_compat import OpenAIBackend

    url, gguf = llama_server
    with pytest.raises(BackendError) as err:
        OpenAIBackend("no-such-model", base_url=url)
    message = str(err.value)
    assert "'no-such-model' not found" in message and gguf in message and "\n" not in message
