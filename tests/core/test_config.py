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


# ---------------------------------------------------------------------- FIELDS, check_field, config_diff

from gft_core.config import FIELDS, LAUNCH_FIELDS, check_field, config_diff  # noqa: E402


def test_launch_fields_are_the_launch_forms_settings_in_form_order():
    assert LAUNCH_FIELDS == (
        "method", "n_expert", "n_teacher", "n_self", "tau", "lr", "lr_schedule", "warmup_steps",
        "prompts_per_step", "sequences_per_update", "micro_batch_size", "max_prompt_len", "max_response_len",
        "temperature", "max_steps", "epochs", "seed", "eval_interval", "checkpoint_interval",
        "lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_export", "mixed_precision",
        "gradient_checkpointing",
    )
    sections = [FIELDS[n].section for n in LAUNCH_FIELDS]
    assert sections == sorted(sections, key=["Run", "Group", "Optimisation", "Length, evaluation, checkpoints",
                                             "LoRA", "Hardware"].index)
    assert all(FIELDS[n].label and FIELDS[n].help for n in FIELDS)
    assert FIELDS["tau"].label == "τ (DCR threshold)"


def test_every_numeric_field_has_bounds_and_every_default_passes():
    defaults = GFTConfig()
    for name, spec in FIELDS.items():
        if spec.type in (int, float):
            assert spec.min is not None and spec.max is not None, name
        value = getattr(defaults.data, name[5:]) if name.startswith("data.") else getattr(defaults, name)
        assert value == spec.default and check_field(name, value) == value


def test_fields_read_their_types_from_the_dataclass():
    assert FIELDS["max_steps"].type is int and FIELDS["max_steps"].nullable
    assert FIELDS["sequences_per_update"].nullable and FIELDS["eval_max_prompts"].nullable
    assert FIELDS["tau"].type is float and not FIELDS["tau"].nullable
    assert FIELDS["data.eval_fraction"].max_exclusive and FIELDS["data.limit"].nullable
    assert FIELDS["save_final"].type is bool and FIELDS["lr_schedule"].choices == ("constant", "linear", "cosine")


# an out-of-range value of each kind: above the upper bound, below the lower bound, on an exclusive
# bound, of the wrong type, outside the choices, None where not nullable
@pytest.mark.parametrize("overrides, field", [
    ({"max_steps": 1_000_001}, "max_steps"),
    ({"prompts_per_step": 8193}, "prompts_per_step"),
    ({"micro_batch_size": 4097}, "micro_batch_size"),
    ({"max_prompt_len": 131073}, "max_prompt_len"),
    ({"max_response_len": 10**9}, "max_response_len"),
    ({"keep_checkpoints": 101}, "keep_checkpoints"),
    ({"n_expert": 65}, "n_expert"),
    ({"n_teacher": 65}, "n_teacher"),
    ({"n_self": 257}, "n_self"),
    ({"eval_samples": 1025}, "eval_samples"),
    ({"lr": 1.5}, "lr"),
    ({"temperature": 11.0}, "temperature"),
    ({"warmup_steps": 1_000_001}, "warmup_steps"),
    ({"eval_interval": 1_000_001}, "eval_interval"),
    ({"checkpoint_interval": 1_000_001}, "checkpoint_interval"),
    ({"seed": 2**32}, "seed"),
    ({"seed": -1}, "seed"),
    ({"lr": 0.0}, "lr"),
    ({"top_p": 1.01}, "top_p"),
    ({"epochs": float("inf")}, "epochs"),
    ({"lr": float("nan")}, "lr"),
    ({"n_self": 2.0}, "n_self"),
    ({"n_self": True}, "n_self"),
    ({"seed": "7"}, "seed"),
    ({"save_final": 1}, "save_final"),
    ({"tau": None}, "tau"),
    ({"method": None}, "method"),
    ({"method": ["gft"]}, "method"),
    ({"data": {"eval_fraction": -0.1}}, "data.eval_fraction"),
    ({"data": {"limit": 0}}, "data.limit"),
    ({"data": {"use_chat_template": "yes"}}, "data.use_chat_template"),
])
def test_out_of_range_values_name_the_field(tiny_cfg, overrides, field):
    with pytest.raises(ConfigError) as err:
        tiny_cfg(**overrides).validate(check_paths=False)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_check_field():
    assert check_field("tau", 1.0) == 1.0 and check_field("lr", 1) == 1  # an int is a fine float
    assert check_field("max_steps", None) is None and check_field("method", "grpo") == "grpo"
    assert check_field("data.eval_fraction", 0.0) == 0.0
    for name, value, message in [("tau", 0.0, "in (0, 1]"), ("data.eval_fraction", 1.0, "in [0, 1)"),
                                 ("seed", 2**32, "in [0, 4294967295]"), ("micro_batch_size", 0.5, "an integer"),
                                 ("mixed_precision", "fp8", "one of no, fp16, bf16"), ("epochs", None, "required"),
                                 ("no_such_setting", 1, "unknown setting")]:
        with pytest.raises(ConfigError) as err:
            check_field(name, value)
        assert (err.value.field, err.value.value) == (name, value) and message in err.value.message


def test_used_by_method():
    assert FIELDS["tau"].used_by_method("gft") and FIELDS["tau"].used_by_method("gft_no_gal")
    assert not any(FIELDS["tau"].used_by_method(m) for m in ("dft", "sft", "gft_no_dcr", "grpo"))
    assert not FIELDS["n_teacher"].used_by_method("sft") and FIELDS["n_teacher"].used_by_method("sft_mix")
    assert not FIELDS["n_self"].used_by_method("sft_mix") and FIELDS["temperature"].used_by_method("grpo")
    assert not FIELDS["top_p"].used_by_method("dft") and not FIELDS["n_expert"].used_by_method("grpo")
    assert FIELDS["clip_eps"].used_by_method("grpo") and not FIELDS["kl_coef"].used_by_method("gft")
    assert FIELDS["lr"].used_by_method("sft")
    with pytest.raises(ConfigError) as err:
        FIELDS["lr"].used_by_method("ppo")
    assert err.value.field == "method"


def test_config_diff(tiny_cfg):
    a = tiny_cfg().to_dict()
    b = tiny_cfg(tau=0.1, output_dir="/elsewhere", data={"eval_fraction": 0.2},
                 reward={"name": "math_verify", "params": {"strict": True}}).to_dict()
    c = tiny_cfg(tau=0.1, method="sft").to_dict()
    assert config_diff(a, a) == [] and config_diff(a) == []
    assert config_diff(a, b, c) == [
        ("data.eval_fraction", [0.0, 0.2, 0.0]),
        ("method", ["gft", "gft", "sft"]),
        ("reward.params.strict", [None, True, None]),
        ("tau", [0.5, 0.1, 0.1]),
    ]
    assert config_diff({"data": "x.jsonl"}, {"data": {"path": "x.jsonl"}}) == [("data", ["x.jsonl", {"path": "x.jsonl"}])]


def test_recipe_gft_paper_sits_under_explicit_settings():
    from gft_core.recipes import RECIPES, recipe_diff

    cfg = GFTConfig.from_dict({"recipe": "gft-paper", "lr": 3e-6, "data": {"path": "x.jsonl"}})
    assert (cfg.tau, cfg.n_expert, cfg.n_teacher, cfg.n_self) == (0.1, 1, 3, 4)
    assert (cfg.prompts_per_step, cfg.max_response_len, cfg.kl_coef, cfg.max_grad_norm) == (128, 2048, 0.0, 1.0)
    assert cfg.lr == 3e-6 and cfg.data.use_chat_template is True  # the explicit lr wins
    off = GFTConfig.from_dict({"recipe": "gft-paper", "data": {"path": "x.jsonl", "use_chat_template": False}})
    assert off.data.use_chat_template is False
    diff = dict((k, (a, b)) for k, a, b in recipe_diff("gft-paper", {"tau": 0.3, "lr": 1e-6}))
    assert diff["tau"] == (0.3, 0.1) and "lr" not in diff and set(diff) < set(RECIPES["gft-paper"].settings)
    with pytest.raises(ConfigError) as e:
        GFTConfig.from_dict({"recipe": "nope"})
    assert e.value.field == "recipe" and "gft-paper" in e.value.message


def test_prompt_settings_are_checked(tiny_cfg):
    cfg = tiny_cfg()
    cfg.data.system_prompt = "x" * 5000
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    assert e.value.field == "data.system_prompt"


def test_gft_paper_example_yaml_reads_the_recipe():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "examples" / "gft_paper.yaml").validate(check_paths=False)
    assert (cfg.tau, cfg.lr, cfg.prompts_per_step, cfg.max_response_len, cfg.group_size) == (0.1, 1e-6, 128, 2048, 8)
    assert cfg.updates_per_rollout == 4 and cfg.data.prompt_format.instruction_suffix.endswith("\\boxed{}.")
