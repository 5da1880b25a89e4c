"""Parallel decoding on the built-in model (`LlamaCppBackend(parallel=N)`,
`backends.llamacpp_parallel`): the same text as the instance pool, shared prompt prefixes
evaluated once, cancellation, token ids, a prompt that does not fit, the adapter applied."""

from __future__ import annotations

import asyncio
import time

import pytest

from rememr1.backends.base import FINISH_ERROR, ChatRequest, SamplingParams
from rememr1.backends.llamacpp import LlamaCppBackend

pytestmark = pytest.mark.slow

DOC = ("The lens for the Varrow Point light was ground in Esk by the Tolland Yard Company and "
       "carried north on the schooner Maribel in the spring of the flood year. ") * 6


def request(i: int, seed: int | None = None) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": f"{DOC}\nQuestion {i}: who carried the lens?"}],
                       seed=seed)


@pytest.fixture(scope="module")
def parallel():
    backend = LlamaCppBackend(None, parallel=8, token_ids=True)
    yield backend
    backend.close()


def test_greedy_text_matches_the_instance_pool(parallel):
    greedy = SamplingParams(max_new_tokens=16, temperature=0.0)
    reqs = [request(i) for i in range(3)]
    pool = LlamaCppBackend(None, token_ids=True)
    try:
        expected = [g.completion_ids for g in pool.generate(reqs, greedy)]
    finally:
        pool.close()
    got = parallel.generate(reqs, greedy)
    assert [g.completion_ids for g in got] == expected
    assert all(g.finish_reason in ("stop", "length") and g.text for g in got)
    assert got[0].prompt_ids == tuple(parallel.prompt_ids(reqs[0]))


def test_shared_prompts_are_evaluated_once_and_seeds_still_differ(parallel):
    stats = parallel._decoder.stats
    before = dict(stats)
    sampling = SamplingParams(max_new_tokens=16, temperature=1.0, top_p=1.0)
    gens = parallel.generate([request(0, seed=s) for s in range(8)], sampling)
    n_prompt = gens[0].prompt_tokens
    shared = stats["prefix_tokens_shared"] - before["prefix_tokens_shared"]
    evaluated = stats["tokens_evaluated"] - before["tokens_evaluated"]
    assert shared >= 7 * (n_prompt - 1)  # seven of the eight copy the first one's prompt
    assert evaluated <= n_prompt + 8 * 17  # one prompt, then each sequence's own tokens
    assert len({g.completion_ids for g in gens}) > 1  # different seeds, different samples
    again = parallel.generate([request(0, seed=3)], sampling)[0]
    assert again.completion_ids == gens[3].completion_ids  # a seed reproduces its sample


def test_a_cancelled_request_frees_its_slot(parallel):
    async def run():
        long = asyncio.ensure_future(parallel.asubmit(
            request(1), SamplingParams(max_new_tokens=4000, temperature=1.0, seed=1)))
        await asyncio.sleep(0.5)
        long.cancel()
        return await parallel.asubmit(request(2), SamplingParams(max_new_tokens=4, temperature=0.0))

    short = asyncio.run(run())
    assert short.completion_tokens == 4
    deadline = time.monotonic() + 10
    while any(s.job is not None for s in parallel._decoder._slots) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(s.job is None for s in parallel._decoder._slots)


def test_a_prompt_that_does_not_fit_is_an_error_generation():
    backend = LlamaCppBackend(None, parallel=2, seq_tokens=128)
    try:
        (gen,) = backend.generate([request(0)], SamplingParams(max_new_tokens=8))
    finally:
        backend.close()
    assert gen.finish_reason == FINISH_ERROR and "context window" in gen.error


def test_the_packaged_adapter_changes_the_output():
    greedy = SamplingParams(max_new_tokens=24, temperature=0.0)
    outputs = []
    for adapter in (True, False):
        backend = LlamaCppBackend(None, parallel=2, adapter=adapter, token_ids=True)
        try:
            outputs.append(backend.generate([request(0)], greedy)[0].completion_ids)
        finally:
            backend.close()
    assert outputs[0] != outputs[1]
