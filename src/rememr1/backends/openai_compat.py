"""The OpenAI-compatible backend: any server speaking /v1/chat/completions (vLLM, SGLang,
llama.cpp's server, OpenAI itself), through the official `openai` package.

    backend = OpenAIBackend(None, base_url="http://127.0.0.1:8000/v1")   # server's first model
    backend = OpenAIBackend("Qwen/Qwen2.5-7B-Instruct", base_url=..., concurrency=32,
                            tokenizer="/models/qwen2.5-7b")              # local tokenizer

`base_url` defaults to $OPENAI_BASE_URL and `api_key` to $OPENAI_API_KEY, else "EMPTY"
(local servers ignore it). Requests run on an AsyncOpenAI client in a private event-loop thread; a semaphore keeps at
most `concurrency` of them in flight. `generate` blocks on that loop; `agenerate` awaits
it from any loop. Retries (connection errors, timeouts, 408/409/429/5xx) are the client's
own: exponential backoff from 0.5 s to 8 s with jitter, `max_retries` times.

The model list is fetched once at construction: it resolves `model=None` to the first
listed id and turns an unknown model into a one-line error listing what the server has.

Tokenizer (used for chunking and prompt-size estimates): the `tokenizer` option (a local HF
directory or .gguf file), else `model` itself when it is a local path, else the built-in
SmolLM2 tokenizer with a warning -- then token counts for chunking are only approximate
for the server's model. Token counts reported in Generations come from the server's usage.

Context window: `context_window` if given, else `max_model_len` when the server reports it
(vLLM does), else the tokenizer source's trained context, else 8192. max_new_tokens is
clamped to fit using the estimated prompt size.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
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
from rememr1.errors import BackendError, BackendTimeout, InputError

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_WINDOW = 8192


def _import_openai():
    try:
        import openai
    except ImportError as exc:
        raise BackendError("the openai backend needs the openai package: pip install openai") from exc
    return openai


class _Fatal(Exception):
    """A failure of the backend as a whole; carries the BackendError to raise."""

    def __init__(self, error: BackendError):
        super().__init__(str(error))
        self.error = error


class OpenAIBackend(Backend):
    """Chat generation through an OpenAI-compatible HTTP server."""

    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 600,
        max_retries: int = 3,
        tokenizer: str | os.PathLike | None = None,
        context_window: int | None = None,
    ):
        openai = _import_openai()
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise InputError("the openai backend needs a server URL: pass base_url (e.g. http://127.0.0.1:8000/v1)")
        if concurrency < 1:
            raise InputError(f"concurrency must be >= 1, got {concurrency}")
        if timeout <= 0:
            raise InputError(f"timeout must be > 0 seconds, got {timeout}")
        if max_retries < 0:
            raise InputError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.peak_in_flight = 0  # most requests seen in flight at once (diagnostic)
        self._in_flight = 0

        self.available_models, server_window = self._list_models(openai)
        if model is None:
            if not self.available_models:
                raise BackendError(
                    f"server at {self.base_url} lists no models (does the URL end in /v1?); pass a model name"
                )
            model = self.available_models[0]
        elif self.available_models and model not in self.available_models:
            raise BackendError(self._unknown_model_message(model))
        self.model_name = model

        self._tokenizer_source = self._pick_tokenizer_source(tokenizer, model)
        self._tokenizer = None
        self._tokenizer_lock = threading.Lock()
        self.context_window = int(
            context_window
            or server_window.get(model)
            or _trained_context(self._tokenizer_source)
            or DEFAULT_CONTEXT_WINDOW
        )

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._semaphore: asyncio.Semaphore | None = None
        self._start_lock = threading.Lock()
        self._loop_clients: dict[Any, tuple[Any, asyncio.Semaphore]] = {}  # asubmit's, per caller loop

    # -- Backend interface -------------------------------------------------------------

    @property
    def tokenizer(self):
        with self._tokenizer_lock:
            if self._tokenizer is None:
                from rememr1.backends.tokenization import load_tokenizer

                if self._tokenizer_source is None:
                    from rememr1.backends.builtin import BUILTIN_MODEL_NAME, builtin_gguf_path

                    log.warning(
                        "no local tokenizer for model %r: using the built-in %s tokenizer, so "
                        "token counts for chunking are approximate (pass tokenizer=PATH to fix)",
                        self.model_name, BUILTIN_MODEL_NAME,
                    )
                    self._tokenizer = load_tokenizer(builtin_gguf_path())
                else:
                    self._tokenizer = load_tokenizer(self._tokenizer_source)
            return self._tokenizer

    def generate(self, requests: Sequence[ChatRequest], sampling: SamplingParams) -> list[Generation]:
        self._prepare(requests)
        future = asyncio.run_coroutine_threadsafe(self._run_batch(requests, sampling), self._ensure_loop())
        try:
            return future.result()
        except _Fatal as exc:
            raise exc.error from None

    async def agenerate(self, requests: Sequence[ChatRequest], sampling: SamplingParams) -> list[Generation]:
        await asyncio.to_thread(self._prepare, requests)
        future = asyncio.run_coroutine_threadsafe(self._run_batch(requests, sampling), self._ensure_loop())
        try:
            return await asyncio.wrap_future(future)
        except _Fatal as exc:
            raise exc.error from None

    async def asubmit(self, request: ChatRequest, sampling: SamplingParams) -> Generation:
        """One request on an async client bound to the caller's own event loop (no thread
        hop), at most `concurrency` in flight per loop."""
        if self._tokenizer is None:
            await asyncio.to_thread(self._prepare, [request])
        client, semaphore = self._loop_client(asyncio.get_running_loop())
        try:
            return await self._one(request, sampling, client, semaphore)
        except _Fatal as exc:
            raise exc.error from None

    async def release_loop(self) -> None:
        """Close the client `asubmit` opened on the running loop (the engine calls this
        before its loop ends)."""
        pair = self._loop_clients.pop(asyncio.get_running_loop(), None)
        if pair is not None:
            await pair[0].close()

    def _loop_client(self, loop):
        pair = self._loop_clients.get(loop)
        if pair is None:
            openai = _import_openai()
            client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key,
                                        timeout=self.timeout, max_retries=self.max_retries)
            pair = self._loop_clients[loop] = (client, asyncio.Semaphore(self.concurrency))
        return pair

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._client is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._client.close(), loop).result(timeout=10)
            except Exception:  # best effort at shutdown
                pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = self._client = self._semaphore = None

    # -- construction helpers ------------------------------------------------------------

    def _list_models(self, openai) -> tuple[list[str], dict[str, int]]:
        """Ids the server lists, and the context lengths it reports (vLLM: max_model_len).
        A server without a model list (404) gives ([], {}) and skips the check."""
        client = openai.OpenAI(base_url=self.base_url, api_key=self.api_key,
                               timeout=min(self.timeout, 30.0), max_retries=min(self.max_retries, 1))
        try:
            models = list(client.models.list())
        except openai.NotFoundError:
            log.warning("server at %s has no /models endpoint; the model name is not checked", self.base_url)
            return [], {}
        except openai.APIError as exc:
            raise self._backend_error(exc) from None
        finally:
            client.close()
        windows = {}
        for m in models:
            extra = getattr(m, "model_extra", None) or {}
            length = extra.get("max_model_len") or extra.get("context_length")
            if isinstance(length, int) and length > 0:
                windows[m.id] = length
        return [m.id for m in models], windows

    def _unknown_model_message(self, model: str) -> str:
        shown = ", ".join(self.available_models[:20])
        more = f" (and {len(self.available_models) - 20} more)" if len(self.available_models) > 20 else ""
        return f"model {model!r} not found on server {self.base_url}; available: {shown}{more}"

    @staticmethod
    def _pick_tokenizer_source(tokenizer, model: str) -> Path | None:
        if tokenizer is not None:
            path = Path(tokenizer).expanduser()
            if not path.exists():
                raise BackendError(f"tokenizer not found: {path} (give a .gguf file or a Hugging Face model directory)")
            return path
        path = Path(model).expanduser()
        if path.exists() and (path.is_dir() or path.suffix.lower() == ".gguf"):
            return path
        return None

    # -- event loop ----------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="rememr1-openai", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _prepare(self, requests: Sequence[ChatRequest]) -> None:
        """Work done before entering the event loop: load the tokenizer (possibly slow)."""
        if requests:
            self.tokenizer  # noqa: B018 - loads it

    def _client_and_semaphore(self):
        # Runs on the private loop, so the client and semaphore are bound to it.
        if self._client is None:
            openai = _import_openai()
            self._client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key,
                                              timeout=self.timeout, max_retries=self.max_retries)
            self._semaphore = asyncio.Semaphore(self.concurrency)
        return self._client, self._semaphore

    async def _run_batch(self, requests: Sequence[ChatRequest], sampling: SamplingParams) -> list[Generation]:
        if not requests:
            return []
        client, semaphore = self._client_and_semaphore()
        tasks = [asyncio.ensure_future(self._one(req, sampling, client, semaphore)) for req in requests]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = next((t for t in tasks if t in done and not t.cancelled() and t.exception()), None)
        if failed is not None:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise failed.exception()
        return [t.result() for t in tasks]

    async def _one(self, request: ChatRequest, sampling: SamplingParams, client, semaphore) -> Generation:
        openai = _import_openai()
        plan = self.plan(request, sampling)
        if isinstance(plan, Generation):
            return plan
        estimate = plan.prompt_tokens
        kwargs: dict[str, Any] = dict(
            model=self.model_name,
            messages=[dict(m) for m in request.messages],
            max_tokens=plan.max_new,
            temperature=max(0.0, sampling.temperature),
            top_p=sampling.top_p,
        )
        if plan.seed is not None:
            kwargs["seed"] = int(plan.seed)
        if sampling.stop:
            kwargs["stop"] = list(sampling.stop)
        async with semaphore:
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            start = time.perf_counter()
            try:
                response = await client.chat.completions.create(**kwargs)
            except (openai.APIConnectionError, openai.AuthenticationError, openai.PermissionDeniedError,
                    openai.NotFoundError, openai.RateLimitError) as exc:
                raise _Fatal(await self._describe_fatal(exc, client)) from None
            except openai.APIStatusError as exc:  # 400/422/5xx: this request only
                return error_generation(f"server error {exc.status_code}: {_first_line(_status_detail(exc))}",
                                        start, prompt_tokens=estimate)
            except openai.APIError as exc:  # malformed reply
                return error_generation(f"bad reply from server: {_first_line(exc)}", start,
                                        prompt_tokens=estimate)
            finally:
                self._in_flight -= 1
        return self._to_generation(response, estimate, start)

    def _to_generation(self, response, estimate: int, start: float) -> Generation:
        seconds = time.perf_counter() - start
        if not response.choices:
            return error_generation("server returned no choices", start, prompt_tokens=estimate)
        choice = response.choices[0]
        text = (choice.message.content if choice.message is not None else None) or ""
        finish = map_finish_reason(choice.finish_reason)
        usage = response.usage
        prompt_tokens = usage.prompt_tokens if usage is not None else estimate
        completion_tokens = usage.completion_tokens if usage is not None else len(self.tokenizer.encode(text))
        return Generation(
            text=text, finish_reason=finish, prompt_tokens=int(prompt_tokens),
            completion_tokens=int(completion_tokens or 0), seconds=seconds,
            error=f"finish_reason={choice.finish_reason}" if finish == FINISH_ERROR else None,
        )

    # -- errors ----------------------------------------------------------------------------

    async def _describe_fatal(self, exc, client) -> BackendError:
        openai = _import_openai()
        if isinstance(exc, openai.NotFoundError):
            try:
                ids = [m.id async for m in client.models.list()]
            except openai.APIError:
                ids = []
            if ids:
                self.available_models = ids
                return BackendError(self._unknown_model_message(self.model_name))
            return BackendError(
                f"server at {self.base_url} answered 404 ({_first_line(_status_detail(exc))}); "
                "check the URL (it usually ends in /v1)"
            )
        return self._backend_error(exc)

    def _backend_error(self, exc) -> BackendError:
        openai = _import_openai()
        where = f"server at {self.base_url}"
        if isinstance(exc, openai.APITimeoutError):
            return BackendTimeout(f"{where} did not answer within {self.timeout:g} s (timeout)")
        if isinstance(exc, openai.APIConnectionError):
            return BackendError(f"cannot reach {where}: {_connection_reason(exc)}")
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            return BackendError(f"{where} rejected the API key ({exc.status_code}); set OPENAI_API_KEY or api_key")
        if isinstance(exc, openai.RateLimitError):
            return BackendError(f"{where} is rate limiting (429) after {self.max_retries} retries")
        if isinstance(exc, openai.APIStatusError):
            return BackendError(f"{where} answered {exc.status_code}: {_first_line(_status_detail(exc))}")
        return BackendError(f"{where}: {_first_line(exc)}")


def _connection_reason(exc: BaseException) -> str:
    """A short reason from the exception chain: connection refused, unknown host, ..."""
    seen = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    for e in seen:
        text = str(e).lower()
        if isinstance(e, ConnectionRefusedError) or "connection refused" in text or "errno 111" in text:
            return "connection refused"
        if isinstance(e, socket.gaierror) or "name or service not known" in text or "nodename" in text:
            return "unknown host"
    return _first_line(seen[-1])


def _status_detail(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
        if body.get("detail"):
            return str(body["detail"])
    return str(getattr(exc, "message", None) or exc)


def _first_line(value) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else "unknown error"


def _trained_context(source: Path | None) -> int | None:
    """The trained context length recorded in a tokenizer source (HF config or GGUF)."""
    if source is None:
        return None
    try:
        if source.is_dir():
            config = json.loads((source / "config.json").read_text())
            value = config.get("max_position_embeddings")
            return int(value) if value else None
        if source.suffix.lower() == ".gguf":
            from rememr1.backends.loading import load_vocab

            meta = load_vocab(source).metadata
            arch = meta.get("general.architecture", "")
            value = meta.get(f"{arch}.context_length")
            return int(value) if value else None
    except (OSError, ValueError, BackendError):
        return None
    return None
