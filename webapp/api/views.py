"""REST API: teams, datasets, reward configs, runs, metrics. Token auth (Authorization: Bearer
gft_...), OpenAPI schema at /api/schema/, docs at /api/docs/.

Every object comes through webapp.accounts.scoping: another team's object is 404, whatever the
method; viewers may read, members and admins may write (403 otherwise). Creation and lifecycle
changes call the same service functions as the pages.
"""
from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import QuerySet
from django.http import Http404, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.accounts.quotas import QuotaExceeded
from webapp.accounts.scoping import in_team, require_writer, scoped, user_teams
from webapp.datasets import services as datasets
from webapp.datasets.api import DatasetTeacherActions
from webapp.datasets.models import Dataset
from webapp.datasets.uploads import SizeLimitUploadHandler, too_large_message
from webapp.rewards import services as rewards
from webapp.rewards.models import RewardConfig
from webapp.runs import files, launch, services
from webapp.runs.effective_group import DEFAULT_PERCENTILE, PREVIEW_FIELDS, PreviewError, dataset_group, preview_inputs
from webapp.runs.models import Run

from . import schema  # noqa: F401  (registers the token auth scheme)
from . import serializers as s
from .parsers import UPLOAD_PARSERS


# Bounds of GET /api/runs/<id>/metrics/ (its schema says so; the fuzz test holds it to that).
METRICS_MAX_POINTS_PER_KEY = 100_000
METRICS_MAX_POINTS_PER_RESPONSE = 200_000
METRICS_KEYS_MAX_CHARS = 20_000


def _team_for_write(request: Request, team_id: int | None):
    """The team a new object goes to: the given one (404 if not the user's), else the user's first."""
    teams = user_teams(request.user).order_by("name")
    team = teams.filter(pk=team_id).first() if team_id is not None else teams.first()
    if team is None:
        raise Http404("No such team.")
    try:
        require_writer(request.user, team)
    except Exception as exc:  # django PermissionDenied -> DRF's 403
        raise PermissionDenied(str(exc)) from None
    return team


def _writer(request: Request, team) -> None:
    try:
        require_writer(request.user, team)
    except Exception as exc:
        if isinstance(exc, Http404):
            raise
        raise PermissionDenied(str(exc)) from None


class ScopedMixin:
    """Team-scoped queryset; a method the route lacks still answers 404 for a foreign object."""

    def http_method_not_allowed(self, request, *args, **kwargs):
        if "pk" in kwargs:
            self.get_object()  # 404 first: never reveal that another team's object exists
        return super().http_method_not_allowed(request, *args, **kwargs)


class TeamViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.TeamSerializer

    def get_queryset(self) -> QuerySet:
        return user_teams(self.request.user).order_by("name")


class VersionedResourceMixin:
    """Archive (POST <pk>/archive/ {"archived": true|false}) and delete (DELETE <pk>/) a version.

    Only its creator or a team admin may (403 otherwise, from webapp.resources.services); a version
    used by a run cannot be deleted (409).
    """

    resource_services = None  # the app's services module: archive(obj, user, archived), delete(obj, user)

    @extend_schema(request=s.ArchiveSerializer, responses={200: OpenApiResponse(description="the version")})
    @action(detail=True, methods=["post"])
    def archive(self, request: Request, pk=None) -> Response:
        """Hide the version from pickers ({"archived": true}, the default) or bring it back."""
        obj = self.get_object()
        ser = s.ArchiveSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        obj = self.resource_services.archive(obj, request.user, ser.validated_data["archived"])
        return Response(self.get_serializer_class()(obj).data)

    @extend_schema(responses={204: None, 409: OpenApiResponse(description="used by a run: archive it instead")})
    def destroy(self, request: Request, *args, **kwargs) -> Response:
        obj = self.get_object()
        try:
            self.resource_services.delete(obj, request.user)
        except self.resource_services.InUseError as e:
            return Response({"detail": str(e)}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DatasetViewSet(DatasetTeacherActions, VersionedResourceMixin, ScopedMixin, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Dataset versions of your teams; POST (multipart) uploads a new dataset, validated in the background."""

    resource_services = datasets

    def get_serializer_class(self):
        return s.DatasetUploadSerializer if self.action == "create" else s.DatasetSerializer

    def get_parsers(self):
        # DRF asks before it sets self.action; the action map of the request's method names it
        action = getattr(self, "action", None) or self.action_map.get(self.request.method.lower())
        return [parser() for parser in UPLOAD_PARSERS] if action == "create" else super().get_parsers()

    def initialize_request(self, request, *args, **kwargs):
        # Before anything parses the body: an oversized file stops being read at the limit.
        request.upload_handlers.insert(0, SizeLimitUploadHandler(request))
        return super().initialize_request(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet:
        qs = scoped(self.request.user, Dataset.objects.all())
        if self.request.query_params.get("usable"):
            qs = qs.filter(status=Dataset.Status.VALID, archived=False)
        return qs.order_by("name", "-version")

    @extend_schema(request={"multipart/form-data": s.DatasetUploadSerializer},
                   responses={201: s.DatasetSerializer,
                              413: OpenApiResponse(description="a file is larger than UPLOAD_MAX_BYTES")})
    def create(self, request: Request, *args, **kwargs) -> Response:
        data = request.data  # parses the body, through SizeLimitUploadHandler
        if request._request.upload_too_large:
            return Response({"file": [too_large_message(request._request.upload_too_large)]},
                            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        ser = s.DatasetUploadSerializer(data=data)
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        team = _team_for_write(request, d.get("team"))
        eval_file = d.get("eval_file")
        try:
            dataset = datasets.create_dataset_from_upload(
                team, request.user, d["file"], name=d["name"], filename=d["file"].name, mapping=d["mapping"],
                eval_split=d["eval_split"], eval_fraction=d.get("eval_fraction"), eval_seed=d["eval_seed"],
                eval_fileobj=eval_file, eval_filename=eval_file.name if eval_file else "",
                prompt_format=d.get("prompt_format"))
        except datasets.UploadError as e:
            if isinstance(e.__cause__, QuotaExceeded):  # the team's storage quota
                return Response(e.__cause__.as_dict(), status=status.HTTP_429_TOO_MANY_REQUESTS)
            raise ValidationError({"file": [str(e)]}) from None
        return Response(s.DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[OpenApiParameter("method", str, description="A method of the method table (default gft)"),
                    *[OpenApiParameter(name, int, description=f"Launch field {name} (default: gft_core's)")
                      for name in PREVIEW_FIELDS],
                    OpenApiParameter("percentile", int, description="Answer-length percentile the truncation "
                                     f"warning compares with max_response_len, 1 to 100 (default {DEFAULT_PERCENTILE})")],
        responses={200: OpenApiResponse(response=dict, description=(
            "The group per prompt a run with these settings gets on this version: asked, group, label, rows, "
            "short_rows, short_share, message, truncation (per expert/teacher source), warnings, dataset")),
            400: OpenApiResponse(description="a parameter out of its launch field's bounds, named")})
    @action(detail=True, methods=["get"], url_path="group-preview")
    def group_preview(self, request: Request, pk=None) -> Response:
        """What the group per prompt will really be on this dataset version (the launch form's preview)."""
        dataset = self.get_object()
        try:
            inputs = preview_inputs(request.query_params)
        except PreviewError as e:
            raise ValidationError({e.field: [str(e)]}) from None
        return Response(dataset_group(dataset, inputs))


class RewardConfigViewSet(VersionedResourceMixin, ScopedMixin, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Reward config versions of your teams; POST creates version 1 of a new one."""

    serializer_class = s.RewardConfigSerializer
    resource_services = rewards

    def get_queryset(self) -> QuerySet:
        return scoped(self.request.user, RewardConfig.objects.all()).order_by("name", "-version")

    def create(self, request: Request, *args, **kwargs) -> Response:
        try:  # the JSON parser and the JSON field recurse: a deeply nested body is a 400, not a 500
            ser = s.RewardConfigSerializer(data=request.data)
            ser.is_valid(raise_exception=True)
        except RecursionError:
            raise ValidationError({"spec": ["The request body nests too deeply."]}) from None
        d = ser.validated_data
        team = _team_for_write(request, d.get("team_id"))
        try:
            config = rewards.create_reward_config(team, request.user, name=d["name"], spec=d["spec"],
                                                  description=d.get("description", ""))
        except rewards.RewardConfigError as e:
            raise ValidationError({"spec": [str(e)]}) from None
        return Response(s.RewardConfigSerializer(config).data, status=status.HTTP_201_CREATED)


RUN_FILTERS = [
    OpenApiParameter("status", str, description="queued, running, succeeded, failed or cancelled"),
    OpenApiParameter("method", str), OpenApiParameter("dataset", int, description="dataset version id"),
    OpenApiParameter("tag", str), OpenApiParameter("user", str, description="username of the creator"),
    OpenApiParameter("team", int),
    OpenApiParameter("archived", str, enum=["false", "true", "all"], default="false",
                     description="false: archived runs left out (as in the run table); true: only archived runs; all"),
]
ARCHIVED_FILTER = {"false": {"archived_at": None}, "true": {"archived_at__isnull": False}, "all": {}}


class RunViewSet(ScopedMixin, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Runs of your teams: launch, list, follow, cancel, resume, read metrics; edit the name, tags
    and notes (PATCH), archive, delete."""

    http_method_names = ["get", "post", "patch", "delete", "head", "options"]  # no PUT

    def get_serializer_class(self):
        if self.action == "create":
            return s.RunCreateSerializer
        return s.RunDetailSerializer if self.action == "retrieve" else s.RunSerializer

    def get_queryset(self) -> QuerySet:
        qs = scoped(self.request.user, Run.objects.select_related("created_by"))
        if self.action != "list":
            return qs
        p = self.request.query_params
        archived = p.get("archived", "false").strip().lower() or "false"
        if archived not in ARCHIVED_FILTER:
            raise ValidationError({"archived": [f"Must be true, false or all (got {archived[:20]!r})."]})
        qs = qs.filter(**ARCHIVED_FILTER[archived])
        if p.get("status"):
            qs = qs.filter(status__in=p["status"].split(","))
        if p.get("method"):
            qs = qs.filter(method=p["method"])
        if p.get("dataset"):
            qs = qs.filter(dataset_id=_int(p["dataset"], "dataset"))
        if p.get("tag"):
            qs = qs.filter(tags__contains=[p["tag"]])
        if p.get("user"):
            qs = qs.filter(created_by__username=p["user"])
        if p.get("team"):
            qs = qs.filter(team_id=_int(p["team"], "team"))
        return qs.order_by("-created_at")

    @extend_schema(parameters=RUN_FILTERS)
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(request=s.RunCreateSerializer, responses={201: s.RunDetailSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        ser = s.RunCreateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = dict(ser.validated_data)
        team = _team_for_write(request, data.pop("team", None))
        source = None
        if "clone_of" in data:
            source = in_team(request.user, Run.objects.all(), team).filter(pk=data.pop("clone_of")).first()
            if source is None:
                raise ValidationError({"clone_of": ["No such run of this team."]})
        try:
            run = launch.submit_run(team, request.user, data, cloned_from=source)
        except launch.SourceRunNotFound as e:
            raise NotFound(e.errors["init_from_run"][0]) from None
        except launch.LaunchError as e:
            raise ValidationError({("non_field_errors" if k == "__all__" else k): v for k, v in e.errors.items()}) from None
        except QuotaExceeded as e:
            return Response(e.as_dict(), status=status.HTTP_429_TOO_MANY_REQUESTS)
        return Response(s.RunDetailSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: s.RunDetailSerializer, 409: OpenApiResponse(
        description="the run has already finished")})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        """Cancel a queued run, or stop a running one at its next step (its checkpoint is kept)."""
        run = self.get_object()
        _writer(request, run.team)
        try:
            run = services.request_cancel(run, by=request.user.get_username())
        except services.TransitionError as e:
            return Response({"detail": str(e)}, status=status.HTTP_409_CONFLICT)
        return Response(s.RunDetailSerializer(run).data)

    @extend_schema(request=None, responses={200: s.RunDetailSerializer, 409: OpenApiResponse(
        description="only a failed or cancelled run can be resumed")})
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk=None) -> Response:
        """Queue a failed or cancelled run again; it continues from its latest checkpoint."""
        run = self.get_object()
        _writer(request, run.team)
        try:
            run = launch.resume_run(run, request.user)
        except services.TransitionError as e:
            return Response({"detail": str(e)}, status=status.HTTP_409_CONFLICT)
        except QuotaExceeded as e:
            return Response(e.as_dict(), status=status.HTTP_429_TOO_MANY_REQUESTS)
        return Response(s.RunDetailSerializer(run).data)

    @extend_schema(request=s.RunUpdateSerializer, responses={200: s.RunDetailSerializer})
    def partial_update(self, request: Request, pk=None) -> Response:
        """Change the name, tags and/or notes of a run; any other key is a 400 naming it."""
        run = self.get_object()
        _writer(request, run.team)
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["Send a JSON object with name, tags and/or notes."]})
        unknown = [k for k in request.data if k not in services.EDITABLE]
        if unknown:
            raise ValidationError({str(k)[:60]: [f"Not editable: only {', '.join(services.EDITABLE)} can change "
                                                 "after launch."] for k in unknown})
        ser = s.RunUpdateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        try:
            run = services.edit_run(run, request.user, dict(ser.validated_data))
        except services.RunEditError as e:
            raise ValidationError(e.errors) from None
        return Response(s.RunDetailSerializer(run).data)

    @extend_schema(request=s.ArchiveSerializer, responses={200: s.RunDetailSerializer, 409: OpenApiResponse(
        description="the run is queued or running: cancel it first")})
    @action(detail=True, methods=["post"])
    def archive(self, request: Request, pk=None) -> Response:
        """Hide a finished run from the run table ({"archived": true}, the default) or bring it back.
        Members their own runs, admins any."""
        run = self.get_object()
        ser = s.ArchiveSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        try:
            run = services.archive_run(run, request.user, ser.validated_data["archived"])
        except services.RunActiveError as e:
            return Response({"detail": str(e)}, status=status.HTTP_409_CONFLICT)
        except DjangoPermissionDenied as e:
            raise PermissionDenied(str(e)) from None
        return Response(s.RunDetailSerializer(run).data)

    @extend_schema(responses={204: None, 409: OpenApiResponse(description="the run is queued or running: cancel it first")})
    def destroy(self, request: Request, pk=None) -> Response:
        """Delete a finished run with its metrics, samples, artifacts and files. Members their own
        runs, admins any."""
        run = self.get_object()
        try:
            services.delete_run(run, request.user)
        except services.RunActiveError as e:
            return Response({"detail": str(e)}, status=status.HTTP_409_CONFLICT)
        except DjangoPermissionDenied as e:
            raise PermissionDenied(str(e)) from None
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=[
            OpenApiParameter("keys", {"type": "string", "maxLength": METRICS_KEYS_MAX_CHARS},
                             description="Comma-separated metric names; default: all logged"),
            OpenApiParameter("step_min", int), OpenApiParameter("step_max", int),
            OpenApiParameter("max_points", {"type": "integer", "minimum": 2, "maximum": METRICS_MAX_POINTS_PER_KEY},
                             description="Per key: downsampled to about this many points (min and max of each "
                             f"step bucket kept); a step range of at most max_points steps comes back at full "
                             f"resolution. Default 1000, at most {METRICS_MAX_POINTS_PER_KEY} (400 above)")],
        responses={200: OpenApiResponse(response=dict, description=(
            f"A response holds at most {METRICS_MAX_POINTS_PER_RESPONSE} points: keys are added in name order "
            "until the next one would pass that; the keys left out are listed in `more_keys` (ask again with "
            "keys=those). Every point at full resolution: page through step_min/step_max windows of "
            "max_points steps, or download the CSV export (/runs/series.csv)."))})
    @action(detail=True, methods=["get"])
    def metrics(self, request: Request, pk=None) -> Response:
        """{"run": id, "metrics": {key: {"step": [...], "value": [...], "wall_time": [...]}}, "more_keys": [...]}."""
        from webapp.runs.models import MetricKey, MetricPoint
        from webapp.runs.series import load_series

        run = self.get_object()
        p = request.query_params
        if len(p.get("keys", "")) > METRICS_KEYS_MAX_CHARS:
            raise ValidationError({"keys": [f"At most {METRICS_KEYS_MAX_CHARS} characters."]})
        keys = sorted({k for k in p.get("keys", "").split(",") if k})
        if not keys:
            ids = MetricPoint.objects.filter(run_id=run.pk).values("key_id").distinct()
            keys = sorted(MetricKey.objects.filter(pk__in=ids).values_list("name", flat=True))
        max_points = _int(p.get("max_points", 1000), "max_points")
        if not 2 <= max_points <= METRICS_MAX_POINTS_PER_KEY:
            raise ValidationError({"max_points": [f"Must be at least 2 and at most {METRICS_MAX_POINTS_PER_KEY}."]})
        step_min, step_max = _opt_int(p.get("step_min"), "step_min"), _opt_int(p.get("step_max"), "step_max")
        metrics: dict[str, dict] = {}
        total = 0
        for i, key in enumerate(keys):  # key by key, so the response stays within its point budget
            one = load_series([run.pk], [key], step_min=step_min, step_max=step_max,
                              max_points=max_points).get(run.pk, {}).get(key)
            n = len(one["step"]) if one else 0
            if metrics and total + n > METRICS_MAX_POINTS_PER_RESPONSE:
                more = keys[i:]
                break
            if one is not None:
                metrics[key] = one
            total += n
        else:
            more = []
        return Response({"run": run.pk, "status": run.status, "step": run.step, "metrics": metrics,
                         "more_keys": more})


    @extend_schema(parameters=[OpenApiParameter("artifact_id", int, OpenApiParameter.PATH,
                                                description="An id from the run's `artifacts`")],
                   responses={(200, ctype): OpenApiResponse(response=OpenApiTypes.BINARY, description=(
                       "The artifact's bytes, streamed: a file as is (the log as text/plain), a directory "
                       "(checkpoint, final model) as an uncompressed tar; Content-Length and Content-Disposition "
                       "(the file name) are set. 404 when it is not on disk any more (a pruned checkpoint)."))
                       for ctype in ("application/x-tar", "text/plain", "application/octet-stream")})
    @action(detail=True, methods=["get"], url_path=r"artifacts/(?P<artifact_id>[0-9]{1,18})/download",
            url_name="artifact-download")
    def artifact_download(self, request: Request, pk=None, artifact_id=None) -> StreamingHttpResponse:
        """Download one artifact of the run (its id in the run's `artifacts`)."""
        from webapp.runs.models import Artifact

        run = self.get_object()
        artifact = Artifact.objects.filter(run=run, pk=int(artifact_id)).first()
        if artifact is None:
            raise NotFound("No such artifact of this run.")
        return files.artifact_response(run, artifact)

    @extend_schema(responses={(200, "application/x-ndjson"): OpenApiResponse(
        response=OpenApiTypes.STR, description=(
            "Every group the trainer sampled (the group inspector's records), one JSON object per line: "
            "{run, step, group_index, ...the record}, in step order, streamed."))})
    @action(detail=True, methods=["get"], url_path="group-samples", url_name="group-samples")
    def group_samples(self, request: Request, pk=None) -> StreamingHttpResponse:
        """The run's sampled groups as JSON lines."""
        return files.group_samples_response(self.get_object())


class NotFoundView(APIView):
    """Every method of an unknown /api/ URL: 404 (401/403 first for anonymous requests)."""

    schema = None  # not an operation of the API

    def http_method_not_allowed(self, request, *args, **kwargs):
        raise NotFound()

    get = post = put = patch = delete = http_method_not_allowed


def _int(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValidationError({name: ["Must be an integer."]}) from None


def _opt_int(value, name: str) -> int | None:
    return None if value in (None, "") else _int(value, name)
