"""Fixtures for the run tests (web and e2e): a small model and toy data built once per session
under settings.MODEL_ROOTS[0] / ARTIFACT_ROOT, and a validated Dataset + RewardConfig per test.

Import the fixtures into a test module (or conftest) by name.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

# Small enough that a training step takes about a second on a shared 2-core CI machine.
MODEL_SIZE = dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, max_positions=256)


@pytest.fixture(scope="session")
def tiny_assets() -> dict[str, Path]:
    """A small Llama-style model under MODEL_ROOTS[0] and toy arithmetic data under ARTIFACT_ROOT."""
    from django.conf import settings

    from gft_core.tiny import make_tiny_model, make_toy_data

    model = Path(settings.MODEL_ROOTS[0]) / "tiny-test"
    if not (model / "config.json").is_file():
        make_tiny_model(model, **MODEL_SIZE)
    data_dir = Path(settings.ARTIFACT_ROOT) / "datasets" / "tests"
    paths = make_toy_data(data_dir, n_train=48, n_eval=8)
    return {"model": model, "train": paths["train"], "eval": paths["eval"], "root": Path(settings.ARTIFACT_ROOT)}


def make_dataset(team, tiny_assets, *, name: str = "toy", validate: bool = True, **fields):
    """A Dataset row for the toy files, validated in-process by the real validation task."""
    from webapp.datasets.models import Dataset
    from webapp.datasets.services import mapping_from

    root = tiny_assets["root"]
    train, evalf = tiny_assets["train"], tiny_assets["eval"]
    ds = Dataset.objects.create(
        team=team, name=name, file_path=str(train.relative_to(root)), original_filename="train.jsonl",
        file_format="jsonl", sha256="0" * 64, size_bytes=train.stat().st_size, mapping=mapping_from("toy"),
        eval_split=Dataset.EvalSplit.FILE, eval_file_path=str(evalf.relative_to(root)),
        eval_original_filename="eval.jsonl", **fields)
    return validated(ds) if validate else ds


def dataset_of(team, name: str, teachers_per_row: list[int], expert_words: int = 3):
    """A validated dataset version whose row i holds teachers_per_row[i] teacher answers."""
    import json

    from django.conf import settings

    from webapp.datasets.models import Dataset
    from webapp.datasets.services import mapping_from

    path = Path(settings.ARTIFACT_ROOT) / "datasets" / "tests" / f"group18-{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": f"What is {i} + 1?", "expert": " ".join(["so"] * expert_words) + f" {i + 1}",
             "teachers": [f"it is {i + 1}"] * k, "answer": str(i + 1)} for i, k in enumerate(teachers_per_row)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = Dataset.objects.create(team=team, name=name, file_path=str(path.relative_to(settings.ARTIFACT_ROOT)),
                                original_filename=path.name, file_format="jsonl", sha256="0" * 64,
                                size_bytes=path.stat().st_size, mapping=mapping_from("toy"),
                                eval_split=Dataset.EvalSplit.NONE)
    return validated(ds)


def validated(ds):
    """`ds` after the real validation task ran on it in-process; it must come out valid."""
    from workers.data_tasks import validate_dataset

    validate_dataset(ds.pk)
    ds.refresh_from_db()
    assert ds.status == ds.Status.VALID, ds.report
    return ds


@pytest.fixture
def toy_dataset(team, tiny_assets):
    return make_dataset(team, tiny_assets)


@pytest.fixture
def reward_config(team):
    from webapp.rewards.models import RewardConfig

    return RewardConfig.objects.create(team=team, name="math", spec={"name": "math_verify", "params": {}})


def stream_steps(pk: int) -> list[int]:
    """Steps of the run's live stream entries, in order, leaving out the worker's system samples
    (entries of their own, workers/system.py)."""
    from gft_core.metric_names import SYSTEM_PREFIX
    from webapp.runs import live

    entries = [json.loads(f[b"data"]) for _, f in live.client().xrange(live.stream_key(pk)) if b"data" in f]
    return [e["step"] for e in entries
            if not (e.get("scalars") and all(k.startswith(SYSTEM_PREFIX) for k in e["scalars"]))]


@pytest.fixture
def launch_inputs(tiny_assets, toy_dataset, reward_config) -> dict:
    """Launch fields of a short GFT run on the small model (a few seconds of training); every other
    launch setting at its default."""
    from gft_core.config import FIELDS, LAUNCH_FIELDS

    return {name: FIELDS[name].default for name in LAUNCH_FIELDS if FIELDS[name].default is not None} | {
        "name": "e2e", "method": "gft", "model": str(tiny_assets["model"]), "dataset": toy_dataset.pk,
        "reward_config": reward_config.pk, "eval_split": "none", "n_expert": 1, "n_teacher": 1, "n_self": 2,
        "tau": 0.5, "lr": 1e-3, "lr_schedule": "constant", "warmup_steps": 0, "prompts_per_step": 2,
        "micro_batch_size": 8, "max_prompt_len": 48, "max_response_len": 12, "temperature": 1.0,
        "max_steps": 4, "epochs": 1.0, "seed": 0, "eval_interval": 0, "checkpoint_interval": 2,
        "mixed_precision": "no", "num_gpus": 1, "queue": "gpu", "tags": ["test"],
    }


def wait_for(predicate, timeout: float = 180, interval: float = 0.3, what: str = "condition", on_timeout=None):
    """Poll `predicate` until it returns a truthy value; fail with `what` (and a log) on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    detail = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{detail}")
