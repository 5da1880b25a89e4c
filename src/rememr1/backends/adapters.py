"""LoRA adapters: the one the built-in model ships with, and PEFT adapter directories
(`rememr1 sft` checkpoints) given wherever a model directory is.

    model = apply_adapter(model, "runs/sft/checkpoint-120")   # merged: plain weights, full speed
    builtin_adapter_dir()      # the packaged warm-start adapter of SmolLM2-135M
    gguf_adapter(adapter_dir, base_gguf)   # the same as a GGUF LoRA for llama.cpp (cached)

An adapter directory holds `adapter_config.json` whose `base_model_name_or_path` names
its base: a local model directory, or the built-in model's hub name
(`HuggingFaceTB/SmolLM2-135M-Instruct`), which resolves to the built-in model without any
download. Adapters are merged into the weights on load, so generation costs the same as
the base model's.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import BackendError

ADAPTER_CONFIG = "adapter_config.json"
BUILTIN_BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUILTIN_ADAPTER = Path(__file__).resolve().parent.parent / "adapters" / "smollm2-135m-revhop"


def is_adapter_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / ADAPTER_CONFIG).is_file() and not (p / "config.json").is_file()


def base_name_for(source: str | Path) -> str:
    """What an adapter trained on `source` records as its base (the hub name for the
    built-in model, so the adapter works on any machine that has it)."""
    from .builtin import builtin_hf_dir

    if Path(source).resolve() == builtin_hf_dir().resolve():
        return BUILTIN_BASE
    return str(Path(source).resolve())


def adapter_base(path: str | Path) -> str | None:
    """The base model directory of an adapter (None: the built-in model)."""
    cfg_path = Path(path) / ADAPTER_CONFIG
    try:
        base = json.loads(cfg_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {cfg_path}: {exc}") from None
    if base in (None, "", BUILTIN_BASE):
        return None
    if not Path(base).is_dir():
        raise BackendError(f"the base model of adapter {path} is not here: {base} "
                           "(edit base_model_name_or_path in its adapter_config.json)")
    return base


def adapter_chain(path: str | Path) -> list[Path]:
    """The adapters to merge for `path`, innermost first: `path` alone, or, when its
    recorded base is itself an adapter directory (trained over another adapter), that
    one's chain followed by `path`."""
    chain = [Path(path)]
    while (base := adapter_base(chain[0])) is not None and is_adapter_dir(base):
        if Path(base).resolve() in {p.resolve() for p in chain}:
            raise BackendError(f"the bases recorded by adapter {path} and those under it form a loop")
        chain.insert(0, Path(base))
    return chain


def lora_start(source: str | Path | None) -> tuple[str | None, str | None]:
    """(model to load, adapter to keep training) for a LoRA run from `source`: an adapter
    directory is continued over its base (None: the built-in model); anything else is
    the base of a fresh adapter. `rememr1 sft` and RL's `--lora` both start this way."""
    if source is not None and is_adapter_dir(source):
        return adapter_base(source), str(source)
    return (None if source is None else str(source)), None


def adapter_root(path: str | Path) -> str | None:
    """The model directory under an adapter's chain (None: the built-in model)."""
    return adapter_base(adapter_chain(path)[0])


def apply_adapter(model, path: str | Path):
    """`model` with the PEFT adapter in `path` merged into its weights (after the adapters
    it was trained over, if its base is another adapter: `adapter_chain`)."""
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise BackendError("loading a LoRA adapter needs peft: pip install 'rememr1[hf]'") from exc
    import warnings

    for one in adapter_chain(path):  # each merged once, innermost first
        try:
            with warnings.catch_warnings():  # transformers' deprecation notes from inside peft
                warnings.simplefilter("ignore", FutureWarning)
                model = PeftModel.from_pretrained(model, str(one)).merge_and_unload()
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BackendError(f"cannot apply the adapter in {one}: {first}") from exc
    return model.requires_grad_(True)  # peft froze the base: trainable again, as loaded models are


def builtin_adapter_dir() -> Path | None:
    """The packaged adapter of the built-in model, or None when this install lacks it."""
    return BUILTIN_ADAPTER if (BUILTIN_ADAPTER / ADAPTER_CONFIG).is_file() else None



def gguf_adapter(adapter_dir: str | Path, base_gguf: str | Path) -> Path:
    """The GGUF LoRA form of a PEFT adapter for llama.cpp, converted once into the cache
    (keyed by the adapter's weights and the base file's name)."""
    import hashlib

    from .builtin import cache_dir
    from .gguf_lora import write_gguf_lora

    weights = Path(adapter_dir) / "adapter_model.safetensors"
    try:
        digest = hashlib.sha256(weights.read_bytes() + Path(base_gguf).name.encode()).hexdigest()[:16]
    except OSError as exc:
        raise BackendError(f"cannot read the adapter in {adapter_dir}: {exc}") from None
    out = cache_dir() / "adapters" / f"{digest}.gguf"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        write_gguf_lora(adapter_dir, out, base_gguf=base_gguf)
    return out


def resolve_adapter(adapter: bool | str | Path | None, model: str | Path | None, *,
                    for_gguf: bool, base_gguf: str | Path | None = None) -> Path | None:
    """What a backend applies: `adapter=True` means the packaged one for the built-in model
    (`model` None) and nothing for any other model; False/None nothing; a path that
    adapter (a PEFT directory; for llama.cpp also a GGUF LoRA file, a directory being
    converted for `base_gguf`)."""
    if adapter is None or adapter is False:
        return None
    if adapter is True:
        if model is not None or builtin_adapter_dir() is None:
            return None
        path = builtin_adapter_dir()
    else:
        path = Path(adapter).expanduser()
        if not path.exists():
            raise BackendError(f"adapter not found: {path}")
    if for_gguf and path.is_dir():
        if (path / ADAPTER_CONFIG).is_file() and len(chain := adapter_chain(path)) > 1:
            raise BackendError(f"{path} was trained over the adapter {chain[-2]}; llama.cpp applies one "
                               "adapter: use --backend hf, or train one adapter by continuing the first "
                               "(rememr1 sft --model ADAPTER_DIR)")
        if base_gguf is None:
            from .builtin import builtin_gguf_path

            base_gguf = builtin_gguf_path()
        return gguf_adapter(path, base_gguf)
    if not for_gguf and not (path / ADAPTER_CONFIG).is_file():
        raise BackendError(f"{path} is not a PEFT adapter directory (no {ADAPTER_CONFIG})")
    return path


def pack_adapter(src: str | Path, dst: str | Path = BUILTIN_ADAPTER) -> Path:
    """Copy the adapter of an `rememr1 sft` checkpoint into `dst` as the package ships it:
    the config (base named by its hub name) and float16 weights. A model card
    (README.md) already in `dst` is kept. `make builtin-adapter` ends with this."""
    from safetensors.torch import load_file, save_file

    src, dst = Path(src), Path(dst)
    cfg = json.loads((src / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    if isinstance(cfg.get("target_modules"), list):  # peft writes a set: same adapter, any order
        cfg["target_modules"] = sorted(cfg["target_modules"])
    weights = {k: v.half().contiguous() for k, v in load_file(str(src / "adapter_model.safetensors")).items()}
    dst.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(dst / "adapter_model.safetensors"), metadata={"format": "pt"})
    (dst / "adapter_model.safetensors").chmod(0o644)
    (dst / ADAPTER_CONFIG).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    return dst


__all__ = ["ADAPTER_CONFIG", "BUILTIN_BASE", "adapter_base", "adapter_chain", "adapter_root", "apply_adapter",
           "base_name_for", "builtin_adapter_dir", "gguf_adapter", "is_adapter_dir", "lora_start",
           "pack_adapter", "resolve_adapter"]
