"""Shared helpers of the benchmarks: timing statistics, tables, RESULTS.md, scratch databases.

Rules every benchmark follows (issue 7): same machine, same run, same inputs for both sides;
warm-up excluded; the median of several repetitions with min and max shown.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
RESULTS = Path(os.environ.get("BENCH_RESULTS", BENCH_DIR / "RESULTS.md"))

# Dedicated stores: never the dev stack (Redis db 0, database gft_studio) nor the test suite
# (Redis db 15, database test_gft_studio).
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
REDIS_BASE = os.environ.get("BENCH_REDIS_BASE", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "14"))
REDIS_URL = f"{REDIS_BASE}/{REDIS_DB}"


class Skip(Exception):
    """A benchmark (or one side of it) cannot run here; the message says why."""


# ---------------------------------------------------------------------- statistics


@dataclass
class Stat:
    """Median with min and max of repeated measurements (warm-up already dropped)."""

    median: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, xs: Iterable[float]) -> "Stat":
        xs = [float(x) for x in xs]
        if not xs:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(statistics.median(xs), min(xs), max(xs), len(xs))

    def fmt(self, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
        m, lo, hi = self.median * scale, self.lo * scale, self.hi * scale
        return f"{_num(m, digits)}{unit} [{_num(lo, digits)}-{_num(hi, digits)}]"


def _num(x: float, digits: int = 3) -> str:
    if x != x:  # NaN
        return "n/a"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.1f}"
    if ax >= 10:
        return f"{x:.2f}"
    return f"{x:.{digits}g}" if ax < 0.01 and x != 0 else f"{x:.{digits}f}"


def percentile(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of xs; NaN for an empty list."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(q / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


# ---------------------------------------------------------------------- output


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Print a Markdown table (readable in a terminal too) and return its text."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    text = "\n".join([f"\n### {title}", "", line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]]) + "\n"
    print(text, flush=True)
    return text


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except Exception:  # noqa: BLE001 - not a git checkout
        return "unknown"


def machine() -> str:
    try:
        import torch

        t = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
        if torch.cuda.is_available():
            t += f", {torch.cuda.get_device_name(0)}"
    except ImportError:
        t = "no torch"
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {t}"


_RESULTS_HEADER = """# Benchmark results

Appended by `python -m bench all` / `python -m bench <name>`: one row per headline figure and run,
newest last. Figures are medians of the measured repetitions with [min-max]; warm-up excluded.
See bench/README.md for what each benchmark measures.

| date (UTC) | commit | machine | benchmark | figure | value [min-max] | goal | verdict |
|---|---|---|---|---|---|---|---|
"""


def record(benchmark: str, rows: Sequence[tuple[str, str, str, str]], *, quick: bool = False) -> None:
    """Append (figure, value, goal, verdict) rows to RESULTS.md (not in --quick smoke mode)."""
    if quick or os.environ.get("BENCH_NO_RECORD"):
        return
    if not RESULTS.exists() or not RESULTS.read_text().strip():
        RESULTS.write_text(_RESULTS_HEADER)
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    commit, mach = git_commit(), machine()
    with RESULTS.open("a") as f:
        for figure, value, goal, ok in rows:
            f.write(f"| {date} | {commit} | {mach} | {benchmark} | {figure} | {value} | {goal} | {ok} |\n")


# ---------------------------------------------------------------------- scratch stores


def pg_admin_conn():
    import psycopg

    return psycopg.connect(f"{PG_URL}/postgres", autocommit=True, connect_timeout=5)


def ensure_database(name: str, *, fresh: bool = False) -> str:
    """Create database `name` (dropped first when fresh); return its URL."""
    assert name.startswith("bench_"), "benchmarks only touch their own bench_* databases"
    with pg_admin_conn() as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and fresh:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = None
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    return f"{PG_URL}/{name}"


def django_env(database: str) -> dict[str, str]:
    """Environment of a process that uses the Django project on a bench database and Redis db 14."""
    env = dict(os.environ)
    env.update(DATABASE_URL=f"{PG_URL}/{database}", REDIS_URL=REDIS_URL, CELERY_BROKER_URL=REDIS_URL,
               DEBUG="1", DJANGO_SETTINGS_MODULE="webapp.settings", PYTHONUNBUFFERED="1")
    env.setdefault("SECRET_KEY", "bench-only-secret-key")
    env.setdefault("ARTIFACT_ROOT", str(ROOT / "var" / "bench" / "artifacts"))
    return env


def migrate(database: str) -> None:
    """`DATABASE_URL=... python manage.py migrate` into a bench database (created if missing)."""
    ensure_database(database)
    r = subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT,
                       env=django_env(database), capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"migrate of {database} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")


def setup_django(database: str) -> None:
    """Point this process at a bench database + Redis db 14 and call django.setup()."""
    os.environ.update({k: v for k, v in django_env(database).items()
                       if k in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DEBUG", "SECRET_KEY",
                                "DJANGO_SETTINGS_MODULE", "ARTIFACT_ROOT")})
    import django

    django.setup()


def flush_bench_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def services_up() -> str | None:
    """None when Postgres and Redis answer, else why not."""
    try:
        with pg_admin_conn() as c:
            c.execute("SELECT 1")
    except Exception as e:  # noqa: BLE001
        return f"Postgres at {PG_URL} unreachable: {e}"
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as e:  # noqa: BLE001
        return f"Redis at {REDIS_URL} unreachable: {e}"
    return None


def have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
