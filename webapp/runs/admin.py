from django.contrib import admin

from .models import Artifact, GroupSample, MetricKey, Run, RunEvent


class RunEventInline(admin.TabularInline):
    model = RunEvent
    extra = 0
    readonly_fields = ("created_at", "kind", "from_status", "to_status", "message")


class ArtifactInline(admin.TabularInline):
    model = Artifact
    extra = 0


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "team", "method", "status", "step", "total_steps", "worker", "created_at")
    list_filter = ("status", "method", "team")
    search_fields = ("name",)
    # Status is owned by webapp.runs.services.transition; the admin shows it but cannot change it.
    readonly_fields = ("status", "attempt", "heartbeat_at", "started_at", "finished_at", "queued_at", "step")
    inlines = [RunEventInline, ArtifactInline]


@admin.register(RunEvent)
class RunEventAdmin(admin.ModelAdmin):
    list_display = ("run", "created_at", "kind", "from_status", "to_status")
    list_filter = ("kind",)


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = ("run", "kind", "step", "path", "size_bytes")
    list_filter = ("kind",)


@admin.register(MetricKey)
class MetricKeyAdmin(admin.ModelAdmin):
    list_display = ("id", "name")
    search_fields = ("name",)


@admin.register(GroupSample)
class GroupSampleAdmin(admin.ModelAdmin):
    list_display = ("run", "step", "group_index")
