"""The OpenAI-compatible server over `Agent`: `create_app` builds the FastAPI app,
`run_server` runs it with uvicorn (`rememr1 serve` is the command that does both).

    app = create_app({"rememr1": agent, "memagent": agent2}, ServeSettings(api_key="k"))
    run_server(app, host="127.0.0.1", port=8000)

Routes (all in OpenAI's shape; errors are OpenAI error JSON, never a traceback):
* `POST /v1/chat/completions` -- the last user message is the question, the text before it
  the document (`schema.document_and_question`); `model` names the method. The episode
  runs on the agent's engine (`Agent.episode` + `Agent.arun_iter`, the path `ask` takes).
  `stream: true` answers with server-sent events: the role chunk at once, a `: keep-alive`
  comment every `keepalive_s` while the agent reads, then the answer, the finish reason
  (and usage when `stream_options.include_usage`), then `[DONE]`.
  `{"rememr1": {"trace": true}}` in the body adds the step trace (the lines `ask --trace`
  writes) to the reply's `rememr1` field.
* `GET /v1/models` -- the served methods, as model names.
* `GET /v1/traces/{id}` -- with `trace_dir`: the trace of completion `id` as JSON lines,
  which `rememr1 view` renders.

Safety: a Bearer key (compared in constant time) when `api_key` is set; limits on body
size, document bytes and messages (413); at most `max_episodes` episodes run at once, up to
`max_queue` more wait, and beyond that 429 with `Retry-After`; a per-request timeout (504).
A client that disconnects cancels its episode: its pending model request is cancelled and
no further step is sent. Backend failures are 502 (504 for a timeout); a failed request
leaves the server serving.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import math
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..agent import Agent
from ..agent.engine import hold_loop
from ..errors import BackendError, BackendTimeout, InputError, RememrError
from ..eval.lines import trace_lines
from ..records import AnswerResult
from .schema import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ErrorBody,
    ErrorReply,
    ModelCard,
    ModelList,
    ReplyMessage,
    Usage,
    document_and_question,
)

log = logging.getLogger("rememr1.serve")


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    """The server's limits and switches (the `rememr1 serve` options of the same names)."""

    api_key: str | None = None
    max_document_bytes: int = 32_000_000
    max_messages: int = 1000
    max_episodes: int = 8
    max_queue: int = 64
    request_timeout: float | None = 3600.0
    keepalive_s: float = 10.0
    trace_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key.strip():
            raise InputError("the API key is empty")
        for name in ("max_document_bytes", "max_messages", "max_episodes"):
            if getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise InputError(f"max-queue must be >= 0, got {self.max_queue}")
        if self.request_timeout is not None and self.request_timeout <= 0:
            raise InputError(f"request-timeout must be > 0 seconds, got {self.request_timeout}")
        if self.keepalive_s <= 0:
            raise InputError(f"keep-alive interval must be > 0 seconds, got {self.keepalive_s}")

    @property
    def max_body_bytes(self) -> int:
        # JSON escaping can take up to 6 bytes per character (\\uXXXX); the document's own
        # size is checked exactly once it is decoded.
        return 6 * self.max_document_bytes + 1_000_000


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond this machine without a key."""
    if api_key:
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise InputError(f"refusing to listen on {host} without an API key: pass --api-key "
                         "(or set REMEMR1_API_KEY), or listen on 127.0.0.1")


class ApiError(Exception):
    """An error reply: HTTP status plus OpenAI's error body."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", *,
                 code: str | None = None, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers

    def response(self) -> JSONResponse:
        body = ErrorReply(error=ErrorBody(message=self.message, type=self.type, param=self.param, code=self.code))
        return JSONResponse(body.model_dump(), status_code=self.status, headers=self.headers)


_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
                405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}


def _as_api_error(exc: BaseException) -> ApiError:
    """What a failure of the agent or its backend means to the client."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InputError):
        return ApiError(400, str(exc))
    if isinstance(exc, BackendTimeout):
        return ApiError(504, str(exc), "server_error", code="upstream_timeout")
    if isinstance(exc, (BackendError, RememrError)):
        return ApiError(502, str(exc), "server_error", code="upstream_error")
    log.exception("unexpected error while answering", exc_info=exc)
    return ApiError(500, f"internal error: {type(exc).__name__}", "server_error")


class Admission:
    """At most `running` episodes at once, `queued` more waiting, the rest refused."""

    def __init__(self, running: int, queued: int):
        self.running, self.queued = running, queued
        self.admitted = 0  # running + waiting
        self._slots = asyncio.Semaphore(running)
        self._mean_s: float | None = None  # moving average of an episode's seconds

    def admit(self) -> None:
        if self.admitted >= self.running + self.queued:
            wait = (self._mean_s or 1.0) * (1 + self.queued / self.running)
            raise ApiError(429, f"the server is at capacity ({self.running} episodes running, "
                           f"{self.queued} waiting); retry later", "rate_limit_error",
                           code="rate_limit_exceeded", headers={"Retry-After": str(max(1, math.ceil(wait)))})
        self.admitted += 1

    def leave(self) -> None:
        self.admitted -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._slots:
            start = time.perf_counter()
            yield
            took = time.perf_counter() - start
            self._mean_s = took if self._mean_s is None else 0.8 * self._mean_s + 0.2 * took


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _ClientGone(Exception):
    pass


_TRACE_ID = re.compile(r"chatcmpl-[0-9a-f]{32}")
_INLINE_CHARS = 16_384  # documents up to this size are tokenized on the loop (about a millisecond)


def create_app(agents: Mapping[str, Agent], settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app answering over `agents` (model name -> Agent, e.g. one per method)."""
    if not agents:
        raise InputError("serve needs at least one method")
    settings = settings or ServeSettings()
    if settings.trace_dir is not None:
        try:
            settings.trace_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot use {settings.trace_dir} for traces: {exc.strerror or exc}") from None
    key = settings.api_key.encode() if settings.api_key else None
    admission = Admission(settings.max_episodes, settings.max_queue)
    variants: OrderedDict[tuple, Agent] = OrderedDict()  # agents with a client's sampling
    answering: set[asyncio.Task] = set()  # every open request's episode
    stopping = asyncio.Event()

    def stop_now() -> None:
        stopping.set()
        for task in answering:
            task.cancel()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        app.state.stop = lambda: loop.call_soon_threadsafe(stop_now)
        async with AsyncExitStack() as stack:  # one HTTP client per backend, for the app's life
            for backend in {id(a.backend): a.backend for a in agents.values()}.values():
                await stack.enter_async_context(hold_loop(backend))
            yield

    app = FastAPI(title="rememr1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.stop = lambda: None  # `run_server` calls it on Ctrl-C: open requests end at once

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return ApiError(exc.status_code, str(exc.detail), _ERROR_TYPES.get(exc.status_code, "server_error")).response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return ApiError(400, str(exc)).response()

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return _as_api_error(exc).response()

    def authorize(request: Request) -> None:
        if key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key):
            raise ApiError(401, "invalid or missing API key (send Authorization: Bearer KEY)",
                           "authentication_error", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    def agent_for(req: ChatCompletionRequest) -> Agent:
        base = agents.get(req.model)
        if base is None:
            raise ApiError(404, f"model {req.model!r} does not exist; this server answers with: "
                           + ", ".join(agents), code="model_not_found", param="model")
        changes = {k: v for k in ("temperature", "top_p", "seed") if (v := getattr(req, k)) is not None}
        if not changes:
            return base
        vkey = (req.model, tuple(sorted(changes.items())))
        agent = variants.get(vkey)
        if agent is None:
            agent = Agent(base.backend, config=base.config, sampling=replace(base.sampling, **changes))
            variants[vkey] = agent
            if len(variants) > 64:
                variants.popitem(last=False)
        variants.move_to_end(vkey)
        return agent

    async def read_request(request: Request) -> tuple[ChatCompletionRequest, str, str]:
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"the request is {int(declared)} bytes; the limit is {limit}", code="request_too_large")
        body, size = [], 0
        async for piece in request.stream():
            size += len(piece)
            if size > limit:
                raise ApiError(413, f"the request is over {limit} bytes", code="request_too_large")
            body.append(piece)
        raw = b"".join(body)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ApiError(400, f"the request body is not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset "
                           f"{e.start})") from None
        try:
            req = ChatCompletionRequest.model_validate_json(raw)
        except ValidationError as e:
            first = e.errors()[0]
            if first["type"] == "json_invalid":
                raise ApiError(400, f"malformed JSON: {first['msg'].removeprefix('Invalid JSON: ')}") from None
            where = ".".join(str(p) for p in first["loc"] if not _union_tag(p))
            raise ApiError(400, f"{where}: {first['msg']}" if where else first["msg"], param=where or None) from None
        if len(req.messages) > settings.max_messages:
            raise ApiError(413, f"{len(req.messages)} messages; the limit is {settings.max_messages}",
                           code="too_many_messages", param="messages")
        try:
            document, question = document_and_question(req.messages)
            n = len(document.encode("utf-8")) + len(question.encode("utf-8"))
        except InputError as e:
            raise ApiError(400, str(e), param="messages") from None
        if n > settings.max_document_bytes:
            raise ApiError(413, f"the document is {n} bytes; the limit is {settings.max_document_bytes}",
                           code="document_too_large", param="messages")
        return req, document, question

    async def answer(agent: Agent, document: str, question: str, cid: str) -> AnswerResult:
        """One episode, as `ask` runs it: built (a long document off the event loop, as
        tokenizing it takes a while), then driven on the agent's engine."""
        try:
            async with admission.slot():
                if len(document) > _INLINE_CHARS:
                    episode = await asyncio.to_thread(agent.episode, document, question)
                else:
                    episode = agent.episode(document, question)
                async for _ in agent.arun_iter([episode]):
                    pass
                result = episode.result()
        except Exception as exc:
            raise _as_api_error(exc) from None
        if result.error:
            raise ApiError(502, f"the model failed: {result.error}", "server_error", code="upstream_error")
        if settings.trace_dir is not None:
            try:
                await asyncio.to_thread(_write_trace, settings.trace_dir / f"{cid}.jsonl", result)
            except OSError as exc:  # the answer still goes out
                log.warning("cannot write the trace of %s: %s", cid, exc.strerror or exc)
        return result

    async def answer_in_time(agent: Agent, document: str, question: str, cid: str) -> AnswerResult:
        try:
            return await asyncio.wait_for(answer(agent, document, question, cid), settings.request_timeout)
        except asyncio.TimeoutError:
            raise ApiError(504, f"no answer within the request timeout ({settings.request_timeout:g} s)",
                           "server_error", code="timeout") from None

    async def until_answered_or_gone(request: Request, task: asyncio.Task) -> AnswerResult:
        watch = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not task.done():
                task.cancel()  # the client left (or the server is stopping): stop its episode
        if task.cancelled():
            raise _shutting_down() if stopping.is_set() else _ClientGone
        return task.result()

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return JSONResponse(ModelList(data=[ModelCard(id=name) for name in agents]).model_dump())

    @app.get("/v1/traces/{trace_id}")
    async def trace(trace_id: str, request: Request):
        authorize(request)
        if settings.trace_dir is None:
            raise ApiError(404, "this server keeps no traces (start it with --trace-dir DIR)")
        path = settings.trace_dir / f"{trace_id}.jsonl"
        if not _TRACE_ID.fullmatch(trace_id) or not path.is_file():
            raise ApiError(404, f"no trace {trace_id!r}", param="trace_id")
        return Response(await asyncio.to_thread(path.read_bytes), media_type="application/x-ndjson")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        authorize(request)
        req, document, question = await read_request(request)
        agent = agent_for(req)
        if stopping.is_set():
            raise _shutting_down()
        admission.admit()
        cid = "chatcmpl-" + uuid.uuid4().hex
        task = asyncio.ensure_future(answer_in_time(agent, document, question, cid))
        answering.add(task)
        task.add_done_callback(answering.discard)
        task.add_done_callback(lambda _: admission.leave())  # also when cancelled before it ran
        if req.stream:
            return StreamingResponse(_events(request, task, req, cid), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            result = await until_answered_or_gone(request, task)
        except _ClientGone:
            return Response(status_code=499)
        reply = ChatCompletion(id=cid, model=req.model, usage=_usage(result), rememr1=_extension(req, result),
                               choices=[Choice(message=ReplyMessage(content=_content(result)),
                                               finish_reason=_finish(result))])
        return Response(_dump(reply), media_type="application/json")

    async def _events(request: Request, task: asyncio.Task, req: ChatCompletionRequest, cid: str):
        created = int(time.time())

        def chunk(delta: Delta, finish: str | None = None, **extra) -> bytes:
            body = ChatCompletionChunk(id=cid, created=created, model=req.model,
                                       choices=[ChunkChoice(delta=delta, finish_reason=finish)], **extra)
            return b"data: " + _dump(body) + b"\n\n"

        watch = asyncio.ensure_future(_disconnected(request))
        try:
            yield chunk(Delta(role="assistant", content=""))
            while True:
                await asyncio.wait({task, watch}, timeout=settings.keepalive_s, return_when=asyncio.FIRST_COMPLETED)
                if task.done():
                    break
                if watch.done():
                    return  # the client left: `finally` stops its episode
                yield b": keep-alive\n\n"
            try:
                if task.cancelled():
                    raise _shutting_down()
                result = task.result()
            except ApiError as e:
                yield b"data: " + ErrorReply(error=ErrorBody(message=e.message, type=e.type, code=e.code)
                                             ).model_dump_json().encode() + b"\n\n"
                return
            yield chunk(Delta(content=_content(result)))
            yield chunk(Delta(), _finish(result), rememr1=_extension(req, result))
            if req.stream_options and req.stream_options.include_usage:
                body = ChatCompletionChunk(id=cid, created=created, model=req.model, choices=[], usage=_usage(result))
                yield b"data: " + _dump(body) + b"\n\n"
            yield b"data: [DONE]\n\n"
        finally:
            watch.cancel()
            if not task.done():
                task.cancel()

    return app


def _union_tag(part) -> bool:
    """Pydantic names the branch of a union in an error's path ("str", "list[ContentPart]")."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool") or "[" in part or part[:1].isupper())


def _shutting_down() -> ApiError:
    return ApiError(503, "the server is shutting down; retry on another or later", "server_error",
                    code="shutting_down")


def _content(result: AnswerResult) -> str:
    """The answer; without one (no \\boxed{}), the raw final reply, as `ask` prints it."""
    return result.answer if result.answer is not None else result.response.strip()


def _finish(result: AnswerResult) -> str:
    return result.steps[-1].finish_reason if result.steps else "stop"


def _usage(result: AnswerResult) -> Usage:
    u = result.usage
    return Usage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                 total_tokens=u.prompt_tokens + u.completion_tokens)


def _extension(req: ChatCompletionRequest, result: AnswerResult) -> dict | None:
    return {"trace": trace_lines(result)} if req.wants_trace else None


def _dump(model) -> bytes:
    return model.model_dump_json(exclude={"rememr1"} if model.rememr1 is None else None).encode()


def _write_trace(path: Path, result: AnswerResult) -> None:
    import json

    lines = (json.dumps(line, ensure_ascii=False) for line in trace_lines(result))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_server(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve `app` with uvicorn until Ctrl-C (or SIGTERM). Then open requests end at once:
    their episodes are cancelled and their clients told 503 (a stream gets an error event)."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.stop()
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5))
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: a requested stop, not an error
        pass


__all__ = ["Admission", "ApiError", "ServeSettings", "check_bind", "create_app", "run_server"]
