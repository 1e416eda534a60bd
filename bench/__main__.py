"""`python -m bench all` | `python -m bench <name> [options]` (see bench/README.md).

`all` runs every benchmark in its own child process (each sets up its own scratch database and
Redis db 14), one after the other, and prints a summary; it never stops at a failing or
skipped benchmark. `--quick` runs tiny sizes and records nothing (the smoke test uses it).
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time

# CPU threads, set before torch is imported. On a shared 2-core machine two OpenMP threads that
# spin-wait at every barrier make a fwd/bwd 3-20x slower and wildly variable whenever another
# process runs (measured: 1 thread 0.27 s, 2 threads 0.9-6.6 s for the same tiny fwd/bwd), so
# the benchmarks default to 1 thread with passive waiting; both sides of every comparison get the
# same setting. BENCH_THREADS=2 (and a quiet machine) to measure with both cores.
os.environ.setdefault("BENCH_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", os.environ["BENCH_THREADS"])
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bench.common import ROOT, Skip  # noqa: E402

BENCHMARKS = {
    "trainer": "gft_core Trainer vs TRL GRPOTrainer: sequences/s, tokens/s, phase split",
    "loss": "GFT loss + backward vs cross-entropy SFT on the same tokens and model",
    "ingest": "metric points/s durably in Postgres: PostgresRedisSink vs MLflow log_batch",
    "live": "sink call -> SSE client latency, 10 runs x 100 metrics x 10 steps/s, 50 clients",
    "alerts": "alert rule evaluation per step per run and 100 runs x 100 metrics at 10 steps/s vs a DB query per step",
    "chart": "downsampled series / metrics API / compare on 10 x 1,000,000-point runs",
    "charts": "run and compare pages in Chromium: ms to all charts drawn, compressed static vs uncompressed",
    "gpu": "MFU of a ~0.5B Qwen2-shaped model in bf16 and rollout tokens/s (CUDA only)",
    "dataread": "dataset reading: peak RSS and MB/s on large JSONL/Parquet and a 50 MB line vs old reader, pandas",
    "evaluation": "MATH-500 x k=4 on the tiny model: batched evaluate_benchmark vs a transformers generate loop",
    "memory": "gft_core.memory's plan vs the measured peak tensor memory of real training steps (CPU; GPU with CUDA)",
    "validate": "the worker's dataset validation (validate()): peak RSS and MB/s on a large JSONL/Parquet, a 50 MB line",
    "runtable": "run table page with 10,000 runs x 30 columns: server time + queries vs the Django admin changelist",
    "sweep_page": "sweep page of 500 runs drawn in Chromium (parcoords, scatters, table) vs the run table page",
}
# Per-benchmark wall-clock limit in `all` (the whole run must stay under 15 minutes on 2 cores).
LIMITS = {"trainer": 360, "loss": 150, "ingest": 200, "live": 150, "alerts": 180, "chart": 600, "charts": 600, "gpu": 300,
          "dataread": 300, "evaluation": 300, "validate": 300, "runtable": 240,
          "memory": 300, "sweep_page": 180}


def run_one(name: str, argv: list[str]) -> int:
    mod = importlib.import_module(f"bench.{name}")
    try:
        return mod.main(argv) or 0
    except Skip as e:
        print(f"skipped: {e}", flush=True)
        from bench.common import record

        record(name, [("benchmark", f"skipped: {e}", "", "n/a")], quick="--quick" in argv)
        return 0


def run_all(argv: list[str]) -> int:
    t0 = time.perf_counter()
    summary = []
    only = [a for a in argv if not a.startswith("-")]
    flags = [a for a in argv if a.startswith("-")]
    for name in only or list(BENCHMARKS):
        print(f"\n===== bench {name}: {BENCHMARKS[name]}", flush=True)
        t = time.perf_counter()
        try:
            rc = subprocess.run([sys.executable, "-m", "bench", name, *flags], cwd=ROOT,
                                timeout=LIMITS[name] * (1 if "--quick" not in flags else 2)).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        summary.append((name, rc, time.perf_counter() - t))
    print("\n===== summary")
    for name, rc, dt in summary:
        print(f"  {name:8s} {'ok' if rc == 0 else f'FAILED ({rc})':14s} {dt:6.1f} s")
    print(f"  total {time.perf_counter() - t0:.1f} s; figures appended to bench/RESULTS.md")
    return 0 if all(rc == 0 for _, rc, _ in summary) else 1


def main() -> int:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        for name, what in BENCHMARKS.items():
            print(f"  {name:8s} {what}")
        return 0
    os.chdir(ROOT)
    if args[0] == "all":
        return run_all(args[1:])
    if args[0] not in BENCHMARKS:
        print(f"unknown benchmark {args[0]!r}; one of: all, {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    return run_one(args[0], args[1:])


if __name__ == "__main__":
    sys.exit(main())
