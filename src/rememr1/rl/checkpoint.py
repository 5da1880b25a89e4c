"""Training checkpoints: plain Hugging Face model directories plus the trainer's state.

    OUT/checkpoint-{step}/
        config.json, model.safetensors, generation_config.json   (model.save_pretrained)
        tokenizer.json, tokenizer_config.json, chat_template...   (tokenizer.save_pretrained)
        trainer_state.pt    optimizer, scheduler, RNG states, data position, step

The directory is a model any HF tool loads (`rememr1 ask --backend hf --model
OUT/checkpoint-N`). A checkpoint is written to a hidden temporary directory and renamed
into place, so a crash mid-save never leaves a half-written `checkpoint-N` that resume
would pick up.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..backends.adapters import ADAPTER_CONFIG

STATE_FILE = "trainer_state.pt"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dir(out: str | Path, step: int) -> Path:
    return Path(out) / f"checkpoint-{step}"


def list_checkpoints(out: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in `out` (a trainer state beside a model or, from a LoRA run,
    an adapter), oldest first."""
    root = Path(out)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file() and (
                (p / "config.json").is_file() or (p / ADAPTER_CONFIG).is_file()):
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out: str | Path) -> Path | None:
    found = list_checkpoints(out)
    return found[-1][1] if found else None


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states, in plain types and tensors."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(out: str | Path, step: int, *, model, tokenizer, state: dict[str, Any],
                    **save_options) -> Path:
    """Write checkpoint-{step} atomically; an existing one of that step is replaced.
    `save_options` go to the model's `save_pretrained`."""
    final = checkpoint_dir(out, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        model.save_pretrained(tmp, safe_serialization=True, **save_options)
        tokenizer.save_pretrained(tmp)
        torch.save(state, tmp / STATE_FILE)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; checkpoints are ordinary dirs
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_state(path: str | Path) -> dict[str, Any]:
    """The trainer state saved in a checkpoint directory (tensors on the CPU)."""
    return torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True)


def prune_checkpoints(out: str | Path, keep_last: int | None) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints; returns what was removed."""
    if keep_last is None:
        return []
    found = list_checkpoints(out)
    removed = []
    for _, p in found[: max(0, len(found) - keep_last)]:
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def clean_partial(out: str | Path) -> None:
    """Remove temporary directories a killed save left behind."""
    root = Path(out)
    if root.is_dir():
        for p in root.glob(".checkpoint-*.tmp"):
            shutil.rmtree(p, ignore_errors=True)


__all__ = [
    "STATE_FILE",
    "checkpoint_dir",
    "clean_partial",
    "latest_checkpoint",
    "list_checkpoints",
    "load_state",
    "prune_checkpoints",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]
