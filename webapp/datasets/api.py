"""REST API of teacher answers (issue 18): on a dataset version, POST teacher-answers/ (generate;
GET lists its jobs) and POST teacher-import/ (multipart); /api/teacher-jobs/ (status, cancel, resume).

Team objects come through webapp.accounts.scoping (another team's dataset, run or job: 404);
writes call webapp.datasets.teachers, whose TeacherError(field) answers 400 {field: [why]}.
"""
from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from gft_core.teachers import MAX_K, MAX_NEW_TOKENS, MAX_RETRIES
from webapp.accounts.quotas import QuotaExceeded
from webapp.accounts.scoping import scoped
from webapp.api.parsers import UPLOAD_PARSERS
from webapp.rewards.models import RewardConfig
from webapp.runs.models import Run

from . import teachers
from .models import TeacherJob
from .uploads import UploadError


class TeacherJobSerializer(serializers.ModelSerializer):
    progress = serializers.FloatField(read_only=True, help_text="done / total, 0..1")
    eta_s = serializers.SerializerMethodField(help_text="Seconds left at the pace of this attempt (null: unknown)")

    class Meta:
        model = TeacherJob
        fields = ["id", "team", "dataset", "result", "run", "model_path", "model_label", "options", "status",
                  "cancel_requested", "done", "total", "progress", "eta_s", "error", "attempt", "worker",
                  "created_at", "queued_at", "started_at", "finished_at"]
        read_only_fields = fields

    def get_eta_s(self, job: TeacherJob) -> float | None:
        return eta_seconds(job)


def eta_seconds(job: TeacherJob) -> float | None:
    """Seconds left: the time per prompt since this attempt started (resumed prompts count as done)."""
    if job.status != TeacherJob.Status.RUNNING or not job.started_at or not job.done or job.done >= job.total:
        return None
    elapsed = (timezone.now() - job.started_at).total_seconds()
    return round(elapsed / job.done * (job.total - job.done), 1)


class TeacherGenerateSerializer(serializers.Serializer):
    model = serializers.CharField(max_length=500, required=False,
                                  help_text='The teacher: "tiny" or a Hugging Face directory under MODEL_ROOTS')
    run = serializers.IntegerField(required=False, min_value=1, help_text="Or a finished run of the team (its final model)")
    k = serializers.IntegerField(min_value=1, max_value=MAX_K, required=False, help_text="Answers per prompt")
    temperature = serializers.FloatField(min_value=0.0, max_value=10.0, required=False)
    top_p = serializers.FloatField(min_value=1e-6, max_value=1.0, required=False)
    max_new_tokens = serializers.IntegerField(min_value=1, max_value=MAX_NEW_TOKENS, required=False)
    use_chat_template = serializers.BooleanField(required=False)
    reward_config = serializers.IntegerField(required=False, min_value=1,
                                             help_text="A reward config of the team: scores the answers (default math_verify)")
    filter = serializers.BooleanField(required=False, help_text="Keep only answers the reward scores >= threshold")
    threshold = serializers.FloatField(min_value=-1e6, max_value=1e6, required=False)
    max_retries = serializers.IntegerField(min_value=0, max_value=MAX_RETRIES, required=False,
                                           help_text="Extra rounds for prompts short of k kept answers (filter)")
    seed = serializers.IntegerField(min_value=0, max_value=2**32 - 1, required=False)
    batch_size = serializers.IntegerField(min_value=1, max_value=4096, required=False)


class TeacherImportSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="JSONL / Parquet: a key column (row or prompt) and answers (list) or answer")


class ImportResultSerializer(serializers.Serializer):
    dataset = serializers.IntegerField(help_text="The new dataset version")
    report = serializers.JSONField(help_text="matched_rows, answers, unmatched, duplicates (counts and examples)")


def _errors(exc: teachers.TeacherError) -> ValidationError:
    return ValidationError({exc.field: [str(exc)]})


class DatasetTeacherActions:
    """Actions of DatasetViewSet (webapp/api/views.py): generation and import on one version."""

    @extend_schema(request=TeacherGenerateSerializer, responses={
        201: TeacherJobSerializer, 200: TeacherJobSerializer(many=True)})
    @action(detail=True, methods=["get", "post"], url_path="teacher-answers")
    def teacher_answers(self, request: Request, pk=None) -> Response:
        from webapp.api.views import _writer

        dataset = self.get_object()
        if request.method == "GET":
            jobs = TeacherJob.objects.filter(dataset=dataset).order_by("-created_at")[:100]
            return Response(TeacherJobSerializer(jobs, many=True).data)
        _writer(request, dataset.team)
        ser = TeacherGenerateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        d = dict(ser.validated_data)
        run = reward = None
        if "run" in d:
            run = scoped(request.user, Run.objects.all()).filter(pk=d.pop("run"), team=dataset.team).first()
            if run is None:
                raise NotFound("No such run in the dataset's team.")
        if "reward_config" in d:
            reward = RewardConfig.objects.filter(pk=d.pop("reward_config"), team=dataset.team).first()
            if reward is None:
                raise NotFound("No such reward config in the dataset's team.")
        model = d.pop("model", None)
        try:
            job = teachers.submit_generation(dataset.team, request.user, dataset, model=model, run=run, options=d,
                                             reward_config=reward)
        except teachers.TeacherError as exc:
            raise _errors(exc) from None
        return Response(TeacherJobSerializer(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(request={"multipart/form-data": TeacherImportSerializer},
                   responses={201: ImportResultSerializer,
                              413: OpenApiResponse(description="the file is larger than UPLOAD_MAX_BYTES")})
    @action(detail=True, methods=["post"], url_path="teacher-import", parser_classes=UPLOAD_PARSERS)
    def teacher_import(self, request: Request, pk=None) -> Response:
        from webapp.api.views import _writer
        from webapp.datasets.uploads import too_large_message

        dataset = self.get_object()
        _writer(request, dataset.team)
        data = request.data
        if request._request.upload_too_large:
            return Response({"file": [too_large_message(request._request.upload_too_large)]},
                            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        ser = TeacherImportSerializer(data=data)
        ser.is_valid(raise_exception=True)
        f = ser.validated_data["file"]
        try:
            new, report = teachers.import_answers(dataset, request.user, f, f.name)
        except teachers.TeacherError as exc:
            raise _errors(exc) from None
        except UploadError as exc:
            if isinstance(exc.__cause__, QuotaExceeded):
                return Response(exc.__cause__.as_dict(), status=status.HTTP_429_TOO_MANY_REQUESTS)
            raise ValidationError({"file": [str(exc)]}) from None
        return Response({"dataset": new.pk, "report": report}, status=status.HTTP_201_CREATED)


class TeacherJobViewSet(viewsets.ReadOnlyModelViewSet):
    """Teacher-answer jobs of your teams (status, progress, ETA); cancel and resume."""

    serializer_class = TeacherJobSerializer

    def http_method_not_allowed(self, request, *args, **kwargs):
        # As webapp.api.views.ScopedMixin (which imports this module): 404 first for a foreign job.
        if "pk" in kwargs:
            self.get_object()
        return super().http_method_not_allowed(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet:
        return scoped(self.request.user, TeacherJob.objects.all()).order_by("-created_at")

    def _change(self, request: Request, change) -> Response:
        from webapp.api.views import _writer

        job = self.get_object()
        _writer(request, job.team)
        try:
            job = change(job)
        except teachers.TransitionError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(TeacherJobSerializer(job).data)

    @extend_schema(request=None, responses={200: TeacherJobSerializer, 409: OpenApiResponse(description="not active")})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        return self._change(request, teachers.request_cancel)

    @extend_schema(request=None, responses={200: TeacherJobSerializer, 409: OpenApiResponse(description="not failed or cancelled")})
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk=None) -> Response:
        return self._change(request, teachers.resume)

