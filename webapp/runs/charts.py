"""What the run and compare pages show: chart definitions, run progress, config diffs.

Plain data and functions; the templates pass CHARTS to the JavaScript (static/js/charts.js)
that draws them, and the views ask `chart_keys` which series to load.
"""
from __future__ import annotations

import math
from typing import Any

from . import progress
from .models import Run

SOURCES = ("expert", "teacher", "self")
ADV_HIST = "adv/hist"


def _per_source(prefix: str, overall: str | None = None) -> list[str]:
    return ([overall] if overall else []) + [f"{prefix}/{s}" for s in SOURCES]


# kind: "lines" (one trace per key), "band" (lo/hi keys drawn as a shaded band around `mid`),
# "heatmap" (a histogram key over steps). `ref`: a horizontal reference line from the run config.
CHARTS: list[dict[str, Any]] = [
    {"id": "loss", "group": "Loss & optimisation", "title": "Loss", "kind": "lines", "keys": ["loss"]},
    {"id": "grad_norm", "group": "Loss & optimisation", "title": "Gradient norm (before clipping)", "kind": "lines",
     "keys": ["grad_norm"]},
    {"id": "lr", "group": "Loss & optimisation", "title": "Learning rate", "kind": "lines", "keys": ["lr"]},
    {"id": "tokens_per_s", "group": "Loss & optimisation", "title": "Tokens / s", "kind": "lines",
     "keys": ["tokens_per_s"]},
    {"id": "step_time", "group": "Loss & optimisation", "title": "Step time split (s)", "kind": "lines",
     "keys": ["time/step", "time/rollout", "time/reward", "time/fwd_bwd"]},
    {"id": "reward", "group": "Rewards", "title": "Reward: mean and per source", "kind": "lines",
     "keys": _per_source("reward", "reward/mean")},
    {"id": "accuracy", "group": "Rewards", "title": "Self-sample accuracy and eval accuracy", "kind": "lines",
     "keys": ["reward/self_accuracy", "eval/accuracy"]},
    {"id": "response_len", "group": "Rewards", "title": "Response length (tokens)", "kind": "lines",
     "keys": _per_source("response_len", "response_len/mean")},
    {"id": "adv_band", "group": "Group advantages", "title": "Advantages: mean, ±std, min/max", "kind": "band",
     "mid": "adv/mean", "std": "adv/std", "lo": "adv/min", "hi": "adv/max",
     "keys": ["adv/mean", "adv/std", "adv/min", "adv/max"]},
    {"id": "adv_source", "group": "Group advantages", "title": "Mean advantage per source", "kind": "lines",
     "keys": _per_source("adv")},
    {"id": "zero_var", "group": "Group advantages", "title": "Share of zero-variance groups", "kind": "lines",
     "keys": ["adv/zero_var_groups"]},
    {"id": "adv_hist", "group": "Group advantages", "title": "Advantage histogram over steps", "kind": "heatmap",
     "keys": [], "hist": ADV_HIST},
    {"id": "rectified", "group": "Coefficient rectification", "title": "Rectified-token share (pi < tau)",
     "kind": "lines", "keys": _per_source("dcr/rectified_frac", "dcr/rectified_frac")},
    {"id": "pi_quantiles", "group": "Coefficient rectification", "title": "pi quantiles p5 / p50 / p95 vs tau",
     "kind": "band", "mid": "dcr/pi_p50", "lo": "dcr/pi_p5", "hi": "dcr/pi_p95",
     "keys": ["dcr/pi_p50", "dcr/pi_p5", "dcr/pi_p95"], "ref": "tau"},
    {"id": "mean_c", "group": "Coefficient rectification", "title": "Mean coefficient C", "kind": "lines",
     "keys": _per_source("dcr/mean_c", "dcr/mean_c")},
    {"id": "mean_w", "group": "Coefficient rectification", "title": "Mean effective weight C / pi", "kind": "lines",
     "keys": _per_source("dcr/mean_w", "dcr/mean_w")},
    {"id": "entropy", "group": "Policy", "title": "Policy entropy", "kind": "lines", "keys": ["policy/entropy"]},
    {"id": "kl", "group": "Policy", "title": "KL to the start model", "kind": "lines", "keys": ["policy/kl_start"]},
]
CHART_IDS = [c["id"] for c in CHARTS]
# The summary table of the compare page.
SUMMARY_KEYS = ["loss", "reward/mean", "reward/self_accuracy", "eval/accuracy", "adv/zero_var_groups",
                "dcr/rectified_frac", "dcr/mean_c", "policy/entropy", "policy/kl_start"]


def charts_for(ids: list[str] | None) -> list[dict]:
    """The chart definitions with these ids (all when ids is empty), in page order."""
    return [c for c in CHARTS if not ids or c["id"] in ids]


def chart_keys(charts: list[dict]) -> list[str]:
    """Every scalar metric the charts draw, once."""
    seen: dict[str, None] = {}
    for c in charts:
        for k in c["keys"]:
            seen.setdefault(k)
    return list(seen)


def run_state(run: Run) -> dict[str, Any]:
    """Status, progress, ETA and queue position of a run, as the pages and their live updates show
    them (ETA and queue position from webapp.runs.progress, as the API reports them)."""
    total = run.total_steps or 0
    frac = min(1.0, run.step / total) if total else 0.0
    return {"id": run.pk, "status": run.status, "status_label": run.get_status_display(), "step": run.step,
            "total_steps": total, "progress": frac, "eta_s": progress.eta_seconds(run),
            "queue": run.queue, "queue_position": progress.queue_position(run), "active": run.is_active,
            "error": run.error[:2000] if run.error else ""}


def format_eta(seconds: float | None) -> str:
    """'1h 5m', '3m 20s', '42s' (as static/js/status.js formatEta); '' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = max(0, round(seconds))
    h, m, r = s // 3600, s % 3600 // 60, s % 60
    return f"{h}h {m}m" if h else f"{m}m {r}s" if m else f"{r}s"


def tau_of(run: Run) -> float | None:
    value = (run.config or {}).get("tau")
    return float(value) if isinstance(value, (int, float)) else None


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """{"data.path": ..., "lr": ...}: nested dicts as dotted names, lists kept as values."""
    if not isinstance(config, dict):
        return {prefix: config} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


_MISSING = object()


def config_diff(runs: list[Run]) -> list[tuple[str, list[Any]]]:
    """[(field, [value per run])] for the config fields (plus method, dataset, reward) that differ."""
    flat = []
    for run in runs:
        f = flatten(run.config or {})
        f["(method)"] = run.method
        f["(dataset)"] = str(run.dataset) if run.dataset_id else None
        f["(reward config)"] = str(run.reward_config) if run.reward_config_id else None
        flat.append(f)
    names = sorted({n for f in flat for n in f})
    rows = []
    for name in names:
        values = [f.get(name, _MISSING) for f in flat]
        if any(v != values[0] for v in values[1:]):
            rows.append((name, ["—" if v is _MISSING else v for v in values]))
    return rows
