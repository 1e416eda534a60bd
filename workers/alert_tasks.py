"""Alert deliveries (webhooks, e-mail) on the default queue: a thin entry into
webapp.alerts.services.deliver, retried with exponential backoff (services.backoff) while the
target fails; the Delivery row records each try, so the feed shows the last deliveries' status."""
from __future__ import annotations

from celery import shared_task

from webapp import dispatch
from webapp.alerts import services


@shared_task(name=dispatch.DELIVER_ALERT, bind=True, acks_late=True, max_retries=services.DELIVERY_RETRIES)
def deliver_alert(self, delivery_id: int) -> str:
    try:
        return services.deliver(delivery_id, last_try=self.request.retries >= services.DELIVERY_RETRIES)
    except services.DeliveryError as exc:
        raise self.retry(exc=exc, countdown=services.backoff(self.request.retries)) from None
