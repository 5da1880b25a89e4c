"""The report of an evaluation run: scores per (method, length), the table, summary.json, the plot.

    table, rows = write_report("runs/r1")               # report.md, summary.json, accuracy.png
    rows = summarize(lines, mode="official")             # the rows behind them

Result lines are scored in one of two modes (`metrics.SCORING_MODES`): strict, from the
agent's answer (`pred`) against every gold alias, or official, from the raw final reply as
the original scorer reads it. `report_table` gives the table as text cells, which
`markdown_table` and the viewer's HTML table both render; the viewer imports this module,
never the reverse.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from ..data.lengths import length_sort_key
from ..errors import InputError
from ..metrics import SCORING_MODES, aggregate, score, score_official
from .lines import read_lines
from .run import run_config


def default_scoring(config: dict) -> str:
    """The scoring a run reports unless told otherwise: official for `--compat official`."""
    return "official" if config.get("compat") == "official" else "strict"


def score_line(line: dict, mode: str, answer_format: str = "boxed") -> dict:
    """A result line scored in `mode`: strict from its `pred` (the agent's answer rule),
    official from its raw final `response` and whether it failed (`metrics.score_official`)."""
    if mode == "official":
        return score_official(line.get("response"), line["answers"], failed=bool(line.get("error")),
                              answer_format=answer_format)
    return score(line["pred"], line["answers"])


def summarize(lines: Sequence[dict], *, mode: str = "strict", answer_format: str = "boxed") -> list[dict]:
    """One row per (method, length): accuracy with its Wilson interval, cost."""
    if mode not in SCORING_MODES:
        raise InputError(f"unknown scoring {mode!r}; choose one of: {', '.join(SCORING_MODES)}")
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for line in lines:
        groups[(line["method"], str(line["length"]))].append(line)
    rows = []
    for (method, length), items in groups.items():
        agg = aggregate([score_line(i, mode, answer_format) for i in items])
        rows.append({
            "method": method,
            "length": length,
            **agg,
            "errors": sum(1 for i in items if i.get("error")),
            "mean_seconds": sum(i["seconds"] for i in items) / len(items),
            "mean_tokens": sum(i["prompt_tokens"] + i["completion_tokens"] for i in items) / len(items),
        })
    rows.sort(key=lambda r: (r["method"], length_sort_key(r["length"])))
    return rows


def report_table(rows: Sequence[dict], mode: str) -> tuple[list[str], list[list[str]], str]:
    """The report's table as text cells: the header (method, then each length), one row
    per method (accuracy [Wilson interval] (n) per length), and the note printed under it.
    `markdown_table` and the viewer's HTML table both render these cells."""
    methods = sorted({r["method"] for r in rows})
    lengths = sorted({r["length"] for r in rows}, key=length_sort_key)
    cell = {(r["method"], r["length"]): r for r in rows}
    body = []
    for m in methods:
        cells = [m]
        for n in lengths:
            r = cell.get((m, n))
            if r is None or r["accuracy"] is None:
                cells.append("–")
            else:
                cells.append(f"{r['accuracy']:.1f} [{r['ci_low']:.1f}, {r['ci_high']:.1f}] (n={r['n']})")
        body.append(cells)
    dropped = sum(r["n_dropped"] for r in rows)
    note = (
        f"Accuracy = sub-EM × 100, scoring `{mode}` "
        + ("(any gold alias; items without an answer, failed ones included, count as wrong)"
           if mode == "strict"
           else "(the official scorer: first gold alias only; answer = last box after the last "
                f"</think>; only failed generations are dropped: {dropped} here)")
        + "; brackets: Wilson 95% interval."
    )
    return ["method", *lengths], body, note


def markdown_table(rows: Sequence[dict], mode: str) -> str:
    """The report's table (`report_table`) as markdown, its note under it."""
    head, body, note = report_table(rows, mode)
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---|" * (len(head) - 1)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join([*lines, "", note])


def plot(rows: Sequence[dict], path, mode: str):
    """Accuracy by context length, one line per method with Wilson error bars, saved as
    PNG to `path` (a file path or a binary file object); returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({r["length"] for r in rows}, key=length_sort_key)
    x = {n: i for i, n in enumerate(lengths)}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for m in sorted({r["method"] for r in rows}):
        rs = [r for r in rows if r["method"] == m and r["accuracy"] is not None]
        rs.sort(key=lambda r: x[r["length"]])
        xs = [x[r["length"]] for r in rs]
        ys = [r["accuracy"] for r in rs]
        err = [[y - r["ci_low"] for y, r in zip(ys, rs)], [r["ci_high"] - y for y, r in zip(ys, rs)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=m)
    ax.set_xticks(range(len(lengths)), lengths)
    ax.set_xlabel("context length")
    ax.set_ylabel(f"accuracy (sub-EM %, {mode})")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(out_dir: str | Path, *, mode: str | None = None,
                 lines: Sequence[dict] | None = None) -> tuple[str, list[dict]]:
    """Table (`report.md`), summary JSON and plot of a run directory; returns the table
    and its rows. `lines`: the result lines to report (what `run_eval` returned); None
    reads the directory's saved lines. `mode` None: the run's default (`default_scoring`).
    The HTML viewer beside them is the viewer's (`viewer.write_run_report` writes both):
    the viewer reads the report, never the reverse."""
    out = Path(out_dir)
    if not out.is_dir():
        raise InputError(f"no such run directory: {out}")
    if lines is None:
        lines = read_lines(out)
    if not lines:
        raise InputError(f"{out} holds no results yet")
    config = run_config(out)
    mode = mode or default_scoring(config)
    rows = summarize(lines, mode=mode, answer_format=config.get("answer_format", "boxed"))
    table = markdown_table(rows, mode)
    (out / "report.md").write_text(table + "\n", encoding="utf-8")
    (out / "summary.json").write_text(json.dumps({"mode": mode, "rows": rows}, indent=2))
    plot(rows, out / "accuracy.png", mode)
    return table, rows


__all__ = ["default_scoring", "markdown_table", "plot", "report_table", "score_line", "summarize",
           "write_report"]
