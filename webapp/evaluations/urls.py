"""Evaluation pages (helper evalpages fills these in)."""
from django.urls import path  # noqa: F401

app_name = "evaluations"

urlpatterns: list = []
