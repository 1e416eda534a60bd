"""LoRA through PEFT on the tiny model: what trains, what is saved, resume, export, bad settings."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gft_core.config import ConfigError
from gft_core.lora import ADAPTER_CONFIG, linear_module_names
from gft_core.policy import load_policy
from gft_core.trainer import Trainer


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


LORA = dict(lora_rank=4, lora_alpha=8.0, lr=5e-3, checkpoint_interval=0)
SFT = dict(method="sft", prompts_per_step=4, micro_batch_size=4)


def test_lora_trains_only_adapters_and_loss_falls(tiny_cfg, tiny_model_dir, recording_sink):
    trainer = Trainer(tiny_cfg(**SFT, max_steps=8, **LORA), sink=recording_sink)
    trainer.setup()
    base = trainer.peft.get_base_model()
    before = _weights(base)
    trainable = {n for n, p in base.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {"q_proj", "down_proj"} <= {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n in trainable}  # family preset
    result = trainer.train()
    assert result.status == "succeeded"
    losses = [x["loss"] for _, x, _ in recording_sink.steps]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    after = _weights(base)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_B" in k or "lora_A" in k for k in changed)


def test_merged_export_equals_base_plus_adapter(tiny_cfg, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    Trainer(tiny_cfg(**SFT, max_steps=2, output_dir=str(tmp_path / "ad"), lora_export="adapter", **LORA)).train()
    Trainer(tiny_cfg(**SFT, max_steps=2, output_dir=str(tmp_path / "mg"), **LORA)).train()
    adapter, merged = tmp_path / "ad/final", tmp_path / "mg/final"
    assert (adapter / ADAPTER_CONFIG).is_file() and not (adapter / "config.json").exists()
    assert (adapter / "adapter_model.safetensors").stat().st_size < (merged / "model.safetensors").stat().st_size / 4
    ids = torch.tensor([[1, 5, 9, 12, 7, 3]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with_adapter = _logits(PeftModel.from_pretrained(base, str(adapter)), ids)
    merged_model, _ = load_policy(merged)
    torch.testing.assert_close(_logits(merged_model, ids), with_adapter, rtol=1e-4, atol=1e-5)
    # the same seed and data give the same adapter, so load_policy on the adapter dir (base + adapter
    # merged, what evaluation and later stages use) equals the merged export
    loaded, _ = load_policy(adapter)
    torch.testing.assert_close(_logits(loaded, ids), with_adapter, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(_logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), ids), with_adapter)


def test_lora_checkpoint_holds_adapters_and_resume_is_exact(tiny_cfg, tmp_path):
    common = dict(method="gft", max_steps=4, checkpoint_interval=2, lora_export="adapter",
                  **{k: v for k, v in LORA.items() if k != "checkpoint_interval"})
    Trainer(tiny_cfg(output_dir=str(tmp_path / "full"), **common)).train()
    calls = {"n": 0}

    def stop_after_2():
        calls["n"] += 1
        return calls["n"] > 2

    first = Trainer(tiny_cfg(output_dir=str(tmp_path / "resumed"), **common), stop_hook=stop_after_2).train()
    assert first.status == "cancelled" and first.step == 2
    saved = tmp_path / "resumed/checkpoints/step-2/model"
    assert (saved / ADAPTER_CONFIG).is_file() and not (saved / "model.safetensors").exists()
    second = Trainer(tiny_cfg(output_dir=str(tmp_path / "resumed"), **common), resume=True).train()
    assert second.status == "succeeded" and second.step == 4
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "full/final/adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed/final/adapter_model.safetensors"))
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_grpo_kl_reference_is_the_base_without_a_copy(tiny_cfg, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    trainer = Trainer(tiny_cfg(method="grpo", n_expert=0, n_teacher=0, n_self=4, micro_batch_size=4, kl_coef=0.1,
                               max_steps=2, **LORA))
    trainer.setup()
    ref_params = {p.data_ptr() for p in trainer.ref_model.parameters()}
    assert ref_params <= {p.data_ptr() for p in trainer.peft.get_base_model().parameters()}  # no second copy
    with torch.no_grad():  # adapters that changed the policy, as training would
        for name, p in trainer.peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    ids = torch.tensor([[1, 5, 9, 12, 7, 3]])
    start = _logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), ids)
    torch.testing.assert_close(trainer.ref_model(input_ids=ids).logits, start)  # adapters off = the start model
    assert not torch.allclose(_logits(trainer.peft.get_base_model(), ids), start)  # adapters on = the policy
    assert trainer.train().status == "succeeded"


def test_bad_lora_settings_name_the_field(tiny_cfg, tiny_model_dir):
    with pytest.raises(ConfigError) as e:
        Trainer(tiny_cfg(lora_rank=4, lora_target_modules="q_proj,attn_x")).setup()
    assert e.value.field == "lora_target_modules" and "attn_x" in str(e.value) and "q_proj" in str(e.value)
    model, _ = load_policy(tiny_model_dir)
    assert "gate_proj" in str(e.value) and set(linear_module_names(model)) >= {"q_proj", "gate_proj"}
    with pytest.raises(ConfigError) as e:
        Trainer(tiny_cfg(lora_rank=65)).setup()  # hidden size 64
    assert e.value.field == "lora_rank" and "64" in str(e.value)


def test_activation_checkpointing_gives_the_same_step(tiny_cfg, tmp_path):
    a = Trainer(tiny_cfg(**SFT, max_steps=1, output_dir=str(tmp_path / "a")))
    b = Trainer(tiny_cfg(**SFT, max_steps=1, output_dir=str(tmp_path / "b"), gradient_checkpointing=True))
    a.train(), b.train()
    assert b.model.is_activation_checkpointing
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)


def test_an_adapter_dir_is_a_valid_model_path(tiny_cfg, tmp_path):
    Trainer(tiny_cfg(**SFT, max_steps=1, output_dir=str(tmp_path / "s1"), lora_export="adapter", **LORA)).train()
    stage2 = tiny_cfg(**SFT, max_steps=1, model_path=str(tmp_path / "s1/final"), output_dir=str(tmp_path / "s2"))
    assert Trainer(stage2).train().status == "succeeded"
    assert Path(tmp_path / "s2/final/config.json").is_file()
