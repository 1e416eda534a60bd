"""`gft datasets teachers ...`: generate teacher answers for a dataset version, import answers made
elsewhere, follow, cancel and resume jobs (issue 18). Registered by client/cli.py's parser."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

FINISHED = ("succeeded", "failed", "cancelled")
OPTIONS = ("k", "temperature", "top_p", "max_new_tokens", "reward_config", "threshold", "max_retries", "seed",
           "batch_size")


def cmd_generate(args: argparse.Namespace) -> int:
    from client.cli import api

    client = api()
    payload: dict[str, Any] = {k: getattr(args, k) for k in OPTIONS if getattr(args, k) is not None}
    payload.update({"run": args.run} if args.run else {"model": args.model})
    if args.chat_template is not None:  # default (server side): on, the dataset's system prompt and suffix
        payload["use_chat_template"] = args.chat_template
    if args.filter:
        payload["filter"] = True
    job = client.post(f"datasets/{args.dataset}/teacher-answers/", payload)
    print(f"Teacher job #{job['id']} for dataset {args.dataset}: {job['model_label']}, K={job['options']['k']}, "
          f"{job['total']} prompts, {job['status']}")
    return follow(client, job["id"], interval=args.interval) if args.follow else 0


def follow(client: Any, job_id: int, *, interval: float = 2.0, out=None) -> int:
    """Print progress until the job ends; 0 if it succeeded (with the new version), 1 otherwise."""
    out = out or sys.stdout
    last = ""
    while True:
        job = client.get(f"teacher-jobs/{job_id}/")
        eta = f", about {job['eta_s']:.0f} s left" if job.get("eta_s") is not None else ""
        line = f"#{job_id} {job['status']:<9} {job['done']}/{job['total'] or '?'} prompts{eta}"
        if line != last:
            out.write(line + "\n")
            out.flush()
            last = line
        if job["status"] in FINISHED:
            if job["status"] == "succeeded":
                out.write(f"New dataset version: id {job['result']}\n")
            elif job["error"]:
                out.write(f"Teacher job #{job_id} {job['status']}: {job['error']}\n")
            return 0 if job["status"] == "succeeded" else 1
        time.sleep(interval)


def cmd_import(args: argparse.Namespace) -> int:
    from client.cli import CliError, api

    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    with open(path, "rb") as f:
        res = api().request("POST", f"datasets/{args.dataset}/teacher-import/", files={"file": (path.name, f)})
    rep = res["report"]
    print(f"New dataset version id {res['dataset']}: {rep['answers']} answers for {rep['matched_rows']} rows "
          f"(key {rep['key']}); {rep['unmatched']} unmatched keys, {rep['duplicates']} duplicate keys")
    for what in ("unmatched", "duplicate"):
        if rep.get(f"{what}_examples"):
            print(f"  {what}: " + "; ".join(rep[f"{what}_examples"]))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from client.cli import api

    for job in api().get(f"datasets/{args.dataset}/teacher-answers/"):
        print(f"#{job['id']} {job['status']:<9} {job['done']}/{job['total']} {job['model_label']} K={job['options']['k']}"
              + (f" -> dataset {job['result']}" if job["result"] else ""))
    return 0


def cmd_change(args: argparse.Namespace) -> int:
    from client.cli import api

    job = api().post(f"teacher-jobs/{args.id}/{args.action}/")
    print(f"Teacher job #{job['id']} is {job['status']}{' (stopping after its batch)' if job['cancel_requested'] else ''}")
    return 0


def add_parser(sub: Any) -> None:
    """`gft datasets teachers generate|import|list|cancel|resume`."""
    ds = sub.add_parser("datasets", help="dataset versions: teacher answers").add_subparsers(dest="datasets_command",
                                                                                             required=True)
    t = ds.add_parser("teachers", help="generate or import teacher answers (a new dataset version)").add_subparsers(
        dest="teachers_command", required=True)
    gen = t.add_parser("generate", help="generate K answers per prompt with a teacher model (a job on the GPU queue)")
    gen.add_argument("dataset", type=int, help="dataset version id")
    who = gen.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help='"tiny" or a model directory under the server\'s MODEL_ROOTS')
    who.add_argument("--run", type=int, help="or a finished run: its final model")
    gen.add_argument("--k", type=int, help="answers per prompt (default 4)")
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--top-p", dest="top_p", type=float)
    gen.add_argument("--max-new-tokens", dest="max_new_tokens", type=int)
    gen.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=None,
                     help="the teacher model's chat template (default on, when it has one)")
    gen.add_argument("--reward-config", dest="reward_config", type=int, help="reward config id (default math_verify)")
    gen.add_argument("--filter", action="store_true", help="keep only answers scoring >= --threshold")
    gen.add_argument("--threshold", type=float)
    gen.add_argument("--max-retries", dest="max_retries", type=int)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--batch-size", dest="batch_size", type=int)
    gen.add_argument("--follow", action="store_true", help="then follow it until it ends")
    gen.add_argument("--interval", type=float, default=2.0)
    gen.set_defaults(fn=cmd_generate)
    imp = t.add_parser("import", help="join a JSONL / Parquet of answers (keyed by row or prompt) onto a version")
    imp.add_argument("dataset", type=int)
    imp.add_argument("file")
    imp.set_defaults(fn=cmd_import)
    lst = t.add_parser("list", help="teacher jobs of a dataset version")
    lst.add_argument("dataset", type=int)
    lst.set_defaults(fn=cmd_list)
    for action in ("cancel", "resume"):
        c = t.add_parser(action, help=f"{action} a teacher job")
        c.add_argument("id", type=int)
        c.set_defaults(fn=cmd_change, action=action)
