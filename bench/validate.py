"""Dataset validation as the worker runs it: peak memory (RSS) and MB/s of the real
`webapp.datasets.validation.validate(dataset_id)` on large files.

Each validation runs in its own fresh Python process with Django set up against a scratch
database (`bench_validate`, migrated here): the process creates a Dataset row for the file
(ARTIFACT_ROOT = the files' folder), calls `validate()` (every row mapped through gft_core, token
lengths with the tiny tokenizer, the report stored) and reports its peak RSS (VmHWM: interpreter,
Django, transformers and pyarrow included), its RSS before the call, and the call's time. MB/s =
file size / time. The files are bench/dataread.py's (GSM8K-like rows of ~2 KB, two teacher
answers, an unused column):
- a JSONL of --mib MiB (default 16, under a minute; --gib 2 for the issue's case) and, with
  --formats jsonl,parquet,line, the same rows as Parquet;
- a JSONL whose line 3 holds one 50 MB answer: the validation must report that line (the limit
  of one row, 16 MiB) and stay small.
Goal (issue 16): peak RSS under 1 GiB for the 2 GiB JSONL and the 50 MB-line file. The rate is
the tokenizer's: lengths are measured on every prompt and answer (the tiny tokenizer splits these
random-word rows into ~0.9 tokens per character).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT, Skip, Stat, django_env, migrate, print_table, record, services_up, setup_django, verdict
from bench.dataread import MAPPING, SCRATCH, generate, peak_rss_mib

DB = "bench_validate"
GOAL_RSS_MIB = 1024
FORMATS = {"jsonl": "jsonl", "parquet": "parquet", "line": "50 MB line"}


# ---------------------------------------------------------------------- the validating child

def child(path: str) -> dict:
    """Validate `path` through a Dataset row, as the worker's task does; timed around validate()."""
    os.environ["ARTIFACT_ROOT"] = str(SCRATCH)
    setup_django(DB)
    from webapp.accounts.models import Team
    from webapp.datasets.models import Dataset
    from webapp.datasets.validation import validate

    file = Path(path)
    team, _ = Team.objects.get_or_create(slug="bench-validate", defaults={"name": "bench validate"})
    fmt = "parquet" if ".parquet" in file.suffixes else "jsonl"
    # A name of its own: another benchmark process may validate the same file at the same time.
    ds = Dataset.objects.create(team=team, name=f"{file.name} {os.getpid()} {time.time_ns()}", file_path=file.name,
                                original_filename=file.name,
                                file_format=fmt, sha256="0" * 64, size_bytes=file.stat().st_size, mapping=MAPPING)
    before = current_rss_mib()
    t0 = time.perf_counter()
    status = validate(ds.pk)
    seconds = time.perf_counter() - t0
    peak = peak_rss_mib()
    ds.refresh_from_db()
    train = ds.report.get("train", {})
    errors = train.get("errors") or []
    error = train.get("fatal") or (errors[0]["message"] if errors else "") or ds.report.get("fatal", "")
    ds.delete()
    return {"status": status, "rows": train.get("rows", 0), "valid_rows": train.get("valid_rows", 0),
            "seconds": seconds, "peak_rss_mib": peak, "rss_before_mib": before, "error": error[:90]}


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(path: Path) -> dict:
    env = django_env(DB)
    env["ARTIFACT_ROOT"] = str(SCRATCH)
    r = subprocess.run([sys.executable, "-m", "bench.validate", "--child", str(path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        return {"status": "crashed", "rows": 0, "valid_rows": 0, "seconds": float("nan"),
                "peak_rss_mib": float("nan"), "rss_before_mib": float("nan"), "error": r.stderr.strip()[-300:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench validate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="an 8 MiB JSONL and the 50 MB line, once, nothing recorded")
    p.add_argument("--mib", type=int, default=16, help="size of the generated JSONL, MiB")
    p.add_argument("--gib", type=float, default=None, help="size in GiB instead (e.g. --gib 2)")
    p.add_argument("--formats", default="jsonl,line",
                   help=f"comma-separated, of {', '.join(FORMATS)} (parquet: the same rows as the JSONL)")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--child", metavar="PATH", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child)))
        return 0
    why = services_up()
    if why:
        raise Skip(why)
    mib = int(a.gib * 1024) if a.gib else a.mib
    formats = [f.strip() for f in a.formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        p.error(f"unknown format(s) {unknown}; one of {', '.join(FORMATS)}")
    if a.quick:
        mib, a.reps, formats = 8, 1, ["jsonl", "line"]
    migrate(DB)
    files = generate(mib, tuple(FORMATS[f] for f in formats))
    rows_out, recorded, worst = [], [], 0.0
    for label, path in files.items():
        size_mb = path.stat().st_size / 1e6
        rs = [measure(path) for _ in range(a.reps)]
        rss = Stat.of(r["peak_rss_mib"] for r in rs)
        rate = Stat.of(size_mb / r["seconds"] for r in rs)
        r0 = rs[0]
        if r0["status"] == "crashed":
            note = f"crashed: {r0['error']}"
        elif r0["error"]:
            note = f"{r0['status']}: {r0['error']}"
        else:
            note = f"{r0['status']}, {r0['valid_rows']:,} of {r0['rows']:,} rows valid"
        ok = r0["status"] != "crashed" and rss.hi < GOAL_RSS_MIB
        worst = max(worst, rss.hi if ok or r0["status"] != "crashed" else float("inf"))
        cell = f"{rss.median:,.0f} MiB (before the call {r0['rss_before_mib']:,.0f}), {rate.median:,.1f} MB/s"
        rows_out.append([f"{label} ({size_mb:,.0f} MB)", cell, f"{r0['seconds']:,.1f} s", note])
        recorded.append((f"validate {label} ({size_mb:,.0f} MB): peak RSS, MB/s", f"{cell}; {note}",
                         f"< {GOAL_RSS_MIB} MiB", verdict(ok)))
    print_table(f"Dataset validation (webapp.datasets.validation.validate) in a fresh process, median of {a.reps}",
                ["file", "peak RSS, MB/s", "time", "report"], rows_out)
    print(f"goal: peak RSS < {GOAL_RSS_MIB} MiB for every file: {verdict(worst < GOAL_RSS_MIB)} (worst {worst:,.0f} MiB)")
    record("validate", recorded, quick=a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
