"""Checkpoints under output_dir/checkpoints/step-N: the on-disk format, in one place.

A checkpoint holds the model (Hugging Face format, with the tokenizer), optimizer, scheduler,
the rest of the current rollout batch, every RNG state, and trainer_state.json (step, data
cursor, eval history, the config). It is written to a temp directory then renamed, so a
directory named step-N with a trainer_state.json is complete.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


CHECKPOINT_PREFIX = "step-"
STATE_FILE = "trainer_state.json"


@dataclass
class Checkpoint:
    """What read_checkpoint returns (the weights are loaded separately, before accelerate's prepare)."""

    path: Path
    state: dict[str, Any]  # step, epoch, cursor, rollout_index, total_steps, eval_history, config
    optimizer: dict
    scheduler: dict
    pending: Any  # the rollout batch still being trained on, or None


def checkpoint_step(path: Path) -> int | None:
    """N for a directory named step-N, else None."""
    digits = path.name[len(CHECKPOINT_PREFIX):]
    return int(digits) if path.name.startswith(CHECKPOINT_PREFIX) and digits.isdigit() else None


def is_complete(path: Path) -> bool:
    """A checkpoint directory that was published (renamed from .tmp) with its model."""
    return (path / STATE_FILE).is_file() and (path / "model" / "config.json").is_file()


def checkpoint_steps(root: Path) -> list[int]:
    """Steps of the complete checkpoints under root, ascending."""
    return sorted(s for p in root.glob(f"{CHECKPOINT_PREFIX}*") if (s := checkpoint_step(p)) is not None and is_complete(p))


def latest_checkpoint(root: Path) -> Path | None:
    """The complete checkpoint of the highest step under root, if any."""
    done = [(checkpoint_step(p), p) for p in root.glob(f"{CHECKPOINT_PREFIX}*")
            if checkpoint_step(p) is not None and p.is_dir() and (p / STATE_FILE).is_file()]
    return max(done)[1] if done else None


def prune_checkpoints(root: Path, keep: int) -> None:
    """Remove all but the `keep` checkpoints of the highest steps."""
    done = sorted((checkpoint_step(p), p) for p in root.glob(f"{CHECKPOINT_PREFIX}*") if checkpoint_step(p) is not None)
    for _, p in done[: max(0, len(done) - keep)]:
        shutil.rmtree(p, ignore_errors=True)


def write_checkpoint(path: Path, *, model: Any, tokenizer: Any, optimizer: Any, scheduler: Any, pending: Any,
                     state: dict[str, Any], before_publish: Callable[[], None] | None = None,
                     model_state: dict | None = None, optimizer_state: dict | None = None) -> None:
    """Write one checkpoint (main process only): to path.tmp, then renamed to path.

    `before_publish` runs just before the rename; if it raises, the unrenamed checkpoint is
    removed and nothing is published (a fenced metric sink refusing a superseded attempt).
    Under FSDP the caller passes the gathered full states (`model_state`, `optimizer_state`): the
    files are then the same as without FSDP."""
    import numpy as np
    import torch  # here, not at the top: the web reads checkpoint paths without loading torch

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "model", **({"state_dict": model_state} if model_state is not None else {}))
    tokenizer.save_pretrained(tmp / "model")
    torch.save(optimizer_state if optimizer_state is not None else optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(pending, tmp / "rollout.pt")
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}, tmp / "rng.pt")
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
    if before_publish is not None:
        try:
            before_publish()
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def read_checkpoint(path: Path, device: Any) -> Checkpoint:
    """Read a checkpoint's state and restore every RNG from it."""
    import numpy as np
    import torch

    state = json.loads((path / STATE_FILE).read_text())
    optimizer = torch.load(path / "optimizer.pt", map_location=device, weights_only=False)
    scheduler = torch.load(path / "scheduler.pt", weights_only=False)
    pending = torch.load(path / "rollout.pt", weights_only=False)
    rng = torch.load(path / "rng.pt", weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return Checkpoint(path=path, state=state, optimizer=optimizer, scheduler=scheduler, pending=pending)
