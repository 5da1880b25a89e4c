"""Small helpers shared by the backends: context clamping, finish-reason mapping, and
error generations (a failed request becomes a Generation, not an exception)."""

from __future__ import annotations

import time

from rememr1.backends.base import FINISH_ERROR, FINISH_LENGTH, FINISH_STOP, Generation


def clamp_max_new_tokens(prompt_tokens: int, max_new_tokens: int, context_window: int) -> int | None:
    """How many tokens may be generated: `max_new_tokens`, cut to what fits after the
    prompt; None when the prompt alone fills the window (nothing can be generated)."""
    room = context_window - prompt_tokens
    if room <= 0:
        return None
    return max(0, min(max_new_tokens, room))


def window_error(prompt_tokens: int, context_window: int) -> str:
    return (f"prompt has {prompt_tokens} tokens but the context window is {context_window}; "
            "shorten the prompt (smaller chunks) or use a larger context window")


def map_finish_reason(reason: str | None) -> str:
    """An OpenAI-style finish reason as ours: only a token cap means the text was cut;
    a content filter is an error; anything else (eos, stop string, tool call) is a stop."""
    if reason == "length":
        return FINISH_LENGTH
    if reason == "content_filter":
        return FINISH_ERROR
    return FINISH_STOP


def error_generation(message: str, start: float, *, prompt_tokens: int = 0) -> Generation:
    """The Generation of a request that failed on its own; `start` is its perf_counter()."""
    return Generation(text="", finish_reason=FINISH_ERROR, prompt_tokens=prompt_tokens,
                      completion_tokens=0, seconds=time.perf_counter() - start, error=message)
