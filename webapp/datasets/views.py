"""Dataset pages: list, upload, detail (validation report, live status), new version, archive, delete."""
from __future__ import annotations

import functools

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from webapp.accounts.scoping import can_write, get_scoped, in_team, require_writer
from webapp.resources.services import can_manage
from webapp.resources.views import team_write
from webapp.rewards.models import RewardConfig

from . import services, teachers
from .api import eta_seconds
from .forms import NewVersionForm, TeacherGenerateForm, TeacherImportForm, UploadForm, ValidateForm, preset_fields
from .models import Dataset, TeacherJob
from .uploads import SizeLimitUploadHandler, human_bytes, too_large_message


def _with_size_limit(view):
    """Install the size-limit handler before CSRF checking reads the body (Django docs' pattern)."""
    protected = csrf_protect(view)

    @csrf_exempt
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        request.upload_handlers.insert(0, SizeLimitUploadHandler(request))
        return protected(request, *args, **kwargs)

    return wrapper


def _get(request: HttpRequest, pk: int) -> Dataset:
    return get_scoped(request.user, Dataset.objects.select_related("team", "previous", "created_by"), pk=pk)


@login_required
def dataset_list(request: HttpRequest) -> HttpResponse:
    qs = in_team(request.user, Dataset.objects.select_related("created_by"), request.team)
    show_archived = request.GET.get("archived") == "1"
    if not show_archived:
        qs = qs.filter(archived=False)
    return render(request, "datasets/list.html", {"datasets": qs[:500], "show_archived": show_archived})


@login_required  # outermost, so an anonymous request is redirected before its body is read
@_with_size_limit
def upload(request: HttpRequest) -> HttpResponse:
    if request.team is None:
        raise Http404("You are not a member of any team.")
    require_writer(request.user, request.team)
    duplicate = None
    if request.method == "POST":
        form = UploadForm(request.POST, request.FILES)
        if request.upload_too_large:
            form.add_error(None, too_large_message(request.upload_too_large))
        elif form.is_valid():
            d = form.cleaned_data
            try:
                dataset = services.create_dataset_from_upload(
                    request.team, request.user, d["file"], name=d["name"], filename=d["file"].name,
                    mapping=d["mapping"], eval_split=d["eval_split"], eval_fraction=d.get("eval_fraction"),
                    eval_seed=d["eval_seed"], eval_fileobj=d.get("eval_file"),
                    eval_filename=d["eval_file"].name if d.get("eval_file") else "", tokenizer=d["tokenizer"],
                    prompt_format=d["prompt_format"],
                    allow_duplicate=d["allow_duplicate"],
                )
            except services.DuplicateDatasetError as e:
                duplicate = e.existing
                form.add_error(None, str(e))
            except services.UploadError as e:
                form.add_error(None, str(e))
            else:
                messages.success(request, f"Uploaded {dataset}; validation is running.")
                return redirect("datasets:detail", pk=dataset.pk)
    else:
        form = UploadForm(initial={"eval_split": Dataset.EvalSplit.NONE})
    return render(request, "datasets/upload.html", {
        "form": form, "duplicate": duplicate, "presets": preset_fields(),
        "max_bytes": human_bytes(settings.UPLOAD_MAX_BYTES), "max_bytes_int": settings.UPLOAD_MAX_BYTES,
    })


@login_required
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    from webapp.evaluations.models import prompt_format_label

    dataset = _get(request, pk)
    generated_with = (dataset.lineage or {}).get("prompt_format")
    return render(request, "datasets/detail.html", {
        "dataset": dataset, "report": dataset.report or {}, "runs": services.used_by(dataset),
        "prompt": services.prompt_preview(dataset),
        "versions": services.versions(dataset), "can_write": can_write(request.user, dataset.team),
        "can_manage": can_manage(request.user, dataset),
        "validate_form": ValidateForm(initial={"tokenizer": dataset.tokenizer}),
        "busy": dataset.status in (Dataset.Status.UPLOADED, Dataset.Status.VALIDATING),
        "size": human_bytes(dataset.size_bytes),
        "eval_size": human_bytes(dataset.eval_size_bytes) if dataset.eval_file_path else "",
        "reward_configs": in_team(request.user, RewardConfig.objects.filter(archived=False), dataset.team),
        "teacher_form": _teacher_form(request, dataset), "import_form": TeacherImportForm(),
        "teacher_jobs": [(j, eta_seconds(j)) for j in teachers.jobs_of(dataset)[:20]],
        "teacher_prompt": prompt_format_label(generated_with) if generated_with else "",
    })


def _teacher_form(request: HttpRequest, dataset: Dataset, data=None) -> TeacherGenerateForm:
    from webapp.runs.modelpaths import model_choices
    from webapp.runs.models import Artifact, Run

    runs = Run.objects.filter(team=dataset.team, status=Run.Status.SUCCEEDED,
                              artifacts__kind=Artifact.Kind.FINAL_MODEL).distinct().order_by("-created_at")[:50]
    rewards = RewardConfig.objects.filter(team=dataset.team, archived=False)
    return TeacherGenerateForm(data, model_choices=model_choices(), run_choices=[(r.pk, f"#{r.pk} {r.name}") for r in runs],
                               reward_choices=[(r.pk, str(r)) for r in rewards])


@team_write(Dataset)
def teachers_generate(request: HttpRequest, dataset: Dataset) -> HttpResponse:
    """Queue a teacher-answer job (the form on the dataset page)."""
    from webapp.runs.models import Run

    form = _teacher_form(request, dataset, request.POST)
    if not form.is_valid():
        messages.error(request, "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
        return redirect("datasets:detail", pk=dataset.pk)
    d = dict(form.cleaned_data)
    run = Run.objects.filter(pk=d.pop("run"), team=dataset.team).first() if d.get("run") else None
    d.pop("run", None)
    reward = RewardConfig.objects.filter(pk=d.pop("reward_config"), team=dataset.team).first() if d.get("reward_config") else None
    d.pop("reward_config", None)
    model = d.pop("model") or None
    try:
        job = teachers.submit_generation(dataset.team, request.user, dataset, model=None if run else model, run=run,
                                         options=d, reward_config=reward)
    except teachers.TeacherError as e:
        messages.error(request, f"{e.field}: {e}")
    else:
        messages.success(request, f"Teacher job #{job.pk} queued: {job.total} prompts.")
    return redirect("datasets:detail", pk=dataset.pk)


@team_write(Dataset)
@_with_size_limit
def teachers_import(request: HttpRequest, dataset: Dataset) -> HttpResponse:
    """Join an uploaded file of teacher answers onto this version (a new version)."""
    form = TeacherImportForm(request.POST, request.FILES)
    if request.upload_too_large or not form.is_valid():
        messages.error(request, too_large_message(request.upload_too_large) if request.upload_too_large
                       else "Choose a JSONL or Parquet file of teacher answers.")
        return redirect("datasets:detail", pk=dataset.pk)
    f = form.cleaned_data["file"]
    try:
        new, rep = teachers.import_answers(dataset, request.user, f, f.name)
    except (teachers.TeacherError, services.UploadError) as e:
        messages.error(request, str(e))
        return redirect("datasets:detail", pk=dataset.pk)
    messages.success(request, f"Created {new}: {rep['answers']} answers for {rep['matched_rows']} rows; "
                              f"{rep['unmatched']} unmatched and {rep['duplicates']} duplicate keys.")
    return redirect("datasets:detail", pk=new.pk)


@login_required
def teacher_job_action(request: HttpRequest, pk: int, job_id: int, action: str) -> HttpResponse:
    """Cancel or resume a teacher job (POST)."""
    dataset = _get(request, pk)
    require_writer(request.user, dataset.team)
    job = get_scoped(request.user, TeacherJob.objects.all(), pk=job_id)
    if request.method != "POST" or action not in ("cancel", "resume"):
        raise Http404
    try:
        (teachers.request_cancel if action == "cancel" else teachers.resume)(job)
    except teachers.TransitionError as e:
        messages.error(request, str(e))
    return redirect("datasets:detail", pk=dataset.pk)


@login_required
def status(request: HttpRequest, pk: int) -> JsonResponse:
    """Polled by the detail page while validation runs."""
    dataset = _get(request, pk)
    return JsonResponse({"status": dataset.status, "label": dataset.get_status_display(), "started_at": (dataset.report or {}).get("started_at")})


@login_required
@_with_size_limit
def new_version(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _get(request, pk)
    require_writer(request.user, dataset.team)
    if request.method == "POST":
        form = NewVersionForm(request.POST, request.FILES)
        if request.upload_too_large:
            form.add_error(None, too_large_message(request.upload_too_large))
        elif form.is_valid():
            d = form.cleaned_data
            try:
                new = services.new_dataset_version(
                    dataset, request.user, fileobj=d.get("file"), filename=d["file"].name if d.get("file") else "",
                    mapping=d["mapping"], eval_split=d["eval_split"], eval_fraction=d.get("eval_fraction"),
                    eval_seed=d["eval_seed"], eval_fileobj=d.get("eval_file"),
                    eval_filename=d["eval_file"].name if d.get("eval_file") else "", tokenizer=d["tokenizer"],
                    prompt_format=d["prompt_format"],
                )
            except services.UploadError as e:
                form.add_error(None, str(e))
            else:
                messages.success(request, f"Created {new} (from v{dataset.version}); validation is running.")
                return redirect("datasets:detail", pk=new.pk)
    else:
        form = NewVersionForm(initial=NewVersionForm.initial_from(dataset))
    return render(request, "datasets/new_version.html", {
        "form": form, "dataset": dataset, "presets": preset_fields(),
        "max_bytes": human_bytes(settings.UPLOAD_MAX_BYTES), "max_bytes_int": settings.UPLOAD_MAX_BYTES,
    })


@team_write(Dataset)
def validate(request: HttpRequest, dataset: Dataset) -> HttpResponse:
    """Run validation again (e.g. with another tokenizer for the length report)."""
    form = ValidateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Unknown tokenizer.")
    else:
        try:
            services.start_validation(dataset, tokenizer=form.cleaned_data["tokenizer"])
            messages.info(request, "Validation queued.")
        except services.UploadError as e:
            messages.error(request, str(e))
    return redirect("datasets:detail", pk=dataset.pk)


@team_write(Dataset, manage=True)
def archive(request: HttpRequest, dataset: Dataset) -> HttpResponse:
    archived = request.POST.get("archived", "1") == "1"
    services.archive(dataset, request.user, archived)
    messages.info(request, f"{dataset} {'archived' if archived else 'restored'}.")
    return redirect("datasets:detail", pk=dataset.pk)


@team_write(Dataset, manage=True)
def delete(request: HttpRequest, dataset: Dataset) -> HttpResponse:
    try:
        services.delete(dataset, request.user)
    except services.InUseError as e:
        messages.error(request, str(e))
        return redirect("datasets:detail", pk=dataset.pk)
    messages.info(request, f"Deleted {dataset}.")
    return redirect(reverse("datasets:list"))
