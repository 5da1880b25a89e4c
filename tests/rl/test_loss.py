"""The RL loss against direct, unvectorised reference computations, and its effect on a
tiny model after one optimiser step."""

from __future__ import annotations

import math

import pytest
import torch

from rememr1.rl.loss import (
    LossConfig,
    kl_k3,
    logprobs_and_entropy,
    masked_aggregate,
    policy_loss,
    total_loss,
)


def token_logprobs(logits, labels, **kw):
    return logprobs_and_entropy(logits, labels, with_entropy=False, **kw)[0]


def entropy_from_logits(logits):
    return logprobs_and_entropy(logits, torch.zeros(logits.shape[:-1], dtype=torch.long))[1]

# ---------------------------------------------------------------------------- references


def ref_per_token(lp, old, a, clip_low, clip_high, dual_c):
    """PPO dual-clip loss of one token, with python control flow (autograd through torch
    scalars; a branch that is cut off contributes a constant)."""
    r = torch.exp(lp - old)
    unclipped = -a * r
    clipped = -a * torch.clamp(r, 1 - clip_low, 1 + clip_high)
    x = unclipped if unclipped.item() >= clipped.item() else clipped
    if dual_c is not None and a < 0 and x.item() > -a * dual_c:
        x = x * 0 + (-a * dual_c)
    return x


def ref_aggregate(per, mask, agg):
    """per: nested list [B][L] of scalar tensors (or None where masked)."""
    if agg == "token-mean":
        vals = [per[b][t] for b in range(len(per)) for t in range(len(per[b])) if mask[b][t]]
        return sum(vals) / len(vals)
    seq_means = []
    for b in range(len(per)):
        vals = [per[b][t] for t in range(len(per[b])) if mask[b][t]]
        if vals:
            seq_means.append(sum(vals) / len(vals))
    return sum(seq_means) / len(seq_means)


def ref_policy_loss(logp, old, adv, mask, *, clip_low, clip_high, dual_c, agg):
    B, L = logp.shape
    per = [[None] * L for _ in range(B)]
    for b in range(B):
        for t in range(L):
            if mask[b, t]:
                per[b][t] = ref_per_token(
                    logp[b, t], old[b, t].item(), adv[b, t].item(), clip_low, clip_high, dual_c
                )
    return ref_aggregate(per, mask.tolist(), agg)


def random_batch(seed=0, B=5, L=9):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, L, generator=g, dtype=torch.float64) * 3
    # log-ratios spread wide enough that every branch (clip low/high, dual clip) occurs
    logp = old + torch.randn(B, L, generator=g, dtype=torch.float64) * 0.8
    adv = torch.randn(B, 1, generator=g, dtype=torch.float64).expand(B, L).clone() * 2
    adv[:, 4:] = -adv[:, 4:]  # both signs within sequences too
    lengths = torch.tensor([9, 5, 1, 0, 7])[:B]
    mask = torch.arange(L)[None, :] < lengths[:, None]
    return logp, old, adv, mask


# ---------------------------------------------------------------------------- policy loss


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean"])
@pytest.mark.parametrize(
    "clips", [(0.2, 0.2, 3.0), (0.2, 0.28, 3.0), (0.1, 0.3, None), (0.2, 0.2, 1.5)]
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_policy_loss_matches_reference(agg, clips, seed):
    clip_low, clip_high, dual_c = clips
    logp, old, adv, mask = random_batch(seed)
    # padding may hold garbage; the loss must not see it
    logp_padded = logp.clone()
    logp_padded[~mask] = float("nan")

    lp = logp_padded.clone().requires_grad_(True)
    cfg = LossConfig(clip_low=clip_low, clip_high=clip_high, dual_clip_c=dual_c, agg=agg)
    loss, stats = policy_loss(lp, old, adv, mask, cfg)
    loss.backward()

    lp_ref = logp.clone().requires_grad_(True)
    ref = ref_policy_loss(
        lp_ref, old, adv, mask, clip_low=clip_low, clip_high=clip_high, dual_c=dual_c, agg=agg
    )
    ref.backward()

    assert loss.item() == pytest.approx(ref.item(), rel=1e-10, abs=1e-12)
    grad = torch.where(mask, lp.grad, torch.zeros_like(lp.grad))
    torch.testing.assert_close(grad, lp_ref.grad, rtol=1e-9, atol=1e-12)
    assert stats["pg_loss"] == pytest.approx(loss.item())


def test_policy_loss_batch_exercises_every_branch():
    logp, old, adv, mask = random_batch(0)
    _, stats = policy_loss(logp, old, adv, mask, LossConfig(dual_clip_c=1.5))
    assert 0.0 < stats["clip_frac"] < 1.0
    assert stats["dual_clip_frac"] > 0.0
    assert stats["ratio_max"] > 1.2


def test_policy_loss_stats_by_hand():
    # one sequence, 4 tokens: ratios e^0 = 1, e^0.5, e^-0.5, e^2; advantages +1, +1, -1, -1
    old = torch.zeros(1, 4, dtype=torch.float64)
    logp = torch.tensor([[0.0, 0.5, -0.5, 2.0]], dtype=torch.float64)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    loss, stats = policy_loss(logp, old, adv, mask, LossConfig(clip_low=0.2, clip_high=0.2, dual_clip_c=3.0))
    r = [1.0, math.exp(0.5), math.exp(-0.5), math.exp(2.0)]
    per = [
        -1.0,  # inside the clip range
        -min(r[1], 1.2),  # A > 0, ratio above 1 + eps: clipped at -1.2
        max(r[2], 0.8),  # A < 0, ratio below 1 - eps: clipped at 0.8
        min(max(r[3], 1.2), 3.0),  # A < 0, ratio 7.39: dual clip caps the loss at c = 3
    ]
    assert loss.item() == pytest.approx(sum(per) / 4)
    assert stats["clip_frac"] == pytest.approx(2 / 4)  # tokens 2 and 3 (clip bound is active)
    assert stats["dual_clip_frac"] == pytest.approx(1 / 4)
    k3 = [ri - 1 - math.log(ri) for ri in r]
    assert stats["approx_kl"] == pytest.approx(sum(k3) / 4)


def test_aggregation_with_global_counts_matches_full_batch():
    logp, old, adv, mask = random_batch(3)
    for agg, key, count in [
        ("token-mean", "num_tokens", mask.sum().item()),
        ("seq-mean", "num_seqs", (mask.sum(1) > 0).sum().item()),
    ]:
        full, _ = policy_loss(logp, old, adv, mask, LossConfig(agg=agg))
        parts = sum(
            policy_loss(logp[s], old[s], adv[s], mask[s], LossConfig(agg=agg), **{key: count})[0]
            for s in (slice(0, 2), slice(2, 5))
        )
        assert parts.item() == pytest.approx(full.item())


def test_masked_aggregate_hand_computed():
    v = torch.tensor([[1.0, 2.0, 3.0], [10.0, float("inf"), float("nan")], [5.0, 5.0, 5.0]])
    m = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    assert masked_aggregate(v, m, "token-mean").item() == pytest.approx(16 / 4)
    assert masked_aggregate(v, m, "seq-mean").item() == pytest.approx((2 + 10) / 2)
    assert masked_aggregate(v, m, "token-mean", num_tokens=8).item() == pytest.approx(2.0)
    with pytest.raises(ValueError):
        masked_aggregate(v, m, "sum")


def test_policy_loss_rejects_bad_options():
    logp, old, adv, mask = random_batch(0)
    with pytest.raises(ValueError, match="dual_clip_c"):
        LossConfig(dual_clip_c=1.0)
    with pytest.raises(ValueError):
        policy_loss(logp, old, adv[:, :3], mask)


# ------------------------------------------------------------------- KL, entropy, log-probs


def test_kl_k3_reference_and_clamp():
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(3, 6, generator=g, dtype=torch.float64)
    ref = torch.randn(3, 6, generator=g, dtype=torch.float64)
    got = kl_k3(logp, ref)
    for b in range(3):
        for t in range(6):
            d = ref[b, t].item() - logp[b, t].item()
            assert got[b, t].item() == pytest.approx(min(math.exp(d) - d - 1, 10.0))
    assert (got >= 0).all()
    assert kl_k3(logp, logp).abs().max().item() == 0.0
    assert kl_k3(torch.tensor([0.0]), torch.tensor([50.0])).item() == 10.0  # clamped, finite


def test_kl_k3_is_unbiased_for_kl_policy_to_reference():
    # E_{x ~ p}[k3] = sum_x p(x) (q/p - log q/p - 1) = KL(p || q) exactly
    p = torch.softmax(torch.tensor([0.2, 1.5, -0.3, 0.0], dtype=torch.float64), 0)
    q = torch.softmax(torch.tensor([1.0, 0.1, 0.4, -1.0], dtype=torch.float64), 0)
    expected = sum(p[i] * math.log(p[i] / q[i]) for i in range(4))
    estimate = (p * kl_k3(p.log(), q.log())).sum()
    assert estimate.item() == pytest.approx(float(expected))


def test_token_logprobs_against_loop():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 7, (2, 5), generator=g)
    got = token_logprobs(logits, labels)
    hot = token_logprobs(logits, labels, temperature=0.5)
    for b in range(2):
        for t in range(5):
            row = logits[b, t].tolist()
            lse = math.log(sum(math.exp(x) for x in row))
            assert got[b, t].item() == pytest.approx(row[labels[b, t]] - lse)
            lse2 = math.log(sum(math.exp(x / 0.5) for x in row))
            assert hot[b, t].item() == pytest.approx(row[labels[b, t]] / 0.5 - lse2)


def test_token_logprobs_half_precision_and_ignore_index():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 4, 50, generator=g)
    labels = torch.randint(0, 50, (3, 4), generator=g)
    labels[0, 3] = -100
    half = token_logprobs(logits.bfloat16(), labels)
    full = token_logprobs(logits.bfloat16().float(), labels)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full)
    assert torch.isfinite(half).all()
    with pytest.raises(ValueError):
        token_logprobs(logits, labels[:, :2])


def test_entropy_from_logits_against_loop():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 6, generator=g, dtype=torch.float64)
    got = entropy_from_logits(logits)
    for b in range(2):
        for t in range(3):
            z = sum(math.exp(x) for x in logits[b, t].tolist())
            ps = [math.exp(x) / z for x in logits[b, t].tolist()]
            assert got[b, t].item() == pytest.approx(-sum(p * math.log(p) for p in ps))
    uniform = entropy_from_logits(torch.zeros(1, 2, 8).bfloat16())
    torch.testing.assert_close(uniform, torch.full((1, 2), math.log(8)))


def test_logprob_and_entropy_hand_computed():
    # two tokens with probabilities 1/4 and 3/4 (logits 0 and ln 3): log p(1) = ln 3/4,
    # H = ln 4 - 3/4 ln 3 = 0.562335; at temperature 1/2 they become 1/10 and 9/10:
    # log p(1) = ln 9/10 = -0.105361, H = ln 10 - 9/10 ln 9 = 0.325083
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    labels = torch.tensor([[1]])
    logp, ent = logprobs_and_entropy(logits, labels)
    assert logp.item() == pytest.approx(-0.287682, abs=1e-6)
    assert ent.item() == pytest.approx(0.562335, abs=1e-6)
    logp, ent = logprobs_and_entropy(logits, labels, temperature=0.5)
    assert logp.item() == pytest.approx(-0.105361, abs=1e-6)
    assert ent.item() == pytest.approx(0.325083, abs=1e-6)
    assert logprobs_and_entropy(logits.bfloat16(), labels, with_entropy=False)[1] is None


def test_total_loss_combines_terms():
    logp, old, adv, mask = random_batch(4)
    ref = old + 0.3
    ent = torch.rand_like(logp)
    for agg in ("token-mean", "seq-mean"):
        cfg = LossConfig(kl_beta=0.05, entropy_coef=0.01, agg=agg)
        loss, stats = total_loss(logp, old, adv, mask, cfg, ref_logp=ref, entropy=ent)
        pg, _ = policy_loss(logp, old, adv, mask, cfg)
        kl = masked_aggregate(kl_k3(logp, ref), mask, agg)
        en = masked_aggregate(ent, mask, agg)
        assert loss.item() == pytest.approx((pg + 0.05 * kl - 0.01 * en).item())
        assert stats["kl"] == pytest.approx(kl.item()) and stats["entropy"] == pytest.approx(
            en.item()
        )
    # given but with zero coefficients: reported, not added
    loss0, stats0 = total_loss(logp, old, adv, mask, LossConfig(kl_beta=0.0), ref_logp=ref, entropy=ent)
    assert loss0.item() == pytest.approx(policy_loss(logp, old, adv, mask)[0].item())
    assert "kl" in stats0 and "entropy" in stats0
    with pytest.raises(ValueError):
        total_loss(logp, old, adv, mask)  # default kl_beta > 0 needs ref_logp
    with pytest.raises(ValueError):
        total_loss(logp, old, adv, mask, LossConfig(kl_beta=0.0, entropy_coef=0.1))


# ---------------------------------------------------------------------------- one optimiser step


class ToyLM(torch.nn.Module):
    """A bigram language model: the next token's logits from the current token."""

    def __init__(self, vocab: int = 13, dim: int = 8):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim)
        self.out = torch.nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.emb(ids)))


PROMPT = [1, 2, 3]
COMPLETION = [7, 4, 9, 4]


def sequence_logp(model: ToyLM) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([PROMPT + COMPLETION])
    logits = model(ids[:, :-1])
    labels = ids[:, 1:]
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, len(PROMPT) - 1 :] = True  # loss on the completion tokens only
    return token_logprobs(logits, labels), mask


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("optim", ["sgd", "adamw"])
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean"])
def test_one_step_moves_logprob_with_the_advantage(sign, optim, agg):
    torch.manual_seed(0)
    model = ToyLM()
    ref_model = ToyLM()
    ref_model.load_state_dict(model.state_dict())
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.5)
        if optim == "sgd"
        else torch.optim.AdamW(model.parameters(), lr=1e-2)
    )
    logp, mask = sequence_logp(model)
    before = (logp * mask).sum().item()
    with torch.no_grad():
        ref_logp, _ = sequence_logp(ref_model)
    adv = torch.full_like(logp, sign) * mask
    loss, _ = total_loss(logp, logp.detach(), adv, mask, LossConfig(agg=agg), ref_logp=ref_logp)
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after_logp, _ = sequence_logp(model)
    after = (after_logp * mask).sum().item()
    assert (after - before) * sign > 1e-4, (before, after)


def test_clipped_token_gets_no_gradient():
    # the policy already moved far up (ratio e > 1 + eps) on a positive-advantage token:
    # the clipped objective gives no further push, so parameters do not change
    torch.manual_seed(0)
    model = ToyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    logp, mask = sequence_logp(model)
    old = logp.detach() - 1.0
    loss, stats = policy_loss(logp, old, torch.ones_like(logp), mask)
    assert stats["clip_frac"] == 1.0
    params = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters(), strict=True))
