"""The method table: each method's behaviour is read from it, and an ablation is one entry."""

from __future__ import annotations

import json
import math

import pytest

from gft_core import methods
from gft_core.config import FIELDS, METHODS, ConfigError, GFTConfig, check_field
from gft_core.methods import Method, get_method
from gft_core.trainer import Trainer


def test_the_table_is_the_method_list():
    assert METHODS == tuple(methods.METHODS) == ("gft", "sft", "sft_mix", "dft", "grpo", "gft_no_dcr", "gft_no_gal")
    assert all(get_method(name).name == name and get_method(name).label for name in METHODS)
    assert json.loads(json.dumps(FIELDS["method"].choices)) == list(METHODS)
    with pytest.raises(ConfigError) as err:
        get_method("ppo")
    assert err.value.field == "method" and "gft_no_gal" in err.value.message


def test_derived_properties():
    gft, sft, dft, grpo = (get_method(n) for n in ("gft", "sft", "dft", "grpo"))
    assert gft.uses_tau and not dft.uses_tau and not get_method("gft_no_dcr").uses_tau
    assert grpo.uses_old_logprobs and not gft.uses_old_logprobs
    assert gft.charts == {"advantages", "rectification"} and sft.charts == frozenset()
    assert dft.charts == {"rectification"} and grpo.charts == {"advantages"}
    assert get_method("gft_no_gal").loss_advantage(-0.5, "expert") == 1.0
    assert get_method("gft_no_gal").loss_advantage(-0.5, "self") == -0.5 and sft.loss_advantage(-0.5, "expert") == 1.0
    with pytest.raises(ValueError, match="sources"):
        Method("bad", "Bad", ("self", "expert"), "group", "dcr", "gft")
    with pytest.raises(ValueError, match="loss"):
        Method("bad", "Bad", ("self",), "group", "dcr", "ppo")


def test_an_ablation_is_one_table_entry(tiny_cfg, recording_sink, monkeypatch):
    """GFT on expert + self samples only, with DFT's C_t = pi_t: registered, validated, trained."""
    ablation = Method("gft_no_teacher_prob", "GFT without teachers, C = pi (ablation)", ("expert", "self"),
                      "group", "prob", "gft")
    monkeypatch.setitem(methods.METHODS, ablation.name, ablation)
    assert ablation.name in METHODS and check_field("method", ablation.name) == ablation.name
    assert FIELDS["tau"].used_by_method(ablation.name) is False and FIELDS["n_teacher"].used_by_method(ablation.name) is False
    cfg = tiny_cfg(method=ablation.name, n_expert=1, n_teacher=2, n_self=2, micro_batch_size=3).validate()
    assert cfg.group_counts() == {"expert": 1, "teacher": 0, "self": 2}
    assert GFTConfig.from_dict(cfg.to_dict()).validate().method == ablation.name
    result = Trainer(tiny_cfg(method=ablation.name, n_self=2, micro_batch_size=3, max_steps=1),
                     sink=recording_sink).train()
    assert result.status == "succeeded" and result.step == 1
    scalars = recording_sink.steps[0][1]
    assert math.isfinite(scalars["loss"]) and "reward/teacher" not in scalars
    for _, groups in recording_sink.groups:
        for g in groups:
            assert {r["source"] for r in g["responses"]} == {"expert", "self"}
            for r in g["responses"]:  # C_t = pi_t everywhere, as the table entry says
                assert r["c"] == pytest.approx(r["pi"])
    monkeypatch.delitem(methods.METHODS, ablation.name)
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert err.value.field == "method"
