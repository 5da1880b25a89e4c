"""Evaluation: data files × methods through the agent, one JSON line per item, resumable.

    rememr1 eval data/revhop/*.json --method rememr1,memagent,full-context --out runs/r1
    rememr1 eval runs/r1 --report          # table + plot again from saved results

Layout of a run directory:
    OUT/config.json                 backend, model, sampling and agent options of the run
    OUT/{method}/{file_stem}.jsonl  one line per finished item, written as it finishes
    OUT/{method}/steps/{file_stem}.jsonl   its steps, for the run viewer (`steps_line`)
    OUT/report.md, OUT/summary.json, OUT/accuracy.png, OUT/report.html   written at the end / by --report

Each line carries what the original scorers read (`pred`, `response`, `judge_em`,
`judge_sub_em`, `judge_f1`) plus ours (method, model, length, steps, tokens, seconds,
error, memory diagnostics for RevHop items). Rerunning the same command skips items whose
line exists, so a crash, kill or Ctrl-C loses at most the items in flight. An item that
fails (empty document, backend error for that request) is recorded with its error and
counts as wrong in strict scoring.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .agent import Agent, Episode, get_method
from .data.records import agent_document
from .errors import InputError
from .metrics import SCORING_MODES, aggregate, normalize_answer, score, score_official
from .records import MEMORY_STEP, AnswerResult, StepRecord

def length_of(metadata: dict[str, Any]) -> str:
    """The context-length label an item is reported under: the target length in tokens
    as 4k / 1m for RevHop and RULER items, else the number of documents (HotpotQA-style,
    as the papers report it)."""
    from .data.revhop import format_length

    n = metadata.get("length")
    if metadata.get("num_docs") not in (None, "") and metadata.get("data_source") != "revhop":
        return str(metadata["num_docs"])
    if isinstance(n, int) and n > 0:
        return format_length(n)
    return str(n) if n not in (None, "") else "?"


def _length_sort_key(label: str):
    s = label.lower().strip()
    mult = {"k": 1024, "m": 1024**2}.get(s[-1:], 1)
    try:
        return (0, float(s[:-1] if mult > 1 else s) * mult)
    except ValueError:
        return (1, s)


# ------------------------------------------------------------------------- diagnostics


def memory_diagnostics(steps: Sequence[StepRecord], names: dict[str, str]) -> dict[str, dict]:
    """Where each named string (bridge entities, the answer) lived in the memory.

    For each name: the first memory step whose new memory contains it (`entered`), whether
    the last memory still holds it (`at_end`), and whether a recall ever showed it while
    the current memory lacked it (`recalled_back`). Matching is on normalised text.
    """
    out = {}
    mem_steps = [s for s in steps if s.kind == "memory"]
    for role, name in names.items():
        key = normalize_answer(name)
        if not key:
            continue
        entered = next((s.step for s in mem_steps if key in normalize_answer(s.memory_after)), None)
        last = mem_steps[-1].memory_after if mem_steps else ""
        back = any(
            key not in normalize_answer(s.memory_before)
            and any(key in normalize_answer(h.text) for h in s.recalled_in)
            for s in steps
        )
        out[role] = {"name": name, "entered": entered, "at_end": key in normalize_answer(last),
                     "recalled_back": back}
    return out


def diagnostic_names(metadata: dict[str, Any], answers: Sequence[str]) -> dict[str, str]:
    """The strings worth tracking for an item: RevHop's bridge entities and the answer."""
    names = {}
    for i, b in enumerate(metadata.get("bridge_entities") or []):
        names[f"bridge_{i + 1}"] = b
    if names and answers:
        names["answer"] = answers[0]
    return names


# ---------------------------------------------------------------------------- results


def item_line(sample, result: AnswerResult, *, method: str, model: str, source: str) -> dict:
    s = score(result.answer, sample.answers)
    line = {
        "id": sample.id,
        "file": source,
        "method": method,
        "model": model,
        "question": sample.question,
        "answers": list(sample.answers),
        "pred": result.answer,
        "response": result.response,
        "judge_em": s["em"],
        "judge_sub_em": s["sub_em"],
        "judge_f1": s["f1"],
        "length": length_of(sample.metadata),
        "document_tokens": result.document_tokens,
        "n_chunks": result.n_chunks,
        "steps": len(result.steps),
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
        "seconds": round(result.usage.seconds, 3),
        "truncated_steps": sum(1 for r in result.steps if r.truncated),
        "recalls": sum(1 for r in result.steps if r.recall_hits),
        "error": result.error,
    }
    names = diagnostic_names(sample.metadata, sample.answers)
    if names:
        line["diagnostics"] = memory_diagnostics(result.steps, names)
    return line


def steps_line(sample_id, steps: Sequence[StepRecord], names: dict[str, str]) -> dict:
    """What the run viewer shows of an item's steps (written beside its result line):
    per step its kind, chunk span, the memory it left, its recall query and the steps
    whose memories came back (with scores), what the prompt showed as recalled, finish
    reason, error, the answer of the final step, whether a memory step wrote exactly one
    closed <update>, and for each tracked name (RevHop bridge
    entities, the answer) whether it was in the chunk, in the new memory, and shown by a
    recall while the memory lacked it."""
    keys = {role: normalize_answer(name) for role, name in names.items() if normalize_answer(name)}
    out = []
    for r in steps:
        entry: dict[str, Any] = {
            "step": r.step, "kind": str(r.kind), "span": list(r.chunk_span) if r.chunk_span else None,
            "memory": r.memory_after, "query": r.recall_query,
            "hits": [[h.step, round(h.score, 4)] for h in r.recall_hits],
            "recalled_in": [h.step for h in r.recalled_in], "finish": r.finish_reason,
            "error": r.error, "answer": r.answer, "tokens": r.completion_tokens,
            # memory steps: exactly one closed <update> block (the protocol's format)
            "update_ok": (r.n_update == 1 and r.update_closed) if r.kind == MEMORY_STEP else None,
        }
        if keys:
            chunk, memory = normalize_answer(r.chunk), normalize_answer(r.memory_after)
            before = normalize_answer(r.memory_before)
            recalled = normalize_answer(" ".join(h.text for h in r.recalled_in))
            entry["entities"] = {role: [key in chunk, key in memory, key in recalled and key not in before]
                                 for role, key in keys.items()}
        out.append(entry)
    return {"id": str(sample_id), "names": names, "steps": out}


def failed_line(sample, error: str, *, method: str, model: str, source: str) -> dict:
    s = score(None, sample.answers)
    return {
        "id": sample.id, "file": source, "method": method, "model": model,
        "question": sample.question, "answers": list(sample.answers), "pred": None,
        "response": "", "judge_em": s["em"], "judge_sub_em": s["sub_em"],
        "judge_f1": s["f1"], "length": length_of(sample.metadata), "document_tokens": 0,
        "n_chunks": 0, "steps": 0, "prompt_tokens": 0, "completion_tokens": 0,
        "seconds": 0.0, "truncated_steps": 0, "recalls": 0, "error": error,
    }


class ResultFile:
    """An append-only JSONL file of item lines that survives being killed mid-write, with
    an optional companion file (`steps`) for the items' step lines."""

    def __init__(self, path: Path, *, steps: Path | None = None) -> None:
        self.path = path
        self.steps = ResultFile(steps) if steps is not None else None
        path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = set()
        if path.exists():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):  # a line cut by a crash: drop it
                data = data[: data.rfind(b"\n") + 1]
                path.write_bytes(data)
            for raw in data.splitlines():
                try:
                    self.done.add(str(json.loads(raw)["id"]))
                except (ValueError, KeyError):
                    continue
        self._fh = path.open("a", encoding="utf-8")

    def drop_errors(self) -> None:
        """Remove the lines of items that failed, so they run again."""
        self._fh.close()
        kept = []
        for raw in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(raw).get("error"):
                    self.done.discard(str(json.loads(raw)["id"]))
                    continue
            except ValueError:
                continue
            kept.append(raw + "\n")
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, self.path)
        self._fh = self.path.open("a", encoding="utf-8")

    def write(self, line: dict) -> None:
        self._fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.done.add(str(line["id"]))

    def close(self) -> None:
        self._fh.close()
        if self.steps is not None:
            self.steps.close()


def read_jsonl(path: Path) -> list[dict]:
    """The lines of one JSONL file ([] if it does not exist); a line cut by a crash is skipped."""
    out = []
    if not path.exists():
        return out
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return out


def read_lines(out_dir: Path) -> list[dict]:
    """Every result line of a run directory (`OUT/{method}/{file}.jsonl`)."""
    return [line for path in sorted(Path(out_dir).glob("*/*.jsonl")) for line in read_jsonl(path)]


# ------------------------------------------------------------------------------- run


def agent_record(agent) -> dict[str, Any]:
    """What a run directory records of an `AgentConfig` (all but the method, which each
    result line carries): its options and the compatibility switches that are on."""
    import dataclasses

    record = dataclasses.asdict(agent)
    record.pop("method")
    record.pop("compat")
    record["compat_switches"] = agent.compat.active()
    return record


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
) -> None:
    """Evaluate every item of every file with every method, writing lines as they finish.

    `make_agent(method)` builds the agent for a method (same backend for all). `config`
    describes the run and must match what `out_dir` was started with.
    """
    from .data.loaders import load_samples

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
            plan.append((method, path, rf, todo))
    if on_total is not None:
        on_total(sum(len(t) for *_, t in plan))
    try:
        for method, path, rf, todo in plan:
            if not todo:
                continue
            agent = make_agent(method)
            model = agent.backend.model_name
            src = path.name

            eps = _episodes(agent, todo, rf, method=method, model=model, source=src, on_item=on_item)
            for ep in agent.run_iter(eps, on_step=on_step, concurrency=concurrency):
                result = ep.result()
                line = item_line(ep.tag, result, method=method, model=model, source=src)
                # steps first: the result line is what marks the item done on resume
                rf.steps.write(steps_line(ep.tag.id, result.steps,
                                          diagnostic_names(ep.tag.metadata, ep.tag.answers)))
                rf.write(line)
                if on_item:
                    on_item(line)
    finally:
        for *_, rf, _ in plan:
            rf.close()


def _episodes(agent: Agent, todo, rf: ResultFile, *, method: str, model: str, source: str,
              on_item) -> Iterator[Episode]:
    """Episodes for the items still to do, created lazily; an item whose episode cannot
    be built (empty document, empty question) is recorded as failed right away."""
    for s in todo:
        try:
            yield agent.episode(agent_document(s.context), s.question, sample_id=str(s.id),
                                index=_stable_index(s.id), tag=s)
        except InputError as e:
            line = failed_line(s, str(e), method=method, model=model, source=source)
            rf.write(line)
            if on_item:
                on_item(line)


def _stable_index(sample_id) -> int:
    """A per-item seed index from the id, so seeds do not depend on run order."""
    import zlib

    return zlib.crc32(str(sample_id).encode())


# ----------------------------------------------------------------------------- report


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
    rows.sort(key=lambda r: (r["method"], _length_sort_key(r["length"])))
    return rows


def markdown_table(rows: Sequence[dict], mode: str) -> str:
    methods = sorted({r["method"] for r in rows})
    lengths = sorted({r["length"] for r in rows}, key=_length_sort_key)
    cell = {(r["method"], r["length"]): r for r in rows}
    head = "| method | " + " | ".join(lengths) + " |"
    sep = "|---|" + "---|" * len(lengths)
    body = []
    for m in methods:
        cells = []
        for n in lengths:
            r = cell.get((m, n))
            if r is None or r["accuracy"] is None:
                cells.append("–")
            else:
                cells.append(f"{r['accuracy']:.1f} [{r['ci_low']:.1f}, {r['ci_high']:.1f}] (n={r['n']})")
        body.append(f"| {m} | " + " | ".join(cells) + " |")
    dropped = sum(r["n_dropped"] for r in rows)
    note = (
        f"Accuracy = sub-EM × 100, scoring `{mode}` "
        + ("(any gold alias; items without an answer, failed ones included, count as wrong)"
           if mode == "strict"
           else "(the official scorer: first gold alias only; answer = last box after the last "
                f"</think>; only failed generations are dropped: {dropped} here)")
        + "; brackets: Wilson 95% interval."
    )
    return "\n".join([head, sep, *body, "", note])


def plot(rows: Sequence[dict], path: Path, mode: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({r["length"] for r in rows}, key=_length_sort_key)
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


def run_config(out_dir: str | Path) -> dict:
    """The configuration a run directory was started with ({} if none was saved)."""
    path = Path(out_dir) / "config.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}


def default_scoring(config: dict) -> str:
    """The scoring a run reports unless told otherwise: official for `--compat official`."""
    return "official" if config.get("compat") == "official" else "strict"


def write_report(out_dir: str | Path, *, mode: str | None = None) -> tuple[str, list[dict]]:
    """Table, summary JSON, plot and the HTML viewer (`report.html`) from the saved lines
    of a run directory. `mode` None: the run's default (`default_scoring`)."""
    out = Path(out_dir)
    if not out.is_dir():
        raise InputError(f"no such run directory: {out}")
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
    from .viewer import write_report_html

    write_report_html(out)
    return table, rows


__all__ = ["memory_diagnostics", "run_eval", "summarize", "write_report"]
