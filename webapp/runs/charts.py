"""What the run and compare pages show: chart definitions, run progress, config diffs.

Plain data and functions; the templates pass CHARTS to the JavaScript (static/js/charts.js)
that draws them, and the views ask `chart_keys` which series to load.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse

from gft_core.config import config_diff as gft_config_diff
from gft_core.metric_names import SYSTEM_PREFIX, gpu_metric_names
from gft_core.methods import METHODS

from . import progress
from .modelpaths import launch_value
from .models import Run, RunStatus

SOURCES = ("expert", "teacher", "self")
ADV_HIST = "adv/hist"


def _per_source(prefix: str, overall: str | None = None) -> list[str]:
    return ([overall] if overall else []) + [f"{prefix}/{s}" for s in SOURCES]


# kind: "lines" (one trace per key), "band" (lo/hi keys drawn as a shaded band around `mid`),
# "heatmap" (a histogram key over steps). `y`: the y axis title, with its unit. `ref`: a horizontal reference line from the run config.
# `needs`: the chart group of gft_core's Method.charts it belongs to; a run page shows it only for
# methods that have it (SFT has no group advantage and no coefficient rectification to chart).
CHARTS: list[dict[str, Any]] = [
    {"id": "loss", "y": "loss", "group": "Loss & optimisation", "title": "Loss", "kind": "lines", "keys": ["loss"]},
    {"id": "grad_norm", "y": "L2 norm", "group": "Loss & optimisation", "title": "Gradient norm (before clipping)", "kind": "lines",
     "keys": ["grad_norm"]},
    {"id": "lr", "y": "learning rate", "group": "Loss & optimisation", "title": "Learning rate", "kind": "lines", "keys": ["lr"]},
    {"id": "tokens_per_s", "y": "tokens / s", "group": "Loss & optimisation", "title": "Tokens / s", "kind": "lines",
     "keys": ["tokens_per_s"]},
    {"id": "step_time", "y": "seconds", "group": "Loss & optimisation", "title": "Step time split (s)", "kind": "lines",
     "keys": ["time/step", "time/rollout", "time/reward", "time/fwd_bwd"]},
    {"id": "reward", "y": "reward", "group": "Rewards", "title": "Reward: mean and per source", "kind": "lines",
     "keys": _per_source("reward", "reward/mean")},
    {"id": "accuracy", "y": "share correct (0-1)", "group": "Rewards", "title": "Self-sample accuracy and eval accuracy", "kind": "lines",
     "keys": ["reward/self_accuracy", "eval/accuracy"]},
    # Scoring that ran over the reward's per-response budget scored 0: a team must see it.
    {"id": "reward_timeouts", "y": "responses", "group": "Rewards", "title": "Responses whose scoring timed out (scored 0)",
     "kind": "lines", "keys": ["reward/timeouts"]},
    {"id": "response_len", "y": "tokens", "group": "Rewards", "title": "Response length (tokens)", "kind": "lines",
     "keys": _per_source("response_len", "response_len/mean")},
    {"id": "adv_band", "y": "advantage", "group": "Group advantages", "needs": "advantages", "title": "Advantages: mean, ±std, min/max", "kind": "band",
     "mid": "adv/mean", "std": "adv/std", "lo": "adv/min", "hi": "adv/max",
     "keys": ["adv/mean", "adv/std", "adv/min", "adv/max"]},
    {"id": "adv_source", "y": "advantage", "group": "Group advantages", "needs": "advantages", "title": "Mean advantage per source", "kind": "lines",
     "keys": _per_source("adv")},
    {"id": "zero_var", "y": "share of groups (0-1)", "group": "Group advantages", "needs": "advantages", "title": "Share of zero-variance groups", "kind": "lines",
     "keys": ["adv/zero_var_groups"]},
    {"id": "adv_hist", "y": "advantage", "group": "Group advantages", "needs": "advantages", "title": "Advantage histogram over steps", "kind": "heatmap",
     "keys": [], "hist": ADV_HIST},
    {"id": "rectified", "y": "share of tokens (0-1)", "group": "Coefficient rectification", "needs": "rectification", "title": "Rectified-token share (pi < tau)",
     "kind": "lines", "keys": _per_source("dcr/rectified_frac", "dcr/rectified_frac")},
    {"id": "pi_quantiles", "y": "pi (token probability)", "group": "Coefficient rectification", "needs": "rectification", "title": "pi quantiles p5 / p50 / p95 vs tau",
     "kind": "band", "mid": "dcr/pi_p50", "lo": "dcr/pi_p5", "hi": "dcr/pi_p95",
     "keys": ["dcr/pi_p50", "dcr/pi_p5", "dcr/pi_p95"], "ref": "tau"},
    {"id": "mean_c", "y": "C", "group": "Coefficient rectification", "needs": "rectification", "title": "Mean coefficient C", "kind": "lines",
     "keys": _per_source("dcr/mean_c", "dcr/mean_c")},
    {"id": "mean_w", "y": "C / pi", "group": "Coefficient rectification", "needs": "rectification", "title": "Mean effective weight C / pi", "kind": "lines",
     "keys": _per_source("dcr/mean_w", "dcr/mean_w")},
    {"id": "entropy", "y": "nats per token", "group": "Policy", "title": "Policy entropy", "kind": "lines", "keys": ["policy/entropy"]},
    {"id": "kl", "y": "KL (nats)", "group": "Policy", "title": "KL to the start model", "kind": "lines", "keys": ["policy/kl_start"]},
]
CHART_IDS = [c["id"] for c in CHARTS]
# The summary table of the compare page.
SUMMARY_KEYS = ["loss", "reward/mean", "reward/self_accuracy", "eval/accuracy", "adv/zero_var_groups",
                "dcr/rectified_frac", "dcr/mean_c", "policy/entropy", "policy/kl_start"]


def charts_for(ids: list[str] | None) -> list[dict]:
    """The chart definitions with these ids (all when ids is empty), in page order."""
    return [c for c in CHARTS if not ids or c["id"] in ids]


def charts_for_methods(methods: list[str]) -> list[dict]:
    """The charts that mean something for at least one of these methods (Method.charts); an
    unknown method (a run from an older table) shows every chart."""
    groups: set[str] = set()
    for name in methods:
        method = METHODS.get(name)
        if method is None:
            return list(CHARTS)
        groups |= method.charts
    return [c for c in CHARTS if "needs" not in c or c["needs"] in groups]


SYSTEM_GROUP = "System"
_GPU_KEY = re.compile(r"^system/gpu(\d+)_")


def system_charts(metric_names: Iterable[str], live_gpus: int | None = None) -> list[dict]:
    """The run page's System section (workers/system.py samples it): CPU, memory and, per GPU the
    run has keys for, utilisation and memory; [] (no section) for a run without system metrics.
    `metric_names`: the run's metrics, e.g. the keys of Run.summary. `live_gpus`: the run is active
    and has this many GPUs at most: every chart is sent marked `until_data`, which the page keeps
    hidden until a sample of it arrives live (a CPU run's GPU charts never show)."""
    names = [k for k in metric_names if k.startswith(SYSTEM_PREFIX)]
    if not names and live_gpus is None:
        return []
    gpus = max([int(m[1]) + 1 for k in names if (m := _GPU_KEY.match(k))] + [live_gpus or 0])
    gpu_keys = gpu_metric_names(gpus)
    out = [{"id": "system_cpu", "y": "percent", "group": SYSTEM_GROUP, "title": "CPU utilisation (%, whole machine)",
            "kind": "lines", "keys": ["system/cpu_percent"]},
           {"id": "system_memory", "y": "GiB", "group": SYSTEM_GROUP, "title": "RAM used and training process RSS (GiB)",
            "kind": "lines", "keys": ["system/ram_used_gb", "system/rss_gb"]}]
    if gpus:
        out += [{"id": "system_gpu_util", "y": "percent", "group": SYSTEM_GROUP, "title": "GPU utilisation (%)",
                 "kind": "lines", "keys": list(gpu_keys[0::2])},
                {"id": "system_gpu_mem", "y": "GiB", "group": SYSTEM_GROUP, "title": "GPU memory used (GiB)",
                 "kind": "lines", "keys": list(gpu_keys[1::2])}]
    if live_gpus is not None:
        for chart in out:
            chart["until_data"] = True
    return out


def run_device(run: Run) -> str:
    """The device the run's latest attempt trains on, as its worker named it at the start
    (RunEvent.data["device"]); "" before a worker started it (or for runs started before this)."""
    return (run.events.filter(to_status=RunStatus.RUNNING, data__has_key="device").order_by("-created_at")
            .values_list("data__device", flat=True).first()) or ""


def chart_keys(charts: list[dict]) -> list[str]:
    """Every scalar metric the charts draw, once."""
    seen: dict[str, None] = {}
    for c in charts:
        for k in c["keys"]:
            seen.setdefault(k)
    return list(seen)


def history_url(runs: list[Run], shown: list[dict], *, compare: bool) -> str:
    """The chart board's one request for all its history: every key of the page's charts (and the
    advantage histogram on a run page; a comparison draws no heatmap). The page's inline script
    (runs/_chart_data.html) sends it while plotly.js loads, adding max_points for the window."""
    query = {"runs": ",".join(str(r.pk) for r in runs), "keys": ",".join(chart_keys(shown))}
    hist = next((c["hist"] for c in shown if c["kind"] == "heatmap"), None)
    if hist and not compare:
        query["hist"] = hist
    return f"{reverse('runs:series')}?{urlencode(query)}"


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
    """The run's tau, or None when its method does not use one (SFT, GRPO, ...)."""
    method = METHODS.get(run.method)
    if method is not None and not method.uses_tau:
        return None
    value = (run.config or {}).get("tau")
    return float(value) if isinstance(value, (int, float)) else None


# Config keys that restate what a named row already says (the dataset's files, the reward config's
# spec, the suite's contents) or are paths the web chose: left out of the diff, each field once.
_RESTATED = ("output_dir", "model_path", "reward", "eval_suite")
_RESTATED_DATA = ("path", "eval_path", "mapping")
SEED_FIELDS = ("seed",)  # runs that differ only in these are one line with a band ("group seeds")


def model_label(run: Run) -> str:
    """Where a run's weights come from: another run (lineage) or the launch model value."""
    if run.init_from_run_id:
        return f"run #{run.init_from_run_id} " + (f"step {run.init_from_step}" if run.init_from_step else "final model")
    return launch_value((run.config or {}).get("model_path", ""))


def comparable_config(run: Run) -> dict[str, Any]:
    """A run's settings as compare shows them: the gft_core config without output paths and restated
    parts, plus model (or lineage), dataset, reward config and eval suite by name."""
    cfg = {k: v for k, v in (run.config or {}).items() if k not in _RESTATED}
    cfg["data"] = {k: v for k, v in (cfg.get("data") or {}).items() if k not in _RESTATED_DATA}
    cfg.update(method=run.method, model=model_label(run), dataset=str(run.dataset) if run.dataset_id else None,
               reward_config=str(run.reward_config) if run.reward_config_id else None,
               eval_suite=str(run.eval_suite) if run.eval_suite_id else None)
    return cfg


def config_diff(runs: list[Run]) -> list[tuple[str, list[Any]]]:
    """[(setting, [value per run])] for the settings that differ, each once (gft_core.config.config_diff
    of comparable_config: dotted keys; "—" where a run lacks it), after the recipe each was launched from."""
    configs = [comparable_config(run) for run in runs]
    recipes = [run.recipe or "—" for run in runs]
    return [("recipe", recipes)] * (len(set(recipes)) > 1) + [
        (name, ["—" if v is None else v for v in values]) for name, values in gft_config_diff(*configs)]


def seed_groups(runs: list[Run]) -> list[dict[str, Any]]:
    """Runs whose settings differ only in SEED_FIELDS, in first-seen order: [{"runs": [id, ...],
    "label": short name, "seeds": [...]}] (a run alone is a group of one)."""
    groups: dict[str, dict[str, Any]] = {}
    for run in runs:
        cfg = comparable_config(run)
        key = json.dumps({k: v for k, v in cfg.items() if k not in SEED_FIELDS}, sort_keys=True, default=str)
        group = groups.setdefault(key, {"runs": [], "seeds": [], "label": ""})
        group["runs"].append(run.pk)
        group["seeds"].append(cfg.get("seed"))
    for group in groups.values():
        ids = group["runs"]
        group["label"] = f"#{ids[0]}" + (f" +{len(ids) - 1} seeds" if len(ids) > 1 else "")
    return list(groups.values())
