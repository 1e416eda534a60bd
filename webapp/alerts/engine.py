"""Rule evaluation in memory, as a run's steps arrive (no database, no Django): the rolling windows
of the metric rules of one run. webapp.alerts.monitor feeds it from the metric sink.

Cost: a step touches only the rules on metrics present in it, each a deque append and an O(W)
aggregate at most (bench/alerts.py measures it: a few microseconds per step per run).
Stalled and failed rules are not metric rules: housekeeping and the run status signal decide them.
"""
from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Iterable

METRIC_CONDITIONS = ("above", "below", "change_above", "change_below", "nonfinite")
MEDIAN_HISTORY = 100  # earlier values a running median looks at: recent enough to follow a trend
MEDIAN_MIN = 5  # a running median over fewer values is noise: no verdict before that


@dataclass(frozen=True)
class RuleSpec:
    id: int
    metric: str
    condition: str
    window: int = 1
    aggregation: str = "last"
    threshold: float = 0.0
    baseline: str = "none"

    @classmethod
    def of(cls, rule) -> "RuleSpec":
        return cls(rule.pk, rule.metric, rule.condition, max(1, rule.window), rule.aggregation, rule.threshold,
                   rule.baseline)


@dataclass(frozen=True)
class Verdict:
    rule_id: int
    fire: bool  # True: the condition now holds (and did not); False: it held and no longer does
    step: int
    values: dict


def _agg(values: Iterable[float], how: str) -> float:
    if how == "last":
        return values[-1]  # type: ignore[index]
    if how == "mean":
        vals = list(values)
        return math.fsum(vals) / len(vals)
    return min(values) if how == "min" else max(values)


class RuleState:
    """One rule on one run: its windows, its baseline and whether it is firing."""

    __slots__ = ("spec", "values", "first", "history", "firing")

    def __init__(self, spec: RuleSpec, firing: bool = False):
        self.spec = spec
        size = spec.window * 2 if spec.condition.startswith("change") else spec.window
        self.values: deque[float] = deque(maxlen=size)
        self.first: float | None = None  # mean of the run's first window (baseline first_window)
        self.history: deque[float] = deque(maxlen=MEDIAN_HISTORY)  # values before the window (running median)
        self.firing = firing

    def observe(self, step: int, value: float) -> Verdict | None:
        """Feed one value; a Verdict when the rule starts or stops firing, else None."""
        s = self.spec
        if s.condition == "nonfinite":
            self.values.append(value)
            holds = not all(map(math.isfinite, self.values))
            return self._verdict(holds, step, {"value": None if not math.isfinite(value) else value})
        if not math.isfinite(value):
            return None  # NaN/inf is the nonfinite rule's business; it would poison every aggregate
        if len(self.values) == self.values.maxlen and s.baseline == "running_median":
            self.history.append(self.values[0])  # the value leaving the window joins the history
        self.values.append(value)
        if len(self.values) < self.values.maxlen:
            return None  # a partial window says nothing yet
        if s.condition in ("change_above", "change_below"):
            vals = list(self.values)
            before, now = _agg(vals[: s.window], s.aggregation), _agg(vals[s.window:], s.aggregation)
            change = abs(now - before)
            holds = change > s.threshold if s.condition == "change_above" else change < s.threshold
            return self._verdict(holds, step, {"value": now, "previous": before, "change": change,
                                               "threshold": s.threshold})
        now = _agg(self.values, s.aggregation)
        if s.baseline == "first_window":
            if self.first is None:
                self.first = math.fsum(self.values) / len(self.values)
            base = self.first
        elif s.baseline == "running_median":
            if len(self.history) < MEDIAN_MIN:
                return None
            base = statistics.median(self.history)
        else:
            base = 1.0
        limit = s.threshold * base
        holds = now > limit if s.condition == "above" else now < limit
        values = {"value": now, "threshold": limit}
        if s.baseline != "none":
            values["baseline"] = base
        return self._verdict(holds, step, values)

    def _verdict(self, holds: bool, step: int, values: dict) -> Verdict | None:
        if holds == self.firing:
            return None
        self.firing = holds
        return Verdict(self.spec.id, holds, step, values)


class RunRules:
    """The metric rules of one run, indexed by metric."""

    def __init__(self, specs: Iterable[RuleSpec], firing: Iterable[int] = ()):
        firing = set(firing)
        self.by_metric: dict[str, list[RuleState]] = {}
        for spec in specs:
            if spec.condition in METRIC_CONDITIONS and spec.metric:
                self.by_metric.setdefault(spec.metric, []).append(RuleState(spec, spec.id in firing))

    def update(self, specs: Iterable[RuleSpec]) -> None:
        """Take over changed rules: a rule whose settings are unchanged keeps its window."""
        old = {st.spec: st for states in self.by_metric.values() for st in states}
        firing = {st.spec.id for st in old.values() if st.firing}
        self.by_metric = {}
        for spec in specs:
            if spec.condition not in METRIC_CONDITIONS or not spec.metric:
                continue
            st = old.get(spec) or RuleState(spec, spec.id in firing)
            self.by_metric.setdefault(spec.metric, []).append(st)

    def observe(self, step: int, scalars: dict[str, float]) -> list[Verdict]:
        out = []
        by_metric = self.by_metric
        for name, value in scalars.items():
            states = by_metric.get(name)
            if states:
                for st in states:
                    v = st.observe(step, value)
                    if v is not None:
                        out.append(v)
        return out
