"""`gft`: the command-line client of the GFT Studio REST API.

    gft login [--url URL] [--token TOKEN]       store URL + token in ~/.config/gft/config.json
    gft runs submit run.yaml [--follow]         launch a run (fields as on the launch form)
    gft runs follow ID                          progress bar + latest metrics until the run ends
    gft runs list [--status S] [--method M] [--tag T] [--limit N]
    gft runs cancel ID | gft runs resume ID
    gft runs compare A B                        config diff + final metrics table
    gft runs leaderboard 12 13 14 --suite math [--pick best|final] [--baseline 12]
    gft eval submit --run 12 --suite math [--step latest|final|N] [--follow]   (or --model DIR)
    gft eval results RUN [--suite math]         accuracy per checkpoint and benchmark
    gft eval cancel ID | gft eval resume ID
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

from client import teachers
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


# ---------------------------------------------------------------------------- evaluations
def suite_id(client: Api, suite: str) -> int:
    """A suite id from an id or a name (its newest version that is not archived)."""
    if suite.isdigit():
        return int(suite)
    versions = [v for v in _results(client.get("eval-suites/", name=suite, limit=1000)) if not v["archived"]]
    if not versions:
        raise CliError(f"No eval suite named {suite!r} in your teams.")
    return max(versions, key=lambda v: v["version"])["id"]


def cmd_eval_submit(args: argparse.Namespace) -> int:
    client = api()
    payload: dict[str, Any] = {"suite": suite_id(client, args.suite), "step": str(args.step)}
    if args.model:
        payload["model"] = args.model
    else:
        payload["run"] = args.run
    ev = client.post("evaluations/", payload)
    what = f"run #{ev['run']}" if ev["run"] else f"model {ev['model_path']}"
    print(f"Evaluation #{ev['id']} of {what} step {ev['checkpoint_step']} with suite {ev['suite_name']} is {ev['status']}")
    if args.follow:
        return follow_evaluation(client, ev["id"], interval=args.interval)
    return 0


def follow_evaluation(client: Api, ev_id: int, *, interval: float = 2.0, out=None) -> int:
    """Print progress until the evaluation ends; 0 if it succeeded, 1 otherwise."""
    out = out or sys.stdout
    last = ""
    while True:
        ev = client.get(f"evaluations/{ev_id}/")
        line = f"#{ev_id} {ev['status']:<9} {ev['done']}/{ev['total'] or '?'} {ev['current_benchmark']}".rstrip()
        if line != last:
            out.write(line + "\n")
            out.flush()
            last = line
        if ev["status"] in FINISHED:
            if ev["status"] == "failed":
                out.write(f"Evaluation #{ev_id} failed: {ev['error']}\n")
            else:
                out.write(_eval_table([ev], "avg_at_k") + "\n")
            return 0 if ev["status"] == "succeeded" else 1
        time.sleep(interval)


def _metric(metrics: dict, metric: str) -> float | None:
    if metric.startswith("pass@"):
        v = (metrics.get("pass_at_k") or {}).get(metric[5:])
    else:
        v = metrics.get(metric)
    return None if v is None else 100.0 * v


def _eval_table(evaluations: list[dict], metric: str) -> str:
    names: list[str] = []
    for ev in evaluations:
        names += [r["benchmark_name"] for r in ev["results"] if r["benchmark_name"] not in names]
    rows = []
    for ev in sorted(evaluations, key=lambda e: (e["suite_name"], e["checkpoint_step"], e["id"])):
        found = {r["benchmark_name"]: _metric(r["metrics"], metric) for r in ev["results"]}
        vals = [found.get(n) for n in names]
        present = [v for v in vals if v is not None]
        rows.append([str(ev["id"]), ev["suite_name"], "base" if ev["run"] is None else str(ev["checkpoint_step"]),
                     ev["status"], *[_pct(v) for v in vals], _pct(sum(present) / len(present) if present else None)])
    return _table(["eval", "suite", "step", "status", *names, "average"], rows)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def cmd_eval_results(args: argparse.Namespace) -> int:
    client = api()
    params: dict[str, Any] = {"run": args.run, "limit": 1000}
    if args.suite:
        params["suite"] = suite_id(client, args.suite)
    evs = _results(client.get("evaluations/", **params))
    if not evs:
        print(f"No evaluations of run #{args.run} yet: `gft eval submit --run {args.run} --suite NAME`.")
        return 0
    print(f"Run #{args.run}: {args.metric} in % per checkpoint and benchmark")
    print(_eval_table(evs, args.metric))
    return 0


def cmd_eval_cancel(args: argparse.Namespace) -> int:
    ev = api().post(f"evaluations/{args.id}/cancel/")
    print(f"Evaluation #{ev['id']}: {ev['status']}{' (stopping after the current batch)' if ev['cancel_requested'] else ''}")
    return 0


def cmd_eval_resume(args: argparse.Namespace) -> int:
    ev = api().post(f"evaluations/{args.id}/resume/")
    print(f"Evaluation #{ev['id']} is {ev['status']} again; benchmarks already scored are kept.")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    client = api()
    board = client.get("evaluations/leaderboard/", runs=",".join(map(str, args.runs)), suite=suite_id(client, args.suite),
                       pick=args.pick, baseline=args.baseline, metric=args.metric)
    names = board["benchmarks"]
    header = ["row", "step", *names, "average"] + (["delta avg"] if board["baseline"] else [])
    rows = []
    for r in board["rows"]:
        if r["kind"] == "reference" and not args.references:
            continue
        label = r["label"] + (" (reported by the paper)" if r.get("from_paper") else "")
        row = [label, "-" if r["step"] is None else str(r["step"]), *[_pct(r["values"][n]) for n in names],
               _pct(r["average"])]
        if board["baseline"]:
            d = r["delta_average"]
            row.append("-" if d is None else f"{d:+.1f}")
        rows.append(row)
    print(f"{board['metric']} in %, {board['pick']} checkpoint of each run")
    print(_table(header, rows))
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

    board = runs.add_parser("leaderboard", help="runs x benchmarks of an eval suite, with the base model's row")
    board.add_argument("runs", type=int, nargs="+")
    board.add_argument("--suite", required=True, help="suite name (newest version) or id")
    board.add_argument("--pick", choices=["best", "final"], default="best", help="which checkpoint of each run")
    board.add_argument("--baseline", type=int, help="a run id: show the average's difference to it")
    board.add_argument("--metric", default="avg_at_k", help="avg_at_k, maj_at_k or pass@N")
    board.add_argument("--references", action="store_true", help="also the reference rows (e.g. the paper's)")
    board.set_defaults(fn=cmd_leaderboard)

    ev = sub.add_parser("eval", help="evaluate run checkpoints on benchmark suites").add_subparsers(
        dest="eval_command", required=True)
    esub = ev.add_parser("submit", help="evaluate a run's checkpoint (or a model) with a suite")
    target = esub.add_mutually_exclusive_group(required=True)
    target.add_argument("--run", type=int)
    target.add_argument("--model", help='"tiny" or a model directory under the server\'s MODEL_ROOTS (step 0)')
    esub.add_argument("--suite", required=True, help="suite name (newest version) or id")
    esub.add_argument("--step", default="latest", help='"latest", "final" or a checkpoint step (0 = base model)')
    esub.add_argument("--follow", action="store_true", help="then follow it until it ends")
    esub.add_argument("--interval", type=float, default=2.0)
    esub.set_defaults(fn=cmd_eval_submit)
    eres = ev.add_parser("results", help="a run's evaluations: accuracy per checkpoint and benchmark")
    eres.add_argument("run", type=int)
    eres.add_argument("--suite", help="only this suite (name or id)")
    eres.add_argument("--metric", default="avg_at_k", help="avg_at_k, maj_at_k or pass@N")
    eres.set_defaults(fn=cmd_eval_results)
    for name, fn, text in (("cancel", cmd_eval_cancel, "cancel an evaluation"),
                           ("resume", cmd_eval_resume, "resume a failed or cancelled evaluation")):
        c = ev.add_parser(name, help=text)
        c.add_argument("id", type=int)
        c.set_defaults(fn=fn)

    teachers.add_parser(sub)

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
