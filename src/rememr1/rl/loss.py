"""The policy-gradient objective of ReMemR1 training (SPEC §4), in torch.

Every tensor below is [B, L]: B training sequences (one per agent step), L generated-token
positions, `mask` marking the real generated tokens (1) against padding (0). Advantages are
per token (a step's scalar on every one of its tokens).

* `policy_loss`: PPO clipped surrogate with separate low/high clip ranges and dual clip
  for negative advantages;
* `kl_k3`: the "low-variance" k3 estimate of KL(policy || reference) per token;
* `entropy_from_logits`, `token_logprobs`: per-token quantities from model logits;
* `total_loss` = policy loss + kl_coef * KL - entropy_coef * entropy, all aggregated the
  same way ("token-mean" over every token of the batch, or "seq-mean": mean over each
  sequence's tokens, then over sequences).

With gradient accumulation, pass the token (or sequence) count of the whole mini-batch as
`num_tokens` (`num_seqs`) so that the summed micro-batch losses equal the mini-batch
mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import require, require_choice

Aggregation = Literal["token-mean", "seq-mean"]
AGGREGATIONS: tuple[str, ...] = ("token-mean", "seq-mean")


@dataclass(kw_only=True)
class LossConfig:
    """The objective (SPEC §4): PPO clip with dual clip, k3 KL to the reference, entropy
    bonus, and the advantage mix A = alpha A_out + (1 - alpha) A_state."""

    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip_c: float | None = 3.0
    kl_beta: float = 0.001
    entropy_coef: float = 0.0
    agg: str = "token-mean"
    alpha: float = 0.8
    scale_by_std: bool = False

    def __post_init__(self) -> None:
        require(0 <= self.clip_low < 1, "clip_low", "must be in [0, 1)")
        require(self.clip_high >= 0, "clip_high", "must be >= 0")
        require(self.dual_clip_c is None or self.dual_clip_c > 1, "dual_clip_c",
                "must be > 1 (or null to disable)")
        require(self.kl_beta >= 0, "kl_beta", "must be >= 0")
        require_choice(self.agg, AGGREGATIONS, "agg")
        require(0 <= self.alpha <= 1, "alpha", f"must be in [0, 1], got {self.alpha}")

# exp() of a log-ratio beyond this is a numerical accident, not a policy change.
_MAX_LOG_RATIO = 20.0


def _per_row(fn, logits: torch.Tensor) -> torch.Tensor:
    """Apply `fn` to each [L, V] row in float32 (for half-precision logits: never hold a
    float32 copy of the whole [B, L, V] tensor)."""
    if logits.dtype in (torch.float32, torch.float64):
        return fn(logits)
    return torch.stack([fn(row.float()) for row in logits])


def token_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, *, temperature: float = 1.0
) -> torch.Tensor:
    """log p(labels[b, l]) under softmax(logits[b, l] / temperature): [B, L, V] -> [B, L].

    `logits[:, l]` must already be the prediction for `labels[:, l]` (shift before
    calling). Computed as gathered logit minus logsumexp, so no [B, L, V] log-softmax is
    kept for backward. Negative labels (ignore index) give a finite dummy value; mask them.
    Half-precision logits are upcast one sequence at a time; the result is float32.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    idx = labels.clamp(min=0).unsqueeze(-1)
    if temperature != 1.0:
        logits = logits / temperature

    if logits.dtype in (torch.float32, torch.float64):
        return logits.gather(-1, idx).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    rows = []
    for row, row_idx in zip(logits, idx, strict=True):
        row = row.float()
        rows.append(row.gather(-1, row_idx).squeeze(-1) - torch.logsumexp(row, dim=-1))
    return torch.stack(rows)


def entropy_from_logits(logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) per position: [B, L, V] -> [B, L]."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    if temperature != 1.0:
        logits = logits / temperature

    def entropy(x: torch.Tensor) -> torch.Tensor:
        # H = logsumexp(x) - sum softmax(x) * x
        return torch.logsumexp(x, dim=-1) - (torch.softmax(x, dim=-1) * x).sum(dim=-1)

    return _per_row(entropy, logits)


def masked_aggregate(
    values: torch.Tensor,
    mask: torch.Tensor,
    agg: Aggregation = "token-mean",
    *,
    num_tokens: float | None = None,
    num_seqs: float | None = None,
) -> torch.Tensor:
    """Reduce per-token `values` [B, L] to a scalar over the positions where `mask` is set.

    token-mean: sum over all masked tokens / `num_tokens` (default: their count).
    seq-mean: each sequence's mean over its masked tokens, summed over the sequences that
    have any, / `num_seqs` (default: how many have any). Masked-out values may be NaN/inf.
    """
    if agg not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {agg!r}; choose one of: {', '.join(AGGREGATIONS)}")
    if values.shape != mask.shape:
        raise ValueError(
            f"values {tuple(values.shape)} and mask {tuple(mask.shape)} differ in shape"
        )
    m = mask.bool()
    v = torch.where(m, values, torch.zeros((), dtype=values.dtype, device=values.device))
    if agg == "token-mean":
        denom = float(num_tokens) if num_tokens is not None else m.sum().clamp(min=1)
        return v.sum() / denom
    per_seq_count = m.sum(dim=-1)
    per_seq = v.sum(dim=-1) / per_seq_count.clamp(min=1)
    has_tokens = per_seq_count > 0
    denom = float(num_seqs) if num_seqs is not None else has_tokens.sum().clamp(min=1)
    return per_seq[has_tokens].sum() / denom


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    m = mask.bool()
    n = int(m.sum())
    return float(values[m].float().sum() / n) if n else 0.0


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip_c: float | None = 3.0,
    agg: Aggregation = "token-mean",
    num_tokens: float | None = None,
    num_seqs: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate loss (to minimise) with dual clip.

    Per token, with ratio r = exp(logp - old_logp) and advantage A:
        clipped = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))
        loss    = min(clipped, -A c)   if A < 0 and dual_clip_c = c is set
                  clipped              otherwise
    The dual clip bounds the loss of a token whose ratio has grown huge under a negative
    advantage (its gradient is then zero) so that one stale token cannot dominate.

    Stats (floats): pg_loss, clip_frac (tokens where the clip range is active),
    dual_clip_frac, approx_kl (k3 estimate of KL(old || new)), ratio_mean, ratio_max.
    """
    if not (logp.shape == old_logp.shape == advantages.shape == mask.shape):
        raise ValueError("logp, old_logp, advantages and mask must have the same shape")
    if clip_low < 0 or clip_high < 0 or clip_low >= 1:
        raise ValueError("need 0 <= clip_low < 1 and clip_high >= 0")
    if dual_clip_c is not None and dual_clip_c <= 1.0:
        raise ValueError(f"dual_clip_c must be > 1, got {dual_clip_c}")
    old_logp = old_logp.detach()
    advantages = advantages.detach().to(logp.dtype)

    log_ratio = (logp - old_logp).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped_only = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    clipped = torch.maximum(unclipped, clipped_only)
    if dual_clip_c is not None:
        bound = -advantages * dual_clip_c
        dual_active = (advantages < 0) & (clipped > bound)
        per_token = torch.where(advantages < 0, torch.minimum(clipped, bound), clipped)
    else:
        dual_active = torch.zeros_like(mask, dtype=torch.bool)
        per_token = clipped

    loss = masked_aggregate(per_token, mask, agg, num_tokens=num_tokens, num_seqs=num_seqs)
    with torch.no_grad():
        m = mask.bool()
        ratio_max = float(ratio[m].max()) if m.any() else 1.0
        stats = {
            "pg_loss": float(loss.detach()),
            "clip_frac": _masked_mean((clipped_only > unclipped).float(), mask),
            "dual_clip_frac": _masked_mean(dual_active.float(), mask),
            "approx_kl": _masked_mean(ratio - 1.0 - log_ratio, mask),
            "ratio_mean": _masked_mean(ratio, mask),
            "ratio_max": ratio_max,
        }
    return loss, stats


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor, *, max_value: float = 10.0) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference): exp(d) - d - 1, d = ref - logp.

    Always >= 0. For stability d is clamped to [-20, 20] and the estimate to at most
    `max_value` (tokens beyond it then carry no gradient).
    """
    d = (ref_logp.detach() - logp).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    return (torch.exp(d) - d - 1.0).clamp(min=0.0, max=max_value)


def total_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logp: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    kl_coef: float = 0.001,
    entropy_coef: float = 0.0,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip_c: float | None = 3.0,
    agg: Aggregation = "token-mean",
    num_tokens: float | None = None,
    num_seqs: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """policy loss + kl_coef * KL(policy || ref) - entropy_coef * entropy, each aggregated
    with `agg`.

    `ref_logp` is needed when kl_coef > 0 and `entropy` ([B, L], e.g. from
    `entropy_from_logits`) when entropy_coef != 0; given anyway, they are reported in the
    stats (`kl`, `entropy`) without changing the loss. Stats also hold the policy-loss
    stats and `loss`.
    """
    if kl_coef and ref_logp is None:
        raise ValueError("kl_coef > 0 needs ref_logp (the reference model's log-probs)")
    if entropy_coef and entropy is None:
        raise ValueError("entropy_coef != 0 needs the per-token entropy")
    red = dict(num_tokens=num_tokens, num_seqs=num_seqs)
    loss, stats = policy_loss(
        logp,
        old_logp,
        advantages,
        mask,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip_c=dual_clip_c,
        agg=agg,
        **red,
    )
    if ref_logp is not None:
        kl = masked_aggregate(kl_k3(logp, ref_logp), mask, agg, **red)
        if kl_coef:
            loss = loss + kl_coef * kl
        stats["kl"] = float(kl.detach())
    if entropy is not None:
        ent = masked_aggregate(entropy, mask, agg, **red)
        if entropy_coef:
            loss = loss - entropy_coef * ent
        stats["entropy"] = float(ent.detach())
    stats["loss"] = float(loss.detach())
    return loss, stats
