"""`gft`: the command-line client of the GFT Studio REST API.

    gft login [--url URL] [--token TOKEN]       store URL + token in ~/.config/gft/config.json
    gft runs submit run.yaml [--follow]         launch a run (fields as on the launch form)
    gft runs follow ID                          progress bar + latest metrics until the run ends
    gft runs list [--status S] [--method M] [--tag T] [--limit N]
    gft runs cancel ID | gft runs resume ID
    gft runs compare A B                        config diff + final metrics table
    gft metrics export ID --format csv|parquet [--keys a,b] [-o FILE]

GFT_URL and GFT_TOKEN override the stored values. Only the standard library, httpx and
gft_core.config (the one config_diff; no torch) are used (PyYAML for .yaml run files and pyarrow
for parquet, both installed with the project). No Django.
Exit codes: 0 ok (follow: the run succeeded), 1 the run failed or was cancelled, 2 usage or API error.
"""
from __future__ import annotations

import argparse
import csv
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from gft_core.config import config_diff

FINISHED = ("succeeded", "failed", "cancelled")
HEADLINE = ("loss", "reward/mean", "reward/self_accuracy", "dcr/rectified_frac", "grad_norm", "eval/accuracy")
EXPORT_WINDOW = 100_000  # steps per metrics request: a window this small comes back at full resolution


class CliError(Exception):
    pass


# ---------------------------------------------------------------------------- config + HTTP
def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gft" / "config.json"


def load_settings() -> dict[str, str]:
    stored: dict[str, str] = {}
    path = config_path()
    if path.is_file():
        stored = json.loads(path.read_text())
    url = os.environ.get("GFT_URL") or stored.get("url")
    token = os.environ.get("GFT_TOKEN") or stored.get("token")
    if not url or not token:
        raise CliError("Not logged in: run `gft login --url URL --token TOKEN` or set GFT_URL and GFT_TOKEN.")
    return {"url": url.rstrip("/"), "token": token}


class Api:
    def __init__(self, url: str, token: str):
        self.http = httpx.Client(base_url=url.rstrip("/") + "/api/", timeout=30.0,
                                 headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})

    def request(self, method: str, path: str, **kw) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise CliError(f"Cannot reach {self.http.base_url}: {exc}") from None
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = r.text[:500]
            raise CliError(f"{method} {path}: HTTP {r.status_code}: {_format_errors(body)}")
        return r.json() if r.content else None

    def get(self, path: str, **params) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, payload: dict | None = None) -> Any:
        return self.request("POST", path, json=payload or {})


def _format_errors(body: Any) -> str:
    if isinstance(body, dict):
        if set(body) == {"detail"}:
            return str(body["detail"])
        return "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in body.items())
    return str(body)


def api() -> Api:
    s = load_settings()
    return Api(s["url"], s["token"])


# ---------------------------------------------------------------------------- commands
def cmd_login(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("GFT_URL") or input("GFT Studio URL (e.g. http://127.0.0.1:8000): ").strip()
    token = args.token or os.environ.get("GFT_TOKEN") or getpass.getpass("API token (from the Tokens page): ").strip()
    teams = Api(url, token).get("teams/")
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url.rstrip("/"), "token": token}, indent=1))
    path.chmod(0o600)
    names = ", ".join(t["name"] for t in _results(teams)) or "none"
    print(f"Logged in to {url}; teams: {names}. Saved to {path}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    spec = load_run_file(Path(args.file))
    run = api().post("runs/", spec)
    where = f", position {run['queue_position']} on queue {run['queue']}" if run.get("queue_position") else ""
    print(f"Run #{run['id']} {run['name']!r} is {run['status']}{where}")
    if args.follow:
        return follow(api(), run["id"], interval=args.interval)
    return 0


def load_run_file(path: Path) -> dict:
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a mapping of launch fields (name, method, model, dataset, ...)")
    return data


def cmd_follow(args: argparse.Namespace) -> int:
    return follow(api(), args.id, interval=args.interval)


def follow(client: Api, run_id: int, *, interval: float = 2.0, out=None) -> int:
    """Print progress until the run ends; 0 if it succeeded, 1 otherwise."""
    out = out or sys.stdout
    tty = out.isatty()
    last_line = ""
    while True:
        run = client.get(f"runs/{run_id}/")
        line = progress_line(run)
        if line != last_line:
            out.write(("\r\033[K" + line) if tty else line + "\n")
            out.flush()
            last_line = line
        if run["status"] in FINISHED:
            if tty:
                out.write("\n")
            if run["status"] == "failed":
                out.write(f"Run #{run_id} failed: {run.get('error', '')}\n")
                if run.get("log_tail"):
                    out.write("Last log lines:\n" + run["log_tail"] + "\n")
            elif run["status"] == "succeeded":
                final = [a["path"] for a in run.get("artifacts", []) if a["kind"] == "final_model"]
                out.write(f"Run #{run_id} succeeded" + (f"; final model: {final[-1]}" if final else "") + "\n")
            else:
                out.write(f"Run #{run_id} was cancelled at step {run['step']}; `gft runs resume {run_id}` continues it.\n")
            return 0 if run["status"] == "succeeded" else 1
        time.sleep(interval)


def progress_line(run: dict, width: int = 30) -> str:
    total, step = run.get("total_steps") or 0, run.get("step") or 0
    if run["status"] == "queued":
        pos = run.get("queue_position")
        return f"#{run['id']} queued" + (f" (position {pos})" if pos else "")
    frac = step / total if total else 0.0
    bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
    eta = run.get("eta_seconds")
    metrics = " ".join(f"{k}={_fmt(run['summary'][k])}" for k in HEADLINE if k in (run.get("summary") or {}))
    return (f"#{run['id']} {run['status']:<9} [{bar}] {step}/{total or '?'}"
            + (f" eta {_duration(eta)}" if eta else "") + (f"  {metrics}" if metrics else ""))


def cmd_list(args: argparse.Namespace) -> int:
    page = api().get("runs/", status=args.status, method=args.method, tag=args.tag, limit=args.limit)
    rows = [[str(r["id"]), r["name"][:40], r["method"], r["status"], f"{r['step']}/{r['total_steps']}",
             r["created_by"] or "", r["created_at"][:16].replace("T", " ")] for r in _results(page)]
    print(_table(["id", "name", "method", "status", "step", "user", "created"], rows))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    run = api().post(f"runs/{args.id}/cancel/")
    print(f"Run #{run['id']}: {run['status']}{' (stopping at the next step)' if run['cancel_requested'] else ''}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    run = api().post(f"runs/{args.id}/resume/")
    print(f"Run #{run['id']} is {run['status']} again; it continues from its latest checkpoint.")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    client = api()
    a, b = client.get(f"runs/{args.a}/"), client.get(f"runs/{args.b}/")
    print(f"Config: #{a['id']} {a['name']!r} vs #{b['id']} {b['name']!r}")
    diff = config_diff(a["config"], b["config"])
    if diff:
        print(_table(["setting", f"#{a['id']}", f"#{b['id']}"], [[k, _show(va), _show(vb)] for k, (va, vb) in diff]))
    else:
        print("  (identical apart from the output directory)")
    print()
    keys = sorted(set(a.get("summary") or {}) | set(b.get("summary") or {}))
    rows = [["status", a["status"], b["status"]], ["step", f"{a['step']}/{a['total_steps']}", f"{b['step']}/{b['total_steps']}"]]
    rows += [[k, _fmt((a.get("summary") or {}).get(k)), _fmt((b.get("summary") or {}).get(k))] for k in keys]
    print("Final metrics:")
    print(_table(["metric", f"#{a['id']}", f"#{b['id']}"], rows))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    client = api()
    run = client.get(f"runs/{args.id}/")
    rows: list[tuple[str, int, float, float]] = []
    lo, last = 0, max(run["step"], run["total_steps"] or 0)
    while lo <= last:
        keys = args.keys
        while True:  # a response holds a bounded number of points: the keys it left out come next
            page = client.get(f"runs/{args.id}/metrics/", keys=keys, step_min=lo, step_max=lo + EXPORT_WINDOW - 1,
                              max_points=EXPORT_WINDOW)
            for key, series in sorted(page["metrics"].items()):
                rows += zip([key] * len(series["step"]), series["step"], series["value"], series["wall_time"])
            if not page.get("more_keys"):
                break
            keys = ",".join(page["more_keys"])
        lo += EXPORT_WINDOW
    rows.sort(key=lambda r: (r[0], r[1]))
    out = Path(args.output or f"run-{args.id}-metrics.{args.format}")
    if args.format == "csv":
        with out.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["run", "key", "step", "value", "wall_time"])
            w.writerows((args.id, *r) for r in rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = list(zip(*rows)) if rows else [[], [], [], []]
        table = pa.table({"run": pa.array([args.id] * len(rows), pa.int64()), "key": pa.array(cols[0], pa.string()),
                          "step": pa.array(cols[1], pa.int64()), "value": pa.array(cols[2], pa.float64()),
                          "wall_time": pa.array(cols[3], pa.float64())})
        pq.write_table(table, out)
    print(f"{len(rows)} points of run #{args.id} written to {out}")
    return 0


# ---------------------------------------------------------------------------- helpers
def _results(page: Any) -> list:
    return page["results"] if isinstance(page, dict) and "results" in page else page


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _show(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (dict, list)) else _fmt(v)


def _duration(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gft", description="GFT Studio command-line client.")
    sub = p.add_subparsers(dest="command", required=True)
    login = sub.add_parser("login", help="store the server URL and an API token")
    login.add_argument("--url")
    login.add_argument("--token")
    login.set_defaults(fn=cmd_login)

    runs = sub.add_parser("runs", help="launch, follow, list, cancel, resume, compare runs").add_subparsers(
        dest="runs_command", required=True)
    submit = runs.add_parser("submit", help="launch a run from a YAML/JSON file of launch fields")
    submit.add_argument("file")
    submit.add_argument("--follow", action="store_true", help="then follow it until it ends")
    submit.add_argument("--interval", type=float, default=2.0)
    submit.set_defaults(fn=cmd_submit)
    fol = runs.add_parser("follow", help="progress bar and latest metrics until the run ends")
    fol.add_argument("id", type=int)
    fol.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    fol.set_defaults(fn=cmd_follow)
    lst = runs.add_parser("list", help="runs of your teams, newest first")
    lst.add_argument("--status")
    lst.add_argument("--method")
    lst.add_argument("--tag")
    lst.add_argument("--limit", type=int, default=50)
    lst.set_defaults(fn=cmd_list)
    for name, fn, text in (("cancel", cmd_cancel, "cancel a run"), ("resume", cmd_resume, "resume a failed or cancelled run")):
        c = runs.add_parser(name, help=text)
        c.add_argument("id", type=int)
        c.set_defaults(fn=fn)
    cmp_ = runs.add_parser("compare", help="config diff and final metrics of two runs")
    cmp_.add_argument("a", type=int)
    cmp_.add_argument("b", type=int)
    cmp_.set_defaults(fn=cmd_compare)

    metrics = sub.add_parser("metrics", help="metric data").add_subparsers(dest="metrics_command", required=True)
    exp = metrics.add_parser("export", help="every metric point of a run to CSV or Parquet")
    exp.add_argument("id", type=int)
    exp.add_argument("--format", choices=["csv", "parquet"], default="csv")
    exp.add_argument("--keys", help="comma-separated metric names (default: all)")
    exp.add_argument("-o", "--output", help="file to write (default: run-ID-metrics.FORMAT)")
    exp.set_defaults(fn=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except CliError as exc:
        print(f"gft: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
