"""Memory planning: peak memory per device of a run, from the model's config.json and the settings.

Static: weights (float32 master weights; LoRA adds its adapters), gradients and AdamW's two moments
for what trains, GRPO's reference copy (full fine-tuning with a KL term; LoRA switches adapters off
instead). Then the larger of two phases:
- training: one micro-batch's saved activations (every layer's, or with activation checkpointing
  the layer inputs plus one layer's) and the response logits in float32 (logits, log-softmax, their
  gradient);
- rollout: the KV cache of one generation batch (eval_batch_size prompts x their self samples) and
  its last-token logits.
Checked against measured peaks by `python -m bench memory` and tests/core/test_memory.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FP32 = 4
GIB = 1024**3
# The overhead of the framework around the tensors (allocator slack, autograd bookkeeping, temporary
# buffers of the fused kernels), as a share of the tensors' bytes; fitted on CPU peaks (bench/memory.py).
OVERHEAD = 0.15


@dataclass(frozen=True)
class Shape:
    """The sizes of a decoder-only transformer that memory depends on."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> "Shape":
        """From a Hugging Face config.json (Llama/Qwen/Mistral names; GPT-2's n_embd/n_layer/n_head)."""
        hidden = int(c.get("hidden_size") or c["n_embd"])
        heads = int(c.get("num_attention_heads") or c["n_head"])
        return cls(hidden=hidden, layers=int(c.get("num_hidden_layers") or c["n_layer"]), heads=heads,
                   kv_heads=int(c.get("num_key_value_heads") or heads),
                   head_dim=int(c.get("head_dim") or hidden // heads),
                   intermediate=int(c.get("intermediate_size") or c.get("n_inner") or 4 * hidden),
                   vocab=int(c.get("vocab_size", 32000)), tied=bool(c.get("tie_word_embeddings", True)))

    @classmethod
    def from_dir(cls, path: str | Path) -> "Shape":
        return cls.from_config(json.loads((Path(path) / "config.json").read_text()))

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def params(self) -> int:
        """Parameter count (SwiGLU MLP: gate, up, down; norms are negligible)."""
        h, q = self.hidden, self.heads * self.head_dim
        attention = h * q + 2 * h * self.kv_width + q * h
        per_layer = attention + 3 * h * self.intermediate + 2 * h
        return self.layers * per_layer + self.vocab * h * (1 if self.tied else 2) + h

    def lora_params(self, rank: int, targets: str = "auto") -> int:
        """Adapter parameters of rank `rank` on the projections named by `targets` (a
        lora_target_modules value: "auto" = every attention and MLP projection, else Llama-style
        names separated by commas; other names count nothing here)."""
        h, q, f, kv = self.hidden, self.heads * self.head_dim, self.intermediate, self.kv_width
        shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                  "gate_proj": (h, f), "up_proj": (h, f), "down_proj": (f, h)}
        names = set(shapes) if (targets or "").strip() in ("", "auto") else {t.strip() for t in targets.split(",")}
        return self.layers * sum(rank * (i + o) for name, (i, o) in shapes.items() if name in names)

    def trainable(self, lora_rank: int, targets: str = "auto") -> int:
        """Parameters that train: the adapters of a LoRA run, else every parameter."""
        return self.lora_params(lora_rank, targets) if lora_rank else self.params


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device, by part; `peak` is what a device must hold."""

    weights: int
    trainable: int  # parameters that train
    gradients: int
    optimizer: int
    reference: int
    activations: int
    logits: int
    rollout: int

    @property
    def static(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.reference

    @property
    def training(self) -> int:
        return self.activations + self.logits

    @property
    def peak(self) -> int:
        return int((self.static + max(self.training, self.rollout)) * (1 + OVERHEAD))

    def lines(self) -> list[str]:
        """The plan as short lines for a form or a log."""
        g = lambda b: f"{b / GIB:.2f} GiB"  # noqa: E731
        return [f"weights {g(self.weights)}, gradients {g(self.gradients)}, optimizer {g(self.optimizer)}"
                + (f", reference {g(self.reference)}" if self.reference else ""),
                f"training micro-batch {g(self.training)} (activations {g(self.activations)}, logits {g(self.logits)}); "
                f"rollout {g(self.rollout)}",
                f"peak per device ~{g(self.peak)} ({self.trainable:,} parameters train)"]


def plan_memory(shape: Shape, cfg: Any, *, num_gpus: int = 1) -> MemoryPlan:
    """The memory plan of config `cfg` (a GFTConfig) on `num_gpus` devices (data parallel: every
    device holds the model and runs its own micro-batches)."""
    params = shape.params
    lora = shape.lora_params(cfg.lora_rank, cfg.lora_target_modules) if cfg.lora_rank else 0
    trainable = lora or params
    act_bytes = 2 if cfg.mixed_precision in ("bf16", "fp16") else FP32
    reference = params * FP32 if (cfg.method_spec.uses_old_logprobs and cfg.kl_coef > 0 and not lora) else 0

    b, s = cfg.micro_batch_size, cfg.max_prompt_len + cfg.max_response_len
    h, f, kv = shape.hidden, shape.intermediate, shape.kv_width
    per_token_layer = 10 * h + 4 * kv + 5 * f  # saved for backward: norms, q/k/v (+ rope), attention out, MLP
    if cfg.gradient_checkpointing:
        activations = b * s * (shape.layers * h + per_token_layer) * act_bytes
    else:
        activations = b * s * shape.layers * per_token_layer * act_bytes
    logits = 3 * b * cfg.max_response_len * shape.vocab * FP32  # response logits only (logits_to_keep)

    n_gen = cfg.eval_batch_size * max(1, cfg.group_counts()["self"])
    cache = 2 * shape.layers * kv * (cfg.max_prompt_len + cfg.max_response_len) * n_gen * act_bytes
    rollout = cache + 2 * n_gen * shape.vocab * FP32
    return MemoryPlan(weights=(params + lora) * FP32, trainable=trainable, gradients=trainable * FP32,
                      optimizer=2 * trainable * FP32, reference=reference, activations=activations, logits=logits,
                      rollout=rollout)
