"""Signals other apps (sweeps, pipelines, alerts) connect to instead of editing the run lifecycle."""
from django.dispatch import Signal

# Sent after the transaction that changed a run's status commits (from `services.transition`, the one
# place that writes Run.status), in whatever process made the change (web, worker, housekeeping).
# kwargs: run_id: int, status: str (the new one), previous: str, message: str.
# Receivers must not raise (a failure is logged and the others still run: `send_robust`).
run_status_changed = Signal()
