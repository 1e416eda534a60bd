"""Launch (with clone), cancel and resume. Thin: the form validates,
webapp.runs.launch and services act, templates show."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect, render

from webapp.accounts.quotas import QuotaExceeded
from webapp.accounts.scoping import get_scoped, require_writer

from gft_core.config import ConfigError, check_field
from webapp.datasets.models import Dataset
from webapp.datasets.services import prompt_preview

from ..effective_group import DEFAULT_PERCENTILE, PERCENTILES, PreviewError, dataset_group, preview_inputs
from ..launch import LaunchError, clone_initial, resume_run, submit_run
from .. import services
from ..defaults import DEFAULT_METHOD, METHOD_FITTED, defaults, defaults_for, is_small
from ..modelpaths import TINY_MODEL, ModelPathError, model_info
from ..forms import LaunchForm
from ..listing import parse_id
from ..models import Run


@login_required
def launch(request: HttpRequest) -> HttpResponse:
    """GET: the form (pre-filled from ?clone=<id>); POST: validate and queue the run."""
    team = request.team
    if team is None:
        raise Http404("You are not a member of any team.")
    require_writer(request.user, team)
    source = None
    clone_id = request.GET.get("clone") or request.POST.get("clone")
    if clone_id:
        source_id = parse_id(str(clone_id))
        if source_id is None:
            raise Http404(f"{clone_id!r} is not a run id.")
        source = get_scoped(request.user, Run.objects.select_related("dataset", "reward_config"), pk=source_id)
        team = source.team
        require_writer(request.user, team)
    initial = clone_initial(source) if source else defaults()
    for key in ("init_from_run", "init_from_step"):  # "Start a run from this one" on a run page
        if parse_id(request.GET.get(key, "")) is not None:
            initial[key] = parse_id(request.GET[key])
    if request.method == "POST":
        form = LaunchForm(request.POST, team=team, initial=initial)
        if form.is_valid():
            try:
                run = submit_run(team, request.user, form.plan, cloned_from=source)
            except LaunchError as e:  # e.g. the dataset was archived meanwhile
                for field, errs in e.errors.items():
                    for message in errs:
                        form.add_error(field if field in form.fields else None, message)
            except QuotaExceeded as e:
                form.add_error(None, str(e))
            else:
                messages.success(request, f"Run #{run.pk} is queued.", extra_tags=f"run-queued-{run.pk}")
                return redirect(run)
    else:
        form = LaunchForm(team=team, initial=initial)
    # What the clone starts from, per field, so the page can show what was changed.
    pristine = LaunchForm(team=team, initial=initial) if source else None
    source_values = {name: pristine[name].value() for name in pristine.fields} if pristine else {}
    return render(request, "runs/launch.html", {
        "form": form, "source": source, "source_values": source_values,
        "percentiles": PERCENTILES, "default_percentile": DEFAULT_PERCENTILE,
    })


@login_required
def launch_defaults(request: HttpRequest) -> JsonResponse:
    """GET ?model=<value>&method=<name>: the launch defaults scaled for that model and fitted to
    that method (the form fills the fields the user has not edited), or 400 naming the parameter
    that is refused and why."""
    if request.team is None:
        raise Http404("You are not a member of any team.")
    method = request.GET.get("method") or DEFAULT_METHOD
    try:
        values, params = defaults_for(request.GET.get("model", ""), method)
    except ModelPathError as e:
        return JsonResponse({"error": str(e), "field": "model"}, status=400)
    except ValueError as e:  # an unknown method
        return JsonResponse({"error": str(e), "field": "method"}, status=400)
    values.pop("model", None)  # the field keeps what the user typed
    try:
        info = model_info_for(request.GET)
    except ModelPathError as e:
        return JsonResponse({"error": str(e), "field": "model"}, status=400)
    except ConfigError as e:
        return JsonResponse({"error": f"{e.field}: {e.message}", "field": e.field}, status=400)
    return JsonResponse({"defaults": values, "params": params, "small": is_small(params),
                         "method_fitted": list(METHOD_FITTED), **info})


def model_info_for(query) -> dict:
    """modelpaths.model_info for ?model=&lora_rank=&lora_target_modules= (blank LoRA inputs: full
    fine-tuning, "auto") and, given the other settings the memory plan reads (PLAN_FIELDS, blank =
    gft_core's default) with num_gpus and queue, the plan beside the workers' reports; ConfigError
    naming an input that is not a valid value."""
    values = {name: _query_value(name, query.get(name)) for name in PLAN_FIELDS if query.get(name) not in (None, "")}
    num_gpus = _query_int("num_gpus", query.get("num_gpus") or "1")
    if not 1 <= num_gpus <= 64:
        raise ConfigError("num_gpus", num_gpus, "must be an integer in [1, 64]")
    return model_info((query.get("model") or TINY_MODEL).strip() or TINY_MODEL, settings=values,
                      num_gpus=num_gpus, queue=query.get("queue") or "")


# The launch settings the form's trainable count and memory plan read (GET /runs/new/defaults/).
PLAN_FIELDS = ("method", "lora_rank", "lora_target_modules", "n_expert", "n_teacher", "n_self", "micro_batch_size",
               "max_prompt_len", "max_response_len", "mixed_precision", "gradient_checkpointing", "kl_coef")


def _query_int(name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(name, text, "must be an integer") from None


def _query_value(name: str, text: str):
    """A query-string value as its setting's type, checked by gft_core's check_field."""
    from gft_core.config import FIELDS

    spec = FIELDS[name]
    if spec.type is bool:
        value = text.lower() in ("1", "true", "on")
    elif spec.type is int and spec.choices is None:
        value = _query_int(name, text)
    elif spec.type is float and spec.choices is None:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(name, text, "must be a number") from None
    else:
        value = text
    return check_field(name, value)


@login_required
def launch_group(request: HttpRequest) -> JsonResponse:
    """GET ?dataset=<id>&method=&n_expert=&n_teacher=&n_self=&max_response_len=&percentile=: the
    effective group per prompt on that dataset version (webapp.runs.effective_group), or 400
    naming the parameter that is refused and why (404: not a dataset of the user's teams)."""
    if request.team is None:
        raise Http404("You are not a member of any team.")
    try:
        inputs = preview_inputs(request.GET)
    except PreviewError as e:
        return JsonResponse({"error": str(e), "field": e.field}, status=400)
    dataset_id = parse_id(request.GET.get("dataset") or "")
    if dataset_id is None:
        return JsonResponse({"error": "dataset: choose a dataset version (an id).", "field": "dataset"}, status=400)
    dataset = get_scoped(request.user, Dataset.objects.all(), pk=dataset_id)
    return JsonResponse({**dataset_group(dataset, inputs), "prompt": prompt_preview(dataset)})


def _post_only(request: HttpRequest, pk: int) -> Run:
    """The run of the user's team (404 for anyone else, whatever the method), POST only, writers only."""
    run = get_scoped(request.user, Run.objects.all(), pk=pk)
    if request.method != "POST":
        raise _NotAllowed()
    require_writer(request.user, run.team)
    return run


class _NotAllowed(Exception):
    pass


def _action(fn):
    def view(request: HttpRequest, pk: int) -> HttpResponse:
        try:
            run = _post_only(request, pk)
        except _NotAllowed:
            return HttpResponseNotAllowed(["POST"])
        try:
            fn(request, run)
        except (services.TransitionError, QuotaExceeded) as e:
            messages.error(request, str(e))
        return redirect(run)

    view.__name__ = fn.__name__
    view.__doc__ = fn.__doc__
    return login_required(view)


@_action
def cancel(request: HttpRequest, run: Run) -> None:
    """Cancel a queued run now, or ask a running one to stop at its next step (checkpoint kept)."""
    services.request_cancel(run, by=request.user.get_username())
    messages.success(request, f"Run #{run.pk}: cancel requested.")


@_action
def resume(request: HttpRequest, run: Run) -> None:
    """Queue a failed or cancelled run again; it continues from its latest checkpoint."""
    resume_run(run, request.user)
    messages.success(request, f"Run #{run.pk} is queued again; it resumes from its latest checkpoint.",
                     extra_tags=f"run-queued-{run.pk}")
