"""The run viewer: one self-contained HTML file to see what the agent remembered.

    rememr1 view runs/r1 -o report.html          # an eval run directory
    rememr1 view trace.jsonl -o trace.html        # an `ask --trace` file
    write_run_report("runs/r1")                   # what `rememr1 eval` writes at the end

The viewer sits above evaluation: it reads the report (`rememr1.eval.report`: the summary
rows, the table, the plot) and the lines (`rememr1.eval.lines`: result and step lines), and
evaluation never imports it. `write_run_report` is the one call that writes a run's report
files and this page together.

The page holds the run's table and accuracy plot, a filterable list of items, and per item
a step timeline: the chunk's token span, the memory after each step with the words it
gained or lost highlighted, each recall query with the memories it brought back (linked to
the steps that wrote them), truncation and error marks, the final answer against the gold
answers, and for RevHop items where each bridge entity and the answer were in the chunk,
in memory, dropped, or recalled. The same item under another method opens side by side.

Big runs stay light: the data travel as one gzip-compressed JSON blob (memories that
repeat are stored once) that the page inflates in the browser, and a step is turned into
DOM only when its item is opened. Everything from the run is inserted as text, never as
HTML, so documents and model output cannot run code or break the page. No network: CSS,
JavaScript and the plot are inline.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import InputError
from .data import load_source


def render_html(payload: dict[str, Any], *, title: str, meta: str, summary_html: str) -> str:
    """The page for a payload (`data.load_source`); `summary_html` is trusted markup."""
    page = resources.files("rememr1.viewer").joinpath("page.html").read_text(encoding="utf-8")
    blob = base64.b64encode(gzip.compress(json.dumps(payload, ensure_ascii=False).encode("utf-8"), 6))
    for key, value in (("__TITLE__", html.escape(title)), ("__META__", html.escape(meta)),
                       ("__SUMMARY__", summary_html), ("__PAYLOAD__", blob.decode("ascii"))):
        page = page.replace(key, value)
    return page


def write_viewer(source: str | Path, out: str | Path | None = None) -> Path:
    """Write the viewer of an eval run directory or an `ask --trace` file; returns its path
    (default: `report.html` in the run directory, or the trace's name with `.html`)."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"no such run directory or trace file: {source}")
    data = load_source(source)
    if out is None:
        out = source / "report.html" if source.is_dir() else source.with_suffix(".html")
    out = Path(out)
    page = render_html(data["payload"], title=data["title"], meta=data["meta"],
                       summary_html=data["summary_html"])
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def write_report_html(run_dir: str | Path) -> Path:
    """`report.html` beside `report.md` in an eval run directory."""
    return write_viewer(run_dir, Path(run_dir) / "report.html")


def write_run_report(run_dir: str | Path, *, mode: str | None = None) -> tuple[str, list[dict]]:
    """Everything a finished eval run directory gets: the report (`eval.write_report`:
    report.md, summary.json, accuracy.png) and then `report.html`. Returns the report's
    table and rows. `mode` None: the run's default scoring."""
    from ..eval.report import write_report

    table, rows = write_report(run_dir, mode=mode)
    write_report_html(run_dir)
    return table, rows


__all__ = ["render_html", "write_report_html", "write_run_report", "write_viewer"]
