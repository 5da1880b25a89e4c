"""Compatibility with the official ReMemR1 code (SPEC §9): named switches and one preset.

    rememr1 ask doc.txt -q "..." --compat official --trace t.jsonl   # agent as their evaluation client
    rememr1 eval data/*.json --compat official --out runs/o          # ... and their scorer
    rememr1 train --compat official --data train.parquet             # ... as their trainer: rewards, advantages

A user who evaluates or continues training a released checkpoint needs the inputs and the
scores it was made with. Every behaviour below is off by default (our defaults are SPEC
§2-§6), and each is also its own switch, so one can be turned on alone or the preset
turned on with one of them off (`--compat official --no-memory-set`). The table is the
map from SPEC §9 to the switch that implements it; `tests/test_compat.py` checks each
switch against hand-computed cases.

| SPEC §9 behaviour                                          | switch (CLI / config key)                      |
|------------------------------------------------------------|------------------------------------------------|
| memory = whole reply minus <recall> spans, always          | --whole-reply-memory / agent.compat.whole_reply_memory |
| the model's own tags in memory are not defused             | --verbatim-memory / agent.compat.verbatim_memory |
| history is a de-duplicated set                             | --memory-set / agent.compat.memory_set          |
| evaluation retrieves after adding the new memory           | --recall-current / agent.compat.recall_current (on in ask/eval presets, off in train) |
| TF-IDF over the policy tokenizer's pieces                  | --tfidf-model-tokens / agent.compat.tfidf_model_tokens |
| a top-1 is returned even when every similarity is zero     | --recall-at-zero / agent.compat.recall_at_zero  |
| query = first greedy single-line <recall>(.+)</recall>     | --official-recall / agent.compat.official_recall |
| scoring: drop failed generations only, first gold, ...     | eval --scoring official                         |
| outcome reward: last 300 chars, MATH strip_string          | reward.official_outcome                         |
| memory and format rewards from single-line <update> tags   | reward.update_tag_rewards                       |
| previous-memory term never matches                         | reward.mem_gain_without_previous                |
| gold aliases averaged in word recall                       | reward.average_aliases                          |
| case-sensitive substring word matching                     | reward.case_sensitive_substring_match           |
| no format reward for <recall>                              | reward.no_recall_format                         |
| callback: max(0, R(recalled + prompt) - R(prompt))         | reward.callback_against_prompt                  |
| doubled state advantage (cancels with std scaling)         | advantage.double_state                          |
| a group of one keeps its raw score (mean 0, std 1)         | advantage.singleton_raw                         |

Known limits of the reproduction: the official history is a Python `set`, whose order (and
so the winner among equally scored memories) depends on string hashing and changes from
process to process; ours keeps first-insertion order and lets the later memory win ties.
The prompts' wording is not reproduced (supply it with `--templates`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from .options import option

PRESETS = ("none", "official")
PANEL = "Official-code compatibility (off by default)"  # their section of `--help`


def _switch(flag: str, help: str) -> Any:
    """A compatibility switch: off by default; on the command line `--FLAG/--no-FLAG`,
    unset unless given, so it overrides the preset (`--compat official --no-memory-set`)."""
    return option(False, help, flag=f"--{flag}", panel=PANEL, tristate=True)


@dataclass(frozen=True, kw_only=True)
class AgentCompat:
    """The agent-side switches (what the model sees and what the agent does with its reply).

    whole_reply_memory -- the new memory is the whole reply with every <recall>...</recall>
        span removed (`protocol.official_memory`), at every step, not the <update> content.
    verbatim_memory -- memories (current and recalled) enter prompts as the model wrote
        them: tags not defused, an empty memory shown empty. Document text is still defused.
    memory_set -- the history holds each distinct memory once (first occurrence).
    recall_current -- retrieval runs after the new memory joined the history, so it is a
        candidate itself (the official *evaluation* client); off = earlier memories only
        (the official *trainer*, and our default).
    tfidf_model_tokens -- TF-IDF terms are the policy tokenizer's pieces of the lower-cased
        text with the byte-level space marker removed, instead of scikit-learn's words.
    recall_at_zero -- a query always returns its top-1, even when nothing matches at all.
    official_recall -- the query is the first match of the greedy single-line
        ``<recall>(.+)</recall>`` (`protocol.official_recall_query`), placeholders included.
    """

    whole_reply_memory: bool = _switch("whole-reply-memory", "memory = the whole reply minus <recall> spans, at every step")
    verbatim_memory: bool = _switch("verbatim-memory", "memories enter prompts as written (their tags not defused)")
    memory_set: bool = _switch("memory-set", "history keeps each distinct memory once")
    recall_current: bool = _switch("recall-current", "retrieve after adding the new memory (it is a candidate too)")
    tfidf_model_tokens: bool = _switch("tfidf-model-tokens", "TF-IDF over the model tokenizer's pieces")
    recall_at_zero: bool = _switch("recall-at-zero", "return the top-1 even when nothing matches")
    official_recall: bool = _switch(
        "official-recall", "query = first greedy single-line <recall>(.+)</recall>, placeholders too")

    @classmethod
    def official(cls, *, training: bool) -> AgentCompat:
        """Every switch on, with the retrieval timing of the official trainer
        (`training=True`: earlier memories only) or evaluation client (current memory too)."""
        on = cls(**{f.name: True for f in fields(cls)})
        return replace(on, recall_current=not training)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def active(self) -> list[str]:
        """Names of the switches that are on."""
        return [name for name in self.names() if getattr(self, name)]


def check_preset(preset: str | None) -> str:
    from .errors import InputError

    preset = preset or "none"
    if preset not in PRESETS:
        raise InputError(f"unknown compatibility preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    return preset


def agent_compat(preset: str | None, *, training: bool, **switches: Any) -> AgentCompat:
    """The agent switches of a preset ("none" or "official"), then every switch given as
    True/False (None = as the preset says)."""
    base = AgentCompat.official(training=training) if check_preset(preset) == "official" else AgentCompat()
    return replace(base, **{k: bool(v) for k, v in switches.items() if v is not None})


__all__ = ["AgentCompat", "PRESETS", "agent_compat", "check_preset"]
