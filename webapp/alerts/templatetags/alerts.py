"""{% run_alert_banner run %}: the firing alerts of a run, above its charts (the live ones are added
by webapp/static/js/alert_banner.js from the run's stream)."""
from django import template

from webapp.alerts import selectors

register = template.Library()


@register.inclusion_tag("alerts/_banner.html")
def run_alert_banner(run) -> dict:
    return {"alerts": selectors.firing_on_run(run), "run": run}
