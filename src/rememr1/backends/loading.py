"""Loading model files quietly, for every backend and the tokenizer loader.

    llm = load_llama(path, n_ctx=4096)      # llama.cpp, its native log routed into Python logging
    vocab = load_vocab(path)                # vocabulary-only llama.cpp instance (tokenizer, metadata)
    with quiet_loading(): AutoModelForCausalLM.from_pretrained(...)   # no transformers progress bars

Kept apart from the backends so that the tokenizer loader, the built-in model's converter
and the backends can all import it without importing each other.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rememr1.errors import BackendError

# llama.cpp writes its loader chatter to stderr. Route it into Python logging (debug
# level) instead, and keep the last lines so a failed load can say why.
_recent_native_log: deque[str] = deque(maxlen=40)
_log_callback: Any = None
_log_lock = threading.Lock()


def _route_native_logs() -> None:
    global _log_callback
    with _log_lock:
        if _log_callback is not None:
            return
        import llama_cpp

        native = logging.getLogger("rememr1.llama_cpp")

        @llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            line = text.decode("utf-8", errors="replace").rstrip()
            if line:
                _recent_native_log.append(line)
                native.debug("%s", line)

        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
        _log_callback = callback  # keep a reference: llama.cpp holds a raw pointer


def _native_error_hint() -> str:
    """The first error-like line llama.cpp logged (the root cause; later lines echo it)."""
    for line in _recent_native_log:
        low = line.lower()
        if "error" in low or "failed" in low or "unknown" in low or "invalid" in low:
            return line.split(":", 1)[-1].strip() if ":" in line else line
    return ""


def load_llama(path: Path, **kwargs):
    """A llama.cpp `Llama` for `path`; a failed load is a BackendError naming llama.cpp's reason."""
    _route_native_logs()
    from llama_cpp import Llama

    _recent_native_log.clear()
    try:
        return Llama(str(path), verbose=False, **kwargs)
    except (ValueError, RuntimeError, OSError) as exc:
        hint = _native_error_hint() or str(exc).splitlines()[0]
        raise BackendError(f"llama.cpp cannot load {path}: {hint}") from exc


def load_vocab(path: str | os.PathLike):
    """A vocabulary-only `Llama` (tokenizer and metadata, no weights): fast and small."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BackendError(f"model file not found: {path}")
    return load_llama(path, vocab_only=True, n_ctx=16)


@contextmanager
def quiet_loading():
    """Hide transformers' per-load progress bars (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


__all__ = ["load_llama", "load_vocab", "quiet_loading"]
