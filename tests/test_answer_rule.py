r"""One answer rule (`protocol.answer_of`) at every caller: `ask` (Agent.answer), `eval`,
rewards and RL training all read `\boxed{\text{Paris}}` as "Paris"."""

from __future__ import annotations

import json

import pytest

from rememr1.agent import Agent, AgentConfig
from rememr1.backends.base import SamplingParams
from rememr1.data.records import Sample
from rememr1.protocol import answer_of
from rememr1.rl.rewards import RewardConfig, episode_rewards

WRAPPED = [
    (r"so \boxed{\text{Paris}}", "Paris"),
    (r"\boxed{$\textbf{Paris}$}", "Paris"),
    (r"\boxed{\text{Marie} \text{Curie}}", "Marie Curie"),
    (r"\boxed{f(x) = \{1, 2\}}", r"f(x) = \{1, 2\}"),
    (r"<thinking>\boxed{Lyon}</thinking> \boxed{ Paris }", "Paris"),
    (r"\boxed{Paris} or \boxed{Lyon", "Paris"),
    (r"\boxed{}", ""),
    ("no box", None),
]


@pytest.mark.parametrize("reply, expected", WRAPPED)
def test_answer_of(reply, expected):
    assert answer_of(reply) == expected


def test_answer_is_baselines():
    assert answer_of("Reasoning... So the answer is **Paris**.", "answer-is") == "Paris"
    assert answer_of("The answer is: $\\text{Marie Curie}$!\nHope that helps.", "answer-is") == "Marie Curie"
    assert answer_of("the answer is A. Wait, the answer is B.", "answer-is") == "B"
    assert answer_of(r"\boxed{Paris}", "answer-is") is None
    assert answer_of("the answer is", "answer-is") is None


def _agent(scripted, final=r"I am sure: \boxed{\text{Paris}}", **kw):
    be = scripted(lambda p, i: "<update>Paris</update>" if "<section>" in p else final)
    return Agent(be, AgentConfig(chunk_size=16, **kw), SamplingParams(max_new_tokens=8, seed=0, temperature=1.0))


def test_ask_path(scripted):
    res = _agent(scripted).answer("The capital is Paris. " * 3, "What is the capital?")
    assert res.answer == "Paris" and res.steps[-1].answer == "Paris"
    res = _agent(scripted, final="So the answer is Paris.", answer_format="answer-is").answer(
        "The capital is Paris.", "What is the capital?")
    assert res.answer == "Paris"


def test_eval_path(scripted, tmp_path):
    from rememr1.eval import read_lines, run_eval, write_report

    data = tmp_path / "eval_toy_50.json"
    data.write_text(json.dumps([{"index": 0, "id": "a", "input": "What is the capital?",
                                 "context": "The capital is Paris.", "answers": ["Paris"],
                                 "num_docs": 50}]))
    run_eval([data], make_agent=lambda m: _agent(scripted), methods=["rememr1"],
             out_dir=tmp_path / "run", config={"backend": "scripted"})
    (line,) = read_lines(tmp_path / "run")
    assert line["pred"] == "Paris" and line["judge_em"] == 1.0
    _, rows = write_report(tmp_path / "run")
    assert rows[0]["em"] == 100.0


def test_reward_and_training_path(scripted):
    from rememr1.rl.logs import reward_metrics, rollout_summary
    from rememr1.rl.rollout import collect_rollouts

    agent = _agent(scripted)
    sample = Sample(id="q", question="What is the capital?", answers=["Paris"],
                    context="The capital is Paris. " * 3)
    groups = collect_rollouts(agent, [sample], group_size=2, step=1)
    rewards = [[episode_rewards(r.steps, r.sample.answers, RewardConfig()) for r in g] for g in groups]
    assert [e.outcome for e in rewards[0]] == [1.0, 1.0]
    assert reward_metrics(rewards[0], rollout_summary(groups[0]))["outcome_reward"] == 1.0
    assert rewards[0][0].format[-1] == 1.0  # one non-empty box
