"""Shared helpers for the RevHop tests: reading a context back into its document blocks,
and one sampled world/content pair for the validity-check tests."""

from __future__ import annotations

import re

import pytest

from rememr1.data.revhop.content import sample_content
from rememr1.data.revhop.world import World, build_world

DOC_RE = re.compile(r"(?:^|\n\n)Document (\d+):\n")


def blocks(text: str) -> list[str]:
    """The document blocks as the generator emits them (separator included from the 2nd)."""
    starts = [m.start() for m in DOC_RE.finditer(text)]
    return [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]


def title(block: str) -> str:
    return block.lstrip("\n").split("\n")[1]


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(0)


@pytest.fixture(scope="module")
def content(world):
    return sample_content(world, seed=0, hops=3, index=0)
