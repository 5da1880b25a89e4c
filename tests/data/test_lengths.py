"""Lengths in tokens: '4k' and 4096 read the same, and format_length writes them back."""

from __future__ import annotations

import pytest

from rememr1.data.lengths import format_length, parse_length
from rememr1.errors import InputError


def test_parse_length():
    assert parse_length("4k") == 4096
    assert parse_length("16K") == 16384
    assert parse_length("1m") == 1048576
    assert parse_length("1.5m") == 1572864
    assert parse_length("5000") == 5000
    assert parse_length(300) == 300
    for bad in ("", "4g", "k", "-3", "0"):
        with pytest.raises(InputError):
            parse_length(bad)
    assert format_length(4096) == "4k" and format_length(1048576) == "1m" and format_length(5000) == "5000"


def test_old_import_paths_still_work():
    from rememr1.data import parse_length as from_data
    from rememr1.data.revhop import format_length as from_revhop

    assert from_data is parse_length and from_revhop is format_length
