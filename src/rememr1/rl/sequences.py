"""Training sequences: one per agent step, packed into micro-batches by a token budget and
scored without ever holding the full-vocabulary logits of a batch.

    seqs = build_sequences(groups, advantages)             # every trainable step of every rollout
    for micro in pack_micro_batches(seqs, max_tokens=4096):   # rows x longest row <= 4096
        logp, mask, entropy = completion_logprobs(model, micro, pad_id=pad_id)

Rollouts of one question share their first prompt (same chunk, same question, empty
memory): sequences with the same prompt are packed together and that prompt is evaluated
once per micro-batch, its keys and values reused by every row (`shared_prompt`). Gradients
flow through the shared prompt's computation once per row, so the result equals scoring
each row on its own (tests/rl/test_sequences.py), for about half the update's tokens at
G = 8 on short documents.

Memory is bounded by the budget, not by the episode: a micro-batch holds at most
`max_tokens` (padded) tokens (a shared prompt counted once), and the log-probs of the generated tokens are computed from
the decoder's hidden states a few hundred positions at a time (output projection ->
logsumexp and gather of the taken token), each slice recomputed in the backward pass
instead of kept (activation checkpointing of the output layer). A [rows, positions,
vocabulary] tensor is never materialised for more than `LOGIT_CHUNK_BYTES` at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from .loss import logprobs_and_entropy

# Bytes of float32 logits one slice of the output projection may produce.
LOGIT_CHUNK_BYTES = 64 * 2**20


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


def build_sequences(groups, advantages) -> list[TrainSequence]:
    """Training sequences of every trainable step (`rollout.trainable_steps`), each
    carrying its step's advantage. `groups[q][g]` is a `Rollout`, `advantages[q][g][i]`
    the advantage of its i-th step record."""
    from .rollout import trainable_steps

    seqs = []
    for group, adv_group in zip(groups, advantages, strict=True):
        for rollout, adv in zip(group, adv_group, strict=True):
            for pos, rec in trainable_steps(rollout.steps):
                seqs.append(TrainSequence(
                    prompt_ids=tuple(rec.prompt_ids),
                    completion_ids=tuple(rec.completion_ids),
                    advantage=float(adv[pos]),
                    question=rollout.question,
                ))
    return seqs


def shared_prompt(seqs: Sequence[TrainSequence]) -> bool:
    """Do these sequences (two or more) all have the same prompt, to be evaluated once?"""
    return len(seqs) > 1 and len(seqs[0].prompt_ids) > 1 and all(
        s.prompt_ids == seqs[0].prompt_ids for s in seqs[1:])


def micro_batch_tokens(seqs: Sequence[TrainSequence]) -> int:
    """Tokens a micro-batch computes: rows x longest row, or with a shared prompt that
    prompt once plus rows x longest completion."""
    if shared_prompt(seqs):
        return len(seqs[0].prompt_ids) - 1 + len(seqs) * max(len(s.completion_ids) for s in seqs)
    return len(seqs) * max(s.length for s in seqs)


def pack_micro_batches(seqs: Sequence[TrainSequence], max_tokens: int, *,
                       share_prompts: bool = True) -> list[list[TrainSequence]]:
    """Micro-batches whose size (`micro_batch_tokens`) stays within `max_tokens`.

    With `share_prompts`, sequences with the same prompt go together (their prompt is
    evaluated once); the rest are taken longest first, so rows of similar length pad
    together. A sequence longer than the budget gets a micro-batch of its own (the memory
    check refuses budgets that cannot hold the longest sequence the run can produce).
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    batches: list[list[TrainSequence]] = []
    rest: list[TrainSequence] = []
    families: dict[tuple[int, ...], list[TrainSequence]] = {}
    for s in seqs:
        families.setdefault(s.prompt_ids if share_prompts else (), []).append(s)
    for prompt, family in families.items():
        if not share_prompts or not shared_prompt(family):
            rest.extend(family)
            continue
        current: list[TrainSequence] = []
        for s in sorted(family, key=lambda s: -len(s.completion_ids)):
            if current and micro_batch_tokens(current + [s]) > max_tokens:
                if len(current) > 1:
                    batches.append(current)
                else:
                    rest.extend(current)
                current = []
            current.append(s)
        if len(current) > 1:
            batches.append(current)
        else:
            rest.extend(current)
    current = []
    for s in sorted(rest, key=lambda s: -s.length):
        longest = current[0].length if current else s.length
        if current and (len(current) + 1) * longest > max_tokens:
            batches.append(current)
            current = []
        current.append(s)
    if current:
        batches.append(current)
    return batches


def right_align(rows: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    """Per-sequence 1-D tensors as a [len(rows), width] float32 tensor, each row ending at
    the last column (the layout `completion_logprobs` returns), zeros in front."""
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for b, r in enumerate(rows):
        if len(r):
            out[b, width - len(r):] = r
    return out


def _decoder(model):
    getter = getattr(model, "get_decoder", None)
    decoder = getter() if getter is not None else None
    if decoder is None:
        decoder = getattr(model, model.base_model_prefix)
    return decoder


def _slice_logprobs(hidden, labels, head, temperature: float, softcap: float | None,
                    with_entropy: bool):
    """log p(label) (and entropy) for a slice of positions: [B, c, H] -> [B, c] float32,
    through the one log-prob and entropy implementation (`loss.logprobs_and_entropy`)."""
    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logprobs_and_entropy(logits, labels, temperature=temperature, with_entropy=with_entropy)


def _cache_keyword(decoder) -> str:
    """The name a decoder's forward takes its KV cache by (`cache` in newer transformers,
    `past_key_values` before)."""
    import inspect

    params = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class CompletionScorer(torch.nn.Module):
    """A causal LM as one module that maps padded token ids to the log-probs (and entropy)
    of the last `cmax` positions: the decoder once, then the output projection slice by
    slice. One module, so that FSDP can shard it as a unit (`rl.distributed`): its root
    then owns the embeddings and output head, whose all-gather and gradient reduction
    happen around this forward."""

    def __init__(self, lm, *, share_prompts: bool = True):
        super().__init__()
        self.lm = lm
        # Off under FSDP: a sharded layer run twice in one forward (prompt, then rows) is
        # resharded in between, and its backward then finds no storage.
        self.share_prompts = share_prompts

    def forward(self, ids, attn, positions, cmax: int, temperature: float, with_entropy: bool,
                entropy_grad: bool, autocast: bool, prefix=None, labels=None):
        """Log-probs of the last `cmax` tokens of each left-padded row of `ids`; or, with
        `prefix` ([1, P] ids evaluated once), of `labels` given the right-padded
        continuations `ids` that follow the prefix in every row (left-aligned results)."""
        lm = self.lm
        head = lm.get_output_embeddings()
        softcap = getattr(lm.config, "final_logit_softcapping", None)
        per_slice = max(1, LOGIT_CHUNK_BYTES // (4 * head.weight.shape[0] * ids.shape[0]))
        width = ids.shape[1]
        with torch.autocast(device_type=ids.device.type, dtype=torch.bfloat16, enabled=autocast):
            decoder = _decoder(lm)
            if prefix is None:
                hidden = decoder(input_ids=ids, attention_mask=attn, position_ids=positions,
                                 use_cache=False).last_hidden_state
                hidden = hidden[:, width - cmax - 1 : width - 1]  # position p predicts token p + 1
                labels = ids[:, width - cmax:]
            else:
                from transformers import DynamicCache

                cache = DynamicCache(config=lm.config)
                kw = {_cache_keyword(decoder): cache, "use_cache": True}
                decoder(input_ids=prefix, position_ids=torch.arange(prefix.shape[1], device=prefix.device)[None],
                        **kw)
                cache.batch_repeat_interleave(ids.shape[0])  # differentiable: gradients sum back
                hidden = decoder(input_ids=ids, attention_mask=attn, position_ids=positions,
                                 **kw).last_hidden_state
            logps, entropies = [], []
            for start in range(0, cmax, per_slice):
                h, y = hidden[:, start : start + per_slice], labels[:, start : start + per_slice]
                args = (h, y, head, temperature, softcap, with_entropy)
                if torch.is_grad_enabled() and h.requires_grad:
                    lp, ent = checkpoint(_slice_logprobs, *args, use_reentrant=False)
                else:
                    lp, ent = _slice_logprobs(*args)
                logps.append(lp)
                if ent is not None:
                    entropies.append(ent if entropy_grad else ent.detach())
        logp = torch.cat(logps, dim=1)
        return logp, (torch.cat(entropies, dim=1) if with_entropy else None)


def completion_logprobs(
    model,
    seqs: Sequence[TrainSequence],
    *,
    pad_id: int,
    temperature: float = 1.0,
    autocast: bool = False,
    with_entropy: bool = False,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Log-probs of each sequence's completion tokens under `model` (a causal LM or a
    `CompletionScorer` around one), right-aligned: ([B, C] logp, [B, C] mask, [B, C]
    entropy or None), C = the longest completion.

    Rows are left-padded so every completion ends at the last position; position ids
    count real tokens only, as in left-padded generation. The decoder runs once; the output
    projection runs in slices of positions (see the module docstring). Gradients flow to
    the log-probs when grad mode is on; the entropy carries gradients only with
    `entropy_grad`.
    """
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    scorer = model if isinstance(model, CompletionScorer) else CompletionScorer(model)
    device = next(scorer.parameters()).device
    lm = scorer.lm
    if (scorer.share_prompts and shared_prompt(seqs)
            and not (lm.training and getattr(lm, "is_gradient_checkpointing", False))):
        return _shared_prompt_logprobs(scorer, seqs, device=device, pad_id=pad_id, temperature=temperature,
                                       autocast=autocast, with_entropy=with_entropy,
                                       entropy_grad=entropy_grad)
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
    lens = torch.tensor([len(s.completion_ids) for s in seqs], device=device)[:, None]
    mask = (torch.arange(cmax, device=device)[None, :] >= cmax - lens).float()
    logp, entropy = scorer(ids, attn, positions, cmax, temperature, with_entropy, entropy_grad,
                           autocast)
    return logp, mask, entropy


def _shared_prompt_logprobs(scorer, seqs, *, device, pad_id: int, temperature: float, autocast: bool,
                            with_entropy: bool, entropy_grad: bool):
    """`completion_logprobs` of rows that share their prompt: the prompt but its last token
    evaluated once, then every row's [last prompt token] + completion[:-1] on its keys
    and values, each output predicting the next completion token."""
    prompt = seqs[0].prompt_ids
    cmax = max(len(s.completion_ids) for s in seqs)
    n = len(seqs)
    ids = torch.full((n, cmax), pad_id, dtype=torch.long)
    labels = torch.full((n, cmax), -1, dtype=torch.long)
    attn = torch.zeros((n, len(prompt) - 1 + cmax), dtype=torch.long)
    attn[:, : len(prompt) - 1] = 1
    for b, s in enumerate(seqs):
        c = len(s.completion_ids)
        ids[b, :c] = torch.tensor((prompt[-1],) + s.completion_ids[:-1], dtype=torch.long)
        labels[b, :c] = torch.tensor(s.completion_ids, dtype=torch.long)
        attn[b, len(prompt) - 1 : len(prompt) - 1 + c] = 1
    positions = (len(prompt) - 1 + torch.arange(cmax))[None].expand(n, cmax)
    prefix = torch.tensor([prompt[:-1]], dtype=torch.long)
    lens = torch.tensor([len(s.completion_ids) for s in seqs])[:, None]
    ids, attn, positions, prefix, labels, lens = (t.to(device) for t in (ids, attn, positions, prefix, labels, lens))
    logp, entropy = scorer(ids, attn, positions, cmax, temperature, with_entropy, entropy_grad, autocast,
                           prefix=prefix, labels=labels)
    # Left-aligned -> right-aligned, the layout of the unshared path (column j of row b holds
    # completion token j - (cmax - len_b)); columns in front of a row are masked out.
    cols = torch.arange(cmax, device=device)[None, :]
    mask = (cols >= cmax - lens).float()
    index = (cols - (cmax - lens)).clamp(min=0)
    logp = logp.gather(1, index)
    entropy = entropy.gather(1, index) if entropy is not None else None
    return logp, mask, entropy


__all__ = ["LOGIT_CHUNK_BYTES", "CompletionScorer", "TrainSequence", "build_sequences", "completion_logprobs",
           "micro_batch_tokens", "pack_micro_batches", "right_align", "shared_prompt"]
