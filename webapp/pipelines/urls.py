from django.urls import path

from . import views

app_name = "pipelines"
urlpatterns = [
    path("", views.pipeline_list, name="list"),
    path("new/", views.pipeline_new, name="new"),
    path("<int:pk>/", views.pipeline_detail, name="detail"),
    path("<int:pk>/cancel/", views.pipeline_cancel, name="cancel"),
]
