from django.urls import path

from . import views

app_name = "rewards"
urlpatterns = [
    path("", views.reward_list, name="list"),
    path("new/", views.create, name="create"),
    path("<int:pk>/", views.detail, name="detail"),
    path("<int:pk>/new-version/", views.new_version, name="new_version"),
    path("<int:pk>/test/", views.run_test, name="test"),
    path("<int:pk>/test/<int:test_id>/status/", views.test_status, name="test_status"),
    path("<int:pk>/archive/", views.archive, name="archive"),
    path("<int:pk>/delete/", views.delete, name="delete"),
]
