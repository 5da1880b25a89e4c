"""Fixtures for the backend tests: free ports, and one throw-away cache directory per
test session so the built-in model's HF conversion runs once and never touches the
user's real cache."""

from __future__ import annotations

import os
import socket

import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def free_port():
    """Returns a function giving a TCP port nothing listens on (bound by us, then released)."""
    return _free_port


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """Point REMEMR1_CACHE at a temporary dir for the whole session; restore afterwards."""
    path = tmp_path_factory.mktemp("rememr1-cache")
    old = os.environ.get("REMEMR1_CACHE")
    os.environ["REMEMR1_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("REMEMR1_CACHE", None)
    else:
        os.environ["REMEMR1_CACHE"] = old
