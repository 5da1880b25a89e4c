"""Writing RevHop files: `generate_revhop` runs items on worker processes and writes
`eval_revhop_h{H}_{order}_{len}.json` (schema D) and, for lengths stored as text,
`train_revhop_h{H}_{order}_{len}.parquet` (schema A).

Every random draw is per item, so the files are identical for any worker count; results
come back in job order (`ordered_map`) and are streamed to disk group by group.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rememr1.data.io import JsonArrayWriter
from rememr1.data.lengths import format_length, parse_length
from rememr1.data.parallel import ordered_map
from rememr1.data.revhop.item import LAZY_ABOVE, make_item, to_training_row
from rememr1.data.revhop.layout import ORDERS
from rememr1.data.revhop.world import build_world
from rememr1.data.tokens import make_token_counter
from rememr1.errors import InputError

FORMATS = ("json", "parquet")

ProgressFn = Callable[[str, int, int], None]

_W: dict[str, Any] = {}


def _init_worker(opts: dict[str, Any]) -> None:
    _W.clear()
    _W.update(opts)
    _W["counter"] = make_token_counter(opts["tokenizer"])
    build_world(opts["seed"], opts["world_scale"])


def _work(job: tuple[int, int, str, int]) -> tuple[str, dict[str, Any] | None]:
    length, hops, order, index = job
    rec = make_item(
        seed=_W["seed"], length=length, hops=hops, order=order, index=index,
        counter=_W["counter"], min_gap=_W["min_gap"], siblings=_W["siblings"],
        decoys=_W["decoys"], world_scale=_W["world_scale"], lazy_above=_W["lazy_above"],
    )
    row = to_training_row(rec) if ("parquet" in _W["formats"] and not rec["lazy"]) else None
    return json.dumps(rec, ensure_ascii=False), row


def _parse_list(values: Sequence[Any] | str, what: str) -> list[Any]:
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    values = list(values)
    if not values:
        raise InputError(f"{what}: give at least one value")
    return values


def generate_revhop(
    *,
    out_dir: str | os.PathLike,
    lengths: Sequence[int | str],
    hops: Sequence[int],
    orders: Sequence[str],
    n: int,
    seed: int = 0,
    workers: int = 1,
    tokenizer: Any = None,
    formats: Sequence[str] = FORMATS,
    min_gap: int | float | None = None,
    siblings: int = 2,
    decoys: bool = True,
    lazy_above: int = LAZY_ABOVE,
    world_scale: float = 1.0,
    progress: ProgressFn | None = None,
) -> list[Path]:
    """Write `eval_revhop_h{H}_{order}_{len}.json` (schema D) and, for lengths stored as
    text, `train_revhop_h{H}_{order}_{len}.parquet` (schema A). Returns the paths."""
    lens = [parse_length(x) for x in _parse_list(lengths, "--lengths")]
    hop_list = [int(h) for h in _parse_list(hops, "--hops")]
    order_list = [str(o).strip() for o in _parse_list(orders, "--order")]
    fmt = [str(f).strip() for f in _parse_list(formats, "--format")]
    for h in hop_list:
        if h < 1:
            raise InputError(f"--hops must be at least 1, got {h}")
    for o in order_list:
        if o not in ORDERS:
            raise InputError(f"unknown order {o!r}: use one of {', '.join(ORDERS)}")
    for f in fmt:
        if f not in FORMATS:
            raise InputError(f"unknown format {f!r}: use json and/or parquet")
    if n < 1:
        raise InputError("-n must be at least 1")
    if siblings < 0:
        raise InputError("--siblings must be 0 or more")
    if not world_scale > 0:
        raise InputError("--world-scale must be positive")
    if not isinstance(tokenizer, (str, os.PathLike, type(None))) and workers > 1:
        workers = 1  # a tokenizer object may not survive pickling; stay in-process
    if isinstance(tokenizer, os.PathLike):
        tokenizer = str(tokenizer)
    make_token_counter(tokenizer)  # fail early on a bad --tokenizer
    opts = {
        "seed": seed, "tokenizer": tokenizer, "min_gap": min_gap, "siblings": siblings,
        "decoys": decoys, "world_scale": world_scale, "lazy_above": lazy_above, "formats": fmt,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    groups = [(L, h, o) for L in lens for h in hop_list for o in order_list]
    jobs = [(L, h, o, i) for (L, h, o) in groups for i in range(n)]
    results = ordered_map(_work, jobs, workers=workers, initializer=_init_worker, initargs=(opts,))
    try:
        _write_groups(results, groups, n, fmt, out, lazy_above, written, progress, len(jobs))
    finally:
        results.close()
    return written


def _write_groups(results, groups, n, fmt, out, lazy_above, written, progress, total) -> None:
    done = 0
    for L, h, o in groups:
        stem = f"revhop_h{h}_{o}_{format_length(L)}"
        json_path = out / f"eval_{stem}.json"
        want_parquet = "parquet" in fmt and L <= lazy_above
        pq_path = out / f"train_{stem}.parquet"
        rows: list[dict[str, Any]] = []
        pq_writer = None
        try:
            with JsonArrayWriter(json_path) if "json" in fmt else _Null() as jw:
                for _ in range(n):
                    text, row = next(results)
                    jw.write(text)
                    if want_parquet and row is not None:
                        rows.append(row)
                        if len(rows) >= 16:
                            pq_writer = _write_rows(pq_path, rows, pq_writer)
                            rows = []
                    done += 1
                    if progress:
                        progress(f"revhop {stem}", done, total)
            if want_parquet:
                pq_writer = _write_rows(pq_path, rows, pq_writer)
                pq_writer.close()
                pq_writer = None
                tmp = pq_path.with_name(pq_path.name + ".part")
                os.replace(tmp, pq_path)
                written.append(pq_path)
        finally:
            if pq_writer is not None:  # failed part-way: drop the partial file
                pq_writer.close()
                pq_path.with_name(pq_path.name + ".part").unlink(missing_ok=True)
        if "json" in fmt:
            written.append(json_path)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def write(self, _):
        pass


def _write_rows(path: Path, rows: list[dict[str, Any]], writer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".part")
    if writer is None:
        schema = pa.schema([
            ("data_source", pa.string()),
            ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
            ("context", pa.large_string()),
            ("reward_model", pa.struct([("ground_truth", pa.list_(pa.string())), ("style", pa.string())])),
            ("extra_info", pa.struct([
                ("index", pa.int64()), ("question", pa.string()), ("num_docs", pa.int64()),
            ])),
        ])
        writer = pq.ParquetWriter(tmp, schema)
    if rows:
        writer.write_table(pa.Table.from_pylist(rows, schema=writer.schema))
    return writer
