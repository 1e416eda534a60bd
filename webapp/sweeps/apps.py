from django.apps import AppConfig


class SweepsConfig(AppConfig):
    name = "webapp.sweeps"
    label = "sweeps"

    def ready(self) -> None:
        # Connected in every process that loads Django (web, workers, housekeeping): a trial run's
        # end is announced in whichever process made the change (webapp.runs.signals).
        from webapp.runs.signals import run_status_changed

        from . import services

        run_status_changed.connect(services.on_run_status_changed, dispatch_uid="sweeps.advance")
