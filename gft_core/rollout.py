"""Self samples: batched generation from the current policy with transformers `generate`.

Prompts are left-padded so every sequence ends where generation starts; the KV cache is on;
each prompt is sampled n times (num_return_sequences). Off-policy answers do not come from
here but from groups.off_policy_responses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch


@dataclass
class Sample:
    """One generated response: its tokens (EOS included when the model stopped), text, cut flag."""

    token_ids: list[int]
    text: str
    truncated: bool


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with every sequence right-aligned."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token id that ends a response: the tokenizer's EOS plus the model's (e.g. <|im_end|>)."""
    ids = [tokenizer.eos_token_id]
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += gen_eos if isinstance(gen_eos, list) else [gen_eos]
    return [i for i in dict.fromkeys(ids) if i is not None]


@torch.no_grad()
def generate_samples(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    n: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 64,
    accelerator: Any = None,
) -> list[list[Sample]]:
    """n samples for each prompt (a list of n Samples per prompt, in prompt order).

    Sampling uses the global torch RNG (seed it before calling for reproducible rollouts).
    `batch_size` counts generated sequences; a batch holds batch_size // n prompts (at least 1).
    The model is put in eval mode for generation and restored to its previous mode.
    """
    if n < 1 or not prompt_ids:
        return [[] for _ in prompt_ids]
    net = accelerator.unwrap_model(model) if accelerator is not None else model
    device = next(net.parameters()).device
    stop_ids = eos_ids(net, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    gen_kwargs = dict(
        do_sample=True, temperature=float(temperature), top_p=float(top_p),
        top_k=0, repetition_penalty=1.0,  # override model defaults (e.g. Qwen's top_k=20)
        max_new_tokens=int(max_new_tokens), num_return_sequences=n, use_cache=True,
        pad_token_id=pad_id, eos_token_id=stop_ids,
    )
    was_training = net.training
    net.eval()
    out: list[list[Sample]] = []
    per_batch = max(1, batch_size // n)
    try:
        for start in range(0, len(prompt_ids), per_batch):
            chunk = prompt_ids[start:start + per_batch]
            input_ids, attention_mask = left_pad(chunk, pad_id, device)
            ctx = accelerator.autocast() if accelerator is not None else _nullcontext()
            with ctx:
                seqs = net.generate(input_ids=input_ids, attention_mask=attention_mask, **gen_kwargs)
            responses = seqs[:, input_ids.shape[1]:].tolist()
            for i in range(len(chunk)):
                out.append([_to_sample(r, stop_ids, tokenizer) for r in responses[i * n:(i + 1) * n]])
    finally:
        net.train(was_training)
    return out


def _to_sample(ids: list[int], stop_ids: list[int], tokenizer: Any) -> Sample:
    """Cut after the first stop token (kept: the model is trained to emit it); no stop = truncated."""
    stops = set(stop_ids)
    for j, t in enumerate(ids):
        if t in stops:
            kept = ids[:j + 1]
            return Sample(kept, tokenizer.decode(kept, skip_special_tokens=True), truncated=False)
    return Sample(list(ids), tokenizer.decode(ids, skip_special_tokens=True), truncated=True)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None
