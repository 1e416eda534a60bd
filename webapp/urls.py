from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("webapp.accounts.urls")),
    path("api/", include("webapp.api.urls")),
    path("datasets/", include("webapp.datasets.urls")),
    path("rewards/", include("webapp.rewards.urls")),
    path("dashboards/", include("webapp.dashboards.urls")),
    path("evaluations/", include("webapp.evaluations.urls")),
    path("pipelines/", include("webapp.pipelines.urls")),
    path("alerts/", include("webapp.alerts.urls")),
    path("sweeps/", include("webapp.sweeps.urls")),
    path("", include("webapp.runs.urls")),
]
