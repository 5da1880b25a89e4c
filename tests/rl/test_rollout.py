"""RL rollouts go through the agent's own loop: batching, seeding, and equality with what
evaluation produces for the same seeds and sampling."""

from __future__ import annotations

import pytest
import torch

from rememr1.agent import Agent, AgentConfig
from rememr1.backends.base import SamplingParams
from rememr1.data.records import Sample
from rememr1.rl.rollout import RolloutConfig
from rememr1.rl.rollout import collect_rollouts, policy_agent, rollout_index, trainable_steps

DOC = " ".join(f"Paragraph {i}: the harbour of Velm{i} was built by Orrin{i}." for i in range(6))


def samples(n: int) -> list[Sample]:
    return [Sample(id=f"q{i}", question=f"Who built harbour {i}?", answers=[f"Orrin{i}"], context=DOC)
            for i in range(n)]


def scripted_agent(scripted, reply: str = "<update>kept</update><recall>harbour</recall>"):
    backend = scripted(lambda prompt, i: reply if "<section>" in prompt else "\\boxed{Orrin1}")
    sampling = SamplingParams(max_new_tokens=16, temperature=1.0, top_p=1.0, seed=11)
    return backend, Agent(backend, AgentConfig(chunk_size=120), sampling)


def test_all_rollouts_of_a_step_share_generate_calls(scripted):
    backend, agent = scripted_agent(scripted)
    groups = collect_rollouts(agent, samples(3), group_size=4, step=5)
    n_chunks = len(groups[0][0].steps) - 1
    assert n_chunks >= 2
    # the 3 x 4 episodes advance together: their requests wait together and are batched
    assert backend.batches == [12] * (n_chunks + 1)
    assert [[(r.question, r.g) for r in g] for g in groups] == [[(q, g) for g in range(4)] for q in range(3)]
    for g in groups:
        for r in g:
            assert r.result.answer == "Orrin1"
            assert r.steps[1].recall_query == "harbour"  # the same transition as `ask`


def test_seeds_depend_on_step_question_and_rollout_only(scripted):
    def seeds(step, batch):
        backend, agent = scripted_agent(scripted)
        collect_rollouts(agent, batch, group_size=3, step=step)
        by_prompt = {}
        for req in backend.requests:
            by_prompt.setdefault(req.messages[0]["content"], []).append(req.seed)
        return by_prompt

    a = seeds(1, samples(2))
    # G rollouts of one question see the same prompt at step 0 but sample with distinct seeds
    first = [s for p, s in a.items() if "No previous memory" in p]
    assert all(len(set(x)) == 3 for x in first)
    assert seeds(1, samples(2)) == a  # reproducible
    b = seeds(2, samples(2))  # another training step draws other samples
    assert set(sum(a.values(), [])).isdisjoint(sum(b.values(), []))
    # a question's seeds do not depend on which other questions share the batch
    alone = seeds(1, samples(2)[1:])
    for prompt, s in alone.items():
        assert a[prompt] == s
    assert rollout_index(3, "q1", 0) != rollout_index(3, "q1", 1) != rollout_index(4, "q1", 1)


def test_unbuildable_question_is_skipped(scripted):
    _, agent = scripted_agent(scripted)
    batch = samples(2)
    batch[0] = Sample(id="empty", question="   ", answers=["x"], context=DOC)
    groups = collect_rollouts(agent, batch, group_size=2, step=1)
    assert [g[0].question for g in groups] == [1]


def test_collect_rollouts_needs_seeded_sampling(scripted):
    backend = scripted(lambda p, i: "")
    agent = Agent(backend, AgentConfig(chunk_size=100), SamplingParams(temperature=1.0, seed=None))
    with pytest.raises(ValueError, match="seeded"):
        collect_rollouts(agent, samples(1), group_size=2, step=1)


@pytest.fixture(scope="module")
def tiny_policy():
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rememr1.backends.builtin import builtin_hf_dir

    tok = AutoTokenizer.from_pretrained(str(builtin_hf_dir()))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(1)
    return LlamaForCausalLM(cfg).eval(), tok


def test_rollout_records_equal_evaluation_with_same_seeds(tiny_policy):
    model, tok = tiny_policy
    cfg = RolloutConfig(group_size=3, batch_size=2, generation_batch_size=4,
                        sampling=SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9))
    agent = policy_agent(model, tok, cfg, AgentConfig(chunk_size=60), seed=7)
    groups = collect_rollouts(agent, samples(2), group_size=3, step=4)
    replies = set()
    for group in groups:
        for r in group:
            # Evaluation path: an Agent on the same model and sampling, one episode at a
            # time (a different batch composition), seeded by the rollout's index.
            eval_agent = Agent(agent.backend, AgentConfig(chunk_size=60), agent.sampling)
            (res,) = eval_agent.run([eval_agent.episode(DOC, r.sample.question, index=r.index)])
            assert len(res.steps) == len(r.steps) >= 3
            for mine, theirs in zip(r.steps, res.steps):
                assert mine.messages == theirs.messages
                assert mine.reply == theirs.reply
                assert mine.prompt_ids == theirs.prompt_ids
                assert mine.completion_ids == theirs.completion_ids
                assert mine.finish_reason == theirs.finish_reason
                assert (mine.memory_before, mine.memory_after) == (theirs.memory_before, theirs.memory_after)
                assert mine.recall_query == theirs.recall_query
            assert r.result.answer == res.answer
            replies.add(r.steps[0].reply)
            # every step is a training sequence: its ids are the chat-templated prompt and
            # the sampled tokens, and decoding the completion gives the reply
            assert len(trainable_steps(r.steps)) == len(r.steps)
            first = r.steps[0]
            assert list(first.prompt_ids) == agent.backend.prompt_ids(agent.episode(DOC, r.sample.question).next_request())
            assert tok.decode(first.completion_ids, skip_special_tokens=True) == first.reply
    assert len(replies) == 6  # G distinct samples for each question
