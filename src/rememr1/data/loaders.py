"""Load evaluation/training files of any supported schema into `Sample`s.

The schema is detected per file from the fields of its first record (SPEC §5):
- A  RL parquet (MemAgent/ReMemR1 `hotpotqa_train_32k.parquet`, `hotpotqa_dev.parquet`):
     prompt=[{role, content}], context, reward_model.ground_truth, data_source, extra_info.
- B  MemAgent long-context JSON (`eval_{N}.json`): context, input, answers, num_docs, index.
- C  RULER-style JSON: index, input, context, outputs, answer_prefix, length.
- D  ReMemR1 eval JSON: B's fields plus is_ordered, is_reverse_ordered, min_distance,
     evidence_idx, level, type, id (our RevHop files are D too).
Files may be JSON arrays, JSON Lines or parquet; unknown columns are kept in metadata but
otherwise ignored.

Contexts can be text, a list of paragraph indices (MemAgent index-only files above
10,000 documents: rebuilt from the HotpotQA dev file passed as `hotpot_dev`), or a RevHop
generator spec (rebuilt lazily, never one big string).

    samples = load_samples("eval_hotpotqa_800.json")
    samples = load_samples("eval_25600.json", hotpot_dev="hotpot_dev_distractor_v1.json")
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rememr1.data.io import field_names, iter_records
from rememr1.data.records import Context, Sample
from rememr1.errors import InputError

D_MARKERS = ("evidence_idx", "is_ordered", "is_reverse_ordered", "min_distance")

SCHEMA_HELP = (
    "A (prompt, context, reward_model), B (context, input, answers, num_docs), "
    "C (input, context, outputs), D (B's fields plus evidence_idx, is_ordered, "
    "is_reverse_ordered, min_distance)"
)

HOTPOT_DEV_OPTION = "--hotpot-dev"


def detect_schema(rec: dict[str, Any]) -> str | None:
    """'A', 'B', 'C' or 'D' from a record's fields, or None if none fits."""
    keys = set(rec)
    if {"prompt", "context", "reward_model"} <= keys:
        return "A"
    if {"input", "context"} <= keys:
        if "answers" in keys:
            return "D" if keys.intersection(D_MARKERS) else "B"
        if "outputs" in keys:
            return "C"
    return None


def _as_answers(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        answers = [value]
    elif isinstance(value, (list, tuple)):
        answers = [str(a) for a in value if a is not None]
    elif value is None:
        answers = []
    else:
        answers = [str(value)]
    if not answers:
        raise InputError(f"{where}: no gold answer")
    return answers


def _question_from_prompt(prompt: Any, extra: dict[str, Any], where: str) -> str:
    if isinstance(prompt, str):
        try:
            prompt = json.loads(prompt)
        except json.JSONDecodeError:
            return prompt
    if isinstance(prompt, (list, tuple)) and prompt:
        user = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        msg = user[0] if user else prompt[0]
        if isinstance(msg, dict) and isinstance(msg.get("content"), str):
            return msg["content"]
    if isinstance(extra.get("question"), str):
        return extra["question"]
    raise InputError(f"{where}: 'prompt' holds no user message with the question")


class _Converter:
    """Turns the records of one file into Samples (keeps the per-file state)."""

    def __init__(self, path: Path, schema: str, hotpot_dev: str | None):
        self.path = path
        self.schema = schema
        self.hotpot_dev = hotpot_dev
        self.seen_ids: dict[str, int] = {}
        self._pool = None

    def _where(self, pos: int) -> str:
        return f"{self.path}: record {pos}"

    def _unique_id(self, base: str) -> str:
        n = self.seen_ids.get(base, 0)
        self.seen_ids[base] = n + 1
        return base if n == 0 else f"{base}#{n}"

    def _context(self, value: Any, pos: int) -> Context:
        if isinstance(value, str):
            return value
        if isinstance(value, (list, tuple)) and all(isinstance(x, int) for x in value):
            return self._indexed(list(value), pos)
        if isinstance(value, dict) and value.get("generator") == "revhop":
            from rememr1.data.revhop.context import context_from_spec

            return context_from_spec(value, where=self._where(pos))
        raise InputError(
            f"{self._where(pos)}: 'context' must be text, a list of paragraph indices or a "
            f"RevHop spec, found {type(value).__name__}"
        )

    def _indexed(self, indices: list[int], pos: int) -> Context:
        from rememr1.data.hotpot import IndexedContext, load_pool

        if self.hotpot_dev is None:
            raise InputError(
                f"{self.path} holds index-only contexts (lists of paragraph indices, "
                f"MemAgent's format above 10,000 documents); to rebuild them pass the HotpotQA "
                f"dev file they index into (e.g. hotpot_dev_distractor_v1.json, or the source "
                f"file `rememr1 data longctx` built them from) with {HOTPOT_DEV_OPTION} FILE"
            )
        if self._pool is None:
            self._pool = load_pool(self.hotpot_dev)
        bad = [i for i in indices if not 0 <= i < len(self._pool)]
        if bad:
            raise InputError(
                f"{self._where(pos)}: paragraph index {bad[0]} is out of range for the "
                f"{len(self._pool)} paragraphs of {self.hotpot_dev}; is that the file these "
                f"contexts were built from?"
            )
        return IndexedContext(self._pool, indices)

    def convert(self, pos: int, rec: dict[str, Any]) -> Sample:
        where = self._where(pos)
        found = detect_schema(rec)
        if found is None or (found != self.schema and {found, self.schema} != {"B", "D"}):
            raise InputError(
                f"{where}: fields {field_names(rec)} do not fit schema {self.schema} "
                f"(the first record's schema)"
            )
        meta: dict[str, Any] = {}
        if self.schema == "A":
            extra = rec.get("extra_info") or {}
            if isinstance(extra, str):
                try:
                    extra = json.loads(extra)
                except json.JSONDecodeError:
                    extra = {}
            rm = rec.get("reward_model") or {}
            if isinstance(rm, str):
                rm = json.loads(rm)
            question = _question_from_prompt(rec["prompt"], extra, where)
            answers = _as_answers(rm.get("ground_truth"), where)
            for k, v in rec.items():
                if k not in ("prompt", "context", "reward_model", "extra_info"):
                    meta[k] = v
            if "style" in rm:
                meta["reward_style"] = rm["style"]
            for k, v in extra.items():
                meta.setdefault(k, v)
            meta["extra_info"] = extra
            base_id = rec.get("id") or extra.get("id") or extra.get("index")
        else:
            question = rec["input"]
            if not isinstance(question, str):
                raise InputError(f"{where}: 'input' (the question) must be text")
            answers = _as_answers(rec["answers"] if self.schema != "C" else rec["outputs"], where)
            for k, v in rec.items():
                if k not in ("input", "context", "answers", "outputs"):
                    meta[k] = v
            base_id = rec.get("id") or rec.get("_id") or rec.get("index")
        context = self._context(rec["context"], pos)
        meta["schema"] = self.schema
        meta["source_file"] = str(self.path)
        meta["position"] = pos
        if isinstance(rec["context"], (list, tuple)):
            meta.setdefault("num_docs", len(rec["context"]))
            meta["index_only"] = True
        sid = self._unique_id(str(base_id) if base_id not in (None, "") else str(pos))
        return Sample(id=sid, question=question, answers=answers, context=context, metadata=meta)


def iter_samples(path: str | os.PathLike, *, hotpot_dev: str | None = None) -> Iterator[Sample]:
    """Yield the samples of one file in order (schema detected from its first record)."""
    p = Path(path)
    conv: _Converter | None = None
    for pos, rec in enumerate(iter_records(p)):
        if conv is None:
            schema = detect_schema(rec)
            if schema is None:
                raise InputError(
                    f"{p}: unknown data schema; fields seen: {field_names(rec)}; "
                    f"expected one of {SCHEMA_HELP}"
                )
            conv = _Converter(p, schema, hotpot_dev)
        yield conv.convert(pos, rec)


def load_samples(path: str | os.PathLike, *, hotpot_dev: str | None = None) -> list[Sample]:
    """All samples of one JSON / JSON Lines / parquet file of schema A, B, C or D."""
    samples = list(iter_samples(path, hotpot_dev=hotpot_dev))
    if not samples:
        raise InputError(f"{path}: no records")
    return samples
