"""Smoke test of the benchmarks (bench/, issue 7): each one runs on tiny sizes and prints its table.

No timing is asserted. Each benchmark runs as `python -m bench <name> --quick` in a child
process (it sets up its own bench_* database and Redis db 14, never the test database), with
BENCH_NO_RECORD=1 so bench/RESULTS.md is left alone. The TRL and MLflow comparisons need the
optional peers (`pip install -e '.[bench]'`): without them those tests skip.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_bench(name: str, *args: str, timeout: int = 600) -> str:
    env = dict(os.environ, BENCH_NO_RECORD="1", PYTHONUNBUFFERED="1")
    # The test session's Django/Redis settings must not leak into the benchmark's own stores.
    for var in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"):
        env.pop(var, None)
    r = subprocess.run([sys.executable, "-m", "bench", name, "--quick", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"python -m bench {name} --quick failed ({r.returncode}):\n{out[-5000:]}"
    for line in r.stdout.splitlines():
        if line.startswith("skipped:") and name != "gpu":
            pytest.skip(f"bench {name}: {line}")
    return r.stdout


def test_trainer_vs_trl():
    pytest.importorskip("trl")
    out = run_bench("trainer")
    assert "trl GRPOTrainer" in out and "gft (0 off-policy)" in out and "gft / trl" in out


def test_loss_overhead():
    out = run_bench("loss")
    assert "sft-ce" in out and "gft+stats" in out


def test_ingest_vs_mlflow():
    pytest.importorskip("mlflow")
    out = run_bench("ingest")
    assert "gft PostgresRedisSink" in out and "MLflow log_batch" in out


def test_live_latency():
    out = run_bench("live")
    assert "p99" in out and "lost" in out


def test_alerts_cost_and_latency():
    out = run_bench("alerts")
    assert "DB query per rule per step" in out and "step -> alert at the run page's SSE stream" in out


def test_chart_endpoints():
    out = run_bench("chart")
    assert "REST /api/runs/<id>/metrics/" in out and "compare data" in out


def test_gpu_skips_or_runs():
    out = run_bench("gpu")
    import torch

    if torch.cuda.is_available():
        assert "MFU" in out
    else:
        assert "skipped: no CUDA device" in out


def test_gpu_code_path_on_cpu():
    """The GPU benchmark's code on a tiny Qwen2 on the CPU, so it is exercised without a GPU."""
    out = run_bench("gpu", "--cpu-check")
    assert "fwd/bwd (gft loss)" in out and "rollout (generate_samples)" in out


def test_dataread_memory():
    out = run_bench("dataread")
    assert "Reading datasets" in out and "old gft_core.data" in out and "line 3: longer than 16 MiB" in out


def test_evaluation_vs_generate_loop():
    out = run_bench("evaluation")
    assert "ours (evaluate_benchmark)" in out and "transformers generate loop" in out and "generate / ours" in out


def test_validate_memory():
    out = run_bench("validate")
    assert "Dataset validation (webapp.datasets.validation.validate)" in out
    assert "valid, 4,000 of 4,000 rows valid" in out and "line 3: longer than 16 MiB" in out


def test_memory_plan_vs_measured():
    out = run_bench("memory")
    assert "memory plan vs measured peak tensor memory" in out and "activation checkpointing, same" in out
    assert "no CUDA" in out or "MiB (" in out  # the GPU column: measured with CUDA, said so without
