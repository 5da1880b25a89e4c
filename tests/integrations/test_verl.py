"""ReMemR1 on verl 0.9.1's V1 trainer, on CPU, with verl's own classes (as verl's `*_on_cpu`
tests do): a real CPU TransferQueue (`tq.init()` on a local Ray), verl's agent-loop worker
and trainer methods bound to stubs, and a stand-in rollout server that replies with scripted
protocol text in the built-in model's (SmolLM2) token ids.

(a) `import verl` in a fresh interpreter registers our loop and trainer (entry point);
(b) the multi-output contract through verl's post-processing: one row per step, keys
    `{uid}_{session}_{i}`, the reward on every row, log-probs on every row;
(c) verl's grpo (alpha = 1) equals `group_advantages(alpha=1)`, row by row;
(d) the trainer's override on a batch with verl's padding rows equals `group_advantages`
    at alpha = 0.8, row by row; mini-batches counted as `rememr1 train` counts them;
(e) the launcher's overrides compose against verl's `ppo_trainer` config and pass its checks;
(f) verl's policy loss (core_algos) with those settings equals `rl.loss.total_loss`;
(g) rows of verl's RLHFDataset reach `run()` with question, document and answers.

Runs where verl is installed (`make test-verl`, .venv-verl); skipped elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections import defaultdict

import pytest

verl = pytest.importorskip("verl", reason="verl is not installed (pip install 'rememr1[verl]')")
tq = pytest.importorskip("transfer_queue", reason="transferqueue is not installed (pip install 'rememr1[verl]')")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from rememr1.integrations.verl import agent_loop as loop_module  # noqa: E402
from rememr1.integrations.verl.agent_loop import STEP_FIELD, ReMemR1AgentLoop  # noqa: E402
from rememr1.integrations.verl.launcher import mini_batches, verl_overrides  # noqa: E402
from rememr1.integrations.verl.trainer import ReMemR1Trainer, split_key  # noqa: E402
from rememr1.rl.advantages import AdvantageConfig, group_advantages  # noqa: E402
from rememr1.rl.config import load_config  # noqa: E402

QUESTIONS = [
    ("Who built the lens of the Varrow Point lighthouse?", "Orrin Yard"),
    ("Which ship carried the lens to Varrow Point?", "the Tolland"),
]
FILLER = " ".join(f"Entry {i}: the harbour received cargo and mail on day {i}." for i in range(30))
G = 3


def document(i: int) -> str:
    facts = ["The lens of the Varrow Point lighthouse was built by Orrin Yard.",
             "The lens reached Varrow Point aboard the Tolland."]
    return f"{FILLER} {facts[i]} {FILLER}"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model_dir():
    from rememr1.backends.builtin import builtin_hf_dir

    return str(builtin_hf_dir())


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    """Schema A (MemAgent's parquet layout), as `rememr1 data ... --format parquet` writes it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("data") / "train.parquet"
    rows = [{"data_source": "revhop", "prompt": [{"role": "user", "content": q}], "context": document(i),
             "reward_model": {"style": "rule", "ground_truth": [a]},
             "extra_info": {"index": i, "question": q}} for i, (q, a) in enumerate(QUESTIONS)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def training_config(train_file, **overrides):
    base = {"data.train": [train_file], "agent.chunk_size": 160, "agent.fallback": "reply",
            "rollout.sampling.max_new_tokens": 40, "rollout.group_size": G, "rollout.batch_size": 2,
            "optim.mini_batch_size": 1, "optim.max_tokens_per_micro_batch": 4096, "out": "/tmp/rememr1-verl-test"}
    return load_config(None, {**base, **overrides})


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import verl.trainer.main_ppo as main_ppo

    GlobalHydra.instance().clear()
    config_dir = os.path.join(os.path.dirname(main_ppo.__file__), "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=overrides)


@pytest.fixture(scope="module")
def verl_config(train_file, model_dir):
    cfg = training_config(train_file)
    return compose(verl_overrides(cfg, model_path=model_dir, check_files=True))


class ScriptedServer:
    """verl's server client over scripted replies: the first request id it sees (session)
    writes the answer into memory and boxes it; the others forget it and box a wrong one.
    Replies come back as the tokenizer's ids with made-up log-probs."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.sessions: list[str] = []
        self.calls: list[dict] = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        if request_id not in self.sessions:
            self.sessions.append(request_id)
        good = self.sessions.index(request_id) % G == 0
        prompt = self.tokenizer.decode(prompt_ids)
        answer = next((a for q, a in QUESTIONS if q in prompt), "nobody")
        if "<section>" in prompt:  # a memory step (the final prompt shows no section)
            text = f"<update>{'The answer is ' + answer if good else 'Nothing yet'}.</update>"
        else:
            text = f"\\boxed{{{answer if good else 'nobody'}}}"
        ids = self.tokenizer.encode(text, add_special_tokens=False)[: sampling_params["max_tokens"]]
        ids = ids + [self.tokenizer.eos_token_id] if len(ids) < sampling_params["max_tokens"] else ids
        self.calls.append({"request_id": request_id, "prompt": prompt, "params": dict(sampling_params)})
        return TokenOutput(token_ids=ids, log_probs=[-0.01 * (k + 1) for k in range(len(ids))],
                           extra_fields={"global_steps": 1})


@pytest.fixture(scope="module")
def transfer_queue():
    import ray

    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    # logical CPUs for the controller and storage actors (Ray schedules them by CPU count)
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
    yield tq
    tq.close()
    ray.shutdown()


@pytest.fixture(scope="module")
def rollout(verl_config, tokenizer, transfer_queue):
    """One training step's rollouts through verl's V1 path: the dataset rows (verl's
    RLHFDataset, collate and TensorDict, as the trainer builds them) go to verl's
    AgentLoopWorkerTQ, which runs our loop G times per prompt and writes every output to
    the TransferQueue. Records each episode's rewards as the loop computed them."""
    from verl.trainer.ppo.utils import create_rl_dataset
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ
    from verl.utils import tensordict_utils as tu
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    dataset = create_rl_dataset(verl_config.data.train_files, verl_config.data, tokenizer, None, is_train=True)
    batch_dict = collate_fn([dataset[i] for i in range(len(dataset))])
    uids = [f"q{i}uid" for i in range(len(dataset))]
    batch_dict["uid"] = np.array(uids, dtype=object)
    batch = tu.get_tensordict(batch_dict)
    tu.assign_non_tensor_data(batch, "global_steps", 1)

    worker = object.__new__(AgentLoopWorkerTQ.__ray_actor_class__)
    server = ScriptedServer(tokenizer)
    worker.config = verl_config
    worker.llm_client = server
    worker.tokenizer = tokenizer
    worker.processor = None
    worker.hf_model_type = "llama"
    worker.dataset_cls = RLHFDataset
    worker.tools = []
    worker.reward_loop_worker_handles = None
    worker.distillation_enabled = False
    worker.background_tasks = set()

    real_rewards = loop_module.episode_rewards
    runs = []

    def spy(records, golds, cfg):  # the episode's questions are in its records' prompts
        rewards = real_rewards(records, golds, cfg)
        run = next(r for r in runs if r["_question"] in records[0].messages[0]["content"]
                   and "_rewards" not in r and r["_task"] is asyncio.current_task())
        run["_rewards"] = rewards
        return rewards

    original_run = ReMemR1AgentLoop.run

    async def run_spy(self, sampling_params, **kwargs):
        runs.append({**kwargs, "_question": kwargs["raw_prompt"][0]["content"], "_task": asyncio.current_task()})
        return await original_run(self, sampling_params, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(loop_module, "episode_rewards", spy)
    mp.setattr(ReMemR1AgentLoop, "run", run_spy)

    async def go():
        await worker.generate_sequences(batch)
        while worker.background_tasks:
            await asyncio.gather(*list(worker.background_tasks))

    try:
        asyncio.run(go())
    finally:
        mp.undo()
    listing = tq.kv_list("train")["train"]
    # rows are tagged "success"; the prompts' own keys (uids) carry their group status
    keys = sorted(k for k, tag in listing.items() if tag.get("status") == "success")
    tags = [listing[k] for k in keys]
    episodes = {(str(r["uid"]), str(r["session_id"])): r["_rewards"] for r in runs}
    return {"keys": keys, "tags": tags, "runs": runs, "episodes": episodes, "server": server,
            "dataset": dataset, "uids": uids}


def fetch(keys, fields):
    return tq.kv_batch_get(keys=keys, partition_id="train", select_fields=fields)


def expected_advantages(episodes, uids, alpha, scale_by_std=False):
    """(uid, session, step) -> group_advantages of the episodes the loop computed."""
    out = {}
    for uid in uids:
        sessions = sorted(s for u, s in episodes if u == uid)
        mixed = group_advantages([episodes[(uid, s)] for s in sessions],
                                 AdvantageConfig(alpha=alpha, scale_by_std=scale_by_std))
        for s, per_step in zip(sessions, mixed, strict=True):
            out.update({(uid, s, t): a for t, a in zip(episodes[(uid, s)].steps, per_step, strict=True)})
    return out


# ----------------------------------------------------------------------------- (a) plug-in


def test_import_verl_registers_the_loop_and_the_trainer_in_a_fresh_process():
    code = textwrap.dedent("""
        import verl
        from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
        from verl.trainer.ppo.v1.trainer_base import get_trainer_cls
        print(_agent_loop_registry["rememr1"]["_target_"])
        print(get_trainer_cls("rememr1").__module__)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "auto"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["rememr1.integrations.verl.agent_loop.ReMemR1AgentLoop",
                                  "rememr1.integrations.verl.trainer"]


def test_packaged_agent_loop_yaml_names_the_loop():
    import hydra

    from rememr1.integrations.verl import agent_loop_config_path

    entries = OmegaConf.load(agent_loop_config_path())
    assert [e.name for e in entries] == ["rememr1"]
    assert hydra.utils.get_class(entries[0]["_target_"]) is ReMemR1AgentLoop


# ----------------------------------------------------------------------- (b) and (g): rows


def test_every_step_is_a_row_with_its_reward_and_log_probs(rollout):
    keys, server = rollout["keys"], rollout["server"]
    data = fetch(keys, ["prompts", "responses", "response_mask", "rm_scores", "rollout_log_probs",
                        "extra_fields", "uid", "session_id"])
    extras = list(data["extra_fields"])
    by_session = defaultdict(list)
    for key, extra in zip(keys, extras, strict=True):
        uid, session, index = split_key(key)
        by_session[(uid, session)].append((index, extra[STEP_FIELD]))
    assert len(by_session) == len(QUESTIONS) * G
    for (uid, session), rows in by_session.items():
        episode = rollout["episodes"][(uid, session)]
        rows.sort()
        # one row per step, in step order, memory steps then the final one
        assert [i for i, _ in rows] == list(range(len(episode.steps)))
        assert [s["step"] for _, s in rows] == episode.steps
        assert [s["kind"] for _, s in rows] == episode.kinds
        assert episode.kinds[-1] == "final" and len(episode.steps) >= 3
        assert [s["state"] for _, s in rows] == pytest.approx(episode.state)
        assert {s["outcome"] for _, s in rows} == {episode.outcome}
    # verl copied the final reward to every row (as the last response token's score)
    scores = data["rm_scores"].to_padded_tensor(padding=0.0).sum(dim=1).tolist()
    for key, score in zip(keys, scores, strict=True):
        uid, session, _ = split_key(key)
        assert score == pytest.approx(rollout["episodes"][(uid, session)].outcome)
    assert {e["reward_extra_info"]["acc"] for e in extras} == {0.0, 1.0}
    # the engine's ids and log-probs are what the rows hold; one request id per episode
    assert len(server.calls) == len(keys)
    assert len(server.sessions) == len(by_session)
    for mask, logp, resp in zip(data["response_mask"].unbind(), data["rollout_log_probs"].unbind(),
                                data["responses"].unbind(), strict=True):
        assert mask.tolist() == [1] * len(resp)
        assert logp.tolist() == pytest.approx([-0.01 * (k + 1) for k in range(len(resp))])
    # per-session seeds differ, per step too
    seeds = {(c["request_id"], c["params"]["seed"]) for c in server.calls}
    assert len({s for _, s in seeds}) == len(server.calls)


def test_dataset_rows_reach_run_with_question_document_and_answers(rollout):
    runs, dataset = rollout["runs"], rollout["dataset"]
    assert len(runs) == len(QUESTIONS) * G
    for kwargs in runs:
        i = rollout["uids"].index(str(kwargs["uid"]))
        question, answer = QUESTIONS[i]
        assert kwargs["raw_prompt"][0]["content"] == question
        assert kwargs["context"] == document(i)
        assert list(kwargs["reward_model"]["ground_truth"]) == [answer]
        assert kwargs["global_steps"] == 1 and int(kwargs["session_id"]) in range(G)
    # and what the server saw were prompts of those questions and of chunks of that document
    prompts = [c["prompt"] for c in rollout["server"].calls]
    assert all(any(q in p for q, _ in QUESTIONS) for p in prompts)
    assert any("built by Orrin Yard" in p for p in prompts)
    assert len(dataset) == len(QUESTIONS)


def test_legacy_trainer_gets_the_final_step_and_a_warning(verl_config, tokenizer, caplog):
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap

    config = OmegaConf.merge(verl_config, {"trainer": {"use_v1": False}})
    loop = ReMemR1AgentLoop(trainer_config=DictConfigWrap(config), server_manager=ScriptedServer(tokenizer),
                            tokenizer=tokenizer, processor=None, dataset_cls=None,
                            data_config=DictConfigWrap(config.data), hf_model_type="llama")
    row = {"raw_prompt": [{"role": "user", "content": QUESTIONS[0][0]}], "context": document(0),
           "reward_model": {"ground_truth": [QUESTIONS[0][1]]}, "index": 0}
    loop_module._warned_legacy = False
    with caplog.at_level("WARNING", logger=loop_module.__name__):
        out = asyncio.run(loop.run({"temperature": 1.0, "top_p": 1.0, "logprobs": True}, **row))
        asyncio.run(loop.run({"temperature": 1.0, "top_p": 1.0}, **row))
    assert not isinstance(out, list)
    assert out.extra_fields[STEP_FIELD]["kind"] == "final" and out.reward_score == 1.0
    assert sum("memory steps are not" in r.getMessage() for r in caplog.records) == 1


# ------------------------------------------------------------------ (c) and (d): advantages


def make_trainer(verl_config, **advantage):
    """The registered trainer on `verl_config`, with `advantage` (AdvantageConfig keys) in its
    `rememr1.advantage` section."""
    config = OmegaConf.merge(verl_config, {"rememr1": {"advantage": advantage}}) if advantage else verl_config
    trainer = object.__new__(ReMemR1Trainer)
    trainer.config = config
    trainer.use_critic = False
    trainer.global_steps = 1
    return trainer


def padded_batch(rollout, tokenizer, multiple):
    from transfer_queue import KVBatchMeta

    from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size

    keys = rollout["keys"]
    data = fetch(keys, ["rollout_log_probs"])
    old = data["rollout_log_probs"]
    tq.kv_batch_put(keys=keys, partition_id="train",
                    fields=tq_fields({"old_log_probs": old, "ref_log_prob": old.clone()}, len(keys)))
    batch = KVBatchMeta(keys=list(keys), tags=[dict(t) for t in rollout["tags"]], partition_id="train")
    return upsample_batch_to_divisible_size(batch, multiple, tokenizer.eos_token_id)


def tq_fields(values, n):
    from tensordict import TensorDict

    return TensorDict(values, batch_size=n)


def advantages_by_row(batch):
    data = tq.kv_batch_get(keys=batch.keys, partition_id="train", select_fields=["advantages", "response_mask"])
    return [(a.tolist(), m.tolist()) for a, m in zip(data["advantages"].unbind(), data["response_mask"].unbind(),
                                                        strict=True)]


def check_rows(batch, rollout, expected):
    rows = advantages_by_row(batch)
    real = 0
    for key, tag, (adv, mask) in zip(batch.keys, batch.tags, rows, strict=True):
        if tag.get("is_padding"):
            assert sum(mask) == 0 and all(a == 0 for a in adv)
            continue
        real += 1
        uid, session, index = split_key(key)
        step = rollout["episodes"][(uid, session)].steps[index]
        assert adv == pytest.approx([expected[(uid, session, step)]] * len(adv), abs=1e-6)
    assert real == len(rollout["keys"])


@pytest.mark.parametrize("scale_by_std", [False, True])
def test_verl_grpo_at_alpha_1_equals_group_advantages(rollout, verl_config, tokenizer, scale_by_std):
    config = OmegaConf.merge(verl_config, {"algorithm": {"norm_adv_by_std_in_grpo": scale_by_std}})
    trainer = make_trainer(config, alpha=1.0, scale_by_std=scale_by_std)
    batch = padded_batch(rollout, tokenizer, multiple=len(rollout["keys"]) + 3)
    trainer._compute_advantage(batch, metrics={})
    expected = expected_advantages(rollout["episodes"], rollout["uids"], alpha=1.0, scale_by_std=scale_by_std)
    assert len({round(v, 6) for v in expected.values()}) > 1  # not all zero: the test can fail
    check_rows(batch, rollout, expected)


def test_trainer_override_equals_group_advantages_at_alpha_0_8_with_padding_rows(rollout, verl_config, tokenizer):
    trainer = make_trainer(verl_config, alpha=0.8)
    batch = padded_batch(rollout, tokenizer, multiple=len(rollout["keys"]) + 5)
    assert sum(t.get("is_padding", False) for t in batch.tags) == 5
    metrics = {}
    trainer._compute_advantage(batch, metrics=metrics)
    expected = expected_advantages(rollout["episodes"], rollout["uids"], alpha=0.8)
    outcome_only = expected_advantages(rollout["episodes"], rollout["uids"], alpha=1.0)
    assert any(abs(expected[k] - outcome_only[k]) > 1e-3 for k in expected)  # the state term matters here
    check_rows(batch, rollout, expected)
    assert metrics["rememr1/advantage/max"] == pytest.approx(max(expected.values()), abs=1e-6)


def test_mini_batches_are_counted_in_questions(verl_config, train_file):
    """V1 would make one update per ppo_mini_batch_size x n rows; ours makes one per
    mini-batch of questions, whatever the number of steps per episode."""
    cfg = training_config(train_file)
    k = mini_batches(cfg)
    assert k == 2  # 2 questions per step, 1 per mini-batch
    trainer = make_trainer(verl_config)
    assert trainer._get_required_batch_multiple(4) == 4 * k

    class Batch:
        def __init__(self, n):
            self.n, self.extra_info = n, {}

        def __len__(self):
            return self.n

    seen = []

    class WorkerGroup:
        def update_actor(self, batch):
            seen.append(dict(batch.extra_info))
            return {"metrics": {"mfu": [0.0], "pg_loss": [0.0]}}

    trainer.actor_rollout_wg = WorkerGroup()
    trainer.distillation_config = None
    rows = 4 * k * 7  # e.g. 4 GPUs, episodes of 7 steps
    trainer._update_actor(Batch(rows), metrics={})
    assert isinstance(trainer.actor_rollout_wg, WorkerGroup)  # restored
    assert rows // seen[0]["mini_batch_size"] == k and seen[0]["global_batch_size"] == seen[0]["mini_batch_size"]
    assert seen[0]["epochs"] == cfg.optim.epochs


# ------------------------------------------------------------------ (e) and (f): config, loss


def test_launcher_overrides_compose_and_pass_verl_checks(verl_config):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    from rememr1.integrations.verl.options import VerlOptions

    c = verl_config
    validate_config(c, use_reference_policy=need_reference_policy(c), use_critic=need_critic(c))
    assert need_reference_policy(c) and not need_critic(c)
    rollout = omega_conf_to_dataclass(c.actor_rollout_ref.rollout)
    assert (rollout.name, rollout.n, rollout.calculate_log_probs) == ("vllm", G, True)
    assert c.trainer.use_v1 and c.trainer.v1.trainer_mode == "rememr1"
    assert c.actor_rollout_ref.rollout.agent.default_agent_loop == "rememr1"
    # dynamic batches, with a token budget above the longest step
    longest = c.data.max_prompt_length + c.data.max_response_length
    assert c.actor_rollout_ref.actor.use_dynamic_bsz
    assert c.actor_rollout_ref.actor.ppo_max_token_len_per_gpu >= longest
    assert c.actor_rollout_ref.ref.log_prob_max_token_len_per_gpu >= longest
    opts = VerlOptions.from_config(c)
    assert (opts.agent.chunk_size, opts.agent.fallback, opts.max_new_tokens, opts.advantage.alpha,
            opts.mini_batches) == \
        (160, "reply", 40, 0.8, 2)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean"])
def test_verl_policy_loss_equals_total_loss(train_file, model_dir, agg):
    from verl.trainer.ppo import core_algos
    from verl.utils.config import omega_conf_to_dataclass

    from rememr1.rl.loss import total_loss

    cfg = training_config(train_file, **{"loss.agg": agg, "loss.clip_high": 0.28, "loss.kl_beta": 0.01})
    c = compose(verl_overrides(cfg, model_path=model_dir))
    actor = omega_conf_to_dataclass(c.actor_rollout_ref.actor)
    gen = torch.Generator().manual_seed(0)
    B, L = 6, 9
    logp = -torch.rand(B, L, generator=gen) * 2
    old = logp + torch.randn(B, L, generator=gen) * 0.4   # ratios inside and outside the clip range
    ref = logp + torch.randn(B, L, generator=gen) * 0.3
    adv = torch.randn(B, 1, generator=gen).expand(B, L) * 2   # one scalar per row (step)
    mask = (torch.arange(L)[None, :] < torch.tensor([9, 3, 7, 1, 5, 8])[:, None]).float()
    pg, _ = core_algos.compute_policy_loss_vanilla(old_log_prob=old, log_prob=logp, advantages=adv,
                                                   response_mask=mask, loss_agg_mode=actor.loss_agg_mode,
                                                   config=actor)
    kl = core_algos.agg_loss(core_algos.kl_penalty(logp, ref, kl_penalty=actor.kl_loss_type), mask,
                             actor.loss_agg_mode)
    theirs = pg + actor.kl_loss_coef * kl - actor.entropy_coeff * 0.0
    ours, _ = total_loss(logp, old, adv, mask, cfg.loss, ref_logp=ref)
    assert float(theirs) == pytest.approx(float(ours), rel=1e-5, abs=1e-7)
    assert float(pg) != pytest.approx(0.0)
