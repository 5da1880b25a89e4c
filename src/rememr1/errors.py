"""The error policy: every user mistake or environment problem is a `RememrError`.

The CLI catches these and prints their message as one line (exit code 2 for bad input,
1 for a failing model/server); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RememrError(Exception):
    """Base class for errors that are reported to the user as one line."""

    exit_code = 1


class InputError(RememrError):
    """Bad user input: missing/unreadable file, empty document or question, bad option."""

    exit_code = 2


class BackendError(RememrError):
    """A model backend failed: unknown model path, server down, timeout, bad reply."""

    exit_code = 1


class BackendTimeout(BackendError):
    """A model server did not answer in time (`rememr1 serve` answers 504, not 502)."""


def require(ok: bool, field: str, message: str) -> None:
    """Validation of a config object: raise ValueError("field: message") unless `ok`.
    Loaders turn it into an InputError naming the section (`rollout.group_size: ...`)."""
    if not ok:
        raise ValueError(f"{field}: {message}")


def require_choice(value: str, choices: tuple[str, ...] | list[str], field: str) -> None:
    require(value in choices, field, f"unknown value {value!r}; choose one of: {', '.join(choices)}")
