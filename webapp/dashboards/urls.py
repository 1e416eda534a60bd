from django.urls import path

from . import views

app_name = "dashboards"
urlpatterns = [
    path("", views.dashboard_list, name="list"),
    path("new/", views.dashboard_create, name="create"),
    path("<int:pk>/", views.dashboard_detail, name="detail"),
    path("<int:pk>/edit/", views.dashboard_update, name="update"),
    path("<int:pk>/delete/", views.dashboard_delete, name="delete"),
]
