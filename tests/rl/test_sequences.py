"""Token-budget packing and chunked log-probs: same numbers as the full-vocabulary
computation, memory bounded by the budget."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rememr1.rl import sequences as seqmod
from rememr1.rl.sequences import (
    TrainSequence,
    completion_logprobs,
    micro_batch_tokens,
    pack_micro_batches,
    right_align,
    shared_prompt,
)


def seq(prompt: int, completion: int, q: int = 0, seed: int = 0) -> TrainSequence:
    g = torch.Generator().manual_seed(seed)
    return TrainSequence(prompt_ids=tuple(torch.randint(3, 90, (prompt,), generator=g).tolist()),
                         completion_ids=tuple(torch.randint(3, 90, (completion,), generator=g).tolist()),
                         advantage=1.0, question=q)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 60), st.integers(1, 20)), min_size=1, max_size=30),
       st.integers(16, 400))
def test_packing_respects_the_budget_and_keeps_every_sequence(shapes, budget):
    seqs = [seq(p, c, q=i) for i, (p, c) in enumerate(shapes)]
    batches = pack_micro_batches(seqs, budget)
    assert sorted(id(s) for b in batches for s in b) == sorted(id(s) for s in seqs)
    for b in batches:  # a sequence over budget goes alone; a shared prompt counts once
        assert micro_batch_tokens(b) <= budget or len(b) == 1
    # unshared batches longest first: none holds a sequence longer than an earlier one
    firsts = [max(s.length for s in b) for b in batches if not shared_prompt(b)]
    assert firsts == sorted(firsts, reverse=True)


def test_packing_puts_rollouts_with_the_same_prompt_together():
    group = [TrainSequence(prompt_ids=(5,) * 50, completion_ids=(7,) * c, advantage=0.0, question=0)
             for c in (3, 9, 4, 6)]
    others = [seq(50, 5, seed=k) for k in range(1, 4)]
    batches = pack_micro_batches(others[:2] + group + others[2:], 120)
    shared = [b for b in batches if shared_prompt(b)]
    assert sum(len(b) for b in shared) == 4  # 49 + rows x 9 fits the budget: all four share
    assert micro_batch_tokens(shared[0]) == 49 + len(shared[0]) * 9
    assert [len(b) for b in pack_micro_batches(group, 120, share_prompts=False)] == [2, 2]


@pytest.fixture(scope="module")
def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def reference_logprobs(model, seqs, temperature):
    """Each sequence alone, full logits, log_softmax: the plain computation."""
    rows = []
    for s in seqs:
        ids = torch.tensor([s.prompt_ids + s.completion_ids])
        logits = model(input_ids=ids).logits[0, :-1] / temperature
        logp = torch.log_softmax(logits.float(), -1)
        n = len(s.completion_ids)
        rows.append(logp[-n:].gather(-1, ids[0, -n:, None])[:, 0])
    return rows


def test_chunked_logprobs_match_full_logits(tiny_model, monkeypatch):
    seqs = [seq(30, 7, seed=1), seq(12, 15, seed=2), seq(40, 3, seed=3)]
    expected = reference_logprobs(tiny_model, seqs, 0.7)
    monkeypatch.setattr(seqmod, "LOGIT_CHUNK_BYTES", 4 * 100 * 3 * 4)  # slices of 4 positions
    logp, mask, ent = completion_logprobs(tiny_model, seqs, pad_id=0, temperature=0.7, with_entropy=True)
    assert logp.shape == mask.shape == ent.shape == (3, 15)
    for b, row in enumerate(expected):
        got = logp[b][mask[b].bool()]
        torch.testing.assert_close(got, row, atol=1e-5, rtol=1e-5)
    assert torch.equal(right_align(expected, 15) != 0, mask.bool())


def test_chunked_gradients_match(tiny_model, monkeypatch):
    seqs = [seq(20, 9, seed=4), seq(25, 6, seed=5)]
    tiny_model.zero_grad()
    sum(r.sum() for r in reference_logprobs(tiny_model, seqs, 1.0)).backward()
    expected = [p.grad.clone() for p in tiny_model.parameters()]
    tiny_model.zero_grad()
    monkeypatch.setattr(seqmod, "LOGIT_CHUNK_BYTES", 4 * 100 * 2 * 2)  # slices of 2 positions
    logp, mask, _ = completion_logprobs(tiny_model, seqs, pad_id=0)
    (logp * mask).sum().backward()
    for want, p in zip(expected, tiny_model.parameters()):
        torch.testing.assert_close(p.grad, want, atol=1e-5, rtol=1e-4)
    tiny_model.zero_grad()


def test_a_shared_prompt_gives_the_same_logprobs_entropy_and_gradients(tiny_model, monkeypatch):
    prompt = seq(30, 1, seed=9).prompt_ids
    seqs = [TrainSequence(prompt_ids=prompt, completion_ids=seq(1, c, seed=10 + c).completion_ids,
                          advantage=1.0, question=0) for c in (7, 12, 3)]
    assert shared_prompt(seqs)
    monkeypatch.setattr(seqmod, "LOGIT_CHUNK_BYTES", 4 * 100 * 3 * 4)  # slices of 4 positions
    tiny_model.zero_grad()
    alone = [completion_logprobs(tiny_model, [s], pad_id=0, temperature=0.7, with_entropy=True) for s in seqs]
    sum((lp * m).sum() for lp, m, _ in alone).backward()
    expected = [p.grad.clone() for p in tiny_model.parameters()]
    tiny_model.zero_grad()
    logp, mask, ent = completion_logprobs(tiny_model, seqs, pad_id=0, temperature=0.7, with_entropy=True)
    assert logp.shape == mask.shape == ent.shape == (3, 12)
    for b, (lp, _, e) in enumerate(alone):
        n = len(seqs[b].completion_ids)
        torch.testing.assert_close(logp[b, 12 - n:], lp[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ent[b, 12 - n:], e[0], atol=1e-5, rtol=1e-5)
        assert mask[b].sum() == n and mask[b, 12 - n:].all()
    (logp * mask).sum().backward()
    for want, p in zip(expected, tiny_model.parameters()):
        torch.testing.assert_close(p.grad, want, atol=1e-5, rtol=1e-4)
    tiny_model.zero_grad()


def test_the_entropy_the_trainer_uses_is_the_sampling_distributions_entropy(tiny_model, monkeypatch):
    """The trainer's entropy (`completion_logprobs(..., with_entropy=True)` through a
    `CompletionScorer`, sliced) equals -sum p log p of softmax(logits / T), computed here
    one position at a time with plain floats."""
    import math

    from rememr1.rl.sequences import CompletionScorer

    seqs = [seq(9, 5, seed=21), seq(4, 3, seed=22)]
    monkeypatch.setattr(seqmod, "LOGIT_CHUNK_BYTES", 4 * 100 * 2 * 2)  # slices of 2 positions
    with torch.no_grad():
        _, mask, ent = completion_logprobs(CompletionScorer(tiny_model), seqs, pad_id=0, temperature=0.7,
                                           with_entropy=True)
        for b, s in enumerate(seqs):
            ids = torch.tensor([s.prompt_ids + s.completion_ids])
            logits = tiny_model(input_ids=ids).logits[0, :-1].double().tolist()
            n = len(s.completion_ids)
            want = []
            for row in logits[-n:]:
                z = [x / 0.7 for x in row]
                top = max(z)
                total = sum(math.exp(x - top) for x in z)
                ps = [math.exp(x - top) / total for x in z]
                want.append(-sum(p * math.log(p) for p in ps if p > 0))
            got = ent[b][mask[b].bool()].tolist()
            assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert 0 < min(ent[mask.bool()].tolist()) and max(ent[mask.bool()].tolist()) < math.log(100)
