"""Metric sinks and per-step statistics (docs/GFT.md section 10, docs/INTERFACES.md "Metric names").

The trainer computes every statistic from the tensors its loss used (token probabilities,
coefficients, advantages of the responses of that optimizer step) and hands one dict of
scalars per optimizer step to a MetricSink.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Protocol, Sequence, TypedDict, runtime_checkable

import torch
from torch import Tensor

from gft_core.methods import SOURCES
# The names live in metric_names.py (no torch), so the web app can check a name without torch.
from gft_core.metric_names import HISTOGRAM_NAMES, METRIC_NAMES  # noqa: F401


class Histogram(TypedDict):
    lo: float
    hi: float
    counts: list[int]


ADV_HIST = {"lo": -3.0, "hi": 3.0, "bins": 30}


@runtime_checkable
class MetricSink(Protocol):
    """Where a run's metrics go (JSONL file, console, Postgres + Redis in the web app)."""

    def start(self, *, total_steps: int, start_step: int, config: dict) -> None: ...
    def log(self, step: int, scalars: dict[str, float], histograms: dict[str, Histogram] | None = None) -> None: ...
    def log_groups(self, step: int, groups: list[dict]) -> None: ...
    def artifact(self, kind: str, path: str, step: int) -> None: ...
    def close(self) -> None: ...
    # Optional (looked up with getattr): log_evaluation(step, benchmark_name, result) receives one
    # benchmark's BenchmarkResult.to_dict() of the config's eval_suite, evaluated at `step`.


# ---------------------------------------------------------------------- sinks


class NullSink:
    """Discards everything."""

    def start(self, *, total_steps: int, start_step: int, config: dict) -> None:
        pass

    def log(self, step: int, scalars: dict[str, float], histograms: dict[str, Histogram] | None = None) -> None:
        pass

    def log_groups(self, step: int, groups: list[dict]) -> None:
        pass

    def artifact(self, kind: str, path: str, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class JSONLSink:
    """One JSON object per line: {"type": "start" | "step" | "groups" | "evaluation" | "artifact" | "end", ...}.

    Appends, so a resumed run continues the same file; each line is flushed as it is written.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a", encoding="utf-8")

    def _write(self, record: dict) -> None:
        self._f.write(json.dumps(record, default=_json_default) + "\n")
        self._f.flush()

    def start(self, *, total_steps: int, start_step: int, config: dict) -> None:
        self._write({"type": "start", "t": time.time(), "total_steps": total_steps, "start_step": start_step, "config": config})

    def log(self, step: int, scalars: dict[str, float], histograms: dict[str, Histogram] | None = None) -> None:
        self._write({"type": "step", "step": step, "t": time.time(), "scalars": scalars, "histograms": histograms or {}})

    def log_groups(self, step: int, groups: list[dict]) -> None:
        self._write({"type": "groups", "step": step, "t": time.time(), "groups": groups})

    def log_evaluation(self, step: int, benchmark: str, result: dict) -> None:
        self._write({"type": "evaluation", "step": step, "t": time.time(), "benchmark": benchmark, "result": result})

    def artifact(self, kind: str, path: str, step: int) -> None:
        self._write({"type": "artifact", "kind": kind, "path": str(path), "step": step, "t": time.time()})

    def close(self) -> None:
        if not self._f.closed:
            self._write({"type": "end", "t": time.time()})
            self._f.close()


class ConsoleSink:
    """A tqdm progress bar whose postfix is a compact line of key metrics."""

    KEYS = (("loss", "loss"), ("reward/mean", "R"), ("reward/self_accuracy", "acc_self"),
            ("dcr/rectified_frac", "rect"), ("grad_norm", "gn"), ("eval/accuracy", "eval"))

    def __init__(self, file: Any = None, disable: bool = False):
        self.file = file or sys.stderr
        self.disable = disable
        self.bar = None
        self._last: dict[str, float] = {}

    def start(self, *, total_steps: int, start_step: int, config: dict) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_steps, initial=start_step, desc=str(config.get("method", "train")),
                        file=self.file, disable=self.disable, dynamic_ncols=True)

    def log(self, step: int, scalars: dict[str, float], histograms: dict[str, Histogram] | None = None) -> None:
        self._last.update({k: v for k, v in scalars.items() if v is not None})
        if self.bar is None:
            return
        self.bar.set_postfix_str(
            " ".join(f"{short}={self._last[k]:.4g}" for k, short in self.KEYS if k in self._last), refresh=False)
        self.bar.update(step - self.bar.n)
        if "eval/accuracy" in scalars:
            self.bar.write(f"step {step}: eval/accuracy={scalars['eval/accuracy']:.4f}", file=self.file)

    def log_groups(self, step: int, groups: list[dict]) -> None:
        pass

    def artifact(self, kind: str, path: str, step: int) -> None:
        if self.bar is not None and not self.disable:
            self.bar.write(f"step {step}: {kind} -> {path}", file=self.file)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MultiSink:
    """Fans every call out to several sinks, in order."""

    def __init__(self, *sinks: MetricSink):
        self.sinks = [s for s in sinks if s is not None]

    def start(self, *, total_steps: int, start_step: int, config: dict) -> None:
        for s in self.sinks:
            s.start(total_steps=total_steps, start_step=start_step, config=config)

    def log(self, step: int, scalars: dict[str, float], histograms: dict[str, Histogram] | None = None) -> None:
        for s in self.sinks:
            s.log(step, scalars, histograms)

    def log_groups(self, step: int, groups: list[dict]) -> None:
        for s in self.sinks:
            s.log_groups(step, groups)

    def artifact(self, kind: str, path: str, step: int) -> None:
        for s in self.sinks:
            s.artifact(kind, path, step)

    def log_evaluation(self, step: int, benchmark: str, result: dict) -> None:
        for s in self.sinks:
            log = getattr(s, "log_evaluation", None)
            if log is not None:
                log(step, benchmark, result)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


def _json_default(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    return str(x)


# ---------------------------------------------------------------------- statistics


def histogram(values: Tensor, lo: float = ADV_HIST["lo"], hi: float = ADV_HIST["hi"], bins: int = ADV_HIST["bins"]) -> Histogram:
    """Fixed equal-width bins over [lo, hi]; values outside are clamped into the edge bins."""
    v = values.detach().float().flatten().clamp(lo, hi)
    counts = torch.histc(v, bins=bins, min=lo, max=hi) if v.numel() else torch.zeros(bins)
    return {"lo": float(lo), "hi": float(hi), "counts": [int(c) for c in counts.tolist()]}


def response_stats(
    rewards: Tensor, advantages: Tensor, sources: Sequence[str], lengths: Tensor, group_ids: Tensor
) -> dict[str, float]:
    """reward/*, response_len/*, adv/* over the responses of one optimizer step.

    `advantages` are those the loss used (1 for SFT-style methods). A source absent from the
    step is not logged.
    """
    rewards, advantages, lengths = rewards.float(), advantages.float(), lengths.float()
    out: dict[str, float] = {
        "reward/mean": _mean(rewards),
        "response_len/mean": _mean(lengths),
        "adv/mean": _mean(advantages),
        "adv/std": float(advantages.std(unbiased=False)) if advantages.numel() else 0.0,
        "adv/min": float(advantages.min()) if advantages.numel() else 0.0,
        "adv/max": float(advantages.max()) if advantages.numel() else 0.0,
        "adv/zero_var_groups": zero_variance_share(rewards, group_ids),
    }
    src = list(sources)
    for s in SOURCES:
        idx = torch.tensor([i for i, x in enumerate(src) if x == s], dtype=torch.long)
        if idx.numel() == 0:
            continue
        out[f"reward/{s}"] = _mean(rewards[idx])
        out[f"response_len/{s}"] = _mean(lengths[idx])
        out[f"adv/{s}"] = _mean(advantages[idx])
        if s == "self":
            out["reward/self_accuracy"] = _mean((rewards[idx] >= 1.0).float())
    return out


def zero_variance_share(rewards: Tensor, group_ids: Tensor) -> float:
    """Share of groups whose rewards are all equal (such a group gives no GAL gradient)."""
    if rewards.numel() == 0:
        return 0.0
    _, idx = torch.unique(group_ids, return_inverse=True)
    n = int(idx.max()) + 1
    hi = rewards.new_full((n,), -math.inf).scatter_reduce(0, idx, rewards, reduce="amax")
    lo = rewards.new_full((n,), math.inf).scatter_reduce(0, idx, rewards, reduce="amin")
    return float((hi == lo).float().mean())


def token_stats(pi: Tensor, c: Tensor, rectified: Tensor, entropy: Tensor, source_idx: Tensor) -> dict[str, float]:
    """dcr/*, policy/entropy over the valid trained tokens of one optimizer step.

    All inputs are flat (N,) over valid tokens: pi_t, the coefficient C_t the loss used, whether
    the token was rectified, the policy entropy at that position, and the source index
    (position in SOURCES) of the token's response.
    """
    pi, c, entropy = pi.float(), c.float(), entropy.float()
    w = c / pi.clamp(min=1e-12)
    out: dict[str, float] = {
        "dcr/rectified_frac": _mean(rectified.float()),
        "dcr/mean_c": _mean(c),
        "dcr/mean_w": _mean(w),
        "policy/entropy": _mean(entropy),
    }
    if pi.numel():
        q = torch.quantile(pi, torch.tensor([0.05, 0.5, 0.95]))
        out.update({"dcr/pi_p5": float(q[0]), "dcr/pi_p50": float(q[1]), "dcr/pi_p95": float(q[2])})
    for i, s in enumerate(SOURCES):
        sel = source_idx == i
        if not bool(sel.any()):
            continue
        out[f"dcr/rectified_frac/{s}"] = _mean(rectified[sel].float())
        out[f"dcr/mean_c/{s}"] = _mean(c[sel])
        out[f"dcr/mean_w/{s}"] = _mean(w[sel])
    return out


def _mean(x: Tensor) -> float:
    return float(x.float().mean()) if x.numel() else 0.0
