"""`rememr1 data ...`: build evaluation and training files.

    rememr1 data revhop --out data/revhop --lengths 4k,16k,64k --hops 2,3 --order reverse,forward -n 64
    rememr1 data revhop --out data/warm --lengths 2k --hops 2,3 -n 60 --tokenizer smollm2 --traces   # + SFT data
    rememr1 data longctx --source hotpot_dev_distractor_v1.json --docs 50,200,800 --out data/hotpotqa

`rememr1.cli` mounts `app` as the `data` sub-command. Bad options raise `InputError`,
which the top-level CLI prints as one line.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from rememr1.errors import InputError

app = typer.Typer(
    help="Build evaluation/training data: the offline RevHop benchmark and long-context files "
    "from a local HotpotQA-style file.",
    no_args_is_help=True,
)

_console = Console(stderr=True)


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise InputError(f"{option}: give at least one value")
    return values


def _words(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


class _Bar:
    """Adapts the generators' progress callback (description, done, total) to rich."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def __call__(self, desc: str, done: int, total: int) -> None:
        key = "all"
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(desc, total=total)
        self.progress.update(self.tasks[key], completed=done, total=total, description=desc)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=_console, transient=False,
    )


@app.command("revhop")
def revhop_cmd(
    out: Path = typer.Option(..., "--out", help="Output directory."),
    lengths: str = typer.Option(
        "4k,16k", "--lengths", help="Target lengths in tokens: 4096, 4k, 256k, 1m (k=1024)."
    ),
    hops: str = typer.Option("2,3", "--hops", help="Chain lengths (hops per question)."),
    order: str = typer.Option(
        "reverse,forward", "--order", help="Evidence orders: reverse, forward, random."
    ),
    n: int = typer.Option(64, "-n", "--n", help="Items per (length, hops, order) file."),
    seed: int = typer.Option(0, "--seed", help="World and item seed."),
    workers: int = typer.Option(1, "--workers", help="Worker processes (output does not depend on it)."),
    tokenizer: str | None = typer.Option(
        None, "--tokenizer",
        help="Count tokens with a local HF tokenizer dir, a .gguf file or 'smollm2'; default: words x 1.92.",
    ),
    fmt: str = typer.Option(
        "json,parquet", "--format", help="json (schema D eval) and/or parquet (schema A training)."
    ),
    min_gap: float | None = typer.Option(
        None, "--min-gap",
        help="Minimum tokens between evidence paragraphs (<1: fraction of the length); "
        "default length/(2*hops).",
    ),
    siblings: int = typer.Option(2, "--siblings", help="Sibling paragraphs per hop."),
    decoys: bool = typer.Option(True, "--decoys/--no-decoys", help="Near-miss decoy entities."),
    lazy_above: int = typer.Option(
        1_000_000, "--lazy-above", help="Store contexts above this many tokens as generator specs."
    ),
    world_scale: float = typer.Option(
        1.0, "--world-scale", help="Multiply the world's 5,000 entities (fewer filler repeats)."
    ),
    traces: bool = typer.Option(
        False, "--traces",
        help="Also write traces_*.jsonl: an oracle reply for every step of every item "
        "(supervised warm-start data for `rememr1 sft`).",
    ),
    chunk_size: int = typer.Option(
        512, "--chunk-size", help="With --traces: section size in tokens of the --tokenizer "
        "(default tokenizer: the built-in model's)."
    ),
    templates: str | None = typer.Option(
        None, "--templates", help="With --traces: prompt templates directory (as for `ask`)."
    ),
) -> None:
    """Generate the offline multi-hop benchmark (schema D JSON, schema A parquet)."""
    from rememr1.data.lengths import format_length, parse_length
    from rememr1.data.revhop import generate_revhop

    gap = None if min_gap is None else (min_gap if 0 < min_gap < 1 else int(min_gap))
    formats = _words(fmt)
    if traces and "json" not in formats:
        raise InputError("--traces reads the eval JSON files: keep json in --format")
    if chunk_size < 16:
        raise InputError("--chunk-size must be at least 16 tokens")
    skipped = [x for x in _words(lengths) if parse_length(x) > lazy_above]
    with _progress() as prog:
        paths = generate_revhop(
            out_dir=out, lengths=_words(lengths), hops=_ints(hops, "--hops"), orders=_words(order),
            n=n, seed=seed, workers=workers, tokenizer=tokenizer, formats=formats, min_gap=gap,
            siblings=siblings, decoys=decoys, lazy_above=lazy_above, world_scale=world_scale,
            progress=_Bar(prog),
        )
    if "parquet" in formats and skipped:
        _console.print(
            f"note: no training parquet for {', '.join(format_length(parse_length(x)) for x in skipped)}: "
            f"contexts above --lazy-above are stored as generator specs, not text"
        )
    if traces:
        from rememr1.data.oracle import traces_for_files

        paths += traces_for_files([p for p in paths if p.suffix == ".json"], tokenizer=tokenizer,
                                  chunk_size=chunk_size, templates=templates)
    for p in paths:
        typer.echo(str(p))


@app.command("longctx")
def longctx_cmd(
    source: Path = typer.Option(..., "--source", help="HotpotQA JSON or FlashRAG-style JSONL/parquet file."),
    docs: str = typer.Option("50,100,200,400,800,1600,3200,6400", "--docs", help="Documents per context."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    compat: bool = typer.Option(
        False, "--compat", help="One fixed permutation per length (seed 4), as the original files."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for question selection, sampling and shuffles."),
    n: int | None = typer.Option(None, "-n", "--n", help="Questions per file (default: all)."),
    workers: int = typer.Option(1, "--workers", help="Worker processes (output does not depend on it)."),
    min_distance: str = typer.Option(
        "100,200,400,800,1600", "--min-distance",
        help="Subsets with reverse-ordered evidence at least this many documents apart.",
    ),
    name: str | None = typer.Option(
        None, "--name", help="Dataset name in file names (default from the source file)."
    ),
) -> None:
    """Build long-context schema-D files (eval_{name}_{N}.json and _min_distance_{d} subsets)."""
    from rememr1.data.longctx import build_longctx

    with _progress() as prog:
        paths = build_longctx(
            source, docs=_ints(docs, "--docs"), out_dir=out, seed=seed, compat=compat,
            min_distances=_ints(min_distance, "--min-distance"), n=n, workers=workers, name=name,
            progress=_Bar(prog),
        )
    for p in paths:
        typer.echo(str(p))
