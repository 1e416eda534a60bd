"""The scalar metric names a run logs (docs/INTERFACES.md "Metric names"), without torch: the web
app checks alert rules against them (webapp.alerts). gft_core.metrics re-exports them."""
from __future__ import annotations

from gft_core.methods import SOURCES

_PER_SOURCE = ["reward/{s}", "response_len/{s}", "adv/{s}", "dcr/rectified_frac/{s}", "dcr/mean_c/{s}", "dcr/mean_w/{s}"]
METRIC_NAMES: tuple[str, ...] = tuple(
    ["loss", "grad_norm", "lr", "tokens_per_s", "time/rollout", "time/reward", "time/fwd_bwd", "time/step",
     "reward/mean", "reward/self_accuracy", "reward/timeouts", "response_len/mean",
     "adv/mean", "adv/std", "adv/min", "adv/max", "adv/zero_var_groups",
     "dcr/rectified_frac", "dcr/mean_c", "dcr/mean_w", "dcr/pi_p5", "dcr/pi_p50", "dcr/pi_p95",
     "policy/entropy", "policy/kl_start", "eval/accuracy"]
    + [name.format(s=s) for name in _PER_SOURCE for s in SOURCES]
)
HISTOGRAM_NAMES: tuple[str, ...] = ("adv/hist",)

# System metrics: sampled by the worker while a run trains (workers/system.py), not by the trainer.
# GPU keys are per CUDA device of the run: system/gpu0_util, system/gpu0_mem_gb, system/gpu1_util, ...
SYSTEM_PREFIX = "system/"
SYSTEM_METRIC_NAMES: tuple[str, ...] = ("system/cpu_percent", "system/ram_used_gb", "system/rss_gb")
GPU_METRIC_FORMATS: tuple[str, ...] = ("system/gpu{i}_util", "system/gpu{i}_mem_gb")
MAX_GPU_METRICS = 8  # devices per run named in system_metric_names (alert rules offer these)


def gpu_metric_names(gpus: int) -> tuple[str, ...]:
    """The GPU keys of devices 0..gpus-1, device by device."""
    return tuple(fmt.format(i=i) for i in range(gpus) for fmt in GPU_METRIC_FORMATS)


def system_metric_names(gpus: int = MAX_GPU_METRICS) -> tuple[str, ...]:
    return SYSTEM_METRIC_NAMES + gpu_metric_names(gpus)
