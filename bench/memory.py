"""Memory plan vs measured peak: gft_core.memory's estimate (`peak`, the tensors a device holds) beside
the peak tensor memory of real training steps of the tiny models on CPU (float32): full fine-tuning,
activation checkpointing, LoRA, a longer response, a micro-batch of 16, several micro-batches per step.

Measured with gft_core.memory.measure_peak: the running sum of the CPU allocator's allocations and
frees as torch.profiler records them (profile_memory=True), from before the model loads to the end
of the last step, so it is exact for tensors and blind to malloc's caching (the RSS the previous
version of this bench measured moved with threads and allocator settings). With CUDA the same
settings train on the GPU and the plan is compared with torch.cuda.max_memory_allocated (skipped
without CUDA; no GPU figure has been recorded yet).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from bench.common import print_table, record, verdict

# (label, model sizes, config overrides): responses run to max_response_len (a random model rarely
# stops), prompts are the toy task's ~12 tokens, so max_prompt_len is set close to that.
M384 = dict(hidden_size=384, num_layers=4)
SETTINGS = [
    ("full fine-tuning, 4 x 384, micro-batch 8", M384, {}),
    ("activation checkpointing, same", M384, {"gradient_checkpointing": True}),
    ("LoRA rank 16, same", M384, {"lora_rank": 16}),
    ("full, response 192 tokens", M384, {"max_response_len": 192}),
    ("full, micro-batch 16 (8 prompts)", M384, {"micro_batch_size": 16, "prompts_per_step": 4}),
    ("full, 2 micro-batches of 4 per step", M384, {"micro_batch_size": 4}),
    ("full, 6 x 512, micro-batch 4", dict(hidden_size=512, num_layers=6), {"micro_batch_size": 4}),
]
QUICK = SETTINGS[:3]
TOLERANCE = 0.25


def base_config(model: Path, data: dict, out: Path) -> dict:
    return dict(method="gft", model_path=str(model), output_dir=str(out),
                data={"path": str(data["train"]), "mapping": "toy"}, n_expert=1, n_teacher=1, n_self=2, tau=0.5,
                lr=1e-4, prompts_per_step=2, micro_batch_size=8, max_prompt_len=16, max_response_len=64,
                max_steps=2, eval_max_prompts=None, kl_interval=0, checkpoint_interval=0, save_final=False,
                group_sample_interval=0, eval_batch_size=4)


@contextlib.contextmanager
def on_cpu() -> Iterator[None]:
    """Accelerate's own switch: train on the CPU even where CUDA is present."""
    old = os.environ.get("ACCELERATE_USE_CPU")
    os.environ["ACCELERATE_USE_CPU"] = "true"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ACCELERATE_USE_CPU")
        else:
            os.environ["ACCELERATE_USE_CPU"] = old


def measure_cpu(cfg: dict) -> int:
    """Peak tensor bytes on the CPU of training `cfg` (model load included)."""
    from gft_core.config import GFTConfig
    from gft_core.memory import measure_peak
    from gft_core.trainer import Trainer

    c = GFTConfig.from_dict(cfg)
    c.reward_fn()  # the reward's imports before the measure
    with on_cpu():
        return measure_peak(lambda: Trainer(c).train())


def measure_cuda(cfg: dict) -> int | None:
    """torch.cuda.max_memory_allocated above the start while training `cfg` on the GPU; None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    from gft_core.config import GFTConfig
    from gft_core.trainer import Trainer

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    Trainer(GFTConfig.from_dict(cfg)).train()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def planned(cfg: dict) -> int:
    from gft_core.config import GFTConfig
    from gft_core.memory import Shape, plan_memory

    c = GFTConfig.from_dict(cfg)
    return plan_memory(Shape.from_dir(c.model_path), c).peak


def configs(settings: list, scratch: Path) -> list[tuple[str, dict[str, Any]]]:
    """(label, config) of each setting, its tiny model built under `scratch`."""
    from gft_core.tiny import make_tiny_model, make_toy_data

    data = make_toy_data(scratch / "toy", n_train=64, n_eval=4, seed=0)
    out = []
    for label, sizes, overrides in settings:
        model = scratch / f"m{sizes['hidden_size']}x{sizes['num_layers']}"
        if not model.exists():
            make_tiny_model(model, **sizes, seed=0)
        out.append((label, {**base_config(model, data, scratch / "out"), **overrides}))
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(prog="python -m bench memory")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [(label, planned(cfg), measure_cpu(cfg), measure_cuda(cfg))
                for label, cfg in configs(QUICK if args.quick else SETTINGS, Path(tmp))]
    mib = lambda b: f"{b / 2**20:,.1f} MiB"  # noqa: E731
    table, records = [], []
    for label, plan, peak, cuda in rows:
        err = plan / peak - 1
        ok = abs(err) <= TOLERANCE
        gpu = f"{mib(cuda)} ({plan / cuda - 1:+.0%})" if cuda else "no CUDA"
        table.append((label, mib(plan), mib(peak), f"{err:+.0%}", gpu, verdict(ok)))
        records.append((f"memory plan: {label}", f"{mib(plan)} planned / {mib(peak)} measured on CPU ({err:+.0%})"
                        + (f"; GPU {gpu}" if cuda else ""), "within 25%", verdict(ok)))
    print_table("memory plan vs measured peak tensor memory (CPU float32: profiler allocator events; "
                "GPU: max_memory_allocated)",
                ("setting", "plan", "measured CPU", "error", "measured GPU (error)", "goal |err| <= 25%"), table)
    record("memory", records, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
