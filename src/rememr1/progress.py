"""Progress bars (rich) for long runs: steps of one answer, items of an evaluation."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class StepProgress:
    """A bar over model calls with an ETA; `advance(record)` after each step."""

    def __init__(self, total: int, *, console: Console, disable: bool = False, label: str = "reading") -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            disable=disable,
            transient=False,
        )
        self.task = self.progress.add_task(label, total=total, info="")
        self.console = self.progress.console

    def __enter__(self) -> StepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def advance(self, record=None, *, info: str | None = None, steps: int = 1) -> None:
        if info is None and record is not None:
            info = "answering" if record.kind == "final" else f"chunk {record.step + 1}"
        self.progress.update(self.task, advance=steps, info=info or "")

    def add_total(self, n: int) -> None:
        task = self.progress.tasks[0]
        self.progress.update(self.task, total=(task.total or 0) + n)
