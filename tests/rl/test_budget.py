"""The memory plan: a default budget that fits, and a one-line refusal when nothing fits."""

from __future__ import annotations

import pytest

from rememr1.errors import InputError
from rememr1.rl.budget import MemoryPlan

GB = 2**30


def test_need_and_fit_are_inverse():
    plan = MemoryPlan(fixed=2 * GB, per_token=1_000_000)
    assert plan.need(1000) == 2 * GB + 1000 * 1_000_000
    assert plan.fits(plan.need(1234)) == 1234
    assert plan.fits(GB) == 0
    assert plan.default_budget(100 * GB, "cuda") == 16384  # capped per device type
    assert plan.default_budget(100 * GB, "cpu") == 1024
    assert plan.default_budget(int(2 * (2 * GB + 900 * 1_000_000)), "cpu") == 900


def test_check_refuses_with_a_suggestion():
    plan = MemoryPlan(fixed=GB, per_token=1_000_000)
    plan.check(1000, 10 * GB, longest=900, checkpointing=False)  # fits
    with pytest.raises(InputError) as e:
        plan.check(8000, 4 * GB, longest=900, checkpointing=False)
    msg = str(e.value)
    assert "\n" not in msg and "8000 tokens" in msg and "max_tokens_per_micro_batch" in msg
    assert "gradient_checkpointing" in msg
    fit = int(msg.split("max_tokens_per_micro_batch to ")[1].split(" ")[0])
    plan.check(fit, 4 * GB, longest=900, checkpointing=False)  # the suggestion fits
    # a sequence longer than anything that fits: shorten the sequences
    with pytest.raises(InputError, match="longest training sequence .* shorten"):
        plan.check(100, 2 * GB, longest=5000, checkpointing=True)


def test_plan_for_the_builtin_shape():
    class Cfg:
        hidden_size, intermediate_size, num_hidden_layers = 576, 1536, 30

    class Model:
        config = Cfg()

        def parameters(self):
            return []

    plain = MemoryPlan.for_model(Model(), checkpointing=False, trainable_params=134_515_008)
    ckpt = MemoryPlan.for_model(Model(), checkpointing=True, trainable_params=134_515_008)
    # measured on CPU: ~1.4 MB per token without checkpointing; checkpointing cuts it ~5x
    assert 1.2e6 < plain.per_token / 1.25 < 1.7e6
    assert ckpt.per_token < plain.per_token / 4
    assert plain.fixed > 12 * 134_515_008
