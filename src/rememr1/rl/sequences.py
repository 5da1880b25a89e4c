"""Training sequences: one per agent step, packed into micro-batches by a token budget and
scored without ever holding the full-vocabulary logits of a batch.

    seqs = build_sequences(groups, advantages)             # every trainable step of every rollout
    for micro in pack_micro_batches(seqs, max_tokens=4096):   # rows x longest row <= 4096
        logp, mask, entropy = completion_logprobs(model, micro, pad_id=pad_id)

Memory is bounded by the budget, not by the episode: a micro-batch holds at most
`max_tokens` (padded) tokens, and the log-probs of the generated tokens are computed from
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


def pack_micro_batches(seqs: Sequence[TrainSequence], max_tokens: int) -> list[list[TrainSequence]]:
    """Micro-batches whose padded size (rows x longest row) stays within `max_tokens`.

    Sequences are taken longest first, so rows of similar length pad together; a sequence
    longer than the budget gets a micro-batch of its own (the memory check refuses budgets
    that cannot hold the longest sequence the run can produce).
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    ordered = sorted(seqs, key=lambda s: -s.length)
    batches: list[list[TrainSequence]] = []
    current: list[TrainSequence] = []
    for s in ordered:
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
    """log p(label) (and entropy) for a slice of positions: [B, c, H] -> [B, c] float32."""
    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    if temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) - lse
    if not with_entropy:
        return logp, None
    entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(dim=-1)
    return logp, entropy


class CompletionScorer(torch.nn.Module):
    """A causal LM as one module that maps padded token ids to the log-probs (and entropy)
    of the last `cmax` positions: the decoder once, then the output projection slice by
    slice. One module, so that FSDP can shard it as a unit (`rl.distributed`): its root
    then owns the embeddings and output head, whose all-gather and gradient reduction
    happen around this forward."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, ids, attn, positions, cmax: int, temperature: float, with_entropy: bool,
                entropy_grad: bool, autocast: bool):
        lm = self.lm
        head = lm.get_output_embeddings()
        softcap = getattr(lm.config, "final_logit_softcapping", None)
        per_slice = max(1, LOGIT_CHUNK_BYTES // (4 * head.weight.shape[0] * ids.shape[0]))
        width = ids.shape[1]
        with torch.autocast(device_type=ids.device.type, dtype=torch.bfloat16, enabled=autocast):
            hidden = _decoder(lm)(input_ids=ids, attention_mask=attn, position_ids=positions,
                                  use_cache=False).last_hidden_state
            hidden = hidden[:, width - cmax - 1 : width - 1]  # position p predicts token p + 1
            labels = ids[:, width - cmax:]
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


__all__ = ["LOGIT_CHUNK_BYTES", "CompletionScorer", "TrainSequence", "build_sequences", "completion_logprobs",
           "pack_micro_batches", "right_align"]
