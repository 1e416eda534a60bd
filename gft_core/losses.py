"""Losses of GFT and its baselines (docs/GFT.md sections 5, 6 and 8).

Tensor conventions: `logprobs`, `token_probs`, `old_logprobs`, `ref_logprobs` and `mask` are
(B, T) over response tokens; `advantages` is (B,), one number per response, broadcast over its
tokens. Every loss builds a per-token loss l_{b,t} and reduces it with `aggregate`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Agg = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]
AGGREGATIONS: tuple[str, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def aggregate(values: Tensor, mask: Tensor, agg: Agg = "token-mean") -> Tensor:
    """Reduce a (B, T) per-token loss to a scalar over the valid tokens (mask m).

    token-mean:          sum_{b,t} m l / sum_{b,t} m            (the authors' code)
    seq-mean-token-mean: 1/B sum_b (sum_t m l / sum_t m)
    seq-mean-token-sum:  1/B sum_b  sum_t m l
    A row or batch with no valid token counts as zero loss rather than NaN.
    """
    mask = mask.to(values.dtype)
    masked = values * mask
    if agg == "token-mean":
        return masked.sum() / mask.sum().clamp(min=1.0)
    if agg == "seq-mean-token-mean":
        return (masked.sum(dim=-1) / mask.sum(dim=-1).clamp(min=1.0)).mean()
    if agg == "seq-mean-token-sum":
        return masked.sum(dim=-1).mean()
    raise ValueError(f"agg: unknown aggregation {agg!r}; expected one of {AGGREGATIONS}")


def dcr_coefficients(token_probs: Tensor, tau: float) -> Tensor:
    """Dynamic Coefficient Rectification (docs/GFT.md section 5).

    C_t = stopgrad(pi_t) if pi_t < tau else 1, so the effective weight C_t / pi_t of the
    policy gradient is 1 for unlikely tokens and at most 1/tau for likely ones.
    """
    p = token_probs.detach()
    return torch.where(p < tau, p, torch.ones_like(p))


def gft_loss(
    logprobs: Tensor,
    token_probs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    tau: float,
    agg: Agg = "token-mean",
    dcr: bool = True,
) -> Tensor:
    """GFT loss (docs/GFT.md section 6): l_{k,t} = -A_k * C_t * log pi_t, aggregated with `agg`.

    With dcr=False, C_t = 1 (the "without DCR" ablation). The gradient of one token is
    -A_k * d(pi_t) where pi_t < tau and -A_k * d(log pi_t) elsewhere.
    """
    coef = dcr_coefficients(token_probs, tau) if dcr else torch.ones_like(logprobs)
    per_token = -advantages.to(logprobs.dtype).unsqueeze(-1) * coef * logprobs
    return aggregate(per_token, mask, agg)


def sft_loss(logprobs: Tensor, mask: Tensor, *, agg: Agg = "token-mean") -> Tensor:
    """SFT (docs/GFT.md section 8): l_t = -log pi_t on the expert (or expert + teacher) answers."""
    return aggregate(-logprobs, mask, agg)


def dft_loss(logprobs: Tensor, token_probs: Tensor, mask: Tensor, *, agg: Agg = "token-mean") -> Tensor:
    """DFT (arXiv 2508.05629, docs/GFT.md section 8): l_t = -stopgrad(pi_t) * log pi_t.

    Equal to `gft_loss` with tau >= 1 and A = 1 on the expert answers.
    """
    return aggregate(-token_probs.detach() * logprobs, mask, agg)


def grpo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps: float = 0.2,
    ref_logprobs: Tensor | None = None,
    kl_coef: float = 0.0,
    agg: Agg = "token-mean",
) -> Tensor:
    """GRPO (docs/GFT.md section 8): PPO clipped surrogate plus an optional k3 KL to a reference.

    r_t  = exp(log pi_t - log pi_old_t)
    l_t  = max(-A r_t, -A clip(r_t, 1 - eps, 1 + eps)) + kl_coef * k3_t
    k3_t = exp(log pi_ref_t - log pi_t) - (log pi_ref_t - log pi_t) - 1   (>= 0, unbiased KL)
    """
    adv = advantages.to(logprobs.dtype).unsqueeze(-1)
    ratio = torch.exp(logprobs - old_logprobs.detach())
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    per_token = torch.maximum(unclipped, clipped)
    if ref_logprobs is not None and kl_coef != 0.0:
        log_ratio = ref_logprobs.detach() - logprobs
        per_token = per_token + kl_coef * (torch.exp(log_ratio) - log_ratio - 1.0)
    return aggregate(per_token, mask, agg)
