from django.urls import path

from . import views

app_name = "alerts"
urlpatterns = [
    path("", views.feed, name="feed"),
    path("<int:pk>/acknowledge/", views.acknowledge, name="acknowledge"),
    path("rules/<int:pk>/mute/", views.mute, name="mute"),
    path("rules/new/", views.rule_create, name="rule_create"),
    path("rules/<int:pk>/edit/", views.rule_edit, name="rule_edit"),
    path("webhooks/new/", views.webhook_create, name="webhook_create"),
]
