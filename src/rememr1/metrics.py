"""Answer scoring: normalisation, EM / sub-EM / F1, accuracy with intervals.

Two scoring modes (always reported next to any number they produce):

* ``strict`` (default): the prediction is the agent's answer (`protocol.answer_of`, the
  one answer rule); it is compared with every gold alias and the best match counts; an
  item without an answer (``pred is None``, including failed generations) counts as wrong;
  an empty prediction matches nothing.
* ``official``: the MemAgent / ReMemR1 evaluation script, re-stated (`score_official`),
  for comparing with published numbers. It reads the final *reply* itself: an item is
  dropped from the denominator only when its generation failed (the official client turns
  a failed request into an empty output, and drops empty outputs; a whitespace-only reply
  is kept and scores 0); the answer is the last box of the text after the last
  ``</think>`` (the whole reply when nothing follows it), found the MATH way
  (`protocol.official_boxed`); no answer or an empty one scores 0 everywhere; only the
  *first* gold alias is used; F1 is rounded to two decimals per item, as their script does.

The papers' "accuracy" is sub-EM x 100; `aggregate` reports it with a Wilson 95% interval.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

from .protocol import official_boxed

ScoringMode = Literal["strict", "official"]
SCORING_MODES: tuple[str, ...] = ("strict", "official")

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_YES_NO = frozenset({"yes", "no", "noanswer"})


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the words a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def gold_aliases(golds: str | Sequence[str]) -> list[str]:
    """The gold answers as a list of strings (one string is one alias); the one helper
    the scorers here and the rewards (`rl.rewards`) read gold aliases through. No alias
    at all is a ValueError."""
    aliases = [golds] if isinstance(golds, str) else [str(g) for g in golds]
    if not aliases:
        raise ValueError("no gold answers given")
    return aliases


def _f1_single(pred_norm: str, gold_norm: str) -> float:
    # A yes/no question is right or wrong; partial token overlap does not count.
    if (pred_norm in _YES_NO or gold_norm in _YES_NO) and pred_norm != gold_norm:
        return 0.0
    pred_tokens, gold_tokens = pred_norm.split(), gold_norm.split()
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(pred: str | None, golds: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals some normalised gold alias."""
    aliases = gold_aliases(golds)
    if pred is None:
        return 0.0
    p = normalize_answer(pred)
    return float(any(p == normalize_answer(g) for g in aliases))


def sub_exact_match(pred: str | None, golds: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction contains, or is contained in, some gold alias.
    An empty (after normalisation) prediction or gold matches nothing."""
    aliases = gold_aliases(golds)
    if pred is None:
        return 0.0
    p = normalize_answer(pred)
    for g in aliases:
        gn = normalize_answer(g)
        if p and gn and (gn in p or p in gn):
            return 1.0
    return 0.0


def f1_score(pred: str | None, golds: str | Sequence[str]) -> float:
    """Best token-overlap F1 over the gold aliases (0 for a yes/no/noanswer mismatch)."""
    aliases = gold_aliases(golds)
    if pred is None:
        return 0.0
    p = normalize_answer(pred)
    return max(_f1_single(p, normalize_answer(g)) for g in aliases)


# ---------------------------------------------------------------------------- scoring


def score(pred: str | None, golds: str | Sequence[str]) -> dict:
    """Strict EM, sub-EM and F1 of one prediction, best over every gold alias.

    Returns ``{"em", "sub_em", "f1", "failed", "dropped", "mode"}``; an item with no
    answer (``pred is None``) scores 0 everywhere and is marked ``failed``; strict
    scoring never drops an item.
    """
    aliases = gold_aliases(golds)
    return {
        "em": exact_match(pred, aliases),
        "sub_em": sub_exact_match(pred, aliases),
        "f1": f1_score(pred, aliases),
        "failed": pred is None,
        "dropped": False,
        "mode": "strict",
    }


def official_prediction(response: str, answer_format: str = "boxed") -> str | None:
    """What the official scorer extracts from a final reply: strip it; take the text after
    the last ``</think>`` (the whole reply if nothing follows it); then its last box
    (`protocol.official_boxed`), or for "the answer is" baselines the rest of the text
    after the last (case-sensitive) "the answer is", emphasis and full stops trimmed."""
    response = response.strip()
    pred = response.split("</think>")[-1].strip() if "</think>" in response else response
    text = pred or response
    if answer_format == "boxed":
        return official_boxed(text)
    text = text.replace("*", "")
    if "the answer is" not in text:
        return None
    return text.rsplit("the answer is", 1)[-1].strip().strip(".").strip()


def score_official(
    response: str | None,
    golds: str | Sequence[str],
    *,
    failed: bool = False,
    answer_format: str = "boxed",
) -> dict:
    """The official scorer's verdict on one item (see the module docstring).

    `response` is the raw final reply; `failed` marks a generation error anywhere in the
    episode (the official client then returns an empty output). Such items, and items
    whose reply is exactly empty, are ``dropped``. Returns the keys of `score` plus
    ``pred``, the official prediction.
    """
    gold = gold_aliases(golds)[0]
    dropped = failed or not response
    pred = None if dropped else official_prediction(response, answer_format)
    if not pred:  # None or "": the official script scores 0 without comparing
        em = sub = f1 = 0.0
    else:
        p, g = normalize_answer(pred), normalize_answer(gold)
        em = float(p == g)
        sub = float(g in p or p in g)
        f1 = round(_f1_single(p, g), 2)
    return {"em": em, "sub_em": sub, "f1": f1, "failed": pred is None, "dropped": dropped,
            "mode": "official", "pred": pred}


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (as fractions in [0, 1]).

    n = 0 gives the uninformative (0, 1).
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At k = 0 (k = n) the lower (upper) bound is exactly 0 (1); do not let rounding move it.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def aggregate(scores: Iterable[dict], *, z: float = 1.96) -> dict:
    """Accuracy (sub-EM x 100), EM x 100 and F1 x 100 over items scored by `score` or
    `score_official` (all with the same mode).

    Dropped items (official mode only) are left out of the denominator (`n_dropped`);
    `n_failed` counts counted items without an answer, which score 0. `ci_low`/`ci_high`
    are the Wilson interval of the accuracy, in percent. With no counted item, the
    averages are None.
    """
    items = list(scores)
    modes = {s.get("mode", "strict") for s in items}
    if len(modes) > 1:
        raise ValueError(f"scores were made with different modes: {sorted(modes)}")
    mode = modes.pop() if modes else "strict"
    counted = [s for s in items if not s.get("dropped")]
    n = len(counted)
    k = sum(1 for s in counted if s["sub_em"] >= 1.0)
    lo, hi = wilson_interval(k, n, z)

    def pct(key: str) -> float | None:
        return 100.0 * sum(float(s[key]) for s in counted) / n if n else None

    return {
        "mode": mode,
        "n": n,
        "n_total": len(items),
        "n_dropped": len(items) - n,
        "n_failed": sum(1 for s in counted if s.get("failed")),
        "accuracy": 100.0 * k / n if n else None,
        "em": pct("em"),
        "f1": pct("f1"),
        "ci_low": 100.0 * lo,
        "ci_high": 100.0 * hi,
    }
