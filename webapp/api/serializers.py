"""REST representations. Creation goes through the apps' service functions (see views.py)."""
from __future__ import annotations

from rest_framework import serializers

from webapp.accounts.models import Membership, Team
from webapp.datasets.models import Dataset
from webapp.rewards.models import RewardConfig
from webapp.runs import progress
from webapp.runs.models import Artifact, Run


class TeamSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Team
        fields = ["id", "name", "slug", "role", "created_at"]

    def get_role(self, team: Team) -> str | None:
        m = Membership.objects.filter(team=team, user=self.context["request"].user).first()
        return m.role if m else None


class DatasetSerializer(serializers.ModelSerializer):
    usable = serializers.BooleanField(read_only=True)

    class Meta:
        model = Dataset
        fields = ["id", "team", "name", "version", "previous", "status", "usable", "archived", "original_filename",
                  "file_format", "size_bytes", "sha256", "mapping", "eval_split", "eval_fraction", "eval_seed",
                  "report", "created_at"]
        read_only_fields = fields


class DatasetUploadSerializer(serializers.Serializer):
    """A new dataset (version 1) from an uploaded file; validated by webapp.datasets.services."""

    team = serializers.IntegerField(required=False, help_text="Team id; default: your only or first team")
    name = serializers.CharField()
    file = serializers.FileField()
    mapping = serializers.JSONField(help_text='A preset name ("toy", "gsm8k", "math") or a column mapping object')
    eval_split = serializers.ChoiceField(choices=Dataset.EvalSplit.values, default=Dataset.EvalSplit.NONE)
    eval_fraction = serializers.FloatField(required=False, allow_null=True)
    eval_seed = serializers.IntegerField(default=0)
    eval_file = serializers.FileField(required=False)


class RewardConfigSerializer(serializers.ModelSerializer):
    team = serializers.IntegerField(source="team_id", required=False, help_text="Team id; default: your first team")

    class Meta:
        model = RewardConfig
        fields = ["id", "team", "name", "version", "previous", "spec", "description", "archived", "created_at"]
        read_only_fields = ["id", "version", "previous", "archived", "created_at"]


class ArtifactSerializer(serializers.ModelSerializer):
    class Meta:
        model = Artifact
        fields = ["id", "kind", "path", "step", "size_bytes", "created_at"]


class RunSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    progress = serializers.SerializerMethodField(help_text="step / total_steps, 0..1")
    eta_seconds = serializers.SerializerMethodField(help_text="Seconds left (running runs, from recent step times)")
    queue_position = serializers.SerializerMethodField(help_text="1 = next on its queue (queued runs)")

    class Meta:
        model = Run
        fields = ["id", "team", "name", "method", "status", "cancel_requested", "dataset", "reward_config", "tags",
                  "queue", "num_gpus", "step", "total_steps", "progress", "eta_seconds", "queue_position",
                  "attempt", "worker", "heartbeat_at", "error", "summary", "created_by", "cloned_from",
                  "created_at", "queued_at", "started_at", "finished_at"]
        read_only_fields = fields

    def get_progress(self, run: Run) -> float:
        return round(run.step / run.total_steps, 4) if run.total_steps else 0.0

    def get_eta_seconds(self, run: Run) -> float | None:
        return progress.eta_seconds(run)

    def get_queue_position(self, run: Run) -> int | None:
        return progress.queue_position(run)


class RunDetailSerializer(RunSerializer):
    artifacts = ArtifactSerializer(many=True, read_only=True)

    class Meta(RunSerializer.Meta):
        fields = RunSerializer.Meta.fields + ["config", "log_tail", "output_dir", "artifacts"]
        read_only_fields = fields


class RunCreateSerializer(serializers.Serializer):
    """Launch inputs, as on the launch form (webapp/runs/forms.py); fields left out take the
    defaults for the model. `config` adds gft_core settings the form does not show."""

    team = serializers.IntegerField(required=False, help_text="Team id; default: your only or first team")
    name = serializers.CharField(required=False, allow_blank=True)
    method = serializers.CharField(required=False)
    model = serializers.CharField(required=False, help_text='"tiny" or a model directory under MODEL_ROOTS')
    dataset = serializers.IntegerField()
    reward_config = serializers.IntegerField()
    eval_split = serializers.CharField(required=False)
    eval_fraction = serializers.FloatField(required=False)
    n_expert = serializers.IntegerField(required=False)
    n_teacher = serializers.IntegerField(required=False)
    n_self = serializers.IntegerField(required=False)
    tau = serializers.FloatField(required=False)
    lr = serializers.FloatField(required=False)
    lr_schedule = serializers.CharField(required=False)
    warmup_steps = serializers.IntegerField(required=False)
    prompts_per_step = serializers.IntegerField(required=False)
    sequences_per_update = serializers.IntegerField(required=False, allow_null=True)
    micro_batch_size = serializers.IntegerField(required=False)
    max_prompt_len = serializers.IntegerField(required=False)
    max_response_len = serializers.IntegerField(required=False)
    temperature = serializers.FloatField(required=False)
    max_steps = serializers.IntegerField(required=False, allow_null=True)
    epochs = serializers.FloatField(required=False)
    seed = serializers.IntegerField(required=False)
    eval_interval = serializers.IntegerField(required=False)
    checkpoint_interval = serializers.IntegerField(required=False)
    mixed_precision = serializers.CharField(required=False)
    num_gpus = serializers.IntegerField(required=False)
    queue = serializers.CharField(required=False)
    tags = serializers.ListField(child=serializers.CharField(max_length=50), required=False)
    config = serializers.DictField(required=False, help_text="Extra gft_core settings (e.g. kl_interval)")
    clone_of = serializers.IntegerField(required=False, help_text="Run id this run was cloned from")
