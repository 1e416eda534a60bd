"""Log-probabilities of response tokens: batching (collate) and the training forward pass.

`response_logprobs` is the forward every loss starts from; `shared_prefix_logits` is its cheaper
path when a micro-batch holds several responses to one prompt (a group). See docs/GFT.md
section 6 for why log pi is taken in float32.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from transformers import DynamicCache

# policy/entropy is estimated on every ENTROPY_STRIDE-th valid response token (see response_logprobs)
ENTROPY_STRIDE = 16


@dataclass
class TrainSeq:
    """One trainable response with its prompt, as the loss sees it."""

    prompt_ids: list[int]
    response_ids: list[int]
    source: str
    reward: float
    advantage: float  # the advantage the loss uses (1.0 for SFT-style methods)
    group_id: int
    text: str
    truncated: bool = False  # cut at max_response_len (an off-policy answer) or stopped there unfinished (a sample)
    old_logprobs: list[float] | None = None  # GRPO: log pi_old of the response tokens
    ref_logprobs: list[float] | None = None  # GRPO with kl_coef > 0


def collate(seqs: Sequence[TrainSeq], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
    """Prompts left-padded, responses right-padded, so all responses start at the same column.

    input_ids (B, P + T); the response tokens are input_ids[:, P:], valid where resp_mask is 1.
    For the shared-prefix forward: prompt_rows (U,), one row of each distinct prompt, and
    prompt_index (B,), the distinct prompt of each row (an index into prompt_rows).
    """
    prompt_width = max(len(seq.prompt_ids) for seq in seqs)
    response_width = max(len(seq.response_ids) for seq in seqs)
    n_rows = len(seqs)
    input_ids = torch.full((n_rows, prompt_width + response_width), pad_id, dtype=torch.long)
    attention = torch.zeros((n_rows, prompt_width + response_width), dtype=torch.long)
    distinct: dict[tuple[int, ...], int] = {}
    prompt_index = torch.tensor([distinct.setdefault(tuple(seq.prompt_ids), len(distinct)) for seq in seqs],
                                dtype=torch.long)
    for row, seq in enumerate(seqs):
        start, end = prompt_width - len(seq.prompt_ids), prompt_width + len(seq.response_ids)
        input_ids[row, start:prompt_width] = torch.tensor(seq.prompt_ids, dtype=torch.long)
        input_ids[row, prompt_width:end] = torch.tensor(seq.response_ids, dtype=torch.long)
        attention[row, start:end] = 1
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    prompt_rows = torch.zeros(len(distinct), dtype=torch.long)
    prompt_rows[prompt_index] = torch.arange(n_rows)  # any one row of each distinct prompt
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention.to(device),
        "position_ids": position_ids.to(device),
        "targets": input_ids[:, prompt_width:].to(device),
        "resp_mask": attention[:, prompt_width:].to(device),
        "prompt_rows": prompt_rows.to(device),
        "prompt_index": prompt_index.to(device),
    }


def pad_rows(rows: Sequence[Sequence[float] | None], width: int, device: Any) -> torch.Tensor:
    """Per-token lists (e.g. GRPO's old log-probs) as a zero-padded (len(rows), width) tensor."""
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, row in enumerate(rows):
        if row:
            out[i, :len(row)] = torch.tensor(row, dtype=torch.float32)
    return out.to(device)


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the model's forward can skip the logits of the prompt positions."""
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def response_logprobs(model: Any, batch: dict[str, torch.Tensor], *, with_entropy: bool = False, keep: bool | None = None,
                      shared_prefix: bool = False, entropy_stride: int = ENTROPY_STRIDE):
    """log pi(y_t | x, y_<t) of the response tokens, (B, T), from one forward pass.

    Logits are cast to float32 before log_softmax (bf16 log-probs are too coarse for DCR's pi < tau
    and for exp(log pi)). With shared_prefix (see rollout.can_share_prefix), a micro-batch in which
    prompts repeat (a group's responses) runs each distinct prompt once: shared_prefix_logits.
    With with_entropy, also the policy entropy (B, T), from the same
    log-probabilities, on a fixed sample of positions and NaN elsewhere: every entropy_stride-th
    valid response token of the micro-batch, counted in row-major order from the first (1 = all).
    The mean over the sampled tokens estimates the mean entropy over all trained tokens (a
    systematic sample, spread evenly over the rows and positions) at 1/entropy_stride of the
    cost: a full-vocabulary entropy on every token added ~18% to forward+backward on a 32k
    vocabulary (more at 152k), 16x fewer tokens add ~1%.
    """
    response_width = batch["targets"].shape[1]
    if shared_prefix and batch["prompt_rows"].numel() < batch["targets"].shape[0]:
        logits = shared_prefix_logits(model, batch, keep=keep)
    else:
        kwargs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      position_ids=batch["position_ids"], use_cache=False)
        if keep:  # only the T + 1 last positions predict response tokens: skip the prompt's logits
            kwargs["logits_to_keep"] = response_width + 1
        logits = model(**kwargs).logits[:, -(response_width + 1):-1, :]
    logp_all = F.log_softmax(logits.float(), dim=-1)
    logprobs = logp_all.gather(-1, batch["targets"].unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return logprobs, None
    with torch.no_grad():
        valid = batch["resp_mask"].bool()
        stride = max(1, int(entropy_stride))
        sampled = valid & ((valid.flatten().cumsum(0) - 1) % stride == 0).view_as(valid)
        sampled_logp = logp_all.detach()[sampled]
        entropy = torch.full_like(logprobs, float("nan"))
        entropy[sampled] = -(sampled_logp.exp() * sampled_logp).sum(-1)
    return logprobs, entropy


def shared_prefix_logits(model: Any, batch: dict[str, torch.Tensor], *, keep: bool | None = None) -> torch.Tensor:
    """The logits that predict the response tokens, (B, T, V), running each distinct prompt once.

    A group's K responses share one prompt. The U distinct prompts go through the model once,
    filling a KV cache (with gradients); its rows are gathered for the B responses, whose forward
    attends to it. The prompt positions never see the response, so this is the same computation
    as one forward over prompt + response, on U * P + B * T tokens instead of B * (P + T) (the
    gather's backward sums the B responses' gradients into the prompt's keys and values).
    """
    net = getattr(model, "module", model)  # the config, from under a DDP wrapper
    prompt_rows, prompt_index = batch["prompt_rows"], batch["prompt_index"]
    ids, mask, pos = batch["input_ids"], batch["attention_mask"], batch["position_ids"]
    response_width = batch["targets"].shape[1]
    prompt_width = ids.shape[1] - response_width
    cache = DynamicCache(config=net.config)
    out = model(input_ids=ids[prompt_rows, :prompt_width], attention_mask=mask[prompt_rows, :prompt_width],
                position_ids=pos[prompt_rows, :prompt_width], past_key_values=cache, use_cache=True,
                **({"logits_to_keep": 1} if keep else {}))
    first = out.logits[:, -1:][prompt_index]  # the last prompt position predicts the first response token
    if response_width == 1:
        return first
    cache.batch_select_indices(prompt_index)
    rest = model(input_ids=ids[:, prompt_width:-1], attention_mask=mask[:, :-1], position_ids=pos[:, prompt_width:-1],
                 past_key_values=cache, use_cache=True).logits
    return torch.cat([first, rest], 1)
