"""The verl agent loop on CPU: registered under "rememr1", it drives one episode through
the engine against a server-manager stand-in backed by the built-in model, with token ids
in and out, and returns every step for multi-conversation training.

Runs where verl is installed (`make test` installs it in its own environment, as verl
pins transformers); skipped elsewhere, with the reason printed.
"""

from __future__ import annotations

import asyncio

import pytest

verl = pytest.importorskip("verl", reason="verl is not installed (pip install 'rememr1[verl]')")
pytest.importorskip("verl.experimental.agent_loop.agent_loop", reason="verl's agent loop does not import")

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from rememr1.agent import Agent, AgentConfig  # noqa: E402
from rememr1.backends.base import SamplingParams  # noqa: E402
from rememr1.backends.hf import HFBackend  # noqa: E402

QUESTION = "Who built the lens of the Varrow Point lighthouse?"
CONTEXT = " ".join(f"Entry {i}: the harbour received cargo and mail on day {i}." for i in range(40)) + \
    " The lens of the Varrow Point lighthouse was built by Orrin Yard."


class StandInServerManager:
    """verl's server manager interface over the built-in model: prompt ids in, token ids
    out (greedy, so the agent-loop run and a plain Agent run sample alike)."""

    def __init__(self, backend: HFBackend):
        self.backend = backend
        self.calls: list[tuple[list[int], dict]] = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        self.calls.append((list(prompt_ids), dict(sampling_params)))
        model, tok = self.backend.model, self.backend.tokenizer_hf
        ids = torch.tensor([prompt_ids])
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=sampling_params["max_tokens"], pad_token_id=tok.pad_token_id)
        return TokenOutput(token_ids=out[0, len(prompt_ids):].tolist())


@pytest.fixture(scope="module")
def backend():
    return HFBackend(None, device="cpu", max_batch_size=1)


def make_loop(backend, server):
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, _agent_loop_registry

    import rememr1.integrations.verl as integration

    assert _agent_loop_registry["rememr1"] == {"_target_": "rememr1.integrations.verl.ReMemR1AgentLoop"}
    config = OmegaConf.create({
        "actor_rollout_ref": {"rollout": {"prompt_length": 4096, "response_length": 256}},
        "data": {},
        "rememr1": {"method": "rememr1", "chunk_size": 128, "max_new_tokens": 24,
                    "fallback": "reply", "reward": {"outcome_metric": "em"}},
    })
    return integration.ReMemR1AgentLoop(
        trainer_config=DictConfigWrap(config), server_manager=server, tokenizer=backend.tokenizer_hf,
        processor=None, dataset_cls=None, data_config=DictConfigWrap(config.data), hf_model_type="llama",
    )


def test_loop_runs_an_episode_with_token_ids_in_and_out(backend):
    server = StandInServerManager(backend)
    loop = make_loop(backend, server)
    row = {"raw_prompt": [{"role": "user", "content": QUESTION}], "context": CONTEXT,
           "reward_model": {"ground_truth": ["Orrin Yard"]}, "index": 3}
    out = asyncio.run(loop.run({"temperature": 0.0, "top_p": 1.0, "top_k": -1}, **row))
    steps = out.extra_fields["rememr1_steps"]
    # one request per step, every step's ids exactly those the server saw and returned
    assert len(steps) == len(server.calls) >= 3
    assert [s["kind"] for s in steps] == ["memory"] * (len(steps) - 1) + ["final"]
    for step, (prompt, params) in zip(steps, server.calls):
        assert step["prompt_ids"] == prompt and params["max_tokens"] <= 24
    assert out.prompt_ids == steps[-1]["prompt_ids"] and out.response_ids == steps[-1]["response_ids"]
    assert out.response_mask == [1] * len(out.response_ids)
    rewards = out.extra_fields["rememr1_rewards"]
    assert len(rewards["state"]) == len(steps) and rewards["outcome"] in (0.0, 1.0)

    # the same episode through a plain Agent on the same model: the same prompts and replies
    agent = Agent(backend, config=AgentConfig(chunk_size=128, fallback="reply"),
                  sampling=SamplingParams(max_new_tokens=24, temperature=0.0))
    result = agent.answer(CONTEXT, QUESTION)
    assert [list(r.prompt_ids) for r in result.steps] == [s["prompt_ids"] for s in steps]
    assert [list(r.completion_ids) for r in result.steps] == [s["response_ids"] for s in steps]


def test_expand_steps_gives_one_row_per_step_with_group_advantages():
    from rememr1.integrations.verl import expand_steps

    def rollout(outcome, states):
        kinds = ["memory"] * (len(states) - 1) + ["final"]
        steps = [{"step": t, "kind": k, "prompt_ids": [t], "response_ids": [t, t]} for t, k in enumerate(kinds)]
        rewards = {"outcome": outcome, "answer": None, "steps": list(range(len(states))), "kinds": kinds,
                   "memory_gain": [0.0] * len(states), "callback": [0.0] * len(states),
                   "format": [0.0] * len(states), "state": states, "recalled": [False] * len(states)}
        return steps, rewards

    a, b, c = rollout(1.0, [1.0, 0.0, 1.0]), rollout(0.0, [0.0, 0.0, 1.0]), rollout(1.0, [1.0, 1.0])
    rows = expand_steps(["q1", "q1", "q2"], [a[0], b[0], c[0]], [a[1], b[1], c[1]], alpha=0.8)
    assert len(rows) == 3 + 3 + 2
    first = [r for r in rows if r["trajectory"] == 0]
    # outcome advantage 0.5; step 0 state [1, 0] -> 0.5; step 1 [0, 0] -> 0
    assert first[0]["advantage"] == pytest.approx(0.8 * 0.5 + 0.2 * 0.5)
    assert first[1]["advantage"] == pytest.approx(0.8 * 0.5)
    lone = [r for r in rows if r["uid"] == "q2"]
    assert all(r["advantage"] == 0.0 for r in lone)  # a group of one
