"""Reads for the evaluation pages, the API and the CLI; every answer is JSON-ready (dicts, lists,
ints, floats, strings).

Units: accuracy values are percentages (0..100), the unit of the paper's Table 1, so that a team's
results and the reference rows share one axis. `metric` picks which number of a benchmark result:
"avg_at_k" (mean accuracy over the k samples, the default), "maj_at_k", or "pass@N" (N <= k).
Only succeeded evaluations count; when a checkpoint was evaluated more than once with a suite, the
newest evaluation wins. A base model is the "step 0" row: an evaluation without a run whose
model_path is the run's starting model.
"""
from __future__ import annotations

from collections import defaultdict
from statistics import mean
from typing import Any, Iterable

from django.db.models import QuerySet

from webapp.runs.models import Run

from .benchmarks import reference_name
from .models import EvalResult, EvalStatus, EvalSuite, Evaluation, ReferenceResult

METRICS_HELP = '"avg_at_k", "maj_at_k" or "pass@N"'


class SelectorError(ValueError):
    """A bad argument (e.g. an unknown metric); the message names it."""


def metric_value(metrics: dict, metric: str = "avg_at_k") -> float | None:
    """The percentage `metric` of one stored result summary (None when it was not computed)."""
    if metric in ("avg_at_k", "maj_at_k"):
        v = metrics.get(metric)
    elif metric.startswith("pass@") and metric[5:].isdigit():
        v = (metrics.get("pass_at_k") or {}).get(metric[5:])
        if v is None:  # stored with int keys (not round-tripped through JSON)
            v = (metrics.get("pass_at_k") or {}).get(int(metric[5:]))
    else:
        raise SelectorError(f"Unknown metric {metric!r}: use {METRICS_HELP}.")
    return None if v is None else round(100.0 * float(v), 4)


def base_model_path(run: Run) -> str:
    """The directory a run started from (its base model's evaluations have this model_path)."""
    return str((run.config or {}).get("model_path") or "")


def _newest_per_step(evaluations: QuerySet) -> dict[int, Evaluation]:
    """step -> the newest succeeded evaluation of that step."""
    by_step: dict[int, Evaluation] = {}
    for ev in evaluations.filter(status=EvalStatus.SUCCEEDED).order_by("checkpoint_step", "finished_at", "id"):
        by_step[ev.checkpoint_step] = ev
    return by_step


def _values(ev: Evaluation, benchmarks: list[str], metric: str) -> dict[str, float | None]:
    found = {r.benchmark_name: metric_value(r.metrics, metric) for r in ev.results.all()}
    return {b: found.get(b) for b in benchmarks}


def _average(values: dict[str, float | None]) -> float | None:
    present = [v for v in values.values() if v is not None]
    return round(mean(present), 4) if present else None


def benchmark_names(suite: EvalSuite) -> list[str]:
    """The column names of a suite: its benchmark datasets' names, in the suite's order."""
    return [d.name for d in suite.benchmark_datasets()]


def base_evaluations(team, model_path: str, suite: EvalSuite) -> QuerySet:
    return Evaluation.objects.filter(team=team, run__isnull=True, model_path=model_path, suite=suite)


def accuracy_series(run: Run, suite: EvalSuite, metric: str = "avg_at_k") -> dict[str, list[tuple[int, float]]]:
    """{benchmark name: [(checkpoint step, accuracy %), ...]} in step order, the base model (when
    evaluated with this suite) as step 0. Benchmarks without any value yet map to []."""
    names = benchmark_names(suite)
    series: dict[str, list[tuple[int, float]]] = {b: [] for b in names}
    evs = _newest_per_step(Evaluation.objects.filter(run=run, suite=suite).prefetch_related("results"))
    base = _newest_per_step(base_evaluations(run.team_id, base_model_path(run), suite).prefetch_related("results"))
    if 0 in base and 0 not in evs:
        evs[0] = base[0]
    for step in sorted(evs):
        for b, v in _values(evs[step], names, metric).items():
            if v is not None:
                series[b].append((step, v))
    return series


def pick_evaluation(run: Run, suite: EvalSuite, pick: str = "best", metric: str = "avg_at_k") -> Evaluation | None:
    """The run's evaluation shown on a leaderboard: "final" = the highest checkpoint step
    evaluated, "best" = the checkpoint with the best average over the suite's benchmarks."""
    if pick not in ("best", "final"):
        raise SelectorError(f"Unknown pick {pick!r}: use \"best\" or \"final\".")
    evs = _newest_per_step(Evaluation.objects.filter(run=run, suite=suite).prefetch_related("results"))
    if not evs:
        return None
    if pick == "final":
        return evs[max(evs)]
    names = benchmark_names(suite)
    scored = [((_average(_values(ev, names, metric)) or -1.0), step, ev) for step, ev in evs.items()]
    return max(scored, key=lambda t: (t[0], t[1]))[2]


def _row(kind: str, label: str, values: dict[str, float | None], **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "label": label, "values": values, "average": _average(values), **extra}


def reference_rows(team, benchmarks: list[str]) -> list[dict[str, Any]]:
    """One row per (model, method, source) of the team's reference results that reports at least
    one of `benchmarks` (matched through benchmarks.reference_name)."""
    wanted = {reference_name(b).casefold(): b for b in benchmarks}
    grouped: dict[tuple, dict[str, float]] = defaultdict(dict)
    paper: dict[tuple, bool] = {}
    for ref in ReferenceResult.objects.filter(team=team, metric="accuracy").order_by("model", "method", "id"):
        column = wanted.get(ref.benchmark.casefold())
        if column is None:
            continue
        key = (ref.model, ref.method, ref.source)
        grouped[key][column] = ref.value
        paper[key] = ref.from_paper
    return [_row("reference", f"{model} / {method}", {b: vals.get(b) for b in benchmarks}, model=model,
                 method=method, source=source, from_paper=paper[(model, method, source)], run=None, step=None,
                 evaluation=None)
            for (model, method, source), vals in grouped.items()]


def leaderboard(team, runs: Iterable[Run], suite: EvalSuite, pick: str = "best", baseline_run: Run | None = None,
                metric: str = "avg_at_k", references: bool = True) -> dict[str, Any]:
    """Runs x benchmarks of one suite version.

    Answer: {"suite", "metric", "pick", "benchmarks": [names], "baseline": run id | None,
    "rows": [{"kind": "run" | "base" | "reference", "label", "run", "step", "evaluation",
    "values": {benchmark: % | None}, "average", "delta": {benchmark: % points | None} | None,
    "delta_average"}]}. Run rows first (in the order given), then one base-model row per distinct
    starting model that was evaluated with the suite, then reference rows. `delta` is the
    difference to the baseline run's row (None without a baseline or when it has no evaluation).
    """
    names = benchmark_names(suite)
    rows: list[dict[str, Any]] = []
    base_paths: list[str] = []
    baseline_values: dict[str, float | None] | None = None
    for run in runs:
        ev = pick_evaluation(run, suite, pick, metric)
        values = _values(ev, names, metric) if ev else {b: None for b in names}
        rows.append(_row("run", f"#{run.pk} {run.name}", values, run=run.pk, step=ev.checkpoint_step if ev else None,
                         evaluation=ev.pk if ev else None, method=run.method))
        if baseline_run is not None and run.pk == baseline_run.pk and ev is not None:
            baseline_values = values
        path = base_model_path(run)
        if path and path not in base_paths:
            base_paths.append(path)
    if baseline_run is not None and baseline_values is None and all(r["run"] != baseline_run.pk for r in rows):
        ev = pick_evaluation(baseline_run, suite, pick, metric)
        baseline_values = _values(ev, names, metric) if ev else None
    for path in base_paths:
        ev = _newest_per_step(base_evaluations(team, path, suite).prefetch_related("results")).get(0)
        if ev is not None:
            rows.append(_row("base", f"Base model {path.rstrip('/').rsplit('/', 1)[-1]}", _values(ev, names, metric),
                             run=None, step=0, evaluation=ev.pk, model_path=path))
    if references:
        rows += reference_rows(team, names)
    for row in rows:
        row["delta"], row["delta_average"] = _delta(row, baseline_values)
    return {"suite": suite.pk, "metric": metric, "pick": pick, "benchmarks": names,
            "baseline": baseline_run.pk if baseline_run is not None else None, "rows": rows}


def _delta(row: dict, baseline: dict[str, float | None] | None) -> tuple[dict | None, float | None]:
    if baseline is None:
        return None, None
    delta = {b: (None if v is None or baseline.get(b) is None else round(v - baseline[b], 4))
             for b, v in row["values"].items()}
    avg_base = _average(baseline)
    return delta, (None if row["average"] is None or avg_base is None else round(row["average"] - avg_base, 4))


def result_for(ev: Evaluation, benchmark) -> EvalResult | None:
    """The result of `ev` on `benchmark` (a Dataset, its id, or its name)."""
    qs = ev.results.all()
    if isinstance(benchmark, str):
        return qs.filter(benchmark_name=benchmark).order_by("-id").first()
    return qs.filter(benchmark_id=getattr(benchmark, "pk", benchmark)).first()


def problem_diff(run_eval: Evaluation, base_eval: Evaluation, benchmark, min_correct: int = 1) -> dict[str, Any]:
    """Problems solved (at least `min_correct` of k samples correct) by one evaluation and not the
    other, matched by problem index: {"benchmark", "solved_only_by_run": [...],
    "solved_only_by_base": [...], "solved_by_both": n, "solved_by_neither": n, "compared": n}.
    Each problem: {"index", "prompt", "ground_truth", "run": {correct, k, responses, extracted},
    "base": {...}} (a few sampled responses, as stored)."""
    mine, theirs = result_for(run_eval, benchmark), result_for(base_eval, benchmark)
    name = getattr(benchmark, "name", benchmark)
    out: dict[str, Any] = {"benchmark": mine.benchmark_name if mine else str(name), "solved_only_by_run": [],
                           "solved_only_by_base": [], "solved_by_both": 0, "solved_by_neither": 0, "compared": 0}
    if mine is None or theirs is None:
        return out
    base_by_index = {p["index"]: p for p in theirs.problems}
    for p in mine.problems:
        q = base_by_index.get(p["index"])
        if q is None:
            continue
        out["compared"] += 1
        a, b = p["correct"] >= min_correct, q["correct"] >= min_correct
        if a and b:
            out["solved_by_both"] += 1
        elif not a and not b:
            out["solved_by_neither"] += 1
        else:
            entry = {"index": p["index"], "prompt": p["prompt"], "ground_truth": p["ground_truth"],
                     "run": _side(p), "base": _side(q)}
            out["solved_only_by_run" if a else "solved_only_by_base"].append(entry)
    return out


def _side(p: dict) -> dict[str, Any]:
    return {k: p.get(k) for k in ("correct", "k", "responses", "extracted", "response_correct")}


def evaluations_of_run(run: Run) -> QuerySet:
    """A run's evaluations and those of its base model (step 0), newest first."""
    from django.db.models import Q

    return (Evaluation.objects.filter(Q(run=run) | Q(run__isnull=True, team_id=run.team_id,
                                                     model_path=base_model_path(run)))
            .select_related("suite").prefetch_related("results").order_by("-created_at"))
