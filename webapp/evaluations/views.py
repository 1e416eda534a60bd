"""Evaluation pages (issue 17): eval suites, references, "Evaluate" on a run or a base model, the
run page's Evaluation tab (its JSON), and the leaderboard of the compare page and dashboards.

Thin views: reads through webapp.evaluations.selectors, writes through webapp.evaluations.services,
team scoping through webapp.accounts.scoping.
"""
from __future__ import annotations

import functools

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from webapp.accounts.scoping import get_scoped, in_team, require_writer
from webapp.datasets.models import Dataset
from webapp.resources.views import team_write
from webapp.runs.models import Run
from webapp.runs.views.pages import BadParam, _int_param, answers_bad_params

from . import benchmarks, references, selectors, services
from .forms import EvaluateForm, LeaderboardForm, ReferenceForm, SuiteForm
from .models import EvalSuite, Evaluation, ReferenceResult


def _team_or_404(request: HttpRequest):
    if request.team is None:
        raise Http404("You are not a member of any team.")
    return request.team


def team_post(view):
    """A POST action on the current team: `view(request, team)` once the user may write to it."""
    @login_required
    @require_POST
    @functools.wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        team = _team_or_404(request)
        require_writer(request.user, team)
        return view(request, team)
    return wrapper


def _suites(request: HttpRequest, team) -> list[EvalSuite]:
    return list(in_team(request.user, EvalSuite.objects.filter(archived=False), team).order_by("name", "-version"))


def _benchmarks(request: HttpRequest, team):
    return in_team(request.user, Dataset.objects.filter(purpose=Dataset.Purpose.EVALUATION, archived=False),
                   team).order_by("name", "-version")


def _form_field(form, exc: Exception) -> str | None:
    """The form field an EvalError is about ("settings.k" -> "k"), None for a form-wide error."""
    name = str(getattr(exc, "field", "") or "").removeprefix("settings.")
    return name if name in form.fields else None


def _base_evaluations(request: HttpRequest, team) -> list[Evaluation]:
    """The team's newest evaluations of base models (the suites page lists them)."""
    qs = in_team(request.user, Evaluation.objects.filter(run__isnull=True), team) if team else Evaluation.objects.none()
    return list(qs.select_related("suite").order_by("-created_at")[:50])


# ---------------------------------------------------------------------------------------- suites
@login_required
def suite_list(request: HttpRequest) -> HttpResponse:
    """The team's suites, the form that creates one, and "Evaluate a base model"."""
    team = request.team
    datasets = list(_benchmarks(request, team)) if team else []
    suites = _suites(request, team) if team else []
    form = SuiteForm(request.POST or None, benchmarks=datasets)
    if request.method == "POST":
        team = _team_or_404(request)
        require_writer(request.user, team)
        if form.is_valid():
            d = form.cleaned_data
            try:
                suite = services.create_suite(team, request.user, name=d["name"], benchmarks=d["benchmarks"],
                                              settings=form.eval_settings(), description=d["description"])
            except services.EvalError as exc:
                form.add_error(_form_field(form, exc), str(exc))
            else:
                messages.success(request, f"Created suite {suite}.")
                return redirect("evaluations:suites")
    evaluate = EvaluateForm(suites=suites)
    return render(request, "evaluations/suites.html", {
        "suites": [(s, s.benchmark_datasets()) for s in suites], "form": form, "benchmarks": datasets,
        "evaluate_form": evaluate, "base_evaluations": _base_evaluations(request, team),
    }, status=400 if request.method == "POST" else 200)


@team_post
def add_presets(request: HttpRequest, team) -> HttpResponse:
    """Create the benchmark datasets of gft_core's presets (MATH-500, AIME24, ...) for the team."""
    try:
        added = benchmarks.add_benchmarks(team, request.user)
    except benchmarks.BenchmarkError as exc:
        messages.error(request, f"Could not add the presets: {exc}")
    else:
        names = ", ".join(str(d) for d, created in added if created) or "none (the team has them already)"
        messages.success(request, f"Benchmarks added: {names}. They are validated in the background.")
    return redirect("evaluations:suites")


# ---------------------------------------------------------------------------------------- evaluate
def _checkpoint_steps(run: Run) -> list[tuple[int, str]]:
    """What the run's "Evaluate…" form offers, as (step, label): its checkpoints on disk, newest
    first, then 0 = the base model it started from."""
    steps: dict[int, str] = {}
    for step, kind, _path in reversed(services.run_checkpoints(run)):
        steps.setdefault(step, f"step {step}" + (" (final model)" if kind == "final_model" else ""))
    steps[0] = "step 0 (the base model)"
    return list(steps.items())


@team_write(Run)
def evaluate_run(request: HttpRequest, run: Run) -> HttpResponse:
    """POST suite + step: evaluate one of the run's checkpoints (the Evaluation tab shows it)."""
    back = reverse("runs:detail", args=[run.pk]) + "#evaluation"
    form = EvaluateForm(request.POST, suites=_suites(request, run.team), steps=_checkpoint_steps(run))
    if not form.is_valid():
        messages.error(request, "Evaluate: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
        return redirect(back)
    suite = get_scoped(request.user, EvalSuite.objects.all(), pk=form.cleaned_data["suite"])
    try:
        ev = services.submit_evaluation(run.team, request.user, suite=suite, run=run, step=form.cleaned_data["step"])
    except services.EvalError as exc:
        messages.error(request, f"Evaluate ({exc.field}): {exc}")
    else:
        what = "the base model" if ev.checkpoint_step == 0 else f"step {ev.checkpoint_step}"
        messages.success(request, f"Queued evaluation #{ev.pk} of {what} with {suite}.")
    return redirect(back)


@team_post
def evaluate_model(request: HttpRequest, team) -> HttpResponse:
    """POST suite + model_path: evaluate a base model (the leaderboard's "step 0" row)."""
    form = EvaluateForm(request.POST, suites=_suites(request, team))
    back = request.POST.get("next") or reverse("evaluations:suites")
    if not back.startswith("/") or back.startswith("//"):
        back = reverse("evaluations:suites")
    if not form.is_valid() or not form.cleaned_data.get("model_path"):
        errors = dict(form.errors) if not form.is_valid() else {"model_path": ["This field is required."]}
        messages.error(request, "Evaluate: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        return redirect(back)
    suite = get_scoped(request.user, EvalSuite.objects.all(), pk=form.cleaned_data["suite"])
    try:
        ev = services.submit_evaluation(team, request.user, suite=suite, model=form.cleaned_data["model_path"])
    except services.EvalError as exc:
        messages.error(request, f"Evaluate ({exc.field}): {exc}")
    else:
        messages.success(request, f"Queued evaluation #{ev.pk} of the base model {ev.model_path} with {suite}.")
    return redirect(back)


# ---------------------------------------------------------------------------------------- references
@login_required
def reference_list(request: HttpRequest) -> HttpResponse:
    """Reference results (numbers reported elsewhere); POST adds one row."""
    team = request.team
    form = ReferenceForm(request.POST or None)
    if request.method == "POST":
        team = _team_or_404(request)
        require_writer(request.user, team)
        if form.is_valid():
            references.add_reference(team, **form.cleaned_data)
            messages.success(request, "Reference row added.")
            return redirect("evaluations:references")
    rows = in_team(request.user, ReferenceResult.objects.all(), team) if team else ReferenceResult.objects.none()
    return render(request, "evaluations/references.html", {"rows": rows, "form": form},
                  status=400 if request.method == "POST" else 200)


@team_post
def add_paper_table(request: HttpRequest, team) -> HttpResponse:
    try:
        n = references.add_paper_table(team)
    except (OSError, KeyError, ValueError) as exc:  # an unreadable or malformed CSV
        messages.error(request, f"Could not add the paper's table: {exc}")
    else:
        messages.success(request, f"Added {n} rows reported by the GFT paper (Table 1).")
    return redirect("evaluations:references")


@team_write(ReferenceResult)
def delete_reference(request: HttpRequest, row: ReferenceResult) -> HttpResponse:
    references.delete_reference(row)
    messages.success(request, "Reference row deleted.")
    return redirect("evaluations:references")


# ---------------------------------------------------------------------------------------- run tab
def run_tab_context(request: HttpRequest, run: Run) -> dict:
    """What the run page's Evaluation tab needs besides its JSON (the "Evaluate…" form)."""
    suites = _suites(request, run.team)
    return {"eval_form": EvaluateForm(suites=suites, steps=_checkpoint_steps(run)), "eval_suites": suites,
            "eval_urls": {"evaluation": reverse("evaluations:run_data", args=[run.pk]),
                          "eval_problems": reverse("evaluations:run_problems", args=[run.pk])}}


def _suite_param(request: HttpRequest, run: Run) -> EvalSuite | None:
    """?suite=ID (the team's), else the suite of the run's latest evaluation, else the suite the run
    evaluates during training (so the tab shows it before its first result lands); None if none."""
    raw = _int_param(request, "suite")
    if raw is not None:
        return get_scoped(request.user, EvalSuite.objects.filter(team=run.team), pk=raw)
    latest = selectors.evaluations_of_run(run).first()
    return latest.suite if latest else run.eval_suite


def _job(ev: Evaluation) -> dict:
    return {"id": ev.pk, "step": ev.checkpoint_step, "status": ev.status, "done": ev.done, "total": ev.total,
            "error": ev.error[-300:], "created": ev.created_at.strftime("%Y-%m-%d %H:%M"),
            "prompt_format": ev.prompt_format, "prompt": ev.prompt_format_label}


def _pass_at_k(ev: Evaluation | None) -> dict | None:
    """pass@k' for k' = 1..k of one evaluation, in percent, per benchmark."""
    if ev is None:
        return None
    curves = {}
    for r in ev.results.all():
        ks = sorted(int(k) for k in (r.metrics.get("pass_at_k") or {}))
        if ks:
            curves[r.benchmark_name] = {"k": ks, "value": [selectors.metric_value(r.metrics, f"pass@{k}") for k in ks]}
    return {"step": ev.checkpoint_step, "evaluation": ev.pk, "benchmarks": curves}


def _reference_lines(team, names: list[str]) -> dict[str, list[dict]]:
    """{benchmark: [{label, model, value, from_paper}]}: the dashed lines of the accuracy charts."""
    lines: dict[str, list[dict]] = {n: [] for n in names}
    for row in selectors.reference_rows(team, names):
        for bench, value in row["values"].items():
            if value is not None:
                lines[bench].append({"label": row["label"] + (" (paper)" if row["from_paper"] else ""),
                                     "model": row["model"], "value": value, "from_paper": row["from_paper"]})
    return lines


@login_required
@require_GET
@answers_bad_params
def run_data(request: HttpRequest, pk: int) -> JsonResponse:
    """The Evaluation tab's data (polled): accuracy per benchmark and step (percent), reference
    lines, pass@k of the latest evaluated checkpoint, this run's evaluations with the suite."""
    run = get_scoped(request.user, Run.objects.select_related("team"), pk=pk)
    suite = _suite_param(request, run)
    all_evals = list(selectors.evaluations_of_run(run))
    seen: dict[int, EvalSuite] = {}
    for ev in all_evals:
        seen.setdefault(ev.suite_id, ev.suite)
    suites = [{"id": s.pk, "label": str(s)} for s in seen.values()]
    out = {"suites": suites, "suite": None, "accuracy": {}, "references": {}, "pass_at_k": None, "evaluations": [],
           "base_model": selectors.base_model_path(run)}
    if suite is None:
        return JsonResponse(out)
    if suite.pk not in seen:
        suites.append({"id": suite.pk, "label": str(suite)})
    evals = [ev for ev in all_evals if ev.suite_id == suite.pk]
    series = selectors.accuracy_series(run, suite)
    finished = [ev for ev in evals if ev.status == Evaluation.Status.SUCCEEDED and ev.run_id == run.pk]
    latest = max(finished, key=lambda ev: (ev.checkpoint_step, ev.created_at), default=None)
    out.update(suite={"id": suite.pk, "label": str(suite)},
               accuracy={b: {"step": [s for s, _ in pts], "value": [v for _, v in pts]} for b, pts in series.items()},
               references=_reference_lines(run.team, list(series)), pass_at_k=_pass_at_k(latest),
               evaluations=[_job(ev) for ev in evals])
    return JsonResponse(out)


@login_required
@require_GET
@answers_bad_params
def run_problems(request: HttpRequest, pk: int) -> JsonResponse:
    """?suite=&benchmark=&step=: problems solved at that step and not by the base model, and the reverse."""
    run = get_scoped(request.user, Run.objects.select_related("team"), pk=pk)
    suite = _suite_param(request, run)
    step, benchmark = _int_param(request, "step"), request.GET.get("benchmark", "")[:120]
    if suite is None or step is None or not benchmark:
        raise BadParam("suite, step and benchmark are required.")
    done = Evaluation.Status.SUCCEEDED
    mine = run.evaluations.filter(suite=suite, checkpoint_step=step, status=done).order_by("-created_at").first()
    if mine is None:
        raise Http404(f"No finished evaluation of step {step} with {suite}.")
    base = (selectors.base_evaluations(run.team_id, selectors.base_model_path(run), suite)
            .filter(status=done).order_by("-created_at").first())
    out = {"step": step, "evaluation": mine.pk, "base": base.pk if base else None}
    if base is not None:
        out.update(selectors.problem_diff(mine, base, benchmark))
    return JsonResponse(out)


# ---------------------------------------------------------------------------------------- leaderboard
def leaderboard_context(request: HttpRequest, runs: list[Run], team, saved: dict | None = None) -> dict:
    """The leaderboard of the compare page / a dashboard: settings from ?lb_* (else the dashboard's
    saved ones, else the suite these runs were evaluated with last, best checkpoint, no baseline)."""
    if team is None:
        return {"leaderboard": None}
    suites = _suites(request, team)
    params = request.GET if any(k.startswith("lb_") for k in request.GET) else {
        f"lb_{k}": v for k, v in (saved or {}).items() if v not in (None, "")}
    form = LeaderboardForm(params or None, suites=suites, runs=runs)
    chosen = form.settings() if params else {"suite": None, "pick": "best", "baseline": None}
    by_id = {s.pk: s for s in suites}
    if chosen["suite"] not in by_id:  # the suite these runs were evaluated with last, else the first
        chosen["suite"] = (Evaluation.objects.filter(run__in=runs, suite__in=suites).order_by("-created_at")
                           .values_list("suite_id", flat=True).first())
    suite = by_id.get(chosen["suite"]) or (suites[0] if suites else None)
    chosen["suite"] = suite.pk if suite else None
    if suite is None:
        return {"leaderboard": None, "lb_form": form, "lb_settings": chosen}
    baseline = next((r for r in runs if r.pk == chosen["baseline"]), None)
    board = selectors.leaderboard(team, runs, suite, pick=chosen["pick"], baseline_run=baseline)
    for row in board["rows"]:  # templates cannot index a dict by a variable: cells in column order
        row["cells"] = [(row["values"].get(b), (row["delta"] or {}).get(b)) for b in board["benchmarks"]]
    board["run_rows"] = [r for r in board["rows"] if r["kind"] == "run"]
    board["fixed_rows"] = [r for r in board["rows"] if r["kind"] != "run"]
    if not params:
        form = LeaderboardForm({f"lb_{k}": v for k, v in chosen.items() if v is not None}, suites=suites, runs=runs)
    return {"leaderboard": board, "lb_form": form, "lb_settings": chosen, "lb_suite": suite, "lb_baseline": baseline}
