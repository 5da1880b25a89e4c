"""The `rememr1` command line.

    rememr1 ask REPORT.txt -q "Which company built the ship?"          # built-in model, CPU
    rememr1 ask book.md -q "..." --backend openai --base-url http://127.0.0.1:8000/v1 --model M
    cat doc.txt | rememr1 ask - -q "..." --backend hf --model ./ckpt --method memagent --trace t.jsonl
    rememr1 serve                                                      # OpenAI-compatible endpoint on :8000

Errors that are the user's or the environment's (missing file, empty document, server
down, ...) print one line `error: ...` on stderr and exit non-zero; see `errors.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .errors import InputError, RememrError

app = typer.Typer(
    help="Answer questions over very long documents with a revisitable-memory agent.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True, highlight=False)

from .data.cli import app as data_app  # noqa: E402  (light: heavy imports happen inside commands)

app.add_typer(data_app, name="data", help="Build evaluation and training data (RevHop, long-context HotpotQA).")

from .rl.cli import sft, train  # noqa: E402

app.command("train", help="Train the memory agent with RL and multi-level rewards (GRPO-style).")(train)
app.command("sft", help="Supervised warm-start on oracle traces (LoRA or full), before RL.")(sft)


def read_document(path: str, encoding: str = "utf-8") -> str:
    """Read a document from a path or '-' (stdin) with a clear error for every failure."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
            where = "standard input"
        else:
            p = Path(path)
            if not p.exists():
                raise InputError(f"no such file: {path}")
            if p.is_dir():
                raise InputError(f"{path} is a directory, not a document")
            data = p.read_bytes()
            where = path
    except PermissionError:
        raise InputError(f"cannot read {path}: permission denied") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        raise InputError(
            f"{where} is not valid {encoding} text (byte 0x{data[e.start]:02x} at offset "
            f"{e.start}); convert it to UTF-8 or pass --encoding"
        ) from None
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r}") from None
    if not text.strip():
        raise InputError(f"the document {where} is empty")
    return text


def backend_options(
    backend: str, model: Optional[str], base_url: Optional[str], api_key: Optional[str],
    dtype: str, device: str, concurrency: int, timeout: float, tokenizer: Optional[str],
    adapter: Optional[str] = None, no_adapter: bool = False,
):
    from .backends import load_backend

    if adapter is not None and no_adapter:
        raise InputError("give --adapter PATH or --no-adapter, not both")

    return load_backend(
        backend,
        model=model,
        base_url=base_url,
        api_key=api_key,
        dtype=dtype,
        device=device,
        concurrency=concurrency,
        timeout=timeout,
        tokenizer=tokenizer,
        adapter=False if no_adapter else (adapter or True),
    )


# Options shared by `ask`, `eval` and `train`, declared once.
BackendOpt = typer.Option("llamacpp", "--backend", "-b", help="llamacpp | hf | openai")
ModelOpt = typer.Option(
    None, "--model", "-m",
    help="GGUF file (llamacpp), HF directory or .gguf (hf), or the server's model name "
    "(openai). Default: the built-in SmolLM2-135M-Instruct.",
)
BaseUrlOpt = typer.Option(None, "--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
ApiKeyOpt = typer.Option(None, "--api-key", help="API key for --backend openai (default $OPENAI_API_KEY)")
DtypeOpt = typer.Option("auto", "--dtype", help="hf: auto | float32 | bfloat16 | float16")
DeviceOpt = typer.Option("auto", "--device", help="hf: auto | cpu | cuda")
ConcurrencyOpt = typer.Option(
    None, "--concurrency",
    help="requests in flight at once (default: 1 for llamacpp, where more are decoded together in one "
    "context; 8 hf sequences per batch; 8 HTTP requests)",
)
TimeoutOpt = typer.Option(600.0, "--timeout", help="seconds per request (openai)")
TokenizerOpt = typer.Option(None, "--tokenizer", help="openai: local tokenizer (HF dir or .gguf) used for chunking")
AdapterOpt = typer.Option(
    None, "--adapter",
    help="LoRA adapter to apply: a PEFT directory (`rememr1 sft` checkpoint; llamacpp converts it "
    "to GGUF once) or a GGUF LoRA file (llamacpp). Default: the built-in model's packaged adapter.",
)
NoAdapterOpt = typer.Option(False, "--no-adapter", help="the built-in model without its packaged adapter")
ChunkSizeOpt = typer.Option(None, "--chunk-size", help="tokens per chunk (default 5000, shrunk to fit the model's window)")
MaxNewOpt = typer.Option(None, "--max-new-tokens", help="token budget per step (default 2048 rememr1, 1024 memagent)")
MaxContextOpt = typer.Option(None, "--max-context-tokens", help="cap on document tokens (keeps the first and last halves)")
RetrieverOpt = typer.Option("tfidf", "--retriever", help="tfidf | bm25 | overlap | dense")
TopKOpt = typer.Option(1, "--top-k", help="memories recalled per query")
TemperatureOpt = typer.Option(0.7, "--temperature")
TopPOpt = typer.Option(0.95, "--top-p")
SeedOpt = typer.Option(0, "--seed", help="sampling seed (per step, independent of batching)")
FallbackOpt = typer.Option("keep", "--fallback", help="memory when a reply has no <update>: keep | reply | empty")
TemplatesOpt = typer.Option(None, "--templates", help="directory with replacement prompt templates")
AnswerFormatOpt = typer.Option(
    "boxed", "--answer-format",
    help="how the final reply states the answer: boxed (last \\boxed{}) | answer-is (text after 'the answer is')",
)
QuietOpt = typer.Option(False, "--quiet", help="no progress bar")

# Official-code compatibility (SPEC §9, rememr1.compat): a preset and one switch per behaviour.
_COMPAT_PANEL = "Official-code compatibility (off by default)"
CompatOpt = typer.Option(
    "none", "--compat", rich_help_panel=_COMPAT_PANEL,
    help="none | official: behave like the official ReMemR1 code (memory, history, retrieval, "
    "recall parsing; eval also scores officially). Switches below override the preset.",
)


def _switch(name: str, help: str):
    return typer.Option(None, f"--{name}/--no-{name}", help=help, rich_help_panel=_COMPAT_PANEL,
                        show_default=False)


WholeReplyMemoryOpt = _switch("whole-reply-memory", "memory = the whole reply minus <recall> spans, at every step")
VerbatimMemoryOpt = _switch("verbatim-memory", "memories enter prompts as written (their tags not defused)")
MemorySetOpt = _switch("memory-set", "history keeps each distinct memory once")
RecallCurrentOpt = _switch("recall-current", "retrieve after adding the new memory (it is a candidate too)")
TfidfModelTokensOpt = _switch("tfidf-model-tokens", "TF-IDF over the model tokenizer's pieces")
RecallAtZeroOpt = _switch("recall-at-zero", "return the top-1 even when nothing matches")
OfficialRecallOpt = _switch("official-recall", "query = first greedy single-line <recall>(.+)</recall>, placeholders too")


def agent_config(method: str, *, compat: str, switches: dict, chunk_size, max_context_tokens,
                 retriever, top_k, fallback, templates, answer_format):
    """The AgentConfig of command-line options (shared by ask and eval); `switches` are
    the explicit compatibility switches (None = as the preset says)."""
    from .agent import AgentConfig
    from .compat import agent_compat

    return AgentConfig(
        method=method, chunk_size=chunk_size, max_context_tokens=max_context_tokens,
        retriever=retriever, top_k=top_k, fallback=fallback, templates=templates,
        answer_format=answer_format, compat=agent_compat(compat, training=False, **switches),
    )


@app.command()
def ask(
    document: str = typer.Argument(..., help="Document file, or - for standard input."),
    question: str = typer.Option(..., "--question", "-q", help="The question to answer."),
    backend: str = BackendOpt,
    model: Optional[str] = ModelOpt,
    base_url: Optional[str] = BaseUrlOpt,
    api_key: Optional[str] = ApiKeyOpt,
    method: str = typer.Option("rememr1", "--method", help="rememr1 | memagent | rule-callback | full-context | rag"),
    chunk_size: Optional[int] = ChunkSizeOpt,
    max_new_tokens: Optional[int] = MaxNewOpt,
    max_context_tokens: Optional[int] = MaxContextOpt,
    retriever: str = RetrieverOpt,
    top_k: int = TopKOpt,
    temperature: float = TemperatureOpt,
    top_p: float = TopPOpt,
    seed: Optional[int] = SeedOpt,
    fallback: str = FallbackOpt,
    templates: Optional[str] = TemplatesOpt,
    answer_format: str = AnswerFormatOpt,
    compat: str = CompatOpt,
    whole_reply_memory: Optional[bool] = WholeReplyMemoryOpt,
    verbatim_memory: Optional[bool] = VerbatimMemoryOpt,
    memory_set: Optional[bool] = MemorySetOpt,
    recall_current: Optional[bool] = RecallCurrentOpt,
    tfidf_model_tokens: Optional[bool] = TfidfModelTokensOpt,
    recall_at_zero: Optional[bool] = RecallAtZeroOpt,
    official_recall: Optional[bool] = OfficialRecallOpt,
    trace: Optional[Path] = typer.Option(None, "--trace", help="write one JSON line per step, then the result"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show each step's memory and recall"),
    quiet: bool = QuietOpt,
    encoding: str = typer.Option("utf-8", "--encoding", help="document encoding"),
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
    concurrency: Optional[int] = ConcurrencyOpt,
    timeout: float = TimeoutOpt,
    tokenizer: Optional[str] = TokenizerOpt,
    adapter: Optional[str] = AdapterOpt,
    no_adapter: bool = NoAdapterOpt,
) -> None:
    """Answer QUESTION about DOCUMENT; the answer goes to stdout."""
    from .progress import StepProgress

    from .agent import Agent

    cfg = agent_config(
        method, compat=compat, chunk_size=chunk_size, max_context_tokens=max_context_tokens,
        retriever=retriever, top_k=top_k, fallback=fallback, templates=templates,
        answer_format=answer_format,
        switches=dict(whole_reply_memory=whole_reply_memory, verbatim_memory=verbatim_memory,
                      memory_set=memory_set, recall_current=recall_current,
                      tfidf_model_tokens=tfidf_model_tokens, recall_at_zero=recall_at_zero,
                      official_recall=official_recall),
    )
    sampling = make_sampling(method, max_new_tokens, temperature, top_p, seed)
    text = read_document(document, encoding)
    if not question.strip():
        raise InputError("the question is empty")
    be = backend_options(backend, model, base_url, api_key, dtype, device, concurrency, timeout, tokenizer,
                         adapter, no_adapter)
    with be:
        agent = Agent(be, config=cfg, sampling=sampling)
        episode = agent.episode(text, question)
        trace_file = _open_trace(trace)
        try:
            with StepProgress(episode.n_steps, console=err, disable=quiet) as progress:

                def on_step(ep, rec):
                    if trace_file:
                        trace_file.write(json.dumps(rec.to_json(), ensure_ascii=False) + "\n")
                        trace_file.flush()
                    if verbose:
                        _show_step(rec, progress.console)
                    progress.advance(rec)

                result = agent.run([episode], on_step=on_step)[0]
            if trace_file:
                trace_file.write(json.dumps(result.summary_json(), ensure_ascii=False) + "\n")
        finally:
            if trace_file:
                trace_file.close()
    if result.error:
        err.print(f"warning: {result.error}")
    if result.answer is None:
        missing = "\\boxed{}" if answer_format == "boxed" else "'the answer is'"
        err.print(f"note: the model gave no {missing} answer; showing its raw final reply")
        print(result.response.strip())
    else:
        print(result.answer)
    if verbose:
        u = result.usage
        err.print(
            f"{result.n_chunks} chunks of {agent.chunk_size} tokens, {result.document_tokens} "
            f"document tokens; {u.prompt_tokens} prompt + {u.completion_tokens} completion "
            f"tokens; {u.seconds:.1f} s ({u.model_seconds:.1f} s in the model)"
        )


@app.command("eval")
def eval_cmd(
    inputs: list[str] = typer.Argument(..., help="Data files or globs (schemas A–D), or with --report a run directory."),
    method: str = typer.Option("rememr1", "--method", help="comma-separated: rememr1,memagent,rule-callback,full-context,rag"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run directory (results are appended; reruns resume)"),
    report: bool = typer.Option(False, "--report", help="only rebuild the table and plot of a run directory"),
    scoring: Optional[str] = typer.Option(None, "--scoring", help="strict (default: any alias, no answer = wrong) | official (the official scorer: first alias, only failed generations dropped; default with --compat official)"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="first N items of each file"),
    hotpot_dev: Optional[str] = typer.Option(None, "--hotpot-dev", help="HotpotQA dev JSON, to rebuild index-only MemAgent contexts"),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="rerun items recorded with an error"),
    backend: str = BackendOpt,
    model: Optional[str] = ModelOpt,
    base_url: Optional[str] = BaseUrlOpt,
    api_key: Optional[str] = ApiKeyOpt,
    chunk_size: Optional[int] = ChunkSizeOpt,
    max_new_tokens: Optional[int] = MaxNewOpt,
    max_context_tokens: Optional[int] = MaxContextOpt,
    retriever: str = RetrieverOpt,
    top_k: int = TopKOpt,
    temperature: float = TemperatureOpt,
    top_p: float = TopPOpt,
    seed: Optional[int] = SeedOpt,
    fallback: str = FallbackOpt,
    templates: Optional[str] = TemplatesOpt,
    answer_format: str = AnswerFormatOpt,
    compat: str = CompatOpt,
    whole_reply_memory: Optional[bool] = WholeReplyMemoryOpt,
    verbatim_memory: Optional[bool] = VerbatimMemoryOpt,
    memory_set: Optional[bool] = MemorySetOpt,
    recall_current: Optional[bool] = RecallCurrentOpt,
    tfidf_model_tokens: Optional[bool] = TfidfModelTokensOpt,
    recall_at_zero: Optional[bool] = RecallAtZeroOpt,
    official_recall: Optional[bool] = OfficialRecallOpt,
    quiet: bool = QuietOpt,
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
    concurrency: Optional[int] = ConcurrencyOpt,
    timeout: float = TimeoutOpt,
    tokenizer: Optional[str] = TokenizerOpt,
    adapter: Optional[str] = AdapterOpt,
    no_adapter: bool = NoAdapterOpt,
) -> None:
    """Evaluate methods on data files; one JSON line per item, a table and a plot at the end."""
    import dataclasses
    import glob

    from .agent import Agent, get_method
    from .backends import DEFAULT_CONCURRENCY
    from .compat import check_preset
    from .eval import agent_record, default_scoring, run_eval, write_report
    from .metrics import SCORING_MODES
    from .progress import StepProgress

    if scoring is not None and scoring not in SCORING_MODES:
        raise InputError(f"unknown scoring {scoring!r}; choose strict or official")
    if report:
        if len(inputs) != 1:
            raise InputError("--report takes exactly one run directory")
        table, _ = write_report(out or inputs[0], mode=scoring)
        print(table)
        return
    if out is None:
        raise InputError("--out is required (the run directory for results)")
    compat = check_preset(compat)
    scoring = scoring or default_scoring({"compat": compat})
    methods = [m.strip() for m in method.split(",") if m.strip()]
    for m in methods:
        get_method(m)
    base = agent_config(
        methods[0] if methods else "rememr1", compat=compat, chunk_size=chunk_size,
        max_context_tokens=max_context_tokens, retriever=retriever, top_k=top_k,
        fallback=fallback, templates=templates, answer_format=answer_format,
        switches=dict(whole_reply_memory=whole_reply_memory, verbatim_memory=verbatim_memory,
                      memory_set=memory_set, recall_current=recall_current,
                      tfidf_model_tokens=tfidf_model_tokens, recall_at_zero=recall_at_zero,
                      official_recall=official_recall),
    )
    files: list[str] = []
    for pattern in inputs:
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not matches:
            raise InputError(f"no files match {pattern}")
        for f in matches:
            if not Path(f).is_file():
                raise InputError(f"no such file: {f}")
            files.append(f)
    be = backend_options(backend, model, base_url, api_key, dtype, device, concurrency, timeout, tokenizer,
                         adapter, no_adapter)
    config = {"backend": backend, "model": be.model_name, **agent_record(base),
              "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
              "seed": seed, "compat": compat}

    def make_agent(m: str) -> Agent:
        return Agent(be, config=dataclasses.replace(base, method=m),
                     sampling=make_sampling(m, max_new_tokens, temperature, top_p, seed))

    with be, StepProgress(0, console=err, disable=quiet, label="items") as progress:
        correct = [0, 0]

        def on_item(line):
            correct[0] += line["judge_sub_em"] >= 1
            correct[1] += 1
            progress.advance(info=f"{line['method']} acc {100 * correct[0] / correct[1]:.1f}%")

        run_eval(files, make_agent=make_agent, methods=methods, out_dir=out, config=config,
                 limit=limit, concurrency=concurrency or DEFAULT_CONCURRENCY[backend.lower()],
                 hotpot_dev=hotpot_dev,
                 retry_errors=retry_errors, on_item=on_item, on_total=progress.add_total)
    table, _ = write_report(out, mode=scoring)
    print(table)
    err.print(f"results in {out} (report.md, report.html, summary.json, accuracy.png)")


@app.command()
def view(
    source: Path = typer.Argument(..., help="An eval run directory or an `ask --trace` file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write (default: report.html in the run directory, or TRACE.html)"),
) -> None:
    """Write one self-contained HTML page to browse a run: the table, the items, and each
    item's memory step by step."""
    from .viewer import write_viewer

    path = write_viewer(source, out)
    size = path.stat().st_size
    print(path)
    err.print(f"{size / 1e6:.1f} MB; open it in a browser (no network needed)")


def options_of(command, *, exclude: set[str]):
    """Give the decorated command all of `command`'s options but those in `exclude` (same
    flags, help and defaults, declared once, in `command`); it receives them as one dict,
    `opts`. `serve` takes `ask`'s backend, method and agent options this way."""
    import functools
    import inspect

    borrowed = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name not in exclude]
    names = [p.name for p in borrowed]

    def decorate(fn):
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "opts"]

        @functools.wraps(fn)
        def wrapper(**kwargs):
            opts = {name: kwargs.pop(name) for name in names}
            return fn(opts=opts, **kwargs)

        params = own + borrowed
        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


from .agent.methods import METHODS  # noqa: E402  (the default of `serve --method`)


@app.command()
@options_of(ask, exclude={"document", "question", "method", "api_key", "trace", "verbose", "quiet", "encoding"})
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (beyond loopback only with --api-key)"),
    port: int = typer.Option(8000, "--port", help="port to listen on"),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", envvar="REMEMR1_API_KEY",
        help="key clients must send (Authorization: Bearer KEY); default $REMEMR1_API_KEY"),
    upstream_api_key: Optional[str] = typer.Option(
        None, "--upstream-api-key", help="API key for --backend openai (default $OPENAI_API_KEY)"),
    method: str = typer.Option(
        ",".join(METHODS), "--method",
        help="comma-separated methods to serve; clients pick one by model name"),
    max_document_bytes: int = typer.Option(32_000_000, "--max-document-bytes", help="largest document (UTF-8 bytes); larger: 413"),
    max_messages: int = typer.Option(1000, "--max-messages", help="most messages per request; more: 413"),
    max_episodes: int = typer.Option(8, "--max-episodes", help="episodes answered at once"),
    max_queue: int = typer.Option(64, "--max-queue", help="requests waiting beyond those; more: 429 with Retry-After"),
    request_timeout: float = typer.Option(3600.0, "--request-timeout", help="seconds per request, queue included; then 504"),
    keepalive: float = typer.Option(10.0, "--keepalive", help="seconds between keep-alives of a streamed reply"),
    trace_dir: Optional[Path] = typer.Option(
        None, "--trace-dir", help="keep every answer's step trace here, served at GET /v1/traces/{id}"),
    log_level: str = typer.Option("info", "--log-level", help="server log: debug | info (one line per request) | warning"),
    opts: dict = None,
) -> None:
    """Serve the agent as an OpenAI-compatible chat endpoint: the last user message is the
    question, the messages before it the document (any length)."""
    import dataclasses

    from .agent import Agent, get_method
    from .compat import AgentCompat
    from .serve import ServeSettings, check_bind, create_app, run_server

    methods = [m.strip() for m in method.split(",") if m.strip()]
    if not methods:
        raise InputError("--method names no method")
    for m in methods:
        get_method(m)
    check_bind(host, api_key)
    settings = ServeSettings(api_key=api_key, max_document_bytes=max_document_bytes, max_messages=max_messages,
                             max_episodes=max_episodes, max_queue=max_queue, request_timeout=request_timeout,
                             keepalive_s=keepalive, trace_dir=trace_dir)
    switches = {k: opts.pop(k) for k in AgentCompat.names()}
    sampling = {k: opts.pop(k) for k in ("max_new_tokens", "temperature", "top_p", "seed")}
    backend = {k: opts.pop(k) for k in ("backend", "model", "base_url", "dtype", "device", "concurrency",
                                        "timeout", "tokenizer", "adapter", "no_adapter")}
    base = agent_config(methods[0], compat=opts.pop("compat"), switches=switches, **opts)
    be = backend_options(api_key=upstream_api_key, **backend)
    with be:
        agents = {m: Agent(be, config=dataclasses.replace(base, method=m), sampling=make_sampling(m, **sampling))
                  for m in methods}
        app_ = create_app(agents, settings)
        err.print(f"serving {', '.join(methods)} with {be.model_name} at http://{host}:{port}/v1; Ctrl-C stops",
                  markup=False, highlight=False, soft_wrap=True)
        run_server(app_, host=host, port=port, log_level=log_level)
        err.print("stopped; a model step already running finishes before the model is released")


def make_sampling(method: str, max_new_tokens, temperature: float, top_p: float, seed):
    """Sampling settings from CLI options; the token budget defaults per method."""
    from .agent import get_method
    from .backends.base import SamplingParams

    return SamplingParams(
        max_new_tokens=max_new_tokens or get_method(method).default_max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
    )


def _open_trace(path: Optional[Path]):
    if path is None:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("w", encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot write trace file {path}: {e.strerror or e}") from None


def _show_step(rec, console: Console) -> None:
    def short(s: str, n: int = 400) -> str:
        s = " ".join(s.split())
        return s if len(s) <= n else s[: n - 1] + "…"

    if rec.kind == "memory":
        console.print(f"[bold]step {rec.step + 1}[/] tokens {rec.chunk_span} ({rec.finish_reason})")
        console.print(f"  memory: {short(rec.memory_after)}", markup=False)
        if rec.recall_query:
            console.print(f"  recall: {short(rec.recall_query, 200)}", markup=False)
            for h in rec.recall_hits:
                console.print(f"    hit from step {h.step + 1} (score {h.score:.3f}): {short(h.text, 200)}", markup=False)
    else:
        console.print(f"[bold]final[/] answer: {rec.answer!r} ({rec.finish_reason})")


def main() -> None:
    """Entry point: run the app, turning RememrError into a one-line message."""
    try:
        app()
    except RememrError as e:
        err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
