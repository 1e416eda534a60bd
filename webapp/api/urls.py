"""REST API routes. Schema: /api/schema/ (OpenAPI 3), docs: /api/docs/ (Swagger UI)."""
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from webapp.alerts import api as alerts
from webapp.datasets import api as datasets
from webapp.evaluations import api as evaluations
from webapp.pipelines import api as pipelines
from webapp.sweeps import api as sweeps

from . import views

app_name = "api"

router = DefaultRouter(trailing_slash=True)
router.include_format_suffixes = False
router.register("teams", views.TeamViewSet, basename="team")
router.register("datasets", views.DatasetViewSet, basename="dataset")
router.register("teacher-jobs", datasets.TeacherJobViewSet, basename="teacher-job")
router.register("reward-configs", views.RewardConfigViewSet, basename="reward-config")
router.register("runs", views.RunViewSet, basename="run")
router.register("eval-suites", evaluations.EvalSuiteViewSet, basename="eval-suite")
router.register("evaluations", evaluations.EvaluationViewSet, basename="evaluation")
router.register("pipelines", pipelines.PipelineViewSet, basename="pipeline")
router.register("reference-results", evaluations.ReferenceResultViewSet, basename="reference-result")
router.register("alert-rules", alerts.AlertRuleViewSet, basename="alert-rule")
router.register("alerts", alerts.AlertViewSet, basename="alert")
router.register("alert-webhooks", alerts.WebhookViewSet, basename="alert-webhook")
router.register("sweeps", sweeps.SweepViewSet, basename="sweep")

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("", include(router.urls)),
    # Anything else under /api/ (an id that is not a number, a typo): a JSON 404 like the API's
    # own, after the same authentication, not Django's HTML page.
    re_path(r"^.*/$", views.NotFoundView.as_view(), name="not-found"),
]
