"""PostgresRedisSink: the trainer's metrics into Postgres (durable) and a Redis Stream (live).

The trainer thread only appends to an in-memory buffer; a background thread flushes it
as soon as points arrive (what comes in during a write goes into the next one), retries every
`flush_interval` seconds while Postgres is unreachable, and flushes the rest at close.

One flush is one Postgres transaction:
  1. intern new metric names (MetricKey, cached per process);
  2. COPY the points into the table (binary COPY, rows built with numpy); if any (run, key,
     step) is already there (a retried batch), COPY into a temporary staging table instead and
     `INSERT ... SELECT ... ON CONFLICT (run_id, key_id, step) DO UPDATE`: a retried batch
     creates no duplicate. A resumed run starts by deleting the steps after its checkpoint, so
     its series has no stale tail;
  3. histograms, group records (capped per run, see GROUP_SAMPLE_CAP) and artifacts;
  4. Run.step / total_steps / summary (latest value of each metric) in the same transaction, so
     Run.step never claims a step whose metrics are not stored.
After the commit, one XADD per step goes to the run's Redis stream (webapp.runs.live.stream_key),
exactly once: entries are numbered per sink and added by one Lua script that skips the numbers
already added (a marker key beside the stream), so a publish retried after a lost reply (redis-py
retries on timeouts; a killed connection) adds no duplicate.

Then the flush observers (`observers=`: callables given {step: scalars} of the batch, in step
order; a worker's run gets run_observers(): the alert rules, and a sweep trial's pruning) run on the
flusher thread, never on the trainer's; one that raises is logged and the others still run.

Fencing (`attempt=`, as workers.tasks passes it): every write transaction, and every flush() even
with nothing buffered, starts with `SELECT ... FOR SHARE` of the run row and goes on only while
the run is running with this attempt number; otherwise it raises AttemptSuperseded and the sink
writes nothing more. The row lock makes the check and the writes one step: a concurrent status
change (services.transition locks the row FOR UPDATE) waits for the flush or comes before it.
The trainer calls flush() before it writes a checkpoint or the final model, so a checkpoint never
skips metrics still in the buffer and a superseded attempt cannot publish a checkpoint.

Faults:
- Postgres unreachable: the batch stays in the buffer and the flush is retried with exponential
  backoff (up to 5 s). Nothing buffered is dropped. The buffer is bounded (`max_buffer_points`):
  when it overflows, log() raises SinkOverflowError naming the cause, which fails the run loudly
  instead of silently losing points or growing without limit.
- Postgres connection dropped (server restart, pg_terminate_backend): the same; the next try
  opens a new connection. A transaction left open by a frozen process (SIGSTOP) is ended by the
  server after IDLE_IN_TRANSACTION_S, so its row lock cannot block the run's status changes.
- Redis unreachable: Postgres still gets everything; live entries wait in a bounded queue (the
  stream's own cap) and are sent when Redis answers again. History is always in Postgres.
"""
from __future__ import annotations

import json
import logging
import math
import struct
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable, Sequence

import numpy as np
import psycopg
import redis

log = logging.getLogger(__name__)

# Group inspector records are large (tokens, probabilities per token): keep at most this many
# groups per run; later ones are dropped with one warning. At the defaults (2 groups every 10
# steps) this covers 5,000 steps.
GROUP_SAMPLE_CAP = 1000
_STAGE_SQL = (
    "CREATE TEMP TABLE IF NOT EXISTS gft_metric_stage "
    "(run_id bigint, key_id bigint, step integer, value double precision, wall_time double precision) "
    "ON COMMIT DELETE ROWS"
)
# A transaction of the sink idle this long (its process frozen mid-flush) is ended by the server.
IDLE_IN_TRANSACTION_S = 15
# KEYS: stream, marker. ARGV: sink token, stream cap, number of the first entry, entries...
# Adds the entries numbered above the marker's (when the marker is this sink's), then moves it.
_PUBLISH_LUA = """
local done = 0
local marker = redis.call('GET', KEYS[2])
if marker then
  local token, n = string.match(marker, '^(.*):(%d+)$')
  if token == ARGV[1] then done = tonumber(n) end
end
local last = done
for i = 4, #ARGV do
  local n = tonumber(ARGV[3]) + i - 4
  if n > done then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'data', ARGV[i])
    last = n
  end
end
redis.call('SET', KEYS[2], ARGV[1] .. ':' .. last, 'EX', 604800)
return last
"""
_FENCE_SQL = "SELECT attempt, status FROM runs_run WHERE id = %s FOR SHARE"
_COPY_SQL = "COPY {table} (run_id, key_id, step, value, wall_time) FROM STDIN (FORMAT BINARY)"
# One row of Postgres' binary COPY format: field count, then (length, big-endian value) per column
# (bigint, bigint, integer, double precision, double precision). Building these with numpy instead
# of formatting text saves ~70% of the formatting and ~18% of the server's COPY time (Postgres no
# longer parses float text): bench/README.md, ingest.
_COPY_ROW = np.dtype([("fields", ">i2"), ("run_len", ">i4"), ("run_id", ">i8"), ("key_len", ">i4"), ("key_id", ">i8"),
                      ("step_len", ">i4"), ("step", ">i4"), ("value_len", ">i4"), ("value", ">f8"),
                      ("wall_len", ">i4"), ("wall_time", ">f8")])
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # signature, flags, header extension
_COPY_TRAILER = struct.pack(">h", -1)
StepScalars = dict[int, dict[str, float]]
# Called after each committed flush with the batch's {step: scalars}; must not block long (it
# delays the next flush, never the trainer) and should not raise (logged if it does).
FlushObserver = Callable[[StepScalars], None]
_UPSERT_SQL = (
    "INSERT INTO runs_metricpoint (run_id, key_id, step, value, wall_time) "
    "SELECT run_id, key_id, step, value, wall_time FROM gft_metric_stage "
    "ON CONFLICT (run_id, key_id, step) DO UPDATE SET value = EXCLUDED.value, wall_time = EXCLUDED.wall_time"
)


class SinkError(RuntimeError):
    """Metrics could not be stored (buffer overflow, or Postgres unreachable at close)."""


class SinkOverflowError(SinkError):
    pass


class AttemptSuperseded(RuntimeError):
    """This attempt of the run is no longer the current one (another attempt started, or the run
    was failed or ended meanwhile): it must stop without writing anything, checkpoint included."""


def conninfo_from_settings() -> dict[str, Any]:
    """psycopg connection parameters of Django's default database (the test DB under pytest)."""
    from django.db import connection

    s = connection.settings_dict
    params = {"dbname": s["NAME"], "user": s["USER"], "host": s["HOST"], "port": s["PORT"]}
    if s.get("PASSWORD"):
        params["password"] = s["PASSWORD"]
    return params


def _jsonb_text(value: Any) -> str:
    """JSON for a jsonb column. Postgres refuses the NUL character in jsonb, and a sampled model
    response can contain one: it is stored as U+FFFD, the replacement character."""
    def clean(v: Any) -> Any:
        if isinstance(v, str):
            return v.replace("\x00", "\ufffd")
        if isinstance(v, dict):
            return {clean(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), default=str)


class PostgresRedisSink:
    """A gft_core.metrics.MetricSink that persists to Postgres and publishes to Redis."""

    def __init__(self, run_id: int, *, attempt: int | None = None, conninfo: dict[str, Any] | None = None,
                 redis_url: str | None = None, flush_interval: float = 0.5, max_buffer_points: int = 5_000_000,
                 close_timeout: float = 120.0, observers: Sequence[FlushObserver] = ()):
        from django.conf import settings

        from webapp.runs import live

        self.run_id = run_id
        self.attempt = attempt  # None: unfenced (tests, benchmarks)
        self.conninfo = conninfo or conninfo_from_settings()
        self.redis = redis.Redis.from_url(redis_url or settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        self.stream = live.stream_key(run_id)
        self.stream_maxlen = live.STREAM_MAXLEN
        self.flush_interval = flush_interval
        self.max_buffer_points = max_buffer_points
        self.close_timeout = close_timeout
        self.observers = list(observers)  # see the module docstring; run_observers() for a worker's run

        self._lock = threading.Lock()  # guards the buffers
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._steps: dict[int, list] = {}  # step -> [wall_time, scalars, histograms]
        self._groups: list[tuple[int, list[dict]]] = []
        self._artifacts: list[tuple[str, str, int]] = []
        self._points = 0  # scalars waiting in the buffer
        self._total: int | None = None
        self._eval_suite_id: int | None = None  # GFTConfig.eval_suite["suite_id"], read at start()
        self._live: deque[tuple[int, str]] = deque(maxlen=self.stream_maxlen)  # (number, JSON) not yet added
        self._live_count = 0  # entries numbered so far
        self._live_token = uuid.uuid4().hex  # this sink's entries, for the publish marker
        self._publish_script = self.redis.register_script(_PUBLISH_LUA)
        self._conn: psycopg.Connection | None = None
        self._keys: dict[str, int] = {}
        self._groups_stored = 0
        self._groups_warned = False
        self._error: BaseException | None = None
        self._superseded: AttemptSuperseded | None = None
        self._thread: threading.Thread | None = None
        self.last_step = 0  # latest step durably stored
        self.flushes = 0
        self.points_written = 0

    # ------------------------------------------------------------------ MetricSink protocol
    def start(self, *, total_steps: int, start_step: int, config: dict) -> None:
        """Open the connection, drop stored steps after `start_step` (a resume), start flushing."""
        self._total = total_steps
        self.last_step = start_step
        self._eval_suite_id = ((config or {}).get("eval_suite") or {}).get("suite_id")

        def begin(conn: psycopg.Connection) -> None:
            with conn.transaction():
                self._check_fence(conn)  # a late, superseded attempt must not delete the new one's steps
                for table in ("runs_metricpoint", "runs_metrichistogram", "runs_groupsample"):
                    conn.execute(f"DELETE FROM {table} WHERE run_id = %s AND step > %s", (self.run_id, start_step))
                conn.execute("UPDATE runs_run SET step = %s, total_steps = %s WHERE id = %s",
                             (start_step, total_steps, self.run_id))
                self._groups_stored = conn.execute("SELECT count(*) FROM runs_groupsample WHERE run_id = %s",
                                                   (self.run_id,)).fetchone()[0]

        self._with_retry(begin, deadline=time.monotonic() + self.close_timeout)
        self._thread = threading.Thread(target=self._run, name=f"sink-run-{self.run_id}", daemon=True)
        self._thread.start()

    def log(self, step: int, scalars: dict[str, float], histograms: dict | None = None) -> None:
        self._raise_if_failed()
        clean = {k: float(v) for k, v in scalars.items() if v is not None}
        with self._lock:
            if self._points + len(clean) > self.max_buffer_points:
                raise SinkOverflowError(
                    f"metric buffer of run {self.run_id} is full ({self._points} points not yet stored): "
                    f"Postgres has been unreachable too long ({self._error_hint()})")
            entry = self._steps.get(step)
            if entry is None:
                self._steps[step] = [time.time(), clean, dict(histograms or {})]
            else:  # the same step logged in two calls (e.g. eval after train): merge
                self._points -= len(entry[1])
                entry[1].update(clean)
                entry[2].update(histograms or {})
                clean = entry[1]
            self._points += len(clean)
        # Wake the flusher at once (group commit): what arrives while it writes goes into the next
        # batch, so a live viewer waits one flush (milliseconds), not a whole flush interval.
        self._wake.set()

    def log_groups(self, step: int, groups: list[dict]) -> None:
        with self._lock:
            self._groups.append((step, groups))

    def log_evaluation(self, step: int, benchmark: str, result: dict) -> None:
        """One benchmark of the run's eval suite, evaluated by the trainer at `step`: an Evaluation
        + EvalResult through webapp.evaluations.services (written now: a rare, large record),
        fenced by the attempt like the other writes; the service publishes the live event."""
        from webapp.evaluations.services import EvalError, record_run_evaluation

        self._raise_if_superseded()
        if self._eval_suite_id is None:
            log.warning("run %s: evaluation of %s at step %s has no suite id; not stored", self.run_id, benchmark, step)
            return
        try:
            stored = record_run_evaluation(self.run_id, self._eval_suite_id, step, benchmark, result,
                                           attempt=self.attempt)
        except EvalError as exc:  # the suite was deleted meanwhile: training goes on
            log.warning("run %s: evaluation of %s at step %s not stored: %s", self.run_id, benchmark, step, exc)
            return
        if stored is None:
            self._superseded = AttemptSuperseded(f"attempt {self.attempt} of run {self.run_id} is superseded: its "
                                                 "evaluation result was refused")
            raise self._superseded

    def artifact(self, kind: str, path: str, step: int) -> None:
        with self._lock:
            self._artifacts.append((kind, str(path), step))
        self._wake.set()

    def close(self) -> None:
        """Flush everything that is buffered; raise SinkError if it cannot be stored in time,
        AttemptSuperseded if the attempt was fenced off (what was buffered is dropped)."""
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join()
            self._thread = None
        try:
            self._raise_if_superseded()
            if self._error is not None and self._has_pending():
                raise SinkError(f"metrics of run {self.run_id} could not be stored: {self._error}")
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self.redis.close()

    # ------------------------------------------------------------------ flushing thread
    def _run(self) -> None:
        backoff = 0.0
        close_deadline: float | None = None
        while True:
            stopping = self._stop.is_set()
            if not stopping:
                self._wake.wait(backoff or self.flush_interval)
                self._wake.clear()
            elif close_deadline is None:
                close_deadline = time.monotonic() + self.close_timeout
            try:
                self._flush_once()
                self._error, backoff = None, 0.0
            except AttemptSuperseded as exc:
                self._error = exc
                log.warning("run %s: %s", self.run_id, exc)
                return
            except psycopg.Error as exc:
                self._error = exc
                backoff = min(5.0, max(0.1, backoff * 2))
                log.warning("run %s: metrics flush failed (%s); retrying in %.1fs", self.run_id, exc, backoff)
                if stopping:
                    if time.monotonic() > close_deadline:
                        return
                    time.sleep(backoff)
                continue
            except BaseException as exc:  # a bug, not a fault: surface it to the trainer
                self._error = exc
                log.exception("run %s: metrics flush crashed", self.run_id)
                return
            if stopping and not self._has_pending():
                return

    def flush(self) -> None:
        """Store everything logged so far, now (the trainer calls this before each checkpoint).

        Retries while Postgres is unreachable, up to `close_timeout` (then SinkError); with an
        attempt, checks the fence even when nothing is buffered (AttemptSuperseded)."""
        deadline = time.monotonic() + self.close_timeout
        delay = 0.1
        while True:
            try:
                self._flush_once(fence=True)
                return
            except psycopg.Error as exc:
                if time.monotonic() > deadline:
                    raise SinkError(f"metrics of run {self.run_id} could not be stored: {exc}") from exc
                log.warning("run %s: flush failed (%s); retrying in %.1fs", self.run_id, exc, delay)
                time.sleep(delay)
                delay = min(5.0, delay * 2)

    def _flush_once(self, fence: bool = False) -> None:
        """One try: write what is buffered (with `fence`, check the attempt even if nothing is)."""
        self._raise_if_superseded()
        with self._flush_lock:  # one flush at a time: batches and live entries stay in step order
            try:
                self._flush(fence)
            except AttemptSuperseded as exc:
                self._superseded = exc
                raise
            except psycopg.Error:
                self._drop_connection()  # under the lock: no other flush is using it
                raise

    def _flush(self, fence: bool = False) -> None:
        with self._lock:
            steps, self._steps = self._steps, {}
            groups, self._groups = self._groups, []
            artifacts, self._artifacts = self._artifacts, []
            points = self._points
            self._points = 0
        if not (steps or groups or artifacts):
            if fence and self.attempt is not None:
                conn = self._connection()
                with conn.transaction():
                    self._check_fence(conn)
            self._publish([])
            return
        try:
            self._write(steps, groups, artifacts)
        except BaseException:
            with self._lock:  # put the batch back in front of what arrived meanwhile
                for step, entry in self._steps.items():
                    old = steps.get(step)
                    if old is None:
                        steps[step] = entry
                    else:
                        points -= len(old[1])
                        old[1].update(entry[1])
                        old[2].update(entry[2])
                self._steps = steps
                self._groups = groups + self._groups
                self._artifacts = artifacts + self._artifacts
                self._points += points
            raise
        self.flushes += 1
        self.points_written += points
        self._publish([json.dumps({"step": s, "t": e[0], "scalars": _finite(e[1]), "histograms": e[2]})
                       for s, e in sorted(steps.items())])
        if steps and self.observers:  # after the publish: an alert's banner follows the step's charts
            batch = {step: steps[step][1] for step in sorted(steps)}
            for observer in self.observers:
                try:
                    observer(batch)
                except Exception:  # noqa: BLE001 - an observer's failure must not stop the metrics
                    log.exception("run %s: flush observer %r failed", self.run_id, observer)

    def _write(self, steps: dict[int, list], groups: list, artifacts: list) -> None:
        conn = self._connection()
        with conn.transaction():
            self._check_fence(conn)
            names = {k for e in steps.values() for k in e[1]} | {k for e in steps.values() for k in e[2]}
            key_ids = self._intern(conn, names)
            if any(e[1] for e in steps.values()):
                self._copy_points(conn, _copy_payload(self.run_id, steps, key_ids))
            hist_rows = [(self.run_id, key_ids[k], step, float(h["lo"]), float(h["hi"]), [int(c) for c in h["counts"]])
                         for step, (_, _, hists) in steps.items() for k, h in hists.items()]
            if hist_rows:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO runs_metrichistogram (run_id, key_id, step, lo, hi, counts) VALUES (%s,%s,%s,%s,%s,%s) "
                        "ON CONFLICT (run_id, key_id, step) DO UPDATE SET lo = EXCLUDED.lo, hi = EXCLUDED.hi, "
                        "counts = EXCLUDED.counts", hist_rows)
            self._write_groups(conn, groups)
            if artifacts:
                from webapp.runs.files import disk_size

                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO runs_artifact (run_id, kind, path, step, size_bytes, created_at) "
                        "VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (run_id, kind, path) "
                        "DO UPDATE SET step = EXCLUDED.step, size_bytes = EXCLUDED.size_bytes",
                        [(self.run_id, kind, path, step, disk_size(path)) for kind, path, step in artifacts])
            if steps:
                last = max(steps)
                latest: dict[str, float] = {}
                for step in sorted(steps):
                    latest.update(steps[step][1])
                conn.execute(
                    "UPDATE runs_run SET step = GREATEST(step, %s), total_steps = %s, "
                    "summary = summary || %s::jsonb, metric_range = metric_range || " + _RANGE_MERGE_SQL +
                    " WHERE id = %s",
                    (last, self._total or 0, json.dumps(_finite(latest)), json.dumps(_ranges(steps)), self.run_id))
                self.last_step = max(self.last_step, last)

    def _copy_points(self, conn: psycopg.Connection, rows: memoryview) -> None:
        """COPY straight into the table (fast path: new steps); on a duplicate, upsert instead.

        New steps never conflict (start() removed the steps after the resume point), so the
        direct COPY is the usual path, about twice as fast as the staged upsert. A duplicate means
        this batch (or part of it) was stored before, e.g. a commit whose acknowledgement was
        lost: the savepoint rolls the COPY back and the staged upsert makes the retry harmless.
        """
        try:
            with conn.transaction(), conn.cursor() as cur:  # a savepoint inside the flush transaction
                with cur.copy(_COPY_SQL.format(table="runs_metricpoint")) as cp:
                    cp.write(rows)
            return
        except psycopg.errors.UniqueViolation:
            pass
        conn.execute(_STAGE_SQL)
        with conn.cursor() as cur:
            with cur.copy(_COPY_SQL.format(table="gft_metric_stage")) as cp:
                cp.write(rows)
            cur.execute(_UPSERT_SQL)

    def _write_groups(self, conn: psycopg.Connection, groups: list[tuple[int, list[dict]]]) -> None:
        rows = []
        for step, records in groups:
            for i, record in enumerate(records):
                rows.append((self.run_id, step, int(record.get("group_id", i)), _jsonb_text(record)))
        room = max(0, GROUP_SAMPLE_CAP - self._groups_stored)
        if len(rows) > room:
            if not self._groups_warned:
                log.warning("run %s: group sample cap of %d reached; later groups are not stored",
                            self.run_id, GROUP_SAMPLE_CAP)
                self._groups_warned = True
            rows = rows[:room]
        if rows:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO runs_groupsample (run_id, step, group_index, data) VALUES (%s, %s, %s, %s::jsonb) "
                    "ON CONFLICT (run_id, step, group_index) DO UPDATE SET data = EXCLUDED.data", rows)
            self._groups_stored += len(rows)

    def _intern(self, conn: psycopg.Connection, names: set[str]) -> dict[str, int]:
        missing = sorted(n for n in names if n not in self._keys)
        if missing:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO runs_metrickey (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
                                [(n,) for n in missing])
                cur.execute("SELECT name, id FROM runs_metrickey WHERE name = ANY(%s)", (missing,))
                self._keys.update(dict(cur.fetchall()))
        return self._keys

    def _check_fence(self, conn: psycopg.Connection) -> None:
        """Inside a transaction: lock the run row (FOR SHARE) and refuse unless this attempt is
        the running one. The lock holds until the transaction ends."""
        if self.attempt is None:
            return
        row = conn.execute(_FENCE_SQL, (self.run_id,)).fetchone()
        if row is None or row[0] != self.attempt or row[1] != "running":
            now = "deleted" if row is None else f"attempt {row[0]}, {row[1]}"
            raise AttemptSuperseded(f"attempt {self.attempt} of run {self.run_id} is superseded (the run is now "
                                    f"{now}): its metrics, checkpoints and status are no longer written")

    # ------------------------------------------------------------------ Redis
    def _publish(self, entries: list[str]) -> None:
        """XADD the entries (after older ones that Redis missed), each once; a Redis outage only delays them."""
        for data in entries:
            self._live_count += 1
            self._live.append((self._live_count, data))
        if not self._live:
            return
        try:
            pending = list(self._live)
            done = int(self._publish_script(keys=[self.stream, f"{self.stream}:published"],
                                            args=[self._live_token, self.stream_maxlen, pending[0][0],
                                                  *(data for _, data in pending)]))
            while self._live and self._live[0][0] <= done:
                self._live.popleft()
        except redis.RedisError as exc:
            log.warning("run %s: live stream unavailable (%s); %d entries wait", self.run_id, exc, len(self._live))

    # ------------------------------------------------------------------ helpers
    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(**self.conninfo, autocommit=True, connect_timeout=5,
                                         application_name=f"gft-sink-run-{self.run_id}",
                                         options=f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_S * 1000}")
        return self._conn

    def _with_retry(self, fn, deadline: float):
        """fn(connection), tried again on a new connection while Postgres is unreachable."""
        delay = 0.2
        while True:
            try:
                with self._flush_lock:
                    return fn(self._connection())
            except psycopg.OperationalError as exc:
                self._drop_connection()
                if time.monotonic() > deadline:
                    raise
                log.warning("run %s: Postgres unreachable (%s); retrying in %.1fs", self.run_id, exc, delay)
                time.sleep(delay)
                delay = min(5.0, delay * 2)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - the connection is already broken
                pass
            self._conn = None

    def _has_pending(self) -> bool:
        with self._lock:
            return bool(self._steps or self._groups or self._artifacts)

    @property
    def started(self) -> bool:
        """Between start() and close(): what log() takes now will be stored."""
        return self._thread is not None

    @property
    def superseded(self) -> bool:
        return self._superseded is not None

    @property
    def total_steps(self) -> int | None:
        """The run's total steps, as the trainer gave them to start()."""
        return self._total

    def _raise_if_superseded(self) -> None:
        if self._superseded is not None:
            raise AttemptSuperseded(str(self._superseded))

    def _raise_if_failed(self) -> None:
        self._raise_if_superseded()
        if self._thread is not None and not self._thread.is_alive() and self._error is not None:
            raise SinkError(f"metrics writer of run {self.run_id} stopped: {self._error}")

    def _error_hint(self) -> str:
        return f"last error: {self._error}" if self._error else "no error seen yet"


def run_observers(run_id: int) -> list[FlushObserver]:
    """The flush observers of a worker's run: the team's alert rules (webapp.alerts.monitor) and, for
    a trial of a sweep with a pruner, its pruning reporter (webapp.sweeps.pruning). Workers may
    import webapp, not the other way round, so the list is made here."""
    from webapp.alerts.monitor import RunMonitor
    from webapp.sweeps.pruning import hook_for

    observers: list[FlushObserver] = [RunMonitor(run_id)]
    reporter = hook_for(run_id)
    if reporter is not None:
        observers.append(reporter)
    return observers


def _copy_payload(run_id: int, steps: dict[int, list], key_ids: dict[str, int]) -> memoryview:
    """The scalars of `steps` (step -> [wall_time, scalars, histograms]) as binary COPY data."""
    sizes = [len(scalars) for _, scalars, _ in steps.values()]
    n = sum(sizes)
    # One buffer, filled in place: joining bytes objects of this size would cost more than the rows.
    data = np.empty(len(_COPY_HEADER) + n * _COPY_ROW.itemsize + len(_COPY_TRAILER), np.uint8)
    data[:len(_COPY_HEADER)] = np.frombuffer(_COPY_HEADER, np.uint8)
    data[-len(_COPY_TRAILER):] = np.frombuffer(_COPY_TRAILER, np.uint8)
    rows = data[len(_COPY_HEADER):-len(_COPY_TRAILER)].view(_COPY_ROW)
    rows["fields"] = 5
    rows["run_len"] = rows["key_len"] = rows["value_len"] = rows["wall_len"] = 8
    rows["step_len"] = 4
    rows["run_id"] = run_id
    rows["key_id"] = [key_ids[k] for _, scalars, _ in steps.values() for k in scalars]
    rows["value"] = [v for _, scalars, _ in steps.values() for v in scalars.values()]
    rows["step"] = np.repeat(list(steps), sizes)
    rows["wall_time"] = np.repeat([e[0] for e in steps.values()], sizes)
    return memoryview(data)


# Merges this batch's {key: [lo, hi]} into Run.metric_range (the run table's min / max / best
# columns); LEAST / GREATEST skip the NULL of a key seen for the first time.
_RANGE_MERGE_SQL = (
    "(SELECT COALESCE(jsonb_object_agg(b.key, jsonb_build_array("
    "LEAST((metric_range->b.key->>0)::float8, b.lo), GREATEST((metric_range->b.key->>1)::float8, b.hi))), '{}')"
    " FROM jsonb_to_recordset(%s::jsonb) AS b(key text, lo float8, hi float8))")


def _ranges(steps: dict) -> list[dict[str, Any]]:
    """[{"key", "lo", "hi"}] of the finite scalar values of a batch of steps."""
    ranges: dict[str, list[float]] = {}
    for _, scalars, _ in steps.values():
        for k, v in scalars.items():
            if math.isfinite(v):
                r = ranges.setdefault(k, [v, v])
                r[0], r[1] = min(r[0], v), max(r[1], v)
    return [{"key": k, "lo": lo, "hi": hi} for k, (lo, hi) in ranges.items()]


def _finite(scalars: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN/inf: they become null for Redis and the summary (Postgres keeps them)."""
    if all(map(math.isfinite, scalars.values())):
        return scalars
    return {k: (v if math.isfinite(v) else None) for k, v in scalars.items()}

