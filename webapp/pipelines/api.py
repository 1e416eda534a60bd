"""REST API of pipelines: /api/pipelines/ (create, list, retrieve, cancel). Registered in
webapp/api/urls.py. Each stage takes the launch inputs of POST /api/runs/ (checked by the same
serializer, then by webapp.runs.launch through webapp.pipelines.services); errors name the stage:
400 {"stages.1.tau": [...]}; a stage 1 starting from another team's run: 404."""
from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.accounts.quotas import QuotaExceeded
from webapp.api.serializers import RunCreateSerializer, RunSerializer
from webapp.api.views import ScopedMixin, _team_for_write, _writer
from webapp.runs import launchfields
from webapp.runs.launch import LaunchError, SourceRunNotFound

from . import selectors, services
from .models import Pipeline, PipelineStage

NOT_STAGE_INPUTS = ("team", "clone_of")  # launch inputs that belong to the pipeline, not a stage


class StageSerializer(serializers.ModelSerializer):
    run = RunSerializer(read_only=True)

    class Meta:
        model = PipelineStage
        fields = ["index", "method", "inputs", "run"]
        read_only_fields = fields


class PipelineSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    stages = StageSerializer(many=True, read_only=True)

    class Meta:
        model = Pipeline
        fields = ["id", "team", "name", "status", "message", "created_by", "created_at", "finished_at", "stages"]
        read_only_fields = fields


class PipelineCreateSerializer(serializers.Serializer):
    """A pipeline: stages in order, each the launch inputs of POST /api/runs/ (method and settings;
    fields left out take the defaults). Stage 1 may give `model` or `init_from_run`
    (+ `init_from_step`); each later stage starts from the previous stage's final model."""

    team = serializers.IntegerField(required=False, help_text="Team id; default: your only or first team")
    name = serializers.CharField(required=False, allow_blank=True, max_length=launchfields.NAME_MAX_LENGTH)
    stages = serializers.ListField(child=serializers.DictField(), min_length=1, max_length=services.MAX_STAGES,
                                   help_text="Launch inputs per stage, as POST /api/runs/ takes them")


def check_stages(stages: list[dict]) -> list[dict]:
    """Each stage through the launch serializer; unknown keys refused. 400 {"stages.<i>.<field>": [...]}."""
    errors: dict[str, list] = {}
    checked = []
    for i, stage in enumerate(stages):
        ser = RunCreateSerializer(data=stage)
        known = set(ser.fields) - set(NOT_STAGE_INPUTS)
        for key in stage:
            if key not in known:
                errors[f"stages.{i}.{key}"] = [f"Not a launch input of a stage (known: method, model, dataset, "
                                               "reward_config, the launch settings, config, ...)."]
        if not ser.is_valid():
            for field, messages in ser.errors.items():
                errors[f"stages.{i}.{field}"] = messages
        else:
            checked.append(dict(ser.validated_data))
    if errors:
        raise ValidationError(errors)
    return checked


class PipelineViewSet(ScopedMixin, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Pipelines of your teams: stages launched one after the other, each from the previous one's model."""

    def get_serializer_class(self):
        return PipelineCreateSerializer if self.action == "create" else PipelineSerializer

    def get_queryset(self) -> QuerySet:
        return selectors.team_pipelines(self.request.user).prefetch_related("stages__run__created_by").order_by(
            "-created_at")

    @extend_schema(request=PipelineCreateSerializer, responses={201: PipelineSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        ser = PipelineCreateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        team = _team_for_write(request, ser.validated_data.get("team"))
        stages = check_stages(ser.validated_data["stages"])
        try:
            pipeline = services.create_pipeline(team, request.user, name=ser.validated_data.get("name", ""),
                                                stages=stages)
        except SourceRunNotFound as e:
            raise NotFound(next(iter(e.errors.values()))[0]) from None
        except LaunchError as e:
            raise ValidationError(e.errors) from None
        except QuotaExceeded as e:
            return Response(e.as_dict(), status=status.HTTP_429_TOO_MANY_REQUESTS)
        return Response(PipelineSerializer(pipeline).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: PipelineSerializer, 409: OpenApiResponse(
        description="the pipeline has already finished")})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        """Stop the pipeline: no later stage starts; the running stage's run is cancelled."""
        pipeline = self.get_object()
        _writer(request, pipeline.team)
        try:
            pipeline = services.cancel_pipeline(pipeline, request.user)
        except services.PipelineError as e:
            return Response({"detail": str(e)}, status=status.HTTP_409_CONFLICT)
        return Response(PipelineSerializer(pipeline).data)
