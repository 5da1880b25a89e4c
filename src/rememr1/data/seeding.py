"""Stable per-item random seeds.

Every generated item draws its randomness from its own `random.Random`, seeded from the
run seed and the item's coordinates (length, hops, order, index, ...). Results therefore
do not depend on how many worker processes ran, in which order items finished, or on
Python's per-process string hashing.

    rng = item_rng(seed, "layout", 4096, 2, "reverse", 17)
"""

from __future__ import annotations

import hashlib
import random


def derive_seed(*parts: object) -> int:
    """A 64-bit integer that depends only on `parts` (their repr), stable across runs."""
    h = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8)
    return int.from_bytes(h.digest(), "little")


def item_rng(*parts: object) -> random.Random:
    """A `random.Random` seeded from `parts`."""
    return random.Random(derive_seed(*parts))
