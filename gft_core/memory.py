"""Memory planning: peak memory per device of a run, from the model's config.json and the settings.

What it counts is tensor bytes (what the allocator hands out), in three parts:
- held all along: weights (float32 master weights; LoRA adds its adapters), AdamW's two moments for
  what trains, GRPO's reference copy (full fine-tuning with a KL term; LoRA switches adapters off);
- gradients of what trains: they exist from a micro-batch's backward to the optimizer step, so they
  sit beside the activations only when a step accumulates several micro-batches (zero_grad frees
  them, set_to_none);
- the larger of three phases: training (one micro-batch's saved activations: every layer's, or with
  activation checkpointing the layer inputs plus one recomputed layer's; the response logits in
  float32: logits, log-softmax, their gradient), the optimizer step (the gradients), and rollout
  (the KV cache of one generation batch, eval_batch_size prompts x their self samples, and its
  last-token logits).
With FSDP (`MemoryPlan.sharded`) weights, gradients and moments are divided over the devices, and
the gathered full parameters of the root unit and two decoder layers (the one running and the one
prefetched), with their unsharded gradients when every parameter trains, come on top. Not counted: the CUDA context, kernels'
workspaces, the allocator's rounding and fragmentation (`need` adds OVERHEAD for those when a plan
is held against a GPU's free memory).

Checked against the peak tensor memory of real training steps (`measure_peak`: the CPU allocator's
allocations and frees as torch.profiler records them) by `python -m bench memory` and
tests/core/test_memory.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

FP32 = 4
GIB = 1024**3
# Reserved over allocated on a GPU (the caching allocator's rounding and fragmentation), as a share
# of the planned tensors, plus the CUDA context and libraries' workspaces: an allowance, not measured.
OVERHEAD = 0.10
CONTEXT = 512 * 2**20


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
        return self.layers * self.layer_params + self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer (FSDP's unit: gathered whole while it runs)."""
        h, q = self.hidden, self.heads * self.head_dim
        return h * q + 2 * h * self.kv_width + q * h + 3 * h * self.intermediate + 2 * h

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
    """Bytes per device, by part (see the module's docstring); `peak` is the tensors a device holds
    at once, `need` that with the allowance for what is not a tensor."""

    weights: int
    trainable: int  # parameters that train
    gradients: int
    optimizer: int
    reference: int
    activations: int
    logits: int
    rollout: int
    accumulates: bool = False  # several micro-batches per optimizer step: gradients live beside activations
    devices: int = 1  # FSDP: weights, gradients and moments divided over this many devices
    gathered: int = 0  # FSDP: full parameters (and their unsharded gradients) gathered at a time
    strategy: str = "single"

    @property
    def static(self) -> int:
        return self.weights + self.optimizer + self.reference + self.gathered

    @property
    def training(self) -> int:
        return self.activations + self.logits + (self.gradients if self.accumulates else 0)

    @property
    def peak(self) -> int:
        return self.static + max(self.training, self.gradients, self.rollout)

    @property
    def need(self) -> int:
        """What a GPU must have free: the tensors, the allocator's slack and the CUDA context."""
        return int(self.peak * (1 + OVERHEAD)) + CONTEXT

    def sharded(self, devices: int, shape: Shape, act_bytes: int = FP32) -> "MemoryPlan":
        """This plan under FSDP full shard over `devices` GPUs (the decoder layer as the wrap unit)."""
        if devices <= 1:
            return replace(self, strategy="single")
        root = shape.params - shape.layers * shape.layer_params
        units = (root + 2 * shape.layer_params) * act_bytes
        full = self.trainable >= shape.params  # full fine-tuning: the gathered units' gradients too, unsharded
        return replace(self, weights=-(-self.weights // devices), gradients=-(-self.gradients // devices),
                       optimizer=-(-self.optimizer // devices), devices=devices, strategy="fsdp",
                       gathered=units * (2 if full else 1))

    def lines(self) -> list[str]:
        """The plan as short lines for a form or a log."""
        g = lambda b: f"{b / GIB:.2f} GiB"  # noqa: E731
        shard = f" (each 1/{self.devices}, FSDP; gathered layers {g(self.gathered)})" if self.devices > 1 else ""
        return [f"weights {g(self.weights)}, gradients {g(self.gradients)}, optimizer {g(self.optimizer)}"
                + (f", reference {g(self.reference)}" if self.reference else "") + shard,
                f"training micro-batch {g(self.training)} (activations {g(self.activations)}, logits {g(self.logits)}); "
                f"rollout {g(self.rollout)}",
                f"strategy {self.strategy.upper() if self.strategy != 'single' else 'single GPU'}: "
                f"peak per device ~{g(self.peak)}, ~{g(self.need)} with the allocator and CUDA context "
                f"({self.trainable:,} parameters train)"]


def plan_memory(shape: Shape, cfg: Any, *, num_gpus: int = 1) -> MemoryPlan:
    """The memory plan of config `cfg` (a GFTConfig) on `num_gpus` devices, data parallel: every
    device holds the model and runs its own micro-batches (strategy "ddp", or "single" on one);
    `.sharded(num_gpus, shape)` is the FSDP plan of the same run."""
    params = shape.params
    lora = shape.lora_params(cfg.lora_rank, cfg.lora_target_modules) if cfg.lora_rank else 0
    trainable = lora or params
    act_bytes = activation_bytes(cfg)
    reference = params * FP32 if (cfg.method_spec.uses_old_logprobs and cfg.kl_coef > 0 and not lora) else 0

    b, s = cfg.micro_batch_size, cfg.max_prompt_len + cfg.max_response_len
    h, f, kv = shape.hidden, shape.intermediate, shape.kv_width
    # What autograd saves per token and layer (measured on the tiny Llama, SDPA attention, with
    # torch.profiler's allocator events): the two norms' inputs, normalized values and outputs, q and
    # its rotated copy (hidden-wide), k, v and rotated k (kv-wide), gate, silu(gate), up and their
    # product (intermediate-wide). With LoRA the norms' weights are frozen, so their normalized
    # values are not saved (2 hidden-wide fewer).
    per_token_layer = (6 if lora else 8) * h + 3 * kv + 4 * f
    if cfg.gradient_checkpointing:
        activations = b * s * (shape.layers * h + per_token_layer) * act_bytes
    else:
        activations = b * s * shape.layers * per_token_layer * act_bytes
    logits = 3 * b * cfg.max_response_len * shape.vocab * FP32  # response logits only (logits_to_keep)

    n_gen = cfg.eval_batch_size * max(1, cfg.group_counts()["self"])
    cache = 2 * shape.layers * kv * (cfg.max_prompt_len + cfg.max_response_len) * n_gen * act_bytes
    rollout = cache + 2 * n_gen * shape.vocab * FP32
    per_device = cfg.update_size // max(1, num_gpus)
    return MemoryPlan(weights=(params + lora) * FP32, trainable=trainable, gradients=trainable * FP32,
                      optimizer=2 * trainable * FP32, reference=reference, activations=activations, logits=logits,
                      rollout=rollout, accumulates=per_device > b, strategy="ddp" if num_gpus > 1 else "single")


def activation_bytes(cfg: Any) -> int:
    """Bytes per element of activations and gathered FSDP parameters under the config's precision."""
    return 2 if cfg.mixed_precision in ("bf16", "fp16") else FP32


def choose_strategy(plan: MemoryPlan, num_gpus: int, free_bytes: int | None) -> str:
    """"single" on one GPU; on several, "ddp" when the replicated plan fits a GPU's `free_bytes`
    (or nothing is known), else "fsdp" (sharding is then the only chance; the launch refused the
    run earlier if its sharded plan does not fit either)."""
    if num_gpus <= 1:
        return "single"
    return "ddp" if free_bytes is None or plan.need <= free_bytes else "fsdp"


def plan_for(shape: Shape, cfg: Any, num_gpus: int, free_bytes: int | None) -> MemoryPlan:
    """The plan of the strategy chosen for a GPU with `free_bytes` free (see choose_strategy)."""
    plan = plan_memory(shape, cfg, num_gpus=num_gpus)
    if choose_strategy(plan, num_gpus, free_bytes) == "fsdp":
        return plan.sharded(num_gpus, shape, activation_bytes(cfg))
    return plan


def measure_peak(fn: Callable[[], Any]) -> int:
    """Peak tensor bytes on the CPU while `fn()` runs, above what was allocated before: the running
    sum of the CPU allocator's allocations and frees as torch.profiler records them
    (profile_memory=True). Exact and independent of malloc's caching, unlike RSS."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    cpu = torch.autograd.DeviceType.CPU
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == cpu)
    total = peak = 0
    for _, nbytes in events:
        total += nbytes
        peak = max(peak, total)
    return peak
