"""Memory plan vs measured peak: gft_core.memory's estimate beside the peak RSS increase of real
training steps on CPU (float32), for full fine-tuning, activation checkpointing and LoRA.

Each setting trains in its own child process; the increase is the child's peak RSS (getrusage)
minus its RSS after every library is imported and before the model loads. On a GPU the same plan
is compared with torch.cuda.max_memory_allocated (skipped without CUDA).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import ROOT, print_table, record, verdict

CHILD = r"""
import json, resource, sys
import psutil, torch
torch.set_num_threads(1)
import accelerate, peft, transformers  # imported before the baseline: only training counts
from transformers import AutoModelForCausalLM, AutoTokenizer
from gft_core.config import GFTConfig
from gft_core.trainer import Trainer
import gft_core.rewards, gft_core.scoring
cfg = GFTConfig.from_dict(json.loads(sys.argv[1]))
cfg.reward_fn()
base = psutil.Process().memory_info().rss
Trainer(cfg).train()
print(json.dumps({"baseline": base, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

# (label, model sizes, config overrides): responses run to max_response_len (a random model rarely
# stops), prompts are the toy task's ~12 tokens, so max_prompt_len is set close to that.
SETTINGS = [
    ("full fine-tuning, micro-batch 8", dict(hidden_size=384, num_layers=4), {}),
    ("activation checkpointing", dict(hidden_size=384, num_layers=4), {"gradient_checkpointing": True}),
    ("LoRA rank 16", dict(hidden_size=384, num_layers=4), {"lora_rank": 16}),
    ("full, 6 layers x 512, micro-batch 4", dict(hidden_size=512, num_layers=6), {"micro_batch_size": 4}),
]
QUICK = [SETTINGS[0], SETTINGS[2]]


def base_config(model: Path, data: dict, out: Path) -> dict:
    return dict(method="gft", model_path=str(model), output_dir=str(out),
                data={"path": str(data["train"]), "mapping": "toy"}, n_expert=1, n_teacher=1, n_self=2, tau=0.5,
                lr=1e-4, prompts_per_step=2, micro_batch_size=8, max_prompt_len=16, max_response_len=64,
                max_steps=3, eval_max_prompts=None, kl_interval=0, checkpoint_interval=0, save_final=False,
                group_sample_interval=0, eval_batch_size=4)


def measure(cfg: dict) -> int:
    """Peak RSS increase (bytes) of training `cfg` in a fresh process."""
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["peak"] - r["baseline"]


def planned(cfg: dict) -> int:
    from gft_core.config import GFTConfig
    from gft_core.memory import Shape, plan_memory

    c = GFTConfig.from_dict(cfg)
    return plan_memory(Shape.from_dir(c.model_path), c).peak


def run(settings, scratch: Path) -> list[tuple[str, int, int]]:
    from gft_core.tiny import make_tiny_model, make_toy_data

    data = make_toy_data(scratch / "toy", n_train=64, n_eval=4, seed=0)
    rows = []
    for label, sizes, overrides in settings:
        model = scratch / f"m{sizes['hidden_size']}x{sizes['num_layers']}"
        if not model.exists():
            make_tiny_model(model, **sizes, seed=0)
        cfg = {**base_config(model, data, scratch / "out"), **overrides}
        rows.append((label, planned(cfg), measure(cfg)))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench memory")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(QUICK if args.quick else SETTINGS, Path(tmp))
    mib = lambda b: f"{b / 2**20:,.0f} MiB"  # noqa: E731
    table, records = [], []
    for label, plan, peak in rows:
        err = plan / peak - 1
        ok = abs(err) <= 0.25
        table.append((label, mib(plan), mib(peak), f"{err:+.0%}", verdict(ok)))
        records.append((f"memory plan: {label}", f"{mib(plan)} planned / {mib(peak)} measured ({err:+.0%})",
                        "within 25%", verdict(ok)))
    print_table("memory plan vs measured peak RSS increase (CPU, float32)",
                ("setting", "plan", "measured", "error", "goal |err| <= 25%"), table)
    record("memory", records, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
