"""The GFT training loop (and its baselines) on accelerate.

One step of the loop, for a rollout batch of `prompts_per_step` prompts:
  1. groups: off-policy answers (expert, teacher) + `n_self` samples of the current policy
  2. rewards: the same reward function scores every response, whatever its source
  3. group advantages (GAL): A_k = (R_k - mean_G R) / (std_G R + eps)
  4. optimizer steps over mini-batches of `sequences_per_update` sequences, each accumulated over
     micro-batches: forward prompt + response (each distinct prompt of a micro-batch once, see
     shared_prefix_logits), log pi of the response tokens (float32 log-softmax),
     token_probs = exp(log pi), the method's loss (GFT: -A C log pi with DCR), backward, clip, step.
Every optimizer step is one logged step. See docs/GFT.md for the method.

What each method trains on and with which loss is its entry of methods.METHODS; the forward
pass is logprobs.py, the step's statistics step_stats.py, evaluation and the KL probe
evaluation.py, the checkpoint format checkpoints.py.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from gft_core.checkpoints import (CHECKPOINT_PREFIX, latest_checkpoint, prune_checkpoints, read_checkpoint,
                                  write_checkpoint)
from gft_core.config import ConfigError, GFTConfig, resolve_mapping
from gft_core.data import DataError, Example, load_examples, split_eval
from gft_core.evaluation import KLProbe, SuiteEvaluation, evaluate_accuracy
from gft_core.groups import Group, Response, group_advantages, off_policy_responses
from gft_core.logprobs import TrainSeq, accepts_logits_to_keep, collate, pad_rows, response_logprobs
from gft_core.losses import dcr_coefficients, dft_loss, gft_loss, grpo_loss, sft_loss
from gft_core.metrics import MetricSink, NullSink
from gft_core.lora import AdaptersOff, load_adapter_weights, peft_state, save_final_model, unsharded_copy
from gft_core.policy import (PROMPT_FORMAT_FILE, derive_seed, encode_prompt, frozen_copy, load_policy, load_weights,
                             prepare_training, seed_everything)
from gft_core.rollout import can_share_prefix, generate_samples, is_fsdp
from gft_core.step_stats import StepStats


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
class RolloutBatch:
    """The optimizer steps still to take on one rollout batch (kept in checkpoints)."""

    chunks: list[list[TrainSeq]]
    groups: dict[int, dict] = field(default_factory=dict)  # group_id -> prompt / ground truth
    time_rollout: float = 0.0  # per optimizer step (the batch's time / its number of steps)
    time_reward: float = 0.0
    reward_timeouts: int = 0  # responses whose scoring ran out of time; logged on the batch's first step


_Rollout = RolloutBatch  # the name in checkpoints written before the trainer was split (unpickling)


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warmup to the peak lr, then constant, linear decay to 0 or cosine decay to 0."""

    def factor(step: int) -> float:  # step = number of optimizer steps already taken
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


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
        self.method = cfg.method_spec
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
        if cfg.eval_suite and is_fsdp(acc):
            raise ConfigError("eval_suite", cfg.eval_suite.get("name", "suite"),
                              "benchmark evaluation runs on the main process alone and cannot run a model sharded "
                              "with FSDP: evaluate the final model instead (Evaluate on the run page)")
        # Each process takes 1/world of every optimizer step's sequences, in micro-batches.
        self.n_micro = cfg.update_size // world // cfg.micro_batch_size
        acc.gradient_accumulation_steps = self.n_micro
        self.train_examples, self.eval_examples = self._load_data()
        self.reward_fn = cfg.reward_fn()
        self.suite_eval = SuiteEvaluation(cfg.eval_suite, cfg.data.prompt_format) if cfg.eval_suite else None
        self.rollouts_per_epoch = len(self.train_examples) // cfg.prompts_per_step
        if self.rollouts_per_epoch == 0:
            raise DataError(f"data.path: {len(self.train_examples)} training examples is fewer than "
                            f"prompts_per_step={cfg.prompts_per_step}")
        if cfg.max_steps is not None:
            self.total_steps = cfg.max_steps
        else:
            self.total_steps = math.ceil(cfg.epochs * self.rollouts_per_epoch) * cfg.updates_per_rollout

        seed_everything(cfg.seed)
        checkpoint = latest_checkpoint(self.checkpoint_root()) if self.resume else None
        model, self.tokenizer = load_policy(cfg.model_path)
        self.pad_id = self.tokenizer.pad_token_id
        self.peft = prepare_training(model, cfg)  # LoRA: the PeftModel wrapper, else None
        self._lora_copy = None  # LoRA under FSDP: the CPU PeftModel its gathered states are saved through
        self.ref_model = None
        if self.method.uses_old_logprobs and cfg.kl_coef > 0:  # GRPO's KL term needs the reference model
            self.ref_model = AdaptersOff(self.peft) if self.peft else frozen_copy(model, acc.device)
        self.kl_probe: KLProbe | None = None
        probe_examples = self._probe_examples() if cfg.kl_interval else []
        if probe_examples:  # from the start model, before any update
            self.kl_probe = KLProbe(probe_examples, self.tokenizer, model, max_prompt_len=cfg.max_prompt_len,
                                    max_response_len=cfg.max_response_len, chat_template=cfg.data.prompt_format,
                                    micro_batch_size=cfg.micro_batch_size, pad_id=self.pad_id, device=acc.device,
                                    ref_model=self.ref_model)
        if checkpoint is not None:
            load_adapter_weights(self.peft, checkpoint / "model") if self.peft else load_weights(model, checkpoint / "model")
        self._skip_prompt_logits = accepts_logits_to_keep(model)
        self._shared_prefix = can_share_prefix(model)
        fsdp = is_fsdp(acc)
        if fsdp:  # FSDP (version 1) replaces the parameters: the optimizer is built over the wrapped model's
            model = acc.prepare(model)
        # fused: one kernel per step instead of a Python loop over the parameters (same update)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=tuple(cfg.adam_betas),
                                      weight_decay=cfg.weight_decay, fused=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(cfg.lr_schedule, cfg.warmup_steps, self.total_steps))
        # The scheduler is not prepared: accelerate would step it once per process.
        if fsdp:
            self.model, self.optimizer = model, acc.prepare(optimizer)
            if isinstance(self.ref_model, AdaptersOff):  # the base's layers now hold shards
                self.ref_model.run_through(self.model)
        else:
            self.model, self.optimizer = acc.prepare(model, optimizer)
        self.step, self.epoch, self.cursor, self.rollout_index = 0, 0, 0, 0
        self.pending: RolloutBatch | None = None
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
        if self.suite_eval is not None and ((cfg.eval_interval and self.step % cfg.eval_interval == 0) or last):
            self.suite_eval.run(self.model, self.tokenizer, self.step, self.sink, self.accelerator)
        if self.kl_probe is not None and cfg.kl_interval and (self.step % cfg.kl_interval == 0 or last):
            # under FSDP the wrapper runs (every rank calls this): its forward gathers the shards
            net = self.model if is_fsdp(self.accelerator) else self.accelerator.unwrap_model(self.model)
            scalars["policy/kl_start"] = self.kl_probe.kl(net)

    # ------------------------------------------------------------------ rollouts

    def next_examples(self) -> list[Example]:
        """The next prompts_per_step examples: a seeded permutation per epoch, last partial batch dropped."""
        n_examples, per_step = len(self.train_examples), self.cfg.prompts_per_step
        if self.cursor + per_step > n_examples - n_examples % per_step:
            self.epoch, self.cursor = self.epoch + 1, 0
        rng = np.random.default_rng(derive_seed(self.cfg.seed, "epoch", self.epoch) % (1 << 63))
        order = rng.permutation(n_examples)
        picked = order[self.cursor:self.cursor + per_step]
        self.cursor += per_step
        return [self.train_examples[i] for i in picked]

    def build_groups(self, examples: Sequence[Example], first_group_id: int) -> list[Group]:
        """Off-policy answers (expert, teachers) + n_self samples of the current policy per prompt."""
        cfg, tokenizer = self.cfg, self.tokenizer
        groups = []
        for i, ex in enumerate(examples):
            prompt_ids = encode_prompt(tokenizer, ex.prompt, max_len=cfg.max_prompt_len,
                                       chat_template=cfg.data.prompt_format)
            responses = off_policy_responses(ex, tokenizer, n_expert=self.counts["expert"], n_teacher=self.counts["teacher"],
                                             max_response_len=cfg.max_response_len)
            groups.append(Group(group_id=first_group_id + i, prompt=ex.prompt, prompt_ids=prompt_ids,
                                ground_truth=ex.ground_truth, responses=responses))
        if self.counts["self"]:
            samples = generate_samples(self.model, tokenizer, [g.prompt_ids for g in groups], n=self.counts["self"],
                                       max_new_tokens=cfg.max_response_len, temperature=cfg.temperature,
                                       top_p=cfg.top_p, batch_size=cfg.eval_batch_size, accelerator=self.accelerator)
            for group, group_samples in zip(groups, samples):
                group.responses += [Response("self", s.text, s.token_ids, s.truncated) for s in group_samples]
        return groups

    def collect_rollout(self) -> RolloutBatch:
        """Groups -> rewards -> advantages -> the rollout's optimizer-step chunks of sequences."""
        cfg, acc = self.cfg, self.accelerator
        t0 = time.perf_counter()
        examples = self.next_examples()
        world, rank = acc.num_processes, acc.process_index
        per_rank = cfg.prompts_per_step // world
        first_group_id = self.rollout_index * cfg.prompts_per_step
        # Each rollout batch samples from its own seed: resuming reproduces it exactly.
        torch.manual_seed(derive_seed(cfg.seed, "rollout", self.rollout_index, rank))
        groups = self.build_groups(examples[rank * per_rank:(rank + 1) * per_rank], first_group_id + rank * per_rank)
        t1 = time.perf_counter()
        flat = [(group, response) for group in groups for response in group.responses]
        # the reward counts its timed-out responses (a cumulative count, when it keeps one)
        timeouts_before = getattr(self.reward_fn, "timeouts", 0)
        rewards = self.reward_fn([r.text for _, r in flat], [g.ground_truth for g, _ in flat], [g.prompt for g, _ in flat])
        timeouts = getattr(self.reward_fn, "timeouts", 0) - timeouts_before
        t2 = time.perf_counter()
        group_ids = torch.tensor([g.group_id for g, _ in flat])
        advantages = group_advantages(torch.tensor(rewards, dtype=torch.float32), group_ids,
                                      normalize_std=cfg.normalize_std, eps=cfg.adv_eps)
        seqs = [TrainSeq(prompt_ids=group.prompt_ids, response_ids=response.token_ids, source=response.source,
                         reward=float(reward), advantage=self.method.loss_advantage(float(advantage), response.source),
                         group_id=group.group_id, text=response.text, truncated=response.truncated)
                for (group, response), reward, advantage in zip(flat, rewards, advantages.tolist())]
        if self.method.uses_old_logprobs:
            self._old_and_ref_logprobs(seqs)
        n_chunks = cfg.updates_per_rollout
        size = math.ceil(len(seqs) / n_chunks)  # per process; rows short of answers make it smaller
        chunks = [seqs[i * size:(i + 1) * size] for i in range(n_chunks)]
        self.rollout_index += 1
        return RolloutBatch(chunks=chunks,
                            groups={g.group_id: {"prompt": g.prompt, "ground_truth": g.ground_truth} for g in groups},
                            time_rollout=(t1 - t0) / n_chunks, time_reward=(t2 - t1) / n_chunks,
                            reward_timeouts=int(timeouts))

    @torch.no_grad()
    def _old_and_ref_logprobs(self, seqs: list[TrainSeq]) -> None:
        """GRPO: log pi_old (the policy that sampled) and log pi_ref, before any update."""
        size = self.cfg.micro_batch_size
        forward = dict(keep=self._skip_prompt_logits, shared_prefix=self._shared_prefix)
        for i in range(0, len(seqs), size):
            part = seqs[i:i + size]
            batch = collate(part, self.pad_id, self.accelerator.device)
            old, _ = response_logprobs(self.model, batch, **forward)
            ref = response_logprobs(self.ref_model, batch, **forward)[0] if self.ref_model is not None else None
            for row, seq in enumerate(part):
                n = len(seq.response_ids)
                seq.old_logprobs = old[row, :n].tolist()
                if ref is not None:
                    seq.ref_logprobs = ref[row, :n].tolist()

    # ------------------------------------------------------------------ one optimizer step

    def _coefficients(self, token_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(C_t, rectified) as this method's loss applies them; computed once per micro-batch."""
        threshold = self.method.coefficient_tau(self.cfg.tau)
        if threshold is None:  # C_t = 1
            return torch.ones_like(token_probs), torch.zeros_like(token_probs, dtype=torch.bool)
        return dcr_coefficients(token_probs, threshold), token_probs.detach() < threshold

    def _loss(self, logprobs, token_probs, mask, part: Sequence[TrainSeq], device) -> torch.Tensor:
        """The method's loss on one micro-batch (losses.py holds the formulas)."""
        cfg, loss = self.cfg, self.method.loss
        agg = cfg.loss_agg
        adv = torch.tensor([s.advantage for s in part], dtype=torch.float32, device=device)
        if loss == "gft":
            threshold = self.method.coefficient_tau(cfg.tau)
            return gft_loss(logprobs, token_probs, adv, mask, tau=threshold if threshold is not None else cfg.tau,
                            agg=agg, dcr=threshold is not None)
        if loss == "sft":
            return sft_loss(logprobs, mask, agg=agg)
        if loss == "dft":
            return dft_loss(logprobs, token_probs, mask, agg=agg)
        old = pad_rows([s.old_logprobs for s in part], logprobs.shape[1], device)
        ref = pad_rows([s.ref_logprobs for s in part], logprobs.shape[1], device) if self.ref_model is not None else None
        return grpo_loss(logprobs, old, adv, mask, clip_eps=cfg.clip_eps, ref_logprobs=ref, kl_coef=cfg.kl_coef, agg=agg)

    def optimizer_step(self, chunk: list[TrainSeq], rollout: RolloutBatch):
        """Accumulate gradients over the chunk's micro-batches, clip, step. Returns the step's
        (scalars, histograms, group records), all from the tensors the loss used."""
        cfg, acc = self.cfg, self.accelerator
        model, device = self.model, acc.device
        t0 = time.perf_counter()
        step = self.step + 1
        sample_groups = (cfg.group_sample_count > 0 and cfg.group_sample_interval > 0
                         and step % cfg.group_sample_interval == 0)
        sampled = set(sorted(dict.fromkeys(s.group_id for s in chunk))[: cfg.group_sample_count]) if sample_groups else set()
        micro = [chunk[i:i + cfg.micro_batch_size] for i in range(0, len(chunk), cfg.micro_batch_size)]
        # The accumulation count must match accelerate's (a smaller chunk keeps the same count).
        micro += [[] for _ in range(self.n_micro - len(micro))]
        model.train()
        stats = StepStats(sampled)
        for part in micro:
            with acc.accumulate(model):
                if not part:  # an empty micro-batch still counts as an accumulation step
                    acc.backward(sum(p.sum() for p in model.parameters()) * 0.0)
                    continue
                batch = collate(part, self.pad_id, device)
                logprobs, entropy = response_logprobs(model, batch, with_entropy=True, keep=self._skip_prompt_logits,
                                                      shared_prefix=self._shared_prefix)
                token_probs = logprobs.exp()
                mask = batch["resp_mask"].to(logprobs.dtype)
                loss = self._loss(logprobs, token_probs, mask, part, device)
                if not torch.isfinite(loss):
                    self._fail(f"step {step}: loss is {loss.item()}")
                acc.backward(loss)
            coefficients, rectified = self._coefficients(token_probs)
            stats.add(part, loss, batch["resp_mask"].bool(), token_probs, coefficients, rectified, entropy)
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

        step_scalars, hists, n_tokens = stats.summary(chunk, acc)
        timeouts, rollout.reward_timeouts = rollout.reward_timeouts, 0  # counted once per rollout batch
        if acc.num_processes > 1:
            timeouts = int(acc.reduce(torch.tensor(timeouts, device=device), reduction="sum"))
        scalars = {
            "loss": step_scalars.pop("loss"), "grad_norm": grad_norm, "lr": float(lr),
            "tokens_per_s": n_tokens / max(t_step, 1e-9),
            "time/rollout": rollout.time_rollout, "time/reward": rollout.time_reward,
            "time/fwd_bwd": t_fwd, "time/step": t_step, "reward/timeouts": float(timeouts),
        }
        scalars.update(step_scalars)
        records = stats.group_records(chunk, rollout.groups, self.tokenizer) if sampled else []
        return scalars, hists, records

    def _fail(self, what: str) -> None:
        """Stop on a non-finite loss or gradient: save the last good state, raise TrainingError."""
        self.optimizer.zero_grad(set_to_none=True)
        path = self.save_checkpoint() if self.step > 0 else self.last_checkpoint
        where = f"; last good checkpoint: {path}" if path else "; no checkpoint was saved"
        raise TrainingError(f"{what}, training stopped{where}")

    def evaluate(self) -> tuple[float, list[dict]]:
        """Held-out mean accuracy over eval_samples samples at eval_temperature."""
        self.setup()
        cfg = self.cfg
        return evaluate_accuracy(self.model, self.tokenizer, self.eval_examples, self.reward_fn, k=cfg.eval_samples,
                                 temperature=cfg.eval_temperature, max_prompt_len=cfg.max_prompt_len,
                                 max_response_len=cfg.max_response_len, chat_template=cfg.data.prompt_format,
                                 batch_size=cfg.eval_batch_size, seed=derive_seed(cfg.seed, "eval", self.step),
                                 accelerator=self.accelerator)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_root(self) -> Path:
        return self.out / "checkpoints"

    def save_checkpoint(self) -> Path | None:
        """output_dir/checkpoints/step-N (see checkpoints.py); keeps the last keep_checkpoints."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if self.step == 0:
            return None
        path = self.checkpoint_root() / f"{CHECKPOINT_PREFIX}{self.step}"
        model_state, optimizer_state = self._gathered_states(optimizer=True)
        if acc.is_main_process:
            self._flush_sink()
            state = {"step": self.step, "epoch": self.epoch, "cursor": self.cursor, "rollout_index": self.rollout_index,
                     "total_steps": self.total_steps, "eval_history": self.eval_history, "config": self.cfg.to_dict()}
            model, model_state = self._to_save(model_state)
            write_checkpoint(path, model=model, tokenizer=self.tokenizer, optimizer=self.optimizer,
                             scheduler=self.scheduler, pending=self.pending, state=state, before_publish=self._flush_sink,
                             model_state=model_state, optimizer_state=optimizer_state)
            prune_checkpoints(self.checkpoint_root(), self.cfg.keep_checkpoints)
            self.sink.artifact("checkpoint", str(path), self.step)
        acc.wait_for_everyone()
        self.last_checkpoint = path
        return path

    def _gathered_states(self, optimizer: bool = False) -> tuple[dict | None, dict | None]:
        """Under FSDP (full state dicts): the whole model's state and, with `optimizer` (a
        checkpoint; the final model has none), the optimizer's, gathered on the main process (a
        collective: every rank calls it); (None, None) otherwise."""
        if not is_fsdp(self.accelerator):
            return None, None
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        state = self.accelerator.get_state_dict(self.model)  # the prepared model: the base, adapters injected
        if self.peft is not None and state is not None:  # named as the PeftModel names them (its save filters)
            state = peft_state(state)
        return state, FSDP.optim_state_dict(self.model, self.optimizer) if optimizer else None

    def _to_save(self, model_state: dict | None) -> tuple[Any, dict | None]:
        """(the model to save, the state dict to save it with): the PeftModel or the model itself;
        under FSDP the gathered state, which for LoRA goes into a CPU copy of the PeftModel (PEFT's
        save picks the adapters by module names, which FSDP's wrappers change)."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        if model_state is None or self.peft is None:
            return self.peft or unwrapped, model_state
        self._lora_copy = unsharded_copy(self.peft, model_state, self._lora_copy)
        return self._lora_copy, None

    def _flush_sink(self) -> None:
        """Store the metrics logged so far before a checkpoint (or final model) exists: a resume
        from it skips them. A sink may refuse (the web app's fenced sink, when this attempt was
        superseded): asked before writing and again just before publishing."""
        flush = getattr(self.sink, "flush", None)
        if flush is not None:
            flush()

    def _restore(self, path: Path) -> None:
        """Everything but the weights (loaded before prepare) from a checkpoint directory."""
        checkpoint = read_checkpoint(path, self.accelerator.device)
        state = checkpoint.state
        self.step, self.epoch, self.cursor = state["step"], state["epoch"], state["cursor"]
        self.rollout_index = state["rollout_index"]
        self.eval_history = [tuple(x) for x in state.get("eval_history", [])]
        if self.cfg.max_steps is None and state.get("total_steps"):
            self.total_steps = state["total_steps"]
        optimizer_state = checkpoint.optimizer
        if is_fsdp(self.accelerator):  # the full state, written as without FSDP: this rank's shard of it
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            optimizer_state = FSDP.optim_state_dict_to_load(self.model, self.optimizer, optimizer_state)
        self.optimizer.load_state_dict(optimizer_state)
        self.scheduler.load_state_dict(checkpoint.scheduler)
        self.pending = checkpoint.pending
        self.last_checkpoint = path

    def save_final(self) -> str:
        """The trained model in Hugging Face format under output_dir/final."""
        acc = self.accelerator
        acc.wait_for_everyone()
        path = self.out / "final"
        model_state, _ = self._gathered_states()
        if acc.is_main_process:
            self._flush_sink()
            model, model_state = self._to_save(model_state)
            save_final_model(acc.unwrap_model(self.model), self.tokenizer, path, peft=model if self.peft is not None else None,
                             merged=self.cfg.lora_export == "merged", state=model_state)
            # so an evaluation of the final model (gft_core eval) builds its prompts as training did
            (path / PROMPT_FORMAT_FILE).write_text(json.dumps(self.cfg.data.prompt_format.to_dict()))
            self.sink.artifact("final_model", str(path), self.step)
        return str(path)
