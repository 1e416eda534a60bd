"""The trainer as a child process of `accelerate launch`, for runs on more than one GPU.

    accelerate launch --num_processes N -m workers.train_child \
        --config run.json --metrics metrics.jsonl --stop-file STOP --result result.json

Why a JSONL file rather than the Postgres sink in the child: the child stays a plain gft_core
program (no Django, Celery, Redis or database credentials in N processes), only rank 0 writes
metrics (gft_core's Trainer calls its sink on the main process only), and the worker process that
launched it (workers.tasks) tails the file into PostgresRedisSink, the same sink a single-GPU run
uses, so batching, idempotency and the live stream behave identically. The file stays in the run
directory as a plain record of what the child reported.

Cancel: the worker creates the stop file. The Trainer asks the stop hook on rank 0 only and
broadcasts its answer, so all ranks stop at the same step (a rank that stopped alone would leave
the others waiting in a collective); the hook itself must not run a collective. SIGTERM to a rank counts as the stop file
(the same graceful stop: a checkpoint at the next step); the worker kills the process group with
SIGKILL when its attempt is superseded, which must not checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="gft_core config (JSON or YAML)")
    p.add_argument("--metrics", required=True, help="JSONL file rank 0 appends its metrics to")
    p.add_argument("--stop-file", required=True, help="the run stops at the next step once this file exists")
    p.add_argument("--result", required=True, help="rank 0 writes {status, step, final_dir} here at the end")
    args = p.parse_args(argv)

    from gft_core.config import load_config
    from gft_core.metrics import JSONLSink
    from gft_core.trainer import Trainer

    cfg = load_config(args.config)
    rank0 = os.environ.get("RANK", "0") == "0"
    sink = JSONLSink(args.metrics) if rank0 else None
    stop_file = Path(args.stop_file)
    terminated: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: terminated.append(signum))

    def stop_hook() -> bool:
        return bool(terminated) or stop_file.exists()

    trainer = Trainer(cfg, sink=sink, stop_hook=stop_hook, resume=True)
    result = trainer.train()
    if rank0:
        Path(args.result).write_text(json.dumps({"status": result.status, "step": result.step,
                                                  "final_dir": result.final_dir}))
        print(f"gft-train-child: {result.status} at step {result.step}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
