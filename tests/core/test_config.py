"""GFTConfig: every invalid value is a ConfigError naming the field and the value."""

from __future__ import annotations

import json

import pytest

from gft_core.config import ConfigError, GFTConfig, load_config


def test_valid_config_passes(tiny_cfg):
    cfg = tiny_cfg().validate()
    assert cfg.group_size == 5 and cfg.sequences_per_rollout == 10


@pytest.mark.parametrize("overrides, field, value", [
    ({"method": "ppo"}, "method", "ppo"),
    ({"tau": 0}, "tau", 0),
    ({"tau": -0.1}, "tau", -0.1),
    ({"tau": 1.5}, "tau", 1.5),
    ({"tau": "high"}, "tau", "high"),
    ({"n_expert": 0, "n_teacher": 0, "n_self": 0}, "n_expert + n_teacher + n_self", None),
    ({"method": "sft", "n_expert": 0}, "n_expert", None),
    ({"method": "grpo", "n_self": 0}, "n_self", None),
    ({"n_self": -1}, "n_self", -1),
    ({"sequences_per_update": 3}, "sequences_per_update", 3),
    ({"micro_batch_size": 3}, "micro_batch_size", 3),
    ({"sequences_per_update": 5, "micro_batch_size": 2}, "micro_batch_size", 2),
    ({"prompts_per_step": 0}, "prompts_per_step", 0),
    ({"lr": -1.0}, "lr", -1.0),
    ({"lr_schedule": "step"}, "lr_schedule", "step"),
    ({"mixed_precision": "fp8"}, "mixed_precision", "fp8"),
    ({"loss_agg": "sum"}, "loss_agg", "sum"),
    ({"top_p": 0}, "top_p", 0),
    ({"temperature": 0}, "temperature", 0),
    ({"max_steps": 0}, "max_steps", 0),
    ({"max_steps": None, "epochs": 0}, "epochs", 0),
    ({"max_response_len": 0}, "max_response_len", 0),
    ({"reward": {"name": "no_such_reward"}}, "reward.name", "no_such_reward"),
    ({"reward": {"name": "math_verify", "params": {"bogus": 1}}}, "reward.params.bogus", 1),
    ({"model_path": "/nonexistent/model"}, "model_path", "/nonexistent/model"),
    ({"data": {"path": "/nonexistent/train.jsonl"}}, "data.path", "/nonexistent/train.jsonl"),
    ({"data": {"mapping": "nope"}}, "data.mapping", "nope"),
    ({"data": {"eval_fraction": 1.0, "eval_path": None}}, "data.eval_fraction", 1.0),
])
def test_invalid_values_name_field_and_value(tiny_cfg, overrides, field, value):
    with pytest.raises(ConfigError) as err:
        tiny_cfg(**overrides).validate()
    assert err.value.field == field
    if value is not None:
        assert err.value.value == value
        assert repr(value) in str(err.value)
    assert str(err.value).startswith(field)


def test_model_dir_must_be_a_hf_model(tiny_cfg, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json") as err:
        tiny_cfg(model_path=str(tmp_path / "empty")).validate()
    assert err.value.field == "model_path"


def test_unknown_keys_are_rejected(tiny_cfg):
    with pytest.raises(ConfigError) as err:
        GFTConfig.from_dict({"methd": "gft"})
    assert err.value.field == "methd"
    with pytest.raises(ConfigError) as err:
        GFTConfig.from_dict({"data": {"path": "x", "colums": {}}})
    assert err.value.field == "data.colums"


def test_rejected_before_any_model_is_loaded(tiny_cfg, monkeypatch):
    import gft_core.trainer as trainer

    def boom(*a, **k):
        raise AssertionError("model loaded")

    monkeypatch.setattr(trainer, "load_policy", boom)
    with pytest.raises(ConfigError):
        trainer.Trainer(tiny_cfg(tau=0.0))


@pytest.mark.parametrize("method, counts", [
    ("gft", {"expert": 1, "teacher": 2, "self": 2}),
    ("gft_no_dcr", {"expert": 1, "teacher": 2, "self": 2}),
    ("gft_no_gal", {"expert": 1, "teacher": 2, "self": 2}),
    ("sft", {"expert": 1, "teacher": 0, "self": 0}),
    ("dft", {"expert": 1, "teacher": 0, "self": 0}),
    ("sft_mix", {"expert": 1, "teacher": 2, "self": 0}),
    ("grpo", {"expert": 0, "teacher": 0, "self": 2}),
])
def test_method_decides_group_composition(tiny_cfg, method, counts):
    assert tiny_cfg(method=method).group_counts() == counts


def test_round_trip_and_files(tiny_cfg, tmp_path):
    import yaml

    cfg = tiny_cfg(sequences_per_update=5, micro_batch_size=5)
    d = cfg.to_dict()
    assert GFTConfig.from_dict(d) == cfg
    assert cfg.grad_accum_steps == 1 and cfg.updates_per_rollout == 2
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(d))
    (tmp_path / "run.json").write_text(json.dumps(d))
    assert load_config(tmp_path / "run.yaml") == cfg
    assert load_config(tmp_path / "run.json") == cfg
    (tmp_path / "bad.yaml").write_text("method: [unclosed")
    with pytest.raises(ConfigError):
        load_config(tmp_path / "bad.yaml")


def test_the_shipped_tiny_gft_recipe_is_a_valid_config():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "examples" / "tiny_gft.yaml")
    assert (cfg.method, cfg.n_expert, cfg.n_teacher, cfg.n_self, cfg.tau) == ("gft", 1, 3, 4, 0.3)
    assert cfg.data.eval_path and cfg.max_steps
