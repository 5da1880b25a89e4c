"""Model backends and the one function that picks one: `load_backend`.

    from rememr1.backends import load_backend
    backend = load_backend("llamacpp")                     # built-in SmolLM2-135M-Instruct
    backend = load_backend("hf", model="path/to/hf_dir")   # transformers, in-process
    backend = load_backend("openai", base_url="http://127.0.0.1:8000/v1")  # any server

Heavy libraries (torch, transformers, llama_cpp, openai) are imported only inside the
backend modules, which are imported here only when a backend is built, so
`import rememr1` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from rememr1.backends.base import Backend
from rememr1.errors import InputError
from rememr1.options import option

BACKENDS: tuple[str, ...] = ("llamacpp", "hf", "openai")
DEFAULT_CONCURRENCY = {"llamacpp": 1, "hf": 8, "openai": 8}


def load_backend(
    name: str = "llamacpp",
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    tokenizer: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    concurrency: int | None = None,
    timeout: float = 600,
    max_retries: int = 3,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    adapter: bool | str | None = True,
) -> Backend:
    """Build a backend by name.

    `model=None` means the built-in model (SmolLM2-135M-Instruct) for llamacpp and hf, and
    the server's first listed model for openai. `concurrency` is how many requests run at
    once: sequences decoded together in one llama.cpp context for llamacpp, the `generate()` sub-batch size for hf,
    in-flight HTTP requests for openai; None picks the backend's default (1 llama.cpp
    instance with all threads, 8 sequences per hf batch, 8 HTTP requests). `n_ctx` is the context window: allocated by
    llamacpp, and used as the prompt+completion limit by hf and openai. `adapter` (llamacpp,
    hf): True = the built-in model's packaged LoRA adapter when `model` is None, False =
    none, a path = that adapter (`backends.adapters`).
    """
    key = (name or "").strip().lower()
    if key not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    if concurrency is None:
        concurrency = DEFAULT_CONCURRENCY[key]
    if concurrency < 1:
        raise InputError(f"concurrency must be >= 1, got {concurrency}")
    if n_ctx is not None and n_ctx < 16:
        raise InputError(f"n_ctx must be >= 16 tokens, got {n_ctx}")
    if key != "openai":
        for option, value in (("base_url", base_url), ("api_key", api_key), ("tokenizer", tokenizer)):
            if value is not None:
                raise InputError(f"option {option} only applies to the openai backend, not {key}")
    elif adapter not in (True, False, None):
        raise InputError("--adapter applies to the llamacpp and hf backends; a server loads its own")
    if key == "llamacpp":
        from rememr1.backends.llamacpp import LlamaCppBackend

        # More than one request at a time: decoded together in one context (much faster on
        # a CPU than one instance per request, `backends.llamacpp_parallel`).
        return LlamaCppBackend(model, n_ctx=n_ctx, n_threads=n_threads, parallel=concurrency,
                               adapter=adapter)
    if key == "hf":
        from rememr1.backends.hf import HFBackend

        return HFBackend(model, dtype=dtype, device=device, max_batch_size=concurrency,
                         context_window=n_ctx, adapter=adapter)
    from rememr1.backends.openai_compat import OpenAIBackend

    return OpenAIBackend(model, base_url=base_url, api_key=api_key, concurrency=concurrency,
                         timeout=timeout, max_retries=max_retries, tokenizer=tokenizer,
                         context_window=n_ctx)


@dataclass(frozen=True, kw_only=True)
class BackendOptions:
    """Which model answers and how it is reached: what `load_backend` takes from a user,
    declared once for `ask`, `eval` and `serve`. `load()` builds the backend."""

    backend: str = option("llamacpp", "llamacpp | hf | openai", flag="--backend", short="-b")
    model: str | None = option(
        None, "GGUF file (llamacpp), HF directory or .gguf (hf), or the server's model name (openai). "
        "Default: the built-in SmolLM2-135M-Instruct.", flag="--model", short="-m")
    base_url: str | None = option(None, "OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1",
                                  flag="--base-url")
    api_key: str | None = option(None, "API key for --backend openai (default $OPENAI_API_KEY)",
                                 flag="--api-key")
    dtype: str = option("auto", "hf: auto | float32 | bfloat16 | float16", flag="--dtype")
    device: str = option("auto", "hf: auto | cpu | cuda", flag="--device")
    concurrency: int | None = option(
        None, "requests in flight at once (default: 1 for llamacpp, where more are decoded together in "
        "one context; 8 hf sequences per batch; 8 HTTP requests)", flag="--concurrency")
    timeout: float = option(600.0, "seconds per request (openai)", flag="--timeout")
    tokenizer: str | None = option(None, "openai: local tokenizer (HF dir or .gguf) used for chunking",
                                   flag="--tokenizer")
    adapter: str | None = option(
        None, "LoRA adapter to apply: a PEFT directory (`rememr1 sft` checkpoint; llamacpp converts it to "
        "GGUF once) or a GGUF LoRA file (llamacpp). Default: the built-in model's packaged adapter.",
        flag="--adapter")
    no_adapter: bool = option(False, "the built-in model without its packaged adapter", flag="--no-adapter")

    def __post_init__(self) -> None:
        if self.adapter is not None and self.no_adapter:
            raise InputError("give --adapter PATH or --no-adapter, not both")

    def load(self) -> Backend:
        return load_backend(
            self.backend, model=self.model, base_url=self.base_url, api_key=self.api_key,
            dtype=self.dtype, device=self.device, concurrency=self.concurrency, timeout=self.timeout,
            tokenizer=self.tokenizer, adapter=False if self.no_adapter else (self.adapter or True),
        )


__all__ = ["BACKENDS", "Backend", "BackendOptions", "load_backend"]
