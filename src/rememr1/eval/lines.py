"""The lines an evaluation writes, and the one reader of JSON Lines output files.

    line = result_line(sample, result, method="rememr1", model="m", source="eval_4k.json")
    steps = steps_line(sample.id, result.steps, diagnostic_names(sample.metadata, sample.answers))
    trace = step_line(rec, detail=True)        # what `rememr1 ask --trace` writes per step
    lines = read_jsonl(path)                   # any of them back ([] for a missing file)

A *result line* is one item's outcome (the keys the original scorers read, plus cost and
memory diagnostics); `result_line` builds it, for an item that ran and for one that could
not (`result=None`). A *step line* is what one agent step did, in one shape for both
writers: the steps file of an eval run (`{"id", "names", "steps": [step line, ...]}` per
item) and the `ask --trace` file (one step line per step, `detail=True`, then the answer's
summary, `"type": "result"`). The viewer reads both through `as_step_line`, which also
turns the older trace lines (`StepRecord.to_json`, still what `serve --trace-dir` keeps)
into step lines.

Step line keys: step, kind, span ([start, end) tokens or null), memory (after the step),
query (its recall query), hits ([[step, score], ...] it retrieved), recalled_in (the steps
whose memories its prompt showed), finish, error, answer, tokens (completion tokens),
well_formed (`records.well_formed`), and with tracked names `entities`
({role: [in chunk, in memory, recalled while missing]}). `detail=True` adds prompt, reply,
thinking, chunk, memory_before, prompt_tokens and seconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..data.lengths import length_of
from ..metrics import normalize_answer, score
from ..records import AnswerResult, StepRecord, well_formed

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


# ------------------------------------------------------------------------ result lines


def result_line(sample, result: AnswerResult | None, *, method: str, model: str, source: str,
                error: str | None = None) -> dict:
    """The one result line of an item: scored strictly against its gold aliases, with its
    cost and, for RevHop items, memory diagnostics. `result=None`: the item could not run
    (`error` says why); it has no answer, zero cost, and counts as wrong."""
    answer = result.answer if result is not None else None
    s = score(answer, sample.answers)
    steps = result.steps if result is not None else []
    line = {
        "id": sample.id,
        "file": source,
        "method": method,
        "model": model,
        "question": sample.question,
        "answers": list(sample.answers),
        "pred": answer,
        "response": result.response if result is not None else "",
        "judge_em": s["em"],
        "judge_sub_em": s["sub_em"],
        "judge_f1": s["f1"],
        "length": length_of(sample.metadata),
        "document_tokens": result.document_tokens if result is not None else 0,
        "n_chunks": result.n_chunks if result is not None else 0,
        "steps": len(steps),
        "prompt_tokens": result.usage.prompt_tokens if result is not None else 0,
        "completion_tokens": result.usage.completion_tokens if result is not None else 0,
        "seconds": round(result.usage.seconds, 3) if result is not None else 0.0,
        "truncated_steps": sum(1 for r in steps if r.truncated),
        "recalls": sum(1 for r in steps if r.recall_hits),
        "error": result.error if result is not None else error,
    }
    names = diagnostic_names(sample.metadata, sample.answers) if result is not None else {}
    if names:
        line["diagnostics"] = memory_diagnostics(steps, names)
    return line


def failed_line(sample, error: str, *, method: str, model: str, source: str) -> dict:
    """The result line of an item that could not run (`result_line` with no result)."""
    return result_line(sample, None, method=method, model=model, source=source, error=error)


# -------------------------------------------------------------------------- step lines


def step_line(rec: StepRecord, keys: dict[str, str] | None = None, *, detail: bool = False) -> dict:
    """The step line of one step (the module docstring lists its keys). `keys`: tracked
    names, already normalised ({role: normalize_answer(name)}), for `entities`."""
    line: dict[str, Any] = {
        "step": rec.step, "kind": str(rec.kind), "span": list(rec.chunk_span) if rec.chunk_span else None,
        "memory": rec.memory_after, "query": rec.recall_query,
        "hits": [[h.step, round(h.score, 4)] for h in rec.recall_hits],
        "recalled_in": [h.step for h in rec.recalled_in], "finish": rec.finish_reason,
        "error": rec.error, "answer": rec.answer, "tokens": rec.completion_tokens,
        # the one format rule the rewards and training metrics use (`records.well_formed`)
        "well_formed": well_formed(rec),
    }
    if keys:
        chunk, memory = normalize_answer(rec.chunk), normalize_answer(rec.memory_after)
        before = normalize_answer(rec.memory_before)
        recalled = normalize_answer(" ".join(h.text for h in rec.recalled_in))
        line["entities"] = {role: [key in chunk, key in memory, key in recalled and key not in before]
                            for role, key in keys.items()}
    if detail:
        line.update(prompt=rec.messages, reply=rec.reply, thinking=rec.thinking, chunk=rec.chunk,
                    memory_before=rec.memory_before, prompt_tokens=rec.prompt_tokens,
                    seconds=rec.seconds)
    return line


def steps_line(sample_id, steps: Sequence[StepRecord], names: dict[str, str]) -> dict:
    """What an eval run keeps of an item's steps (written beside its result line): one
    step line per step, and for each tracked name (RevHop bridge entities, the answer)
    whether it was in the chunk, in the new memory, and shown by a recall while the memory
    lacked it."""
    keys = {role: normalize_answer(name) for role, name in names.items() if normalize_answer(name)}
    return {"id": str(sample_id), "names": names, "steps": [step_line(r, keys) for r in steps]}


_DETAIL = ("prompt", "reply", "thinking", "chunk", "memory_before", "prompt_tokens", "seconds")
_COUNTS = ("n_update", "n_recall", "n_boxed", "update_closed")


def as_step_line(entry: dict) -> dict:
    """A step line from any step entry on disk: a step line as it is, or an older trace
    line (`StepRecord.to_json`: `chunk_span`, `memory_after`, `recall_hits`, ...; what
    `ask --trace` wrote before and `serve --trace-dir` keeps) converted."""
    if "memory_after" not in entry and "finish_reason" not in entry:
        return entry
    line: dict[str, Any] = {
        "step": entry["step"], "kind": entry["kind"], "span": entry.get("chunk_span"),
        "memory": entry.get("memory_after", ""), "query": entry.get("recall_query"),
        "hits": [[h["step"], round(h["score"], 4)] for h in entry.get("recall_hits") or []],
        "recalled_in": entry.get("recalled_from_step",
                                 [h["step"] for h in entry.get("recalled_in") or []]),
        "finish": entry.get("finish_reason"), "error": entry.get("error"), "answer": entry.get("answer"),
        "tokens": entry.get("completion_tokens"),
    }
    if all(k in entry for k in _COUNTS):
        line["well_formed"] = well_formed(SimpleNamespace(**{
            k: entry.get(k) for k in ("kind", "answer", *_COUNTS)}, memory_after=line["memory"]))
    line.update({k: entry[k] for k in _DETAIL if k in entry})
    return line


# ----------------------------------------------------------------------------- reading


def read_jsonl(path: str | Path) -> list[dict]:
    """The lines of one JSON Lines output file: result, step, trace or metrics lines
    ([] if it does not exist). A line cut by a crash, or any line that is not a JSON
    object, is skipped: these files are appended to as work finishes."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict):
            out.append(line)
    return out


def read_lines(out_dir: str | Path) -> list[dict]:
    """Every result line of a run directory (`OUT/{method}/{file}.jsonl`)."""
    return [line for path in sorted(Path(out_dir).glob("*/*.jsonl")) for line in read_jsonl(path)]


def trace_lines(result) -> list[dict]:
    """The whole trace of one answer (an `AnswerResult`), as `ask --trace` writes it and
    `serve` returns it: the detailed step line of every step, then the result line
    (`AnswerResult.summary_json`). `rememr1 view` reads it."""
    return [step_line(r, detail=True) for r in result.steps] + [result.summary_json()]


__all__ = ["as_step_line", "diagnostic_names", "failed_line", "memory_diagnostics", "read_jsonl",
           "read_lines", "result_line", "step_line", "steps_line", "trace_lines"]
