"""REST API of evaluations: /api/eval-suites/, /api/evaluations/ (cancel, resume, leaderboard),
/api/reference-results/ (add_paper_table). Registered in webapp/api/urls.py.

Team objects come through webapp.accounts.scoping (another team's suite, run or evaluation: 404);
writes call webapp.evaluations.services, whose EvalError(field) answers 400 {field: [why]}.
"""
from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from gft_core.benchmarks import MAX_K, MAX_NEW_TOKENS, MAX_SEED
from gft_core.config import MAX_PROMPT_TEXT
from webapp.accounts.scoping import scoped
from webapp.api.parsers import LimitedJSONField
from webapp.api.views import ScopedMixin, VersionedResourceMixin, _int, _team_for_write, _writer
from webapp.runs.models import Run

from . import benchmarks, references, selectors, services
from .models import EvalResult, EvalSuite, Evaluation, ReferenceResult

NAME_MAX = 120
MAX_RUNS_PER_LEADERBOARD = 100


# ---------------------------------------------------------------------------- serializers
class PromptFormatSerializer(serializers.Serializer):
    """The prompt format (gft_core PromptFormat); left out or null = the model's own: a run's training
    settings for its checkpoints, else the defaults (chat template on, no system prompt or suffix)."""

    use_chat_template = serializers.BooleanField(required=False, allow_null=True,
                                                 help_text="The model's chat template, when it has one")
    system_prompt = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False,
                                          max_length=MAX_PROMPT_TEXT)
    instruction_suffix = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                               trim_whitespace=False, max_length=MAX_PROMPT_TEXT)


class EvalSettingsSerializer(PromptFormatSerializer):
    """gft_core EvalSettings; left out = the default. Checked again by gft_core (400 settings.<field>)."""

    k = serializers.IntegerField(min_value=1, max_value=MAX_K, required=False, help_text="Samples per problem")
    temperature = serializers.FloatField(min_value=0.0, max_value=10.0, required=False, help_text="0 = greedy")
    top_p = serializers.FloatField(min_value=1e-6, max_value=1.0, required=False)
    max_new_tokens = serializers.IntegerField(min_value=1, max_value=MAX_NEW_TOKENS, required=False)
    max_prompt_len = serializers.IntegerField(min_value=1, max_value=MAX_NEW_TOKENS, required=False)
    reward = LimitedJSONField(required=False, help_text='A reward spec {"name": ..., "params": {...}}; default math_verify')
    seed = serializers.IntegerField(min_value=0, max_value=MAX_SEED, required=False)
    batch_size = serializers.IntegerField(min_value=1, max_value=4096, required=False,
                                          help_text="Prompts per generation batch (each with k samples)")


class EvalSuiteSerializer(serializers.ModelSerializer):
    benchmark_names = serializers.SerializerMethodField()

    class Meta:
        model = EvalSuite
        fields = ["id", "team", "name", "version", "previous", "benchmarks", "benchmark_names", "settings",
                  "description", "archived", "created_at"]
        read_only_fields = fields

    def get_benchmark_names(self, suite: EvalSuite) -> list[str]:
        return selectors.benchmark_names(suite)


class EvalSuiteCreateSerializer(serializers.Serializer):
    team = serializers.IntegerField(required=False, help_text="Team id; default: your only or first team")
    previous = serializers.IntegerField(required=False, help_text="A suite id: make its next version (name and team "
                                        "taken from it; what is left out is taken over)")
    name = serializers.CharField(max_length=NAME_MAX, required=False)
    benchmarks = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=1,
                                       max_length=services.MAX_BENCHMARKS, required=False,
                                       help_text="Benchmark dataset version ids (purpose evaluation) of the team")
    settings = EvalSettingsSerializer(required=False)
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True)


class EvalResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = EvalResult
        fields = ["benchmark", "benchmark_name", "metrics"]
        read_only_fields = fields


class EvaluationSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    progress = serializers.FloatField(read_only=True, help_text="done / total, 0..1")
    results = EvalResultSerializer(many=True, read_only=True)
    suite_name = serializers.CharField(source="suite.name", read_only=True)
    prompt_format_label = serializers.CharField(read_only=True, help_text="prompt_format in one line")

    class Meta:
        model = Evaluation
        fields = ["id", "team", "run", "model_path", "checkpoint_step", "checkpoint_path", "suite", "suite_name",
                  "status", "cancel_requested", "done", "total", "progress", "current_benchmark", "error", "attempt",
                  "worker", "created_by", "created_at", "queued_at", "started_at", "finished_at", "prompt_format",
                  "prompt_format_label", "results"]
        read_only_fields = fields


class EvaluationCreateSerializer(serializers.Serializer):
    suite = serializers.IntegerField(help_text="An eval suite version id of the team")
    run = serializers.IntegerField(required=False, help_text="A run id: evaluate one of its checkpoints")
    step = serializers.RegexField(r"^(latest|final|[0-9]{1,9})$", max_length=20, required=False, default="latest",
                                  help_text='"latest", "final" or a checkpoint step (0 = the base model)')
    model = serializers.CharField(max_length=500, required=False,
                                  help_text='Instead of a run: "tiny" or a model directory under MODEL_ROOTS (step 0)')
    prompt_format = PromptFormatSerializer(required=False, help_text="Overrides the suite's and the run's prompt format")


class ReferenceResultSerializer(serializers.ModelSerializer):
    team = serializers.IntegerField(source="team_id", required=False, help_text="Team id; default: your first team")
    value = serializers.FloatField(min_value=-1e9, max_value=1e9)

    class Meta:
        model = ReferenceResult
        fields = ["id", "team", "model", "method", "benchmark", "metric", "value", "source", "from_paper", "created_at"]
        read_only_fields = ["id", "from_paper", "created_at"]


class TeamChoiceSerializer(serializers.Serializer):
    team = serializers.IntegerField(required=False, help_text="Team id; default: your only or first team")


class AddBenchmarksSerializer(serializers.Serializer):
    team = serializers.IntegerField(required=False, help_text="Team id; default: your only or first team")
    presets = serializers.ListField(child=serializers.CharField(max_length=50), required=False, max_length=20,
                                    help_text="Preset names (math500, aime24, amc23, minerva_math, gsm8k_test); "
                                    "default: every preset whose file is there")


def _errors(exc: services.EvalError) -> ValidationError:
    field, _, sub = exc.field.partition(".")
    return ValidationError({field: {sub: [str(exc)]}} if sub else {field: [str(exc)]})


# ---------------------------------------------------------------------------- viewsets
class EvalSuiteViewSet(VersionedResourceMixin, ScopedMixin, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Eval suite versions of your teams: benchmarks + evaluation settings. POST creates version 1 of a
    new suite, or (with `previous`) the next version of one."""

    resource_services = services

    def get_serializer_class(self):
        return EvalSuiteCreateSerializer if self.action == "create" else EvalSuiteSerializer

    def get_queryset(self) -> QuerySet:
        qs = scoped(self.request.user, EvalSuite.objects.all())
        if self.action == "list" and self.request.query_params.get("name"):
            qs = qs.filter(name=self.request.query_params["name"])
        return qs.order_by("name", "-version")

    @extend_schema(parameters=[OpenApiParameter("name", str, description="only versions of this suite name")])
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(request=EvalSuiteCreateSerializer, responses={201: EvalSuiteSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        try:
            ser = EvalSuiteCreateSerializer(data=request.data)
            ser.is_valid(raise_exception=True)
        except RecursionError:
            raise ValidationError({"settings": ["The request body nests too deeply."]}) from None
        d = ser.validated_data
        try:
            if "previous" in d:
                prev = scoped(request.user, EvalSuite.objects.all()).filter(pk=d["previous"]).first()
                if prev is None:
                    raise NotFound("No such eval suite in your teams.")
                _writer(request, prev.team)
                suite = services.new_suite_version(prev, request.user, benchmarks=d.get("benchmarks"),
                                                   settings=d.get("settings"), description=d.get("description"))
            else:
                team = _team_for_write(request, d.get("team"))
                if "name" not in d:
                    raise ValidationError({"name": ["This field is required."]})
                if "benchmarks" not in d:
                    raise ValidationError({"benchmarks": ["This field is required."]})
                suite = services.create_suite(team, request.user, name=d["name"], benchmarks=d["benchmarks"],
                                              settings=d.get("settings"), description=d.get("description", ""))
        except services.EvalError as exc:
            raise _errors(exc) from None
        return Response(EvalSuiteSerializer(suite).data, status=status.HTTP_201_CREATED)


    @extend_schema(request=AddBenchmarksSerializer, responses={200: OpenApiResponse(
        description='{"benchmarks": [{"dataset", "name", "created", "status"}]}')})
    @action(detail=False, methods=["post"], url_path="add-benchmarks")
    def add_benchmarks(self, request: Request) -> Response:
        """Create the team's benchmark datasets from the presets (validated in the background)."""
        ser = AddBenchmarksSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        team = _team_for_write(request, ser.validated_data.get("team"))
        try:
            added = benchmarks.add_benchmarks(team, request.user, ser.validated_data.get("presets"))
        except benchmarks.BenchmarkError as exc:
            raise ValidationError({"presets": [str(exc)]}) from None
        return Response({"benchmarks": [{"dataset": d.pk, "name": d.name, "created": created, "status": d.status}
                                        for d, created in added]})


EVAL_FILTERS = [OpenApiParameter("run", int, description="a run id: its evaluations and its base model's"),
                OpenApiParameter("suite", int), OpenApiParameter("status", str)]


class EvaluationViewSet(ScopedMixin, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Evaluations of your teams: submit (a run checkpoint or a model x a suite), follow, cancel, resume."""

    def get_serializer_class(self):
        return EvaluationCreateSerializer if self.action == "create" else EvaluationSerializer

    def get_queryset(self) -> QuerySet:
        qs = scoped(self.request.user, Evaluation.objects.select_related("suite", "created_by")
                    .prefetch_related("results"))
        if self.action != "list":
            return qs
        p = self.request.query_params
        if p.get("run"):
            run = self._run(_int(p["run"], "run"))
            qs = qs.filter(pk__in=selectors.evaluations_of_run(run).values("pk"))
        if p.get("suite"):
            qs = qs.filter(suite_id=_int(p["suite"], "suite"))
        if p.get("status"):
            qs = qs.filter(status__in=p["status"].split(","))
        return qs.order_by("-created_at")

    def _run(self, run_id: int) -> Run:
        run = scoped(self.request.user, Run.objects.all()).filter(pk=run_id).first()
        if run is None:
            raise NotFound(f"No run {run_id} in your teams.")
        return run

    @extend_schema(parameters=EVAL_FILTERS, responses={200: EvaluationSerializer(many=True), 404: OpenApiResponse(
        description="the run is not in your teams")})
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(request=EvaluationCreateSerializer, responses={201: EvaluationSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        ser = EvaluationCreateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        suite = scoped(request.user, EvalSuite.objects.all()).filter(pk=d["suite"]).first()
        if suite is None:
            raise NotFound("No such eval suite in your teams.")
        run = self._run(d["run"]) if "run" in d else None
        _writer(request, suite.team)
        try:
            ev = services.submit_evaluation(suite.team, request.user, suite=suite, run=run, step=d["step"],
                                            model=d.get("model"), prompt_format=d.get("prompt_format"))
        except services.EvalError as exc:
            raise _errors(exc) from None
        return Response(EvaluationSerializer(ev).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: EvaluationSerializer, 409: OpenApiResponse(
        description="the evaluation has already ended")})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        """Cancel a queued evaluation, or stop a running one after its current batch."""
        ev = self.get_object()
        _writer(request, ev.team)
        try:
            ev = services.request_cancel(ev)
        except services.TransitionError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(EvaluationSerializer(ev).data)

    @extend_schema(request=None, responses={200: EvaluationSerializer, 409: OpenApiResponse(
        description="only a failed or cancelled evaluation can be resumed")})
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk=None) -> Response:
        """Queue a failed or cancelled evaluation again; benchmarks already scored are kept."""
        ev = self.get_object()
        _writer(request, ev.team)
        try:
            ev = services.resume_evaluation(ev)
        except services.TransitionError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(EvaluationSerializer(ev).data)

    @extend_schema(parameters=[
        OpenApiParameter("runs", str, required=True, description="comma-separated run ids"),
        OpenApiParameter("suite", int, required=True, description="an eval suite version id"),
        OpenApiParameter("pick", str, enum=["best", "final"], description="which checkpoint of each run (default best)"),
        OpenApiParameter("baseline", int, description="a run id: deltas are to its row"),
        OpenApiParameter("metric", str, description=f"{selectors.METRICS_HELP} (default avg_at_k)")],
        responses={200: OpenApiResponse(description="webapp.evaluations.selectors.leaderboard's answer")})
    @action(detail=False, methods=["get"])
    def leaderboard(self, request: Request) -> Response:
        """Runs x benchmarks of one suite (accuracy in %), with average, base model, reference rows, deltas."""
        p = request.query_params
        ids = [_int(x, "runs") for x in (p.get("runs") or "").split(",") if x.strip()]
        if not ids:
            raise ValidationError({"runs": ["Give at least one run id."]})
        if len(ids) > MAX_RUNS_PER_LEADERBOARD:
            raise ValidationError({"runs": [f"At most {MAX_RUNS_PER_LEADERBOARD} runs."]})
        if not p.get("suite"):
            raise ValidationError({"suite": ["This parameter is required."]})
        suite = scoped(request.user, EvalSuite.objects.all()).filter(pk=_int(p["suite"], "suite")).first()
        if suite is None:
            raise NotFound("No such eval suite in your teams.")
        runs = [self._run(i) for i in ids]
        baseline = self._run(_int(p["baseline"], "baseline")) if p.get("baseline") else None
        try:
            board = selectors.leaderboard(suite.team, runs, suite, pick=p.get("pick", "best"), baseline_run=baseline,
                                          metric=p.get("metric", "avg_at_k"))
        except selectors.SelectorError as exc:
            field = "pick" if "pick" in str(exc) else "metric"
            raise ValidationError({field: [str(exc)]}) from None
        return Response(board)


class ReferenceResultViewSet(ScopedMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin,
                             viewsets.ReadOnlyModelViewSet):
    """Reference results of your teams (numbers reported elsewhere, e.g. the GFT paper's Table 1)."""

    serializer_class = ReferenceResultSerializer

    def get_queryset(self) -> QuerySet:
        qs = scoped(self.request.user, ReferenceResult.objects.all())
        p = self.request.query_params
        for name in ("model", "method", "benchmark"):
            if self.action == "list" and p.get(name):
                qs = qs.filter(**{name: p[name]})
        return qs.order_by("model", "method", "benchmark", "id")

    @extend_schema(parameters=[OpenApiParameter("model", str), OpenApiParameter("method", str),
                               OpenApiParameter("benchmark", str)])
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)

    def create(self, request: Request, *args, **kwargs) -> Response:
        ser = ReferenceResultSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        d = dict(ser.validated_data)
        team = _team_for_write(request, d.pop("team_id", None))
        ref = references.add_reference(team, model=d["model"], method=d["method"], benchmark=d["benchmark"],
                                       value=d["value"], metric=d.get("metric", "accuracy"), source=d.get("source", ""))
        return Response(ReferenceResultSerializer(ref).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, *args, **kwargs) -> Response:
        ref = self.get_object()
        _writer(request, ref.team)
        ref.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=TeamChoiceSerializer, responses={200: OpenApiResponse(description='{"added": rows}')})
    @action(detail=False, methods=["post"])
    def add_paper_table(self, request: Request) -> Response:
        """Load the GFT paper's Table 1 (reported by the paper) as reference results of the team."""
        ser = TeamChoiceSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        team = _team_for_write(request, ser.validated_data.get("team"))
        return Response({"added": references.add_paper_table(team), "team": team.pk})
