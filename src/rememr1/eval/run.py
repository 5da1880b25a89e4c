"""Running an evaluation: data files x methods through the agent, resumable, concurrent.

    lines = run_eval(files, make_agent=make, methods=["rememr1"], out_dir="runs/r1", config=cfg)

`run_eval` writes each item's result line (`lines.result_line`) and step line
(`lines.steps_line`) as the item finishes, into `OUT/{method}/{file}.jsonl` and
`OUT/{method}/steps/{file}.jsonl` (`ResultFile`), and returns the result lines of every
item it was asked for, those found from an earlier run included, so a caller (validation
during training) reads nothing back. Rerunning the same command skips items whose line
exists; a line cut by a crash is dropped and its item runs again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..agent import Agent, Episode, get_method
from ..data.records import agent_document
from ..errors import InputError
from ..records import StepRecord
from .lines import diagnostic_names, read_jsonl, result_line, steps_line


class ResultFile:
    """An append-only JSONL file of item lines that survives being killed mid-write, with
    an optional companion file (`steps`) for the items' step lines. `done` holds the ids
    that have a line; `lines` (with `keep`, not for the step file) the last line per id,
    read at open and kept up to date by `write`."""

    def __init__(self, path: Path, *, steps: Path | None = None, keep: bool = True) -> None:
        self.path = path
        self.steps = ResultFile(steps, keep=False) if steps is not None else None
        self._keep = keep
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):  # a line cut by a crash: drop it
                path.write_bytes(data[: data.rfind(b"\n") + 1])
        self.done: set[str] = set()
        self.lines: dict[str, dict] = {}
        for line in read_jsonl(path):
            self._add(line)
        self._fh = path.open("a", encoding="utf-8")

    def _add(self, line: dict) -> None:
        if "id" in line:
            self.done.add(str(line["id"]))
            if self._keep:
                self.lines[str(line["id"])] = line

    def drop_errors(self) -> None:
        """Remove the lines of items that failed, so they run again."""
        self._fh.close()
        kept = [x for x in read_jsonl(self.path) if not x.get("error")]
        self.done, self.lines = set(), {}
        for line in kept:
            self._add(line)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in kept), encoding="utf-8")
        os.replace(tmp, self.path)
        self._fh = self.path.open("a", encoding="utf-8")

    def write(self, line: dict) -> None:
        self._fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._add(line)

    def close(self) -> None:
        self._fh.close()
        if self.steps is not None:
            self.steps.close()


def agent_record(agent) -> dict[str, Any]:
    """What a run directory records of an `AgentConfig` (all but the method, which each
    result line carries): its options and the compatibility switches that are on."""
    record = dataclasses.asdict(agent)
    record.pop("method")
    record.pop("compat")
    record["compat_switches"] = agent.compat.active()
    return record


def run_config(out_dir: str | Path) -> dict:
    """The configuration a run directory was started with ({} if none was saved)."""
    path = Path(out_dir) / "config.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}


def _check_config(out_dir: Path, config: dict) -> None:
    path = out_dir / "config.json"
    if path.exists():
        old = json.loads(path.read_text())
        diff = sorted(k for k in config if k in old and old[k] != config[k])
        if diff:
            raise InputError(
                f"{out_dir} holds results of a different configuration ({', '.join(diff)} "
                "differ); use another --out or the same options"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2, sort_keys=True))


def run_eval(
    files: Sequence[str | Path],
    *,
    make_agent: Callable[[str], Agent],
    methods: Sequence[str],
    out_dir: str | Path,
    config: dict,
    limit: int | None = None,
    concurrency: int = 4,
    hotpot_dev: str | None = None,
    retry_errors: bool = False,
    on_item: Callable[[dict], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    on_step: Callable[[Episode, StepRecord], None] | None = None,
) -> list[dict]:
    """Evaluate every item of every file with every method, writing lines as they finish;
    returns the result line of every (method, item) asked for, in method, file, item order
    (lines of an earlier run of the same directory included).

    `make_agent(method)` builds the agent for a method (same backend for all). `config`
    describes the run and must match what `out_dir` was started with.
    """
    from ..data.loaders import load_samples

    out = Path(out_dir)
    for m in methods:
        get_method(m)
    _check_config(out, config)
    datasets = []
    for f in files:
        samples = load_samples(str(f), hotpot_dev=hotpot_dev)
        if limit is not None:
            samples = samples[:limit]
        datasets.append((Path(f), samples))
    plan = []
    for method in methods:
        for path, samples in datasets:
            rf = ResultFile(out / method / f"{path.stem}.jsonl",
                            steps=out / method / "steps" / f"{path.stem}.jsonl")
            if retry_errors:
                rf.drop_errors()
            todo = [s for s in samples if str(s.id) not in rf.done]
            plan.append((method, samples, path, rf, todo))
    if on_total is not None:
        on_total(sum(len(t) for *_, t in plan))
    try:
        for method, _, path, rf, todo in plan:
            if not todo:
                continue
            agent = make_agent(method)
            model = agent.backend.model_name
            src = path.name

            eps = _episodes(agent, todo, rf, method=method, model=model, source=src, on_item=on_item)
            for ep in agent.run_iter(eps, on_step=on_step, concurrency=concurrency):
                result = ep.result()
                line = result_line(ep.tag, result, method=method, model=model, source=src)
                # steps first: the result line is what marks the item done on resume
                rf.steps.write(steps_line(ep.tag.id, result.steps,
                                          diagnostic_names(ep.tag.metadata, ep.tag.answers)))
                rf.write(line)
                if on_item:
                    on_item(line)
    finally:
        for *_, rf, _ in plan:
            rf.close()
    return [rf.lines[str(s.id)] for _, samples, _, rf, _ in plan for s in samples if str(s.id) in rf.lines]


def _episodes(agent: Agent, todo, rf: ResultFile, *, method: str, model: str, source: str,
              on_item) -> Iterator[Episode]:
    """Episodes for the items still to do, created lazily; an item whose episode cannot
    be built (empty document, empty question) is recorded as failed right away."""
    for s in todo:
        try:
            yield agent.episode(agent_document(s.context), s.question, sample_id=str(s.id),
                                index=_stable_index(s.id), tag=s)
        except InputError as e:
            line = result_line(s, None, method=method, model=model, source=source, error=str(e))
            rf.write(line)
            if on_item:
                on_item(line)


def _stable_index(sample_id) -> int:
    """A per-item seed index from the id, so seeds do not depend on run order."""
    return zlib.crc32(str(sample_id).encode())


__all__ = ["ResultFile", "agent_record", "run_config", "run_eval"]
