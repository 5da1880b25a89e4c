"""Many sequences decoded together in one llama.cpp context: continuous batching for the
llamacpp backend (`LlamaCppBackend(..., parallel=N)`).

    decoder = ParallelDecoder(llm, slots=32, seq_tokens=2048, n_threads=2)
    future = decoder.submit(prompt_ids, max_new=192, temperature=0.7, top_p=1.0, seed=7)
    token_ids, finish = future.result()          # finish: "stop" (end of generation) or "length"

Why: a pool of llama.cpp instances decodes one sequence per instance, so on a CPU with
two cores at most two sequences advance at a time, each one a matrix-vector product that
leaves the cores waiting on memory. Here up to `slots` sequences share every forward pass
(one `llama_decode` call advances each of them by a token, and prompts are evaluated in
the same calls), so a step of RL rollouts (G x B episodes, all in flight) costs far
fewer passes over the weights. Measured by `bench/learning.py engines`.

How, in one worker thread that owns the context:
- Each request takes a free sequence slot. All slots share one pool of KV cells
  (`slots` x `seq_tokens`); a request may use up to `seq_tokens` of them, so the pool
  never overflows. (A stream of cells per slot instead, llama.cpp's non-unified cache,
  measured no faster here: the passes are bound by the model's matrix products, and that
  context took 3-6x longer to create.)
- A prompt is evaluated in pieces of at most `n_batch` tokens, in the same `llama_decode`
  calls as the one-token steps of the sequences already generating.
- Shared prompt prefixes are evaluated once: a new request whose prompt starts like a
  sequence already in the cache (a live one, or a finished one kept until its slot is
  needed) shares those cells (`llama_memory_seq_cp`: in one pool the cells are shared,
  not copied) and evaluates only the rest. The G rollouts of a question send the same
  first prompt, so it is evaluated once, not G times.
- Every request has its own sampler chain (top-p, temperature, then a seeded draw: the
  chain llama-cpp-python builds for `Llama.generate` with top-k, min-p and penalties
  off), so a request's sample depends on its seed, not on which slot served it. Logits
  can differ in the last bits with the batch a sequence shares, so a seed reproduces its
  sample only up to that.
- A request whose future is cancelled (its episode was cancelled) leaves its slot at the
  next step.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rememr1.errors import BackendError

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Job:
    prompt: list[int]
    max_new: int
    temperature: float
    top_p: float
    seed: int
    future: Future
    sampler: Any = None
    completion: list[int] = field(default_factory=list)


@dataclass(eq=False)
class _Slot:
    seq: int
    cached: list[int] = field(default_factory=list)  # tokens whose cells this sequence holds
    job: _Job | None = None
    pending: int = 0  # position in job.prompt of the next prompt token to evaluate
    source: tuple["_Slot", int] | None = None  # cells to copy (from slot, this many) before evaluating


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class ParallelDecoder:
    """One llama.cpp context decoding up to `slots` sequences at once (see the module
    docstring). `llm` is a loaded `llama_cpp.Llama` whose model is shared (its own context
    is not used); `adapter` a GGUF LoRA file applied to this context."""

    def __init__(self, llm, *, slots: int, seq_tokens: int, n_threads: int, n_batch: int = 512,
                 adapter: str | Path | None = None):
        import llama_cpp

        if slots < 1:
            raise BackendError(f"parallel must be at least 1, got {slots}")
        self._lib = llama_cpp
        self._llm = llm
        model = llm._model.model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = slots * seq_tokens
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = slots
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.kv_unified = True  # one pool of cells: shared prefixes are stored once
        params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(model, params)
        if not self._ctx:
            raise BackendError(f"llama.cpp could not create a context of {slots} sequences of "
                               f"{seq_tokens} tokens")
        self._adapter = None
        if adapter is not None:
            self._adapter = llama_cpp.llama_adapter_lora_init(model, str(adapter).encode("utf-8"))
            if not self._adapter:
                self._free_context()
                raise BackendError(f"llama.cpp could not load the LoRA adapter {adapter}")
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._adapter)
            scales = (ctypes.c_float * 1)(1.0)
            if llama_cpp.llama_set_adapters_lora(self._ctx, adapters, 1, scales):
                self._free_context()
                raise BackendError(f"llama.cpp could not apply the LoRA adapter {adapter}")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self.seq_tokens = int(llama_cpp.llama_n_ctx(self._ctx)) // slots
        self.n_batch = n_batch
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._slots = [_Slot(seq=i) for i in range(slots)]
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        # Counters for benchmarks: forward passes, tokens evaluated, prompt tokens copied.
        self.stats = {"decode_calls": 0, "tokens_evaluated": 0, "prefix_tokens_shared": 0}
        self._thread = threading.Thread(target=self._run, name="llamacpp-parallel", daemon=True)
        self._thread.start()

    # -- public ----------------------------------------------------------------------

    def submit(self, prompt: list[int], *, max_new: int, temperature: float, top_p: float,
               seed: int) -> Future:
        """Queue one prompt (token ids); the future's result is (completion ids, finish),
        the completion ending with the end-of-generation token when the model stopped."""
        if len(prompt) + max_new > self.seq_tokens:
            raise BackendError(f"a prompt of {len(prompt)} tokens plus {max_new} new ones does "
                               f"not fit the parallel decoder's {self.seq_tokens} cells per sequence")
        if not prompt:
            raise BackendError("empty prompt")
        fut: Future = Future()
        job = _Job(list(prompt), max_new, temperature, top_p, seed % 0xFFFFFFFF, fut)
        with self._cond:
            if self._closed:
                raise BackendError("the llamacpp backend was closed")
            self._queue.append(job)
            self._cond.notify()
        return fut

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify()
        self._thread.join()
        for job in list(self._queue):
            job.future.cancel()
        self._queue.clear()
        self._lib.llama_batch_free(self._batch)
        self._free_context()

    # -- the worker ------------------------------------------------------------------

    def _free_context(self) -> None:
        if self._ctx:
            self._lib.llama_free(self._ctx)
            self._ctx = None
        if self._adapter:
            self._lib.llama_adapter_lora_free(self._adapter)
            self._adapter = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._queue and not self._busy():
                    self._cond.wait()
                if self._closed:
                    break
            try:
                self._admit()
                self._step()
            except Exception as exc:  # a failed decode fails what was running, not the thread
                log.exception("llama.cpp parallel decoding failed")
                self._fail_running(BackendError(f"llama.cpp failed: {exc}"))
        self._fail_running(BackendError("the llamacpp backend was closed"))

    def _busy(self) -> bool:
        return any(s.job is not None for s in self._slots)

    def _admit(self) -> None:
        """Move queued requests into free slots."""
        while True:
            with self._cond:
                if not self._queue:
                    return
                job = self._queue[0]
                if job.future.cancelled():
                    self._queue.popleft()
                    continue
                free = [s for s in self._slots if s.job is None]
                if not free:
                    return
                self._queue.popleft()
            self._start(job, free)

    def _start(self, job: _Job, free: list[_Slot]) -> None:
        lib = self._lib
        # The cache entry sharing the longest prefix with this prompt (at most all but the
        # last prompt token: that one is evaluated to get this request's first logits).
        limit = len(job.prompt) - 1
        best, best_n = None, 0
        for s in self._slots:
            tokens = s.job.prompt if s.job is not None else s.cached
            n = min(_common_prefix(tokens, job.prompt), limit)
            if n > best_n:
                best, best_n = s, n
        # Take a free slot: the best source itself, else the lowest free one.
        slot = best if best is not None and best.job is None else min(free, key=lambda s: s.seq)
        if slot is best:
            keep, source = best_n, None
            self.stats["prefix_tokens_shared"] += keep
        else:
            keep, source = 0, (best, best_n) if best is not None else None
        lib.llama_memory_seq_rm(self._mem, slot.seq, keep, -1)
        slot.cached = slot.cached[:keep]
        slot.job, slot.pending, slot.source = job, keep, source
        self._copy_ready(slot)
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if job.temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        else:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(job.top_p, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(job.temperature))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(job.seed))
        job.sampler = chain

    def _copy_ready(self, slot: _Slot) -> bool:
        """Copy the source's prefix cells into `slot` once the source has evaluated them
        (called only between decodes, when `cached` is exactly what the cells hold)."""
        if slot.source is None:
            return True
        src, n = slot.source
        want = slot.job.prompt[:n]
        if src.cached[:n] != want:
            if len(src.cached) < n and src.job is not None and src.job.prompt[:n] == want:
                return False  # the source is still evaluating that prefix
            slot.source = None  # the source was reused for something else: evaluate it all
            return True
        self._lib.llama_memory_seq_cp(self._mem, src.seq, slot.seq, 0, n)
        self.stats["prefix_tokens_shared"] += n
        slot.cached = list(want)
        slot.pending = n
        slot.source = None
        return True

    def _step(self) -> None:
        """One llama_decode: a token of every generating sequence, then prompt pieces."""
        lib, b = self._lib, self._batch
        for slot in self._slots:  # copies first: cells exist only for evaluated tokens
            if slot.job is not None and slot.source is not None:
                self._copy_ready(slot)
        samples: list[tuple[_Slot, int]] = []  # (slot, batch position of its logits)
        n = 0

        def add(slot: _Slot, token: int, pos: int, logits: bool) -> None:
            nonlocal n
            b.token[n] = token
            b.pos[n] = pos
            b.n_seq_id[n] = 1
            b.seq_id[n][0] = slot.seq
            b.logits[n] = logits
            if logits:
                samples.append((slot, n))
            n += 1

        for slot in self._slots:
            job = slot.job
            if job is not None and job.future.cancelled():
                self._finish(slot, None)
            elif job is not None and slot.pending >= len(job.prompt) and n < self.n_batch:
                token = job.completion[-1]
                add(slot, token, len(slot.cached), True)
                slot.cached.append(token)
        for slot in self._slots:
            job = slot.job
            if job is None or slot.source is not None or slot.pending >= len(job.prompt):
                continue
            take = job.prompt[slot.pending:slot.pending + self.n_batch - n]
            if not take:
                break
            last = len(job.prompt) - 1
            for i, token in enumerate(take, start=slot.pending):
                add(slot, token, i, i == last)
            slot.cached.extend(take)
            slot.pending += len(take)
        if n == 0:
            return
        b.n_tokens = n
        rc = lib.llama_decode(self._ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        self.stats["decode_calls"] += 1
        self.stats["tokens_evaluated"] += n
        for slot, pos in samples:
            job = slot.job
            token = int(lib.llama_sampler_sample(job.sampler, self._ctx, pos))
            job.completion.append(token)
            if lib.llama_vocab_is_eog(self._vocab, token):
                self._finish(slot, "stop")
            elif len(job.completion) >= job.max_new:
                self._finish(slot, "length")

    def _finish(self, slot: _Slot, finish: str | None) -> None:
        job = slot.job
        slot.job, slot.source = None, None
        if job.sampler is not None:
            self._lib.llama_sampler_free(job.sampler)
            job.sampler = None
        if finish is not None and not job.future.cancelled():
            job.future.set_result((job.completion, finish))
        elif finish is None and not job.future.done():
            job.future.cancel()

    def _fail_running(self, exc: Exception) -> None:
        for slot in self._slots:
            job = slot.job
            if job is None:
                continue
            self._lib.llama_memory_seq_rm(self._mem, slot.seq, -1, -1)
            slot.cached = []
            slot.job = slot.source = None
            if job.sampler is not None:
                self._lib.llama_sampler_free(job.sampler)
            if not job.future.done():
                job.future.set_exception(exc)


__all__ = ["ParallelDecoder"]
