"""The GRPO-style trainer of ReMemR1: rollouts -> multi-level rewards -> advantages -> PPO.

    from rememr1.rl.config import load_config
    from rememr1.rl.trainer import Trainer
    Trainer(load_config("revhop-smollm2-cpu", {"out": "runs/t1"})).train()
    # or: rememr1 train --config revhop-smollm2-cpu --out runs/t1

One training step:
1. rollout   -- `batch_size` questions x `group_size` sampled episodes through the agent's
               own loop on the current policy (`rl.rollout`); every agent step (each memory
               update and the final answer) becomes its own training sequence: prompt =
               the step's context, loss on the generated tokens only ("multi-conversation").
2. rewards   -- outcome and state rewards per step (`rememr1.rewards`), group-relative
               advantages mixed with alpha (`rl.advantages`), broadcast to the tokens.
3. reference -- log-probs of the generated tokens under the frozen reference model (for
               the k3 KL term) and, when a step makes more than one optimiser update, under
               the rollout policy ("old" log-probs). With a single update per step the
               old log-probs are by definition the current ones (ratio 1), so that extra
               forward pass is skipped and the detached current log-probs are used.
4. update    -- mini-batches of questions, each split into micro-batches whose gradients
               are accumulated (loss normalised by the mini-batch's token or sequence
               count, so the sum equals the mini-batch mean); AdamW on float32 master
               weights (optional bfloat16 autocast for the forward passes), linear warm-up
               then constant learning rate, gradient-norm clipping.

Outputs in OUT: `metrics.jsonl` (one line per step), TensorBoard events in `OUT/tb`,
validation results in `OUT/eval/step-N` (the evaluation runner, sub-EM), checkpoints
`OUT/checkpoint-N` (plain HF model directories plus `trainer_state.pt`), `config.yaml`.
Rerunning the same command resumes from the newest checkpoint; the resumed run computes
the same next step as an uninterrupted one (tests/rl/test_trainer.py checks the loss).
Ctrl-C during rollout or reference scoring stops at once and saves the last completed
step; during an update it first finishes the step (a second Ctrl-C quits without saving).

Simplifications: one process, one device (multi-GPU runs belong on an engine such as verl,
see docs/scale-out.md); the policy's dropout is off throughout (eval mode), as usual for
LLM RL; sequences are left-padded and scored together, so every micro-batch pads to its
longest prompt + completion.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..data.records import Sample
from ..errors import InputError
from ..records import FINAL_STEP
from ..rewards import EpisodeRewards, episode_rewards
from . import checkpoint as ckpt
from .advantages import group_advantages
from .config import TrainConfig, config_from_dict
from .loss import entropy_from_logits, token_logprobs, total_loss
from .rollout import Rollout, collect_rollouts, policy_agent, trainable_steps

log = logging.getLogger(__name__)

# Config keys that may change between a run and its resumption (they do not change what a
# step computes, only how often things happen, where, or how work is batched); so may
# every validation setting (`eval.*`).
RESUMABLE_CHANGES = (
    "out", "steps", "save_every", "eval_every", "log_every", "keep_last", "model.device",
    "data.dev", "rollout.generation_batch_size", "optim.micro_batch_size", "optim.grad_accum",
)

# Every line of metrics.jsonl has these keys (None where a quantity does not apply).
METRIC_KEYS = (
    "step", "epoch", "outcome_reward", "state_reward", "memory_gain", "callback_bonus",
    "format_reward", "format_rate", "answer_rate", "recall_rate", "truncated_rate",
    "response_length", "steps_per_rollout", "advantage_abs_mean", "sequences", "tokens",
    "completion_tokens", "loss", "pg_loss", "kl", "entropy", "clip_frac", "dual_clip_frac",
    "approx_kl", "grad_norm", "lr", "updates", "seconds_rollout", "seconds_reference",
    "seconds_update", "seconds_step", "gen_tokens_per_s", "train_tokens_per_s",
)


# ---------------------------------------------------------------------------------- data


class DataStream:
    """Batches of question indices: epoch after epoch, each a fresh permutation seeded by
    (shuffle_seed, epoch). The position (epoch, offset) is all its state."""

    def __init__(self, n: int, *, seed: int, epoch: int = 0, offset: int = 0):
        if n < 1:
            raise InputError("no training questions")
        self.n, self.seed, self.epoch, self.offset = n, seed, epoch, offset
        self._perm = self._permutation(epoch)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def next(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            if self.offset >= self.n:
                self.epoch += 1
                self.offset = 0
                self._perm = self._permutation(self.epoch)
            take = min(k - len(out), self.n - self.offset)
            out.extend(int(i) for i in self._perm[self.offset : self.offset + take])
            self.offset += take
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}


def expand_files(patterns: Sequence[str], what: str) -> list[str]:
    files: list[str] = []
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            matches = sorted(glob.glob(str(Path(pattern).expanduser())))
            if not matches:
                raise InputError(f"{what}: no files match {pattern}")
            files.extend(matches)
        else:
            p = Path(pattern).expanduser()
            if not p.is_file():
                raise InputError(f"{what}: no such file: {pattern}")
            files.append(str(p))
    return files


def load_training_samples(patterns: Sequence[str], max_items: int | None) -> list[Sample]:
    from ..data.loaders import load_samples

    if not patterns:
        raise InputError("no training data: give --data FILE (schema-A parquet or any supported file) "
                         "or data.train in the config")
    samples: list[Sample] = []
    for f in expand_files(patterns, "data.train"):
        samples.extend(load_samples(f))
        if max_items is not None and len(samples) >= max_items:
            break
    return samples[:max_items] if max_items is not None else samples


def question_key(sample: Sample) -> str:
    """A name for a question that is unique across training files (ids need not be)."""
    source = Path(str(sample.metadata.get("source_file", ""))).name
    return f"{source}:{sample.id}"


def batch_keys(keys: Sequence[str], indices: Sequence[int]) -> list[str]:
    """The seeding keys of a batch; a question drawn twice (a batch spanning two epochs of
    a small file) gets a suffix so its two groups sample differently."""
    seen: dict[str, int] = {}
    out = []
    for i in indices:
        k = keys[i]
        seen[k] = seen.get(k, 0) + 1
        out.append(k if seen[k] == 1 else f"{k}#{seen[k]}")
    return out


# ----------------------------------------------------------------------------- sequences


@dataclass
class TrainSequence:
    """One agent step as a training sequence: loss on `completion_ids` only."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    advantage: float
    question: int
    old_logp: torch.Tensor | None = None  # [len(completion_ids)], float32, CPU
    ref_logp: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


def build_sequences(
    groups: Sequence[Sequence[Rollout]], rewards: Sequence[Sequence[EpisodeRewards]], advantages
) -> list[TrainSequence]:
    """Training sequences of every trainable step, carrying its step's advantage."""
    seqs = []
    for group, adv_group in zip(groups, advantages):
        for rollout, adv in zip(group, adv_group):
            for pos, rec in trainable_steps(rollout.steps):
                seqs.append(TrainSequence(
                    prompt_ids=tuple(rec.prompt_ids),
                    completion_ids=tuple(rec.completion_ids),
                    advantage=float(adv[pos]),
                    question=rollout.question,
                ))
    return seqs


def _right_align(rows: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for b, r in enumerate(rows):
        if len(r):
            out[b, width - len(r):] = r
    return out


def score_sequences(
    model,
    seqs: Sequence[TrainSequence],
    *,
    pad_id: int,
    temperature: float,
    autocast: bool,
    with_entropy: bool = False,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Log-probs of each sequence's completion tokens under `model`, right-aligned:
    ([B, C] logp, [B, C] mask, [B, C] entropy or None), C = the longest completion.

    Rows are left-padded so that every completion ends at the last position; the model
    computes logits for the last C + 1 positions only (`logits_to_keep`). Position ids
    count real tokens only, as in left-padded generation.
    """
    device = next(model.parameters()).device
    width = max(s.length for s in seqs)
    cmax = max(len(s.completion_ids) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):
        row = s.prompt_ids + s.completion_ids
        ids[b, width - len(row):] = torch.tensor(row, dtype=torch.long)
        attn[b, width - len(row):] = 1
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    ids, attn, positions = ids.to(device), attn.to(device), positions.to(device)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
        out = model(input_ids=ids, attention_mask=attn, position_ids=positions,
                    logits_to_keep=cmax + 1, use_cache=False)
    logits = out.logits[:, :-1, :]  # position p predicts token p + 1
    labels = ids[:, width - cmax:]
    cols = torch.arange(cmax, device=device)[None, :]
    lens = torch.tensor([len(s.completion_ids) for s in seqs], device=device)[:, None]
    mask = (cols >= cmax - lens).float()
    logp = token_logprobs(logits, labels, temperature=temperature)
    entropy = None
    if with_entropy:
        src = logits if entropy_grad else logits.detach()
        with contextlib.nullcontext() if entropy_grad else torch.no_grad():
            entropy = entropy_from_logits(src, temperature=temperature)
    return logp, mask, entropy


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for at in range(0, len(items), size):
        yield items[at : at + size]


# ------------------------------------------------------------------------------- trainer


class _Interrupts:
    """Ctrl-C policy: stop at once while the weights are untouched (rollout, reference,
    evaluation); during an update, finish the step first. A second Ctrl-C always stops."""

    def __init__(self, say):
        self.phase = "idle"
        self.requested = False
        self._say = say
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False

    def _handler(self, signum, frame):
        if self.phase != "update" or self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._say("interrupt: finishing this step's update, then saving a checkpoint "
                  "(Ctrl-C again to quit without saving)")


class Trainer:
    """`Trainer(config).train()` runs (or resumes) a training run in `config.out`."""

    def __init__(self, config: TrainConfig, *, quiet: bool = False):
        self.cfg = config
        self.out = Path(config.out).expanduser()
        self.quiet = quiet
        self.step = 0
        self._console = None
        self._writer = None
        self._metrics_fh = None
        self._setup()

    # -- setup ---------------------------------------------------------------------------

    def _say(self, msg: str) -> None:
        if self.quiet:
            log.info(msg)
            return
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)
        self._console.print(msg, markup=False)

    def _setup(self) -> None:
        from ..backends.hf import load_pretrained, resolve_device, resolve_dtype

        cfg = self.cfg
        self.samples = load_training_samples(cfg.data.train, cfg.data.max_items)
        self.keys = [question_key(s) for s in self.samples]
        if cfg.eval_every or cfg.eval.at_start:
            if not cfg.data.dev:
                raise InputError("validation needs a dev file: set data.dev (--dev) or eval_every 0")
            from ..data.loaders import iter_samples

            for f in expand_files([cfg.data.dev], "data.dev"):
                next(iter_samples(f), None)  # a bad dev file fails now, not at step N
        self.out.mkdir(parents=True, exist_ok=True)
        ckpt.clean_partial(self.out)
        self._check_saved_config()

        self.device = torch.device(resolve_device(cfg.model.device))
        resume = ckpt.latest_checkpoint(self.out)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        torch.manual_seed(cfg.seed)

        source = cfg.model.path
        if source is None:
            from ..backends.builtin import builtin_hf_dir

            source = str(builtin_hf_dir())
        self.model_source = source
        load_from = str(resume) if resume is not None else source
        self.policy, self.tokenizer, self.model_name = load_pretrained(load_from, torch.float32)
        self.policy.to(self.device)
        self.policy.eval()  # no dropout, in rollouts and updates alike
        if cfg.model.gradient_checkpointing:
            self.policy.gradient_checkpointing_enable()
            self.policy.config.use_cache = False
        pad = self.tokenizer.pad_token_id
        eos = self.tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else (eos if eos is not None else 0)

        self.ref = None
        if cfg.loss.kl_beta > 0:
            ref_dtype = resolve_dtype(cfg.model.dtype, self.device.type)
            self.ref, _, _ = load_pretrained(cfg.model.ref_path or source, ref_dtype)
            self.ref.to(self.device)
            self.ref.eval()
            self.ref.requires_grad_(False)

        o = cfg.optim
        self.optimizer = torch.optim.AdamW(
            [p for p in self.policy.parameters() if p.requires_grad],
            lr=o.lr, betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_eps, weight_decay=o.weight_decay,
        )
        warm = o.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda u: min(1.0, (u + 1) / warm) if warm > 0 else 1.0
        )
        self.data = DataStream(len(self.samples), seed=cfg.data.shuffle_seed)
        if resume is not None:
            state = ckpt.load_state(resume)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            ckpt.set_rng_state(state["rng"])
            self.data = DataStream(len(self.samples), seed=cfg.data.shuffle_seed, **state["data"])
            self.step = int(state["step"])
            self._say(f"resuming from {resume} (step {self.step})")
        self._snapshot = self._capture()
        self.agent = policy_agent(self.policy, self.tokenizer, cfg.rollout, seed=cfg.seed,
                                  compat=cfg.agent_compat)

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

    def save(self) -> Path:
        state = {
            "version": 1,
            "step": self._snapshot["step"],
            "data": self._snapshot["data"],
            "rng": self._snapshot["rng"],
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "config": self.cfg.to_dict(),
        }
        path = ckpt.save_checkpoint(self.out, self._snapshot["step"], model=self.policy,
                                    tokenizer=self.tokenizer, state=state)
        for old in ckpt.prune_checkpoints(self.out, self.cfg.keep_last):
            log.info("removed old checkpoint %s", old)
        return path

    # -- the loop ------------------------------------------------------------------------

    def train(self) -> list[dict[str, Any]]:
        """Run until `config.steps`; returns the metrics of the steps run in this call."""
        cfg = self.cfg
        self._open_logs()
        history: list[dict[str, Any]] = []
        saved_at = self.step if ckpt.latest_checkpoint(self.out) is not None else None
        with _Interrupts(self._say) as intr:
            self._intr = intr
            try:
                if cfg.eval.at_start and self.step == 0:
                    intr.phase = "eval"
                    self._log_eval(0, self.evaluate(0))
                while self.step < cfg.steps:
                    metrics = self.train_step()
                    history.append(metrics)
                    self._log(metrics)
                    if cfg.eval_every and self.step % cfg.eval_every == 0:
                        intr.phase = "eval"
                        self._log_eval(self.step, self.evaluate(self.step))
                    if (cfg.save_every and self.step % cfg.save_every == 0) or intr.requested:
                        intr.phase = "save"
                        self._say(f"saved {self.save()}")
                        saved_at = self.step
                    if intr.requested:
                        raise KeyboardInterrupt
                    intr.phase = "idle"
                if saved_at != self.step:
                    intr.phase = "save"
                    self._say(f"saved {self.save()}")
            except KeyboardInterrupt:
                intr.phase = "save"
                if self.step > 0 and saved_at != self._snapshot["step"]:
                    self._say(f"interrupted: saved {self.save()}; rerun the same command to resume")
                else:
                    self._say("interrupted; rerun the same command to resume")
                raise
            finally:
                self._close_logs()
        return history

    def train_step(self) -> dict[str, Any]:
        """One step: rollout, rewards, reference scoring, update. Returns its metrics."""
        cfg = self.cfg
        intr = getattr(self, "_intr", None)
        step = self.step + 1
        t_start = time.perf_counter()
        indices = self.data.next(cfg.rollout.batch_size)
        batch = [self.samples[i] for i in indices]
        epoch = self.data.epoch

        # 1. rollouts
        self._phase(intr, "rollout")
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=cfg.optim.bf16):
            groups = collect_rollouts(self.agent, batch, group_size=cfg.rollout.group_size, step=step,
                                      keys=batch_keys(self.keys, indices))
        t_rollout = time.perf_counter()

        # 2. rewards and advantages
        rewards = [[episode_rewards(r.steps, r.sample.answers, cfg.reward) for r in g] for g in groups]
        advantages = [
            group_advantages(rg, alpha=cfg.loss.alpha, scale_by_std=cfg.loss.scale_by_std,
                             double_state=cfg.reward.double_state_advantage,
                             singleton_raw=cfg.reward.singleton_raw_advantage)
            for rg in rewards
        ]
        seqs = build_sequences(groups, rewards, advantages)
        mini = self._mini_batches(seqs, len(groups))
        n_updates = cfg.optim.epochs * len(mini)

        # 3. reference (and old) log-probs
        self._phase(intr, "reference")
        self._score_fixed(seqs, need_old=n_updates > 1)
        t_ref = time.perf_counter()

        # 4. update
        self._phase(intr, "update")
        update = self._update(mini)
        t_end = time.perf_counter()
        self.step = step
        self._snapshot = self._capture()

        gen_tokens = sum(s.completion_tokens for g in groups for r in g for s in r.steps)
        train_tokens = sum(s.length for s in seqs)
        metrics = {
            "step": step,
            "epoch": epoch,
            **reward_metrics(groups, rewards),
            "advantage_abs_mean": _mean([abs(s.advantage) for s in seqs]),
            "sequences": len(seqs),
            "tokens": train_tokens,
            "completion_tokens": sum(len(s.completion_ids) for s in seqs),
            **update,
            "seconds_rollout": t_rollout - t_start,
            "seconds_reference": t_ref - t_rollout,
            "seconds_update": t_end - t_ref,
            "seconds_step": t_end - t_start,
            "gen_tokens_per_s": gen_tokens / max(t_rollout - t_start, 1e-9),
            "train_tokens_per_s": train_tokens / max(t_end - t_rollout, 1e-9),
        }
        return {k: metrics.get(k) for k in METRIC_KEYS} | {
            k: v for k, v in metrics.items() if k not in METRIC_KEYS
        }

    @staticmethod
    def _phase(intr, phase: str) -> None:
        if intr is not None:
            intr.phase = phase

    def _mini_batches(self, seqs: list[TrainSequence], n_questions: int) -> list[list[TrainSequence]]:
        """Sequences grouped into optimiser updates by question (all of a question's
        rollouts go to the same update)."""
        questions = sorted({s.question for s in seqs})
        size = self.cfg.optim.mini_batch_size or max(n_questions, 1)
        out = []
        for qs in _chunks(questions, size):
            chosen = set(qs)
            out.append([s for s in seqs if s.question in chosen])
        return out

    def _micro_batches(self, seqs: list[TrainSequence]) -> list[list[TrainSequence]]:
        o = self.cfg.optim
        ordered = sorted(seqs, key=lambda s: -s.length)  # similar lengths pad together
        size = o.micro_batch_size or max(1, math.ceil(len(ordered) / o.grad_accum))
        return [list(c) for c in _chunks(ordered, size)]

    @torch.no_grad()
    def _score_fixed(self, seqs: list[TrainSequence], *, need_old: bool) -> None:
        cfg = self.cfg
        temp = cfg.rollout.temperature
        for micro in self._micro_batches(seqs):
            lens = [len(s.completion_ids) for s in micro]
            if self.ref is not None:
                # The reference model's own dtype decides its precision: no autocast.
                logp, _, _ = score_sequences(self.ref, micro, pad_id=self.pad_id, temperature=temp,
                                             autocast=False)
                for s, row, n in zip(micro, logp.float().cpu(), lens):
                    s.ref_logp = row[row.shape[0] - n:].clone()
            if need_old:
                logp, _, _ = score_sequences(self.policy, micro, pad_id=self.pad_id, temperature=temp,
                                             autocast=cfg.optim.bf16)
                for s, row, n in zip(micro, logp.float().cpu(), lens):
                    s.old_logp = row[row.shape[0] - n:].clone()

    def _update(self, mini: list[list[TrainSequence]]) -> dict[str, Any]:
        cfg, lo = self.cfg, self.cfg.loss
        summed = ("loss", "pg_loss", "kl", "entropy")
        per_update: list[dict[str, float]] = []
        grad_norms: list[float] = []
        lrs: list[float] = []
        train_mode = cfg.model.gradient_checkpointing  # checkpointing only acts in train mode
        params = [p for p in self.policy.parameters() if p.requires_grad]
        for _ in range(cfg.optim.epochs):
            for part in mini:
                n_tok = sum(len(s.completion_ids) for s in part)
                n_seq = len(part)
                self.optimizer.zero_grad(set_to_none=True)
                stats: dict[str, float] = {}
                self.policy.train(train_mode)
                try:
                    for micro in self._micro_batches(part):
                        logp, mask, ent = score_sequences(
                            self.policy, micro, pad_id=self.pad_id, temperature=cfg.rollout.temperature,
                            autocast=cfg.optim.bf16, with_entropy=True, entropy_grad=lo.entropy_coef != 0,
                        )
                        width = logp.shape[1]
                        dev = logp.device
                        if micro[0].old_logp is not None:
                            old = _right_align([s.old_logp for s in micro], width).to(dev)
                        else:
                            old = logp.detach()
                        ref = (_right_align([s.ref_logp for s in micro], width).to(dev)
                               if self.ref is not None else None)
                        adv = torch.tensor([s.advantage for s in micro], dtype=torch.float32,
                                           device=dev)[:, None] * mask
                        loss, st = total_loss(
                            logp, old, adv, mask, ref_logp=ref, entropy=ent, kl_coef=lo.kl_beta,
                            entropy_coef=lo.entropy_coef, clip_low=lo.clip_low, clip_high=lo.clip_high,
                            dual_clip_c=lo.dual_clip_c, agg=lo.agg, num_tokens=n_tok, num_seqs=n_seq,
                        )
                        loss.backward()
                        share = float(mask.sum()) / max(n_tok, 1)
                        for k, v in st.items():
                            if k == "ratio_max":
                                stats[k] = max(stats.get(k, v), v)
                            else:
                                stats[k] = stats.get(k, 0.0) + (v if k in summed else v * share)
                finally:
                    self.policy.eval()
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
                grad_norms.append(float(norm))
                lrs.append(self.optimizer.param_groups[0]["lr"])
                self.optimizer.step()
                self.scheduler.step()
                per_update.append(stats)
        self.optimizer.zero_grad(set_to_none=True)
        keys = ("loss", "pg_loss", "kl", "entropy", "clip_frac", "dual_clip_frac", "approx_kl")
        out: dict[str, Any] = {k: _mean([u[k] for u in per_update if k in u]) for k in keys}
        out["grad_norm"] = _mean(grad_norms)
        out["lr"] = lrs[-1] if lrs else self.optimizer.param_groups[0]["lr"]
        out["updates"] = len(per_update)
        return out

    # -- validation ----------------------------------------------------------------------

    def evaluate(self, step: int) -> dict[str, Any]:
        """Sub-EM (and EM, F1) on the dev file through the evaluation runner, with the
        current policy; results in OUT/eval/step-{step}. Scored strictly, or as the
        official scorer does under `compat: official`."""
        from ..eval import default_scoring, read_lines, run_eval, score_line, write_report
        from ..metrics import aggregate

        cfg, e = self.cfg, self.cfg.eval
        out_dir = self.out / "eval" / f"step-{step}"
        t0 = time.perf_counter()

        def make_agent(method: str):
            return policy_agent(self.policy, self.tokenizer, cfg.rollout, seed=cfg.seed,
                                compat=cfg.agent_compat,
                                temperature=e.temperature, top_p=e.top_p,
                                max_new_tokens=e.max_new_tokens, batch_size=e.batch_size)

        run_config = {
            "model": f"{self.model_name}@step-{step}", "method": cfg.rollout.method,
            "chunk_size": cfg.rollout.chunk_size,
            "max_new_tokens": e.max_new_tokens or cfg.rollout.max_new_tokens,
            "temperature": e.temperature, "top_p": e.top_p, "seed": cfg.seed,
            "retriever": cfg.rollout.retriever, "top_k": cfg.rollout.top_k,
            "answer_format": cfg.rollout.answer_format, "compat": cfg.compat,
            "compat_switches": cfg.agent_compat.active(),
        }
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=cfg.optim.bf16):
            run_eval(expand_files([cfg.data.dev], "data.dev"), make_agent=make_agent,
                     methods=[cfg.rollout.method], out_dir=out_dir, config=run_config,
                     limit=e.max_items, concurrency=e.batch_size)
        lines = read_lines(out_dir)
        write_report(out_dir)
        mode = default_scoring(run_config)
        agg = aggregate([score_line(x, mode, cfg.rollout.answer_format) for x in lines])

        def frac(key: str) -> float | None:
            return None if agg[key] is None else agg[key] / 100.0

        return {
            "step": step,
            "eval_sub_em": frac("accuracy"),
            "eval_em": frac("em"),
            "eval_f1": frac("f1"),
            "eval_items": agg["n"],
            "eval_seconds": time.perf_counter() - t0,
        }

    # -- logging -------------------------------------------------------------------------

    def _open_logs(self) -> None:
        path = self.out / "metrics.jsonl"
        if path.exists():  # drop lines of steps after the checkpoint we resumed from
            keep = []
            for raw in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(raw).get("step", 0) <= self.step:
                        keep.append(raw)
                except ValueError:
                    continue
            path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
        self._metrics_fh = path.open("a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional: metrics.jsonl has everything
            log.warning("tensorboard is not installed; writing metrics.jsonl only")
            self._writer = None
        else:
            self._writer = SummaryWriter(log_dir=str(self.out / "tb"), purge_step=self.step + 1)

    def _close_logs(self) -> None:
        if self._metrics_fh is not None:
            self._metrics_fh.close()
            self._metrics_fh = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write(self, line: dict[str, Any]) -> None:
        if self._metrics_fh is not None:
            self._metrics_fh.write(json.dumps(line) + "\n")
            self._metrics_fh.flush()

    def _log(self, m: dict[str, Any]) -> None:
        self._write({"type": "train", **m})
        if self._writer is not None:
            for k, v in m.items():
                if k not in ("step",) and isinstance(v, (int, float)) and v is not None:
                    self._writer.add_scalar(f"train/{k}", v, m["step"])
            self._writer.flush()
        if m["step"] % self.cfg.log_every == 0 or m["step"] == self.cfg.steps:
            self._say(
                f"step {m['step']}/{self.cfg.steps}  outcome {_fmt(m['outcome_reward'])}  "
                f"state {_fmt(m['state_reward'])}  format {_fmt(m['format_reward'])}  "
                f"recall {_fmt(m['recall_rate'])}  kl {_fmt(m['kl'])}  loss {_fmt(m['loss'])}  "
                f"{m['seconds_step']:.1f}s (rollout {m['seconds_rollout']:.1f}, reference "
                f"{m['seconds_reference']:.1f}, update {m['seconds_update']:.1f})"
            )

    def _log_eval(self, step: int, m: dict[str, Any]) -> None:
        self._write({"type": "eval", **m})
        if self._writer is not None:
            for k, v in m.items():
                if k != "step" and isinstance(v, (int, float)) and v is not None:
                    self._writer.add_scalar(f"eval/{k.removeprefix('eval_')}", v, step)
            self._writer.flush()
        self._say(f"eval step {step}: sub-EM {_fmt(m['eval_sub_em'])} on {m['eval_items']} items "
                  f"({m['eval_seconds']:.1f}s)")


def reward_metrics(groups: Sequence[Sequence[Rollout]], rewards: Sequence[Sequence[EpisodeRewards]]) -> dict[str, Any]:
    """Batch means of the reward parts and behaviour rates."""
    eps = [e for g in rewards for e in g]
    rolls = [r for g in groups for r in g]
    steps = [s for r in rolls for s in r.steps]
    return {
        "outcome_reward": _mean([e.outcome for e in eps]),
        "state_reward": _mean([x for e in eps for x in e.state]),
        "memory_gain": _mean([x for e in eps for x, k in zip(e.memory_gain, e.kinds) if k != FINAL_STEP]),
        "callback_bonus": _mean([x for e in eps for x, k in zip(e.callback, e.kinds) if k != FINAL_STEP]),
        "format_reward": _mean([x for e in eps for x in e.format]),
        "format_rate": _mean([float(bool(e.format) and all(f == 1.0 for f in e.format)) for e in eps]),
        "answer_rate": _mean([float(e.answer is not None) for e in eps]),
        "recall_rate": _mean([e.recall_rate for e in eps]),
        "truncated_rate": _mean([float(s.truncated) for s in steps]),
        "response_length": _mean([float(s.completion_tokens) for s in steps]),
        "steps_per_rollout": _mean([float(len(r.steps)) for r in rolls]),
    }


def _mean(xs: Sequence[float]) -> float | None:
    return float(sum(xs) / len(xs)) if xs else None


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


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


__all__ = ["DataStream", "METRIC_KEYS", "TrainSequence", "Trainer", "batch_keys", "build_sequences",
           "load_training_samples", "question_key", "reward_metrics", "score_sequences"]
