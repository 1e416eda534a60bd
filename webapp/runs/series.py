"""Reading metric series for charts: downsampled so that spikes survive, fast on huge runs.

Downsampling is "min/max buckets": the step range is cut into about max_points/2 buckets of equal
width and each bucket keeps its lowest and its highest point (exact points, with their step and
wall time), so a single-step spike always shows. A range with at most max_points steps comes back
at full resolution (what a zoomed chart asks for).

Bucket edges are absolute: bucket = step // width, width = bucket_width(lo, hi, max_points). For a
long series (more than ROLLUP_MIN_STEPS steps) the buckets are built from MetricRollup rows, the
min/max of fixed step buckets (LEVELS) stored once, instead of millions of points; the output
width is then a multiple of the rollup width, so each rollup row falls inside one output bucket and
the result is the same as bucketing the raw points. Parts of the range not covered by complete
rollup buckets (the edges of a zoom, the tail of a live run) are read from MetricPoint itself.
"""
from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable, Iterator

from asgiref.sync import sync_to_async

from django.db import connection, transaction

from .models import MetricKey, Run

# Rollup bucket widths in steps, finest first; each divides the next.
LEVELS: tuple[int, ...] = (32, 1024)
# Below this many steps a series is bucketed straight from MetricPoint (cheap enough).
ROLLUP_MIN_STEPS = 8192
# Series with a direction: "best" is the max (rewards, accuracies, throughput) or the min (loss, time).
_HIGHER_BETTER_PREFIXES = ("reward/", "eval/")
_HIGHER_BETTER = {"tokens_per_s"}
_LOWER_BETTER_PREFIXES = ("time/",)
_LOWER_BETTER = {"loss"}

Series = dict[str, list]


def direction(key: str) -> str | None:
    """'max' if a higher value of `key` is better, 'min' if lower is, None if neither."""
    if key in _HIGHER_BETTER or key.startswith(_HIGHER_BETTER_PREFIXES):
        return "max"
    if key in _LOWER_BETTER or key.startswith(_LOWER_BETTER_PREFIXES):
        return "min"
    return None


def key_ids(names: Iterable[str]) -> dict[str, int]:
    """Ids of the metric names that exist (a name nothing logged yet is left out)."""
    return dict(MetricKey.objects.filter(name__in=list(names)).values_list("name", "id"))


def level_for(span: int, max_points: int) -> int:
    """The coarsest rollup width that still gives at least max_points/2 buckets (1 = raw points)."""
    n = max(1, max_points // 2)
    if span < ROLLUP_MIN_STEPS:
        return 1
    best = 1
    for w in LEVELS:
        if span // w >= n:
            best = w
    return best


def bucket_width(lo: int, hi: int, max_points: int) -> int:
    """Output bucket width in steps for the range [lo, hi]; 0 means no bucketing (full resolution)."""
    span = hi - lo + 1
    if span <= max_points:
        return 0
    n = max(1, max_points // 2)
    w = level_for(span, max_points)
    return w * math.ceil(span / (n * w))


# ---------------------------------------------------------------------------------------- rollups
def ensure_rollups(run: Run, key_ids: Iterable[int]) -> dict[int, dict[int, int]]:
    """Bring the rollups of some series of a run up to date, in one pass over their new points.

    Returns {key_id: {width: last rolled bucket (-1 if none)}}. A bucket is rolled up once no new
    point can enter it: the run has finished, or a later point of the current attempt exists.
    Rollups of an earlier attempt are dropped first, because a resumed run rewrites the steps
    after its checkpoint.
    """
    result: dict[int, dict[int, int]] = {}
    todo: dict[int, int] = {}  # key_id -> first step after which nothing new can arrive (exclusive limit)
    with connection.cursor() as cur:
        for key_id in key_ids:
            # All rows of a series share one attempt (a mismatch drops them all), so one row tells.
            cur.execute("SELECT attempt FROM runs_metricrollup WHERE run_id = %s AND key_id = %s "
                        "ORDER BY width, bucket LIMIT 1", [run.pk, key_id])
            row = cur.fetchone()
            if row is not None and row[0] != run.attempt:
                cur.execute("DELETE FROM runs_metricrollup WHERE run_id = %s AND key_id = %s", [run.pk, key_id])
            result[key_id] = tops = _tops(cur, run.pk, key_id)
            extent = _extent(cur, run.pk, key_id, None, None)
            if extent is None or extent[1] - extent[0] + 1 < ROLLUP_MIN_STEPS:
                continue
            hi = extent[1]
            if run.is_active:
                cur.execute("SELECT wall_time FROM runs_metricpoint WHERE run_id = %s AND key_id = %s AND step = %s",
                            [run.pk, key_id, hi])
                wall = cur.fetchone()[0]
                # The newest point must be of this attempt: until the sink's start() has dropped a
                # resumed run's old tail, those old points must not be rolled up.
                if run.started_at is None or wall < run.started_at.timestamp() - 5:
                    continue
                todo[key_id] = hi  # buckets that end before the newest point are complete
            else:
                todo[key_id] = hi + 1
        if not todo:
            return result
        with transaction.atomic():
            cur.execute("SET LOCAL work_mem = '64MB'")  # the GROUP BY of a big first build stays in memory
            finer = 1
            for w in LEVELS:
                ranges = []
                for key_id, limit in todo.items():
                    tops = result[key_id]
                    last = limit // w - 1  # last complete bucket of width w
                    if finer > 1:  # built from the finer level: only over its complete buckets
                        last = min(last, (tops[finer] + 1) * finer // w - 1)
                    if last >= tops[w] + 1:
                        ranges.append((key_id, tops[w] + 1, last))
                        tops[w] = last
                if ranges:
                    _build(cur, run, w, finer, ranges)
                finer = w
    return result


def _build(cur, run: Run, w: int, finer: int, ranges: list[tuple[int, int, int]]) -> None:
    """Insert rollups of width `w` for the buckets (key_id, first, last) from the points, or from the
    finer level when finer > 1."""
    values = ", ".join(["(%s::bigint, %s::int, %s::int)"] * len(ranges))
    flat = [x for r in ranges for x in r]
    if finer == 1:
        low = min(r[1] for r in ranges) * w
        src = ("SELECT p.key_id, p.step / %(w)s AS b, count(*) AS n, "
               "min(ARRAY[p.value, p.step::float8, p.wall_time]) AS mn, "
               "max(ARRAY[p.value, p.step::float8, p.wall_time]) AS mx "
               f"FROM runs_metricpoint p JOIN (VALUES {values}) AS k(key_id, first, last) ON p.key_id = k.key_id "
               "WHERE p.run_id = %(run)s AND p.step >= %(low)s "
               "AND p.step >= k.first * %(w)s AND p.step < (k.last + 1) * %(w)s GROUP BY 1, 2")
    else:
        low = min(r[1] for r in ranges) * (w // finer)
        src = ("SELECT r.key_id, r.bucket / %(ratio)s AS b, sum(r.n) AS n, "
               "min(ARRAY[r.min_value, r.min_step::float8, r.min_wall]) AS mn, "
               "max(ARRAY[r.max_value, r.max_step::float8, r.max_wall]) AS mx "
               f"FROM runs_metricrollup r JOIN (VALUES {values}) AS k(key_id, first, last) ON r.key_id = k.key_id "
               "WHERE r.run_id = %(run)s AND r.width = %(finer)s AND r.bucket >= %(low)s "
               "AND r.bucket >= k.first * %(ratio)s AND r.bucket < (k.last + 1) * %(ratio)s GROUP BY 1, 2")
    # psycopg takes either named or positional parameters: inline the VALUES list as named ones.
    named = {f"v{i}": x for i, x in enumerate(flat)}
    src = _name_placeholders(src, len(flat))
    cur.execute(
        "INSERT INTO runs_metricrollup (run_id, key_id, width, bucket, attempt, n, min_step, min_value, min_wall, "
        "max_step, max_value, max_wall) "
        "SELECT %(run)s, key_id, %(w)s, b, %(attempt)s, n, mn[2]::int, mn[1], mn[3], mx[2]::int, mx[1], mx[3] "
        f"FROM ({src}) t ON CONFLICT DO NOTHING",
        {"run": run.pk, "w": w, "finer": finer, "ratio": w // finer, "low": low, "attempt": run.attempt, **named},
    )


def _name_placeholders(sql: str, count: int) -> str:
    """Replace the positional %s of a VALUES list with %(v0)s, %(v1)s, ..."""
    parts = sql.split("%s")
    assert len(parts) == count + 1
    return "".join(part + (f"%(v{i})s" if i < count else "") for i, part in enumerate(parts))


def refresh_rollups(run: Run) -> None:
    """Roll up every series of a run (for housekeeping / the end of a run, so that the first view
    of a long run is fast); cheap when nothing is new."""
    with connection.cursor() as cur:
        # Loose index scan over the primary key: the distinct keys without reading every point.
        cur.execute(
            "WITH RECURSIVE k AS ("
            " SELECT (SELECT key_id FROM runs_metricpoint WHERE run_id = %s ORDER BY key_id LIMIT 1) AS key_id"
            " UNION ALL SELECT (SELECT key_id FROM runs_metricpoint WHERE run_id = %s AND key_id > k.key_id"
            " ORDER BY key_id LIMIT 1) FROM k WHERE k.key_id IS NOT NULL"
            ") SELECT key_id FROM k WHERE key_id IS NOT NULL", [run.pk, run.pk])
        ids = [r[0] for r in cur.fetchall()]
    ensure_rollups(run, ids)


def _tops(cur, run_id: int, key_id: int) -> dict[int, int]:
    """Last rolled-up bucket per width. Empty buckets have no row, so this may lag; that only
    means a few more raw points are read, never a wrong answer."""
    tops = {}
    for w in LEVELS:  # one backward index probe per width
        # ORDER BY/LIMIT rather than max(): the plan stays an index probe even with stale statistics.
        cur.execute("SELECT bucket FROM runs_metricrollup WHERE run_id = %s AND key_id = %s AND width = %s "
                    "ORDER BY bucket DESC LIMIT 1", [run_id, key_id, w])
        row = cur.fetchone()
        tops[w] = -1 if row is None else row[0]
    return tops


def _extent(cur, run_id: int, key_id: int, step_min: int | None, step_max: int | None) -> tuple[int, int] | None:
    """First and last stored step of a series inside [step_min, step_max] (two index probes)."""
    cond, args = "", [run_id, key_id]
    if step_min is not None:
        cond += " AND step >= %s"
        args.append(step_min)
    if step_max is not None:
        cond += " AND step <= %s"
        args.append(step_max)
    cur.execute(f"SELECT min(step), max(step) FROM runs_metricpoint WHERE run_id = %s AND key_id = %s{cond}", args)
    lo, hi = cur.fetchone()
    return None if lo is None else (lo, hi)


def _pieces(lo: int, hi: int, levels: tuple[int, ...], tops: dict[int, int]) -> list[tuple[int, int, int]]:
    """Cover [lo, hi] with (width, first, last): complete rollup buckets of the coarsest usable
    level, the rest from finer levels, finally raw steps (width 1, first/last are steps)."""
    if lo > hi:
        return []
    if not levels:
        return [(1, lo, hi)]
    w, finer = levels[-1], levels[:-1]
    b_lo = -(-lo // w)
    b_hi = min((hi + 1) // w - 1, tops.get(w, -1))
    if b_lo > b_hi:
        return _pieces(lo, hi, finer, tops)
    return _pieces(lo, b_lo * w - 1, finer, tops) + [(w, b_lo, b_hi)] + _pieces((b_hi + 1) * w, hi, finer, tops)


_RAW = ("SELECT step AS s1, value AS v1, wall_time AS t1, step AS s2, value AS v2, wall_time AS t2 "
        "FROM runs_metricpoint WHERE run_id = %s AND key_id = %s AND step >= %s AND step <= %s")
_ROLL = ("SELECT min_step AS s1, min_value AS v1, min_wall AS t1, max_step AS s2, max_value AS v2, max_wall AS t2 "
         "FROM runs_metricrollup "
         "WHERE run_id = %s AND key_id = %s AND width = %s AND bucket >= %s AND bucket <= %s")


def _bucketed(cur, run_id: int, key_id: int, pieces: list[tuple[int, int, int]], width: int) -> list[tuple]:
    """Rows (bucket, min [v, s, t], max [v, s, t]) of the output buckets, in step order."""
    parts, args = [], []
    for w, first, last in pieces:
        if w == 1:
            parts.append(_RAW)
            args += [run_id, key_id, first, last]
        else:
            parts.append(_ROLL)
            args += [run_id, key_id, w, first, last]
    cur.execute(
        "SELECT s1 / %s AS b, min(ARRAY[v1, s1::float8, t1]), max(ARRAY[v2, s2::float8, t2]) "
        f"FROM ({' UNION ALL '.join(parts)}) src GROUP BY 1 ORDER BY 1",
        [width, *args],
    )
    return cur.fetchall()


def _one_series(cur, run_id: int, key_id: int, extent: tuple[int, int], max_points: int,
                tops: dict[int, int]) -> Series:
    out: Series = {"step": [], "value": [], "wall_time": []}
    lo, hi = extent
    width = bucket_width(lo, hi, max_points)
    if width == 0:
        cur.execute("SELECT step, value, wall_time FROM runs_metricpoint WHERE run_id = %s AND key_id = %s "
                    "AND step >= %s AND step <= %s ORDER BY step", [run_id, key_id, lo, hi])
        for s, v, t in cur.fetchall():
            out["step"].append(s)
            out["value"].append(v)
            out["wall_time"].append(t)
        return out
    level = level_for(hi - lo + 1, max_points)
    levels = tuple(w for w in LEVELS if w <= level)
    for _, mn, mx in _bucketed(cur, run_id, key_id, _pieces(lo, hi, levels, tops), width):
        pts = [mn] if mn[1] == mx[1] else sorted((mn, mx), key=lambda p: p[1])
        for v, s, t in pts:
            out["step"].append(int(s))
            out["value"].append(v)
            out["wall_time"].append(t)
    return out


def read_through(run: Run, step_max: int | None) -> int | None:
    """The last step to read of `run`, loaded before its points: a running run's points are read
    key by key, each query seeing the flushes committed by then, so only steps up to Run.step
    (written in the same transaction as its points) are complete for every key. A poller that
    asks for the steps after the newest it has never skips a point of a slower key."""
    if not run.is_active:
        return step_max
    return run.step if step_max is None else min(step_max, run.step)


def load_series(run_ids: list[int], keys: list[str], *, step_min: int | None = None, step_max: int | None = None,
                max_points: int = 1000, runs: dict[int, Run] | None = None) -> dict[int, dict[str, Series]]:
    """{run_id: {key: {"step": [...], "value": [...], "wall_time": [...]}}}, downsampled to about
    max_points points per series (the min and max of every bucket kept), full resolution when the
    range holds at most max_points steps. Keys never logged are left out. Callers scope run_ids;
    `runs` ({id: Run}, read before any point) saves reading them again."""
    max_points = max(2, int(max_points))
    ids = key_ids(keys)
    runs = Run.objects.in_bulk(run_ids) if runs is None else runs  # first: the steps read_through() caps at
    result: dict[int, dict[str, Series]] = {}
    with connection.cursor() as cur:
        for run_id in run_ids:
            run = runs.get(run_id)
            if run is None:
                continue
            per_key = result.setdefault(run_id, {})
            extents = {}
            upper = read_through(run, step_max)
            for name in keys:
                if name in ids:
                    extent = _extent(cur, run_id, ids[name], step_min, upper)
                    if extent is not None:
                        extents[name] = extent
            # Rollups only for the series that will read them, all in one pass over new points.
            need = [ids[n] for n, (lo, hi) in extents.items() if level_for(hi - lo + 1, max_points) > 1
                    and bucket_width(lo, hi, max_points)]
            tops = ensure_rollups(run, need) if need else {}
            for name, extent in extents.items():
                per_key[name] = _one_series(cur, run_id, ids[name], extent, max_points, tops.get(ids[name], {}))
    return result


# ---------------------------------------------------------------------------------------- summaries
def final_and_best(run_ids: list[int], keys: list[str]) -> dict[int, dict[str, dict]]:
    """{run_id: {key: {"final", "final_step", "best", "best_step", "min", "max", "direction"}}}.

    "best" is the max or min by direction(key) (None for keys without one). Uses the rollups, so
    it is fast on long runs too."""
    ids = key_ids(keys)
    runs = Run.objects.in_bulk(run_ids)
    result: dict[int, dict[str, dict]] = {}
    with connection.cursor() as cur:
        for run_id in run_ids:
            run = runs.get(run_id)
            if run is None:
                continue
            per_key = result.setdefault(run_id, {})
            for name in keys:
                if name not in ids:
                    continue
                key_id = ids[name]
                extent = _extent(cur, run.pk, key_id, None, None)
                if extent is None:
                    continue
                lo, hi = extent
                tops = ensure_rollups(run, [key_id])[key_id]
                # One output bucket spanning the whole series: its min and max are the extremes.
                width = LEVELS[-1] * (hi // LEVELS[-1] + 1)
                (_, mn, mx), = _bucketed(cur, run.pk, key_id, _pieces(lo, hi, LEVELS, tops), width)
                cur.execute("SELECT value FROM runs_metricpoint WHERE run_id = %s AND key_id = %s AND step = %s",
                            [run.pk, key_id, hi])
                final = cur.fetchone()[0]
                d = direction(name)
                best = mx if d == "max" else mn if d == "min" else None
                per_key[name] = {
                    "final": final, "final_step": hi, "min": mn[0], "min_step": int(mn[1]), "max": mx[0],
                    "max_step": int(mx[1]), "direction": d,
                    "best": best[0] if best else None, "best_step": int(best[1]) if best else None,
                }
    return result


# ---------------------------------------------------------------------------------------- histograms
def load_histograms(run_ids: list[int], key: str, *, step_min: int | None = None, step_max: int | None = None,
                    max_rows: int = 300, runs: dict[int, Run] | None = None) -> dict[int, dict]:
    """{run_id: {"step": [...], "lo": float, "hi": float, "counts": [[...], ...]}} for a heatmap.

    With more than max_rows steps, the histograms of each step bucket are summed bin by bin (the
    bins of one key are fixed, docs/INTERFACES.md), so every sample still counts; "step" is the
    first step of each bucket."""
    ids = key_ids([key])
    result: dict[int, dict] = {}
    if key not in ids:
        return result
    key_id = ids[key]
    runs = Run.objects.in_bulk(run_ids) if runs is None else runs  # as load_series
    with connection.cursor() as cur:
        for run_id in run_ids:
            if run_id not in runs:
                continue
            cond, args = "", [run_id, key_id]
            upper = read_through(runs[run_id], step_max)
            if step_min is not None:
                cond += " AND step >= %s"
                args.append(step_min)
            if upper is not None:
                cond += " AND step <= %s"
                args.append(upper)
            cur.execute(f"SELECT min(step), max(step) FROM runs_metrichistogram WHERE run_id = %s AND key_id = %s{cond}",
                        args)
            lo_step, hi_step = cur.fetchone()
            if lo_step is None:
                continue
            span = hi_step - lo_step + 1
            width = 1 if span <= max_rows else math.ceil(span / max_rows)
            cur.execute(
                "SELECT b, min(s0), min(lo), max(hi), array_agg(c ORDER BY i) FROM ("
                "  SELECT h.step / %s AS b, min(h.step) AS s0, min(h.lo) AS lo, max(h.hi) AS hi, u.i, sum(u.c)::bigint AS c"
                "  FROM runs_metrichistogram h, unnest(h.counts) WITH ORDINALITY AS u(c, i)"
                "  WHERE h.run_id = %s AND h.key_id = %s AND h.step >= %s AND h.step <= %s GROUP BY 1, u.i"
                ") t GROUP BY b ORDER BY b",
                [width, run_id, key_id, lo_step, hi_step],
            )
            rows = cur.fetchall()
            result[run_id] = {"step": [r[1] for r in rows], "lo": rows[0][2], "hi": rows[0][3],
                              "counts": [[int(c) for c in r[4]] for r in rows]}
    return result


# Rows per query of a full-resolution export: memory stays at one page however long the series.
EXPORT_PAGE_ROWS = 2000


def points_page(run_ids: list[int], key_ids: list[int], after: tuple[int, int, int] | None,
                limit: int = EXPORT_PAGE_ROWS) -> list[tuple[int, int, int, float, float]]:
    """Up to `limit` points (run_id, key_id, step, value, wall_time) in primary-key order, after the
    point `after` (keyset paging on the primary key: each page is one short index range scan, no
    cursor or transaction stays open between pages)."""
    run, key, step = after if after is not None else (-1, -1, -(2**31))
    with connection.cursor() as cur:
        cur.execute("SELECT run_id, key_id, step, value, wall_time FROM runs_metricpoint "
                    "WHERE run_id = ANY(%s) AND key_id = ANY(%s) AND (run_id, key_id, step) > (%s, %s, %s) "
                    "ORDER BY run_id, key_id, step LIMIT %s",
                    [list(run_ids), list(key_ids), run, key, step, limit])
        return cur.fetchall()


def full_points(run_ids: list[int], keys: list[str]) -> Iterator[list[tuple[int, str, int, float, float]]]:
    """Every point of the series at full resolution, (run_id, key, step, value, wall_time), in pages
    of EXPORT_PAGE_ROWS (for CSV downloads)."""
    ids = key_ids(keys)
    names = {v: k for k, v in ids.items()}
    after = None
    while ids:
        rows = points_page(run_ids, list(ids.values()), after)
        if not rows:
            return
        after = rows[-1][:3]
        for i, (r, k, st, v, w) in enumerate(rows):  # in place: one page in memory, not two
            rows[i] = (r, names[k], st, v, w)
        yield rows


async def afull_points(run_ids: list[int], keys: list[str]) -> AsyncIterator[list[tuple[int, str, int, float, float]]]:
    """full_points for ASGI: each page is read in a worker thread, so a streamed response sends
    one page while nothing else of the export is in memory."""
    pages = await sync_to_async(full_points)(run_ids, keys)  # a generator: nothing read yet
    while True:
        page = await sync_to_async(next)(pages, None)
        if page is None:
            return
        yield page
