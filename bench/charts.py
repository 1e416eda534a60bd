"""Chart pages in Chromium: time to "all charts drawn" (issue 20, item 2).

Database `bench_charts`: `runs` finished runs of `points` points in each of 10 series (loaded with
COPY by bench.chart's loader, reused later), one key for each of 10 charts of the run page (its
other charts have no data: the page shows them as "no data yet", without a Plotly figure). Two uvicorn servers on that
database, DEBUG off, interleaved rep by rep:
- compressed: STATIC_ROOT after collectstatic with webapp.staticstorage.StaticStorage (hashed
  names, gzip + brotli, immutable cache headers): what `./studio up` and the Docker image serve;
- peer: the previous storage, files from the app folders (no STATIC_ROOT): uncompressed, max-age 60.
Headless Chromium (/usr/bin/chromium) logged in; the figure is the page's own
`performance.now()` when the last chart's Plotly.react resolved (body[data-charts-drawn]), i.e.
from navigation start. cold: a new browser context (empty cache), on loopback and over an emulated
100 Mbit/s link with 20 ms latency; warm: the same page opened again in that context. Compare: the
compare page of all `runs` runs. The server's cold first view (rollups built) is done before timing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from bench.common import ROOT, Skip, Stat, django_env, migrate, print_table, record, services_up, setup_django, verdict

DB = "bench_charts"
GOAL_WARM_MS, GOAL_COLD_MS, GOAL_COMPARE_MS = 500.0, 1500.0, 1500.0
# One key for each of 10 charts of a GFT run page.
KEYS = ["loss", "grad_norm", "lr", "tokens_per_s", "reward/mean", "reward/self_accuracy", "response_len/mean",
        "adv/zero_var_groups", "dcr/rectified_frac", "policy/entropy"]
LINK = {"offline": False, "latency": 20, "downloadThroughput": 100e6 / 8, "uploadThroughput": 100e6 / 8}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(static_root: str | None, log: str) -> tuple[subprocess.Popen, str]:
    env = django_env(DB)
    env["DEBUG"] = "0"
    env.pop("STATIC_ROOT", None)
    if static_root:
        env["STATIC_ROOT"] = static_root
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/accounts/login/", timeout=60).close()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(open(log).read()[-3000:])
            time.sleep(0.3)


def _plotly_headers(page) -> tuple[str, int, int]:
    """(Cache-Control, bytes on the wire, bytes decoded) of plotly.min.js as the page loaded it."""
    entry = page.evaluate("""() => performance.getEntriesByType('resource').filter(e => e.name.includes('plotly'))
        .map(e => [e.name, e.transferSize, e.decodedBodySize])[0]""")
    with urllib.request.urlopen(urllib.request.Request(entry[0], headers={"Accept-Encoding": "br, gzip"})) as r:
        return r.headers.get("Cache-Control", ""), entry[1], entry[2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench charts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--points", type=int, default=1_000_000, help="points per series (10 series a run)")
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args(argv)
    if a.quick:
        a.runs, a.points, a.reps = 2, 2_000, 1
    why = services_up()
    if why:
        raise Skip(why)
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise Skip("playwright is not installed (pip install -e '.[test]')")
    if not os.path.exists(chromium):
        raise Skip("no Chromium at /usr/bin/chromium")
    migrate(DB)
    setup_django(DB)
    from django.contrib.auth import get_user_model

    from bench.chart import load
    from webapp.accounts.models import Membership, Team
    from webapp.runs import series

    slug = "bench-charts-quick" if a.quick else "bench-charts"
    team, _ = Team.objects.get_or_create(slug=slug, defaults={"name": slug})
    user = get_user_model().objects.filter(username=slug).first() or \
        get_user_model().objects.create_user(slug, password="bench-charts-pass-123")
    Membership.objects.get_or_create(user=user, team=team, defaults={"role": Membership.Role.MEMBER})
    runs, load_s = load(team, user, a.runs, a.points, KEYS)
    ids = [r.pk for r in runs]
    total = a.runs * len(KEYS) * a.points
    print(f"{a.runs} runs x {len(KEYS)} series x {a.points:,} points = {total:,} points "
          + (f"loaded with COPY in {load_s:.1f} s" if load_s else "(reused from an earlier run)"), flush=True)
    t0 = time.perf_counter()
    for r in runs:  # the server's cold first view builds the rollups: not what this bench times
        series.load_series([r.pk], KEYS, max_points=1000)
    print(f"server warm-up (rollups) {time.perf_counter() - t0:.1f} s", flush=True)

    tmp = tempfile.mkdtemp(prefix="bench-charts-")
    # Kept between invocations: the compressed copies of unchanged (hashed) files are reused.
    static_root = str(ROOT / "var" / "bench" / "static")
    env = django_env(DB)
    env["STATIC_ROOT"] = static_root
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"], cwd=ROOT, env=env,
                   check=True, timeout=1200)
    collect_s = time.perf_counter() - t0
    print(f"collectstatic (hash + gzip + brotli; compressed copies reused) {collect_s:.1f} s", flush=True)

    sides = {}
    procs = []
    try:
        for name, root in (("compressed", static_root), ("peer", None)):
            proc, url = _serve(root, os.path.join(tmp, f"{name}.log"))
            procs.append(proc)
            sides[name] = url
        times: dict[tuple[str, str], list[float]] = {}
        facts: dict[str, dict] = {}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            cookies = {}
            for name, url in sides.items():
                ctx = browser.new_context(viewport={"width": 1440, "height": 900})
                page = ctx.new_page()
                page.goto(f"{url}/accounts/login/")
                page.fill("input[name=username]", slug)
                page.fill("input[name=password]", "bench-charts-pass-123")
                page.click("button[type=submit], input[type=submit]")
                page.wait_for_url(f"{url}/")
                cookies[name] = ctx.cookies()
                ctx.close()

            def drawn(page, url: str) -> float:
                page.goto(url)
                page.wait_for_selector("body[data-charts-drawn]", timeout=120_000)
                return float(page.get_attribute("body", "data-charts-drawn"))

            run_url = f"/runs/{ids[0]}/"
            compare_url = f"/compare/?runs={','.join(map(str, ids))}"
            for rep in range(a.reps + 1):  # rep 0 warms the servers and is not counted
                for name, url in sides.items():
                    for what, path, link in (("run", run_url, None), ("run", run_url, LINK),
                                             ("compare", compare_url, None)):
                        ctx = browser.new_context(viewport={"width": 1440, "height": 900})
                        ctx.add_cookies(cookies[name])
                        page = ctx.new_page()
                        series_requests: list[str] = []
                        page.on("request", lambda r, out=series_requests: "/runs/series/" in r.url and out.append(r.url))
                        if link:
                            ctx.new_cdp_session(page).send("Network.emulateNetworkConditions", link)
                        cold = drawn(page, url + path)
                        n_series = len(series_requests)
                        if what == "run" and not link and rep == 1:
                            cc, wire, body = _plotly_headers(page)
                            facts[name] = {"cache": cc, "wire": wire, "body": body, "series_requests": n_series,
                                           "charts": page.locator(".chart-card").count(),
                                           "with_data": page.locator(".chart-card:not(.empty)").count()}
                        warm = drawn(page, url + path)
                        suffix = " 100Mbit" if link else ""
                        if rep:
                            times.setdefault((name, f"{what} cold{suffix}"), []).append(cold)
                            times.setdefault((name, f"{what} warm{suffix}"), []).append(warm)
                        if what == "compare" and not link and rep == 1:
                            facts[name]["compare_series_requests"] = n_series
                        ctx.close()
            browser.close()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    stats = {k: Stat.of([t / 1000 for t in v]) for k, v in times.items()}
    rows = []
    for figure in ("run warm", "run cold", "run cold 100Mbit", "run warm 100Mbit", "compare warm", "compare cold"):
        c, pe = stats[("compressed", figure)], stats[("peer", figure)]
        rows.append((figure, f"{c.fmt(3, 1000, ' ms')}", f"{pe.fmt(3, 1000, ' ms')}"))
    fc, fp = facts["compressed"], facts["peer"]
    rows.append(("plotly.js on the wire / decoded", f"{fc['wire']:,} / {fc['body']:,} B", f"{fp['wire']:,} / {fp['body']:,} B"))
    rows.append(("plotly.js Cache-Control", fc["cache"], fp["cache"]))
    rows.append(("chart data requests (run page / compare)", f"{fc['series_requests']} / {fc['compare_series_requests']}",
                 f"{fp['series_requests']} / {fp['compare_series_requests']}"))
    print(f"\nrun page: {fc['charts']} charts, {fc['with_data']} with data; compare: {a.runs} runs; load {os.getloadavg()[0]:.1f}")
    print_table(f"Chart pages in Chromium, ms to all charts drawn, median [min-max] of {a.reps} "
                f"({a.runs} runs x {len(KEYS)} series x {a.points:,} points)",
                ["figure", "compressed manifest storage", "peer: app folders, uncompressed"], rows)
    med = {k: s.median * 1000 for k, s in stats.items()}
    warm, cold, comp = med[("compressed", "run warm")], med[("compressed", "run cold")], med[("compressed", "compare warm")]
    load_avg = f"load average {os.getloadavg()[0]:.1f}"
    record("charts", [
        ("run page all charts drawn, warm", f"{stats[('compressed', 'run warm')].fmt(3, 1000, ' ms')} (peer {stats[('peer', 'run warm')].fmt(3, 1000, ' ms')}; {load_avg})",
         "< 500 ms", verdict(warm < GOAL_WARM_MS)),
        ("run page all charts drawn, cold", f"{stats[('compressed', 'run cold')].fmt(3, 1000, ' ms')}; 100 Mbit/s {stats[('compressed', 'run cold 100Mbit')].fmt(3, 1000, ' ms')} "
         f"(peer {stats[('peer', 'run cold')].fmt(3, 1000, ' ms')}; {stats[('peer', 'run cold 100Mbit')].fmt(3, 1000, ' ms')})", "< 1.5 s", verdict(cold < GOAL_COLD_MS)),
        ("compare page of 8 runs, warm", f"{stats[('compressed', 'compare warm')].fmt(3, 1000, ' ms')} (peer {stats[('peer', 'compare warm')].fmt(3, 1000, ' ms')})",
         "< 1.5 s", verdict(comp < GOAL_COMPARE_MS)),
    ], quick=a.quick)
    return 0
