"""Answer scoring: normalisation, EM / sub-EM / F1, answer extraction, accuracy with intervals.

Two scoring modes (always reported next to any number they produce):

* ``strict`` (default): a prediction is compared with every gold alias and the best match
  counts; a failed generation (no answer could be extracted, ``pred is None``) counts as
  wrong; an empty prediction matches nothing.
* ``official``: what the MemAgent / ReMemR1 evaluation scripts do, for comparing with their
  published numbers: only the *first* gold alias is used, failed generations are dropped
  from the denominator, and (since their sub-EM is a bare containment test) an empty
  prediction is a "substring" of every gold answer and so counts as a sub-EM hit.

The papers' "accuracy" is sub-EM x 100; `aggregate` reports it with a Wilson 95% interval.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

from .protocol import boxed_contents

ScoringMode = Literal["strict", "official"]
SCORING_MODES: tuple[str, ...] = ("strict", "official")

# Where the official scorers look for \boxed{}: only the end of the reply.
OFFICIAL_BOXED_TAIL_CHARS = 300

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_YES_NO = frozenset({"yes", "no", "noanswer"})


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the words a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _aliases(golds: str | Sequence[str]) -> list[str]:
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
    aliases = _aliases(golds)
    if pred is None:
        return 0.0
    p = normalize_answer(pred)
    return float(any(p == normalize_answer(g) for g in aliases))


def sub_exact_match(
    pred: str | None, golds: str | Sequence[str], *, empty_matches: bool = False
) -> float:
    """1.0 when the normalised prediction contains, or is contained in, some gold alias.

    An empty (after normalisation) prediction or gold matches nothing unless
    `empty_matches` is set, which reproduces the official scorer's plain containment
    test, under which "" is inside every string.
    """
    aliases = _aliases(golds)
    if pred is None:
        return 0.0
    p = normalize_answer(pred)
    for g in aliases:
        gn = normalize_answer(g)
        if not empty_matches and (not p or not gn):
            continue
        if gn in p or p in gn:
            return 1.0
    return 0.0


def f1_score(pred: str | None, golds: str | Sequence[str]) -> float:
    """Best token-overlap F1 over the gold aliases (0 for a yes/no/noanswer mismatch)."""
    aliases = _aliases(golds)
    if pred is None:
        return 0.0
    p = normalize_answer(pred)
    return max(_f1_single(p, normalize_answer(g)) for g in aliases)


# ---------------------------------------------------------------------------- extraction

_ANSWER_IS = re.compile(r"the answer is", re.IGNORECASE)
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mbox)\s*\{")
_TRAILING = ".,;:!?" + " \t\r\n"


def _matched_end(text: str, start: int) -> int | None:
    """Index just past the brace that closes the one opened right before `start`."""
    depth = 1
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def extract_boxed(text: str | None, *, tail_chars: int | None = None) -> str | None:
    """Content of the last complete, brace-matched ``\\boxed{...}`` (nested braces kept).

    An unclosed ``\\boxed{`` is skipped; with no complete one the result is None.
    `tail_chars` searches only the last that many characters of `text`, as the official
    scorers do with 300 (`OFFICIAL_BOXED_TAIL_CHARS`): a box that starts earlier, or whose
    opening was cut off, is not found.
    """
    if text is None:
        return None
    if tail_chars is not None:
        if tail_chars < 0:
            raise ValueError("tail_chars must be >= 0")
        text = text[len(text) - tail_chars :] if tail_chars < len(text) else text
    found = boxed_contents(text)  # the agent's parser: one rule for what a box is
    return found[-1].strip() if found else None


def extract_answer_is(text: str | None) -> str | None:
    """Text after the last "the answer is" (any case), up to the end of that line.

    Markdown emphasis (``*``), a leading colon and trailing punctuation are removed. None
    when the phrase is absent or nothing follows it. (The official scorer takes everything
    to the end of the reply; we stop at the line end so that a closing remark on the next
    line is not scored as part of the answer.)
    """
    if text is None:
        return None
    text = text.replace("*", "")
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :].lstrip(" \t:").lstrip()
    line = rest.split("\n", 1)[0]
    ans = line.strip().rstrip(_TRAILING).strip()
    return ans or None


def unwrap_latex_text(s: str) -> str:
    r"""``\text{Paris}`` -> ``Paris`` (also \textbf, \textit, \textrm, \mathrm, \mbox),
    repeatedly, when one wrapper spans the whole string."""
    s = s.strip()
    while (m := _TEXT_WRAPPER.match(s)) is not None and _matched_end(s, m.end()) == len(s):
        s = s[m.end() : -1].strip()
    return s


def extract_answer(
    text: str | None,
    *,
    boxed: bool = True,
    tail_chars: int | None = None,
    unwrap_text: bool = True,
) -> str | None:
    r"""The answer in a reply: the last ``\boxed{}`` (`boxed=True`) or the text after the
    last "the answer is" (`boxed=False`, for non-boxed baselines).

    `unwrap_text` turns ``\boxed{\text{Paris}}`` into ``Paris`` (the LaTeX wrapper would
    otherwise survive normalisation as the word "textparis"); the official scorers do not
    do this, so pass False to reproduce them exactly.
    """
    ans = extract_boxed(text, tail_chars=tail_chars) if boxed else extract_answer_is(text)
    if ans is not None and unwrap_text:
        ans = unwrap_latex_text(ans)
    return ans


# ---------------------------------------------------------------------------- scoring


def _check_mode(mode: str) -> None:
    if mode not in SCORING_MODES:
        raise ValueError(
            f"unknown scoring mode {mode!r}; choose one of: {', '.join(SCORING_MODES)}"
        )


def score(pred: str | None, golds: str | Sequence[str], *, mode: ScoringMode = "strict") -> dict:
    """EM, sub-EM and F1 of one prediction, plus whether the generation failed.

    Returns ``{"em", "sub_em", "f1", "failed", "mode"}``; a failed generation
    (``pred is None``) scores 0 everywhere and is marked ``failed`` so that `aggregate`
    can count it as wrong (strict) or drop it (official).
    """
    _check_mode(mode)
    aliases = _aliases(golds)
    if mode == "official":
        aliases = aliases[:1]
    return {
        "em": exact_match(pred, aliases),
        "sub_em": sub_exact_match(pred, aliases, empty_matches=(mode == "official")),
        "f1": f1_score(pred, aliases),
        "failed": pred is None,
        "mode": mode,
    }


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


def aggregate(scores: Iterable[dict], mode: ScoringMode | None = None, *, z: float = 1.96) -> dict:
    """Accuracy (sub-EM x 100), EM x 100 and F1 x 100 over items scored by `score`.

    `mode` defaults to the mode the scores were made with (they must agree). In official
    mode failed generations are left out of the denominator (`n_dropped`); in strict mode
    they count as wrong. `ci_low`/`ci_high` are the Wilson interval of the accuracy, in
    percent. With no counted item, the averages are None.
    """
    items = list(scores)
    modes = {s.get("mode") for s in items} - {None}
    if len(modes) > 1:
        raise ValueError(f"scores were made with different modes: {sorted(modes)}")
    if mode is None:
        mode = modes.pop() if modes else "strict"
    _check_mode(mode)
    if modes and mode not in modes:
        raise ValueError(
            f"scores were made in {modes.pop()!r} mode, asked to aggregate as {mode!r}"
        )
    n_failed = sum(1 for s in items if s.get("failed"))
    counted = [s for s in items if not (mode == "official" and s.get("failed"))]
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
        "n_failed": n_failed,
        "accuracy": 100.0 * k / n if n else None,
        "em": pct("em"),
        "f1": pct("f1"),
        "ci_low": 100.0 * lo,
        "ci_high": 100.0 * hi,
    }
