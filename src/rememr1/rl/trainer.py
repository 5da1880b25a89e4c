"""The GRPO-style trainer of ReMemR1: rollouts -> multi-level rewards -> advantages -> PPO.

    from rememr1.rl.config import load_config
    from rememr1.rl.trainer import Trainer
    Trainer(load_config("revhop-smollm2-cpu", {"out": "runs/t1"})).train()
    # or: rememr1 train --config revhop-smollm2-cpu --out runs/t1
    # or, data parallel: torchrun --nproc-per-node 2 -m rememr1 train --config ... --out runs/t1

One training step:
1. rollout   -- `batch_size` questions x `group_size` sampled episodes through the agent's
               own loop on the current policy (`rl.rollout`); every agent step (each memory
               update and the final answer) becomes its own training sequence: prompt =
               the step's context, loss on the generated tokens only ("multi-conversation").
2. rewards   -- outcome and state rewards per step (`rl.rewards`), group-relative
               advantages mixed with alpha (`rl.advantages`), one scalar per sequence.
3. reference -- log-probs of the generated tokens under the frozen reference model (for
               the k3 KL term), once per step, and, when a step makes more than one
               optimizer update, under the rollout policy ("old" log-probs). With a single
               update per step the old log-probs are by definition the current ones (ratio
               1), so that extra forward pass is skipped.
4. update    -- mini-batches of questions; each packed into micro-batches of at most
               `optim.max_tokens_per_micro_batch` padded tokens (`rl.sequences`; the
               rollouts of a question that share their first prompt go together, and
               that prompt is evaluated once, except under FSDP; without KL and entropy
               terms, sequences with advantage 0 are left out), whose
               gradients are accumulated (loss normalised by the mini-batch's token or
               sequence count, so the sum equals the mini-batch mean); AdamW on float32
               master weights (bf16 autocast where it pays, `rl.policy`), warm-up,
               gradient clipping.

Memory is bounded by the token budget, not by the episode: before the first update the
trainer estimates what the budget needs (`rl.budget`) and refuses with a one-line
suggestion when it cannot fit, instead of being killed by the OS.

Outputs in OUT: `metrics.jsonl` and TensorBoard events (`rl.logs`), validation results in
`OUT/eval/step-N` (`rl.validation`), checkpoints `OUT/checkpoint-N` (plain HF model
directories plus `trainer_state.pt`, `rl.checkpoint`), `config.yaml`. Rerunning the same
command resumes from the newest checkpoint and computes the same next step as an
uninterrupted run (tests/rl/test_trainer.py checks the loss); Ctrl-C is handled by
`rl.interrupts`. With `rollout.engine: llamacpp` the adapter llama.cpp samples with is
written to `OUT/.rollout/` each step (`rl.gguf_rollouts`). Under torchrun the questions
of a step are dealt out over the ranks and gradients summed, with the model replicated or
sharded by FSDP (`rl.distributed`); rank 0 writes everything.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .rewards import episode_rewards
from . import checkpoint as ckpt
from .advantages import group_advantages
from .budget import MemoryPlan, free_bytes, limit_malloc_caching, longest_sequence
from .config import TrainConfig, config_from_dict
from .data import DataStream, batch_keys, expand_files, load_training_samples, question_key
from .distributed import from_env, full_state_dict, load_optimizer_state, optimizer_state, shard_model
from .gguf_rollouts import GGUFRollouts
from .interrupts import Interrupts
from .logs import METRIC_KEYS, RunLog, mean, reward_metrics, rollout_summary
from .loss import total_loss
from .policy import load_policy
from .optim import make_optimizer
from .rollout import collect_rollouts, policy_agent
from .sequences import (
    CompletionScorer,
    TrainSequence,
    build_sequences,
    completion_logprobs,
    pack_micro_batches,
    right_align,
)
from .validation import validate

# Config keys that may change between a run and its resumption (they do not change what a
# step computes, only how often things happen, where, or how work is batched); so may
# every validation setting (`eval.*`).
RESUMABLE_CHANGES = (
    "out", "steps", "save_every", "eval_every", "log_every", "keep_last", "model.device",
    "data.dev", "rollout.generation_batch_size", "rollout.engine_concurrency", "rollout.engine_parallel",
    "optim.max_tokens_per_micro_batch", "optim.share_prompts", "optim.skip_zero_advantage",
    "model.gradient_checkpointing",
    "distributed.strategy",
)


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, in GiB."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 2**30 if sys.platform == "darwin" else kb / 2**20  # bytes on macOS, KiB on Linux


class Trainer:
    """`Trainer(config).train()` runs (or resumes) a training run in `config.out`."""

    def __init__(self, config: TrainConfig, *, quiet: bool = False):
        self.cfg = config
        self.dist = from_env(config.model.device)
        self.out = Path(config.out).expanduser()
        self.log = RunLog(self.out, total_steps=config.steps, log_every=config.log_every,
                          quiet=quiet or not self.dist.is_main)
        self.step = 0
        self._budget_checked = False
        self._setup()

    # -- setup ---------------------------------------------------------------------------

    def _setup(self) -> None:
        from ..backends.hf import resolve_device

        cfg, dist = self.cfg, self.dist
        self.samples = load_training_samples(cfg.data.train, cfg.data.max_items)
        self.keys = [question_key(s) for s in self.samples]
        if cfg.eval_every or cfg.eval.at_start:
            if not cfg.data.dev:
                raise InputError("validation needs a dev file: set data.dev (--dev) or eval_every 0")
            from ..data.loaders import iter_samples

            for f in expand_files([cfg.data.dev], "data.dev"):
                next(iter_samples(f), None)  # a bad dev file fails now, not at step N
        if dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            ckpt.clean_partial(self.out)
            self._check_saved_config()
        dist.barrier()

        self.sharded = dist.enabled and cfg.distributed.strategy == "fsdp"
        if cfg.model.lora and self.sharded:
            raise InputError("model.lora trains under distributed.strategy replicate only (the adapter "
                             "is small enough to replicate); set --set distributed.strategy=replicate")
        device = resolve_device(dist.device(cfg.model.device))
        resume = ckpt.latest_checkpoint(self.out)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        torch.manual_seed(cfg.seed)
        self.policy = load_policy(cfg.model, device=device, bf16=cfg.optim.bf16, resume_from=resume,
                                  with_reference=cfg.loss.kl_beta > 0)
        n_params = sum(q.numel() for q in self.policy.model.parameters() if q.requires_grad)
        # The model rollouts generate with: the policy itself, or under FSDP a whole copy
        # refreshed from the shards after every update (rl.distributed).
        self.rollout_model = self.policy.model
        # What scoring and the update call: the policy (and reference) as one module each.
        self.share_prompts = cfg.optim.share_prompts and not self.sharded  # see CompletionScorer
        # A sequence whose advantage is 0 adds nothing to the gradient unless a KL or an
        # entropy term applies to it: with neither, it is left out of the scoring passes
        # (groups whose rollouts all scored alike). The loss's denominators still count
        # it, so the update is the same.
        self.skip_zero = (cfg.optim.skip_zero_advantage and not self.sharded and cfg.loss.entropy_coef == 0
                          and cfg.loss.kl_beta == 0)
        self.scorer = CompletionScorer(self.policy.model, share_prompts=self.share_prompts)
        self.ref_scorer = (CompletionScorer(self.policy.ref, share_prompts=self.share_prompts)
                           if self.policy.ref is not None else None)
        if self.sharded:
            self.rollout_model = copy.deepcopy(self.policy.model).requires_grad_(False)
            shard_model(self.scorer)
            if self.ref_scorer is not None:
                shard_model(self.ref_scorer)
        self.optimizer, self.scheduler = make_optimizer(self.scorer.parameters(), cfg.optim)
        self.data = DataStream(len(self.samples), seed=cfg.data.shuffle_seed)
        if resume is not None:
            state = ckpt.load_state(resume)
            load_optimizer_state(self.scorer, self.optimizer, state["optimizer"], sharded=self.sharded)
            self.scheduler.load_state_dict(state["scheduler"])
            ckpt.set_rng_state(state["rng"])
            self.data = DataStream(len(self.samples), seed=cfg.data.shuffle_seed, **state["data"])
            self.step = int(state["step"])
            self.log.say(f"resuming from {resume} (step {self.step})")

        limit_malloc_caching()
        self.plan = MemoryPlan.for_model(
            self.rollout_model, checkpointing=cfg.model.gradient_checkpointing,
            trainable_params=n_params // dist.world_size if self.sharded else n_params)
        free = free_bytes(device)
        self.token_budget = (cfg.optim.max_tokens_per_micro_batch
                             or self.plan.default_budget(free, self.policy.device.type))
        self._check_budget(longest_sequence(cfg.agent.chunk_size or 5000, cfg.rollout.sampling.max_new_tokens))
        self._snapshot = self._capture()
        # What samples the rollouts: the torch policy, or llama.cpp on its exported adapter.
        self.agent = self.gguf = None
        if cfg.rollout.engine == "hf":
            self.agent = policy_agent(self.rollout_model, self.policy.tokenizer, cfg.rollout, cfg.agent,
                                      seed=cfg.seed, autocast=self.policy.autocast)
        else:
            if dist.world_size > 1:
                raise InputError("rollout.engine=llamacpp runs in one process; use the hf engine "
                                 "for a distributed run")
            self.gguf = GGUFRollouts(self.policy.model, self.policy.tokenizer, cfg.rollout, cfg.agent,
                                     seed=cfg.seed, work_dir=self.out / ".rollout")

    def _check_budget(self, longest: int) -> None:
        """Refuse (one line) a token budget, or a sequence, that cannot fit in memory."""
        self.plan.check(self.token_budget, free_bytes(str(self.policy.device)), longest=longest,
                        checkpointing=self.cfg.model.gradient_checkpointing)

    def _check_saved_config(self) -> None:
        import yaml

        path = self.out / "config.yaml"
        new = self.cfg.to_dict()
        if path.exists():
            try:
                old = config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")) or {}).to_dict()
            except InputError:
                old = None
            if old is not None and ckpt.latest_checkpoint(self.out) is not None:
                diff = [k for k in _diff_keys(old, new)
                        if k not in RESUMABLE_CHANGES and not k.startswith("eval.")]
                if diff:
                    raise InputError(
                        f"{self.out} holds a run with a different configuration ({', '.join(diff)} "
                        "differ); use another --out, or the same settings to resume"
                    )
        path.write_text(yaml.safe_dump(new, sort_keys=False), encoding="utf-8")

    def _capture(self) -> dict[str, Any]:
        """The trainer state as of the last completed step (what a checkpoint holds)."""
        return {"data": self.data.state(), "rng": ckpt.rng_state(), "step": self.step}

    # -- checkpoints ---------------------------------------------------------------------

    def save(self) -> Path | None:
        """Write a checkpoint of the last completed step (rank 0 writes; under FSDP every
        rank takes part in gathering the optimizer state). None on other ranks."""
        if not (self.dist.is_main or self.sharded):
            return None
        opt_state = optimizer_state(self.scorer, self.optimizer)
        if not self.dist.is_main:
            return None
        state = {
            "version": 2,
            "step": self._snapshot["step"],
            "data": self._snapshot["data"],
            "rng": self._snapshot["rng"],
            "optimizer": opt_state,
            "scheduler": self.scheduler.state_dict(),
            "config": self.cfg.to_dict(),
        }
        # The rollout model holds the current whole weights (under FSDP too).
        # A LoRA run writes its adapter only; it leaves the embeddings alone, so say so (else
        # peft looks the base up on the hub).
        options = {"save_embedding_layers": False} if self.cfg.model.lora else {}
        path = ckpt.save_checkpoint(self.out, self._snapshot["step"], model=self.rollout_model,
                                    tokenizer=self.policy.tokenizer, state=state, **options)
        for old in ckpt.prune_checkpoints(self.out, self.cfg.keep_last):
            self.log.say(f"removed old checkpoint {old}")
        return path

    def _save(self, what: str = "saved") -> None:
        path = self.save()
        if path is not None:
            self.log.say(f"{what} {path}")

    # -- the loop ------------------------------------------------------------------------

    def train(self) -> list[dict[str, Any]]:
        """Run until `config.steps`; returns the metrics of the steps run in this call."""
        cfg = self.cfg
        if self.dist.is_main:
            self.log.open(resume_step=self.step)
        history: list[dict[str, Any]] = []
        saved_at = self.step if ckpt.latest_checkpoint(self.out) is not None else None
        with Interrupts(self.log.say) as intr:
            self._intr = intr
            try:
                if cfg.eval.at_start and self.step == 0:
                    self._validate(intr, 0)
                while self.step < cfg.steps:
                    metrics = self.train_step()
                    history.append(metrics)
                    if self.dist.is_main:
                        self.log.train(metrics)
                    if cfg.eval_every and self.step % cfg.eval_every == 0:
                        self._validate(intr, self.step)
                    if (cfg.save_every and self.step % cfg.save_every == 0) or intr.requested:
                        intr.phase = "save"
                        self._save()
                        saved_at = self.step
                    if intr.requested:
                        raise KeyboardInterrupt
                    intr.phase = "idle"
                if saved_at != self.step:
                    intr.phase = "save"
                    self._save()
            except KeyboardInterrupt:
                intr.phase = "save"
                if self.step > 0 and saved_at != self._snapshot["step"]:
                    self._save("interrupted: saved")
                    self.log.say("rerun the same command to resume")
                else:
                    self.log.say("interrupted; rerun the same command to resume")
                raise
            finally:
                self.log.close()
        return history

    def _validate(self, intr, step: int) -> None:
        intr.phase = "eval"
        if self.dist.is_main:
            whole = dataclasses.replace(self.policy, model=self.rollout_model)  # no collectives
            self.log.eval(step, validate(whole, self.cfg, out_dir=self.out / "eval" / f"step-{step}",
                                         step=step))
        self.dist.barrier()

    def train_step(self) -> dict[str, Any]:
        """One step: rollout, rewards, reference scoring, update. Returns its metrics."""
        cfg, dist = self.cfg, self.dist
        intr = getattr(self, "_intr", None)
        step = self.step + 1
        t_start = time.perf_counter()
        indices = self.data.next(cfg.rollout.batch_size)  # the same on every rank
        keys = batch_keys(self.keys, indices)
        mine = dist.shard(list(range(len(indices))))  # positions of this rank's questions
        epoch = self.data.epoch

        # 1. rollouts of this rank's questions
        self._phase(intr, "rollout")
        try:
            groups = collect_rollouts(self.gguf.agent() if self.gguf else self.agent,
                                      [self.samples[indices[i]] for i in mine],
                                      group_size=cfg.rollout.group_size, step=step,
                                      keys=[keys[i] for i in mine])
        finally:
            if self.gguf:
                self.gguf.close()  # its threads would compete with the update's
        t_rollout = time.perf_counter()

        # 2. rewards and advantages (a question's rollouts are all on this rank)
        rewards = [[episode_rewards(r.steps, r.sample.answers, cfg.reward) for r in g] for g in groups]
        advantages = [group_advantages(rg, cfg.advantage) for rg in rewards]
        seqs = build_sequences(groups, advantages)
        for s in seqs:
            s.question = mine[s.question]  # position in the whole step's batch
        minis = self._mini_batches(seqs, len(indices))
        n_updates = cfg.optim.epochs * len(minis)
        if not self._budget_checked:
            longest = int(dist.max(float(max((s.length for s in seqs), default=0))))
            self._check_budget(longest)
            self._budget_checked = True

        # 3. reference (and old) log-probs
        self._phase(intr, "reference")
        self._score_fixed(self._live(seqs), need_old=n_updates > 1)
        t_ref = time.perf_counter()

        # 4. update
        self._phase(intr, "update")
        update = self._update(minis)
        t_end = time.perf_counter()
        self.step = step
        self._snapshot = self._capture()

        flat = [(e, r) for g_r, g in zip(rewards, groups) for e, r in zip(g_r, g)]
        gathered = dist.gather(([e for e, _ in flat], rollout_summary([r for _, r in flat])))
        all_rewards = [e for rs, _ in gathered for e in rs]
        all_rollouts = [r for _, summ in gathered for r in summ]
        gen_tokens = sum(n for _, per_step in all_rollouts for _, n, _ in per_step)
        n_seq, n_tok, n_comp, adv_abs = dist.sum([
            len(seqs), sum(s.length for s in seqs), sum(len(s.completion_ids) for s in seqs),
            sum(abs(s.advantage) for s in seqs),
        ])
        metrics = {
            "step": step,
            "epoch": epoch,
            **reward_metrics(all_rewards, all_rollouts),
            "advantage_abs_mean": adv_abs / n_seq if n_seq else None,
            "sequences": int(n_seq),
            "tokens": int(n_tok),
            "completion_tokens": int(n_comp),
            **update,
            "max_tokens_per_micro_batch": self.token_budget,
            "seconds_rollout": t_rollout - t_start,
            "seconds_reference": t_ref - t_rollout,
            "seconds_update": t_end - t_ref,
            "seconds_step": t_end - t_start,
            "gen_tokens_per_s": gen_tokens / max(t_rollout - t_start, 1e-9),
            "train_tokens_per_s": n_tok / max(t_end - t_rollout, 1e-9),
            "peak_rss_gb": dist.max(peak_rss_gb()),
            "world_size": dist.world_size,
        }
        if self.policy.device.type == "cuda":
            metrics["peak_cuda_gb"] = dist.max(torch.cuda.max_memory_allocated(self.policy.device) / 2**30)
        return {k: metrics.get(k) for k in METRIC_KEYS} | {
            k: v for k, v in metrics.items() if k not in METRIC_KEYS
        }

    @staticmethod
    def _phase(intr, phase: str) -> None:
        if intr is not None:
            intr.phase = phase

    def _micro_batches(self, seqs: list[TrainSequence]) -> list[list[TrainSequence]]:
        """`seqs` packed by the token budget; under FSDP padded with empty micro-batches to
        the same count on every rank (sharded forward passes are collective)."""
        micros = pack_micro_batches(seqs, self.token_budget, share_prompts=self.share_prompts) if seqs else []
        if self.sharded:
            n = int(self.dist.max(float(len(micros))))
            pad = self.policy.pad_id
            micros += [[TrainSequence(prompt_ids=(pad,), completion_ids=(pad,), advantage=0.0,
                                      question=-1, old_logp=torch.zeros(1), ref_logp=torch.zeros(1))]
                       for _ in range(n - len(micros))]
        return micros

    def _mini_batches(self, seqs: list[TrainSequence], n_questions: int) -> list[list[TrainSequence]]:
        """Sequences grouped into optimizer updates by question position in the step's batch
        (all of a question's rollouts go to the same update). Every rank gets the same
        number of mini-batches, some possibly empty."""
        size = self.cfg.optim.mini_batch_size or max(n_questions, 1)
        n = max(1, math.ceil(n_questions / size))
        out: list[list[TrainSequence]] = [[] for _ in range(n)]
        for s in seqs:
            out[s.question // size].append(s)
        return out

    @torch.no_grad()
    def _score_fixed(self, seqs: list[TrainSequence], *, need_old: bool) -> None:
        """Reference (and old-policy) log-probs of every sequence, once per step."""
        temp = self.cfg.rollout.sampling.temperature
        p = self.policy
        for micro in self._micro_batches(seqs):
            lens = [len(s.completion_ids) for s in micro]
            if self.ref_scorer is not None:
                # Same autocast as the policy: at step 1 the two agree exactly (KL 0).
                logp, _, _ = completion_logprobs(self.ref_scorer, micro, pad_id=p.pad_id,
                                                 temperature=temp, autocast=p.autocast)
                for s, row, n in zip(micro, logp.float().cpu(), lens):
                    s.ref_logp = row[row.shape[0] - n:].clone()
            if need_old:
                logp, _, _ = completion_logprobs(self.scorer, micro, pad_id=p.pad_id, temperature=temp,
                                                 autocast=p.autocast)
                for s, row, n in zip(micro, logp.float().cpu(), lens):
                    s.old_logp = row[row.shape[0] - n:].clone()

    def _live(self, seqs: list[TrainSequence]) -> list[TrainSequence]:
        """The sequences the scoring passes need (all, unless `skip_zero`)."""
        return [s for s in seqs if s.advantage != 0.0] if self.skip_zero else seqs

    def _update(self, minis: list[list[TrainSequence]]) -> dict[str, Any]:
        cfg, lo, dist, p = self.cfg, self.cfg.loss, self.dist, self.policy
        summed = ("loss", "pg_loss", "kl", "entropy")
        keys = [k for k in ("loss", "pg_loss", "kl", "entropy", "clip_frac", "dual_clip_frac", "approx_kl")
                if k != "kl" or p.ref is not None]  # the same keys on every rank
        per_update: list[dict[str, float]] = []
        grad_norms: list[float] = []
        lrs: list[float] = []
        micro_batches = skipped = 0
        train_mode = cfg.model.gradient_checkpointing  # checkpointing only acts in train mode
        params = [q for q in self.scorer.parameters() if q.requires_grad]
        for epoch in range(cfg.optim.epochs):
            for part in minis:
                n_tok, n_seq = dist.sum([sum(len(s.completion_ids) for s in part), len(part)])
                if n_tok == 0:
                    continue  # no rank has a sequence for this update
                live = self._live(part)
                if epoch == 0:
                    skipped += len(part) - len(live)
                (n_live,) = dist.sum([sum(len(s.completion_ids) for s in live)])
                self.optimizer.zero_grad(set_to_none=True)
                stats = dict.fromkeys(keys, 0.0)
                self.scorer.train(train_mode)
                try:
                    for micro in self._micro_batches(live):
                        dummy = micro[0].question < 0
                        micro_batches += not dummy
                        logp, mask, ent = completion_logprobs(
                            self.scorer, micro, pad_id=p.pad_id, temperature=cfg.rollout.sampling.temperature,
                            autocast=p.autocast, with_entropy=True, entropy_grad=lo.entropy_coef != 0,
                        )
                        width, dev = logp.shape[1], logp.device
                        if micro[0].old_logp is not None:
                            old = right_align([s.old_logp for s in micro], width).to(dev)
                        else:
                            old = logp.detach()
                        ref = (right_align([s.ref_logp for s in micro], width).to(dev)
                               if p.ref is not None else None)
                        adv = torch.tensor([s.advantage for s in micro], dtype=torch.float32,
                                           device=dev)[:, None] * mask
                        loss, st = total_loss(logp, old, adv, mask, lo, ref_logp=ref, entropy=ent,
                                              num_tokens=n_tok, num_seqs=n_seq)
                        if dummy:  # an empty pass that keeps sharded ranks in step
                            (loss * 0.0).backward()
                            continue
                        # FSDP averages gradients over the ranks; the loss wants their sum
                        (loss * dist.world_size if self.sharded else loss).backward()
                        share = float(mask.sum()) / n_tok
                        for k in keys:
                            if k in st:
                                stats[k] += st[k] if k in summed else st[k] * share
                finally:
                    self.scorer.eval()
                for q in params:  # nothing ran (all skipped): a zero gradient, as computed
                    if q.grad is None:
                        q.grad = torch.zeros_like(q)
                if not self.sharded:  # FSDP already summed them in backward
                    dist.sum_gradients(params)
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
                grad_norms.append(float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))
                lrs.append(self.optimizer.param_groups[0]["lr"])
                self.optimizer.step()
                self.scheduler.step()
                done = dict(zip(keys, dist.sum([stats[k] for k in keys])))
                if "entropy" in done:  # a mean over the tokens that were scored
                    if n_live:
                        done["entropy"] *= n_tok / n_live
                    else:
                        del done["entropy"]
                per_update.append(done)
        self.optimizer.zero_grad(set_to_none=True)
        if self.sharded and per_update:  # refresh the whole copy the next rollouts use
            whole = full_state_dict(self.scorer)
            self.rollout_model.load_state_dict({k.removeprefix("lm."): v for k, v in whole.items()})
        out: dict[str, Any] = {k: mean([u[k] for u in per_update if k in u])
                               for k in ("loss", "pg_loss", "kl", "entropy", "clip_frac",
                                         "dual_clip_frac", "approx_kl")}
        out["grad_norm"] = mean(grad_norms)
        out["lr"] = lrs[-1] if lrs else self.optimizer.param_groups[0]["lr"]
        out["updates"] = len(per_update)
        out["micro_batches"] = int(dist.sum([micro_batches])[0])
        out["sequences_skipped"] = int(dist.sum([skipped])[0])
        return out


def _diff_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        name = f"{prefix}{k}"
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _diff_keys(va, vb, name + ".")
        elif va != vb:
            keys.append(name)
    return keys


# Kept importable from here (the trainer's data helpers moved to rl.data).
__all__ = ["DataStream", "Trainer", "peak_rss_gb"]
