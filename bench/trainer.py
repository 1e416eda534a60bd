"""Trainer throughput: gft_core's Trainer vs TRL's GRPOTrainer on equal work.

Both sides train the same tiny model (gft_core.tiny.make_tiny_model, random weights, float32, CPU)
on the same prompts (gft_core.tiny.make_toy_data, fed to both in the same order), with the same
reward function (gft_core's math_verify), P prompts per optimizer step, G sampled sequences per
prompt, the same max completion length, temperature 1.0 / top-p 1 / no top-k, micro-batches of M
sequences accumulated into one optimizer step, AdamW at the same lr, one rollout per optimizer
step (no reuse, so neither side computes old log-probs), no KL term.

- gft (0 off-policy): GFT with n_expert = n_teacher = 0, n_self = G: the like-for-like setting.
- gft (paper group): GFT with the paper's composition, 1 expert + 3 teacher + (G - 4) self
  (G sequences per prompt, of which G - 4 generated).
- trl GRPOTrainer: num_generations = G, steps_per_generation = gradient_accumulation_steps.

Measured per optimizer step, after warm-up steps: wall time between consecutive steps (gft: the
sink's log() calls; TRL: on_step_end), generation time and reward time (gft: its logged
time/rollout and time/reward; TRL: its _generate and _calculate_rewards methods, wrapped), and
the rest ("train": forward/backward/optimizer and each trainer's own bookkeeping). Sides run
interleaved (gft, trl, gft, trl, ...) so that load from other processes hits both alike.
"""
from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Skip, Stat, have, print_table, record, verdict

GOAL_RATIO = 1.5


class _TimingSink:
    """A MetricSink that only keeps the time of each log() call and the scalars."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.rows: list[dict[str, float]] = []

    def start(self, **_: Any) -> None:
        self.t_start = time.perf_counter()

    def log(self, step: int, scalars: dict[str, float], histograms: Any = None) -> None:
        self.times.append(time.perf_counter())
        self.rows.append(dict(scalars))

    def log_groups(self, *_: Any) -> None:
        pass

    def artifact(self, *_: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _steps_from(times: list[float], warmup: int) -> list[float]:
    """Wall time of each step after the warm-up ones, from consecutive step-end timestamps."""
    return [b - a for a, b in zip(times[warmup - 1:], times[warmup:])] if warmup >= 1 else []


def run_gft(model_dir: Path, train_path: Path, work: Path, *, prompts: int, group: int, n_self: int,
            max_len: int, micro: int, steps: int, warmup: int, seed: int) -> dict[str, Any]:
    from gft_core.config import DataConfig, GFTConfig
    from gft_core.trainer import Trainer

    off = group - n_self
    cfg = GFTConfig(
        method="gft", model_path=str(model_dir), output_dir=str(work),
        data=DataConfig(path=str(train_path), mapping="toy"),
        n_expert=min(1, off), n_teacher=max(0, off - 1), n_self=n_self,
        prompts_per_step=prompts, micro_batch_size=micro, max_response_len=max_len, max_prompt_len=256,
        temperature=1.0, top_p=1.0, lr=1e-6, weight_decay=0.01, max_grad_norm=1.0,
        max_steps=warmup + steps, seed=seed, eval_batch_size=max(64, prompts * group),
        kl_interval=0, checkpoint_interval=0, group_sample_count=0, save_final=False,
    )
    sink = _TimingSink()
    Trainer(cfg, sink=sink).train()
    rows = sink.rows[warmup:]
    seqs = prompts * group
    return {
        "step": _steps_from(sink.times, warmup),
        "gen": [r["time/rollout"] for r in rows],
        "reward": [r["time/reward"] for r in rows],
        "fwd_bwd": [r["time/fwd_bwd"] for r in rows],
        "tokens": [r.get("response_len/mean", 0.0) * seqs for r in rows],
        "gen_tokens": [r.get("response_len/self", 0.0) * prompts * n_self for r in rows],
        "seqs": seqs, "generated": prompts * n_self,
    }


def run_trl(model_dir: Path, prompts_rows: list[dict], work: Path, *, prompts: int, group: int, max_len: int,
            micro: int, steps: int, warmup: int, seed: int, reward_fn: Any) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl import GRPOConfig, GRPOTrainer

    hf_logging.set_verbosity_error()
    seqs = prompts * group
    if seqs % micro:
        raise ValueError("micro-batch must divide prompts x group")
    phase: dict[str, float] = {"gen": 0.0, "reward": 0.0}
    per_step: list[dict[str, float]] = []

    class TimedGRPOTrainer(GRPOTrainer):
        def _generate(self, *a, **k):
            t = time.perf_counter()
            try:
                return super()._generate(*a, **k)
            finally:
                phase["gen"] += time.perf_counter() - t

        def _calculate_rewards(self, *a, **k):
            t = time.perf_counter()
            try:
                return super()._calculate_rewards(*a, **k)
            finally:
                phase["reward"] += time.perf_counter() - t

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            per_step.append({"t": time.perf_counter(), **phase})
            phase.update(gen=0.0, reward=0.0)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs and per_step:
                per_step[-1]["mean_len"] = float(logs["completions/mean_length"])

    def math_reward(prompts, completions, answer, **_):
        return reward_fn(list(completions), list(answer), list(prompts))

    args = GRPOConfig(
        output_dir=str(work), report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(), bf16=False, fp16=False, seed=seed, data_seed=seed,
        learning_rate=1e-6, weight_decay=0.01, max_grad_norm=1.0, lr_scheduler_type="constant", warmup_steps=0,
        per_device_train_batch_size=micro, gradient_accumulation_steps=seqs // micro,
        num_generations=group, max_completion_length=max_len, temperature=1.0, top_p=1.0, top_k=0,
        beta=0.0, num_iterations=1, shuffle_dataset=False, max_steps=warmup + steps,
        dataloader_num_workers=0, log_completions=False,
    )
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = TimedGRPOTrainer(model=model, args=args, reward_funcs=[math_reward],
                               train_dataset=Dataset.from_list(prompts_rows), processing_class=tok,
                               callbacks=[Clock()])
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):  # no per-step log lines in the benchmark output
        trainer.remove_callback(cb)
    trainer.train()
    rows = per_step[warmup:]
    step = _steps_from([r["t"] for r in per_step], warmup)
    return {
        "step": step,
        "gen": [r["gen"] for r in rows],
        "reward": [r["reward"] for r in rows],
        "fwd_bwd": [s - r["gen"] - r["reward"] for s, r in zip(step, rows)],
        "tokens": [r.get("mean_len", 0.0) * seqs for r in rows],
        "gen_tokens": [r.get("mean_len", 0.0) * seqs for r in rows],
        "seqs": seqs, "generated": seqs,
    }


def _gft_order(n: int, seed: int) -> list[int]:
    """The order in which gft_core's Trainer visits the first epoch (so TRL gets the same prompts)."""
    import numpy as np

    from gft_core.policy import derive_seed

    return list(np.random.default_rng(derive_seed(seed, "epoch", 0) % (1 << 63)).permutation(n))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench trainer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes for the smoke test (nothing recorded)")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--max-len", type=int, default=48)
    p.add_argument("--micro", type=int, default=8)
    p.add_argument("--steps", type=int, default=2, help="measured optimizer steps per round")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds (gft, trl, gft-paper) x rounds")
    p.add_argument("--no-trl", action="store_true")
    a = p.parse_args(argv)
    if a.quick:
        a.prompts, a.group, a.max_len, a.micro, a.steps, a.warmup, a.rounds = 2, 4, 8, 4, 1, 1, 1

    import torch

    from gft_core.config import DataConfig, GFTConfig  # noqa: F401 - fail early if gft_core is incomplete
    from gft_core.data import PRESETS, load_examples
    from gft_core.rewards import build_reward
    from gft_core.tiny import make_tiny_model, make_toy_data

    try:
        from gft_core.trainer import Trainer  # noqa: F401
    except ImportError as e:
        raise Skip(f"gft_core.trainer is not available yet ({e})") from None
    trl_ok = have("trl") and not a.no_trl
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))

    tmp = Path(tempfile.mkdtemp(prefix="bench-trainer-"))
    model_dir = make_tiny_model(tmp / "model")
    data = make_toy_data(tmp / "data", n_train=max(64, a.prompts * (a.warmup + a.steps) * 2), n_eval=0)
    examples = load_examples(data["train"], PRESETS["toy"])
    order = _gft_order(len(examples), seed=0)
    trl_rows = [{"prompt": examples[i].prompt, "answer": examples[i].ground_truth} for i in order]
    reward_fn = build_reward({"name": "math_verify", "params": {}})
    paper_off = min(4, a.group - 1)  # the paper: 1 expert + 3 teacher of K = 8
    paper_self = a.group - paper_off
    kw = dict(prompts=a.prompts, group=a.group, max_len=a.max_len, micro=a.micro, steps=a.steps, warmup=a.warmup, seed=0)

    sides: dict[str, dict[str, list]] = {}

    def add(name: str, r: dict[str, Any]) -> None:
        s = sides.setdefault(name, {"seqs": r["seqs"], "generated": r["generated"]})
        for k in ("step", "gen", "reward", "fwd_bwd", "tokens", "gen_tokens"):
            s.setdefault(k, []).extend(r[k])
        # per round: median tokens/s and sequences/s, for ratios paired with the other side's same round
        s.setdefault("round_seq_s", []).append(Stat.of([r["seqs"] / x for x in r["step"]]).median)
        s.setdefault("round_tok_s", []).append(Stat.of([t / x for t, x in zip(r["tokens"], r["step"])]).median)

    for rnd in range(a.rounds):
        add("gft (0 off-policy)", run_gft(model_dir, data["train"], tmp / f"gft-{rnd}", n_self=a.group, **kw))
        gc.collect()
        if trl_ok:
            add("trl GRPOTrainer", run_trl(model_dir, trl_rows, tmp / f"trl-{rnd}", reward_fn=reward_fn, **kw))
            gc.collect()
        add(f"gft (paper group {paper_off}+{paper_self})",
            run_gft(model_dir, data["train"], tmp / f"gftp-{rnd}", n_self=paper_self, **kw))
        gc.collect()

    rows, base = [], {}
    for name, s in sides.items():
        step = Stat.of(s["step"])
        seq_s = Stat.of([s["seqs"] / x for x in s["step"]])
        tok_s = Stat.of([t / x for t, x in zip(s["tokens"], s["step"])])
        base[name] = (seq_s, tok_s)
        rows.append([name, s["seqs"], s["generated"], f"{Stat.of(s['tokens']).median:.0f}", step.fmt(3, unit=" s"),
                     seq_s.fmt(3), tok_s.fmt(3), Stat.of(s["gen"]).fmt(3), Stat.of(s["reward"]).fmt(3),
                     Stat.of(s["fwd_bwd"]).fmt(3)])
    header = ["side", "seqs/step", "generated/step", "tokens/step", "step wall s", "sequences/s", "tokens/s",
              "generation s", "reward s", "train s (fwd/bwd+opt)"]
    print_table(f"trainer: {a.prompts} prompts x {a.group} seqs, max {a.max_len} new tokens, micro-batch {a.micro}, "
                f"{len(next(iter(sides.values()))['step'])} measured steps per side", header, rows)
    out = []
    names = {"gft": "gft (0 off-policy)", "trl": "trl GRPOTrainer", "paper": f"gft (paper group {paper_off}+{paper_self})"}
    gft, trl, paper = (base.get(names[k]) for k in ("gft", "trl", "paper"))

    def paired(a_name: str, b_name: str, key: str) -> Stat:
        """Ratios of the two sides' medians round by round (the rounds run back to back)."""
        return Stat.of([x / y for x, y in zip(sides[a_name][key], sides[b_name][key])])

    out.append(("gft 0 off-policy sequences/s", gft[0].fmt(), "", ""))
    if trl:
        seq_r, tok_r = paired(names["gft"], names["trl"], "round_seq_s"), paired(names["gft"], names["trl"], "round_tok_s")
        best = gft[0].hi / trl[0].hi  # fastest step of each side: the least disturbed by other load
        print(f"gft / trl (median of {seq_r.n} paired rounds [min-max]): sequences/s {seq_r.fmt(3, unit='x')}, "
              f"tokens/s {tok_r.fmt(3, unit='x')}; ratio of medians {gft[0].median / trl[0].median:.2f}x, "
              f"of best steps {best:.2f}x (goal >= {GOAL_RATIO}x): {verdict(seq_r.median >= GOAL_RATIO)}")
        out += [("trl GRPOTrainer sequences/s", trl[0].fmt(), "", ""),
                ("gft/trl sequences/s ratio (like-for-like, paired rounds)", seq_r.fmt(3, unit="x"), f">= {GOAL_RATIO}x",
                 verdict(seq_r.median >= GOAL_RATIO)),
                ("gft/trl tokens/s ratio (like-for-like, paired rounds)", tok_r.fmt(3, unit="x"), f">= {GOAL_RATIO}x",
                 verdict(tok_r.median >= GOAL_RATIO)),
                ("gft/trl ratio of best steps", f"{best:.2f}x", f">= {GOAL_RATIO}x", verdict(best >= GOAL_RATIO))]
        if paper:
            out.append(("gft paper-group/trl sequences/s ratio (paired rounds)",
                        paired(names["paper"], names["trl"], "round_seq_s").fmt(3, unit="x"), "", ""))
    else:
        print("skipped: TRL side (trl not installed; pip install -e '.[bench]')")
        out.append(("trl GRPOTrainer", "skipped: trl not installed", f">= {GOAL_RATIO}x", "n/a"))
    if paper:
        out.append(("gft paper group sequences/s", paper[0].fmt(), "", ""))
    record("trainer", out, quick=a.quick)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0
