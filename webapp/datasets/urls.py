from django.urls import path

from . import views

app_name = "datasets"
urlpatterns = [
    path("", views.dataset_list, name="list"),
    path("upload/", views.upload, name="upload"),
    path("<int:pk>/", views.detail, name="detail"),
    path("<int:pk>/status/", views.status, name="status"),
    path("<int:pk>/new-version/", views.new_version, name="new_version"),
    path("<int:pk>/validate/", views.validate, name="validate"),
    path("<int:pk>/archive/", views.archive, name="archive"),
    path("<int:pk>/delete/", views.delete, name="delete"),
    path("<int:pk>/teachers/generate/", views.teachers_generate, name="teachers_generate"),
    path("<int:pk>/teachers/import/", views.teachers_import, name="teachers_import"),
    path("<int:pk>/teachers/<int:job_id>/<str:action>/", views.teacher_job_action, name="teacher_job"),
]
