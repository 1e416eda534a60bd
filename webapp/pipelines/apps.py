from django.apps import AppConfig


class PipelinesConfig(AppConfig):
    name = "webapp.pipelines"
    label = "pipelines"

    def ready(self) -> None:
        from webapp.runs.signals import run_status_changed

        from .services import on_run_status_changed

        # In every process that changes a run's status (web, worker, housekeeping): the stage that
        # finished queues the next one there and then.
        run_status_changed.connect(on_run_status_changed, dispatch_uid="pipelines.advance")
