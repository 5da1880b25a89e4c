"""The llama.cpp backend: a local GGUF model through llama-cpp-python (the default).

    backend = LlamaCppBackend(None)            # the built-in SmolLM2-135M-Instruct
    backend = LlamaCppBackend("model.gguf", n_ctx=16384, parallel=8)   # 8 requests decoded together

Prompts are built by the GGUF's own chat template (the same Jinja template llama-cpp-python
would pick), so the prompt-token count used for clamping is exact.

Concurrency, two ways. `parallel=N` (what `load_backend` and `--concurrency N` use): up to
N requests decoded together in one context, continuous batching with shared prompt
prefixes evaluated once (`backends.llamacpp_parallel`; about 4x the tokens/s of the pool
on 2 cores with 32 requests). `concurrency=N`: a pool of up to N instances, one request
and one thread each (llama.cpp releases the GIL while it computes); the weights are
memory-mapped and shared, each instance has its own KV cache of `n_ctx` tokens, CPU
threads are split across the instances, and instances are created only when needed.

Token ids (`token_ids=True`, what RL rollouts need): requests are sampled token by token
from the templated prompt's ids, and each Generation carries its prompt and completion
ids (the completion ends with the end-of-generation token when the model stopped, as with
the hf backend). The sampler is the one chat completion uses, so the text is the same for
the same seed; stop strings are not supported on this path.

Reproducibility: every request is sampled with its own seed (ChatRequest.seed, else
SamplingParams.seed, else a random one). In the pool it runs on a freshly reset instance,
so its output does not depend on which instance ran it or what ran there before
(resetting gives up llama.cpp's KV prefix reuse between consecutive prompts). With
`parallel`, its logits can differ in the last bits with the batch it shared, so a seed
reproduces its sample up to that.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rememr1.backends.base import (
    FINISH_ERROR,
    Backend,
    ChatRequest,
    Generation,
    SamplingParams,
    error_generation,
    map_finish_reason,
)
from rememr1.backends.adapters import resolve_adapter
from rememr1.backends.builtin import BUILTIN_MODEL_NAME, builtin_gguf_path
from rememr1.backends.loading import load_llama, load_vocab
from rememr1.backends.tokenization import LlamaTokenizer
from rememr1.errors import BackendError, InputError

log = logging.getLogger(__name__)

# Default context cap: the model's trained context, but at most this many tokens, because
# every pool instance allocates a KV cache of n_ctx tokens.
MAX_DEFAULT_N_CTX = 32768

# ---------------------------------------------------------------------------------------


def resolve_model_path(model: str | os.PathLike | None) -> Path:
    """The GGUF file to load: the built-in model for None, else a readable local file."""
    if model is None:
        return builtin_gguf_path()
    path = Path(model).expanduser()
    if not path.exists():
        raise BackendError(f"model file not found: {path}")
    if path.is_dir():
        raise BackendError(f"the llamacpp backend needs a .gguf file, got a directory: {path}")
    if not os.access(path, os.R_OK):
        raise BackendError(f"model file is not readable: {path}")
    return path


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class LlamaCppBackend(Backend):
    """Chat generation with llama.cpp on a local GGUF model (None = built-in model)."""

    name = "llamacpp"

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        concurrency: int = 1,
        n_batch: int = 512,
        adapter: bool | str | os.PathLike | None = True,
        token_ids: bool = False,
        parallel: int = 1,
        seq_tokens: int | None = None,
    ):
        """`adapter`: True applies the built-in model's packaged LoRA adapter (to the
        built-in model only), False none, a path a GGUF LoRA file or a PEFT adapter
        directory (converted once, `backends.adapters`). `token_ids`: generate token by token
        and return the prompt and completion ids (see the module docstring). `parallel` > 1:
        decode up to that many requests together in one context instead of a pool of
        instances (`backends.llamacpp_parallel`), each with `seq_tokens` KV cells (its
        context window; default: the one an instance of the pool would have)."""
        if concurrency < 1:
            raise InputError(f"concurrency must be >= 1, got {concurrency}")
        if parallel < 1:
            raise InputError(f"parallel must be >= 1, got {parallel}")
        if n_threads is not None and n_threads < 1:
            raise InputError(f"n_threads must be >= 1, got {n_threads}")
        self.model_path = resolve_model_path(model)
        self.model_name = BUILTIN_MODEL_NAME if model is None else self.model_path.stem
        self.adapter = resolve_adapter(adapter, model, for_gguf=True, base_gguf=self.model_path)
        if self.adapter is not None:
            self.model_name += "+lora"

        from llama_cpp import llama_chat_format

        # The vocabulary-only instance serves the tokenizer and the metadata.
        self._vocab = load_vocab(self.model_path)
        self._tokenizer = _LockedLlamaTokenizer(self._vocab)
        meta = self._vocab.metadata
        arch = meta.get("general.architecture", "")
        self.trained_context = int(meta.get(f"{arch}.context_length", 0) or 0) or None
        if n_ctx is None:
            n_ctx = min(self.trained_context or 4096, MAX_DEFAULT_N_CTX)
        elif self.trained_context and n_ctx > self.trained_context:
            log.warning("n_ctx=%d exceeds the model's trained context (%d); quality may drop",
                        n_ctx, self.trained_context)
        self.context_window = int(n_ctx)

        template = meta.get("tokenizer.chat_template")
        if not template:
            log.warning("%s has no chat template; using ChatML", self.model_path.name)
            template = llama_chat_format.CHATML_CHAT_TEMPLATE
        eos_id, bos_id = self._vocab.token_eos(), self._vocab.token_bos()

        def token_text(token_id: int) -> str:
            if token_id < 0:
                return ""
            return self._vocab.detokenize([token_id], special=True).decode("utf-8", errors="replace")

        self._formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=token_text(eos_id),
            bos_token=token_text(bos_id),
            stop_token_ids=[eos_id],
        )
        self._chat_handler = self._formatter.to_chat_handler()

        self.token_ids = token_ids
        self.concurrency = concurrency
        total_threads = n_threads or _available_cpus()
        self.threads_per_instance = max(1, total_threads // concurrency)
        if concurrency > total_threads:
            # Measured on 2 cores: 4 instances were many times slower than 1, while 2
            # doubled throughput. More instances than threads only oversubscribes the CPU.
            log.warning("llamacpp: %d instances on %d CPU threads oversubscribe the CPU; "
                        "use --concurrency %d or less", concurrency, total_threads, total_threads)
        self._llama_kwargs = dict(
            n_ctx=self.context_window,
            n_batch=min(n_batch, self.context_window),
            n_threads=self.threads_per_instance,
            n_threads_batch=self.threads_per_instance,
            chat_handler=self._chat_handler,
        )
        if self.adapter is not None:
            self._llama_kwargs["lora_path"] = str(self.adapter)
        self._idle: list[Any] = []
        self._created = 0
        self._pool_cond = threading.Condition()
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="llamacpp")
        self._decoder = None
        if parallel > 1:
            from rememr1.backends.llamacpp_parallel import ParallelDecoder

            # The instance only holds the weights; the decoder makes its own context.
            self._holder = load_llama(self.model_path, n_ctx=64, n_threads=1)
            self._decoder = ParallelDecoder(
                self._holder, slots=parallel, n_threads=total_threads, n_batch=min(n_batch, 512),
                seq_tokens=seq_tokens or self.context_window,
                adapter=self.adapter)
            self.context_window = self._decoder.seq_tokens
            return
        # Load one instance now so a broken model fails at construction, not mid-run.
        self._idle.append(self._new_instance())

    # -- Backend interface -------------------------------------------------------------

    @property
    def tokenizer(self) -> LlamaTokenizer:
        return self._tokenizer

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        """Exact: the chat template is rendered and tokenized as generation will do."""
        result = self._formatter(messages=list(request.messages))
        return self._tokenizer.tokenize_prompt(result.prompt, add_bos=not result.added_special)

    def generate(self, requests: Sequence[ChatRequest], sampling: SamplingParams) -> list[Generation]:
        if self._decoder is not None:
            jobs = [self._submit_parallel(req, sampling) for req in requests]
            return [job if isinstance(job, Generation) else self._parallel_result(job, job[0].exception() or job[0].result())
                    for job in jobs]
        futures = [self._pool().submit(self._run_one, req, sampling) for req in requests]
        return [f.result() for f in futures]

    async def asubmit(self, request: ChatRequest, sampling: SamplingParams) -> Generation:
        """The request joins the pool's queue; a free instance's thread takes it (or, with
        `parallel`, the decoder's next batch)."""
        import asyncio

        if self._decoder is not None:
            job = self._submit_parallel(request, sampling)
            if isinstance(job, Generation):
                return job
            try:
                done = await asyncio.wrap_future(job[0])
            except BackendError as exc:
                done = exc
            return self._parallel_result(job, done)
        return await asyncio.wrap_future(self._pool().submit(self._run_one, request, sampling))

    def _submit_parallel(self, request: ChatRequest, sampling: SamplingParams):
        """(future, plan, prompt ids) of a request queued on the parallel decoder, or the
        Generation that answers it at once (nothing fits, or the decoder refused it)."""
        plan = self.plan(request, sampling)
        if isinstance(plan, Generation):
            return plan
        if sampling.stop:
            raise BackendError("stop strings are not supported with parallel decoding")
        prompt = list(plan.prompt_ids or self.prompt_ids(request))
        seed = plan.seed if plan.seed is not None else random.randrange(2**32 - 1)
        try:
            future = self._decoder.submit(prompt, max_new=plan.max_new, temperature=sampling.temperature,
                                          top_p=sampling.top_p, seed=seed)
        except BackendError as exc:
            return error_generation(str(exc), plan.start, prompt_tokens=plan.prompt_tokens)
        return future, plan, prompt

    def _parallel_result(self, job, done) -> Generation:
        """The Generation of a decoder job from its result (or the error that ended it)."""
        _, plan, prompt = job
        if isinstance(done, BaseException):
            return error_generation(str(done), plan.start, prompt_tokens=plan.prompt_tokens)
        completion, finish = done
        with self._tokenizer._lock:
            return _token_generation(self._vocab, prompt, completion, finish, start=plan.start,
                                     with_ids=self.token_ids)

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            raise BackendError("the llamacpp backend was closed")
        return self._executor

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
            _close_llama(self._holder)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        with self._pool_cond:
            for llm in self._idle:
                _close_llama(llm)
            self._idle.clear()
        _close_llama(self._vocab)

    # -- internals ---------------------------------------------------------------------

    def _new_instance(self):
        llm = load_llama(self.model_path, **self._llama_kwargs)
        self._created += 1
        return llm

    def _acquire(self):
        with self._pool_cond:
            while True:
                if self._idle:
                    return self._idle.pop()
                if self._created < self.concurrency:
                    self._created += 1  # reserve the slot; create outside the lock
                    break
                self._pool_cond.wait()
        try:
            llm = load_llama(self.model_path, **self._llama_kwargs)
        except BaseException:
            with self._pool_cond:
                self._created -= 1
                self._pool_cond.notify()
            raise
        return llm

    def _release(self, llm) -> None:
        with self._pool_cond:
            self._idle.append(llm)
            self._pool_cond.notify()

    def _run_one(self, request: ChatRequest, sampling: SamplingParams) -> Generation:
        plan = self.plan(request, sampling)
        if isinstance(plan, Generation):
            return plan
        start, prompt_tokens, max_new = plan.start, plan.prompt_tokens, plan.max_new
        seed = plan.seed if plan.seed is not None else random.randrange(2**32 - 1)
        if self.token_ids and sampling.stop:
            raise BackendError("stop strings are not supported with token_ids=True")
        llm = self._acquire()
        try:
            llm.reset()  # no KV prefix reuse: results must not depend on the instance's past
            if self.token_ids:
                prompt = list(plan.prompt_ids or self.prompt_ids(request))
                return self._run_tokens(llm, prompt, sampling, start=start, max_new=max_new, seed=seed)
            out = llm.create_chat_completion(
                messages=list(request.messages),
                max_tokens=max_new,
                temperature=max(0.0, sampling.temperature),  # 0 = greedy in llama.cpp
                top_p=sampling.top_p,
                top_k=0,  # disabled: plain temperature + nucleus sampling, as in hf/openai
                min_p=0.0,
                repeat_penalty=1.0,
                seed=seed % 0xFFFFFFFF,  # uint32; 0xFFFFFFFF would mean 'random'
                stop=list(sampling.stop),
            )
        except Exception as exc:
            return error_generation(f"llama.cpp failed: {exc}", start, prompt_tokens=prompt_tokens)
        finally:
            self._release(llm)
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        finish = map_finish_reason(choice.get("finish_reason"))
        return Generation(
            text=choice["message"].get("content") or "",
            finish_reason=finish,
            error=f"finish_reason={choice.get('finish_reason')}" if finish == FINISH_ERROR else None,
            prompt_tokens=int(usage.get("prompt_tokens", prompt_tokens)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            seconds=time.perf_counter() - start,
        )

    @staticmethod
    def _run_tokens(llm, prompt: list[int], sampling: SamplingParams, *, start: float,
                    max_new: int, seed: int) -> Generation:
        """One templated prompt sampled token by token (the `token_ids` path)."""
        import llama_cpp

        llm.set_seed(seed % 0xFFFFFFFF)
        completion: list[int] = []
        finish = "length"
        for token in llm.generate(prompt, top_k=0, top_p=sampling.top_p, min_p=0.0,
                                  temp=max(0.0, sampling.temperature), repeat_penalty=1.0):
            completion.append(int(token))
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                finish = "stop"
                break
            if len(completion) >= max_new:
                break
        return _token_generation(llm, prompt, completion, finish, start=start, with_ids=True)


def _token_generation(llm, prompt: list[int], completion: list[int], finish: str, *, start: float,
                      with_ids: bool) -> Generation:
    """The Generation of a completion sampled as token ids (the end-of-generation token,
    when the model stopped, is counted and kept in the ids but not in the text)."""
    text_ids = completion[:-1] if finish == "stop" else completion
    text = llm.detokenize(text_ids, prev_tokens=prompt).decode("utf-8", errors="replace")
    ids = dict(prompt_ids=tuple(prompt), completion_ids=tuple(completion)) if with_ids else {}
    return Generation(
        text=text, finish_reason=map_finish_reason(finish), prompt_tokens=len(prompt),
        completion_tokens=len(completion), seconds=time.perf_counter() - start, **ids,
    )


class _LockedLlamaTokenizer(LlamaTokenizer):
    """The shared vocabulary instance may be used from several threads: serialize it."""

    def __init__(self, llama):
        super().__init__(llama)
        self._lock = threading.Lock()

    def encode(self, text: str) -> list[int]:
        with self._lock:
            return super().encode(text)

    def decode(self, ids) -> str:
        with self._lock:
            return super().decode(ids)

    def tokenize_prompt(self, prompt: str, *, add_bos: bool) -> list[int]:
        with self._lock:
            return list(self._llama.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True))


def _close_llama(llm) -> None:
    close = getattr(llm, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # best effort at shutdown
            pass
