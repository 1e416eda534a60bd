"""Losses against hand-computed values (docs/GFT.md sections 5, 6, 8), gradients included."""

import math

import pytest
import torch

from gft_core.losses import aggregate, dcr_coefficients, dft_loss, gft_loss, grpo_loss, sft_loss

AGGS = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


@pytest.fixture
def batch():
    """Two responses of 4 tokens over a vocab of 5; the second has one padded position."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, generator=g, dtype=torch.float64) * 2
    targets = torch.randint(0, 5, (2, 4), generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    return logits, targets, mask


# --- aggregate -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "agg, expected",
    [
        ("token-mean", (1 + 2 + 4) / 3),
        ("seq-mean-token-mean", ((1 + 2) / 2 + 4 / 1) / 2),
        ("seq-mean-token-sum", ((1 + 2) + 4) / 2),
    ],
)
def test_aggregate_by_hand(agg, expected):
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert aggregate(values, mask, agg).item() == pytest.approx(expected)


def test_aggregate_empty_mask_is_zero_not_nan():
    values = torch.ones(2, 3)
    mask = torch.zeros(2, 3)
    for agg in AGGS:
        assert aggregate(values, mask, agg).item() == 0.0


def test_aggregate_unknown_name():
    with pytest.raises(ValueError, match="seq-sum"):
        aggregate(torch.ones(1, 1), torch.ones(1, 1), "seq-sum")


# --- DCR -------------------------------------------------------------------------------------

def test_dcr_coefficients_by_hand():
    p = torch.tensor([0.05, 0.1, 0.5, 1.0], requires_grad=True)
    c = dcr_coefficients(p, 0.1)
    assert c.tolist() == pytest.approx([0.05, 1.0, 1.0, 1.0])
    assert not c.requires_grad  # stop-gradient on pi


def test_gft_loss_value_by_hand():
    # one response, two tokens: pi = 0.05 (< tau, C = 0.05) and pi = 0.5 (>= tau, C = 1); A = 2
    p = torch.tensor([[0.05, 0.5]])
    a = torch.tensor([2.0])
    mask = torch.ones(1, 2)
    expected = -2.0 * (0.05 * math.log(0.05) + 1.0 * math.log(0.5)) / 2
    assert gft_loss(p.log(), p, a, mask, tau=0.1).item() == pytest.approx(expected, rel=1e-6)
    expected_no_dcr = -2.0 * (math.log(0.05) + math.log(0.5)) / 2
    assert gft_loss(p.log(), p, a, mask, tau=0.1, dcr=False).item() == pytest.approx(expected_no_dcr, rel=1e-6)


def test_gft_gradient_wrt_probability():
    # As a function of pi itself: rectified token -> d(pi)/d(pi) = 1, others -> d(log pi)/d(pi) = 1/pi.
    p = torch.tensor([[0.05, 0.2, 0.5]], dtype=torch.float64, requires_grad=True)
    a = torch.tensor([1.5], dtype=torch.float64)
    loss = gft_loss(p.log(), p, a, torch.ones(1, 3), tau=0.3)
    loss.backward()
    n = 3
    expected = [-1.5 * 1.0 / n, -1.5 * 1.0 / n, -1.5 / 0.5 / n]
    assert p.grad[0].tolist() == pytest.approx(expected)


def test_gft_gradient_wrt_logits(batch):
    # Through a softmax: token with pi < tau contributes -A d(pi), others -A d(log pi).
    logits, targets, mask = batch
    tau = 0.3
    adv = torch.tensor([0.7, -1.3], dtype=torch.float64)

    x = logits.clone().requires_grad_(True)
    lp = token_logprobs(x, targets)
    gft_loss(lp, lp.exp(), adv, mask, tau=tau).backward()

    y = logits.clone().requires_grad_(True)
    lp_y = token_logprobs(y, targets)
    pi_y = lp_y.exp()
    rectified = pi_y.detach() < tau
    assert rectified[mask.bool()].any() and (~rectified)[mask.bool()].any()  # both branches exercised
    per_token = torch.where(rectified, pi_y, lp_y)  # d(pi) or d(log pi)
    reference = -(adv[:, None] * per_token * mask).sum() / mask.sum()
    reference.backward()
    torch.testing.assert_close(x.grad, y.grad)


def test_gft_padding_and_zero_advantage_give_no_gradient(batch):
    logits, targets, mask = batch
    x = logits.clone().requires_grad_(True)
    lp = token_logprobs(x, targets)
    lp.retain_grad()
    gft_loss(lp, lp.exp(), torch.tensor([0.0, 1.0], dtype=torch.float64), mask, tau=0.5).backward()
    assert torch.all(lp.grad[0] == 0)  # A = 0: the whole response is inert
    assert lp.grad[1, 3] == 0  # padded token
    assert torch.all(lp.grad[1, :3] != 0)


# --- special cases ---------------------------------------------------------------------------

@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("tau", [1.0, 1.5])
def test_gft_with_tau_ge_1_and_unit_advantage_equals_dft(batch, agg, tau):
    logits, targets, mask = batch
    x = logits.clone().requires_grad_(True)
    lp = token_logprobs(x, targets)
    gft = gft_loss(lp, lp.exp(), torch.ones(2, dtype=torch.float64), mask, tau=tau, agg=agg)
    (gx,) = torch.autograd.grad(gft, x)

    y = logits.clone().requires_grad_(True)
    lp_y = token_logprobs(y, targets)
    dft = dft_loss(lp_y, lp_y.exp(), mask, agg=agg)
    (gy,) = torch.autograd.grad(dft, y)
    torch.testing.assert_close(gft, dft)
    torch.testing.assert_close(gx, gy)


@pytest.mark.parametrize("agg", AGGS)
def test_gft_without_dcr_and_unit_advantage_equals_sft(batch, agg):
    logits, targets, mask = batch
    x = logits.clone().requires_grad_(True)
    lp = token_logprobs(x, targets)
    gft = gft_loss(lp, lp.exp(), torch.ones(2, dtype=torch.float64), mask, tau=0.3, agg=agg, dcr=False)
    (gx,) = torch.autograd.grad(gft, x)

    y = logits.clone().requires_grad_(True)
    sft = sft_loss(token_logprobs(y, targets), mask, agg=agg)
    (gy,) = torch.autograd.grad(sft, y)
    torch.testing.assert_close(gft, sft)
    torch.testing.assert_close(gx, gy)


def test_sft_and_dft_by_hand():
    p = torch.tensor([[0.25, 0.5], [0.8, 0.1]])
    mask = torch.tensor([[1, 1], [1, 0]])
    sft = -(math.log(0.25) + math.log(0.5) + math.log(0.8)) / 3
    dft = -(0.25 * math.log(0.25) + 0.5 * math.log(0.5) + 0.8 * math.log(0.8)) / 3
    assert sft_loss(p.log(), mask).item() == pytest.approx(sft, rel=1e-6)
    assert dft_loss(p.log(), p, mask).item() == pytest.approx(dft, rel=1e-6)


# --- GRPO ------------------------------------------------------------------------------------

def test_grpo_clipped_ratio_by_hand():
    # ratios 1.25 (outside the 0.2 band) and 1.0; one response, two tokens
    new = torch.tensor([[0.5, 0.3]], dtype=torch.float64).log().requires_grad_(True)
    old = torch.tensor([[0.4, 0.3]], dtype=torch.float64).log()
    mask = torch.ones(1, 2)

    # A = +1: max(-1.25, -1.2) = -1.2 (clipped, no gradient); second token -1.0
    loss = grpo_loss(new, old, torch.tensor([1.0], dtype=torch.float64), mask, clip_eps=0.2)
    assert loss.item() == pytest.approx((-1.2 - 1.0) / 2)
    (g,) = torch.autograd.grad(loss, new)
    assert g[0].tolist() == pytest.approx([0.0, -1.0 * 1.0 / 2])  # d(-A r)/d log pi = -A r

    # A = -1: max(1.25, 1.2) = 1.25 (unclipped, gradient flows)
    loss = grpo_loss(new, old, torch.tensor([-1.0], dtype=torch.float64), mask, clip_eps=0.2)
    assert loss.item() == pytest.approx((1.25 + 1.0) / 2)
    (g,) = torch.autograd.grad(loss, new)
    assert g[0].tolist() == pytest.approx([1.25 / 2, 1.0 / 2])


def test_grpo_k3_kl_by_hand():
    new = torch.tensor([[0.5, 0.3]], dtype=torch.float64).log()
    ref = torch.tensor([[0.5, 0.6]], dtype=torch.float64).log()
    mask = torch.ones(1, 2)
    zero_adv = torch.zeros(1, dtype=torch.float64)
    # k3 = exp(d) - d - 1 with d = log ref - log pi: 0 for token 1, 2 - ln 2 - 1 for token 2
    k3 = (0.0 + (2.0 - math.log(2.0) - 1.0)) / 2
    loss = grpo_loss(new, new, zero_adv, mask, ref_logprobs=ref, kl_coef=0.1)
    assert loss.item() == pytest.approx(0.1 * k3)
    assert grpo_loss(new, new, zero_adv, mask, ref_logprobs=ref, kl_coef=0.0).item() == 0.0


def test_grpo_on_policy_gradient_is_policy_gradient(batch):
    # With old = current (detached), ratio = 1 and the gradient equals -A d(log pi).
    logits, targets, mask = batch
    adv = torch.tensor([0.5, -2.0], dtype=torch.float64)
    x = logits.clone().requires_grad_(True)
    lp = token_logprobs(x, targets)
    (gx,) = torch.autograd.grad(grpo_loss(lp, lp.detach(), adv, mask), x)
    y = logits.clone().requires_grad_(True)
    (gy,) = torch.autograd.grad(gft_loss(token_logprobs(y, targets), torch.ones(2, 4), adv, mask, tau=0.1, dcr=False), y)
    torch.testing.assert_close(gx, gy)
