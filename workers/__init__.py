"""Celery workers: run the gft_core trainer for queued runs and do light housekeeping."""
