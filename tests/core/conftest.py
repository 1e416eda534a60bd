"""Core fixtures: one tiny model and one toy data set per session, built offline into a tmp dir."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A very small random Llama-style model (fast on CPU) with the tiny tokenizer."""
    from gft_core.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", hidden_size=64, num_layers=2,
                           num_heads=4, intermediate_size=128, seed=0)


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> dict[str, Path]:
    from gft_core.tiny import make_toy_data

    return make_toy_data(tmp_path_factory.mktemp("toy"), n_train=64, n_eval=8, seed=0)


@pytest.fixture
def tiny_cfg(tiny_model_dir, toy_data, tmp_path):
    """A factory of small, fast configs on the tiny model: tiny_cfg(method="sft", max_steps=3)."""
    from gft_core.config import GFTConfig

    def make(**overrides):
        d = dict(
            method="gft", model_path=str(tiny_model_dir), output_dir=str(tmp_path / "run"),
            data={"path": str(toy_data["train"]), "eval_path": str(toy_data["eval"]), "mapping": "toy"},
            n_expert=1, n_teacher=2, n_self=2, tau=0.5, lr=1e-3,
            prompts_per_step=2, micro_batch_size=5, max_steps=2, max_response_len=24,
            eval_samples=2, eval_max_prompts=4, kl_interval=1, kl_probe_size=4,
            checkpoint_interval=0, group_sample_interval=1, group_sample_count=2,
        )
        data = overrides.pop("data", None)
        if data:
            d["data"] = {**d["data"], **data}
        d.update(overrides)
        return GFTConfig.from_dict(d)

    return make


class RecordingSink:
    """A MetricSink that keeps everything in memory."""

    def __init__(self):
        self.started, self.steps, self.groups, self.artifacts, self.closed = None, [], [], [], False

    def start(self, *, total_steps, start_step, config):
        self.started = {"total_steps": total_steps, "start_step": start_step, "config": config}

    def log(self, step, scalars, histograms=None):
        self.steps.append((step, dict(scalars), histograms))

    def log_groups(self, step, groups):
        self.groups.append((step, groups))

    def artifact(self, kind, path, step):
        self.artifacts.append((kind, path, step))

    def close(self):
        self.closed = True


@pytest.fixture
def recording_sink():
    return RecordingSink()
