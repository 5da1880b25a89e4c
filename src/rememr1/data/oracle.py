"""Oracle traces: what a perfect ReMemR1 agent would write at every step of a RevHop item
(SPEC §11), as supervised warm-start data for models too small to follow the protocol.

    rememr1 data revhop --out data/warm --lengths 2k,4k --hops 2,3 --order reverse,forward -n 200 \\
        --traces --chunk-size 512
    rows = oracle_steps(agent, record)      # [{"id", "step", "kind", "messages", "reply"}, ...]

RevHop knows where every evidence sentence is (`evidence_facts` in each record), so the
oracle can write, for each step:
- a short `<thinking>` saying what the section contributes (or that it contributes nothing);
- one `<update>` holding the evidence seen so far, one line per hop in chain order, and
  nothing of the filler, siblings or decoys;
- one `<recall>` naming the bridge entity when the section holds a hop whose neighbour
  hop (sharing that bridge) was noted at an earlier step: the situation recall exists for;
- at the final step, the chain walked hop by hop and the answer in `\\boxed{}`.

The replies are fed back through the agent's own `Episode` (the same templates, chunking
and `transition` as `rememr1 ask`), so the prompt stored with each reply is the one the
model will see at that step. Wording varies per item and step (seeded by the item id), so
a model cannot learn one fixed sentence.

Simplification: the oracle keeps only the chain's evidence, which a reader of a
reverse-ordered document cannot yet know is relevant when it meets the last hop first;
it does note it there (the memory that recall later finds), as the protocol intends.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..backends.base import Backend, Generation, SamplingParams
from ..errors import BackendError, InputError
from .revhop_world import QUESTION_PHRASE

# Characters of the previous section kept when looking for a sentence cut by a chunk edge.
TAIL_CHARS = 2000

_NOTHING = (
    "This section says nothing about {focus}.",
    "Nothing in this section concerns {focus}.",
    "No fact here bears on {focus}.",
    "This part of the document is unrelated to {focus}.",
    "I find no evidence about {focus} in this section.",
)
_FOUND = (
    "This section gives {phrase}: {obj}.",
    "Relevant: {phrase} is {obj}.",
    "Here I learn {phrase}, which is {obj}.",
    "The section states {phrase}: {obj}.",
)
_RECALL = (
    " {bridge} also appears in what I noted earlier, so I look that note up.",
    " An earlier note mentions {bridge}; I recall it.",
    " I should check my earlier note about {bridge}.",
)
_EMPTY_MEMORY = (
    "No evidence found yet.",
    "Nothing relevant so far.",
    "No relevant facts yet.",
)
_FINAL_OPEN = ("Following the chain in my memory:", "From my notes:", "Step by step:", "")
_FINAL_CLOSE = ("So the answer is \\boxed{{{answer}}}.", "The answer is \\boxed{{{answer}}}.",
                "\\boxed{{{answer}}}")


class TokenizerBackend(Backend):
    """A tokenizer standing in for a model where no model is called: enough for an
    `Agent` to chunk documents and build prompts. Generating raises."""

    name = "tokenizer-only"

    def __init__(self, tokenizer, *, context_window: int = 1 << 20):
        self._tok = tokenizer
        self.context_window = context_window

    @property
    def tokenizer(self):
        return self._tok

    def generate(self, requests, sampling: SamplingParams) -> list[Generation]:
        raise BackendError("the oracle writes its own replies; this backend cannot generate")


def _phrase(relation: str, subject: str) -> str:
    return QUESTION_PHRASE[relation].format(x=subject)


def _note(fact: dict[str, Any]) -> str:
    """One memory line for a hop: its sentence, prefixed by the subject when the sentence
    names it only by pronoun."""
    sentence = fact["sentence"].strip()
    return sentence if fact["subject"] in sentence else f"{fact['subject']}: {sentence}"


def _facts(record: dict[str, Any]) -> list[dict[str, Any]]:
    facts = record.get("evidence_facts")
    if not facts:
        raise InputError(
            f"item {record.get('id')!r} has no evidence_facts: oracle traces need RevHop files "
            "made by this version of `rememr1 data revhop`; generate them again"
        )
    return sorted(facts, key=lambda f: f["hop"])


def memory_reply(rng: random.Random, *, new: Sequence[dict[str, Any]], noted: Sequence[dict[str, Any]],
                 focus: str, bridge: str | None) -> str:
    """The oracle's reply at a memory step: `new` facts this section holds, `noted` every
    fact seen so far (including `new`), `bridge` the recall query or None."""
    if new:
        thinking = " ".join(
            rng.choice(_FOUND).format(phrase=_phrase(f["relation"], f["subject"]), obj=f["object"])
            for f in new
        )
    else:
        thinking = rng.choice(_NOTHING).format(focus=focus)
    if bridge:
        thinking += rng.choice(_RECALL).format(bridge=bridge)
    memory = "\n".join(_note(f) for f in noted) if noted else rng.choice(_EMPTY_MEMORY)
    reply = f"<thinking>{thinking}</thinking>\n<update>\n{memory}\n</update>"
    if bridge:
        reply += f"\n<recall>{bridge}</recall>"
    return reply


def final_reply(rng: random.Random, facts: Sequence[dict[str, Any]], answer: str) -> str:
    """The oracle's final reply: the chain walked hop by hop, then the boxed answer."""
    phrases = [_phrase(f["relation"], f["subject"]) for f in facts]
    walk = " ".join(f"{p[0].upper()}{p[1:]} is {f['object']}." for p, f in zip(phrases, facts))
    opening = rng.choice(_FINAL_OPEN)
    thinking = f"{opening} {walk}".strip()
    return f"<thinking>{thinking}</thinking>\n" + rng.choice(_FINAL_CLOSE).format(answer=answer)


def oracle_steps(agent, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every step of one RevHop record with the oracle's reply, driven through the agent's
    own Episode: [{"id", "step", "kind", "messages", "reply"}, ...]."""
    facts = _facts(record)
    if isinstance(record["context"], dict):
        raise InputError(f"item {record['id']!r} is stored lazily; oracle traces need text contexts")
    rng = random.Random(f"oracle:{record['id']}")
    by_hop = {f["hop"]: f for f in facts}
    seen_at: dict[int, int] = {}  # hop -> step its sentence was complete in the text read
    episode = agent.episode(record["context"], record["input"], sample_id=record["id"])
    rows: list[dict[str, Any]] = []
    tail = ""
    while (request := episode.next_request()) is not None:
        chunk = episode.pending_chunk
        t = episode.state.step
        if chunk is None:
            reply = final_reply(rng, facts, record["answers"][0])
        else:
            window = tail + chunk.text
            new = [f for f in facts if f["hop"] not in seen_at and f["sentence"] in window]
            bridge = None
            for f in new:
                seen_at[f["hop"]] = t
            for f in new:  # a neighbour hop noted at an earlier step shares a bridge
                k = f["hop"]
                if seen_at.get(k + 1, t) < t:
                    bridge = f["object"]
                elif seen_at.get(k - 1, t) < t:
                    bridge = f["subject"]
                if bridge:
                    break
            noted = [by_hop[k] for k in sorted(seen_at)]
            focus = rng.choice((record["chain"][0]["name"], "the question"))
            reply = memory_reply(rng, new=new, noted=noted, focus=focus, bridge=bridge)
            tail = chunk.text[-TAIL_CHARS:]
        rec = episode.consume(Generation(text=reply, finish_reason="stop", prompt_tokens=0,
                                         completion_tokens=0, seconds=0.0))
        rows.append({"id": record["id"], "step": rec.step, "kind": str(rec.kind),
                     "messages": list(request.messages), "reply": reply})
    if episode.answer != record["answers"][0]:
        raise AssertionError(f"oracle answer {episode.answer!r} is not the gold answer")  # a bug, not input
    return rows


def write_traces(records: Iterator[dict[str, Any]], path: str | Path, agent) -> int:
    """Write the oracle steps of `records` as JSON lines to `path` (atomically); returns
    the number of lines."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            for row in oracle_steps(agent, record):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    tmp.replace(path)
    return n


def read_traces(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every row of the given trace files (a clear error for a missing or malformed one)."""
    rows: list[dict[str, Any]] = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise InputError(f"trace file not found: {p}")
        with open(p, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    if not (isinstance(row.get("messages"), list) and isinstance(row.get("reply"), str)):
                        raise ValueError("needs 'messages' (a list) and 'reply' (a string)")
                except (json.JSONDecodeError, ValueError, AttributeError) as e:
                    raise InputError(f"{p}:{lineno}: not an oracle trace line ({e})") from None
                rows.append(row)
    if not rows:
        raise InputError(f"no trace lines in {', '.join(map(str, paths))}")
    return rows



def traces_for_files(json_paths: Sequence[Path], *, tokenizer: str | None, chunk_size: int,
                     templates: str | None = None) -> list[Path]:
    """`traces_*.jsonl` beside each RevHop `eval_*.json` (text contexts only), chunked with
    `tokenizer` (None: the built-in model's) into `chunk_size`-token sections."""
    from ..agent import Agent
    from .tokens import load_named_tokenizer

    tok, _ = load_named_tokenizer(tokenizer)
    agent = Agent(TokenizerBackend(tok), method="rememr1", chunk_size=chunk_size, templates=templates)
    written = []
    for jp in json_paths:
        with open(jp, encoding="utf-8") as f:
            records = json.load(f)
        if any(isinstance(r["context"], dict) for r in records):
            continue  # stored as generator specs (too long to train on)
        out = jp.with_name(jp.name.replace("eval_", "traces_", 1)).with_suffix(".jsonl")
        write_traces(iter(records), out, agent)
        written.append(out)
    return written


__all__ = ["TokenizerBackend", "final_reply", "memory_reply", "oracle_steps", "read_traces", "traces_for_files",
           "write_traces"]
