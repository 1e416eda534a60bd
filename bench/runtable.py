"""Run table: server time and query count of the run list page with 10,000 runs and 30 columns.

Database `bench_runtable` (created and migrated here) holds `runs` runs of one team, each with a
full gft_core config, a summary and metric ranges of 20 metrics and tags; a fifth of them have an
evaluation with results on two benchmarks (loaded once with bulk_create, reused afterwards when
the count matches). Measured in this process through Django's test client (no network), median
of `reps` warm calls after one warm-up:
- the table `/` with 30 columns (config fields, final / best / min / max metrics, eval results),
  sorted by a config field, by a metric range, by an evaluation result (a subquery per run), and
  with a text filter;
- the peer: the same runs through Django's default admin changelist (`/admin/runs/run/?team__id__exact=`,
  100 rows, its list filters), i.e. what a plain ModelAdmin costs on the same table.
The query count of each page is printed beside its time; it does not grow with the runs.
"""
from __future__ import annotations

import argparse
import time

from bench.common import Skip, Stat, migrate, print_table, record, services_up, setup_django, verdict

DB = "bench_runtable"
GOAL_MS = 300.0
METRICS = ["loss", "grad_norm", "lr", "tokens_per_s", "reward/mean", "reward/expert", "reward/teacher", "reward/self",
           "reward/self_accuracy", "eval/accuracy", "adv/mean", "adv/std", "adv/zero_var_groups", "dcr/rectified_frac",
           "dcr/mean_c", "dcr/mean_w", "policy/entropy", "policy/kl_start", "response_len/mean", "time/step"]
CONFIG_COLS = ["method", "tau", "lr", "n_expert", "n_teacher", "n_self", "seed", "max_steps", "prompts_per_step",
               "temperature", "kl_coef", "lr_schedule", "warmup_steps", "data.path"]
COLUMNS = ([f"config:{c}" for c in CONFIG_COLS] + [f"final:{m}" for m in METRICS[:6]]
           + ["max:reward/mean", "max:reward/self_accuracy", "max:eval/accuracy", "min:loss", "min:grad_norm",
              "best:loss", "best:reward/mean", "best:eval/accuracy", "eval:math500", "eval:gsm8k"])
assert len(COLUMNS) == 30


def load(team, user, n_runs: int) -> float | None:
    """The bench runs (reused when this team already has n_runs); seconds spent loading or None."""
    import random

    from gft_core.config import GFTConfig

    from webapp.evaluations.models import EvalResult, EvalSuite, Evaluation
    from webapp.runs.models import Run

    if Run.objects.filter(team=team).count() == n_runs:
        return None
    t0 = time.perf_counter()
    Run.objects.filter(team=team).delete()
    rng = random.Random(0)
    base = GFTConfig().to_dict()
    runs = []
    for i in range(n_runs):
        cfg = {**base, "tau": rng.choice([0.1, 0.3, 0.5, 0.7]), "lr": rng.choice([1e-6, 3e-6, 1e-5]),
               "seed": i % 5, "n_self": rng.choice([2, 4, 8]), "data": {"path": f"/data/set{i % 7}.jsonl"}}
        summary = {m: rng.random() for m in METRICS}
        ranges = {m: sorted([rng.random(), rng.random() + 0.5]) for m in METRICS}
        runs.append(Run(team=team, created_by=user, name=f"run {i} tau {cfg['tau']}", method=rng.choice(["gft", "grpo", "sft"]),
                        config=cfg, summary=summary, metric_range=ranges, status=Run.Status.SUCCEEDED, step=500,
                        total_steps=500, tags=[f"sweep{i % 20}", "bench"] if i % 3 else ["bench"]))
    runs = Run.objects.bulk_create(runs, batch_size=1000)
    suite = EvalSuite.objects.create(team=team, name="bench", version=1, benchmarks=[], settings={})
    evals = Evaluation.objects.bulk_create(
        [Evaluation(team=team, run=r, suite=suite, checkpoint_step=500, checkpoint_path="x",
                    status=Evaluation.Status.SUCCEEDED) for r in runs[::5]], batch_size=1000)
    EvalResult.objects.bulk_create([EvalResult(evaluation=e, benchmark_name=b, metrics={"avg_at_k": rng.random()})
                                    for e in evals for b in ("math500", "gsm8k")], batch_size=2000)
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("ANALYZE runs_run; ANALYZE evaluations_evaluation; ANALYZE evaluations_evalresult")
    return time.perf_counter() - t0


def _timed(fn, reps: int) -> tuple[Stat, int]:
    """(time of fn over reps warm calls, queries of one call)."""
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    reset_queries()  # under DEBUG the log is full of the loading's inserts (it keeps 9,000)
    with CaptureQueriesContext(connection) as q:
        fn()  # warm-up, and the query count
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return Stat.of(ts), len(q)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench runtable", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=7)
    a = p.parse_args(argv)
    if a.quick:
        a.runs, a.reps = 300, 1
    why = services_up()
    if why:
        raise Skip(why)
    migrate(DB)
    setup_django(DB)
    from django.contrib.auth import get_user_model
    from django.test import Client

    from webapp.accounts.models import Membership, Team

    slug = "bench-runtable-quick" if a.quick else "bench-runtable"
    team, _ = Team.objects.get_or_create(slug=slug, defaults={"name": slug})
    User = get_user_model()
    user = User.objects.filter(username=slug).first() or User.objects.create_superuser(slug, password="bench-pass-123")
    Membership.objects.get_or_create(user=user, team=team, defaults={"role": Membership.Role.ADMIN})
    load_s = load(team, user, a.runs)
    print(f"{a.runs:,} runs " + (f"loaded in {load_s:.1f} s" if load_s else "(reused from an earlier run)"), flush=True)

    web = Client(HTTP_HOST="127.0.0.1")
    web.force_login(user)

    def get(url: str, **params) -> None:
        r = web.get(url, params)
        if r.status_code != 200:
            raise RuntimeError(f"GET {url} -> {r.status_code}: {r.content[:300]!r}")
        if url == "/" and r.content.count(b"<tr data-run=") != 50:
            raise RuntimeError("the run table did not show a full page of 50 runs")

    cols = ",".join(COLUMNS)
    cases = {
        "run table, 30 columns, sort config:lr": lambda: get("/", cols=cols, sort="config:lr"),
        "run table, 30 columns, sort max:reward/mean": lambda: get("/", cols=cols, sort="max:reward/mean"),
        "run table, 30 columns, sort eval:math500": lambda: get("/", cols=cols, sort="eval:math500"),
        "run table, 30 columns, text filter + tag": lambda: get("/", cols=cols, q="tau 0.3", tag="bench"),
        "peer: Django admin changelist (100 rows)": lambda: get("/admin/runs/run/", team__id__exact=team.pk),
    }
    rows, out = [], []
    for name, fn in cases.items():
        stat, queries = _timed(fn, a.reps)
        goal = None if name.startswith("peer") else GOAL_MS
        ok = None if goal is None else stat.median * 1000 < goal
        rows.append([name, stat.fmt(3, 1000, " ms"), str(queries), f"< {goal:,.0f} ms" if goal else "-", verdict(ok)])
        out.append((f"{name}, {a.runs:,} runs ({queries} queries)", stat.fmt(3, 1000, " ms"),
                    f"< {goal:,.0f} ms" if goal else "", verdict(ok)))
    print_table(f"runtable: {a.runs:,} runs, 50 rows a page, {a.reps} warm calls",
                ["page", "server time [min-max]", "queries", "goal", "verdict"], rows)
    record("runtable", out, quick=a.quick)
    return 0
