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
