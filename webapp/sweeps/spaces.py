"""A sweep's specification, checked before anything is created: the parameters to vary (bounded
gft_core settings of gft_core.config.FIELDS, values checked with check_field), the strategy, the
budget, the target and the pruner. Errors are a SweepError {field: [why]} (400 naming the field).

Parameters: `{field: [v1, v2]}` (grid values; for random/TPE a list is a set of choices),
`{field: {"values": [...]}}` / `{"choices": [...]}` (the same), or `{field: {"low": a, "high": b,
"log": false}}` (a range, random/TPE only; ints stay ints).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from gft_core.config import FIELDS, LAUNCH_FIELDS, ConfigError, FieldSpec, check_field
from webapp.runs.launch import LaunchError
from webapp.runs.launchfields import WEB_CONTROLLED

STRATEGIES = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "hyperband")
MAX_RUNS = 1000
MAX_PARALLEL = 64
MAX_VALUES = 1000  # values of one grid / choice parameter
NAME_MAX = 200
TARGET_RE = re.compile(r"^(eval:[^/\s]{1,120}/[A-Za-z0-9_@]{1,40}|[A-Za-z0-9_./@-]{1,100})$")
DEFAULT_TARGET = "eval/accuracy"


class SweepError(LaunchError):
    """Invalid sweep inputs: `errors` maps field names ("parameters.tau", "budget.runs") to messages."""


@dataclass
class Param:
    """One parameter to vary: `values` (grid / categorical) or a range low..high (log scale or not)."""

    name: str
    kind: str  # "values" | "int" | "float"
    values: list[Any] = field(default_factory=list)
    low: float | None = None
    high: float | None = None
    log: bool = False

    def to_json(self) -> dict[str, Any]:
        if self.kind == "values":
            return {"values": self.values}
        return {"low": self.low, "high": self.high, "log": self.log, "type": self.kind}

    @classmethod
    def from_json(cls, name: str, d: dict[str, Any]) -> "Param":
        if "values" in d:
            return cls(name, "values", list(d["values"]))
        return cls(name, d["type"], low=d["low"], high=d["high"], log=d["log"])

    def corners(self) -> tuple[Any, Any]:
        """The first and the last value a trial may get (checked against the base config up front)."""
        return (self.values[0], self.values[-1]) if self.kind == "values" else (self.low, self.high)


@dataclass
class SweepSpec:
    name: str
    strategy: str
    base: dict[str, Any]
    params: list[Param]
    max_runs: int
    parallel: int
    target: str
    direction: str
    target_mode: str
    pruner: dict[str, Any]
    seed: int

    def grid_points(self) -> list[dict[str, Any]]:
        points: list[dict[str, Any]] = [{}]
        for p in self.params:
            points = [{**pt, p.name: v} for pt in points for v in p.values]
        return points


def bounded(spec: FieldSpec) -> bool:
    """A field a search can vary: choices, a bool, or a number with both bounds."""
    if spec.choices is not None or spec.type is bool:
        return True
    return spec.type in (int, float) and spec.min is not None and spec.max is not None


def sweepable(name: str) -> bool:
    """A bounded gft_core setting a trial may set: a launch field, or another setting the launch
    API takes in `config` (not one the web sets itself: model_path, data.*, reward...)."""
    spec = FIELDS.get(name)
    return spec is not None and bounded(spec) and (name in LAUNCH_FIELDS or name not in WEB_CONTROLLED)


def parse(data: Any) -> SweepSpec:
    """Check a sweep's inputs (a mapping, as from JSON or YAML); raise SweepError naming each bad field."""
    errors: dict[str, list[str]] = {}

    def err(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    if not isinstance(data, dict):
        raise SweepError.one("non_field_errors", "A sweep is a mapping (name, base, parameters, strategy, ...).")
    known = {"team", "name", "strategy", "base", "parameters", "budget", "max_runs", "parallel", "target",
             "direction", "mode", "pruner", "seed"}
    for key in data:
        if key not in known:
            err(str(key)[:100], f"Unknown key; known: {', '.join(sorted(known))}.")
    name = data.get("name", "")
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX:
        err("name", f"A name of 1 to {NAME_MAX} characters.")
    strategy = data.get("strategy", "grid")
    if strategy not in STRATEGIES:
        err("strategy", f"One of {', '.join(STRATEGIES)}.")
    base = data.get("base", {})
    if not isinstance(base, dict):
        err("base", "A mapping of launch inputs (dataset, reward_config, model, method, tau, ...).")
        base = {}
    budget = data.get("budget") if isinstance(data.get("budget"), dict) else {}
    if "budget" in data and not isinstance(data["budget"], dict):
        err("budget", "A mapping {runs, parallel}.")
    max_runs = _int_in(budget.get("runs", data.get("max_runs")), "budget.runs", 1, MAX_RUNS, err, default=None)
    parallel = _int_in(budget.get("parallel", data.get("parallel", 1)), "budget.parallel", 1, MAX_PARALLEL, err, 1)
    target, direction, mode = _target(data, err)
    pruner = _pruner(data.get("pruner", "none"), err)
    if pruner and target.startswith("eval:"):
        err("pruner", "Pruning needs a target metric logged during training, not an evaluation result.")
    seed = _int_in(data.get("seed", 0), "seed", 0, 2**31 - 1, err, 0)
    params = _params(data.get("parameters"), strategy, err)
    for p in params:
        if p.name in base:
            err(f"base.{p.name}", f"{p.name} is a parameter of the sweep; leave it out of base.")
    if strategy == "grid" and params and not any(k.startswith("parameters") for k in errors):
        size = math.prod(len(p.values) for p in params)
        if max_runs is None:
            max_runs = size
        elif size > max_runs:
            err("budget.runs", f"The grid has {size} points, more than the budget of {max_runs} runs.")
    if max_runs is None and "budget.runs" not in errors:
        err("budget.runs", f"How many runs the search may launch, 1 to {MAX_RUNS}.")
    if errors:
        raise SweepError(errors)
    return SweepSpec(name=name.strip(), strategy=strategy, base=base, params=params, max_runs=max_runs,
                     parallel=min(parallel, max_runs), target=target, direction=direction, target_mode=mode,
                     pruner=pruner, seed=seed)


def _int_in(value: Any, name: str, lo: int, hi: int, err, default: Any) -> Any:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        err(name, f"A whole number from {lo} to {hi}.")
        return default
    return value


def _target(data: dict, err) -> tuple[str, str, str]:
    target = data.get("target", DEFAULT_TARGET)
    direction, mode = data.get("direction", "max"), data.get("mode", "final")
    if isinstance(target, dict):
        direction, mode = target.get("direction", direction), target.get("mode", mode)
        target = target.get("metric", DEFAULT_TARGET)
    if not isinstance(target, str) or not TARGET_RE.match(target):
        err("target.metric", "A metric key (eval/accuracy, reward/mean, loss) or eval:<benchmark>/<metric> "
                             "(eval:math500/avg_at_k).")
        target = DEFAULT_TARGET
    if direction not in ("max", "min"):
        err("target.direction", "max or min.")
    if mode not in ("final", "best"):
        err("target.mode", "final (the last value) or best (the best value of the run).")
    return target, direction, mode


def _pruner(value: Any, err) -> dict[str, Any]:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or value.get("name", "none") not in PRUNERS:
        err("pruner", f"One of {', '.join(PRUNERS)}, or {{name, startup_trials, warmup_steps}}.")
        return {}
    if value.get("name", "none") == "none":
        return {}
    for key in value:
        if key not in ("name", "startup_trials", "warmup_steps"):
            err(f"pruner.{str(key)[:50]}", "Unknown; known: name, startup_trials, warmup_steps.")
    out = {"name": value["name"],
           "startup_trials": _int_in(value.get("startup_trials", 2), "pruner.startup_trials", 0, MAX_RUNS, err, 2),
           "warmup_steps": _int_in(value.get("warmup_steps", 0), "pruner.warmup_steps", 0, 10**6, err, 0)}
    return out


def _params(raw: Any, strategy: str, err) -> list[Param]:
    if not isinstance(raw, dict) or not raw:
        err("parameters", "A mapping of at least one setting to vary: {tau: [0.1, 0.3]} or "
                          "{lr: {low: 1e-5, high: 1e-3, log: true}}.")
        return []
    params = []
    for name, value in raw.items():
        key = f"parameters.{str(name)[:100]}"
        spec = FIELDS.get(name)
        if spec is None:
            err(key, "Unknown setting.")
            continue
        if not sweepable(name):
            err(key, f"{name} is not bounded (no range or choices)" if not bounded(spec)
                else f"{name} is set from the launch inputs; it cannot be varied.")
            continue
        if isinstance(value, dict) and ("values" in value or "choices" in value):
            value = value.get("values", value.get("choices"))
        if isinstance(value, list):
            p = _values_param(name, value, key, err)
        elif isinstance(value, dict):
            if strategy == "grid":
                err(key, "A grid takes a list of values, not a range.")
                continue
            p = _range_param(name, spec, value, key, err)
        else:
            err(key, "A list of values or a range {low, high, log}.")
            continue
        if p is not None:
            params.append(p)
    return params


def _values_param(name: str, values: list, key: str, err) -> Param | None:
    if not values:
        err(key, "An empty list of values.")
        return None
    if len(values) > MAX_VALUES:
        err(key, f"At most {MAX_VALUES} values.")
        return None
    for v in values:
        try:
            check_field(name, v)
        except ConfigError as e:
            err(key, f"{v!r}: {e.message}")
            return None
    if len({repr(v) for v in values}) < len(values):
        err(key, "A value repeats.")
        return None
    return Param(name, "values", list(values))


def _range_param(name: str, spec: FieldSpec, value: dict, key: str, err) -> Param | None:
    if spec.type not in (int, float) or spec.choices is not None:
        err(key, f"{name} takes a list of choices, not a range.")
        return None
    extra = set(value) - {"low", "high", "log"}
    if extra:
        err(key, f"Unknown keys {', '.join(sorted(map(str, extra)))}; a range is {{low, high, log}}.")
        return None
    low, high, log = value.get("low"), value.get("high"), value.get("log", False)
    for end, v in (("low", low), ("high", high)):
        try:
            check_field(name, v)
        except ConfigError as e:
            err(key, f"{end} {v!r}: {e.message}")
            return None
    if not isinstance(log, bool):
        err(key, "log is true or false.")
        return None
    if not low < high:
        err(key, f"low ({low}) must be below high ({high}).")
        return None
    if log and low <= 0:
        err(key, "A log range needs low > 0.")
        return None
    return Param(name, "int" if spec.type is int else "float", low=low, high=high, log=log)
