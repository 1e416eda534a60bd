from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "webapp.alerts"
    label = "alerts"

    def ready(self) -> None:
        # "Run failed" (and clearing) reacts to the one status-change signal of the run lifecycle,
        # so the runs app needs no knowledge of alerts.
        from webapp.runs.signals import run_status_changed

        from . import receivers

        run_status_changed.connect(receivers.on_run_status_changed, dispatch_uid="alerts.run_status_changed")
