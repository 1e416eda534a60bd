"""The GFT training loop (and its baselines) on accelerate.

One step of the loop, for a rollout batch of `prompts_per_step` prompts:
  1. groups: off-policy answers (expert, teacher) + `n_self` samples of the current policy
  2. rewards: the same reward function scores every response, whatever its source
  3. group advantages (GAL): A_k = (R_k - mean_G R) / (std_G R + eps)
  4. optimizer steps over mini-batches of `sequences_per_update` sequences, each accumulated over
     micro-batches: forward prompt + response (each distinct prompt of a micro-batch once, see
     shared_prefix_logits), log pi of the response tokens (float32 log-softmax),
     token_probs = exp(log pi), the method's loss (GFT: -A C log pi with DCR), backward, clip, step.
Every optimizer step is one logged step. See ../shared/docs/GFT.md for the method.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from gft_core.config import ConfigError, GFTConfig, resolve_mapping
from gft_core.data import DataError, Example, load_examples, split_eval
from gft_core.groups import SOURCES, Group, Response, group_advantages, off_policy_responses
from gft_core.losses import dcr_coefficients, dft_loss, gft_loss, grpo_loss, sft_loss
from gft_core.metrics import ADV_HIST, MetricSink, NullSink, histogram, response_stats, token_stats
from gft_core.rollout import can_share_prefix, generate_samples

CHECKPOINT_PREFIX = "step-"


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a NaN/inf loss); the last good checkpoint is kept."""


@dataclass
class TrainResult:
    status: str  # succeeded | cancelled
    step: int
    final_dir: str | None = None
    eval_accuracy: float | None = None
    checkpoint_dir: str | None = None


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
    old_logprobs: list[float] | None = None  # GRPO: log pi_old of the response tokens
    ref_logprobs: list[float] | None = None  # GRPO with kl_coef > 0


@dataclass
class _Rollout:
    """The optimizer steps still to take on one rollout batch (kept in checkpoints)."""

    chunks: list[list[TrainSeq]]
    groups: dict[int, dict] = field(default_factory=dict)  # group_id -> prompt / ground truth
    time_rollout: float = 0.0  # per optimizer step (the batch's time / its number of steps)
    time_reward: float = 0.0


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from a tuple of parts; stable across processes and Python versions."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


# ---------------------------------------------------------------------- log-probabilities


def collate(seqs: Sequence[TrainSeq], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
    """Prompts left-padded, responses right-padded, so all responses start at the same column.

    input_ids (B, P + T); the response tokens are input_ids[:, P:], valid where resp_mask is 1.
    For the shared-prefix forward: prompt_rows (U,), one row of each distinct prompt, and
    prompt_index (B,), the distinct prompt of each row (an index into prompt_rows).
    """
    P = max(len(s.prompt_ids) for s in seqs)
    T = max(len(s.response_ids) for s in seqs)
    B = len(seqs)
    input_ids = torch.full((B, P + T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, P + T), dtype=torch.long)
    rows: dict[tuple[int, ...], int] = {}
    prompt_index = torch.tensor([rows.setdefault(tuple(s.prompt_ids), len(rows)) for s in seqs], dtype=torch.long)
    for i, s in enumerate(seqs):
        p, r = s.prompt_ids, s.response_ids
        input_ids[i, P - len(p):P] = torch.tensor(p, dtype=torch.long)
        input_ids[i, P:P + len(r)] = torch.tensor(r, dtype=torch.long)
        attn[i, P - len(p):P + len(r)] = 1
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    prompt_rows = torch.zeros(len(rows), dtype=torch.long)
    prompt_rows[prompt_index] = torch.arange(B)  # any one row of each distinct prompt
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attn.to(device),
        "position_ids": position_ids.to(device),
        "targets": input_ids[:, P:].to(device),
        "resp_mask": attn[:, P:].to(device),
        "prompt_rows": prompt_rows.to(device),
        "prompt_index": prompt_index.to(device),
    }


def _accepts_logits_to_keep(model: Any) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


# policy/entropy is estimated on every ENTROPY_STRIDE-th valid response token (see response_logprobs)
ENTROPY_STRIDE = 16


def response_logprobs(model: Any, batch: dict[str, torch.Tensor], *, with_entropy: bool = False, keep: bool | None = None,
                      shared_prefix: bool = False, entropy_stride: int = ENTROPY_STRIDE):
    """log pi(y_t | x, y_<t) of the response tokens, (B, T), from one forward pass.

    Logits are cast to float32 before log_softmax (bf16 log-probs are too coarse for DCR's pi < tau
    and for exp(log pi)). With shared_prefix (see can_share_prefix), a micro-batch in which
    prompts repeat (a group's responses) runs each distinct prompt once: shared_prefix_logits.
    With with_entropy, also the policy entropy (B, T), from the same
    log-probabilities, on a fixed sample of positions and NaN elsewhere: every entropy_stride-th
    valid response token of the micro-batch, counted in row-major order from the first (1 = all).
    The mean over the sampled tokens estimates the mean entropy over all trained tokens (a
    systematic sample, spread evenly over the rows and positions) at 1/entropy_stride of the
    cost: a full-vocabulary entropy on every token added ~18% to forward+backward on a 32k
    vocabulary (more at 152k), 16x fewer tokens add ~1%.
    """
    T = batch["targets"].shape[1]
    if shared_prefix and batch["prompt_rows"].numel() < batch["targets"].shape[0]:
        logits = shared_prefix_logits(model, batch, keep=keep)
    else:
        kwargs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      position_ids=batch["position_ids"], use_cache=False)
        if keep:  # only the T + 1 last positions predict response tokens: skip the prompt's logits
            kwargs["logits_to_keep"] = T + 1
        logits = model(**kwargs).logits[:, -(T + 1):-1, :]
    logp_all = F.log_softmax(logits.float(), dim=-1)
    logprobs = logp_all.gather(-1, batch["targets"].unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return logprobs, None
    with torch.no_grad():
        valid = batch["resp_mask"].bool()
        sel = valid & ((valid.flatten().cumsum(0) - 1) % max(1, int(entropy_stride)) == 0).view_as(valid)
        lp = logp_all.detach()[sel]
        entropy = torch.full_like(logprobs, float("nan"))
        entropy[sel] = -(lp.exp() * lp).sum(-1)
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
    rows, idx = batch["prompt_rows"], batch["prompt_index"]
    ids, mask, pos = batch["input_ids"], batch["attention_mask"], batch["position_ids"]
    T = batch["targets"].shape[1]
    P = ids.shape[1] - T
    cache = DynamicCache(config=net.config)
    out = model(input_ids=ids[rows, :P], attention_mask=mask[rows, :P], position_ids=pos[rows, :P],
                past_key_values=cache, use_cache=True, **({"logits_to_keep": 1} if keep else {}))
    first = out.logits[:, -1:][idx]  # the last prompt position predicts the first response token
    if T == 1:
        return first
    cache.batch_select_indices(idx)
    rest = model(input_ids=ids[:, P:-1], attention_mask=mask[:, :-1], position_ids=pos[:, P:-1],
                 past_key_values=cache, use_cache=True).logits
    return torch.cat([first, rest], 1)


# ---------------------------------------------------------------------- evaluation


def encode_prompt(tokenizer: Any, prompt: str, *, max_len: int, chat_template: bool) -> list[int]:
    """Prompt token ids (chat template optional); too long prompts keep their last max_len tokens."""
    if chat_template:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(prompt)["input_ids"]
    return list(ids[-max_len:])


@torch.no_grad()
def evaluate_accuracy(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    reward_fn: Callable,
    *,
    k: int,
    temperature: float,
    max_prompt_len: int,
    max_response_len: int,
    top_p: float = 1.0,
    chat_template: bool = False,
    batch_size: int = 64,
    seed: int = 0,
    accelerator: Any = None,
) -> tuple[float, list[dict]]:
    """Mean accuracy over k samples per prompt (a sample is correct when its reward >= 1).

    With several processes each takes a shard of the prompts; the counts are summed. The global
    RNG is left untouched (sampling runs in a forked RNG seeded with `seed`).
    Returns (accuracy, per-prompt records of this process).
    """
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    shard = list(examples)[rank::world]
    prompt_ids = [encode_prompt(tokenizer, e.prompt, max_len=max_prompt_len, chat_template=chat_template) for e in shard]
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derive_seed(seed, "eval", rank))
        samples = generate_samples(model, tokenizer, prompt_ids, n=k, max_new_tokens=max_response_len,
                                   temperature=temperature, top_p=top_p, batch_size=batch_size, accelerator=accelerator)
    texts = [s.text for ss in samples for s in ss]
    truths = [e.ground_truth for e, ss in zip(shard, samples) for _ in ss]
    prompts = [e.prompt for e, ss in zip(shard, samples) for _ in ss]
    rewards = reward_fn(texts, truths, prompts) if texts else []
    correct = [float(r >= 1.0) for r in rewards]
    counts = torch.tensor([sum(correct), len(correct)], dtype=torch.float64)
    if accelerator is not None and world > 1:
        counts = accelerator.reduce(counts.to(accelerator.device), reduction="sum").cpu()
    records, i = [], 0
    for e, ss in zip(shard, samples):
        records.append({"prompt": e.prompt, "ground_truth": e.ground_truth,
                        "samples": [s.text for s in ss], "correct": correct[i:i + len(ss)]})
        i += len(ss)
    return float(counts[0] / counts[1]) if counts[1] > 0 else 0.0, records


def load_policy(path: str | Path, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from a local Hugging Face directory; float32 master weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model, tokenizer


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warmup to the peak lr, then constant, linear decay to 0 or cosine decay to 0."""

    def f(step: int) -> float:  # step = number of optimizer steps already taken
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


# ---------------------------------------------------------------------- trainer


class Trainer:
    """GFT (and baselines) on one model: `Trainer(cfg, sink, stop_hook).train()`.

    The config is validated here, before anything is loaded. `resume=True` continues from the
    latest checkpoint under output_dir/checkpoints (a fresh start if there is none).
    """

    def __init__(self, cfg: GFTConfig, sink: MetricSink | None = None, stop_hook: Callable[[], bool] | None = None,
                 *, resume: bool = False):
        self.cfg = cfg.validate()
        self.sink = sink or NullSink()
        self.stop_hook = stop_hook
        self.resume = resume
        self.out = Path(cfg.output_dir)
        self.counts = cfg.group_counts()
        self._ready = False

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        """Load data, reward, model; build optimizer/scheduler; restore a checkpoint if resuming."""
        if self._ready:
            return
        from accelerate import Accelerator

        cfg = self.cfg
        self.accelerator = acc = Accelerator(mixed_precision=cfg.mixed_precision)
        world = acc.num_processes
        if cfg.prompts_per_step % world or cfg.update_size % world or (cfg.update_size // world) % cfg.micro_batch_size:
            raise ConfigError("prompts_per_step", cfg.prompts_per_step,
                              f"with {world} processes, prompts_per_step and sequences_per_update / {world} "
                              "must divide evenly (micro_batch_size is per process)")
        # Each process takes 1/world of every optimizer step's sequences, in micro-batches.
        self.n_micro = cfg.update_size // world // cfg.micro_batch_size
        acc.gradient_accumulation_steps = self.n_micro
        self.train_examples, self.eval_examples = self._load_data()
        self.reward_fn = cfg.reward_fn()
        self.rollouts_per_epoch = len(self.train_examples) // cfg.prompts_per_step
        if self.rollouts_per_epoch == 0:
            raise DataError(f"data.path: {len(self.train_examples)} training examples is fewer than "
                            f"prompts_per_step={cfg.prompts_per_step}")
        if cfg.max_steps is not None:
            self.total_steps = cfg.max_steps
        else:
            self.total_steps = math.ceil(cfg.epochs * self.rollouts_per_epoch) * cfg.updates_per_rollout

        seed_everything(cfg.seed)
        checkpoint = self.latest_checkpoint() if self.resume else None
        model, self.tokenizer = load_policy(cfg.model_path)
        self.pad_id = self.tokenizer.pad_token_id
        self.start_model_stats = None
        self.ref_model = None
        if cfg.method == "grpo" and cfg.kl_coef > 0:  # GRPO's KL term needs the reference model
            self.ref_model = _frozen_copy(model, acc.device)
        if cfg.kl_interval and self._probe_examples():
            self._prepare_kl_probe(model, acc.device)  # from the start model, before any update
        if checkpoint is not None:
            _load_weights(model, checkpoint / "model")
        self._keep_logits = _accepts_logits_to_keep(model)
        self._shared_prefix = can_share_prefix(model)
        # fused: one kernel per step instead of a Python loop over the parameters (same update)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas),
                                      weight_decay=cfg.weight_decay, fused=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(cfg.lr_schedule, cfg.warmup_steps, self.total_steps))
        # The scheduler is not prepared: accelerate would step it once per process.
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.step, self.epoch, self.cursor, self.rollout_index = 0, 0, 0, 0
        self.pending: _Rollout | None = None
        self.eval_history: list[tuple[int, float]] = []
        self.last_checkpoint: Path | None = None
        if checkpoint is not None:
            self._restore(checkpoint)
        self._ready = True

    def _load_data(self) -> tuple[list[Example], list[Example]]:
        d = self.cfg.data
        mapping = resolve_mapping(d.mapping)
        examples = load_examples(d.path, mapping, limit=d.limit)
        if not examples:
            raise DataError(f"data.path: {d.path!r} holds no examples")
        if d.eval_path:
            eval_mapping = resolve_mapping(d.eval_mapping if d.eval_mapping is not None else d.mapping, "data.eval_mapping")
            held_out = load_examples(d.eval_path, eval_mapping)
        elif d.eval_fraction > 0:
            examples, held_out = split_eval(examples, d.eval_fraction, self.cfg.seed)
        else:
            held_out = []
        if self.cfg.eval_max_prompts is not None:
            held_out = held_out[: self.cfg.eval_max_prompts]
        return examples, held_out

    def _probe_examples(self) -> list[Example]:
        """A fixed probe set for the KL to the start model: held-out (else training) prompts."""
        pool = self.eval_examples or self.train_examples
        return [e for e in pool if e.expert or e.teachers][: self.cfg.kl_probe_size]

    # ------------------------------------------------------------------ the loop

    def train(self) -> TrainResult:
        """Run to total_steps (or until the stop hook says stop). Main process logs and saves."""
        self.setup()
        cfg, acc = self.cfg, self.accelerator
        main = acc.is_main_process
        if main:
            self.sink.start(total_steps=self.total_steps, start_step=self.step, config=cfg.to_dict())
        status = "succeeded"
        try:
            while self.step < self.total_steps:
                if self._should_stop():
                    self.save_checkpoint()
                    status = "cancelled"
                    break
                if self.pending is None or not self.pending.chunks:
                    self.pending = self.collect_rollout()
                chunk = self.pending.chunks[0]
                scalars, hists, records = self.optimizer_step(chunk, self.pending)
                self.pending.chunks.pop(0)
                self.step += 1
                self._periodic(scalars)
                if main:
                    self.sink.log(self.step, scalars, hists)
                    if records:
                        self.sink.log_groups(self.step, records)
                if cfg.checkpoint_interval and self.step % cfg.checkpoint_interval == 0:
                    self.save_checkpoint()
            final_dir = None
            if status == "succeeded":
                final_dir = self.save_final() if cfg.save_final else None
            acc.wait_for_everyone()
            return TrainResult(status=status, step=self.step, final_dir=final_dir,
                               eval_accuracy=self.eval_history[-1][1] if self.eval_history else None,
                               checkpoint_dir=str(self.last_checkpoint) if self.last_checkpoint else None)
        finally:
            if main:
                self.sink.close()

    def _should_stop(self) -> bool:
        """The stop hook, asked on the main process; every process follows its answer."""
        acc = self.accelerator
        stop = bool(self.stop_hook()) if self.stop_hook is not None and acc.is_main_process else False
        if acc.num_processes > 1:
            from accelerate.utils import broadcast

            stop = bool(broadcast(torch.tensor([int(stop)], device=acc.device), from_process=0).item())
        return stop

    def _periodic(self, scalars: dict[str, float]) -> None:
        """Evaluation and KL-to-start at their intervals (evaluation also at the last step)."""
        cfg = self.cfg
        last = self.step == self.total_steps
        if self.eval_examples and ((cfg.eval_interval and self.step % cfg.eval_interval == 0) or last):
            acc, _ = self.evaluate()
            scalars["eval/accuracy"] = acc
            self.eval_history.append((self.step, acc))
        if self.start_model_stats is not None and cfg.kl_interval and (self.step % cfg.kl_interval == 0 or last):
            scalars["policy/kl_start"] = self.kl_to_start()

    # ------------------------------------------------------------------ rollouts

    def next_examples(self) -> list[Example]:
        """The next prompts_per_step examples: a seeded permutation per epoch, last partial batch dropped."""
        n, k = len(self.train_examples), self.cfg.prompts_per_step
        if self.cursor + k > n - n % k:
            self.epoch, self.cursor = self.epoch + 1, 0
        order = np.random.default_rng(derive_seed(self.cfg.seed, "epoch", self.epoch) % (1 << 63)).permutation(n)
        idx = order[self.cursor:self.cursor + k]
        self.cursor += k
        return [self.train_examples[i] for i in idx]

    def build_groups(self, examples: Sequence[Example], first_group_id: int) -> list[Group]:
        """Off-policy answers (expert, teachers) + n_self samples of the current policy per prompt."""
        cfg, tok = self.cfg, self.tokenizer
        groups = []
        for i, ex in enumerate(examples):
            prompt_ids = encode_prompt(tok, ex.prompt, max_len=cfg.max_prompt_len, chat_template=cfg.data.use_chat_template)
            responses = off_policy_responses(ex, tok, n_expert=self.counts["expert"], n_teacher=self.counts["teacher"],
                                             max_response_len=cfg.max_response_len)
            groups.append(Group(group_id=first_group_id + i, prompt=ex.prompt, prompt_ids=prompt_ids,
                                ground_truth=ex.ground_truth, responses=responses))
        if self.counts["self"]:
            samples = generate_samples(self.model, tok, [g.prompt_ids for g in groups], n=self.counts["self"],
                                       max_new_tokens=cfg.max_response_len, temperature=cfg.temperature,
                                       top_p=cfg.top_p, batch_size=cfg.eval_batch_size, accelerator=self.accelerator)
            for g, ss in zip(groups, samples):
                g.responses += [Response("self", s.text, s.token_ids, s.truncated) for s in ss]
        return groups

    def collect_rollout(self) -> _Rollout:
        """Groups -> rewards -> advantages -> the rollout's optimizer-step chunks of sequences."""
        cfg, acc = self.cfg, self.accelerator
        t0 = time.perf_counter()
        batch = self.next_examples()
        world, rank = acc.num_processes, acc.process_index
        per_rank = cfg.prompts_per_step // world
        first_gid = self.rollout_index * cfg.prompts_per_step
        # Each rollout batch samples from its own seed: resuming reproduces it exactly.
        torch.manual_seed(derive_seed(cfg.seed, "rollout", self.rollout_index, rank))
        groups = self.build_groups(batch[rank * per_rank:(rank + 1) * per_rank], first_gid + rank * per_rank)
        t1 = time.perf_counter()
        flat = [(g, r) for g in groups for r in g.responses]
        rewards = self.reward_fn([r.text for _, r in flat], [g.ground_truth for g, _ in flat], [g.prompt for g, _ in flat])
        t2 = time.perf_counter()
        rewards_t = torch.tensor(rewards, dtype=torch.float32)
        gids = torch.tensor([g.group_id for g, _ in flat])
        adv = group_advantages(rewards_t, gids, normalize_std=cfg.normalize_std, eps=cfg.adv_eps)
        seqs = [TrainSeq(prompt_ids=g.prompt_ids, response_ids=r.token_ids, source=r.source, reward=float(rw),
                          advantage=self._loss_advantage(float(a), r.source), group_id=g.group_id, text=r.text)
                for (g, r), rw, a in zip(flat, rewards, adv.tolist())]
        if cfg.method == "grpo":
            self._old_and_ref_logprobs(seqs)
        n_chunks = cfg.updates_per_rollout
        size = math.ceil(len(seqs) / n_chunks)  # per process; rows short of answers make it smaller
        chunks = [seqs[i * size:(i + 1) * size] for i in range(n_chunks)]
        self.rollout_index += 1
        return _Rollout(chunks=chunks,
                        groups={g.group_id: {"prompt": g.prompt, "ground_truth": g.ground_truth} for g in groups},
                        time_rollout=(t1 - t0) / n_chunks, time_reward=(t2 - t1) / n_chunks)

    def _loss_advantage(self, a: float, source: str) -> float:
        """The advantage the method's loss uses: A for GAL, 1 for SFT-style, 1 off-policy for gft_no_gal."""
        m = self.cfg.method
        if m in ("sft", "sft_mix", "dft"):
            return 1.0
        if m == "gft_no_gal" and source != "self":
            return 1.0
        return a

    @torch.no_grad()
    def _old_and_ref_logprobs(self, seqs: list[TrainSeq]) -> None:
        """GRPO: log pi_old (the policy that sampled) and log pi_ref, before any update."""
        mb = self.cfg.micro_batch_size
        for i in range(0, len(seqs), mb):
            part = seqs[i:i + mb]
            batch = collate(part, self.pad_id, self.accelerator.device)
            kw = dict(keep=self._keep_logits, shared_prefix=self._shared_prefix)
            old, _ = response_logprobs(self.model, batch, **kw)
            ref = response_logprobs(self.ref_model, batch, **kw)[0] if self.ref_model is not None else None
            for j, s in enumerate(part):
                n = len(s.response_ids)
                s.old_logprobs = old[j, :n].tolist()
                if ref is not None:
                    s.ref_logprobs = ref[j, :n].tolist()

    # ------------------------------------------------------------------ one optimizer step

    def _coefficients(self, token_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(C_t, rectified) as this method's loss applies them; computed once per micro-batch."""
        m = self.cfg.method
        if m in ("gft", "gft_no_gal"):
            tau = self.cfg.tau
        elif m == "dft":  # DFT = GFT with tau >= 1: C_t = pi_t everywhere
            tau = 1.0
        else:  # SFT, GRPO and GFT without DCR use C_t = 1
            return torch.ones_like(token_probs), torch.zeros_like(token_probs, dtype=torch.bool)
        return dcr_coefficients(token_probs, tau), token_probs.detach() < tau

    def _loss(self, logprobs, token_probs, mask, part: Sequence[TrainSeq], device) -> torch.Tensor:
        """The method's loss on one micro-batch (losses.py holds the formulas)."""
        cfg, m = self.cfg, self.cfg.method
        agg = cfg.loss_agg
        adv = torch.tensor([s.advantage for s in part], dtype=torch.float32, device=device)
        if m in ("gft", "gft_no_gal", "gft_no_dcr"):
            return gft_loss(logprobs, token_probs, adv, mask, tau=cfg.tau, agg=agg, dcr=m != "gft_no_dcr")
        if m in ("sft", "sft_mix"):
            return sft_loss(logprobs, mask, agg=agg)
        if m == "dft":
            return dft_loss(logprobs, token_probs, mask, agg=agg)
        old = _pad_rows([s.old_logprobs for s in part], logprobs.shape[1], device)
        ref = _pad_rows([s.ref_logprobs for s in part], logprobs.shape[1], device) if self.ref_model is not None else None
        return grpo_loss(logprobs, old, adv, mask, clip_eps=cfg.clip_eps, ref_logprobs=ref, kl_coef=cfg.kl_coef, agg=agg)

    def optimizer_step(self, chunk: list[TrainSeq], rollout: _Rollout):
        """Accumulate gradients over the chunk's micro-batches, clip, step. Returns the step's
        (scalars, histograms, group records), all from the tensors the loss used."""
        cfg, acc = self.cfg, self.accelerator
        model, device = self.model, acc.device
        t0 = time.perf_counter()
        step = self.step + 1
        sample_groups = (cfg.group_sample_count > 0 and cfg.group_sample_interval > 0
                         and step % cfg.group_sample_interval == 0)
        wanted = set(sorted(dict.fromkeys(s.group_id for s in chunk))[: cfg.group_sample_count]) if sample_groups else set()
        micro = [chunk[i:i + cfg.micro_batch_size] for i in range(0, len(chunk), cfg.micro_batch_size)]
        # The accumulation count must match accelerate's (a smaller chunk keeps the same count).
        micro += [[] for _ in range(self.n_micro - len(micro))]
        model.train()
        losses, tok_pi, tok_c, tok_rect, tok_ent, tok_src, token_rows = [], [], [], [], [], [], {}
        n_tokens = 0
        for part in micro:
            with acc.accumulate(model):
                if not part:  # an empty micro-batch still counts as an accumulation step
                    acc.backward(sum(p.sum() for p in model.parameters()) * 0.0)
                    continue
                batch = collate(part, self.pad_id, device)
                logprobs, entropy = response_logprobs(model, batch, with_entropy=True, keep=self._keep_logits,
                                                      shared_prefix=self._shared_prefix)
                token_probs = logprobs.exp()
                mask = batch["resp_mask"].to(logprobs.dtype)
                loss = self._loss(logprobs, token_probs, mask, part, device)
                if not torch.isfinite(loss):
                    self._fail(f"step {step}: loss is {loss.item()}")
                acc.backward(loss)
            losses.append(loss.detach().float())
            c, rect = self._coefficients(token_probs)
            valid = batch["resp_mask"].bool()
            n_tokens += int(valid.sum())
            pi_d = token_probs.detach()
            tok_pi.append(pi_d[valid]), tok_c.append(c.detach()[valid]), tok_rect.append(rect[valid])
            tok_ent.append(entropy[valid & ~entropy.isnan()])  # the sampled positions only
            src_idx = torch.tensor([SOURCES.index(s.source) for s in part], device=device)
            tok_src.append(src_idx.unsqueeze(1).expand_as(valid)[valid])
            for j, s in enumerate(part):
                if s.group_id in wanted:
                    n = len(s.response_ids)
                    token_rows[id(s)] = (pi_d[j, :n].tolist(), c[j, :n].detach().tolist(), rect[j, :n].tolist())
        t_fwd = time.perf_counter() - t0
        grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        if not math.isfinite(grad_norm) and cfg.mixed_precision != "fp16":  # fp16's scaler skips such steps
            self._fail(f"step {step}: gradient norm is {grad_norm}")
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        t_step = time.perf_counter() - t0 + rollout.time_rollout + rollout.time_reward

        # statistics, from the tensors above (gathered over processes)
        cat = lambda xs, dt=None: torch.cat(xs) if xs else torch.zeros(0, dtype=dt)  # noqa: E731
        pi, c, rect = self._gather(cat(tok_pi)), self._gather(cat(tok_c)), self._gather(cat(tok_rect, torch.bool))
        ent, src = self._gather(cat(tok_ent)), self._gather(cat(tok_src, torch.long))
        rewards = self._gather(torch.tensor([s.reward for s in chunk], device=device))
        advs = self._gather(torch.tensor([s.advantage for s in chunk], device=device))
        lengths = self._gather(torch.tensor([len(s.response_ids) for s in chunk], device=device))
        gids = self._gather(torch.tensor([s.group_id for s in chunk], device=device))
        srcs = [SOURCES[i] for i in self._gather(torch.tensor([SOURCES.index(s.source) for s in chunk], device=device)).tolist()]
        loss_value = torch.stack(losses).mean() if losses else torch.zeros((), device=device)
        if acc.num_processes > 1:
            loss_value = acc.reduce(loss_value.to(device), reduction="mean")
            n_tokens = int(acc.reduce(torch.tensor(n_tokens, device=device), reduction="sum"))
        scalars = {
            "loss": float(loss_value), "grad_norm": grad_norm, "lr": float(lr),
            "tokens_per_s": n_tokens / max(t_step, 1e-9),
            "time/rollout": rollout.time_rollout, "time/reward": rollout.time_reward,
            "time/fwd_bwd": t_fwd, "time/step": t_step,
        }
        scalars.update(response_stats(rewards.cpu(), advs.cpu(), srcs, lengths.cpu(), gids.cpu()))
        scalars.update(token_stats(pi.cpu(), c.cpu(), rect.cpu(), ent.cpu(), src.cpu()))
        hists = {"adv/hist": histogram(advs.cpu(), ADV_HIST["lo"], ADV_HIST["hi"], ADV_HIST["bins"])}
        records = self._group_records(chunk, rollout, token_rows) if wanted else []
        return scalars, hists, records

    def _group_records(self, chunk: list[TrainSeq], rollout: _Rollout, token_rows: dict) -> list[dict]:
        """Group inspector records (issue 8): per response and token, exactly what the loss used."""
        records: dict[int, dict] = {}
        for s in chunk:
            if id(s) not in token_rows:
                continue
            pi, c, rect = token_rows[id(s)]
            info = rollout.groups.get(s.group_id, {})
            rec = records.setdefault(s.group_id, {"group_id": s.group_id, "prompt": info.get("prompt"),
                                                  "ground_truth": info.get("ground_truth"), "responses": []})
            rec["responses"].append({
                "source": s.source, "text": s.text, "reward": s.reward, "advantage": s.advantage,
                "tokens": self.tokenizer.convert_ids_to_tokens(s.response_ids),
                "pi": pi, "c": c, "rectified": [bool(x) for x in rect],
            })
        return list(records.values())

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate a 1-D tensor of any length over processes (identity with one process)."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return t
        if t.dtype == torch.bool:  # collectives do not all take bool tensors
            return self._gather(t.to(torch.uint8)).bool()
        t = t.to(acc.device)
        n = acc.gather(torch.tensor([t.numel()], device=acc.device))
        padded = acc.pad_across_processes(t, dim=0)
        g = acc.gather(padded).view(acc.num_processes, -1)
        return torch.cat([g[i, :int(k)] for i, k in enumerate(n.tolist())])

    def _fail(self, what: str) -> None:
        """Stop on a non-finite loss or gradient: save the last good state, raise TrainingError."""
        self.optimizer.zero_grad(set_to_none=True)
        path = self.save_checkpoint() if self.step > 0 else self.last_checkpoint
        where = f"; last good checkpoint: {path}" if path else "; no checkpoint was saved"
        raise TrainingError(f"{what}, training stopped{where}")

    # ------------------------------------------------------------------ eval and KL

    def evaluate(self) -> tuple[float, list[dict]]:
        """Held-out mean accuracy over eval_samples samples at eval_temperature."""
        self.setup()
        cfg = self.cfg
        return evaluate_accuracy(self.model, self.tokenizer, self.eval_examples, self.reward_fn, k=cfg.eval_samples,
                                 temperature=cfg.eval_temperature, max_prompt_len=cfg.max_prompt_len,
                                 max_response_len=cfg.max_response_len, chat_template=cfg.data.use_chat_template,
                                 batch_size=cfg.eval_batch_size, seed=derive_seed(cfg.seed, "eval", self.step),
                                 accelerator=self.accelerator)

    def _probe_batches(self) -> list[dict[str, torch.Tensor]]:
        cfg = self.cfg
        seqs = []
        for ex in self._probe_examples():
            prompt_ids = encode_prompt(self.tokenizer, ex.prompt, max_len=cfg.max_prompt_len, chat_template=cfg.data.use_chat_template)
            resp = off_policy_responses(ex, self.tokenizer, n_expert=1, n_teacher=0 if ex.expert else 1,
                                        max_response_len=cfg.max_response_len)[0]
            seqs.append(TrainSeq(prompt_ids, resp.token_ids, resp.source, 0.0, 0.0, -1, resp.text))
        mb = cfg.micro_batch_size
        return [collate(seqs[i:i + mb], self.pad_id, self.accelerator.device) for i in range(0, len(seqs), mb)]

    @torch.no_grad()
    def _prepare_kl_probe(self, start_model: Any, device: Any) -> None:
        """Cache the start model's log-softmax on the probe tokens (small), else keep a frozen copy."""
        self.probe = self._probe_batches()
        vocab = start_model.get_output_embeddings().weight.shape[0]
        n_tok = sum(int(b["resp_mask"].sum()) for b in self.probe)
        if n_tok * vocab * 4 <= 512 * 2**20:
            start_model.to(device).eval()
            self.start_model_stats = [self._probe_logsoftmax(start_model, b).cpu() for b in self.probe]
            start_model.train()
        else:
            self.ref_model = self.ref_model or _frozen_copy(start_model, device)
            self.start_model_stats = "ref_model"

    def _probe_logsoftmax(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N_valid, V) float32 log-softmax at the valid response positions of a probe batch."""
        T = batch["targets"].shape[1]
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"], use_cache=False).logits[:, -(T + 1):-1, :]
        return F.log_softmax(logits.float(), dim=-1)[batch["resp_mask"].bool()]

    @torch.no_grad()
    def kl_to_start(self) -> float:
        """Mean over probe tokens of KL(pi_theta || pi_start) = sum_v p log(p / p_start)."""
        net = self.accelerator.unwrap_model(self.model)
        was_training = net.training
        net.eval()
        total, count = 0.0, 0
        for i, batch in enumerate(self.probe):
            logp = self._probe_logsoftmax(net, batch)
            if isinstance(self.start_model_stats, list):
                logq = self.start_model_stats[i].to(logp.device)
            else:
                logq = self._probe_logsoftmax(self.ref_model, batch)
            total += float((logp.exp() * (logp - logq)).sum())
            count += logp.shape[0]
        net.train(was_training)
        return total / max(count, 1)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_root(self) -> Path:
        return self.out / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        root = self.checkpoint_root()
        steps = [(int(p.name[len(CHECKPOINT_PREFIX):]), p) for p in root.glob(f"{CHECKPOINT_PREFIX}*")
                 if p.is_dir() and p.name[len(CHECKPOINT_PREFIX):].isdigit() and (p / "trainer_state.json").is_file()]
        return max(steps)[1] if steps else None

    def save_checkpoint(self) -> Path | None:
        """output_dir/checkpoints/step-N: model, optimizer, scheduler, RNG, step, data cursor and
        the rest of the current rollout batch; written to a temp dir then renamed; keeps the last few."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if self.step == 0:
            return None
        path = self.checkpoint_root() / f"{CHECKPOINT_PREFIX}{self.step}"
        if acc.is_main_process:
            self._flush_sink()
            tmp = path.with_name(path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            acc.unwrap_model(self.model).save_pretrained(tmp / "model")
            self.tokenizer.save_pretrained(tmp / "model")
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            torch.save(self.pending, tmp / "rollout.pt")
            torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}, tmp / "rng.pt")
            state = {"step": self.step, "epoch": self.epoch, "cursor": self.cursor, "rollout_index": self.rollout_index,
                     "total_steps": self.total_steps, "eval_history": self.eval_history, "config": self.cfg.to_dict()}
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
            self._flush_sink(discard=tmp)
            shutil.rmtree(path, ignore_errors=True)
            os.replace(tmp, path)
            self._prune_checkpoints()
            self.sink.artifact("checkpoint", str(path), self.step)
        acc.wait_for_everyone()
        self.last_checkpoint = path
        return path

    def _flush_sink(self, discard: Path | None = None) -> None:
        """Store the metrics logged so far before a checkpoint (or final model) exists: a resume
        from it skips them. A sink may refuse (the web app's fenced sink, when this attempt was
        superseded): asked before writing and again just before publishing, so nothing is
        published then and `discard` (the unrenamed checkpoint) goes."""
        flush = getattr(self.sink, "flush", None)
        try:
            if flush is not None:
                flush()
        except BaseException:
            if discard is not None:
                shutil.rmtree(discard, ignore_errors=True)
            raise

    def _prune_checkpoints(self) -> None:
        root = self.checkpoint_root()
        done = sorted((int(p.name[len(CHECKPOINT_PREFIX):]), p) for p in root.glob(f"{CHECKPOINT_PREFIX}*")
                      if p.name[len(CHECKPOINT_PREFIX):].isdigit())
        for _, p in done[: max(0, len(done) - self.cfg.keep_checkpoints)]:
            shutil.rmtree(p, ignore_errors=True)

    def _restore(self, path: Path) -> None:
        """Everything but the weights (loaded before prepare) from a checkpoint directory."""
        state = json.loads((path / "trainer_state.json").read_text())
        self.step, self.epoch, self.cursor = state["step"], state["epoch"], state["cursor"]
        self.rollout_index = state["rollout_index"]
        self.eval_history = [tuple(x) for x in state.get("eval_history", [])]
        if self.cfg.max_steps is None and state.get("total_steps"):
            self.total_steps = state["total_steps"]
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=self.accelerator.device, weights_only=False))
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
        self.pending = torch.load(path / "rollout.pt", weights_only=False)
        rng = torch.load(path / "rng.pt", weights_only=False)
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.last_checkpoint = path

    def save_final(self) -> str:
        """The trained model in Hugging Face format under output_dir/final."""
        acc = self.accelerator
        acc.wait_for_everyone()
        path = self.out / "final"
        if acc.is_main_process:
            self._flush_sink()
            acc.unwrap_model(self.model).save_pretrained(path)
            self.tokenizer.save_pretrained(path)
            self.sink.artifact("final_model", str(path), self.step)
        return str(path)


# ---------------------------------------------------------------------- helpers


def _pad_rows(rows: Sequence[Sequence[float] | None], width: int, device: Any) -> torch.Tensor:
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, r in enumerate(rows):
        if r:
            out[i, :len(r)] = torch.tensor(r, dtype=torch.float32)
    return out.to(device)


def _frozen_copy(model: Any, device: Any) -> Any:
    import copy

    ref = copy.deepcopy(model).to(device).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def _load_weights(model: Any, model_dir: Path) -> None:
    """Load a checkpoint's weights into an already built model (tied weights re-tied)."""
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(model_dir, dtype=next(model.parameters()).dtype)
    model.load_state_dict(saved.state_dict())
    del saved
