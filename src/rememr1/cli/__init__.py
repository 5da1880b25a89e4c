"""The `rememr1` command line (entry point `rememr1 = rememr1.cli:main`).

    rememr1 ask REPORT.txt -q "Which company built the ship?"          # built-in model, CPU
    rememr1 eval data/*.json --out runs/e                             # a table, a plot, a viewer page
    rememr1 serve                                                      # OpenAI-compatible endpoint on :8000
    rememr1 train --data 'train/*.parquet' --out runs/rl               # RL with multi-level rewards
    rememr1 data revhop --out data/                                    # build benchmark data

The commands live in `cli.agent` (ask, eval, view, serve), `cli.train` (train, sft) and
`cli.data` (data ...); `cli.options` turns the config dataclasses' fields into their
options. Errors that are the user's or the environment's (missing file, empty document,
server down, ...) print one line `error: ...` on stderr and exit non-zero; see `errors.py`.
"""

from __future__ import annotations

import sys

import typer

from ..errors import RememrError
from .agent import ask, err, eval_cmd, read_document, serve, view
from .data import app as data_app
from .train import sft, train

app = typer.Typer(
    help="Answer questions over very long documents with a revisitable-memory agent.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(ask)
app.command("eval")(eval_cmd)
app.command()(view)
app.command()(serve)
app.add_typer(data_app, name="data", help="Build evaluation and training data (RevHop, long-context HotpotQA).")
app.command("train", help="Train the memory agent with RL and multi-level rewards (GRPO-style).")(train)
app.command("sft", help="Supervised warm-start on oracle traces (LoRA or full), before RL.")(sft)


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


__all__ = ["app", "main", "read_document"]
