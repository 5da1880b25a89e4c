"""The Hugging Face transformers backend: the model runs in-process (CPU or CUDA).

    backend = HFBackend(None)                  # built-in model (converted once, cached)
    backend = HFBackend("path/to/hf_model_dir", dtype="bfloat16", device="cuda")
    backend = HFBackend("model.gguf")          # transformers de-quantises the GGUF
    backend = HFBackend.from_objects(policy, tokenizer, name="policy")   # RL training

Requests are grouped into sub-batches of at most `max_batch_size` (sorted by prompt length
to limit padding), LEFT-padded, and generated with one `model.generate` call each. Each
Generation carries its prompt and completion token ids (the RL trainer needs them).
Requests the engine submits one episode at a time are batched dynamically: whatever
requests wait when the model is free go into one call (`base.DynamicBatcher`), so episodes
at different steps share a forward pass.

Sampling: greedy when temperature <= 0. Otherwise each row is sampled by a logits
processor with its OWN torch.Generator seeded from ChatRequest.seed (else
SamplingParams.seed, else a draw from torch's global RNG), after temperature and top-p.
So a seeded request samples the same tokens whatever batch it is in; what can still differ
is float rounding from padding and batch shape, which can flip a near-tie (rare; exact on
CPU float32 in our tests). Requests sharing one seed and prompt get identical samples, as
in vLLM: give each sample its own seed to draw several.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rememr1.backends.base import FINISH_LENGTH, FINISH_STOP, Backend, ChatRequest, Generation, SamplingParams
from rememr1.backends.adapters import resolve_adapter
from rememr1.backends.builtin import BUILTIN_MODEL_NAME
from rememr1.backends.loading import quiet_loading
from rememr1.backends.tokenization import HFTokenizer
from rememr1.errors import BackendError, InputError

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")


# oneDNN, behind torch's bfloat16 kernels on CPU, keeps two caches keyed by tensor shape
# (its primitive cache and ideep's, 1024 entries each by default). Every new sequence
# length adds entries of several MB, so an RL run (new shapes every step) grew by about
# 0.25 GB per step with the built-in model. 32 entries hold all the shapes of one forward
# and backward pass at no measured cost in speed (bench/train_memory.py --growth). Read by
# oneDNN at its first use in the process, so this must run before any bfloat16 matmul; a
# value the user exported wins.
ONEDNN_CACHE_ENTRIES = 32
ONEDNN_CACHE_VARS = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def bound_onednn_caches(entries: int = ONEDNN_CACHE_ENTRIES) -> None:
    """Cap oneDNN's shape-keyed caches at `entries` each (unless set in the environment)."""
    for var in ONEDNN_CACHE_VARS:
        os.environ.setdefault(var, str(entries))


def _import_torch():
    bound_onednn_caches()
    try:
        import torch
        import transformers  # noqa: F401 - checked here so the message names the extra
    except ImportError as exc:
        raise BackendError(
            f"the hf backend needs torch and transformers ({exc.name} is missing): "
            "pip install 'rememr1[hf]'"
        ) from exc
    return torch


def resolve_device(device: str) -> str:
    torch = _import_torch()
    if device not in DEVICES and not device.startswith("cuda:"):
        raise InputError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError("device cuda was requested but torch sees no CUDA GPU")
    return device


def resolve_dtype(dtype: str, device: str):
    """The torch dtype for a dtype option: auto = bf16 on a CUDA GPU that supports it,
    else float32 (half precision on CPU is slow and lossy)."""
    torch = _import_torch()
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


def load_pretrained(model: str | os.PathLike | None, torch_dtype, *,
                    adapter: str | os.PathLike | None = None) -> tuple[Any, Any, str]:
    """(model, tokenizer, name) from a model directory, a .gguf file, a PEFT adapter
    directory (its base loaded, the adapter merged in) or None (the built-in model);
    `adapter`: an adapter directory to merge on top."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rememr1.backends.adapters import adapter_root, apply_adapter, is_adapter_dir

    if model is not None and is_adapter_dir(Path(model).expanduser()):
        path = Path(model).expanduser()
        hf_model, tokenizer, _ = load_pretrained(adapter_root(path), torch_dtype, adapter=path)
        if adapter is not None:  # a further adapter on top
            hf_model = apply_adapter(hf_model, adapter)
        return hf_model, tokenizer, path.name
    if adapter is not None:
        hf_model, tokenizer, name = load_pretrained(model, torch_dtype)
        return apply_adapter(hf_model, adapter), tokenizer, name
    if model is None:
        from rememr1.backends.builtin import builtin_hf_dir

        folder, kwargs, name = builtin_hf_dir(), {}, BUILTIN_MODEL_NAME
    else:
        path = Path(model).expanduser()
        if not path.exists():
            raise BackendError(
                f"model not found: {path} (the hf backend needs a local model directory or .gguf file)"
            )
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise BackendError(f"the hf backend needs a model directory or a .gguf file, got {path}")
            folder, kwargs, name = path.parent, {"gguf_file": path.name}, path.stem
        else:
            if not (path / "config.json").is_file():
                raise BackendError(f"{path} is not a Hugging Face model directory (no config.json)")
            folder, kwargs, name = path, {}, path.name
    try:
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **kwargs)
            hf_model = AutoModelForCausalLM.from_pretrained(
                str(folder), local_files_only=True, dtype=torch_dtype, **kwargs
            )
    except (OSError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BackendError(f"cannot load the model in {folder}: {first}") from exc
    return hf_model, tokenizer, name


class HFBackend(Backend):
    """Chat generation with a transformers causal LM (None = built-in model)."""

    name = "hf"
    batching = True  # concurrent episodes share generate() calls (base.DynamicBatcher)

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        dtype: str = "auto",
        device: str = "auto",
        max_batch_size: int = 8,
        context_window: int | None = None,
        adapter: bool | str | os.PathLike | None = True,
    ):
        """`adapter`: True merges the built-in model's packaged LoRA adapter (into the
        built-in model only), False none, a path that PEFT adapter directory."""
        device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        lora = resolve_adapter(adapter, model, for_gguf=False)
        hf_model, tokenizer, name = load_pretrained(model, torch_dtype, adapter=lora)
        if lora is not None:
            name += "+lora"
        hf_model.to(device)
        hf_model.eval()
        self._setup(hf_model, tokenizer, name=name, max_batch_size=max_batch_size,
                    context_window=context_window)

    @classmethod
    def from_objects(
        cls,
        model,
        tokenizer,
        *,
        name: str = "policy",
        max_batch_size: int = 8,
        context_window: int | None = None,
        autocast: bool = False,
    ) -> HFBackend:
        """Wrap an already-loaded model and tokenizer (e.g. the policy being trained).
        The model stays where it is (device, dtype); generation reads its current weights.
        `autocast`: generate under bfloat16 autocast (as the trainer's forward passes)."""
        _import_torch()
        self = cls.__new__(cls)
        self._setup(model, tokenizer, name=name, max_batch_size=max_batch_size,
                    context_window=context_window, autocast=autocast)
        return self

    def _setup(self, model, tokenizer, *, name: str, max_batch_size: int, context_window: int | None,
               autocast: bool = False):
        if max_batch_size < 1:
            raise InputError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if getattr(tokenizer, "chat_template", None) is None:
            raise BackendError(f"the tokenizer of {name} has no chat template; the hf backend needs one")
        self.model = model
        self.tokenizer_hf = tokenizer
        self.model_name = name
        self.max_batch_size = max_batch_size
        trained = getattr(model.config, "max_position_embeddings", None)
        self.context_window = int(context_window or trained or 4096)
        self._tokenizer = HFTokenizer(tokenizer)
        self._eos_ids = _eos_ids(model, tokenizer)
        self._pad_id = pad_token_id(model, tokenizer)
        self.autocast = autocast
        self._lock = threading.Lock()

    # -- Backend interface -------------------------------------------------------------

    @property
    def tokenizer(self) -> HFTokenizer:
        return self._tokenizer

    @property
    def device(self):
        return next(self.model.parameters()).device

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        """Token ids of the request after the chat template (with the assistant header)."""
        return chat_prompt_ids(self.tokenizer_hf, request.messages)

    def generate(self, requests: Sequence[ChatRequest], sampling: SamplingParams) -> list[Generation]:
        results: list[Generation | None] = [None] * len(requests)
        jobs: list[tuple[int, list[int], int, int | None]] = []  # index, prompt, cap, seed
        for i, req in enumerate(requests):
            plan = self.plan(req, sampling)
            if isinstance(plan, Generation):
                results[i] = plan
            else:
                jobs.append((i, list(plan.prompt_ids), plan.max_new, plan.seed))
        jobs.sort(key=lambda job: -len(job[1]))
        with self._lock:
            for at in range(0, len(jobs), self.max_batch_size):
                batch = jobs[at : at + self.max_batch_size]
                for (i, *_), gen in zip(batch, self._generate_batch(batch, sampling), strict=True):
                    results[i] = gen
        return results  # type: ignore[return-value]

    # -- internals ---------------------------------------------------------------------

    def _generate_batch(self, batch, sampling: SamplingParams) -> list[Generation]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        start = time.perf_counter()
        device = self.device
        width = max(len(ids) for _, ids, _, _ in batch)
        input_ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (_, ids, _, _) in enumerate(batch):
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids):] = 1
        max_new = max(cap for _, _, cap, _ in batch)
        config = GenerationConfig(
            max_new_tokens=max_new,
            do_sample=False,  # sampling, when wanted, is done by SeededSampler below
            eos_token_id=sorted(self._eos_ids),
            pad_token_id=self._pad_id,
            use_cache=True,
            stop_strings=list(sampling.stop) or None,
        )
        processors = LogitsProcessorList()
        if not sampling.greedy:
            seeds = [seed if seed is not None else int(torch.randint(0, 2**62, (1,)).item())
                     for *_, seed in batch]
            processors.append(SeededSampler(seeds, sampling.temperature, sampling.top_p))
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                                        enabled=self.autocast):
                out = self.model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    generation_config=config,
                    logits_processor=processors,
                    tokenizer=self.tokenizer_hf if sampling.stop else None,
                )
        finally:
            if was_training:
                self.model.train()
        new_tokens = out[:, width:].tolist()
        seconds = time.perf_counter() - start  # the sub-batch's latency, for every row
        gens = []
        for (_, ids, cap, _), row in zip(batch, new_tokens, strict=True):
            completion, finish = self._cut_completion(row[:cap], sampling.stop)
            text = self.tokenizer_hf.decode(completion, skip_special_tokens=True)
            for stop in sampling.stop:
                if stop in text:
                    text = text[: text.index(stop)]
            gens.append(Generation(
                text=text, finish_reason=finish, prompt_tokens=len(ids),
                completion_tokens=len(completion), seconds=seconds,
                prompt_ids=tuple(ids), completion_ids=tuple(completion),
            ))
        return gens

    def _cut_completion(self, row: list[int], stops: Sequence[str]) -> tuple[list[int], str]:
        """The generated ids up to and including the first EOS (finish "stop"), or up to
        the token that completes the first stop string, else all of them ("length")."""
        end = next((k + 1 for k, tok in enumerate(row) if tok in self._eos_ids), None)
        finish = FINISH_STOP if end is not None else FINISH_LENGTH
        row = row[:end] if end is not None else row
        if stops:
            decode = self.tokenizer_hf.decode

            def has_stop(n: int) -> bool:
                text = decode(row[:n], skip_special_tokens=True)
                return any(s in text for s in stops)

            if has_stop(len(row)):  # shortest prefix that contains a stop string
                lo, hi = 1, len(row)
                while lo < hi:
                    mid = (lo + hi) // 2
                    if has_stop(mid):
                        hi = mid
                    else:
                        lo = mid + 1
                return row[:lo], FINISH_STOP
        return row, finish


def chat_prompt_ids(tokenizer, messages) -> list[int]:
    """Token ids of `messages` through the HF tokenizer's chat template, ending with the
    assistant header: the prompt of a generation (and of a supervised example)."""
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def pad_token_id(model, tokenizer) -> int:
    """The id that pads batches of this model (generation and training alike): the
    tokenizer's pad token, else the smallest end-of-sequence id. Padding is masked out, so
    the choice only has to be a valid id."""
    pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else min(_eos_ids(model, tokenizer))


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (gen_eos, getattr(model.config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(int(v) for v in value)
    if not ids:
        raise BackendError("the model defines no end-of-sequence token; cannot tell when a reply ends")
    return ids


class SeededSampler:
    """A logits processor that samples each row with its own generator (temperature, then
    top-p) and returns logits allowing only the sampled token, so greedy decoding picks it.
    (transformers accepts any callable(input_ids, scores) as a logits processor.)"""

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        self.seeds = seeds
        self.temperature = temperature
        self.top_p = top_p
        self.generators: list[Any] | None = None

    def __call__(self, input_ids, scores):
        import torch

        if self.generators is None:  # created on the device the logits live on
            self.generators = [torch.Generator(device=scores.device).manual_seed(s % 2**63)
                               for s in self.seeds]
        logits = scores.float() / self.temperature
        if self.top_p < 1.0:
            logits = top_p_filter(logits, self.top_p)
        probs = torch.softmax(logits, dim=-1)
        picks = torch.cat([torch.multinomial(probs[r], 1, generator=g)
                           for r, g in enumerate(self.generators)])
        forced = torch.full_like(scores, float("-inf"))
        forced[torch.arange(scores.shape[0], device=scores.device), picks] = 0.0
        return forced


def top_p_filter(logits, top_p: float):
    """Nucleus filter: keep the most likely tokens whose probabilities sum to top_p (the
    token that crosses top_p is kept, so at least one survives); the rest become -inf."""
    import torch

    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
