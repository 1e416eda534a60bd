from django.contrib import admin

from .models import EvalResult, EvalSuite, Evaluation, ReferenceResult


@admin.register(EvalSuite)
class EvalSuiteAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "team", "archived", "created_at")
    list_filter = ("archived", "team")
    search_fields = ("name",)


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = ("id", "team", "run", "checkpoint_step", "suite", "status", "done", "total", "created_at")
    list_filter = ("status", "team")
    raw_id_fields = ("run", "suite", "created_by")


@admin.register(EvalResult)
class EvalResultAdmin(admin.ModelAdmin):
    list_display = ("id", "evaluation", "benchmark_name", "created_at")
    search_fields = ("benchmark_name",)
    raw_id_fields = ("evaluation", "benchmark")


@admin.register(ReferenceResult)
class ReferenceResultAdmin(admin.ModelAdmin):
    list_display = ("model", "method", "benchmark", "metric", "value", "from_paper", "team")
    list_filter = ("from_paper", "team")
    search_fields = ("model", "method", "benchmark", "source")
