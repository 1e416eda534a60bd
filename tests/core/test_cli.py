"""python -m gft_core end to end, in subprocesses (no Django, Postgres or Redis)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from gft_core.metrics import HISTOGRAM_NAMES, METRIC_NAMES

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "gft_core", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_tiny_gft_run_writes_every_metric(tmp_path, tiny_model_dir):
    p = run("make-toy-data", str(tmp_path / "toy"), "--n-train", "32", "--n-eval", "4", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    paths = json.loads(p.stdout.strip().splitlines()[-1])
    cfg = {
        "method": "gft", "model_path": str(tiny_model_dir), "output_dir": str(tmp_path / "out"),
        "data": {"path": paths["train"], "eval_path": paths["eval"], "mapping": "toy", "instruction_suffix": "Be brief."},
        "n_expert": 1, "n_teacher": 3, "n_self": 4, "tau": 0.5, "lr": 1e-3,
        "prompts_per_step": 2, "sequences_per_update": 8, "micro_batch_size": 4, "max_steps": 4,
        "max_response_len": 24, "eval_interval": 2, "eval_samples": 2, "eval_max_prompts": 4,
        "kl_interval": 2, "checkpoint_interval": 2, "group_sample_interval": 2, "group_sample_count": 1,
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    metrics = tmp_path / "metrics.jsonl"
    p = run("train", "--config", "run.yaml", "--metrics-jsonl", str(metrics), "--quiet", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["step"] == 4

    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert records[0]["type"] == "start" and records[-1]["type"] == "end"
    steps = [r for r in records if r["type"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    names = set().union(*(r["scalars"] for r in steps))
    assert names == set(METRIC_NAMES)
    assert set(HISTOGRAM_NAMES) <= set(steps[0]["histograms"])
    groups = [r for r in records if r["type"] == "groups"]
    assert [g["step"] for g in groups] == [2, 4]
    resp = groups[0]["groups"][0]["responses"][0]
    assert set(resp) >= {"source", "text", "reward", "advantage", "tokens", "pi", "c", "rectified"}
    kinds = {(r["kind"], r["step"]) for r in records if r["type"] == "artifact"}
    assert {("checkpoint", 2), ("checkpoint", 4), ("final_model", 4)} <= kinds

    p = run("eval", "--model", str(tmp_path / "out/final"), "--data", paths["eval"], "--k", "2",
            "--max-response-len", "16", "--json", "eval.json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert 0.0 <= json.loads(p.stdout.strip().splitlines()[-1])["accuracy"] <= 1.0
    # the final model is evaluated with the run's prompt format (the tiny model has no chat template)
    assert json.loads((tmp_path / "eval.json").read_text())["prompt_format"] == {
        "use_chat_template": True, "system_prompt": "", "instruction_suffix": "Be brief.", "chat_template_applied": False}

    # resuming a finished run continues from its last checkpoint and appends to the same file
    p = run("train", "--config", "run.yaml", "--metrics-jsonl", str(metrics), "--quiet", "--resume",
            "--set", "max_steps=5", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    steps = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in steps if r["type"] == "step"][-1] == 5


def test_cli_bad_config_is_one_line_and_exit_2(tmp_path, tiny_model_dir, toy_data):
    cfg = {"model_path": str(tiny_model_dir), "data": {"path": str(toy_data["train"])}, "tau": 0}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    p = run("train", "--config", "bad.yaml", cwd=tmp_path)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == ["error: tau: must be in (0, 1] (got 0)"]

    (tmp_path / "bad2.yaml").write_text(yaml.safe_dump({**cfg, "tau": 0.5, "reward": {"name": "nope"}}))
    p = run("train", "--config", "bad2.yaml", cwd=tmp_path)
    assert p.returncode == 2 and "reward.name" in p.stderr and "'nope'" in p.stderr

    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad3.yaml").write_text(yaml.safe_dump({**cfg, "tau": 0.5, "data": {"path": "empty.jsonl"}}))
    p = run("train", "--config", "bad3.yaml", cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "empty.jsonl" in p.stderr


def test_cli_make_tiny(tmp_path):
    p = run("make-tiny", str(tmp_path / "m"), "--hidden-size", "32", "--layers", "1", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["parameters"] > 0 and (tmp_path / "m/config.json").is_file()


def _teacher_nll(model_dir: Path, rows: list[dict]) -> float:
    import torch

    from gft_core.policy import load_policy

    model, tok = load_policy(model_dir)
    with torch.no_grad():
        losses = [model(**(enc := tok(r["prompt"] + " " + t, return_tensors="pt")), labels=enc["input_ids"]).loss
                  for r in rows for t in r["teachers"]]
    return float(torch.stack(losses).mean())


def test_cli_make_tiny_sft_mix_warmup_learns_the_teacher_answers(tmp_path, toy_data):
    tiny = ("--hidden-size", "32", "--layers", "1", "--quiet")
    assert run("make-tiny", str(tmp_path / "cold"), *tiny, cwd=tmp_path).returncode == 0
    p = run("make-tiny", str(tmp_path / "warm"), *tiny, "--warmup-steps", "8", "--warmup-method", "sft_mix",
            "--warmup-lr", "1e-2", "--warmup-data", str(toy_data["train"]), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in toy_data["eval"].read_text().splitlines()]
    # same seed, same initial weights: only the warm-up on expert + teacher answers differs
    assert _teacher_nll(tmp_path / "warm", rows) < _teacher_nll(tmp_path / "cold", rows) - 0.5
