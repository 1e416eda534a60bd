from django.urls import path

from .views import files, launch, live, pages, table

app_name = "runs"
urlpatterns = [
    path("", table.run_list, name="list"),
    # The run table's bulk actions and live feed; edits after launch (views/table.py):
    path("runs/bulk/", table.bulk, name="bulk"),
    path("runs/live/", table.table_stream, name="table_stream"),
    path("runs/<int:pk>/edit/", table.edit, name="edit"),
    path("runs/<int:pk>/archive/", table.archive, name="archive"),
    path("runs/<int:pk>/delete/", table.delete, name="delete"),
    # Launch, clone, cancel, resume (views/launch.py):
    path("runs/new/", launch.launch, name="launch"),
    path("runs/new/defaults/", launch.launch_defaults, name="launch_defaults"),
    path("runs/new/group/", launch.launch_group, name="launch_group"),
    path("runs/<int:pk>/cancel/", launch.cancel, name="cancel"),
    path("runs/<int:pk>/resume/", launch.resume, name="resume"),
    # The Logs page and the run's downloads (views/files.py):
    path("runs/<int:pk>/logs/", files.logs, name="logs"),
    path("runs/<int:pk>/logs/text/", files.log_text, name="log_text"),
    path("runs/<int:pk>/artifacts/<int:artifact_id>/download/", files.artifact_download, name="artifact_download"),
    path("runs/<int:pk>/group-samples.jsonl", files.group_samples, name="group_samples"),
    # Run page, live stream, compare, group inspector (views/pages.py, views/live.py):
    path("runs/<int:pk>/", pages.run_detail, name="detail"),
    path("runs/<int:pk>/stream/", live.stream, name="stream"),
    path("runs/<int:pk>/groups/", pages.groups, name="groups"),
    path("runs/series/", pages.series_json, name="series"),
    path("runs/series.csv", pages.series_csv, name="series_csv"),
    path("compare/", pages.compare, name="compare"),
]
