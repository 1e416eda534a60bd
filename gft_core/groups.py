"""Groups of responses per prompt and their group advantages (docs/GFT.md sections 2 and 4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor

from gft_core.methods import SOURCES  # noqa: F401 - the sources a Response is of (defined with the methods)

if TYPE_CHECKING:
    from gft_core.data import Example


@dataclass
class Response:
    """One response of a group. `token_ids` are response tokens only (EOS included if present)."""

    source: str  # one of SOURCES
    text: str
    token_ids: list[int]
    truncated: bool = False


@dataclass
class Group:
    """The K responses of one prompt: off-policy answers first, then self samples."""

    group_id: int
    prompt: str
    prompt_ids: list[int]
    ground_truth: str | None
    responses: list[Response] = field(default_factory=list)


def _tokenize_response(text: str, tokenizer: Any, max_response_len: int) -> tuple[str, list[int], bool]:
    """Token ids of `text` + EOS, cut to max_response_len tokens; a cut response loses its EOS."""
    ids = list(tokenizer.encode(text, add_special_tokens=False)) + [tokenizer.eos_token_id]
    if len(ids) <= max_response_len:
        return text, ids, False
    ids = ids[:max_response_len]
    # The reward must see what the model is trained on, so a cut response carries the cut text.
    return tokenizer.decode(ids, skip_special_tokens=True), ids, True


def off_policy_responses(
    example: "Example", tokenizer: Any, *, n_expert: int, n_teacher: int, max_response_len: int
) -> list[Response]:
    """Expert then teacher responses of one example, in dataset order.

    Takes at most `n_expert` expert answers (a row holds one) and the first `n_teacher` teacher
    answers; a row with fewer answers gives a smaller group. Each response gets EOS appended and
    is truncated to `max_response_len` tokens including the EOS (if cut: no EOS, truncated=True).
    """
    if max_response_len < 1:
        raise ValueError(f"max_response_len: must be >= 1, got {max_response_len!r}")
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer: has no eos_token_id; off-policy responses need an EOS token")
    experts = [example.expert] if example.expert is not None else []
    picked = [("expert", t) for t in experts[:n_expert]]
    picked += [("teacher", t) for t in example.teachers[:n_teacher]]
    responses = []
    for source, text in picked:
        text, ids, truncated = _tokenize_response(text, tokenizer, max_response_len)
        responses.append(Response(source=source, text=text, token_ids=ids, truncated=truncated))
    return responses


def group_advantages(
    rewards: Tensor | Sequence[float],
    group_ids: Tensor | Sequence[int],
    *,
    normalize_std: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """Group-relative advantage (GAL, docs/GFT.md section 4), one number per response.

    A_k = (R_k - mean_G R) / (std_G R + eps), std with the n - 1 denominator; with
    normalize_std=False, A_k = R_k - mean_G R (Dr.GRPO style). A group whose rewards are all equal
    gives 0 to every member. A group of one keeps its raw reward (mean 0, std 1 as in the
    authors' code, so R / (1 + eps) when normalising).
    """
    rewards = torch.as_tensor(rewards)
    rewards = rewards if rewards.is_floating_point() else rewards.float()
    group_ids = torch.as_tensor(group_ids, device=rewards.device)
    if rewards.shape != group_ids.shape or rewards.dim() != 1:
        raise ValueError(
            f"rewards and group_ids: expected two 1-D tensors of the same length, "
            f"got shapes {tuple(rewards.shape)} and {tuple(group_ids.shape)}"
        )
    _, idx, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    n_groups = counts.numel()
    zeros = rewards.new_zeros(n_groups)
    counts_f = counts.to(rewards.dtype)

    mean = zeros.index_add(0, idx, rewards) / counts_f
    centred = rewards - mean[idx]
    var = zeros.index_add(0, idx, centred**2) / (counts_f - 1).clamp(min=1)
    std = var.sqrt()
    hi = zeros.scatter_reduce(0, idx, rewards, reduce="amax", include_self=False)
    lo = zeros.scatter_reduce(0, idx, rewards, reduce="amin", include_self=False)

    single = (counts == 1)[idx]
    mean = torch.where(single, torch.zeros_like(rewards), mean[idx])
    std = torch.where(single, torch.ones_like(rewards), std[idx])
    adv = (rewards - mean) / (std + eps) if normalize_std else rewards - mean
    # Exact zero for tied groups: float round-off in the mean would otherwise leak tiny values.
    tied = (hi == lo)[idx] & ~single
    return torch.where(tied, torch.zeros_like(adv), adv)
