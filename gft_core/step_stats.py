"""The statistics of one optimizer step, from exactly the tensors its loss used.

The trainer hands StepStats each micro-batch's token probabilities, coefficients, rectification
flags and entropy sample; at the end of the step they are gathered over processes and reduced
to the scalars of docs/INTERFACES.md "Metric names" (metrics.response_stats / token_stats), the
advantage histogram and, for the sampled groups, the group inspector's per-token records.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from gft_core.logprobs import TrainSeq
from gft_core.methods import SOURCES
from gft_core.metrics import ADV_HIST, Histogram, histogram, response_stats, token_stats


def gather_1d(accelerator: Any, t: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-D tensor of any length over processes (identity with one process)."""
    if accelerator.num_processes == 1:
        return t
    if t.dtype == torch.bool:  # collectives do not all take bool tensors
        return gather_1d(accelerator, t.to(torch.uint8)).bool()
    t = t.to(accelerator.device)
    lengths = accelerator.gather(torch.tensor([t.numel()], device=accelerator.device))
    padded = accelerator.pad_across_processes(t, dim=0)
    rows = accelerator.gather(padded).view(accelerator.num_processes, -1)
    return torch.cat([rows[i, :int(n)] for i, n in enumerate(lengths.tolist())])


def _cat(parts: list[torch.Tensor], dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)


class StepStats:
    """Collects one optimizer step's per-token tensors, micro-batch by micro-batch."""

    def __init__(self, sampled_groups: set[int]):
        self.sampled_groups = sampled_groups  # group ids whose tokens the group inspector records
        self.losses: list[torch.Tensor] = []
        self.token_probs: list[torch.Tensor] = []
        self.coefficients: list[torch.Tensor] = []
        self.rectified: list[torch.Tensor] = []
        self.entropy: list[torch.Tensor] = []
        self.source_index: list[torch.Tensor] = []
        self.token_rows: dict[int, tuple[list[float], list[float], list[bool]]] = {}  # id(seq) -> per token
        self.n_tokens = 0

    def add(self, part: Sequence[TrainSeq], loss: torch.Tensor, valid: torch.Tensor, token_probs: torch.Tensor,
            coefficients: torch.Tensor, rectified: torch.Tensor, entropy: torch.Tensor) -> None:
        """One micro-batch: its loss, and (B, T) tensors with `valid` marking the response tokens."""
        token_probs, coefficients = token_probs.detach(), coefficients.detach()
        self.losses.append(loss.detach().float())
        self.n_tokens += int(valid.sum())
        self.token_probs.append(token_probs[valid])
        self.coefficients.append(coefficients[valid])
        self.rectified.append(rectified[valid])
        self.entropy.append(entropy[valid & ~entropy.isnan()])  # the sampled positions only
        sources = torch.tensor([SOURCES.index(seq.source) for seq in part], device=valid.device)
        self.source_index.append(sources.unsqueeze(1).expand_as(valid)[valid])
        for row, seq in enumerate(part):
            if seq.group_id in self.sampled_groups:
                n = len(seq.response_ids)
                self.token_rows[id(seq)] = (token_probs[row, :n].tolist(), coefficients[row, :n].tolist(),
                                            rectified[row, :n].tolist())

    def summary(self, chunk: Sequence[TrainSeq], accelerator: Any) -> tuple[dict[str, float], dict[str, Histogram], int]:
        """({"loss", reward/*, response_len/*, adv/*, dcr/*, policy/entropy}, {"adv/hist"}, trained tokens),
        over every process."""
        device = accelerator.device

        def gather(t: torch.Tensor) -> torch.Tensor:
            return gather_1d(accelerator, t).cpu()

        def per_seq(values: list) -> torch.Tensor:
            return gather(torch.tensor(values, device=device))

        token_probs, coefficients = gather(_cat(self.token_probs)), gather(_cat(self.coefficients))
        rectified = gather(_cat(self.rectified, torch.bool))
        entropy, source_index = gather(_cat(self.entropy)), gather(_cat(self.source_index, torch.long))
        rewards = per_seq([seq.reward for seq in chunk])
        advantages = per_seq([seq.advantage for seq in chunk])
        lengths = per_seq([len(seq.response_ids) for seq in chunk])
        group_ids = per_seq([seq.group_id for seq in chunk])
        sources = [SOURCES[i] for i in per_seq([SOURCES.index(seq.source) for seq in chunk]).tolist()]
        loss = torch.stack(self.losses).mean() if self.losses else torch.zeros((), device=device)
        n_tokens = self.n_tokens
        if accelerator.num_processes > 1:
            loss = accelerator.reduce(loss.to(device), reduction="mean")
            n_tokens = int(accelerator.reduce(torch.tensor(n_tokens, device=device), reduction="sum"))
        scalars = {"loss": float(loss)}
        scalars.update(response_stats(rewards, advantages, sources, lengths, group_ids))
        scalars.update(token_stats(token_probs, coefficients, rectified, entropy, source_index))
        hists = {"adv/hist": histogram(advantages, ADV_HIST["lo"], ADV_HIST["hi"], ADV_HIST["bins"])}
        return scalars, hists, n_tokens

    def group_records(self, chunk: Sequence[TrainSeq], groups: dict[int, dict], tokenizer: Any) -> list[dict]:
        """Group inspector records (issue 8): per response and token, exactly what the loss used."""
        records: dict[int, dict] = {}
        for seq in chunk:
            if id(seq) not in self.token_rows:
                continue
            token_probs, coefficients, rectified = self.token_rows[id(seq)]
            info = groups.get(seq.group_id, {})
            record = records.setdefault(seq.group_id, {"group_id": seq.group_id, "prompt": info.get("prompt"),
                                                       "ground_truth": info.get("ground_truth"), "responses": []})
            record["responses"].append({
                "source": seq.source, "text": seq.text, "reward": seq.reward, "advantage": seq.advantage,
                # getattr: a TrainSeq pickled in a checkpoint before the flag existed has none
                "truncated": bool(getattr(seq, "truncated", False)),
                "tokens": tokenizer.convert_ids_to_tokens(seq.response_ids),
                "pi": token_probs, "c": coefficients, "rectified": [bool(x) for x in rectified],
            })
        return list(records.values())
