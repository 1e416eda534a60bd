"""`gft-studio compare`: the reproducible method comparison (issue 17, item 7).

On the project's own services and workers (started as `./studio up` starts them: stack/launcher.py),
from the demo's warm-up model (`tiny-warm`, stack/demo.py) and the easy toy task
(gft_core.tiny.EASY_TOY): one run per method (GFT, SFT, DFT, GRPO, GFT without DCR by default),
each with the same launch defaults, seed and data, and an eval suite over the task's held-out
problems (a benchmark dataset) that every run evaluates every `eval_interval` steps and at the
end; the base model is evaluated with the same suite (the leaderboard's base row). It waits with
progress lines, saves a team dashboard with the leaderboard, and prints the table.

    .venv/bin/python -m stack.launcher compare [--steps 40] [--methods gft,sft,dft,grpo,gft_no_dcr]
                                               [--team Demo] [--eval-problems 100] [--k 4]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

DEFAULT_METHODS = ("gft", "sft", "dft", "grpo", "gft_no_dcr")
TRAIN_NAME = "toy-easy"
N_TRAIN = 2000
SEED = 0
MAX_RESPONSE_LEN = 64  # the easy task's worked answers fit (README's tiny GFT recipe)
TIMEOUT_S = 6 * 3600.0


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="train GFT, SFT, DFT, GRPO and GFT without DCR on the easy toy task "
                                       "from the demo's warm-up model, evaluate every checkpoint, save a dashboard")
    p.add_argument("--steps", type=int, default=40, help="training steps per run (default 40)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated methods of gft_core/methods.py (default {','.join(DEFAULT_METHODS)})")
    p.add_argument("--team", default="Demo", help="team that owns the runs and the dashboard (default Demo)")
    p.add_argument("--eval-interval", type=int, default=0,
                   help="evaluate every N steps (default: steps / 4) and at the end")
    p.add_argument("--eval-problems", type=int, default=100, help="held-out problems in the benchmark (default 100)")
    p.add_argument("--k", type=int, default=4, help="samples per problem (default 4)")
    p.add_argument("--model", default="", help="base model directory under MODEL_ROOTS (default: the demo's tiny-warm)")


def main(args: argparse.Namespace) -> int:
    from stack import launcher

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    from gft_core.methods import METHODS

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise SystemExit(f"--methods: unknown method {', '.join(unknown) or '(none)'}; choose from {', '.join(METHODS)}")
    if args.steps < 1 or args.eval_problems < 1 or args.k < 1:
        raise SystemExit("--steps, --eval-problems and --k must be at least 1")
    stack = launcher.Stack()
    try:
        launcher.prepare_environment(stack)
        launcher.say("preparing the database, the warm-up model and the easy toy task")
        launcher.migrate()
        setup = prepare(args)
        logs = launcher.VAR / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        procs = launcher.processes("127.0.0.1", 0)
        for name in ("worker-gpu", "worker-default"):  # training + evaluation, dataset validation
            stack.start(name, procs[name], log=logs / f"compare-{name}.log")
        started = time.monotonic()
        result = run_comparison(setup, methods, args, supervise=stack.supervise)
        print(format_table(result["table"], result["settings"], time.monotonic() - started), flush=True)
        launcher.say(f"dashboard #{result['dashboard'].pk} {result['dashboard'].name!r}: "
                     f"/dashboards/{result['dashboard'].pk}/")
        return 0 if result["ok"] else 1
    except KeyboardInterrupt:
        launcher.say("stopping")
        return 130
    finally:
        stack.stop()


# ---------------------------------------------------------------------------- assets
def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """The team and admin, the base model, the reward, and the task's datasets and suite (created
    or reused: a second comparison with the same sizes reuses them)."""
    from stack import demo, launcher
    from webapp.runs.modelpaths import resolve_model

    team, user = demo.ensure_admin(launcher.admin_password(), args.team)
    model = resolve_model(args.model) if args.model else str(demo.ensure_model())
    train, bench = ensure_task(team, user, args.eval_problems)
    return {"team": team, "user": user, "model": str(model), "reward": demo.ensure_reward(team, user),
            "train": train, "bench": bench}


def ensure_task(team, user, n_eval: int):
    """(training dataset, benchmark dataset) of the easy toy task, validation queued for a worker."""
    from django.conf import settings

    from gft_core.tiny import EASY_TOY, make_toy_data
    from webapp.datasets.models import Dataset
    from webapp.datasets.services import create_dataset_from_upload, start_validation
    from webapp.evaluations.benchmarks import add_benchmark_file

    bench_name = f"toy-easy-eval-{n_eval}"
    have = {d.name: d for d in Dataset.objects.filter(team=team, name__in=[TRAIN_NAME, bench_name]).order_by("version")}
    if TRAIN_NAME not in have or bench_name not in have:
        paths = make_toy_data(Path(settings.ARTIFACT_ROOT) / "compare-data" / f"easy-{n_eval}", n_train=N_TRAIN,
                              n_eval=n_eval, seed=SEED, **EASY_TOY)
        if TRAIN_NAME not in have:
            with open(paths["train"], "rb") as f:
                have[TRAIN_NAME] = create_dataset_from_upload(team, user, f, name=TRAIN_NAME, filename="train.jsonl",
                                                              mapping="toy", allow_duplicate=True)
        if bench_name not in have:
            have[bench_name] = add_benchmark_file(team, user, bench_name, paths["eval"], "toy")
    for d in have.values():
        if d.status == Dataset.Status.INVALID:
            start_validation(d)
    return have[TRAIN_NAME], have[bench_name]


def ensure_suite(team, user, bench, k: int):
    """The suite over the benchmark (k samples at T=0.5, the recipe's evaluation), its newest
    version; a new version when the settings asked for differ."""
    from webapp.evaluations import services
    from webapp.evaluations.models import EvalSuite

    name = bench.name
    wanted = services.check_settings({"k": k, "temperature": 0.5, "top_p": 1.0, "max_new_tokens": MAX_RESPONSE_LEN,
                                      "max_prompt_len": 64, "use_chat_template": False, "seed": SEED,
                                      "batch_size": 32})
    suite = EvalSuite.objects.filter(team=team, name=name).order_by("-version").first()
    if suite is None:
        return services.create_suite(team, user, name=name, benchmarks=[bench.pk], settings=wanted,
                                     description="Held-out problems of the easy toy task (gft-studio compare)")
    if suite.settings != wanted or suite.benchmarks != [bench.pk]:
        return services.new_suite_version(suite, user, benchmarks=[bench.pk], settings=wanted)
    return suite


# ---------------------------------------------------------------------------- the comparison
def _wait(what: str, ready, supervise, timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not happen in {timeout:.0f} s; see var/logs/compare-worker-*.log")
        supervise()
        time.sleep(1.0)


def run_comparison(setup: dict, methods: list[str], args: argparse.Namespace, supervise=lambda: None) -> dict:
    """Launch the base evaluation and one run per method, wait for them, save the dashboard.
    Answer: {"runs", "base", "suite", "dashboard", "table", "settings", "ok"}."""
    from stack import demo, launcher
    from webapp.evaluations.models import Evaluation
    from webapp.evaluations.services import submit_evaluation
    from webapp.runs.launch import submit_run
    from webapp.runs.models import Run

    team, user = setup["team"], setup["user"]
    for d in (setup["train"], setup["bench"]):
        _wait(f"validation of dataset {d.name}", lambda d=d: demo.dataset_ready(d), supervise)
    suite = ensure_suite(team, user, setup["bench"], args.k)
    interval = args.eval_interval or max(1, args.steps // 4)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    base = submit_evaluation(team, user, suite=suite, model=setup["model"])
    launcher.say(f"evaluation #{base.pk} of the base model {setup['model']} queued")
    runs = []
    for method in methods:  # the product's launch defaults for the model; same seed, data, suite
        run = submit_run(team, user, {
            "name": f"compare {stamp}: {method}", "method": method, "model": setup["model"],
            "dataset": setup["train"].pk, "reward_config": setup["reward"].pk, "eval_suite": suite.pk,
            "eval_split": "none", "max_steps": args.steps, "eval_interval": interval,
            "checkpoint_interval": interval, "max_response_len": MAX_RESPONSE_LEN, "seed": SEED,
            "tags": ["compare"]})
        runs.append(run)
        launcher.say(f"run #{run.pk} {method} queued")
    last: dict[int, tuple] = {}

    def progress() -> bool:
        done = True
        base.refresh_from_db()
        state = (base.status, base.done)
        if last.get(0) != state:
            last[0] = state
            launcher.say(f"base model evaluation: {base.status} {base.done}/{base.total}")
        done &= base.status in Evaluation.FINISHED
        for run in runs:
            run.refresh_from_db()
            evals = Evaluation.objects.filter(run=run).count()
            state = (run.status, run.step, evals)
            if last.get(run.pk) != state:
                last[run.pk] = state
                launcher.say(f"run #{run.pk} {run.method}: {run.status} step {run.step}/{run.total_steps}, "
                             f"{evals} checkpoint evaluation(s)")
            done &= run.status in Run.FINISHED
        return done

    _wait("the comparison", progress, supervise, timeout=TIMEOUT_S)
    dash = save(team, user, runs, suite, stamp)
    table = comparison_table(team, runs, suite)
    ok = base.status == "succeeded" and all(r.status == "succeeded" for r in runs)
    settings_ = {"steps": args.steps, "eval_interval": interval, "k": args.k, "problems": args.eval_problems,
                 "model": setup["model"], "suite": str(suite), "seed": SEED}
    return {"runs": runs, "base": base, "suite": suite, "dashboard": dash, "table": table, "settings": settings_,
            "ok": ok}


def save(team, user, runs, suite, stamp: str):
    """The team dashboard of the comparison: its runs and the suite's leaderboard (final checkpoints)."""
    from webapp.dashboards.models import Dashboard
    from webapp.dashboards.services import save_dashboard

    name = f"Method comparison {stamp}"
    return save_dashboard(team=team, user=user, instance=Dashboard.objects.filter(team=team, name=name).first(),
                          data={"name": name, "runs": [r.pk for r in runs], "charts": [], "smoothing": 0.0,
                                "lb_suite": suite.pk, "lb_pick": "final", "lb_baseline": None})


def comparison_table(team, runs, suite) -> dict[str, Any]:
    """The leaderboard of the final checkpoints (with the base row), and each run's accuracy at
    every evaluated step: {"benchmarks", "rows": [{label, method, step, values, average}],
    "curves": {run label: {benchmark: [(step, %)]}}}."""
    from webapp.evaluations.selectors import accuracy_series, leaderboard

    lb = leaderboard(team, runs, suite, pick="final", references=False)
    rows = [{"label": r["method"] if r["kind"] == "run" else "base model", "method": r.get("method"),
             "step": r["step"], "values": r["values"], "average": r["average"]} for r in lb["rows"]]
    curves = {run.method: accuracy_series(run, suite) for run in runs}
    return {"benchmarks": lb["benchmarks"], "rows": rows, "curves": curves}


def format_table(table: dict, settings_: dict, seconds: float) -> str:
    """Markdown: method x benchmark accuracy (final checkpoint), the base row, then accuracy by step."""
    bench = table["benchmarks"]
    lines = [f"| method | step | {' | '.join(bench)} |", "|---|---|" + "---|" * len(bench)]
    for r in table["rows"]:
        vals = " | ".join("-" if r["values"][b] is None else f"{r['values'][b]:.1f}%" for b in bench)
        lines.append(f"| {r['label']} | {r['step'] if r['step'] is not None else '-'} | {vals} |")
    lines.append("")
    for b in bench:
        steps = sorted({s for c in table["curves"].values() for s, _ in c.get(b, [])})
        lines.append(f"accuracy by step on {b}:")
        lines.append("| method | " + " | ".join(str(s) for s in steps) + " |")
        lines.append("|---|" + "---|" * len(steps))
        for method, c in table["curves"].items():
            by = dict(c.get(b, []))
            lines.append(f"| {method} | " + " | ".join(f"{by[s]:.1f}" if s in by else "-" for s in steps) + " |")
    lines.append("")
    lines.append(f"{settings_['steps']} steps per run, evaluated every {settings_['eval_interval']} steps and at the "
                 f"end on {settings_['problems']} held-out problems x k={settings_['k']} at T=0.5 ({settings_['suite']}), "
                 f"seed {settings_['seed']}, base model {settings_['model']}; {seconds / 60:.1f} min")
    return "\n".join(lines)
