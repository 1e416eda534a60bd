from django.urls import path

from . import views

app_name = "evaluations"
urlpatterns = [
    # Pages (views.py):
    path("suites/", views.suite_list, name="suites"),
    path("suites/presets/", views.add_presets, name="add_presets"),
    path("references/", views.reference_list, name="references"),
    path("references/paper/", views.add_paper_table, name="add_paper_table"),
    path("references/<int:pk>/delete/", views.delete_reference, name="delete_reference"),
    path("evaluate/", views.evaluate_model, name="evaluate_model"),
    path("runs/<int:pk>/evaluate/", views.evaluate_run, name="evaluate_run"),
    # The run page's Evaluation tab (JSON):
    path("runs/<int:pk>/data/", views.run_data, name="run_data"),
    path("runs/<int:pk>/problems/", views.run_problems, name="run_problems"),
]
