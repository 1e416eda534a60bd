"""Helpers of the browser tests: logging in through the login page, reading charts, screenshots,
and runs whose metrics are written through the worker's real sink (no trainer)."""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
# Screenshots go to $GFT_SCREENSHOTS (default: a temporary folder the tests print).
SHOTS = Path(os.environ.get("GFT_SCREENSHOTS") or tempfile.mkdtemp(prefix="gft-shots-"))


def login(browser, base: str, username: str, password: str, width: int = 1440):
    """A new browser context logged in through the login page; returns its page."""
    ctx = browser.new_context(viewport={"width": width, "height": 900})
    page = ctx.new_page()
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(f"{base}/")
    return page


def points(page, chart: str) -> int:
    """Points the chart card holds (every series of every run), as the page counts them."""
    return int(page.get_attribute(f'.chart-card[data-chart="{chart}"]', "data-points") or 0)


def scalars(step: int, tau: float) -> dict[str, float]:
    """A plausible GFT step: every chart of the run page gets a value."""
    x = step / 10
    d = {"loss": 2.0 * math.exp(-x / 4) + 0.05 * math.sin(step), "grad_norm": 1.0 + 0.3 * math.sin(x), "lr": 1e-5,
         "tokens_per_s": 900 + 50 * math.sin(x), "time/step": 1.1, "time/rollout": 0.6, "time/reward": 0.1,
         "time/fwd_bwd": 0.4, "reward/mean": 0.3 + 0.05 * x, "reward/expert": 0.95, "reward/teacher": 0.7,
         "reward/self": 0.2 + 0.06 * x, "reward/self_accuracy": 0.2 + 0.05 * x, "response_len/mean": 40 + x,
         "adv/mean": 0.0, "adv/std": 0.9, "adv/min": -1.6, "adv/max": 1.9, "adv/expert": 0.8, "adv/teacher": 0.3,
         "adv/self": -0.4, "adv/zero_var_groups": 0.25 / (1 + x), "dcr/rectified_frac": 0.12 + 0.02 * math.sin(x),
         "dcr/rectified_frac/expert": 0.3, "dcr/rectified_frac/self": 0.02, "dcr/mean_c": 0.85, "dcr/mean_w": 1.3,
         "dcr/pi_p5": 0.02 * tau * 10, "dcr/pi_p50": 0.6, "dcr/pi_p95": 0.98, "policy/entropy": 1.2 - 0.02 * x}
    if step % 5 == 0:
        d["eval/accuracy"] = 0.1 + 0.04 * x
        d["policy/kl_start"] = 0.001 * step
    return d


def histogram(step: int) -> dict:
    counts = [int(100 * math.exp(-((i - 15 + step % 3) ** 2) / 20)) for i in range(30)]
    return {"adv/hist": {"lo": -3.0, "hi": 3.0, "counts": counts}}


def sink_for(run, start_step: int, total: int):
    from workers.sink import PostgresRedisSink

    sink = PostgresRedisSink(run.pk, flush_interval=0.2)
    sink.start(total_steps=total, start_step=start_step, config=run.config)
    return sink


def log_steps(sink, steps, tau: float) -> None:
    for s in steps:
        sink.log(s, scalars(s, tau), histogram(s))
    sink.flush()


def make_run(team, user, name: str, tau: float, status: str = "running", total: int = 200):
    from django.utils import timezone

    from webapp.runs.models import Run

    return Run.objects.create(team=team, name=name, method="gft", created_by=user, status=status, total_steps=total,
                              started_at=timezone.now(), attempt=1,
                              config={"tau": tau, "lr": 1e-5, "n_expert": 1, "n_self": 4, "max_steps": total,
                                      "group_sample_interval": 10, "group_sample_count": 2})
