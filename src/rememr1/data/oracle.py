"""Oracle traces: what a perfect ReMemR1 agent would write at every step of a RevHop item
(SPEC §11), as supervised warm-start data for models too small to follow the protocol.

    rememr1 data revhop --out data/warm --lengths 2k,4k --hops 2,3 --order reverse,forward -n 200 \\
        --traces --chunk-size 512
    rows = oracle_steps(agent, record)      # [{"id", "step", "kind", "messages", "reply"}, ...]

RevHop knows where every evidence sentence is (`evidence_facts`) and lists every statement
of a later hop's relation (`candidate_facts`), so the oracle can play a reader who knows
only the question and what it has read - a policy a model can learn:
- the question names e0 and the relations r1..rH; hop k is *resolved* when its subject
  (e0, or the entity hop k-1 resolved to) is known and its sentence is in view: in this
  section, or in the memory recall just fetched;
- while hop k-1 is unresolved nobody can tell whose r_k fact matters, so the `<update>`
  keeps this section's r_k statements (*candidates*: the right one, siblings, near-miss
  decoys) next to the resolved chain, and drops them at the next step - they stay in that
  step's memory, which recall can fetch;
- when a section resolves hop k-1 and hop k's sentence was kept as a candidate at an
  earlier step, the reply writes `<recall>` with the new bridge entity; the next prompt
  (or the final one) shows the recalled memory, and hop k resolves from it;
- in forward order the bridge is known before its hop arrives: no candidates, no recall;
- the final reply walks the chain hop by hop and boxes the answer.

The replies are fed back through the agent's own `Episode` (the same templates, chunking,
`transition` and retriever as `rememr1 ask`), so the prompt stored with each reply is the
one the model will see at that step, and a recall fetches what the real retriever fetches.
Wording varies per item and step (seeded by the item id), so a model cannot learn one
fixed sentence.

Simplification: when the chain cannot be resolved from what the reader saw (the retriever
fetched another memory, or a 3-hop chain needs a second recall after the last section),
the final reply still boxes the gold answer; that row is marked `complete: false` and
`rememr1 sft` leaves it out (51 of 240 final replies in the 2K training set, all but a few
from 3-hop reverse items). A sentence cut by a section edge counts as in view at the
section that completes it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..backends.base import Backend, Generation, SamplingParams
from ..errors import BackendError, InputError
from .revhop.world import QUESTION_PHRASE

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
_FOUND_RECALLED = (
    "The recalled memory gives {phrase}: {obj}.",
    "My earlier note, recalled, says {phrase} is {obj}.",
    "From the recalled memory: {phrase} is {obj}.",
)
_CANDIDATES = (
    "I do not know yet which {what} matters, so I keep the ones in this section.",
    "Any {what} named here may be needed later; I note them.",
    "I note this section's {what} facts in case one of them is on the chain.",
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


def _relation_noun(relation: str) -> str:
    """ "founder" for founded_by, "home city" for headquartered_in (from the question phrase)."""
    return QUESTION_PHRASE[relation].removeprefix("the ").removesuffix(" of {x}")


def memory_reply(rng: random.Random, *, found: Sequence[tuple[dict[str, Any], str]],
                 chain: Sequence[dict[str, Any]], candidates: Sequence[dict[str, Any]],
                 focus: str, bridge: str | None) -> str:
    """The oracle's reply at a memory step. `found`: (fact, where) for hops resolved at this
    step, where is "section" or "recalled"; `chain`: every hop resolved so far; `candidates`:
    this section's facts of a later hop's relation whose subject is not known yet;
    `bridge`: the recall query or None."""
    parts = [rng.choice(_FOUND if where == "section" else _FOUND_RECALLED).format(
        phrase=_phrase(f["relation"], f["subject"]), obj=f["object"]) for f, where in found]
    if candidates:
        nouns = sorted({_relation_noun(c["relation"]) for c in candidates})
        parts.append(rng.choice(_CANDIDATES).format(what=" and ".join(nouns)))
    thinking = " ".join(parts) or rng.choice(_NOTHING).format(focus=focus)
    if bridge:
        thinking += rng.choice(_RECALL).format(bridge=bridge)
    lines = [_note(f) for f in chain] + [_note(c) for c in candidates]
    memory = "\n".join(lines) if lines else rng.choice(_EMPTY_MEMORY)
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


def _key(fact: dict[str, Any]) -> tuple[str, str, str]:
    return fact["subject"], fact["relation"], fact["object"]


def oracle_steps(agent, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every step of one RevHop record with the oracle's reply, driven through the agent's
    own Episode: [{"id", "step", "kind", "messages", "reply", "complete"}, ...].

    "complete" (final row) says whether the chain was resolved from what the reader saw;
    when it was not (a recall that fetched the wrong memory, or a last hop resolved too
    late to recall), the final reply still boxes the gold answer."""
    facts = _facts(record)
    if isinstance(record["context"], dict):
        raise InputError(f"item {record['id']!r} is stored lazily; oracle traces need text contexts")
    rng = random.Random(f"oracle:{record['id']}")
    hops = len(facts)
    by_hop = {f["hop"]: f for f in facts}
    relation = {f["hop"]: f["relation"] for f in facts}
    pool = record.get("candidate_facts") or []
    resolved: dict[int, int] = {}  # hop -> step it was resolved
    noted_as_candidate: dict[int, int] = {}  # hop -> first step its sentence was kept as a candidate
    episode = agent.episode(record["context"], record["input"], sample_id=record["id"])
    rows: list[dict[str, Any]] = []
    tail = ""
    while (request := episode.next_request()) is not None:
        chunk = episode.pending_chunk
        t = episode.state.step
        window = tail + chunk.text if chunk is not None else ""
        recalled = "\n".join(h.text for h in episode.state.recalled)
        found: list[tuple[dict[str, Any], str]] = []
        for k in range(1, hops + 1):  # hop k resolves once its subject is known and it is in view
            if k in resolved or (k > 1 and k - 1 not in resolved):
                continue
            sentence = by_hop[k]["sentence"]
            in_section = sentence in window and sentence not in tail  # completed by this section
            where = "section" if in_section else "recalled" if sentence in recalled else None
            if where:
                resolved[k] = t
                found.append((by_hop[k], where))
        if chunk is None:
            reply = final_reply(rng, facts, record["answers"][0])
        else:
            watch = {relation[k] for k in range(2, hops + 1) if k not in resolved and k - 1 not in resolved}
            chain_keys = {_key(by_hop[k]) for k in resolved}
            candidates = [c for c in pool if c["relation"] in watch and c["sentence"] in window
                          and c["sentence"] not in tail and _key(c) not in chain_keys]
            candidates = list({_key(c): c for c in candidates}.values())
            for k in range(2, hops + 1):
                if k not in noted_as_candidate and any(_key(c) == _key(by_hop[k]) for c in candidates):
                    noted_as_candidate[k] = t
            bridge = None  # the newest entity resolved here, if its next hop sits in an earlier memory
            for f, _ in reversed(found):
                k = f["hop"] + 1
                if k <= hops and k not in resolved and noted_as_candidate.get(k, t) < t:
                    bridge = f["object"]
                    break
            chain = [by_hop[k] for k in sorted(resolved)]
            focus = rng.choice((record["chain"][0]["name"], "the question"))
            reply = memory_reply(rng, found=found, chain=chain, candidates=candidates, focus=focus,
                                 bridge=bridge)
            tail = window[-TAIL_CHARS:]
        rec = episode.consume(Generation(text=reply, finish_reason="stop", prompt_tokens=0,
                                         completion_tokens=0, seconds=0.0))
        row = {"id": record["id"], "step": rec.step, "kind": str(rec.kind),
               "messages": list(request.messages), "reply": reply}
        if chunk is None:
            row["complete"] = len(resolved) == hops
        rows.append(row)
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
    from ..agent import Agent, AgentConfig
    from .tokens import load_named_tokenizer

    tok, _ = load_named_tokenizer(tokenizer)
    agent = Agent(TokenizerBackend(tok), AgentConfig(method="rememr1", chunk_size=chunk_size, templates=templates))
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
