"""REST API of alerts: /api/alert-rules/ (CRUD; built-in rules can be changed, muted or disabled,
not deleted), /api/alerts/ (list, acknowledge), /api/alert-webhooks/. Registered in
webapp/api/urls.py. Another team's rule, alert, webhook or run: 404."""
from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.accounts.scoping import user_teams
from webapp.api.views import ScopedMixin, _int, _team_for_write, _writer

from . import selectors, services
from .builtin import ensure_builtin_rules
from .models import MAX_WINDOW, Action, Aggregation, Alert, AlertRule, Baseline, Condition, Delivery, Severity, Webhook

THRESHOLD_MAX = services.THRESHOLD_MAX


def _metric_choices() -> list[str]:
    return ["", *services.metric_names()]


class AlertRuleSerializer(serializers.ModelSerializer):
    description = serializers.SerializerMethodField()

    class Meta:
        model = AlertRule
        fields = ["id", "team", "name", "builtin", "metric", "condition", "window", "aggregation", "threshold",
                  "baseline", "severity", "action", "enabled", "muted", "description", "created_at", "updated_at"]
        read_only_fields = fields

    def get_description(self, rule: AlertRule) -> str:
        return rule.describe()


class AlertRuleWriteSerializer(serializers.Serializer):
    """A rule's settings; checked together by services.check_rule (400 naming the field)."""

    team = serializers.IntegerField(required=False, help_text="Team id (create only); default: your first team")
    name = serializers.CharField(max_length=120)
    metric = serializers.ChoiceField(choices=[], required=False, allow_blank=True,
                                     help_text="A metric name (docs/INTERFACES.md); empty for stalled and failed")
    condition = serializers.ChoiceField(choices=Condition.choices)
    window = serializers.IntegerField(min_value=1, max_value=MAX_WINDOW, required=False, default=1)
    aggregation = serializers.ChoiceField(choices=Aggregation.choices, required=False, default=Aggregation.LAST)
    threshold = serializers.FloatField(min_value=-THRESHOLD_MAX, max_value=THRESHOLD_MAX, required=False, default=0.0)
    baseline = serializers.ChoiceField(choices=Baseline.choices, required=False, default=Baseline.NONE)
    severity = serializers.ChoiceField(choices=Severity.choices, required=False, default=Severity.WARNING)
    action = serializers.ChoiceField(choices=Action.choices, required=False, default=Action.NONE)
    enabled = serializers.BooleanField(required=False, default=True)
    muted = serializers.BooleanField(required=False, default=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["metric"].choices = _metric_choices()  # the one list: gft_core.metrics.METRIC_NAMES


class DeliverySerializer(serializers.ModelSerializer):
    webhook = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Delivery
        fields = ["id", "channel", "webhook", "status", "attempts", "response_code", "last_error", "created_at",
                  "updated_at"]
        read_only_fields = fields


class AlertSerializer(serializers.ModelSerializer):
    rule_name = serializers.CharField(source="rule.name", read_only=True)
    severity = serializers.CharField(source="rule.severity", read_only=True)
    acknowledged_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    deliveries = DeliverySerializer(many=True, read_only=True)

    class Meta:
        model = Alert
        fields = ["id", "team", "rule", "rule_name", "severity", "run", "step", "values", "message", "state",
                  "fired_at", "cleared_at", "cleared_step", "acknowledged_by", "acknowledged_at", "deliveries"]
        read_only_fields = fields


class WebhookSerializer(serializers.ModelSerializer):
    class Meta:
        model = Webhook
        fields = ["id", "team", "name", "url", "enabled", "created_at"]
        read_only_fields = ["id", "team", "created_at"]


class WebhookCreateSerializer(serializers.Serializer):
    team = serializers.IntegerField(required=False, help_text="Team id; default: your first team")
    name = serializers.CharField(max_length=120)
    url = serializers.URLField(max_length=500, help_text="http(s); a private or loopback address is refused "
                                                         "unless its host is in ALERT_WEBHOOK_ALLOW_HOSTS")
    enabled = serializers.BooleanField(required=False, default=True)


def _rule_error(exc: services.RuleError) -> ValidationError:
    return ValidationError({exc.field: [str(exc)]})


def _create(request: Request, write: type[serializers.Serializer], create, read: type[serializers.Serializer]) -> Response:
    """POST of a rule or webhook: the body checked by `write`, the team (default: your first) one you
    write to, then `create(team, **fields)` (services.RuleError -> 400 naming the field); 201."""
    ser = write(data=request.data)
    ser.is_valid(raise_exception=True)
    data = dict(ser.validated_data)
    team = _team_for_write(request, data.pop("team", None))
    try:
        obj = create(team, **data)
    except services.RuleError as e:
        raise _rule_error(e) from None
    return Response(read(obj).data, status=status.HTTP_201_CREATED)


class AlertRuleViewSet(ScopedMixin, mixins.CreateModelMixin, mixins.UpdateModelMixin, mixins.DestroyModelMixin,
                       viewsets.ReadOnlyModelViewSet):
    """Alert rules of your teams (the built-in GFT rules included: change, mute or disable them)."""

    serializer_class = AlertRuleSerializer

    def get_queryset(self) -> QuerySet:
        qs = selectors.rules(self.request.user)
        team = self.request.query_params.get("team") if self.action == "list" else None
        return qs.filter(team_id=_int(team, "team")) if team else qs

    @extend_schema(parameters=[OpenApiParameter("team", int)])
    def list(self, request: Request, *args, **kwargs) -> Response:
        for team in user_teams(request.user):
            ensure_builtin_rules(team)  # on by default for every team
        return super().list(request, *args, **kwargs)

    @extend_schema(request=AlertRuleWriteSerializer, responses={201: AlertRuleSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        return _create(request, AlertRuleWriteSerializer, services.create_rule, AlertRuleSerializer)

    @extend_schema(request=AlertRuleWriteSerializer, responses={200: AlertRuleSerializer})
    def update(self, request: Request, *args, **kwargs) -> Response:
        rule = self.get_object()
        _writer(request, rule.team)
        ser = AlertRuleWriteSerializer(data=request.data, partial=kwargs.get("partial", False))
        ser.is_valid(raise_exception=True)
        data = {k: v for k, v in ser.validated_data.items() if k != "team"}
        try:
            rule = services.update_rule(rule, **data)
        except services.RuleError as e:
            raise _rule_error(e) from None
        return Response(AlertRuleSerializer(rule).data)

    @extend_schema(request=AlertRuleWriteSerializer, responses={200: AlertRuleSerializer})
    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        return self.update(request, *args, partial=True, **kwargs)

    @extend_schema(responses={204: None, 409: OpenApiResponse(description="a built-in rule: disable or mute it")})
    def destroy(self, request: Request, *args, **kwargs) -> Response:
        rule = self.get_object()
        _writer(request, rule.team)
        if rule.builtin:
            return Response({"detail": "A built-in rule cannot be deleted: disable or mute it instead."},
                            status=status.HTTP_409_CONFLICT)
        services.delete_rule(rule)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AlertViewSet(ScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Alerts of your teams, newest first, with their deliveries."""

    serializer_class = AlertSerializer

    def get_queryset(self) -> QuerySet:
        qs = selectors.alerts(self.request.user)
        if self.action != "list":
            return qs
        p = self.request.query_params
        if p.get("run"):
            qs = qs.filter(run_id=_int(p["run"], "run"))
        if p.get("team"):
            qs = qs.filter(team_id=_int(p["team"], "team"))
        if p.get("state"):
            if p["state"] not in Alert.State.values:
                raise ValidationError({"state": ["firing or cleared."]})
            qs = qs.filter(state=p["state"])
        return qs

    @extend_schema(parameters=[OpenApiParameter("run", int), OpenApiParameter("team", int),
                               OpenApiParameter("state", str, enum=Alert.State.values)])
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(request=None, responses={200: AlertSerializer})
    @action(detail=True, methods=["post"])
    def acknowledge(self, request: Request, pk=None) -> Response:
        """Mark the alert seen by you (it stays firing until its condition clears)."""
        alert = self.get_object()
        _writer(request, alert.team)
        return Response(AlertSerializer(services.acknowledge(alert, request.user)).data)


class WebhookViewSet(ScopedMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin, viewsets.ReadOnlyModelViewSet):
    """Webhooks of your teams: each alert is POSTed as Slack-compatible JSON {"text": ...}."""

    serializer_class = WebhookSerializer

    def get_queryset(self) -> QuerySet:
        return selectors.webhooks(self.request.user)

    @extend_schema(request=WebhookCreateSerializer, responses={201: WebhookSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        return _create(request, WebhookCreateSerializer, services.create_webhook, WebhookSerializer)

    def destroy(self, request: Request, *args, **kwargs) -> Response:
        hook = self.get_object()
        _writer(request, hook.team)
        hook.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)
