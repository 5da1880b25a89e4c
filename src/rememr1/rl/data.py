"""Training questions: loading them, and the order they are drawn in.

    samples = load_training_samples(["train.parquet"], max_items=None)
    stream = DataStream(len(samples), seed=0)
    indices = stream.next(128)          # the next batch; stream.state() resumes it exactly

Every epoch is a fresh permutation seeded by (shuffle_seed, epoch); the position (epoch,
offset) is the stream's whole state, so a checkpoint resumes mid-epoch under any number of
ranks (`rl.distributed` deals each batch out after it was drawn).
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.records import Sample
from ..errors import InputError, require
from ..options import option


@dataclass(kw_only=True)
class DataConfig:
    """Training questions: schema-A parquet (MemAgent's files unchanged) or any schema the
    loaders read; `train` entries may be globs. `max_items` keeps the first N questions
    (before shuffling); every epoch is a fresh permutation seeded by (shuffle_seed, epoch)."""

    train: list[str] = option(
        help="Training file(s) or globs: schema-A parquet (MemAgent's files work unchanged) or any supported "
        "schema. Repeatable.", flag="--data", default_factory=list)
    dev: str | None = option(None, "Dev file for periodic validation (sub-EM).", flag="--dev")
    shuffle_seed: int = 0
    max_items: int | None = None

    def __post_init__(self) -> None:
        require(self.max_items is None or self.max_items >= 1, "max_items", "must be at least 1")


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


__all__ = ["DataConfig", "DataStream", "batch_keys", "expand_files", "load_training_samples",
           "question_key"]
