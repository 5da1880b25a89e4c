"""What the viewer shows, read from an eval run directory or an `ask --trace` file.

    data = load_source(Path("runs/r1"))    # {"payload", "title", "meta", "summary_html"}

The payload is plain JSON: `items` (one per method x item, with its steps), `texts` (every
distinct memory text once; steps refer to them by index), `methods`, `files`. Result lines
come from `OUT/{method}/{file}.jsonl`, steps from `OUT/{method}/steps/{file}.jsonl` (the
last line per item wins, as after `--retry-errors`). Both sources hold the same step lines
(`eval.lines.step_line`), and `step_entries` is the one reader of them; older trace lines
(`StepRecord.to_json`: `ask --trace` before, `serve --trace-dir`) are converted on the way
(`eval.lines.as_step_line`).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..eval.lines import as_step_line, read_jsonl


class _Texts:
    """A string table: each distinct text stored once."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, text: str | None) -> int | None:
        if text is None:
            return None
        if text not in self._index:
            self._index[text] = len(self.values)
            self.values.append(text)
        return self._index[text]


def step_entries(entries: list[dict], texts: _Texts) -> list[dict]:
    """The viewer's steps of an item from its step lines, as an eval steps file or an
    `ask --trace` file holds them (older trace lines converted); memories go to `texts`."""
    out = []
    for entry in entries:
        s = as_step_line(entry)
        out.append({
            "step": s["step"], "kind": s["kind"], "span": s.get("span"), "memory": texts.add(s.get("memory", "")),
            "query": s.get("query"), "hits": s.get("hits", []), "recalled_in": s.get("recalled_in", []),
            "finish": s.get("finish"), "error": s.get("error"), "answer": s.get("answer"),
            "entities": s.get("entities"),
        })
    return out


def load_run(run: Path) -> dict[str, Any]:
    from ..eval.report import default_scoring, score_line, summarize
    from ..eval.run import run_config

    config = run_config(run)
    mode = default_scoring(config)
    answer_format = config.get("answer_format", "boxed")
    texts = _Texts()
    items: list[dict] = []
    lines_all: list[dict] = []
    for path in sorted(run.glob("*/*.jsonl")):
        method = path.parent.name
        steps_by_id = {str(s["id"]): s for s in read_jsonl(path.parent / "steps" / path.name)}
        latest: dict[str, dict] = {}
        for line in read_jsonl(path):
            latest[str(line.get("id"))] = line
        for key, line in latest.items():
            lines_all.append(line)
            trace = steps_by_id.get(key, {})
            sub = score_line(line, mode, answer_format)
            items.append({
                "idx": len(items), "id": key, "method": line.get("method", method),
                "file": line.get("file", path.stem), "length": str(line.get("length", "")),
                "question": line.get("question", ""), "answers": line.get("answers", []),
                "pred": line.get("pred"), "correct": None if sub.get("dropped") else sub["sub_em"] >= 1,
                "recalls": line.get("recalls", 0), "error": line.get("error"),
                "names": trace.get("names", {}), "steps": step_entries(trace.get("steps", []), texts),
            })
    if not items:
        raise InputError(f"{run} holds no results to view")
    rows = summarize(lines_all, mode=mode, answer_format=answer_format)
    summary = _table_html(rows, mode) + _plot_html(rows, mode)
    meta = (f"{len(items)} results · model {config.get('model', '?')} · backend {config.get('backend', '?')}"
            f" · scoring {mode}")
    return {"payload": _payload(items, texts), "title": f"rememr1 run: {run.name}", "meta": meta,
            "summary_html": summary}


def load_trace(path: Path) -> dict[str, Any]:
    records = read_jsonl(path)
    steps = [r for r in records if r.get("type") != "result"]
    result = next((r for r in records if r.get("type") == "result"), {})
    if not steps:
        raise InputError(f"{path} holds no steps (is it an `rememr1 ask --trace` file?)")
    texts = _Texts()
    entries = step_entries(steps, texts)
    item = {"idx": 0, "id": str(result.get("sample_id") or "trace"), "method": result.get("method", "?"),
            "file": path.name, "length": str(result.get("document_tokens", "")),
            "question": result.get("question", ""), "answers": [], "pred": result.get("answer"),
            "correct": None, "recalls": sum(1 for e in entries if e["hits"]), "error": result.get("error"),
            "names": {}, "steps": entries}
    meta = (f"{len(steps)} steps · {result.get('n_chunks', '?')} chunks · "
            f"{result.get('prompt_tokens', '?')} prompt + {result.get('completion_tokens', '?')} completion tokens")
    return {"payload": _payload([item], texts), "title": f"rememr1 trace: {path.name}", "meta": meta,
            "summary_html": ""}


def load_source(source: Path) -> dict[str, Any]:
    """An eval run directory or an `ask --trace` file."""
    return load_run(source) if source.is_dir() else load_trace(source)


def _payload(items: list[dict], texts: _Texts) -> dict:
    return {"items": items, "texts": texts.values,
            "methods": sorted({i["method"] for i in items}), "files": sorted({i["file"] for i in items})}


def _table_html(rows: list[dict], mode: str) -> str:
    """The report's table (`eval.report_table`, the cells of report.md) as HTML, every
    cell escaped."""
    from ..eval.report import report_table

    head, body, note = report_table(rows, mode)
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in body]
    out.append("</table>")
    out.append(f'<p class="muted">{html.escape(note)}</p>')
    return "\n".join(out)


def _plot_html(rows: list[dict], mode: str) -> str:
    from ..eval.report import plot

    buf = io.BytesIO()
    plot(rows, buf, mode)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="accuracy by context length" src="data:image/png;base64,{data}">'


__all__ = ["load_run", "load_source", "load_trace", "step_entries"]
