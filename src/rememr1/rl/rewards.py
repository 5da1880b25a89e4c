r"""Multi-level rewards of ReMemR1 (SPEC §3), as plain functions over `StepRecord` lists.

For one rollout of a question with gold aliases Y, memory steps t = 0..T-1 and the final
step T:

* outcome ``R_out`` = best match of the final answer against Y (EM, or F1 as an option);
* memory gain ``r_mem,t`` = R(new memory) - R(previous memory);
* callback bonus ``r_cb,t`` = R(retrieved + what the step saw) - R(what the step saw);
* format ``r_fmt,t`` in {0, 1};
* state reward ``R_state,t`` = r_mem,t + r_cb,t + r_fmt,t (final step: format only);

where R(text) = max over y in Y of `word_recall(y, text)`, the fraction of y's words found
in the text. The outcome reward feeds the outcome advantage, the state rewards the
per-step advantage (`rememr1.rl.advantages`).

How the SPEC's symbols map onto `StepRecord` fields (step t is one model call):

* new memory ``m_t`` -> ``memory_after``; previous memory ``m_{t-1}`` -> ``memory_before``
  (the memory the step's prompt showed). The agent records the memory text itself here,
  "" when there is none, never the "No previous memory" placeholder.
* "retrieved" in the callback bonus -> ``recall_hits``: the memories that *this step's*
  ``<recall>`` query fetched (they are shown to the next step). ``recalled_in`` was
  fetched by the previous step's query; crediting it here would reward step t for an
  action it did not take.
* "what the step saw" (the SPEC's ``m_t ∪ c_t``, the current memory and chunk) ->
  ``memory_before`` + ``recalled_in`` + ``chunk``: everything the step's prompt showed
  apart from the question and instructions. The recalled memory is part of the agent's
  current memory state (SPEC §2: the state is the memory *and* the recalled memory), and
  leaving it out would pay a policy again and again for repeating one query each step and
  fetching what is already on its screen. A retrieval earns a bonus only for answer words
  the step had no other way to see. The official code measures against its whole prompt
  (question included), which agrees on this point.

The official training code differs in several ways; each is a switch in `RewardConfig`,
off by default, so a run can reproduce it (`RewardConfig.official()` turns them all on;
`rememr1 train --compat official` uses that preset). Its two advantage switches live with
the advantage settings (`rl.advantages.AdvantageConfig`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

from ..errors import require_choice
from ..metrics import exact_match, f1_score, gold_aliases, normalize_answer
from ..protocol import NO_RECALL, official_box_count, official_boxed, official_updates
from ..records import FINAL_STEP, MEMORY_STEP, StepRecord, well_formed

OUTCOME_METRICS = ("em", "f1")


@dataclass(frozen=True, kw_only=True)
class RewardConfig:
    """How rewards are computed. Every official-code deviation is a switch, off by default.

    outcome_metric -- "em" (default): exact match after normalisation, best over the gold
        aliases; "f1": best token-overlap F1 instead.
    official_outcome -- official: the outcome comparator of their reward function: the
        last 300 characters of the final reply, lower-cased; their last box in it
        (`protocol.official_boxed`); the gold answer lower-cased; both cleaned by a
        MATH-style `strip_string` (no punctuation or article removal) and compared for
        equality (F1 under outcome_metric "f1": token overlap on whitespace-split words
        without normalisation); best over the gold aliases.
    average_aliases -- official: the word-recall terms (memory gain, callback bonus) take
        the *mean* over gold aliases instead of the max, so a question with aliases
        ["United States", "USA"] can never reach full recall. The outcome still takes the max.
    mem_gain_without_previous -- official: the "previous memory" term never matches in
        the official code (its single-line pattern cannot span the newlines around the
        memory), so r_mem is the plain recall of the new memory, R(m_t), and a memory that
        merely keeps the answer words it already had is paid again at every step.
    update_tag_rewards -- official: the memory reward and the format reward read the reply
        with the official single-line patterns, not the agent's parse: the new memory is
        the first ``<update>(.*?)</update>`` match ("" if none; a multi-line update does
        not match); a memory step is well formed when exactly one such match is non-empty
        (recall blocks are not looked at); a final step when exactly one greedy
        single-line ``\\boxed{(.+)}`` matches.
    no_recall_format -- official: the memory-step format reward checks the <update> block
        only; replies with several <recall> blocks are not penalised.
    case_sensitive_substring_match -- official: word recall splits the gold answer on
        whitespace without normalising and tests each word with a case-sensitive substring
        search of the text ("art" is found in "Martin", "Paris," is not found in "paris").
        Default: normalised words (SPEC §6) looked up in the set of normalised words of
        the text.
    callback_against_prompt -- official (current code): the callback bonus is
        max(0, R(retrieved + prompt) - R(prompt)), with the whole prompt text of the step
        (its messages: question, instructions, memory, chunk) and, when the step's query
        retrieved nothing, the "No memory was recalled." placeholder as "retrieved" (the
        two texts are joined with a line break, so no word is formed across them).
        Our prompt wording differs from the official one and the chat template's role
        markers are not part of `messages`, so this reproduces the form of their term.
    """

    outcome_metric: str = "em"
    official_outcome: bool = False
    average_aliases: bool = False
    mem_gain_without_previous: bool = False
    update_tag_rewards: bool = False
    no_recall_format: bool = False
    case_sensitive_substring_match: bool = False
    callback_against_prompt: bool = False

    def __post_init__(self) -> None:
        require_choice(self.outcome_metric, OUTCOME_METRICS, "outcome_metric")

    @classmethod
    def official(cls, **overrides) -> RewardConfig:
        """Every official-code switch on (then `overrides` applied)."""
        switches = {f.name: True for f in fields(cls) if f.type in (bool, "bool")}
        return cls(**{**switches, **overrides})

    def to_json(self) -> dict:
        return asdict(self)


_DEFAULT = RewardConfig()


def _join(*texts: str) -> str:
    # Newline-separated so no word (and, in substring mode, no match) spans two parts.
    return "\n".join(t for t in texts if t)


def word_recall(answer: str, text: str, cfg: RewardConfig | None = None) -> float:
    """Fraction of the words of `answer` found in `text` (repeated words count each time).

    Default: normalised words of `answer`, each looked up in the set of normalised words of
    `text`. `cfg.case_sensitive_substring_match`: raw whitespace-separated words, each
    searched for as a case-sensitive substring of `text` (the official behaviour). An
    answer with no words scores 0.
    """
    cfg = cfg or _DEFAULT
    if cfg.case_sensitive_substring_match:
        words = answer.split()
        if not words:
            return 0.0
        return sum(1 for w in words if w in text) / len(words)
    words = normalize_answer(answer).split()
    if not words:
        return 0.0
    vocab = set(normalize_answer(text).split())
    return sum(1 for w in words if w in vocab) / len(words)


def answer_recall(golds: str | Sequence[str], text: str, cfg: RewardConfig | None = None) -> float:
    """R(text): the best (default) or mean (`cfg.average_aliases`) word recall over the
    gold aliases."""
    cfg = cfg or _DEFAULT
    values = [word_recall(y, text, cfg) for y in gold_aliases(golds)]
    return sum(values) / len(values) if cfg.average_aliases else max(values)


def outcome_reward(
    answer: str | None, golds: str | Sequence[str], cfg: RewardConfig | None = None
) -> float:
    """R_out: exact match (or F1) of the final answer (`protocol.answer_of`), best over the
    gold aliases; 0 when there is no answer."""
    cfg = cfg or _DEFAULT
    aliases = gold_aliases(golds)
    if answer is None:
        return 0.0
    if cfg.outcome_metric == "f1":
        return f1_score(answer, aliases)
    return exact_match(answer, aliases)


# Where the official outcome comparator looks for the box: the end of the reply only.
OFFICIAL_TAIL_CHARS = 300


def strip_string(s: str) -> str:
    r"""The MATH-style answer cleanup of the official outcome reward: line breaks, ``\!``,
    ``\left``/``\right``, degree marks, ``\$``, ``\%`` and every space are dropped;
    ``\\`` becomes ``\``; tfrac/dfrac become frac; " ." becomes " 0." and "{." "{0.".
    Punctuation and articles stay."""
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    return s.replace(" ", "")


def official_outcome(reply: str, golds: str | Sequence[str], metric: str = "em") -> tuple[float, str | None]:
    """(reward, answer) as the official outcome reward computes them (see
    `RewardConfig.official_outcome`)."""
    box = official_boxed(reply[-OFFICIAL_TAIL_CHARS:].lower())
    if box is None:
        return 0.0, None
    best = 0.0
    for gold in gold_aliases(golds):
        gold = gold.lower()
        if metric == "f1":
            a, g = box.split(), gold.split()
            common = sum((Counter(a) & Counter(g)).values())
            value = 0.0 if not (a and g and common) else 2 * common / (len(a) + len(g))
        else:
            value = float(strip_string(box) == strip_string(gold))
        best = max(best, value)
    return best, box


def memory_gain(
    step: StepRecord, golds: str | Sequence[str], cfg: RewardConfig | None = None
) -> float:
    """r_mem,t = R(memory_after) - R(memory_before); 0 for the final step.

    Negative when the new memory lost answer words the previous one had.
    `cfg.mem_gain_without_previous`: R(new memory) alone. `cfg.update_tag_rewards`: the new
    memory is the reply's first single-line <update> match, not `memory_after`.
    """
    cfg = cfg or _DEFAULT
    if step.kind != MEMORY_STEP:
        return 0.0
    if cfg.update_tag_rewards:
        updates = official_updates(step.reply)
        new_memory = updates[0] if updates else ""
    else:
        new_memory = step.memory_after
    gained = answer_recall(golds, new_memory, cfg)
    if cfg.mem_gain_without_previous:
        return gained
    return gained - answer_recall(golds, step.memory_before, cfg)


def _seen_text(step: StepRecord) -> str:
    return _join(step.memory_before, *(h.text for h in step.recalled_in), step.chunk)


def _prompt_text(step: StepRecord) -> str:
    parts = []
    for msg in step.messages:
        content = msg.get("content", "")
        if isinstance(content, str):
            parts.append(content)
    return _join(*parts) if parts else _seen_text(step)


def callback_bonus(
    step: StepRecord, golds: str | Sequence[str], cfg: RewardConfig | None = None
) -> float:
    """r_cb,t: the answer words this step's recall query fetched that the step could not
    already see; 0 for the final step and for a step that retrieved nothing.

    Default: R(recall_hits + seen) - R(seen), seen = memory_before + recalled_in + chunk
    (see the module docstring for why these fields). Never negative.
    `cfg.callback_against_prompt`: max(0, R(retrieved + prompt) - R(prompt)), see
    `RewardConfig`.
    """
    cfg = cfg or _DEFAULT
    if step.kind != MEMORY_STEP:
        return 0.0
    if cfg.callback_against_prompt:
        retrieved = _join(*(h.text for h in step.recall_hits)) or NO_RECALL
        prompt = _prompt_text(step)
        return max(
            0.0,
            answer_recall(golds, _join(retrieved, prompt), cfg) - answer_recall(golds, prompt, cfg),
        )
    if not step.recall_hits:
        return 0.0
    retrieved = _join(*(h.text for h in step.recall_hits))
    # "Retrieved" is what this step's own query fetched (recall_hits), not recalled_in,
    # which the previous step's query fetched. The baseline is everything this step's
    # prompt showed (memory, recalled memory, chunk), so re-fetching what is already on
    # screen earns nothing; see the module docstring.
    seen = _seen_text(step)
    return answer_recall(golds, _join(retrieved, seen), cfg) - answer_recall(golds, seen, cfg)


def format_reward(step: StepRecord, cfg: RewardConfig | None = None) -> float:
    r"""r_fmt,t in {0, 1}: 1 when the step is well formed (`records.well_formed`).

    Memory step: exactly one <update> block, closed and non-empty, and at most one
    <recall> block (the recall condition is dropped under `cfg.no_recall_format`).
    Final step: exactly one complete \boxed{} with a non-empty answer.
    `cfg.update_tag_rewards`: the official regex counts on the reply instead.
    """
    cfg = cfg or _DEFAULT
    if cfg.update_tag_rewards:
        if step.kind == FINAL_STEP:
            return float(official_box_count(step.reply) == 1)
        return float(sum(1 for u in official_updates(step.reply) if u.strip()) == 1)
    return float(well_formed(step, limit_recalls=not cfg.no_recall_format))


def reward_parts(
    step: StepRecord, golds: str | Sequence[str], cfg: RewardConfig | None = None
) -> tuple[float, float, float]:
    """(r_mem,t, r_cb,t, r_fmt,t) of one step: a final step has only its format part."""
    fmt = format_reward(step, cfg)
    if step.kind == FINAL_STEP:
        return 0.0, 0.0, fmt
    return memory_gain(step, golds, cfg), callback_bonus(step, golds, cfg), fmt


def state_reward(
    step: StepRecord, golds: str | Sequence[str], cfg: RewardConfig | None = None
) -> float:
    """R_state,t = r_mem,t + r_cb,t + r_fmt,t for a memory step; r_fmt for the final step."""
    return sum(reward_parts(step, golds, cfg))


@dataclass
class EpisodeRewards:
    """The rewards of one rollout: the outcome and, per step (in record order), each part.

    `steps[i]` is the step index of the i-th record; rollouts of one question are aligned
    on it when advantages are computed.
    """

    outcome: float
    answer: str | None
    steps: list[int]
    kinds: list[str]
    memory_gain: list[float]
    callback: list[float]
    format: list[float]
    state: list[float]
    recalled: list[bool]  # the step issued a <recall> query

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def mean_format_reward(self) -> float:
        """The mean format reward over the rollout's steps (0 without steps)."""
        return sum(self.format) / len(self.format) if self.format else 0.0

    @property
    def recall_rate(self) -> float:
        """Share of memory steps that issued a recall query."""
        flags = [r for r, k in zip(self.recalled, self.kinds, strict=True) if k == MEMORY_STEP]
        return sum(flags) / len(flags) if flags else 0.0

    def to_json(self) -> dict:
        return asdict(self)


def episode_rewards(
    steps: Sequence[StepRecord], golds: str | Sequence[str], cfg: RewardConfig | None = None
) -> EpisodeRewards:
    """All rewards of one rollout. A rollout without a final step (it failed part-way)
    gets outcome 0; its recorded steps still get their state rewards."""
    cfg = cfg or _DEFAULT
    aliases = gold_aliases(golds)
    finals = [s for s in steps if s.kind == FINAL_STEP]
    if not finals:
        outcome, answer = 0.0, None
    elif cfg.official_outcome:
        outcome, answer = official_outcome(finals[-1].reply, aliases, cfg.outcome_metric)
    else:
        answer = finals[-1].answer
        outcome = outcome_reward(answer, aliases, cfg)
    parts = [reward_parts(s, aliases, cfg) for s in steps]
    mem, cb, fmt = ([p[i] for p in parts] for i in range(3))
    state = [sum(p) for p in parts]
    return EpisodeRewards(
        outcome=outcome,
        answer=answer,
        steps=[s.step for s in steps],
        kinds=[s.kind for s in steps],
        memory_gain=mem,
        callback=cb,
        format=fmt,
        state=state,
        recalled=[s.recall_query is not None for s in steps],
    )
