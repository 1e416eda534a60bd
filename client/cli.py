"""`gft`: the command-line client of the GFT Studio REST API.

    gft login [--url URL] [--token TOKEN]       store URL + token in ~/.config/gft/config.json
    gft runs submit run.yaml [--follow]         launch a run (fields as on the launch form)
    gft runs follow ID                          progress bar + latest metrics until the run ends
    gft runs list [--status S] [--method M] [--tag T] [--limit N]
    gft runs cancel ID | gft runs resume ID
    gft runs compare A B [C ...]                config diff + final metrics table of 2-10 runs
    gft runs leaderboard 12 13 14 --suite math [--pick best|final] [--baseline 12]
    gft eval submit --run 12 --suite math [--step latest|final|N] [--follow]   (or --model DIR)
    gft eval results RUN [--suite math]         accuracy per checkpoint and benchmark
    gft eval cancel ID | gft eval resume ID
    gft pipelines submit pipeline.yaml [--follow]   stages in order (`common:` merged into each)
    gft pipelines follow ID | gft pipelines list | gft pipelines cancel ID
    gft metrics export ID --format csv|parquet [--keys a,b] [-o FILE]
    gft runs download ID [--artifact ID|log|final|checkpoint[:STEP]|groups] [-o PATH]
                                                files of a run (a directory as a .tar); no --artifact: list them

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

    def post(self, path: str, payload: dict | None = None, *, timeout: float | None = None) -> Any:
        return self.request("POST", path, json=payload or {}, **({"timeout": timeout} if timeout else {}))


    def download(self, path: str, out: Path | None) -> tuple[Path, int]:
        """Stream GET `path` into a file: `out`, or the server's file name (in `out` when it is a
        directory, else in the current one). Returns the file and its size."""
        try:
            with self.http.stream("GET", path, headers={"Accept": "*/*"}) as r:
                if r.status_code >= 400:
                    r.read()
                    try:
                        body = r.json()
                    except ValueError:
                        body = r.text[:500]
                    raise CliError(f"GET {path}: HTTP {r.status_code}: {_format_errors(body)}")
                name = r.headers.get("content-disposition", "").partition('filename="')[2].rstrip('"') or "download"
                target = (out / name) if out is not None and out.is_dir() else (out or Path(Path(name).name))
                size = 0
                with target.open("wb") as f:
                    for chunk in r.iter_bytes():
                        f.write(chunk)
                        size += len(chunk)
        except httpx.HTTPError as exc:
            raise CliError(f"Cannot download {path}: {exc}") from None
        return target, size


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


MAX_COMPARE = 10  # as the compare page


def cmd_compare(args: argparse.Namespace) -> int:
    if not 2 <= len(args.ids) <= MAX_COMPARE:
        raise CliError(f"compare takes 2 to {MAX_COMPARE} run ids (got {len(args.ids)})")
    client = api()
    runs = [client.get(f"runs/{i}/") for i in dict.fromkeys(args.ids)]
    head = ["setting", *(f"#{r['id']}" for r in runs)]
    print("Config: " + " vs ".join(f"#{r['id']} {r['name']!r}" for r in runs))
    diff = config_diff(*(r["config"] for r in runs))  # the one diff: output paths left out, each field once
    if diff:
        print(_table(head, [[k, *map(_show, values)] for k, values in diff]))
    else:
        print("  (identical apart from the output directory)")
    print()
    summaries = [r.get("summary") or {} for r in runs]
    keys = sorted(set().union(*summaries))
    rows = [["status", *(r["status"] for r in runs)], ["step", *(f"{r['step']}/{r['total_steps']}" for r in runs)]]
    rows += [[k, *(_fmt(s.get(k)) for s in summaries)] for k in keys]
    print("Final metrics:")
    print(_table(["metric", *head[1:]], rows))
    return 0


def load_pipeline_file(path: Path) -> dict:
    """{"name", "stages": [...]} from a YAML/JSON file; a top-level `common` mapping is merged into
    every stage (the stage's own keys win), `team` is passed through."""
    data = load_run_file(path)
    stages, common = data.get("stages"), data.get("common") or {}
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages) or not isinstance(common, dict):
        raise CliError(f"{path}: expected `stages:` (a list of launch-field mappings) and optionally `common:`")
    out = {"name": data.get("name", ""), "stages": [{**common, **s} for s in stages]}
    if "team" in data:
        out["team"] = data["team"]
    return out


def cmd_pipeline_submit(args: argparse.Namespace) -> int:
    pipeline = api().post("pipelines/", load_pipeline_file(Path(args.file)))
    print(f"Pipeline #{pipeline['id']} {pipeline['name']!r}: {len(pipeline['stages'])} stages, stage 1 queued")
    if args.follow:
        return follow_pipeline(api(), pipeline["id"], interval=args.interval)
    return 0


def poll_lines(fetch, line_of, finished, *, interval: float, out) -> dict:
    """Fetch until `finished(obj)`, writing `line_of(obj)` whenever it changes; the last obj."""
    last = ""
    while True:
        obj = fetch()
        line = line_of(obj)
        if line != last:
            out.write(line + "\n")
            out.flush()
            last = line
        if finished(obj):
            return obj
        time.sleep(interval)


def pipeline_line(p: dict) -> str:
    started = [s for s in p["stages"] if s["run"]]
    line = f"pipeline #{p['id']} {p['status']}"
    if started:
        s = started[-1]
        line += f": stage {s['index'] + 1}/{len(p['stages'])} {s['method'].upper()} " + progress_line(s["run"])
    return line


def follow_pipeline(client: Api, pipeline_id: int, *, interval: float = 2.0, out=None) -> int:
    """A line per change (stage, its run's progress) until the pipeline ends; 0 if it succeeded."""
    out = out or sys.stdout
    p = poll_lines(lambda: client.get(f"pipelines/{pipeline_id}/"), pipeline_line,
                   lambda p: p["status"] != "running", interval=interval, out=out)
    out.write(f"Pipeline #{p['id']} {p['status']}: {p['message']}\n")
    ids = " ".join(str(s["run"]["id"]) for s in p["stages"] if s["run"])
    if ids:
        out.write(f"Runs: {ids} (gft runs compare {ids})\n")
    return 0 if p["status"] == "succeeded" else 1


def cmd_pipeline_follow(args: argparse.Namespace) -> int:
    return follow_pipeline(api(), args.id, interval=args.interval)


def cmd_pipeline_list(args: argparse.Namespace) -> int:
    rows = [[str(p["id"]), p["name"][:40], " -> ".join(s["method"].upper() for s in p["stages"]), p["status"],
             p["created_by"] or "", p["created_at"][:16].replace("T", " ")]
            for p in _results(api().get("pipelines/", limit=args.limit))]
    print(_table(["id", "name", "stages", "status", "user", "created"], rows))
    return 0


def cmd_pipeline_cancel(args: argparse.Namespace) -> int:
    p = api().post(f"pipelines/{args.id}/cancel/")
    print(f"Pipeline #{p['id']}: {p['status']}. {p['message']}")
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


def _pick_artifact(artifacts: list[dict], which: str) -> dict:
    """An artifact by id, or by kind: log, final, checkpoint (the latest), checkpoint:STEP."""
    kind, _, step = which.partition(":")
    kind = {"final": "final_model", "model": "final_model"}.get(kind, kind)
    if which.isdigit():
        found = [a for a in artifacts if a["id"] == int(which)]
    else:
        found = [a for a in artifacts if a["kind"] == kind and (not step or str(a["step"]) == step)]
    if not found:
        raise CliError(f"--artifact {which}: no such artifact of this run (`gft runs download ID` lists them).")
    return max(found, key=lambda a: (a["step"], a["id"]))


def cmd_download(args: argparse.Namespace) -> int:
    client = api()
    out = Path(args.output) if args.output else None
    if args.artifact == "groups":
        target, size = client.download(f"runs/{args.id}/group-samples/", out)
        print(f"Group samples of run #{args.id}: {target} ({size} bytes, one JSON object per line)")
        return 0
    artifacts = client.get(f"runs/{args.id}/")["artifacts"]
    if not args.artifact:
        print(_table(["id", "kind", "step", "size", "path"],
                     [[str(a["id"]), a["kind"], str(a["step"]), str(a["size_bytes"]), a["path"]] for a in artifacts]))
        print("Download one with --artifact ID|log|final|checkpoint[:STEP], the group samples with --artifact groups.")
        return 0
    art = _pick_artifact(artifacts, args.artifact)
    target, size = client.download(art["download_url"].removeprefix("/api/"), out)
    print(f"{art['kind']} of run #{args.id} (step {art['step']}): {target} ({size} bytes)")
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
    fmt = {k: getattr(args, k) for k in ("use_chat_template", "system_prompt", "instruction_suffix")
           if getattr(args, k) is not None}
    if fmt:
        payload["prompt_format"] = fmt
    ev = client.post("evaluations/", payload)
    what = f"run #{ev['run']}" if ev["run"] else f"model {ev['model_path']}"
    print(f"Evaluation #{ev['id']} of {what} step {ev['checkpoint_step']} with suite {ev['suite_name']} is {ev['status']}")
    print(f"Prompt format: {ev['prompt_format_label']}")
    if args.follow:
        return follow_evaluation(client, ev["id"], interval=args.interval)
    return 0


def follow_evaluation(client: Api, ev_id: int, *, interval: float = 2.0, out=None) -> int:
    """Print progress until the evaluation ends; 0 if it succeeded, 1 otherwise."""
    out = out or sys.stdout
    ev = poll_lines(lambda: client.get(f"evaluations/{ev_id}/"),
                    lambda ev: f"#{ev_id} {ev['status']:<9} {ev['done']}/{ev['total'] or '?'} {ev['current_benchmark']}".rstrip(),
                    lambda ev: ev["status"] in FINISHED, interval=interval, out=out)
    if ev["status"] == "failed":
        out.write(f"Evaluation #{ev_id} failed: {ev['error']}\n")
    else:
        out.write(_eval_table([ev], "avg_at_k") + "\n")
    return 0 if ev["status"] == "succeeded" else 1


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


def cmd_alerts_list(args: argparse.Namespace) -> int:
    alerts = _results(api().get("alerts/", run=args.run, state=args.state, limit=args.limit))
    rows = [[str(a["id"]), f"#{a['run']}", str(a["step"]), a["rule_name"][:40], a["severity"], a["state"],
             a["acknowledged_by"] or "", a["fired_at"][:19].replace("T", " ")] for a in alerts]
    print(_table(["id", "run", "step", "rule", "severity", "state", "acknowledged", "fired"], rows))
    for a in alerts if args.verbose else []:
        print(f"\n#{a['id']}: {a['message']}")
    return 0


def cmd_alerts_ack(args: argparse.Namespace) -> int:
    a = api().post(f"alerts/{args.id}/acknowledge/")
    print(f"Alert #{a['id']} acknowledged by {a['acknowledged_by']}")
    return 0


def _duration(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- sweeps
SWEEP_SUBMIT_TIMEOUT_S = 180.0


def cmd_sweep_submit(args: argparse.Namespace) -> int:
    spec = load_run_file(Path(args.file))
    # Creating a sweep checks its launches and queues its first runs: it may take longer than a call
    sweep = api().post("sweeps/", spec, timeout=SWEEP_SUBMIT_TIMEOUT_S)
    print(f"Sweep #{sweep['id']} {sweep['name']!r}: {sweep['strategy']} over {', '.join(sweep['parameters'])}, "
          f"{len(sweep['trials'])} of {sweep['progress']['budget']} runs queued")
    if args.follow:
        return follow_sweep(api(), sweep["id"], interval=args.interval)
    return 0


def sweep_line(sweep: dict) -> str:
    p, best = sweep["progress"], sweep.get("best")
    line = (f"sweep #{sweep['id']} {sweep['status']:<9} {p['asked']}/{p['budget']} launched, {p['active']} active, "
            f"{p['complete']} complete, {p['pruned']} pruned, {p['failed']} failed")
    return line + (f"; best {sweep['target']}={_fmt(best['value'])} (run #{best['run']})" if best else "")


def follow_sweep(client: Api, sweep_id: int, *, interval: float = 2.0, out=None) -> int:
    """Print the sweep's progress until it ends, then its trials; 0 if it succeeded."""
    out = out or sys.stdout
    last = ""
    while True:
        sweep = client.get(f"sweeps/{sweep_id}/")
        line = sweep_line(sweep)
        if line != last:
            out.write(line + "\n")
            out.flush()
            last = line
        if sweep["status"] != "running":
            out.write(_trials_table(sweep) + "\n")
            return 0 if sweep["status"] == "succeeded" else 1
        time.sleep(interval)


def _trials_table(sweep: dict) -> str:
    names = list(sweep["parameters"])
    rows = [[str(t["number"]), f"#{t['run']}", *[_fmt(t["params"].get(n)) for n in names], t["run_status"],
             t["state"] + (f" at step {t['pruned_step']}" if t.get("pruned_step") is not None else ""),
             _fmt(t["value"])] for t in sweep["trials"]]
    return _table(["trial", "run", *names, "status", "trial state", sweep["target"]], rows)


def cmd_sweep_best(args: argparse.Namespace) -> int:
    sweep = api().get(f"sweeps/{args.id}/")
    best = sweep.get("best")
    if not best:
        print(f"Sweep #{args.id} has no complete trial yet ({sweep_line(sweep)}).")
        return 1
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in best["params"].items())
    print(f"Best of sweep #{args.id} ({sweep['direction']} {sweep['target']}, {sweep['target_mode']}): "
          f"run #{best['run']} (trial {best['number']}) {sweep['target']}={_fmt(best['value'])} with {params}")
    return 0


def cmd_sweep_list(args: argparse.Namespace) -> int:
    rows = [[str(s["id"]), s["name"][:40], s["strategy"], ",".join(s["parameters"]), s["status"],
             f"{s['progress']['asked']}/{s['progress']['budget']}"] for s in _results(api().get("sweeps/"))]
    print(_table(["id", "name", "strategy", "parameters", "status", "runs"], rows))
    return 0


def cmd_sweep_cancel(args: argparse.Namespace) -> int:
    print(sweep_line(api().post(f"sweeps/{args.id}/cancel/")))
    return 0


def add_sweep_commands(sub) -> None:
    sw = sub.add_parser("sweeps", help="grid / random / Bayesian searches over launch settings").add_subparsers(
        dest="sweeps_command", required=True)
    submit = sw.add_parser("submit", help="start a sweep from a YAML/JSON file (name, base, parameters, strategy, "
                                          "budget, target, pruner)")
    submit.add_argument("file")
    submit.add_argument("--follow", action="store_true", help="then follow it until it ends")
    submit.add_argument("--interval", type=float, default=2.0)
    submit.set_defaults(fn=cmd_sweep_submit)
    best = sw.add_parser("best", help="the sweep's best run so far and its parameters")
    best.add_argument("id", type=int)
    best.set_defaults(fn=cmd_sweep_best)
    sw.add_parser("list", help="sweeps of your teams").set_defaults(fn=cmd_sweep_list)
    cancel = sw.add_parser("cancel", help="stop launching and cancel the sweep's queued and running runs")
    cancel.add_argument("id", type=int)
    cancel.set_defaults(fn=cmd_sweep_cancel)


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
    dl = runs.add_parser("download", help="download a run's log, checkpoint, final model (as .tar) or group samples")
    dl.add_argument("id", type=int)
    dl.add_argument("--artifact", help="ID, log, final, checkpoint (latest), checkpoint:STEP or groups (JSONL); "
                    "none: list the artifacts")
    dl.add_argument("-o", "--output", help="file or directory (default: the server's file name, here)")
    dl.set_defaults(fn=cmd_download)
    cmp_ = runs.add_parser("compare", help="config diff and final metrics of 2 to 10 runs")
    cmp_.add_argument("ids", type=int, nargs="+", metavar="ID")
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
    esub.add_argument("--chat-template", dest="use_chat_template", action=argparse.BooleanOptionalAction, default=None,
                      help="the model's chat template on/off (default: the run's setting; on for a base model)")
    esub.add_argument("--system-prompt", dest="system_prompt", help="default: the run's (none for a base model)")
    esub.add_argument("--instruction-suffix", dest="instruction_suffix", help="default: the run's (none for a base model)")
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

    pipes = sub.add_parser("pipelines", help="multi-stage pipelines (SFT -> GFT -> GRPO)").add_subparsers(
        dest="pipelines_command", required=True)
    psub = pipes.add_parser("submit", help="start a pipeline from a YAML/JSON file: name, common, stages")
    psub.add_argument("file")
    psub.add_argument("--follow", action="store_true", help="then follow it until it ends")
    psub.add_argument("--interval", type=float, default=2.0)
    psub.set_defaults(fn=cmd_pipeline_submit)
    pfol = pipes.add_parser("follow", help="stage and progress lines until the pipeline ends")
    pfol.add_argument("id", type=int)
    pfol.add_argument("--interval", type=float, default=2.0)
    pfol.set_defaults(fn=cmd_pipeline_follow)
    plst = pipes.add_parser("list", help="pipelines of your teams, newest first")
    plst.add_argument("--limit", type=int, default=50)
    plst.set_defaults(fn=cmd_pipeline_list)
    pcan = pipes.add_parser("cancel", help="stop a pipeline (the running stage is cancelled)")
    pcan.add_argument("id", type=int)
    pcan.set_defaults(fn=cmd_pipeline_cancel)
    al = sub.add_parser("alerts", help="RL health alerts of your runs").add_subparsers(dest="alerts_command",
                                                                                    required=True)
    alst = al.add_parser("list", help="alerts, newest first")
    alst.add_argument("--run", type=int, help="only this run's alerts")
    alst.add_argument("--state", choices=["firing", "cleared"])
    alst.add_argument("--limit", type=int, default=50)
    alst.add_argument("-v", "--verbose", action="store_true", help="also print each alert's message (values)")
    alst.set_defaults(fn=cmd_alerts_list)
    ack = al.add_parser("ack", help="acknowledge an alert")
    ack.add_argument("id", type=int)
    ack.set_defaults(fn=cmd_alerts_ack)
    teachers.add_parser(sub)

    metrics = sub.add_parser("metrics", help="metric data").add_subparsers(dest="metrics_command", required=True)
    exp = metrics.add_parser("export", help="every metric point of a run to CSV or Parquet")
    exp.add_argument("id", type=int)
    exp.add_argument("--format", choices=["csv", "parquet"], default="csv")
    exp.add_argument("--keys", help="comma-separated metric names (default: all)")
    exp.add_argument("-o", "--output", help="file to write (default: run-ID-metrics.FORMAT)")
    exp.set_defaults(fn=cmd_export)
    add_sweep_commands(sub)
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
