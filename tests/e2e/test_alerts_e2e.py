"""Issue 21 end to end: a real worker trains the small model with SFT at a learning rate that
collapses its entropy within 3 steps (6.6 -> 4.2 -> 1.6 nats, seed 0); the built-in entropy rule,
set by the team to a 1-step window and the cancel action, fires from the sink's live evaluation,
the run stops with a checkpoint, the webhook reaches a real local HTTP server, the run page shows
the banner in Chromium, and `gft alerts list --run` prints it. And the alert e-mail: sent by the
real worker through Django's SMTP backend to a real SMTP server in the test."""
from __future__ import annotations

import email
import email.policy
import json
import socketserver
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.browser.support import SHOTS
from tests.conftest import subprocess_env
from tests.runs_support import wait_for
from webapp.alerts import services
from webapp.alerts.builtin import ensure_builtin_rules
from webapp.alerts.models import Alert, AlertRule, Delivery
from webapp.runs import launch
from webapp.runs.models import Artifact, Run
from workers.sink import PostgresRedisSink, run_observers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def webhook_receiver():
    """A real HTTP server on 127.0.0.1 that records the JSON bodies POSTed to it."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def test_entropy_collapse_alert_cancels_the_run_and_notifies(celery_worker, live_server_url, chromium, team, user,
                                                             api_token, launch_inputs, webhook_receiver, tmp_path):
    url, received = webhook_receiver
    services.create_webhook(team, name="team-slack", url=url)
    ensure_builtin_rules(team)
    rule = AlertRule.objects.get(team=team, builtin="entropy_collapse")
    services.update_rule(rule, window=1, threshold=0.3, action="cancel")  # below 0.3 x step 1's entropy
    inputs = {**launch_inputs, "name": "collapse", "method": "sft", "lr": 0.1, "micro_batch_size": 2,
              "max_steps": 60, "checkpoint_interval": 0}  # room for the cancel: the sink flushes every 0.5 s
    ctx = chromium.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(120_000)  # a shared CI machine under load: generous waits, nothing timed
    page = ctx.new_page()
    page.goto(f"{live_server_url}/accounts/login/")  # before the run loads the machine
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "alice-pass-123")
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(f"{live_server_url}/")
    run = launch.submit_run(team, user, inputs)
    page.goto(f"{live_server_url}/runs/{run.pk}/")
    try:  # the banner arrives on the run's live stream (or is rendered if the page loads later)
        page.wait_for_selector('#alert-banner .alert-item:has-text("Entropy collapse")', timeout=240_000)
    except Exception:
        raise AssertionError(celery_worker.log()[-4000:]) from None
    banner = page.inner_text("#alert-banner")
    page.screenshot(path=str(SHOTS / "alert-banner.png"))

    run = wait_for(lambda: Run.objects.filter(pk=run.pk, status__in=["cancelled", "succeeded", "failed"]).first(),
                   timeout=240, what="the run to stop", on_timeout=lambda: celery_worker.log()[-3000:])
    alert = Alert.objects.get(run=run, rule=rule)
    assert run.status == "cancelled", run.error
    assert alert.step <= 4 and run.step < 60  # stopped by the alert, not by reaching max_steps
    assert alert.values["value"] < 0.3 * alert.values["baseline"]
    assert f"step {alert.step}" in banner and "Entropy collapse" in banner
    assert Artifact.objects.filter(run=run, kind="checkpoint", step=run.step).exists()  # checkpoint kept
    assert "alert rule Entropy collapse" in run.events.get(kind="cancel_requested").message

    wait_for(lambda: received, timeout=120, what="the webhook")
    assert received[0]["text"].startswith("[critical] Entropy collapse on run #") and f"step {alert.step}" in received[0]["text"]
    wait_for(lambda: Delivery.objects.filter(alert=alert, status="delivered").exists(), timeout=60, what="delivered")

    env = subprocess_env(GFT_URL=live_server_url, GFT_TOKEN=api_token, XDG_CONFIG_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "client", "alerts", "list", "--run", str(run.pk)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Entropy collapse" in out.stdout and f"#{run.pk}" in out.stdout and "critical" in out.stdout


class SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) for smtplib: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self) -> None:
        self.reply("220 test-smtp ready")
        envelope: dict = {"rcpt": []}
        while line := self.rfile.readline():
            verb = line.decode(errors="replace").strip()[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250 test-smtp")
            elif verb == "MAIL":
                envelope = {"from": line.decode().split(":", 1)[1].strip(), "rcpt": []}
                self.reply("250 OK")
            elif verb == "RCPT":
                envelope["rcpt"].append(line.decode().split(":", 1)[1].strip())
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                data = []
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data.append(chunk[1:] if chunk.startswith(b".") else chunk)  # undo dot-stuffing
                self.server.received.append({**envelope, "message": email.message_from_bytes(
                    b"".join(data), policy=email.policy.default)})
                self.reply("250 OK queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            elif verb in ("RSET", "NOOP"):
                self.reply("250 OK")
            else:
                self.reply("502 not implemented")


@pytest.fixture
def smtp_worker(monkeypatch, request):
    """A real SMTP server on 127.0.0.1 and a real worker whose Django mail settings point at it."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), SMTPHandler)
    server.daemon_threads = True
    server.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
    monkeypatch.setenv("EMAIL_HOST", "127.0.0.1")
    monkeypatch.setenv("EMAIL_PORT", str(server.server_address[1]))
    monkeypatch.setenv("DEFAULT_FROM_EMAIL", "alerts@gft.test")
    worker = request.getfixturevalue("celery_worker")  # started with this environment
    yield worker, server.received
    server.shutdown()
    server.server_close()


def test_alert_email_reaches_a_real_smtp_server_through_the_worker(smtp_worker, team, user):
    """The sink's alert rules fire on a non-finite loss (the run's flush, as in a worker); the e-mail
    delivery task runs in the real worker and Django's SMTP backend hands the message to the server."""
    worker, received = smtp_worker
    user.email = "alice@example.org"
    user.save()
    run = Run.objects.create(team=team, name="mail", method="gft", config={}, created_by=user, status="running")
    sink = PostgresRedisSink(run.pk, flush_interval=0.05, observers=run_observers(run.pk))
    sink.start(total_steps=3, start_step=0, config={})
    sink.log(1, {"loss": 1.0})
    sink.log(2, {"loss": float("nan")})
    sink.close()
    alert = Alert.objects.get(run=run, rule__builtin="nonfinite_loss")
    wait_for(lambda: received, timeout=120, what="the e-mail at the SMTP server", on_timeout=lambda: worker.log()[-3000:])
    mail = received[0]
    assert mail["from"] == "<alerts@gft.test>" and mail["rcpt"] == ["<alice@example.org>"]
    msg = mail["message"]
    assert msg["Subject"] == f"[GFT Studio] Non-finite loss on run #{run.pk}" and msg["To"] == "alice@example.org"
    assert msg.get_content().strip() == alert.message and "at step 2" in alert.message
    wait_for(lambda: Delivery.objects.filter(alert=alert, channel="email", status="delivered", attempts=1).exists(),
             timeout=60, what="the delivery recorded as delivered")
