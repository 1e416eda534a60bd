"""Evaluations for the page tests, made the way the worker makes them: submitted through
webapp.evaluations.services (run checkpoints and a base model directory on disk), started, one
result per benchmark stored from gft_core's own BenchmarkResult.to_dict(), finished.

The standard picture (k = 2 samples, 2 problems per benchmark; accuracy = mean over samples, %):

    row                 math500   gsm8k_test   average
    base model (0)        50         25          37.5
    run A step 10         75         50          62.5
    run A step 20         50        100          75     <- A's best and final
    run B step 10         25         25          25
"""
from __future__ import annotations

import json
from pathlib import Path

from gft_core.benchmarks import ProblemResult, summarize
from webapp.datasets.models import Dataset
from webapp.evaluations import services
from webapp.evaluations.models import EvalStatus, Evaluation
from webapp.runs.models import Artifact, Run

T, F = True, False
BASE = {"math500": [[F, F], [T, T]], "gsm8k_test": [[T, F], [F, F]]}
RUN_A = {10: {"math500": [[T, F], [T, T]], "gsm8k_test": [[T, T], [F, F]]},
         20: {"math500": [[T, T], [F, F]], "gsm8k_test": [[T, T], [T, T]]}}
RUN_B = {10: {"math500": [[F, F], [T, F]], "gsm8k_test": [[T, F], [F, F]]}}


def model_dir(root: Path, name: str) -> str:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"model_type": "tiny"}))
    return str(d)


def make_benchmark(team, user, name: str, rows: int = 2) -> Dataset:
    """A validated benchmark dataset version (what the presets make once validated)."""
    return Dataset.objects.create(team=team, name=name, created_by=user, file_path=f"bench/{name}.jsonl",
                                  original_filename=f"{name}.jsonl", file_format="jsonl", sha256="0" * 64,
                                  size_bytes=100, status=Dataset.Status.VALID, purpose=Dataset.Purpose.EVALUATION,
                                  report={"train": {"valid_rows": rows}})


def make_suite(team, user, benchmarks: list[Dataset], name: str = "math"):
    return services.create_suite(team, user, name=name, benchmarks=[d.pk for d in benchmarks],
                                 settings={"k": 2, "temperature": 0.6})


def make_run(team, user, root: Path, name: str, steps: list[int], base: str) -> Run:
    """A finished run whose checkpoints (model directories) are on disk, started from `base`."""
    run = Run.objects.create(team=team, name=name, method="gft", created_by=user, status=Run.Status.SUCCEEDED,
                             total_steps=max(steps), step=max(steps),
                             config={"tau": 0.3, "model_path": base, "max_steps": max(steps)})
    for s in steps:
        Artifact.objects.create(run=run, kind=Artifact.Kind.CHECKPOINT, step=s,
                                path=model_dir(root, f"run{run.pk}/step-{s}"))
    return run


def problems(name: str, outcomes: list[list[bool]]) -> list[ProblemResult]:
    out = []
    for i, correct in enumerate(outcomes):
        truth = str(2 + i)
        answers = [truth if ok else str(90 + j) for j, ok in enumerate(correct)]
        out.append(ProblemResult(index=i, prompt=f"[{name}] What is 2 + {i}?", ground_truth=truth,
                                 responses=[f"We add: the answer is \\boxed{{{a}}}" for a in answers],
                                 correct=list(correct), extracted=answers, truncated=[False] * len(correct),
                                 lengths=[12] * len(correct), disagree=[False] * len(correct)))
    return out


def finish_evaluation(ev: Evaluation, benchmarks: dict[str, Dataset], outcomes: dict[str, list[list[bool]]]) -> Evaluation:
    """Run `ev` as the worker does: start, store one result per benchmark, succeed."""
    ev = services.start(ev.pk, ev.celery_task_id, "test-worker")
    done, total = 0, sum(len(p) for p in outcomes.values())
    for name, per_problem in outcomes.items():
        result = summarize(name, len(per_problem[0]), problems(name, per_problem))
        services.store_result(ev, benchmarks[name], result.to_dict())
        done += len(per_problem)
        services.record_progress(ev, done, total, name)
    services.finish(ev, EvalStatus.SUCCEEDED)
    ev.refresh_from_db()
    return ev


def evaluate(team, user, suite, benchmarks, outcomes, *, run: Run | None = None, step: int = 0) -> Evaluation:
    ev = services.submit_evaluation(team, user, suite=suite, run=run, step=step)
    return finish_evaluation(ev, benchmarks, outcomes)


def standard_picture(team, user, root: Path) -> dict:
    """Benchmarks, a suite, runs A and B from one base model, and every evaluation of the table above."""
    benches = {n: make_benchmark(team, user, n) for n in ("math500", "gsm8k_test")}
    suite = make_suite(team, user, list(benches.values()))
    base = model_dir(root, "Qwen2.5-Math-1.5B")
    a = make_run(team, user, root, "gft A", [10, 20], base)
    b = make_run(team, user, root, "sft B", [10], base)
    evaluate(team, user, suite, benches, BASE, run=a, step=0)
    for step, outcomes in RUN_A.items():
        evaluate(team, user, suite, benches, outcomes, run=a, step=step)
    for step, outcomes in RUN_B.items():
        evaluate(team, user, suite, benches, outcomes, run=b, step=step)
    return {"benchmarks": benches, "suite": suite, "base": base, "a": a, "b": b}
