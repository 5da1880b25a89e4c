"""Token counting for the data generators: a named tokenizer, or a documented estimate.

    counter = make_token_counter(None)                 # words x WORDS_TO_TOKENS
    counter = make_token_counter("path/to/hf-tokenizer-dir")
    counter = make_token_counter("model.gguf")         # vocabulary of a GGUF file
    counter = make_token_counter("smollm2")            # the built-in SmolLM2-135M GGUF
    counter.count("some text"), counter.name

The estimate multiplies whitespace-separated words by `WORDS_TO_TOKENS`. It was measured
on RevHop documents against the built-in SmolLM2-135M-Instruct tokenizer (see
`measure_ratio`, tested in tests/data): RevHop's invented names split into several
sub-word pieces, so the ratio is higher than the ~1.3 typical of plain English.
Counts are per paragraph and summed; a tokenizer run over the whole document can differ
by a token or so per paragraph boundary.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from rememr1.errors import InputError

# Measured: SmolLM2-135M tokens per whitespace word on whole RevHop documents (seed 0,
# 64K tokens, 2-4 hops) was 1.917-1.918 (1.866 per paragraph, the blank-line separators
# and "Document i:" headers add the rest). Plain English prose is nearer 1.3.
WORDS_TO_TOKENS = 1.92

BUILTIN_NAMES = ("smollm2", "builtin")


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...


class WordEstimate:
    """Tokens ~= ceil(words x ratio)."""

    def __init__(self, ratio: float = WORDS_TO_TOKENS):
        self.ratio = ratio
        self.name = f"estimate:words*{ratio:g}"

    def count(self, text: str) -> int:
        return math.ceil(len(text.split()) * self.ratio)


class EncodeCounter:
    """Counts with any object offering `encode(text) -> list[int]` (HF tokenizers, the
    backends' Tokenizer protocol). Special tokens are not added where that is an option."""

    def __init__(self, tok: Any, name: str):
        self.tok = tok
        self.name = name

    def count(self, text: str) -> int:
        try:
            return len(self.tok.encode(text, add_special_tokens=False))
        except TypeError:
            return len(self.tok.encode(text))


def make_token_counter(tokenizer: str | os.PathLike | Any | None) -> TokenCounter:
    """None -> word estimate; 'smollm2' -> the built-in model's tokenizer; a .gguf path or
    a local Hugging Face directory -> that tokenizer (loaded by the backends' own
    `load_tokenizer`); an object with `count` or `encode` -> used as is."""
    if tokenizer is None:
        return WordEstimate()
    if not isinstance(tokenizer, (str, os.PathLike)):
        if hasattr(tokenizer, "count") and hasattr(tokenizer, "name"):
            return tokenizer
        if hasattr(tokenizer, "encode"):
            return EncodeCounter(tokenizer, getattr(tokenizer, "name_or_path", type(tokenizer).__name__))
        raise InputError(f"--tokenizer: cannot count tokens with a {type(tokenizer).__name__}")
    tok, name = load_named_tokenizer(tokenizer)
    return EncodeCounter(tok, name)


def load_named_tokenizer(spec: str | os.PathLike | None) -> tuple[Any, str]:
    """(tokenizer, name) for a --tokenizer value: None or 'smollm2' -> the built-in model's
    (from its GGUF), else a .gguf file or a local Hugging Face directory."""
    from rememr1.backends.builtin import builtin_gguf_path
    from rememr1.backends.tokenization import load_tokenizer
    from rememr1.errors import BackendError

    spec = "smollm2" if spec is None else str(spec)
    builtin = spec.lower() in BUILTIN_NAMES
    try:
        path = builtin_gguf_path() if builtin else Path(spec)
        tok = load_tokenizer(path)
    except BackendError as e:
        raise InputError(f"--tokenizer: {e} (model hubs are not contacted; use 'smollm2' for the "
                         "built-in one)") from None
    return tok, "smollm2-135m-instruct" if builtin else Path(spec).name


def measure_ratio(texts: Iterable[str], counter: TokenCounter) -> float:
    """Tokens per whitespace word of `texts` under `counter` (how WORDS_TO_TOKENS was set)."""
    words = tokens = 0
    for t in texts:
        words += len(t.split())
        tokens += counter.count(t)
    return tokens / max(1, words)
