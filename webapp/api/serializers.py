"""REST representations. Creation goes through the apps' service functions (see views.py)."""
from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from gft_core.config import FIELDS, LAUNCH_FIELDS
from webapp.accounts import quotas
from webapp.accounts.models import Membership, Team
from webapp.datasets.models import Dataset
from webapp.rewards.models import RewardConfig
from webapp.runs import launch, launchfields, progress
from webapp.runs.files import artifacts_with_sizes
from webapp.runs.defaults import EVAL_SPLITS
from webapp.runs.models import Artifact, Run

from .parsers import LimitedJSONField


class QuotaUsageSerializer(serializers.Serializer):
    active_runs = serializers.IntegerField(help_text="Runs queued or running")
    max_active_runs = serializers.IntegerField(help_text="TEAM_MAX_ACTIVE_RUNS (0 = unlimited)")
    storage_bytes = serializers.IntegerField(help_text="Dataset files + run checkpoints and final models")
    max_storage_bytes = serializers.IntegerField(help_text="TEAM_MAX_STORAGE_BYTES (0 = unlimited)")


class TeamSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()
    quota = serializers.SerializerMethodField(help_text="The team's quotas and what it uses of them")

    class Meta:
        model = Team
        fields = ["id", "name", "slug", "role", "quota", "created_at"]

    def get_role(self, team: Team) -> str | None:
        m = Membership.objects.filter(team=team, user=self.context["request"].user).first()
        return m.role if m else None

    @extend_schema_field(QuotaUsageSerializer)
    def get_quota(self, team: Team) -> dict:
        return quotas.usage(team)


class DatasetSerializer(serializers.ModelSerializer):
    usable = serializers.BooleanField(read_only=True)

    class Meta:
        model = Dataset
        fields = ["id", "team", "name", "version", "previous", "status", "usable", "archived", "purpose",
                  "original_filename", "file_format", "size_bytes", "sha256", "mapping", "prompt_format", "eval_split",
                  "eval_fraction", "eval_seed", "report", "created_at"]
        read_only_fields = fields


class DatasetUploadSerializer(serializers.Serializer):
    """A new dataset (version 1) from an uploaded file; validated by webapp.datasets.services."""

    team = serializers.IntegerField(required=False, help_text="Team id; default: your only or first team")
    name = serializers.CharField()
    file = serializers.FileField()
    mapping = LimitedJSONField(help_text='A preset name ("toy", "gsm8k", "math") or a column mapping object')
    eval_split = serializers.ChoiceField(choices=Dataset.EvalSplit.values, default=Dataset.EvalSplit.NONE)
    eval_fraction = serializers.FloatField(required=False, allow_null=True)
    eval_seed = serializers.IntegerField(default=0)
    eval_file = serializers.FileField(required=False)
    prompt_format = LimitedJSONField(required=False, help_text='{"system_prompt": ..., "instruction_suffix": ...}: '
                                      "wrapped around every prompt of a run on this dataset")

    def validate_prompt_format(self, value):
        from webapp.datasets.services import UploadError, prompt_format_from

        try:
            return prompt_format_from(value)
        except UploadError as e:
            raise serializers.ValidationError(str(e)) from None


class RewardConfigSerializer(serializers.ModelSerializer):
    team = serializers.IntegerField(source="team_id", required=False, help_text="Team id; default: your first team")
    spec = LimitedJSONField(help_text=RewardConfig._meta.get_field("spec").help_text)

    class Meta:
        model = RewardConfig
        fields = ["id", "team", "name", "version", "previous", "spec", "description", "archived", "created_at"]
        read_only_fields = ["id", "version", "previous", "archived", "created_at"]


class ArchiveSerializer(serializers.Serializer):
    archived = serializers.BooleanField(default=True, help_text="true: archive; false: restore")


class ArtifactSerializer(serializers.ModelSerializer):
    size_bytes = serializers.IntegerField(read_only=True, help_text="Bytes on disk now (a directory: its total)")
    download_url = serializers.SerializerMethodField(help_text="GET: the file, a directory as a tar (streamed)")

    class Meta:
        model = Artifact
        fields = ["id", "kind", "path", "step", "size_bytes", "download_url", "created_at"]

    def get_download_url(self, artifact: Artifact) -> str:
        return reverse("api:run-artifact-download", args=[artifact.run_id, artifact.pk])


class RunSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    progress = serializers.SerializerMethodField(help_text="step / total_steps, 0..1")
    eta_seconds = serializers.SerializerMethodField(help_text="Seconds left (running runs, from recent step times)")
    queue_position = serializers.SerializerMethodField(help_text="1 = next on its queue (queued runs)")

    class Meta:
        model = Run
        fields = ["id", "team", "name", "method", "status", "cancel_requested", "dataset", "reward_config", "eval_suite", "tags",
                  "queue", "num_gpus", "step", "total_steps", "progress", "eta_seconds", "queue_position",
                  "attempt", "worker", "heartbeat_at", "error", "summary", "created_by", "cloned_from",
                  "init_from_run", "init_from_step", "created_at", "queued_at", "started_at", "finished_at"]
        read_only_fields = fields

    def get_progress(self, run: Run) -> float:
        return round(run.step / run.total_steps, 4) if run.total_steps else 0.0

    def get_eta_seconds(self, run: Run) -> float | None:
        return progress.eta_seconds(run)

    def get_queue_position(self, run: Run) -> int | None:
        return progress.queue_position(run)


class RunDetailSerializer(RunSerializer):
    artifacts = serializers.SerializerMethodField()

    class Meta(RunSerializer.Meta):
        fields = RunSerializer.Meta.fields + ["recipe", "notes", "archived_at", "metric_range", "config", "effective_group",
                                              "log_tail", "output_dir", "artifacts"]
        read_only_fields = fields

    @extend_schema_field(ArtifactSerializer(many=True))
    def get_artifacts(self, run: Run) -> list[dict]:
        """With their size on disk now (webapp.runs.files.artifacts_with_sizes)."""
        return ArtifactSerializer(artifacts_with_sizes(run), many=True).data


class RunUpdateSerializer(serializers.Serializer):
    """PATCH /api/runs/<id>/: what may change after launch (any other key: 400 naming it;
    checked by webapp.runs.services.clean_edit)."""

    name = serializers.CharField(required=False, max_length=launchfields.NAME_MAX_LENGTH)
    tags = serializers.ListField(child=serializers.CharField(max_length=launchfields.TAG_MAX_LENGTH),
                                 required=False, max_length=30)
    notes = serializers.CharField(required=False, allow_blank=True, max_length=20_000, trim_whitespace=False)


def config_serializer_field(spec) -> serializers.Field:
    """The API field of one gft_core setting (optional: left out, it takes the launch default),
    checked by gft_core.config.check_field like the launch form's."""
    return launchfields.setting_field(
        spec, choice=serializers.ChoiceField, boolean=serializers.BooleanField, integer=serializers.IntegerField,
        number=serializers.FloatField, text=serializers.CharField, error=serializers.ValidationError,
        required=False, allow_null=spec.nullable, label=spec.label, help_text=spec.help)


class RunCreateSerializer(serializers.Serializer):
    """Launch inputs, as on the launch form (webapp/runs/forms.py): the gft_core settings of
    gft_core.config.LAUNCH_FIELDS (generated, with their bounds) and the web-only inputs below.
    Fields left out take the defaults for the model and method. `config` adds gft_core settings the
    form does not show; each key is checked (webapp.runs.launch.check_extra_config)."""

    team = serializers.IntegerField(required=False, help_text="Team id; default: your only or first team")
    name = serializers.CharField(required=False, allow_blank=True, max_length=launchfields.NAME_MAX_LENGTH)
    model = serializers.CharField(required=False, help_text='"tiny" or a model directory under MODEL_ROOTS')
    dataset = serializers.IntegerField(help_text="A dataset version id of the team that passed validation")
    reward_config = serializers.IntegerField(help_text="A reward config id of the team")
    eval_suite = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**31 - 1,
                                          help_text="Optional: an eval suite id of the team, evaluated during "
                                                    "training at every eval interval and at the end")
    eval_split = serializers.ChoiceField(choices=[c for c, _ in EVAL_SPLITS], required=False)
    tags = serializers.ListField(child=serializers.CharField(max_length=launchfields.TAG_MAX_LENGTH), required=False)
    config = serializers.DictField(required=False, help_text="Extra gft_core settings (e.g. kl_interval); every "
                                   "key is checked like the launch fields")
    recipe = serializers.ChoiceField(choices=launchfields.recipe_choices(), required=False,
                                     help_text=launchfields.RECIPE_HELP + " Fields given here override it.")
    clone_of = serializers.IntegerField(required=False, help_text="Run id this run was cloned from")
    init_from_run = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                             max_value=launchfields.MAX_ID, help_text=launchfields.INIT_FROM_RUN_HELP)
    init_from_step = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                              max_value=launchfields.MAX_ID, help_text=launchfields.INIT_FROM_STEP_HELP)

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        for name in LAUNCH_FIELDS:
            fields[name] = config_serializer_field(FIELDS[name])
        fields["eval_fraction"] = config_serializer_field(FIELDS["data.eval_fraction"])
        fields["num_gpus"] = serializers.IntegerField(required=False, help_text=launchfields.gpu_help(),
                                                      **launchfields.gpu_bounds())
        fields["queue"] = serializers.ChoiceField(choices=launch.queue_choices(), required=False,
                                                  help_text="A training queue (TRAINING_QUEUES); default: the first")
        return fields
