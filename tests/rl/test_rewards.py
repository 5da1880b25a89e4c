"""Rewards against hand-computed cases, by default and under each official-code switch."""

from __future__ import annotations

import dataclasses

import pytest

from rememr1.records import FINAL_STEP, MEMORY_STEP, RecallHit, StepRecord
from rememr1.rl.rewards import (
    RewardConfig,
    answer_recall,
    callback_bonus,
    episode_rewards,
    format_reward,
    memory_gain,
    outcome_reward,
    state_reward,
    word_recall,
)

CURIE = ["Marie Curie"]


def mem_step(
    t: int,
    *,
    before: str = "",
    after: str = "",
    chunk: str = "",
    recalled_in: tuple[str, ...] = (),
    hits: tuple[str, ...] = (),
    query: str | None = None,
    n_update: int = 1,
    n_recall: int = 0,
    update_closed: bool = True,
    prompt: str | None = None,
) -> StepRecord:
    return StepRecord(
        step=t,
        kind=MEMORY_STEP,
        messages=[{"role": "user", "content": prompt}] if prompt is not None else [],
        reply="",
        finish_reason="stop",
        prompt_tokens=0,
        completion_tokens=0,
        seconds=0.0,
        chunk=chunk,
        memory_before=before,
        memory_after=after,
        recalled_in=[RecallHit(x, 0, 1.0) for x in recalled_in],
        recall_query=query if query is not None else ("q" if hits else None),
        recall_hits=[RecallHit(x, 0, 1.0) for x in hits],
        n_update=n_update,
        n_recall=n_recall if n_recall or not hits else 1,
        update_closed=update_closed,
    )


def final_step(
    t: int, *, answer: str | None, n_boxed: int = 1, reply: str = "", memory: str = ""
) -> StepRecord:
    return StepRecord(
        step=t,
        kind=FINAL_STEP,
        messages=[],
        reply=reply,
        finish_reason="stop",
        prompt_tokens=0,
        completion_tokens=0,
        seconds=0.0,
        memory_before=memory,
        memory_after=memory,
        answer=answer,
        n_boxed=n_boxed,
    )


COMPAT = RewardConfig(case_sensitive_substring_match=True)


# ---------------------------------------------------------------------------- word recall


@pytest.mark.parametrize(
    "answer, text, default, compat",
    [
        ("Barack Obama", "Obama was president", 0.5, 0.5),
        ("Barack Obama", "obama, barack.", 1.0, 0.0),  # case and punctuation
        ("art", "Martin", 0.0, 1.0),  # substring inside another word
        ("Paris", "She moved to paris,", 1.0, 0.0),
        ("The Beatles", "Beatles", 1.0, 0.5),  # the article is not a word by default
        ("Walla Walla", "walla", 1.0, 0.0),  # repeated words count each time
        ("Walla Walla", "Walla", 1.0, 1.0),
        ("", "anything", 0.0, 0.0),
        ("the", "the", 0.0, 1.0),  # normalises to no words at all
    ],
)
def test_word_recall(answer, text, default, compat):
    assert word_recall(answer, text) == pytest.approx(default)
    assert word_recall(answer, text, COMPAT) == pytest.approx(compat)


def test_answer_recall_max_vs_average_aliases():
    golds = ["United States", "USA"]
    text = "the united states army"
    assert answer_recall(golds, text) == 1.0
    assert answer_recall(golds, text, RewardConfig(average_aliases=True)) == pytest.approx(0.5)


# ---------------------------------------------------------------------------- outcome


def test_outcome_reward_em_and_f1():
    golds = ["United States", "USA"]
    assert outcome_reward("the United States", golds) == 1.0
    assert outcome_reward("United States Army", golds) == 0.0
    # F1: P = 2/3, R = 1 against "United States" -> 0.8
    assert outcome_reward(
        "United States Army", golds, RewardConfig(outcome_metric="f1")
    ) == pytest.approx(0.8)
    assert outcome_reward(None, golds) == 0.0
    assert outcome_reward(None, golds, RewardConfig(outcome_metric="f1")) == 0.0


def test_outcome_takes_the_best_alias_even_when_averaging():
    # The official outcome reward takes the max; average_aliases only concerns word recall.
    assert (
        outcome_reward("USA", ["United States", "USA"], RewardConfig(average_aliases=True)) == 1.0
    )


def test_reward_config_validation_and_official_preset():
    with pytest.raises(ValueError):
        RewardConfig(outcome_metric="accuracy")
    with pytest.raises(TypeError):
        RewardConfig("f1")  # keyword-only
    off = RewardConfig.official()
    switches = [f.name for f in dataclasses.fields(RewardConfig) if f.name != "outcome_metric"]
    assert all(getattr(off, name) for name in switches)
    assert not any(getattr(RewardConfig(), name) for name in switches)
    assert (
        RewardConfig.official(outcome_metric="f1", official_outcome=False).official_outcome is False
    )


# ---------------------------------------------------------------------------- memory gain


def test_memory_gain_default_and_without_previous():
    gain = mem_step(0, before="Curie studied in Paris", after="Marie Curie studied in Paris")
    assert memory_gain(gain, CURIE) == pytest.approx(0.5)
    assert memory_gain(gain, CURIE, RewardConfig(mem_gain_without_previous=True)) == pytest.approx(
        1.0
    )

    loss = mem_step(1, before="Marie Curie", after="a scientist")
    assert memory_gain(loss, CURIE) == pytest.approx(-1.0)
    assert memory_gain(loss, CURIE, RewardConfig(mem_gain_without_previous=True)) == 0.0

    keep = mem_step(2, before="Marie Curie", after="Marie Curie, physicist")
    assert memory_gain(keep, CURIE) == 0.0
    assert memory_gain(keep, CURIE, RewardConfig(mem_gain_without_previous=True)) == 1.0

    assert memory_gain(final_step(3, answer="Marie Curie", memory="Marie Curie"), CURIE) == 0.0


def test_memory_gain_average_aliases():
    step = mem_step(0, before="", after="born in the united states")
    golds = ["United States", "USA"]
    assert memory_gain(step, golds) == 1.0
    assert memory_gain(step, golds, RewardConfig(average_aliases=True)) == pytest.approx(0.5)


# ---------------------------------------------------------------------------- callback bonus


def test_callback_bonus_counts_only_new_words_from_this_steps_hits():
    # seen = memory "Curie" + chunk "studied physics": R = 1/2; with the hit: R = 1
    step = mem_step(3, before="Curie", chunk="studied physics", hits=("Marie was born in Warsaw",))
    assert callback_bonus(step, CURIE) == pytest.approx(0.5)


def test_callback_bonus_nothing_retrieved_or_nothing_new():
    assert callback_bonus(mem_step(1, before="Curie", chunk="x"), CURIE) == 0.0
    # the hit repeats what the chunk already shows
    assert callback_bonus(mem_step(1, before="Curie", chunk="Marie", hits=("Marie",)), CURIE) == 0.0
    # the hit repeats what the previous step's recall already put on screen
    repeat = mem_step(1, before="Curie", recalled_in=("Marie",), hits=("Marie",))
    assert callback_bonus(repeat, CURIE) == 0.0


def test_callback_bonus_ignores_recalled_in_and_memory_after():
    # recalled_in was fetched by the previous step's query: no bonus for this step
    shown = mem_step(2, before="", recalled_in=("Marie Curie",))
    assert callback_bonus(shown, CURIE) == 0.0
    # writing the answer into the new memory does not reduce the bonus of a retrieval
    step = mem_step(2, before="", after="Marie Curie", hits=("Marie Curie",))
    assert callback_bonus(step, CURIE) == 1.0
    assert callback_bonus(final_step(4, answer="x"), CURIE) == 0.0


def test_callback_bonus_official_form():
    cfg = RewardConfig(callback_against_prompt=True)
    prompt = "Who discovered polonium? Memory: Curie"  # R(prompt) = 1/2
    half = mem_step(1, prompt=prompt, before="Curie", hits=("Marie",))
    assert callback_bonus(half, CURIE) == pytest.approx(0.5)  # default: 1 - 1/2
    assert callback_bonus(half, CURIE, cfg) == pytest.approx(0.5)  # R(hit + prompt) = 1
    full = mem_step(1, prompt=prompt, before="Curie", hits=("Marie Curie",))
    assert callback_bonus(full, CURIE, cfg) == pytest.approx(0.5)  # 1 - 1/2
    none = mem_step(1, prompt=prompt, before="Curie", hits=("Warsaw",))
    assert callback_bonus(none, CURIE, cfg) == 0.0  # nothing new: 1/2 - 1/2
    # nothing retrieved: the placeholder stands in for the recalled memory
    empty = mem_step(1, prompt="Question: who?", before="", hits=())
    assert callback_bonus(empty, ["No"], cfg) == 1.0  # "No memory was recalled." has "No"
    assert callback_bonus(empty, ["No"]) == 0.0


# ---------------------------------------------------------------------------- format


def test_format_reward_memory_step():
    good = mem_step(0, after="notes")
    assert format_reward(good) == 1.0
    assert format_reward(dataclasses.replace(good, n_update=0)) == 0.0
    assert format_reward(dataclasses.replace(good, n_update=2)) == 0.0
    assert format_reward(dataclasses.replace(good, update_closed=False)) == 0.0
    assert format_reward(dataclasses.replace(good, memory_after="  ")) == 0.0
    assert format_reward(dataclasses.replace(good, n_recall=1)) == 1.0


def test_format_reward_recall_count_and_no_recall_format_switch():
    two_recalls = mem_step(0, after="notes", n_recall=2)
    assert format_reward(two_recalls) == 0.0
    assert format_reward(two_recalls, RewardConfig(no_recall_format=True)) == 1.0
    # the switch does not relax the <update> condition
    assert (
        format_reward(
            dataclasses.replace(two_recalls, n_update=2), RewardConfig(no_recall_format=True)
        )
        == 0.0
    )


def test_format_reward_final_step():
    assert format_reward(final_step(3, answer="Paris")) == 1.0
    assert format_reward(final_step(3, answer="Paris", n_boxed=2)) == 0.0
    assert format_reward(final_step(3, answer="", n_boxed=1)) == 0.0
    assert format_reward(final_step(3, answer=None, n_boxed=0)) == 0.0


def test_one_well_formed_rule_for_rewards_eval_lines_and_training_metrics():
    """The format reward, the step lines `eval` writes (the learning bench's format rate)
    and the trainer's format metrics all read `records.well_formed`: the same steps pass."""
    from types import SimpleNamespace

    from rememr1.eval import steps_line
    from rememr1.records import well_formed
    from rememr1.rl.logs import reward_metrics, rollout_summary

    good = mem_step(0, after="notes")
    cases = [good, dataclasses.replace(good, n_update=2), dataclasses.replace(good, update_closed=False),
             dataclasses.replace(good, memory_after=" "), dataclasses.replace(good, n_recall=2),
             dataclasses.replace(good, n_recall=1), final_step(5, answer="Paris"),
             final_step(5, answer=" ", n_boxed=1), final_step(5, answer="Paris", n_boxed=2)]
    expected = [True, False, False, False, False, True, True, False, False]
    assert [well_formed(c) for c in cases] == expected
    assert [format_reward(c) for c in cases] == [float(x) for x in expected]
    line = steps_line("id", cases, {})
    assert [s["well_formed"] for s in line["steps"]] == expected
    # two rollouts: one with every step well formed, one with a bad final step
    ok = [mem_step(0, after="a", chunk="Marie"), final_step(1, answer="Marie Curie")]
    bad = [mem_step(0, after="a", chunk="Marie"), final_step(1, answer="Marie", n_boxed=2)]
    rollouts = [SimpleNamespace(steps=ok), SimpleNamespace(steps=bad)]
    m = reward_metrics([episode_rewards(r.steps, CURIE) for r in rollouts], rollout_summary(rollouts))
    assert m["format_reward"] == pytest.approx(3 / 4)  # 3 of the 4 steps
    assert m["well_formed_rollout_rate"] == pytest.approx(1 / 2)  # 1 of the 2 rollouts


def test_state_reward_parts():
    step = mem_step(2, before="Curie", after="Marie Curie", chunk="", hits=("Marie",))
    # gain 1/2, callback 1/2 (seen "Curie" -> with hit "Marie Curie"), format 1
    assert state_reward(step, CURIE) == pytest.approx(2.0)
    # final step: format only, whatever its memory holds
    assert state_reward(final_step(3, answer="Marie Curie", memory="Marie Curie"), CURIE) == 1.0
    assert state_reward(final_step(3, answer=None, n_boxed=0), CURIE) == 0.0


# ---------------------------------------------------------------------------- episodes


def _episode() -> list[StepRecord]:
    return [
        mem_step(0, before="", after="Curie is a surname", chunk="Pierre Curie met Marie"),
        mem_step(
            1,
            before="Curie is a surname",
            after="Curie is a surname",
            chunk="noise",
            n_recall=2,
            query="who",
        ),
        mem_step(
            2,
            before="Curie is a surname",
            after="Marie Curie discovered polonium",
            chunk="polonium",
            hits=("Marie from Warsaw",),
        ),
        final_step(
            3,
            answer="Marie Curie",
            reply=r"... \boxed{Marie Curie}",
            memory="Marie Curie discovered polonium",
        ),
    ]


def test_episode_rewards_hand_computed():
    ep = episode_rewards(_episode(), CURIE)
    assert ep.outcome == 1.0 and ep.answer == "Marie Curie"
    assert ep.steps == [0, 1, 2, 3]
    assert ep.kinds == [MEMORY_STEP, MEMORY_STEP, MEMORY_STEP, FINAL_STEP]
    assert ep.memory_gain == pytest.approx([0.5, 0.0, 0.5, 0.0])
    # step 2: seen "Curie is a surname / polonium" (1/2); + "Marie from Warsaw" -> 1
    assert ep.callback == pytest.approx([0.0, 0.0, 0.5, 0.0])
    assert ep.format == [1.0, 0.0, 1.0, 1.0]  # step 1 has two <recall> blocks
    assert ep.state == pytest.approx([1.5, 0.0, 2.0, 1.0])
    assert ep.recalled == [False, True, True, False]
    assert ep.mean_format_reward == pytest.approx(0.75)
    assert ep.recall_rate == pytest.approx(2 / 3)
    assert ep.to_json()["state"] == pytest.approx([1.5, 0.0, 2.0, 1.0])


def test_episode_rewards_under_official_switches():
    cfg = RewardConfig(mem_gain_without_previous=True, no_recall_format=True)
    ep = episode_rewards(_episode(), CURIE, cfg)
    assert ep.memory_gain == pytest.approx([0.5, 0.5, 1.0, 0.0])
    assert ep.format == [1.0, 1.0, 1.0, 1.0]
    assert ep.state == pytest.approx([1.5, 1.5, 2.5, 1.0])


def test_official_outcome_switch():
    reply = r"The answer: \boxed{Marie Curie}." + " Let me double-check my reasoning." * 12
    steps = _episode()[:-1] + [final_step(3, answer="Marie Curie", reply=reply)]
    assert episode_rewards(steps, CURIE).outcome == 1.0
    tail = episode_rewards(steps, CURIE, RewardConfig(official_outcome=True))
    assert tail.answer is None and tail.outcome == 0.0  # the box is not in the last 300 chars
    # a box near the end is found; case does not matter (both sides are lower-cased)
    late = steps[:-1] + [
        final_step(3, answer="Marie Curie", reply="x" * 500 + r"\boxed{MARIE CURIE}")
    ]
    ep = episode_rewards(late, CURIE, RewardConfig(official_outcome=True))
    assert (ep.outcome, ep.answer) == (1.0, "marie curie")


def test_episode_without_final_step():
    ep = episode_rewards(_episode()[:2], CURIE)
    assert ep.outcome == 0.0 and ep.answer is None
    assert ep.steps == [0, 1]
    assert ep.state == pytest.approx([1.5, 0.0])


def test_episode_rewards_f1_outcome():
    steps = _episode()[:-1] + [final_step(3, answer="Pierre and Marie Curie")]
    assert episode_rewards(steps, CURIE).outcome == 0.0
    # P = 2/4, R = 1 -> 2/3
    f1 = episode_rewards(steps, CURIE, RewardConfig(outcome_metric="f1"))
    assert f1.outcome == pytest.approx(2 / 3)
