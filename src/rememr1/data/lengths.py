"""Context lengths in tokens, as the command line and file names write them.

k = 1024 tokens and m = 1024 * 1024, as RULER counts: `parse_length("4k") == 4096`,
`format_length(1048576) == "1m"`. File names (`eval_revhop_h2_reverse_4k.json`), record
ids and eval tables all use `format_length`. `length_of` is the label an eval result line
is reported under, and `length_sort_key` orders those labels ("2k" < "16k" < "1m").
"""

from __future__ import annotations

import re
from typing import Any

from rememr1.errors import InputError

_LENGTH_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_length(s: str | int) -> int:
    """'4k' -> 4096, '1m' -> 1048576, '1.5m', '5000' (k = 1024 tokens, as RULER counts)."""
    if isinstance(s, int):
        if s <= 0:
            raise InputError(f"length must be positive, got {s}")
        return s
    m = _LENGTH_RE.match(str(s))
    if not m:
        raise InputError(f"cannot read length {s!r}: use a token count like 4096, 4k, 256k or 1m")
    value = float(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    if value < 1:
        raise InputError(f"length must be positive, got {s!r}")
    return int(value)


def format_length(n: int) -> str:
    """Inverse of parse_length for round numbers: 4096 -> '4k', 1048576 -> '1m'."""
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)}m"
    if n % 1024 == 0:
        return f"{n // 1024}k"
    return str(n)


def length_of(metadata: dict[str, Any]) -> str:
    """The context-length label an item is reported under: the target length in tokens
    as 4k / 1m for RevHop and RULER items, else the number of documents (HotpotQA-style,
    as the papers report it)."""
    n = metadata.get("length")
    if metadata.get("num_docs") not in (None, "") and metadata.get("data_source") != "revhop":
        return str(metadata["num_docs"])
    if isinstance(n, int) and n > 0:
        return format_length(n)
    return str(n) if n not in (None, "") else "?"


def length_sort_key(label: str) -> tuple:
    """Orders length labels by their token (or document) count: "50" < "2k" < "16k" < "1m";
    a label that is not a length sorts after every length, alphabetically."""
    s = label.lower().strip()
    mult = {"k": 1024, "m": 1024**2}.get(s[-1:], 1)
    try:
        return (0, float(s[:-1] if mult > 1 else s) * mult)
    except ValueError:
        return (1, s)
