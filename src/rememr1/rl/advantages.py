"""Group-relative advantages of ReMemR1 (SPEC §4), in numpy.

For the G rollouts of one question:

* outcome advantage ``A_out^g = R_out^g - mean_k R_out^k``;
* step advantage ``A_state,t^g = R_state,t^g - mean_k R_state,t^k``, the mean taken over
  the rollouts that *have* step t (all rollouts of a question read the same chunks, so
  step t is the same chunk everywhere; a rollout that failed part-way simply lacks its
  later steps);
* both optionally divided by the group's standard deviation (off by default, Dr. GRPO);
* mix ``A_t^g = alpha * A_out^g + (1 - alpha) * A_state,t^g`` (alpha = 0.8), one scalar per
  step, applied to every generated token of that step (the trainer gives each training
  sequence its step's scalar).

Missing steps are NaN in the [G, S] arrays used here. `AdvantageConfig` holds every
setting of the computation (the mix, std scaling and the two official-code switches); the
trainer and the verl integration both pass it whole to `group_advantages`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import require
from ..options import option
from .rewards import EpisodeRewards


@dataclass(frozen=True, kw_only=True)
class AdvantageConfig:
    """How the rewards of a question's rollouts become per-step advantages (SPEC §4).

    alpha -- the mix A = alpha A_out + (1 - alpha) A_state; 1.0 = the outcome term alone.
    scale_by_std -- divide each centred term by its group's standard deviation (off:
        Dr. GRPO, mean-centred only).
    double_state -- official: the state rewards are doubled before they are centred, so
        without std scaling the mix is 0.8 / 0.4 instead of 0.8 / 0.2 at alpha = 0.8;
        with std scaling the factor cancels (up to eps).
    singleton_raw -- official: a group of one (a question with one rollout, or a step only
        one rollout reached) is centred with mean 0 and std 1, so its advantage is its raw
        reward; by default a group of one has advantage 0.
    """

    alpha: float = option(0.8, "Advantage mix: alpha * outcome + (1 - alpha) * state.", flag="--alpha")
    scale_by_std: bool = False
    double_state: bool = False
    singleton_raw: bool = False

    def __post_init__(self) -> None:
        require(0 <= self.alpha <= 1, "alpha", f"must be in [0, 1], got {self.alpha}")

    @classmethod
    def official(cls, **overrides) -> AdvantageConfig:
        """The official code's switches on (then `overrides` applied)."""
        return cls(**{"double_state": True, "singleton_raw": True, **overrides})


def _centre(
    values: np.ndarray, *, scale_by_std: bool, eps: float, singleton_raw: bool = False
) -> np.ndarray:
    """Subtract the mean of the present (non-NaN) entries along axis 0; optionally divide
    by their sample standard deviation plus `eps` (ddof=1, as common GRPO code does).

    A group of one is only centred, giving 0; with `singleton_raw` (the official code) it
    is centred with mean 0 and std 1 instead, keeping its raw value."""
    present = ~np.isnan(values)
    count = present.sum(axis=0)
    safe = np.where(present, values, 0.0)
    mean = np.divide(safe.sum(axis=0), count, out=np.zeros(values.shape[1:]), where=count > 0)
    single = (count == 1) if singleton_raw else np.zeros(values.shape[1:], dtype=bool)
    mean = np.where(single, 0.0, mean)
    out = values - mean
    if scale_by_std:
        sq = np.where(present, out, 0.0) ** 2
        var = np.divide(sq.sum(axis=0), count - 1, out=np.zeros(values.shape[1:]), where=count > 1)
        std = np.where(single, 1.0, np.sqrt(var))
        scale = np.broadcast_to(std + eps, out.shape)
        # no spread (and eps = 0): leave the centred values, which are 0, as they are
        out = np.divide(out, scale, out=out.copy(), where=scale > 0)
    return out


def outcome_advantages(
    rewards: Sequence[float] | np.ndarray,
    *,
    scale_by_std: bool = False,
    eps: float = 1e-6,
    singleton_raw: bool = False,
) -> np.ndarray:
    """A_out[g] = R_out[g] - mean(R_out) over the G rollouts of one question (shape [G])."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"outcome rewards must be 1-D [G], got shape {r.shape}")
    if np.isnan(r).any():
        raise ValueError("outcome rewards contain NaN")
    return _centre(r[:, None], scale_by_std=scale_by_std, eps=eps, singleton_raw=singleton_raw)[:, 0]


def step_advantages(
    rewards: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    scale_by_std: bool = False,
    eps: float = 1e-6,
    singleton_raw: bool = False,
) -> np.ndarray:
    """A_state[g, t] = R_state[g, t] - mean over the rollouts that have step t.

    `rewards` is [G, S] with NaN where a rollout has no step t; `mask` ([G, S], True =
    present) may mark missing steps instead. The result has NaN at missing steps.
    """
    r = np.array(rewards, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"step rewards must be 2-D [G, steps], got shape {r.shape}")
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != r.shape:
            raise ValueError(f"mask shape {m.shape} != rewards shape {r.shape}")
        r[~m] = np.nan
    return _centre(r, scale_by_std=scale_by_std, eps=eps, singleton_raw=singleton_raw)


def mix_advantages(
    a_out: Sequence[float] | np.ndarray, a_state: np.ndarray, *, alpha: float = 0.8
) -> np.ndarray:
    """A[g, t] = alpha * A_out[g] + (1 - alpha) * A_state[g, t]  (shape [G, S])."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = np.asarray(a_out, dtype=np.float64)
    state = np.asarray(a_state, dtype=np.float64)
    if state.ndim != 2 or out.shape != (state.shape[0],):
        raise ValueError(f"need A_out [G] and A_state [G, S], got {out.shape} and {state.shape}")
    return alpha * out[:, None] + (1.0 - alpha) * state


def group_advantages(
    episodes: Sequence[EpisodeRewards],
    cfg: AdvantageConfig | None = None,
    *,
    eps: float = 1e-6,
) -> list[list[float]]:
    """Per rollout, per recorded step (in the rollout's own order): the mixed advantage.

    `episodes` are the G rollouts of *one* question. Steps are aligned on their step
    index; two rollouts whose step t is of a different kind (memory vs final) cannot be
    from the same question and chunking, and raise ValueError.

    `cfg` (default `AdvantageConfig()`) sets the mix, the std scaling and the official-code
    switches `double_state` and `singleton_raw` (see `AdvantageConfig`).
    """
    cfg = cfg or AdvantageConfig()
    if not episodes:
        return []
    index: dict[int, int] = {}
    kind_at: dict[int, str] = {}
    for ep in episodes:
        if len(set(ep.steps)) != len(ep.steps):
            raise ValueError(f"an episode repeats a step index: {ep.steps}")
        for t, kind in zip(ep.steps, ep.kinds, strict=True):
            if kind_at.setdefault(t, kind) != kind:
                raise ValueError(
                    f"rollouts disagree on the kind of step {t}: not one question's group"
                )
    for col, t in enumerate(sorted(kind_at)):
        index[t] = col
    state = np.full((len(episodes), len(index)), np.nan)
    for g, ep in enumerate(episodes):
        for t, r in zip(ep.steps, ep.state, strict=True):
            state[g, index[t]] = r
    if cfg.double_state:
        state = 2.0 * state
    opts = {"scale_by_std": cfg.scale_by_std, "eps": eps, "singleton_raw": cfg.singleton_raw}
    a_out = outcome_advantages([ep.outcome for ep in episodes], **opts)
    a_state = step_advantages(state, **opts)
    mixed = mix_advantages(a_out, a_state, alpha=cfg.alpha)
    return [[float(mixed[g, index[t]]) for t in ep.steps] for g, ep in enumerate(episodes)]
