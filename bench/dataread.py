"""Dataset reading: peak memory (RSS), MB/s and rows/s of gft_core.data on large files, side by
side with the old reader (gft_core/data.py as on `main` before issue 16) and a naive pandas read.

What is read is what the validation worker does: stream every row and map it to an Example
(gft_core.data.iter_rows + to_example, the mapped columns only), keeping nothing. Each read runs
in its own fresh Python process, which reports its peak RSS (VmHWM, interpreter and pyarrow
included) and its time from after the imports; MB/s = file size / time. Files (generated once
into var/bench/dataread, GSM8K-like rows of ~2 KB with two teacher answers and an unused column,
random words so that Parquet does not compress them away):
- JSONL of --mib MiB (default 128; --gib 2 for the 2 GiB case), the same rows as Parquet (row
  groups of 1Mi rows, pyarrow's and pandas' default: one row group up to ~2 GB of JSON) and as
  .parquet.gz;
- a JSONL whose line 3 holds one 50 MB answer (the file that took a worker to 7.1 GB RSS): the
  new reader refuses it at that line (the limit of one row, 16 MiB), the others read it.
Goal: peak RSS under 1 GiB for every file, whatever its size. pandas is skipped above 1 GiB
(it holds the whole table in memory, several times the file).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT, Stat, print_table, record, verdict

GOAL_RSS_MIB = 1024
MAPPING = {"prompt": "question", "expert": "answer", "teacher": "teachers", "ground_truth": "answer",
           "ground_truth_extract": "gsm8k"}
SCRATCH = ROOT / "var" / "bench" / "dataread"
PANDAS_MAX_MIB = 1024
ROW_GROUP_ROWS = 2**20


def _row(i: int) -> dict:
    # Random words keep Parquet from compressing the rows to nothing (real answers do not repeat).
    n = i % 997
    words = os.urandom(96).hex()
    steps = " ".join(f"Step {k}: {n} + {k} = {n + k}, {words[k * 16:k * 16 + 16]}." for k in range(12))
    return {
        "question": f"Natalia sold clips to {n} of her friends in April, and then she sold half as many clips in May. "
                    f"How many clips did Natalia sell altogether in April and May? (variant {i})",
        "answer": f"{steps} Natalia sold {n}/2 = {n / 2} clips in May.\n#### {n + n // 2}",
        "teachers": [f"Teacher one: {steps} #### {n + n // 2}", f"Teacher two: {steps[::-1]} #### {n + n // 2}"],
        "unused": os.urandom(150).hex(),
    }


FILES = ("jsonl", "parquet", "parquet.gz", "50 MB line")


def generate(mib: int, which: tuple[str, ...] = FILES) -> dict[str, Path]:
    """The benchmark's files named in `which` (reused when present with the same size)."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    jsonl = SCRATCH / f"rows_{mib}mib_v2.jsonl"
    parquet = SCRATCH / f"rows_{mib}mib_v2.parquet"
    parquet_gz = SCRATCH / f"rows_{mib}mib_v2.parquet.gz"
    need_parquet = "parquet" in which or ("parquet.gz" in which and not parquet_gz.exists())
    need_jsonl = "jsonl" in which or (need_parquet and not parquet.exists())
    if need_jsonl and not jsonl.exists():
        tmp = jsonl.with_suffix(".tmp")
        with open(tmp, "w") as f:
            i = 0
            while f.tell() < mib * 2**20:
                f.write("".join(json.dumps(_row(i + k)) + "\n" for k in range(1000)))
                i += 1000
        tmp.rename(jsonl)
    if "jsonl" in which:
        files["jsonl"] = jsonl
    if need_parquet and not parquet.exists():
        import pyarrow as pa
        import pyarrow.json as pj
        import pyarrow.parquet as pq

        reader = pj.open_json(jsonl, read_options=pj.ReadOptions(block_size=16 * 2**20))
        with pq.ParquetWriter(parquet.with_suffix(".tmp"), reader.schema) as w:
            batches, rows = [], 0
            for batch in reader:  # row groups of 1Mi rows, as pyarrow and pandas write by default
                batches.append(batch)
                rows += batch.num_rows
                if rows >= ROW_GROUP_ROWS:
                    w.write_table(pa.Table.from_batches(batches), row_group_size=ROW_GROUP_ROWS)
                    batches, rows = [], 0
            if batches:
                w.write_table(pa.Table.from_batches(batches), row_group_size=ROW_GROUP_ROWS)
        parquet.with_suffix(".tmp").rename(parquet)
    if "parquet" in which:
        files["parquet"] = parquet
    if "parquet.gz" in which:
        if not parquet_gz.exists():
            with open(parquet, "rb") as src, gzip.open(parquet_gz.with_suffix(".tmp"), "wb", compresslevel=1) as dst:
                shutil.copyfileobj(src, dst, 2**20)
            parquet_gz.with_suffix(".tmp").rename(parquet_gz)
        files["parquet.gz"] = parquet_gz
    long_line = SCRATCH / "line_50mb.jsonl"
    if "50 MB line" in which:
        if not long_line.exists():
            rows = [_row(i) for i in range(5)]
            rows[2]["answer"] = "x" * (50 * 10**6) + "\n#### 1"
            long_line.write_text("".join(json.dumps(r) + "\n" for r in rows))
        files["50 MB line"] = long_line
    return files


def old_reader() -> Path | None:
    """gft_core/data.py as on main before this change (the merge base), as a file to import."""
    for ref in ("d5ba846", "main"):
        r = subprocess.run(["git", "show", f"{ref}:gft_core/data.py"], cwd=ROOT, capture_output=True, text=True)
        if r.returncode == 0 and "iter_batches" not in r.stdout:
            path = SCRATCH / "old_data.py"
            path.write_text(r.stdout)
            return path
    return None


# ---------------------------------------------------------------------- the reading child

def child(side: str, path: str) -> dict:
    """Read `path` with one side; timed from after the imports."""
    rows, error = 0, ""
    if side == "pandas":
        import pandas as pd

        t0 = time.perf_counter()
        frame = pd.read_parquet(path) if ".parquet" in path else pd.read_json(path, lines=True)
        rows = len(frame)
    else:
        import pyarrow.parquet  # noqa: F401  (both readers use it; imported before the clock starts)

        if side == "old":
            import importlib.util

            spec = importlib.util.spec_from_file_location("old_data", SCRATCH / "old_data.py")
            data = importlib.util.module_from_spec(spec)
            sys.modules["old_data"] = data  # dataclasses look their module up
            spec.loader.exec_module(data)
        else:
            import gft_core.data as data
        mapping = data.ColumnMapping(**MAPPING)
        t0 = time.perf_counter()
        try:
            rows_iter = data.iter_rows(path, columns=mapping.columns()) if side == "new" else data.iter_rows(path)
            for number, row in rows_iter:
                data.to_example(row, number, mapping, path)
                rows += 1
        except data.DataError as e:
            error = str(e).replace(path, Path(path).name)[:70] + ".."
    seconds = time.perf_counter() - t0
    return {"rows": rows, "seconds": seconds, "peak_rss_mib": peak_rss_mib(), "error": error}


def peak_rss_mib() -> float:
    """This process's peak RSS: VmHWM (ru_maxrss would include the parent's peak: Linux keeps it
    across the fork and exec that started us)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(side: str, path: Path) -> dict:
    r = subprocess.run([sys.executable, "-m", "bench.dataread", "--child", side, str(path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        return {"rows": 0, "seconds": float("nan"), "peak_rss_mib": float("nan"), "error": r.stderr.strip()[-200:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench dataread", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="8 MiB files, one repetition, nothing recorded")
    p.add_argument("--mib", type=int, default=128, help="size of the generated JSONL, MiB")
    p.add_argument("--gib", type=float, default=None, help="size in GiB instead (e.g. --gib 2)")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--child", nargs=2, metavar=("SIDE", "PATH"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(*a.child)))
        return 0
    mib = int(a.gib * 1024) if a.gib else a.mib
    if a.quick:
        mib, a.reps = 8, 1
    files = generate(mib)
    sides = ["new"] + (["old"] if old_reader() else [])
    try:
        import pandas  # noqa: F401

        if mib <= PANDAS_MAX_MIB:
            sides.append("pandas")
    except ImportError:
        pass
    rows_out, recorded = [], []
    worst_new = 0.0
    for label, path in files.items():
        size_mb = path.stat().st_size / 1e6
        results: dict[str, list[dict]] = {s: [] for s in sides}
        for _ in range(a.reps):  # sides interleaved
            for side in sides:
                if side == "pandas" and label == "parquet.gz":
                    continue  # pandas cannot read a gzipped Parquet file
                results[side].append(measure(side, path))
        cells = []
        for side in sides:
            rs = results[side]
            if not rs:
                cells.append("n/a")
                continue
            rss = Stat.of(r["peak_rss_mib"] for r in rs)
            rate = Stat.of(size_mb / r["seconds"] for r in rs)
            row_rate = Stat.of(r["rows"] / r["seconds"] / 1000 for r in rs)
            note = (f"refused: {rs[0]['error']}" if rs[0]["error"]
                    else f"{rs[0]['rows']:,} rows, {row_rate.median:,.1f}k rows/s")
            cells.append(f"{rss.median:,.0f} MiB, {rate.median:,.1f} MB/s; {note}")
            if side == "new":
                worst_new = max(worst_new, rss.hi)
                recorded.append((f"{label} ({size_mb:,.0f} MB): peak RSS, MB/s", cells[-1],
                                 f"< {GOAL_RSS_MIB} MiB", verdict(rss.hi < GOAL_RSS_MIB)))
            else:
                recorded.append((f"{label} ({size_mb:,.0f} MB) with {side}", cells[-1], "", ""))
        rows_out.append([f"{label} ({size_mb:,.0f} MB)", *cells])
    names = {"new": "gft_core.data", "old": "old gft_core.data", "pandas": "pandas (whole file)"}
    print_table(f"Reading datasets: peak RSS of the reading process, MB/s (median of {a.reps})",
                ["file", *[names[s] for s in sides]], rows_out)
    print(f"goal: peak RSS < {GOAL_RSS_MIB} MiB for every file: {verdict(worst_new < GOAL_RSS_MIB)} "
          f"(worst {worst_new:,.0f} MiB)")
    record("dataread", recorded, quick=a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
