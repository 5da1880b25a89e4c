"""The agent's commands: `ask`, `eval`, `view` and `serve` (registered in `rememr1.cli`).

    rememr1 ask REPORT.txt -q "Which company built the ship?"          # built-in model, CPU
    rememr1 ask book.md -q "..." --backend openai --base-url http://127.0.0.1:8000/v1 --model M
    cat doc.txt | rememr1 ask - -q "..." --backend hf --model ./ckpt --method memagent --trace t.jsonl
    rememr1 eval data/*.json --out runs/e --method rememr1,memagent
    rememr1 serve                                                      # OpenAI-compatible endpoint on :8000

Their agent, sampling, backend and compatibility options come from the config classes
(`AgentConfig`, `SamplingParams`, `BackendOptions`, `AgentCompat`) through
`cli.options.config_options`: each flag is declared once, on its field.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..agent.config import AgentConfig
from ..agent.methods import METHODS, get_method
from ..backends import BackendOptions
from ..backends.base import SamplingParams
from ..compat import AgentCompat
from ..errors import InputError
from .options import PRESET_OPTION, config_options, options_of

err = Console(stderr=True, highlight=False)
QuietOpt = typer.Option(False, "--quiet", help="no progress bar")
# The groups of options `ask`, `eval` and `serve` share (the method is each command's own).
SHARED = dict(agent=AgentConfig, sampling=SamplingParams, compat=AgentCompat, backend=BackendOptions)


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


def build_agent(preset: str, agent: dict, compat: dict, **fields) -> AgentConfig:
    """The AgentConfig of command-line options: `agent` the AgentConfig fields given (and
    `fields`), `compat` the switches (None = as the preset says)."""
    from ..compat import agent_compat

    return AgentConfig(compat=agent_compat(preset, training=False, **compat), **agent, **fields)


@config_options(**SHARED)
def ask(
    document: str = typer.Argument(..., help="Document file, or - for standard input."),
    question: str = typer.Option(..., "--question", "-q", help="The question to answer."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="write one JSON line per step, then the result"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show each step's memory and recall"),
    quiet: bool = QuietOpt,
    encoding: str = typer.Option("utf-8", "--encoding", help="document encoding"),
    compat_preset: str = PRESET_OPTION,
    agent: dict = None, sampling: dict = None, compat: dict = None, backend: dict = None,
) -> None:
    """Answer QUESTION about DOCUMENT; the answer goes to stdout."""
    from ..progress import StepProgress

    from ..agent import Agent
    from ..eval.lines import step_line

    cfg = build_agent(compat_preset, agent, compat)
    sampling = get_method(cfg.method).sampling(**sampling)
    text = read_document(document, encoding)
    if not question.strip():
        raise InputError("the question is empty")
    be = BackendOptions(**backend).load()
    with be:
        agent = Agent(be, config=cfg, sampling=sampling)
        episode = agent.episode(text, question)
        trace_file = _open_trace(trace)
        try:
            with StepProgress(episode.n_steps, console=err, disable=quiet) as progress:

                def on_step(ep, rec):
                    if trace_file:  # the step line of an eval steps file, with the prompt and reply
                        trace_file.write(json.dumps(step_line(rec, detail=True), ensure_ascii=False) + "\n")
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
        missing = "\\boxed{}" if cfg.answer_format == "boxed" else "'the answer is'"
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


@config_options(exclude={"method"}, **SHARED)
def eval_cmd(
    inputs: list[str] = typer.Argument(..., help="Data files or globs (schemas A–D), or with --report a run directory."),
    method: str = typer.Option("rememr1", "--method", help=f"comma-separated: {','.join(METHODS)}"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run directory (results are appended; reruns resume)"),
    report: bool = typer.Option(False, "--report", help="only rebuild the table and plot of a run directory"),
    scoring: Optional[str] = typer.Option(None, "--scoring", help="strict (default: any alias, no answer = wrong) | official (the official scorer: first alias, only failed generations dropped; default with --compat official)"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="first N items of each file"),
    hotpot_dev: Optional[str] = typer.Option(None, "--hotpot-dev", help="HotpotQA dev JSON, to rebuild index-only MemAgent contexts"),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="rerun items recorded with an error"),
    quiet: bool = QuietOpt,
    compat_preset: str = PRESET_OPTION,
    agent: dict = None, sampling: dict = None, compat: dict = None, backend: dict = None,
) -> None:
    """Evaluate methods on data files; one JSON line per item, a table and a plot at the end."""
    import dataclasses
    import glob

    from ..agent import Agent
    from ..backends import DEFAULT_CONCURRENCY
    from ..compat import check_preset
    from ..eval import agent_record, default_scoring, run_eval
    from ..metrics import SCORING_MODES
    from ..progress import StepProgress
    from ..viewer import write_run_report

    if scoring is not None and scoring not in SCORING_MODES:
        raise InputError(f"unknown scoring {scoring!r}; choose strict or official")
    if report:
        if len(inputs) != 1:
            raise InputError("--report takes exactly one run directory")
        table, _ = write_run_report(out or inputs[0], mode=scoring)
        print(table)
        return
    if out is None:
        raise InputError("--out is required (the run directory for results)")
    preset = check_preset(compat_preset)
    scoring = scoring or default_scoring({"compat": preset})
    methods = [m.strip() for m in method.split(",") if m.strip()]
    for m in methods:
        get_method(m)
    base = build_agent(preset, agent, compat, method=methods[0] if methods else "rememr1")
    files: list[str] = []
    for pattern in inputs:
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not matches:
            raise InputError(f"no files match {pattern}")
        for f in matches:
            if not Path(f).is_file():
                raise InputError(f"no such file: {f}")
            files.append(f)
    backend = BackendOptions(**backend)
    be = backend.load()
    config = {"backend": backend.backend, "model": be.model_name, **agent_record(base), **sampling,
              "compat": preset}

    def make_agent(m: str) -> Agent:
        return Agent(be, config=dataclasses.replace(base, method=m),
                     sampling=get_method(m).sampling(**sampling))

    with be, StepProgress(0, console=err, disable=quiet, label="items") as progress:
        correct = [0, 0]

        def on_item(line):
            correct[0] += line["judge_sub_em"] >= 1
            correct[1] += 1
            progress.advance(info=f"{line['method']} acc {100 * correct[0] / correct[1]:.1f}%")

        run_eval(files, make_agent=make_agent, methods=methods, out_dir=out, config=config,
                 limit=limit, concurrency=backend.concurrency or DEFAULT_CONCURRENCY[backend.backend.lower()],
                 hotpot_dev=hotpot_dev,
                 retry_errors=retry_errors, on_item=on_item, on_total=progress.add_total)
    table, _ = write_run_report(out, mode=scoring)
    print(table)
    err.print(f"results in {out} (report.md, report.html, summary.json, accuracy.png)")


def view(
    source: Path = typer.Argument(..., help="An eval run directory or an `ask --trace` file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write (default: report.html in the run directory, or TRACE.html)"),
) -> None:
    """Write one self-contained HTML page to browse a run: the table, the items, and each
    item's memory step by step."""
    from ..viewer import write_viewer

    path = write_viewer(source, out)
    size = path.stat().st_size
    print(path)
    err.print(f"{size / 1e6:.1f} MB; open it in a browser (no network needed)")


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

    from ..agent import Agent
    from ..serve import ServeSettings, check_bind, create_app, run_server

    methods = [m.strip() for m in method.split(",") if m.strip()]
    if not methods:
        raise InputError("--method names no method")
    for m in methods:
        get_method(m)
    check_bind(host, api_key)
    settings = ServeSettings(api_key=api_key, max_document_bytes=max_document_bytes, max_messages=max_messages,
                             max_episodes=max_episodes, max_queue=max_queue, request_timeout=request_timeout,
                             keepalive_s=keepalive, trace_dir=trace_dir)
    base = build_agent(opts["compat_preset"], opts["agent"], opts["compat"], method=methods[0])
    be = BackendOptions(**opts["backend"], api_key=upstream_api_key).load()
    with be:
        agents = {m: Agent(be, config=dataclasses.replace(base, method=m),
                           sampling=get_method(m).sampling(**opts["sampling"]))
                  for m in methods}
        app_ = create_app(agents, settings)
        err.print(f"serving {', '.join(methods)} with {be.model_name} at http://{host}:{port}/v1; Ctrl-C stops",
                  markup=False, highlight=False, soft_wrap=True)
        run_server(app_, host=host, port=port, log_level=log_level)
        err.print("stopped; a model step already running finishes before the model is released")


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
