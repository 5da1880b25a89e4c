"""Group advantages and the alpha mix against hand-computed cases, plus properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rememr1.records import FINAL_STEP, MEMORY_STEP
from rememr1.rl.rewards import EpisodeRewards
from rememr1.rl.advantages import (
    AdvantageConfig,
    group_advantages,
    mix_advantages,
    outcome_advantages,
    step_advantages,
)

nan = float("nan")


def test_outcome_advantages_mean_centred():
    np.testing.assert_allclose(outcome_advantages([1, 0, 0, 1]), [0.5, -0.5, -0.5, 0.5])
    np.testing.assert_allclose(outcome_advantages([1, 0, 0]), [2 / 3, -1 / 3, -1 / 3])
    np.testing.assert_allclose(outcome_advantages([1, 1, 1]), [0, 0, 0])
    np.testing.assert_allclose(outcome_advantages([0.7]), [0.0])


def test_outcome_advantages_std_scaling():
    # sample std of [1, 0, 0, 1] = sqrt(4 * 0.25 / 3) = 1/sqrt(3)
    got = outcome_advantages([1, 0, 0, 1], scale_by_std=True, eps=0.0)
    np.testing.assert_allclose(
        got, [0.5 * math.sqrt(3), -0.5 * math.sqrt(3), -0.5 * math.sqrt(3), 0.5 * math.sqrt(3)]
    )
    # a group with no spread stays at 0 rather than dividing by 0
    np.testing.assert_allclose(outcome_advantages([1, 1], scale_by_std=True), [0, 0])
    with pytest.raises(ValueError):
        outcome_advantages([[1, 0]])


STATE = np.array(
    [
        [1.5, 0.0, 2.0, 1.0],
        [0.5, 1.0, nan, nan],  # this rollout stopped after step 1
        [1.0, 1.0, 0.0, 1.0],
    ]
)
# column means over present rollouts: 1, 2/3, 1, 1
STATE_ADV = np.array(
    [
        [0.5, -2 / 3, 1.0, 0.0],
        [-0.5, 1 / 3, nan, nan],
        [0.0, 1 / 3, -1.0, 0.0],
    ]
)


def test_step_advantages_over_present_rollouts_only():
    np.testing.assert_allclose(step_advantages(STATE), STATE_ADV)


def test_step_advantages_with_mask():
    filled = np.nan_to_num(STATE, nan=99.0)
    mask = ~np.isnan(STATE)
    np.testing.assert_allclose(step_advantages(filled, mask), STATE_ADV)
    with pytest.raises(ValueError):
        step_advantages(filled, mask[:, :2])


def test_step_advantages_std_scaling():
    # column 2 has values [2, 0] -> centred [1, -1], sample std sqrt(2)
    got = step_advantages(STATE, scale_by_std=True, eps=0.0)
    np.testing.assert_allclose(got[[0, 2], 2], [1 / math.sqrt(2), -1 / math.sqrt(2)])
    # column 3 has no spread
    np.testing.assert_allclose(got[[0, 2], 3], [0.0, 0.0])
    assert np.isnan(got[1, 2:]).all()


def test_mix_default():
    a_out = np.array([2 / 3, -1 / 3, -1 / 3])
    mixed = mix_advantages(a_out, STATE_ADV)
    assert mixed[0, 0] == pytest.approx(0.8 * 2 / 3 + 0.2 * 0.5)
    assert mixed[1, 1] == pytest.approx(0.8 * -1 / 3 + 0.2 * 1 / 3)
    # alpha = 1: outcome only; alpha = 0: state only
    np.testing.assert_allclose(
        mix_advantages(a_out, np.nan_to_num(STATE_ADV), alpha=1.0), np.repeat(a_out[:, None], 4, 1)
    )
    np.testing.assert_allclose(mix_advantages(a_out, STATE_ADV, alpha=0.0), STATE_ADV)
    with pytest.raises(ValueError):
        mix_advantages(a_out, STATE_ADV, alpha=1.5)
    with pytest.raises(ValueError):
        mix_advantages(a_out[:2], STATE_ADV)


def _ep(
    outcome: float, state: list[float], steps: list[int] | None = None, final_at: int = 3
) -> EpisodeRewards:
    steps = steps if steps is not None else list(range(len(state)))
    kinds = [FINAL_STEP if t == final_at else MEMORY_STEP for t in steps]
    zeros = [0.0] * len(state)
    return EpisodeRewards(
        outcome=outcome,
        answer=None,
        steps=steps,
        kinds=kinds,
        memory_gain=zeros,
        callback=zeros,
        format=zeros,
        state=state,
        recalled=[False] * len(state),
    )


def test_group_advantages_hand_computed():
    episodes = [
        _ep(1.0, [1.5, 0.0, 2.0, 1.0]),
        _ep(0.0, [0.5, 1.0]),
        _ep(0.0, [1.0, 1.0, 0.0, 1.0]),
    ]
    adv = group_advantages(episodes)
    assert [len(a) for a in adv] == [4, 2, 4]
    # By hand: A_out = [2/3, -1/3, -1/3]; the state advantages are those of STATE_ADV,
    # rollout 0: [1/2, -2/3, 1, 0]; mixed 0.8 A_out + 0.2 A_state, e.g. 8/15 + 1/10 = 19/30
    assert adv[0] == pytest.approx([19 / 30, 2 / 5, 11 / 15, 8 / 15])
    assert adv[1] == pytest.approx([-11 / 30, -1 / 5])
    assert adv[2] == pytest.approx([-4 / 15, -1 / 5, -7 / 15, -4 / 15])
    # the official doubling: the state part weighs 0.4, e.g. -4/15 - 0.4 = -2/3
    doubled = group_advantages(episodes, AdvantageConfig(double_state=True))
    assert doubled[2] == pytest.approx([-4 / 15, -2 / 15, -2 / 3, -4 / 15])
    # alpha and std scaling come from the same config: alpha 0.5 on rollout 1,
    # A_state = [-1/2, 1/3] -> [1/2 (-1/3) + 1/2 (-1/2), 1/2 (-1/3) + 1/2 (1/3)]
    half = group_advantages(episodes, AdvantageConfig(alpha=0.5))
    assert half[1] == pytest.approx([-5 / 12, 0.0])


def test_group_advantages_aligns_on_step_index_not_position():
    # rollout 1 recorded only steps 1 and 3 (in that order); they align with the others'
    episodes = [_ep(0.0, [1.0, 2.0, 3.0, 4.0]), _ep(0.0, [0.0, 2.0], steps=[1, 3])]
    adv = group_advantages(episodes, AdvantageConfig(alpha=0.0))
    # step 0 has a single rollout -> 0; step 1: [2, 0] -> [1, -1]; step 3: [4, 2] -> [1, -1]
    assert adv[0] == pytest.approx([0.0, 1.0, 0.0, 1.0])
    assert adv[1] == pytest.approx([-1.0, -1.0])


def test_group_advantages_rejects_mixed_groups():
    a = _ep(0.0, [1.0, 1.0, 1.0, 1.0], final_at=3)
    b = _ep(0.0, [1.0, 1.0, 1.0], final_at=2)  # its step 2 is a final step: other chunking
    with pytest.raises(ValueError):
        group_advantages([a, b])
    assert group_advantages([]) == []


@given(
    st.lists(
        st.lists(st.one_of(st.none(), st.floats(-3, 3)), min_size=3, max_size=3),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.floats(0, 1), min_size=6, max_size=6),
    st.floats(0, 1),
)
def test_advantages_sum_to_zero_per_group(rows, outcomes, alpha):
    state = np.array([[nan if v is None else v for v in row] for row in rows])
    a_state = step_advantages(state)
    present = ~np.isnan(state)
    assert np.array_equal(np.isnan(a_state), ~present)
    np.testing.assert_allclose(np.where(present, a_state, 0).sum(axis=0), 0.0, atol=1e-9)
    a_out = outcome_advantages(outcomes[: len(rows)])
    assert a_out.sum() == pytest.approx(0.0, abs=1e-9)
    mixed = mix_advantages(a_out, a_state, alpha=alpha)
    # over the rollouts that all have step t, the mix also sums to zero
    full = present.all(axis=0)
    np.testing.assert_allclose(mixed[:, full].sum(axis=0), 0.0, atol=1e-9)
