"""The policy-gradient objective of ReMemR1 training (SPEC §4), in torch.

Every tensor below is [B, L]: B training sequences (one per agent step), L generated-token
positions, `mask` marking the real generated tokens (1) against padding (0). Advantages are
per token (a step's scalar on every one of its tokens).

* `policy_loss`: PPO clipped surrogate with separate low/high clip ranges and dual clip
  for negative advantages;
* `kl_k3`: the "low-variance" k3 estimate of KL(policy || reference) per token;
* `logprobs_and_entropy`: per-token log-probs of the taken tokens and the entropy, from
  model logits (the one implementation: the trainer's scorer, `rl.sequences`, calls it on
  each slice of positions);
* `total_loss` = policy loss + kl_beta * KL - entropy_coef * entropy, all aggregated the
  same way ("token-mean" over every token of the batch, or "seq-mean": mean over each
  sequence's tokens, then over sequences).

Both losses take their `LossConfig` whole; the advantages they weigh come from
`rl.advantages` (whose settings are `AdvantageConfig`).

With gradient accumulation, pass the token (or sequence) count of the whole mini-batch as
`num_tokens` (`num_seqs`) so that the summed micro-batch losses equal the mini-batch
mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal


from ..errors import require, require_choice

if TYPE_CHECKING:  # annotations only; torch is imported where it is used
    import torch

Aggregation = Literal["token-mean", "seq-mean"]
AGGREGATIONS: tuple[str, ...] = ("token-mean", "seq-mean")


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    """The objective (SPEC §4): PPO clip ranges `clip_low`/`clip_high` with the dual clip
    `dual_clip_c` (None: off) for negative advantages, k3 KL to the reference weighted by
    `kl_beta`, an entropy bonus weighted by `entropy_coef`, aggregated by `agg`
    ("token-mean" or "seq-mean")."""

    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip_c: float | None = 3.0
    kl_beta: float = 0.001
    entropy_coef: float = 0.0
    agg: str = "token-mean"

    def __post_init__(self) -> None:
        require(0 <= self.clip_low < 1, "clip_low", "must be in [0, 1)")
        require(self.clip_high >= 0, "clip_high", "must be >= 0")
        require(self.dual_clip_c is None or self.dual_clip_c > 1, "dual_clip_c",
                "must be > 1 (or null to disable)")
        require(self.kl_beta >= 0, "kl_beta", "must be >= 0")
        require_choice(self.agg, AGGREGATIONS, "agg")


_DEFAULT = LossConfig()

# exp() of a log-ratio beyond this is a numerical accident, not a policy change.
_MAX_LOG_RATIO = 20.0


def logprobs_and_entropy(
    logits: torch.Tensor, labels: torch.Tensor, *, temperature: float = 1.0, with_entropy: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per position: log p(labels[..., l]) and the entropy of softmax(logits / temperature),
    [..., L, V] -> ([..., L], [..., L] or None without `with_entropy`), float32 or wider.

    `logits[..., l]` must already be the prediction for `labels[..., l]` (shift before
    calling). log p is the gathered logit minus the logsumexp, the entropy
    H = logsumexp - sum softmax * logits, so no log-softmax of the vocabulary is kept for
    backward. Negative labels (ignore index) give a finite dummy value; mask them.
    Half-precision logits are upcast one row at a time, so no float32 copy of a whole
    [B, L, V] tensor is made.
    """
    import torch
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    if temperature <= 0:
        raise ValueError("temperature must be > 0")

    def one(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if temperature != 1.0:
            x = x / temperature
        lse = torch.logsumexp(x, dim=-1)
        logp = x.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1) - lse
        if not with_entropy:
            return logp, None
        return logp, lse - (torch.softmax(x, dim=-1) * x).sum(dim=-1)

    if logits.dtype in (torch.float32, torch.float64):
        return one(logits, labels)
    if logits.dim() < 3:
        return one(logits.float(), labels)
    rows = [one(row.float(), y) for row, y in zip(logits, labels, strict=True)]
    logp = torch.stack([lp for lp, _ in rows])
    return logp, (torch.stack([h for _, h in rows]) if with_entropy else None)


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
    import torch
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
    cfg: LossConfig | None = None,
    *,
    num_tokens: float | None = None,
    num_seqs: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate loss (to minimise) with dual clip, as `cfg` sets it (clip_low,
    clip_high, dual_clip_c, agg; default `LossConfig()`).

    Per token, with ratio r = exp(logp - old_logp) and advantage A:
        clipped = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))
        loss    = min(clipped, -A c)   if A < 0 and dual_clip_c = c is set
                  clipped              otherwise
    The dual clip bounds the loss of a token whose ratio has grown huge under a negative
    advantage (its gradient is then zero) so that one stale token cannot dominate.

    Stats (floats): pg_loss, clip_frac (tokens where the clip range is active),
    dual_clip_frac, approx_kl (k3 estimate of KL(old || new)), ratio_mean, ratio_max.
    """
    import torch
    if not (logp.shape == old_logp.shape == advantages.shape == mask.shape):
        raise ValueError("logp, old_logp, advantages and mask must have the same shape")
    cfg = cfg or _DEFAULT
    clip_low, clip_high, dual_clip_c = cfg.clip_low, cfg.clip_high, cfg.dual_clip_c
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

    loss = masked_aggregate(per_token, mask, cfg.agg, num_tokens=num_tokens, num_seqs=num_seqs)
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
    import torch
    d = (ref_logp.detach() - logp).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    return (torch.exp(d) - d - 1.0).clamp(min=0.0, max=max_value)


def total_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: LossConfig | None = None,
    *,
    ref_logp: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    num_tokens: float | None = None,
    num_seqs: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """policy loss + kl_beta * KL(policy || ref) - entropy_coef * entropy, each aggregated
    with `agg` (all from `cfg`, default `LossConfig()`).

    `ref_logp` is needed when kl_beta > 0 and `entropy` ([B, L], e.g. from
    `logprobs_and_entropy`) when entropy_coef != 0; given anyway, they are reported in the
    stats (`kl`, `entropy`) without changing the loss. Stats also hold the policy-loss
    stats and `loss`.
    """
    cfg = cfg or _DEFAULT
    if cfg.kl_beta and ref_logp is None:
        raise ValueError("kl_beta > 0 needs ref_logp (the reference model's log-probs)")
    if cfg.entropy_coef and entropy is None:
        raise ValueError("entropy_coef != 0 needs the per-token entropy")
    red = dict(num_tokens=num_tokens, num_seqs=num_seqs)
    loss, stats = policy_loss(logp, old_logp, advantages, mask, cfg, **red)
    if ref_logp is not None:
        kl = masked_aggregate(kl_k3(logp, ref_logp), mask, cfg.agg, **red)
        if cfg.kl_beta:
            loss = loss + cfg.kl_beta * kl
        stats["kl"] = float(kl.detach())
    if entropy is not None:
        ent = masked_aggregate(entropy, mask, cfg.agg, **red)
        if cfg.entropy_coef:
            loss = loss - cfg.entropy_coef * ent
        stats["entropy"] = float(ent.detach())
    stats["loss"] = float(loss.detach())
    return loss, stats
