"""Tokenizer adapters: the `Tokenizer` protocol (encode/decode) over llama.cpp and
Hugging Face tokenizers, and `load_tokenizer(path)` for the openai backend.

The chunker encodes whole documents and decodes slices of the ids. A slice boundary can
fall inside a multi-byte UTF-8 character (byte-level BPE splits rare characters such as
emoji or CJK into several byte tokens). Both adapters then drop the partial character at
the slice edge instead of emitting U+FFFD: decoding the full id list is always exact, a
slice loses at most the one split character at each cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rememr1.errors import BackendError

if TYPE_CHECKING:
    from rememr1.backends.base import Tokenizer


def decode_utf8_slice(data: bytes) -> str:
    """Decode bytes cut out of a longer UTF-8 text.

    Continuation bytes at the start (the tail of a character that began before the cut)
    and an incomplete character at the end are dropped; anything else that is invalid
    becomes U+FFFD.
    """
    start = 0
    # At most 3 continuation bytes (10xxxxxx) can belong to a character cut at the front.
    while start < min(3, len(data)) and (data[start] & 0xC0) == 0x80:
        start += 1
    end = len(data)
    # Look back at most 3 bytes for a lead byte whose character is incomplete.
    for back in range(1, min(4, end - start) + 1):
        byte = data[end - back]
        if (byte & 0xC0) == 0x80:
            continue  # continuation byte: keep looking for its lead byte
        if byte >= 0xF0:
            need = 4
        elif byte >= 0xE0:
            need = 3
        elif byte >= 0xC0:
            need = 2
        else:
            need = 1
        if back < need:
            end -= back
        break
    return data[start:end].decode("utf-8", errors="replace")


def token_pieces(tokenizer: Tokenizer, text: str) -> list[str]:
    """The tokenizer's pieces of `text` as vocabulary strings ("\u0120hello" for " hello" in
    a byte-level BPE), where the tokenizer can say; else each token decoded on its own."""
    pieces = getattr(tokenizer, "pieces", None)
    if pieces is not None:
        return pieces(text)
    return [tokenizer.decode([i]) for i in tokenizer.encode(text)]


class LlamaTokenizer:
    """Tokenizer of a llama.cpp model (no BOS is added; special-token text stays text)."""

    def __init__(self, llama):
        self._llama = llama

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        return list(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def decode(self, ids: Sequence[int]) -> str:
        if len(ids) == 0:
            return ""
        return decode_utf8_slice(self._llama.detokenize(list(ids)))

    def pieces(self, text: str) -> list[str]:
        """Vocabulary strings of the tokens of `text` (what HF's `tokenize` gives)."""
        model = self._llama._model
        return [model.token_get_text(i) for i in self.encode(text)]


class HFTokenizer:
    """A Hugging Face tokenizer as the chunker needs it (no special tokens added)."""

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self._byte_decoder = _hf_byte_decoder(tokenizer)
        self._special = set(tokenizer.all_special_ids)

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        return list(self._tok.encode(text, add_special_tokens=False))

    def pieces(self, text: str) -> list[str]:
        """Vocabulary strings of the tokens of `text` (HF's `tokenize`)."""
        return list(self._tok.tokenize(text)) if text else []

    def decode(self, ids: Sequence[int]) -> str:
        if len(ids) == 0:
            return ""
        ids = [int(i) for i in ids]
        # Byte-level BPE tokenizers can map token ids back to their raw bytes; decode those
        # with the same edge handling as llama.cpp. Other tokenizers decode directly.
        if self._byte_decoder is not None:
            pieces = self._tok.convert_ids_to_tokens(ids)
            try:
                data = b"".join(
                    piece.encode("utf-8") if i in self._special
                    else bytes(self._byte_decoder[ch] for ch in piece)
                    for i, piece in zip(ids, pieces, strict=True)
                )
            except (KeyError, TypeError, AttributeError):  # a token outside the byte alphabet
                pass
            else:
                return decode_utf8_slice(data)
        return self._tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _hf_byte_decoder(tokenizer) -> dict[str, int] | None:
    """The GPT-2 byte<->unicode table if `tokenizer` is a byte-level BPE, else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    byte_level = type(decoder).__name__ == "ByteLevel"
    return {ch: b for b, ch in _bytes_to_unicode().items()} if byte_level else None


def _bytes_to_unicode() -> dict[int, str]:
    """The fixed byte->printable-character table of byte-level BPE (GPT-2 and successors)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer from a local .gguf file (llama.cpp, vocabulary only) or HF directory."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        from rememr1.backends.loading import load_vocab

        return LlamaTokenizer(load_vocab(path))
    if path.is_dir():
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise BackendError(
                f"loading the tokenizer in {path} needs transformers: pip install 'rememr1[hf]'"
            ) from exc
        try:
            return HFTokenizer(AutoTokenizer.from_pretrained(str(path), local_files_only=True))
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load a tokenizer from {path}: {_first_line(exc)}") from exc
    raise BackendError(f"tokenizer not found: {path} (give a .gguf file or a Hugging Face model directory)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
