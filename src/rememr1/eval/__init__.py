"""Evaluation: data files x methods through the agent, one JSON line per item, resumable.

    rememr1 eval data/revhop/*.json --method rememr1,memagent,full-context --out runs/r1
    rememr1 eval runs/r1 --report          # table + plot again from saved results

    lines = run_eval(files, make_agent=make, methods=["rememr1"], out_dir=out, config=cfg)
    table, rows = write_report(out, lines=lines)

Three modules: `run` (run_eval: resuming, concurrency, the run directory's config),
`lines` (the result line and step line builders, and `read_jsonl`, the one reader of
JSONL output files), `report` (scoring, the table, summary.json, the plot). The viewer
(`rememr1.viewer`) sits above and reads the report; nothing here imports it.

Layout of a run directory:
    OUT/config.json                 backend, model, sampling and agent options of the run
    OUT/{method}/{file_stem}.jsonl  one result line per finished item, written as it finishes
    OUT/{method}/steps/{file_stem}.jsonl   its step lines, for the run viewer (`steps_line`)
    OUT/report.md, OUT/summary.json, OUT/accuracy.png   written at the end / by --report (`write_report`)
    OUT/report.html                 the run viewer beside them (`viewer.write_run_report`)

Each result line carries what the original scorers read (`pred`, `response`, `judge_em`,
`judge_sub_em`, `judge_f1`) plus ours (method, model, length, steps, tokens, seconds,
error, memory diagnostics for RevHop items). Rerunning the same command skips items whose
line exists, so a crash, kill or Ctrl-C loses at most the items in flight. An item that
fails (empty document, backend error for that request) is recorded with its error and
counts as wrong in strict scoring.
"""

from ..data.lengths import length_of
from .lines import (
    as_step_line,
    diagnostic_names,
    failed_line,
    memory_diagnostics,
    read_jsonl,
    read_lines,
    result_line,
    step_line,
    steps_line,
)
from .report import default_scoring, markdown_table, plot, report_table, score_line, summarize, write_report
from .run import ResultFile, agent_record, run_config, run_eval

__all__ = [
    "ResultFile", "agent_record", "as_step_line", "default_scoring", "diagnostic_names", "failed_line",
    "length_of", "markdown_table", "memory_diagnostics", "plot", "read_jsonl", "read_lines", "report_table",
    "result_line", "run_config", "run_eval", "score_line", "step_line", "steps_line", "summarize",
    "write_report",
]
