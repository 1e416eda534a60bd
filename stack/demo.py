"""Demo assets for `./studio up`: an admin in a "Demo" team, the tiny model after a short warm-up
SFT, the toy arithmetic task as a validated dataset, a math-verifier reward, and a GFT run.

Every function is idempotent: a second `up` reuses what the first one made.
"""
from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from webapp.accounts.models import Membership
from webapp.accounts.services import ensure_team

log = logging.getLogger(__name__)

DEMO_TEAM = "Demo"
DEMO_USER = "admin"
DEMO_DATASET = "toy-arithmetic"
DEMO_REWARD = "math-verify"
WARMUP_STEPS = 60  # enough for the tiny model to write answers in the task's format


def demo_model_dir() -> Path:
    """Under the first MODEL_ROOTS folder, so the launch form offers it like any user model."""
    return Path(settings.MODEL_ROOTS[0]) / "tiny-warm"


def ensure_model() -> Path:
    from gft_core.metrics import ConsoleSink
    from gft_core.tiny import make_tiny

    target = demo_model_dir()
    if not (target / "config.json").is_file():
        tmp = target.with_name(".tiny-warm.tmp")
        log.info("building the tiny model with %d warm-up SFT steps in %s", WARMUP_STEPS, target)
        make_tiny(tmp, warmup_steps=WARMUP_STEPS, sink=ConsoleSink())  # a progress bar: this takes a minute
        tmp.rename(target)
    return target


def _ensure_dataset(team, user):
    """The toy dataset, its validation queued (by the upload, or again when an earlier one did not
    end valid) for a worker; see `dataset_ready`."""
    from gft_core.tiny import make_toy_data
    from webapp.datasets.models import Dataset
    from webapp.datasets.services import create_dataset_from_upload, start_validation

    existing = Dataset.objects.filter(team=team, name=DEMO_DATASET).order_by("-version").first()
    if existing is None:
        paths = make_toy_data(Path(settings.ARTIFACT_ROOT) / "demo-data", n_train=2000, n_eval=100)
        with open(paths["train"], "rb") as train, open(paths["eval"], "rb") as evals:
            return create_dataset_from_upload(
                team, user, train, name=DEMO_DATASET, filename="train.jsonl", mapping="toy",
                eval_split="file", eval_fileobj=evals, eval_filename="eval.jsonl")
    if existing.status != Dataset.Status.VALID:
        start_validation(existing)
    return existing


class DemoError(RuntimeError):
    """The demo cannot go on (its dataset is invalid); the message says why."""


def dataset_ready(dataset) -> bool:
    """True once a worker has validated the demo dataset (the demo run needs it valid)."""
    from webapp.datasets.models import Dataset

    dataset.refresh_from_db(fields=["status", "report"])
    if dataset.status == Dataset.Status.INVALID:
        raise DemoError(f"the demo dataset is invalid: {dataset.report}")
    return dataset.status == Dataset.Status.VALID


def ensure_reward(team, user):
    from webapp.rewards.models import RewardConfig
    from webapp.rewards.services import create_reward_config

    existing = RewardConfig.objects.filter(team=team, name=DEMO_REWARD).order_by("-version").first()
    return existing or create_reward_config(team, user, name=DEMO_REWARD, spec={"name": "math_verify", "params": {}},
                                            description="1.0 when the last \\boxed{} answer equals the ground truth")


@transaction.atomic
def ensure_admin(password: str, team_name: str = DEMO_TEAM):
    """(team, the demo admin as an admin of it), created or reused; the admin's password set."""
    User = get_user_model()
    team = ensure_team(team_name)
    user = User.objects.filter(username=DEMO_USER).first() or User.objects.create_superuser(DEMO_USER, "", password)
    user.set_password(password)
    user.save()
    Membership.objects.update_or_create(user=user, team=team, defaults={"role": Membership.Role.ADMIN})
    return team, user


def ensure_demo(password: str) -> dict:
    """Create (or reuse) the demo admin, team, model, dataset and reward; return their handles."""
    team, user = ensure_admin(password)
    model = ensure_model()
    return {"team": team, "user": user, "username": DEMO_USER, "password": password, "model": str(model),
            "dataset": _ensure_dataset(team, user), "reward": ensure_reward(team, user)}


def launch_demo_run(info: dict):
    """Queue a short GFT run on the warmed tiny model (paper group composition, 1+3+4)."""
    from webapp.runs.launch import submit_run

    return submit_run(info["team"], info["user"], {
        "name": "demo: GFT on the tiny model", "model": info["model"], "dataset": info["dataset"].pk,
        "reward_config": info["reward"].pk, "method": "gft", "max_steps": 30, "tags": ["demo"],
    })
