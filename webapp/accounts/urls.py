from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(template_name="accounts/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("team/", views.switch_team, name="switch_team"),
    path("tokens/", views.tokens, name="tokens"),
    path("healthz/", views.healthz, name="healthz"),
]
