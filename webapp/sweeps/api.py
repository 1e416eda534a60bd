"""REST API of sweeps: /api/sweeps/ (create, list, retrieve with trials, cancel, best).
Registered in webapp/api/urls.py. Writes go through webapp.sweeps.services; SweepError answers
400 {field: [why]} (nothing created), QuotaExceeded 429, cancel of a finished sweep 409."""
from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.accounts.quotas import QuotaExceeded
from webapp.accounts.scoping import scoped
from webapp.api.parsers import LimitedJSONField
from webapp.api.serializers import RunCreateSerializer
from webapp.api.views import ScopedMixin, _team_for_write, _writer

from . import selectors, services, spaces
from .models import Sweep, SweepTrial


class SweepTrialSerializer(serializers.ModelSerializer):
    run_name = serializers.CharField(source="run.name", read_only=True)
    run_status = serializers.CharField(source="run.status", read_only=True)
    step = serializers.IntegerField(source="run.step", read_only=True)

    class Meta:
        model = SweepTrial
        fields = ["number", "run", "run_name", "run_status", "step", "params", "state", "value", "pruned_step"]
        read_only_fields = fields


class SweepSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    progress = serializers.SerializerMethodField()

    class Meta:
        model = Sweep
        fields = ["id", "team", "name", "strategy", "status", "base", "parameters", "max_runs", "parallel", "target",
                  "direction", "target_mode", "pruner", "seed", "asked", "message", "progress", "created_by",
                  "created_at", "finished_at"]
        read_only_fields = fields

    def get_progress(self, sweep: Sweep) -> dict:
        return selectors.progress(sweep)


class SweepDetailSerializer(SweepSerializer):
    trials = serializers.SerializerMethodField()
    best = serializers.SerializerMethodField(help_text="The complete trial with the best target value")

    class Meta(SweepSerializer.Meta):
        fields = SweepSerializer.Meta.fields + ["trials", "best"]
        read_only_fields = fields

    def get_trials(self, sweep: Sweep) -> list[dict]:
        return SweepTrialSerializer(selectors.trials(sweep), many=True).data

    def get_best(self, sweep: Sweep) -> dict | None:
        best = selectors.best_trial(sweep)
        return SweepTrialSerializer(best).data if best else None


class SweepCreateSerializer(serializers.Serializer):
    """A sweep as in sweep.yaml (the CLI sends it as JSON); webapp.sweeps.spaces checks the inside."""

    team = serializers.IntegerField(required=False, min_value=1, max_value=2**31 - 1,
                                    help_text="Team id; default: your only or first team")
    name = serializers.CharField(max_length=spaces.NAME_MAX)
    strategy = serializers.ChoiceField(choices=Sweep.Strategy.choices, default="grid")
    base = LimitedJSONField(help_text="Launch inputs shared by the trials (as POST /api/runs/: dataset, "
                                      "reward_config, model, method, max_steps, ...)")
    parameters = LimitedJSONField(help_text="{field: [values]} or {field: {low, high, log}}; bounded gft_core "
                                            "settings only")
    budget = LimitedJSONField(required=False, help_text="{runs: N, parallel: P}")
    target = LimitedJSONField(required=False, help_text='"eval/accuracy" or {metric, direction: max|min, '
                                                        'mode: final|best}; eval:<benchmark>/<metric> for evaluations')
    pruner = LimitedJSONField(required=False, help_text='"none" | "median" | "hyperband" or {name, startup_trials, '
                                                        'warmup_steps}')
    seed = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1, help_text="Sampler seed")


def _checked_base(base) -> dict:
    """The base launch inputs through the run launch's own serializer (types and bounds as for
    POST /api/runs/); errors come back as base.<field>. A sweep's parameters may be left out of it."""
    if not isinstance(base, dict):
        raise ValidationError({"base": ["A mapping of launch inputs (as POST /api/runs/)."]})
    extra = sorted(k for k in base if k in ("team", "clone_of"))
    if extra:
        raise ValidationError({f"base.{k}": ["Not a sweep input: the sweep's team is used."] for k in extra})
    ser = RunCreateSerializer(data=base, partial=False)
    if not ser.is_valid():
        raise ValidationError({f"base.{k}": v for k, v in ser.errors.items()})
    return dict(ser.validated_data)


class SweepViewSet(ScopedMixin, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Sweeps of your teams: a base launch config, the parameters to vary, an Optuna search."""

    def get_serializer_class(self):
        if self.action == "create":
            return SweepCreateSerializer
        return SweepDetailSerializer if self.action == "retrieve" else SweepSerializer

    def get_queryset(self) -> QuerySet:
        return scoped(self.request.user, Sweep.objects.select_related("created_by")).order_by("-created_at")

    @extend_schema(request=SweepCreateSerializer, responses={201: SweepDetailSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        ser = SweepCreateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = dict(ser.validated_data)
        team = _team_for_write(request, data.pop("team", None))
        data["base"] = _checked_base(data["base"])
        try:
            sweep = services.create_sweep(team, request.user, data)
        except services.SweepError as e:
            raise ValidationError(e.errors) from None
        except QuotaExceeded as e:
            return Response(e.as_dict(), status=status.HTTP_429_TOO_MANY_REQUESTS)
        return Response(SweepDetailSerializer(sweep).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: SweepDetailSerializer, 409: OpenApiResponse(
        description="the sweep has already ended")})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        """Stop launching trials and cancel the sweep's queued and running runs."""
        sweep = self.get_object()
        _writer(request, sweep.team)
        try:
            sweep = services.cancel_sweep(sweep, request.user.get_username())
        except services.SweepStateError as e:
            return Response({"detail": str(e)}, status=status.HTTP_409_CONFLICT)
        return Response(SweepDetailSerializer(sweep).data)
