"""Trainer end to end on the tiny model: every method, resume exactness, stop hook, NaN, group records."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from gft_core.config import METHODS
from gft_core.groups import group_advantages
from gft_core.losses import dcr_coefficients
from gft_core.metrics import METRIC_NAMES
from gft_core.trainer import Trainer, TrainingError, lr_lambda

EXPECTED_SOURCES = {
    "gft": {"expert", "teacher", "self"}, "gft_no_dcr": {"expert", "teacher", "self"},
    "gft_no_gal": {"expert", "teacher", "self"}, "sft": {"expert"}, "dft": {"expert"},
    "sft_mix": {"expert", "teacher"}, "grpo": {"self"},
}


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains(tiny_cfg, recording_sink, method):
    cfg = tiny_cfg(method=method, micro_batch_size=1 if method in ("sft", "dft") else 2,
                   n_teacher=1 if method != "sft_mix" else 3, kl_coef=0.1 if method == "grpo" else 0.0)
    result = Trainer(cfg, sink=recording_sink).train()
    assert result.status == "succeeded" and result.step == 2
    assert [s for s, _, _ in recording_sink.steps] == [1, 2]
    assert recording_sink.started["total_steps"] == 2 and recording_sink.closed
    for _, scalars, hists in recording_sink.steps:
        assert set(scalars) <= set(METRIC_NAMES)
        assert all(math.isfinite(v) for v in scalars.values())
        sources = {k.split("/")[1] for k in scalars if k.startswith("reward/") and k.split("/")[1] in EXPECTED_SOURCES["gft"]}
        assert sources == EXPECTED_SOURCES[method]
        assert sum(hists["adv/hist"]["counts"]) > 0
    last = recording_sink.steps[-1][1]
    assert 0.0 <= last["eval/accuracy"] <= 1.0 and last["policy/kl_start"] >= 0.0
    assert ("final_model", result.final_dir, 2) in recording_sink.artifacts
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(result.final_dir)
    # the group inspector records for the baselines hold only their sources
    for _, groups in recording_sink.groups:
        for g in groups:
            assert {r["source"] for r in g["responses"]} <= EXPECTED_SOURCES[method]


def test_method_coefficients(tiny_cfg, recording_sink):
    """SFT logs C = 1 (nothing rectified); DFT logs C = pi on every token."""
    Trainer(tiny_cfg(method="dft", micro_batch_size=1), sink=recording_sink).train()
    for _, groups in recording_sink.groups:
        for r in groups[0]["responses"]:
            assert r["c"] == pytest.approx(r["pi"]) and r["advantage"] == 1.0


def _params(path):
    return load_file(str(path / "model.safetensors"))


def test_resume_is_exact(tiny_cfg, recording_sink, tmp_path):
    """Stopped at step 3 (mid rollout batch: 2 optimizer steps per batch) and resumed == uninterrupted at 6."""
    common = dict(max_steps=6, sequences_per_update=5, micro_batch_size=5, checkpoint_interval=2, eval_max_prompts=2)
    full = Trainer(tiny_cfg(output_dir=str(tmp_path / "full"), **common), sink=recording_sink).train()
    assert full.step == 6

    calls = {"n": 0}

    def stop_after_3():
        calls["n"] += 1
        return calls["n"] > 3

    first = Trainer(tiny_cfg(output_dir=str(tmp_path / "resumed"), **common), stop_hook=stop_after_3).train()
    assert first.status == "cancelled" and first.step == 3
    assert (tmp_path / "resumed/checkpoints/step-3/trainer_state.json").is_file()
    from tests.core.conftest import RecordingSink

    sink2 = RecordingSink()
    second = Trainer(tiny_cfg(output_dir=str(tmp_path / "resumed"), **common), sink=sink2, resume=True).train()
    assert second.status == "succeeded" and second.step == 6
    assert sink2.started["start_step"] == 3
    assert [s for s, _, _ in sink2.steps] == [4, 5, 6]
    a, b = _params(tmp_path / "full/final"), _params(tmp_path / "resumed/final")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    full_losses = {s: x["loss"] for s, x, _ in recording_sink.steps}
    for s, x, _ in sink2.steps:
        assert x["loss"] == pytest.approx(full_losses[s], rel=1e-4, abs=1e-6)
    # only the last keep_checkpoints are kept
    kept = sorted(p.name for p in (tmp_path / "full/checkpoints").iterdir())
    assert kept == ["step-2", "step-4", "step-6"]


def test_stop_hook_cancels_with_checkpoint(tiny_cfg, recording_sink, tmp_path):
    result = Trainer(tiny_cfg(max_steps=5), sink=recording_sink, stop_hook=lambda: len(recording_sink.steps) >= 2).train()
    assert result.status == "cancelled" and result.step == 2 and result.final_dir is None
    assert result.checkpoint_dir.endswith("step-2")
    assert ("checkpoint", result.checkpoint_dir, 2) in recording_sink.artifacts
    assert recording_sink.closed


def test_nan_loss_stops_with_training_error(tiny_cfg, recording_sink, monkeypatch, tmp_path):
    original = Trainer._loss

    def nan_at_step_3(self, *args, **kw):
        loss = original(self, *args, **kw)
        return loss * float("nan") if self.step == 2 else loss

    monkeypatch.setattr(Trainer, "_loss", nan_at_step_3)
    cfg = tiny_cfg(max_steps=5, checkpoint_interval=1)
    with pytest.raises(TrainingError, match="step 3: loss is nan") as err:
        Trainer(cfg, sink=recording_sink).train()
    assert "step-2" in str(err.value)
    ckpts = sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir())
    assert ckpts[-1] == "step-2"
    assert [s for s, _, _ in recording_sink.steps] == [1, 2] and recording_sink.closed


def test_group_records_are_the_loss_tensors(tiny_cfg, recording_sink):
    """Records carry the advantages and coefficients the loss used: rebuilding the token-mean
    loss -A C log(pi) from them gives the logged loss (one micro-batch per step)."""
    cfg = tiny_cfg(max_steps=2, micro_batch_size=10, group_sample_count=2)
    Trainer(cfg, sink=recording_sink).train()
    losses = {s: x["loss"] for s, x, _ in recording_sink.steps}
    assert [s for s, _ in recording_sink.groups] == [1, 2]
    for step, groups in recording_sink.groups:
        assert len(groups) == 2  # prompts_per_step = 2: the whole batch is recorded
        num, den = 0.0, 0
        for g in groups:
            rewards = [r["reward"] for r in g["responses"]]
            adv = group_advantages(rewards, [0] * len(rewards))
            assert [r["source"] for r in g["responses"]] == ["expert", "teacher", "teacher", "self", "self"]
            for r, a in zip(g["responses"], adv.tolist()):
                assert r["advantage"] == pytest.approx(a, abs=1e-6)
                pi = torch.tensor(r["pi"])
                assert len(r["tokens"]) == len(r["pi"]) == len(r["c"]) == len(r["rectified"])
                assert r["c"] == dcr_coefficients(pi, cfg.tau).tolist()
                assert r["rectified"] == (pi < cfg.tau).tolist()
                num += float((-r["advantage"] * torch.tensor(r["c"]) * torch.log(pi)).sum())
                den += len(r["pi"])
        assert num / den == pytest.approx(losses[step], rel=1e-4, abs=1e-6)


def test_group_sampling_interval(tiny_cfg, recording_sink):
    Trainer(tiny_cfg(max_steps=4, group_sample_interval=2, group_sample_count=1), sink=recording_sink).train()
    assert [(s, len(g)) for s, g in recording_sink.groups] == [(2, 1), (4, 1)]


def test_eval_interval_and_kl(tiny_cfg, recording_sink):
    Trainer(tiny_cfg(max_steps=3, eval_interval=2, kl_interval=2), sink=recording_sink).train()
    with_eval = [s for s, x, _ in recording_sink.steps if "eval/accuracy" in x]
    with_kl = [s for s, x, _ in recording_sink.steps if "policy/kl_start" in x]
    assert with_eval == [2, 3] and with_kl == [2, 3]


def test_lr_schedules():
    assert lr_lambda("constant", 0, 10)(5) == 1.0
    assert lr_lambda("constant", 4, 10)(0) == pytest.approx(0.25)
    assert lr_lambda("linear", 0, 10)(5) == pytest.approx(0.5)
    assert lr_lambda("cosine", 0, 10)(10) == pytest.approx(0.0, abs=1e-9)
    assert lr_lambda("cosine", 2, 12)(7) == pytest.approx(0.5)


def _seqs(prompts_and_responses):
    from gft_core.logprobs import TrainSeq

    return [TrainSeq(prompt_ids=p, response_ids=r, source="self", reward=0.0, advantage=1.0, group_id=0, text="")
            for p, r in prompts_and_responses]


def test_shared_prefix_forward_is_the_full_forward(tiny_model_dir):
    """Running each distinct prompt once (KV cache with gradients, gathered per response) gives the
    log-probs, entropies and gradients of one forward over prompt + response."""
    from gft_core.rollout import can_share_prefix
    from gft_core.logprobs import collate, response_logprobs
    from gft_core.policy import load_policy

    model, _ = load_policy(tiny_model_dir)
    assert can_share_prefix(model)
    a, b, c = [5, 9, 11, 12, 13, 7, 8], [20, 21, 22], [30, 31, 32, 33, 34]
    seqs = _seqs([(a, [40, 41, 42, 43, 44]), (b, [45, 46, 47, 48, 49, 50, 51, 52, 53]), (a, [54]),
                  (c, [55, 56, 57]), (a, [58, 59, 60, 61, 62, 63, 64]), (c, [65, 66])])
    batch = collate(seqs, pad_id=0, device="cpu")
    assert batch["prompt_index"].tolist() == [0, 1, 0, 2, 0, 2]
    assert batch["prompt_index"][batch["prompt_rows"]].tolist() == [0, 1, 2]  # one row of each distinct prompt
    weights = torch.linspace(-1.0, 2.0, batch["targets"].numel()).view_as(batch["targets"])
    results = []
    for shared in (False, True):
        model.zero_grad(set_to_none=True)
        logprobs, entropy = response_logprobs(model, batch, with_entropy=True, keep=True, shared_prefix=shared,
                                              entropy_stride=1)
        mask = batch["resp_mask"].bool()
        (logprobs * weights)[mask].sum().backward()
        results.append((logprobs.detach()[mask], entropy[mask], {n: p.grad.clone() for n, p in model.named_parameters()}))
    (lp0, ent0, g0), (lp1, ent1, g1) = results
    torch.testing.assert_close(lp1, lp0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent1, ent0, atol=1e-5, rtol=1e-5)
    assert g0.keys() == g1.keys()
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-5, rtol=1e-4, msg=name)


def test_trainer_runs_each_prompt_once_per_micro_batch(tiny_cfg):
    """The training forward sees U * P + B * (T - 1) tokens per micro-batch (each group's prompt
    once), not B * (P + T)."""
    from gft_core.logprobs import collate

    t = Trainer(tiny_cfg(n_expert=1, n_teacher=2, n_self=2, micro_batch_size=5, prompts_per_step=2))
    t.setup()
    rollout = t.collect_rollout()
    chunk = rollout.chunks[0]
    seen: list[int] = []
    hook = t.model.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].numel()))
    try:
        t.optimizer_step(chunk, rollout)
    finally:
        hook.remove()
    expected, full = 0, 0
    for i in range(0, len(chunk), 5):
        b = collate(chunk[i:i + 5], t.pad_id, "cpu")
        assert b["prompt_rows"].numel() == 1  # micro-batch = one group = one prompt
        P = b["input_ids"].shape[1] - b["targets"].shape[1]
        expected += P + b["targets"][:, :-1].numel()
        full += b["input_ids"].numel()
    assert sum(seen) == expected < full


def test_sliding_window_models_use_the_full_forward():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from gft_core.rollout import can_share_prefix

    cfg = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
               num_key_value_heads=2)
    assert can_share_prefix(Qwen2ForCausalLM(Qwen2Config(**cfg)))
    windowed = Qwen2Config(**cfg, use_sliding_window=True, sliding_window=8, max_window_layers=0)
    assert not can_share_prefix(Qwen2ForCausalLM(windowed))


def test_reward_timeouts_are_logged_once_per_rollout(tiny_cfg, recording_sink, monkeypatch):
    """reward/timeouts = the growth of the reward's cumulative `timeouts` count over a rollout batch,
    on the batch's first optimizer step (0 on the others, and 0 for a reward that keeps no count)."""
    from gft_core.config import GFTConfig

    class TimingOutReward:
        timeouts = 0

        def __call__(self, responses, ground_truths, prompts):
            self.timeouts += 3  # as if three responses of each call ran out of time
            return [0.0] * len(responses)

    reward = TimingOutReward()
    monkeypatch.setattr(GFTConfig, "reward_fn", lambda self: reward)
    # 2 prompts x 5 responses = 10 sequences per rollout, 5 per optimizer step: 2 steps per rollout
    cfg = tiny_cfg(max_steps=3, sequences_per_update=5, micro_batch_size=5, eval_max_prompts=1, kl_interval=0)
    Trainer(cfg, sink=recording_sink).train()
    assert [scalars["reward/timeouts"] for _, scalars, _ in recording_sink.steps] == [3.0, 0.0, 3.0]

    monkeypatch.setattr(GFTConfig, "reward_fn", lambda self: lambda responses, truths, prompts: [0.0] * len(responses))
    sink = type(recording_sink)()
    Trainer(tiny_cfg(max_steps=1, output_dir=cfg.output_dir + "2", kl_interval=0), sink=sink).train()
    assert sink.steps[0][1]["reward/timeouts"] == 0.0


def test_eval_suite_is_evaluated_at_eval_steps(tiny_cfg, recording_sink, toy_data, tmp_path):
    """Issue 17: with an eval_suite, every eval_interval step and the last one evaluate each of its
    benchmarks through evaluate_benchmark and hand a BenchmarkResult dict to log_evaluation;
    eval/accuracy is logged as before."""
    from gft_core.evaluation import BenchmarkResult

    four = tmp_path / "toy4.jsonl"  # 4 toy problems
    four.write_text("".join(toy_data["eval"].read_text().splitlines(keepends=True)[:4]))
    evaluations = []
    recording_sink.log_evaluation = lambda step, name, result: evaluations.append((step, name, result))
    suite = {"suite_id": None, "name": "toy suite",
             "settings": {"k": 2, "temperature": 1.0, "max_new_tokens": 8, "batch_size": 2},
             "benchmarks": [{"name": "toy4", "path": str(four), "mapping": "toy"}]}
    result = Trainer(tiny_cfg(max_steps=3, eval_interval=2, kl_interval=0, eval_suite=suite),
                     sink=recording_sink).train()
    assert result.status == "succeeded"
    assert [(s, n) for s, n, _ in evaluations] == [(2, "toy4"), (3, "toy4")]
    for _, _, r in evaluations:
        assert set(BenchmarkResult.__dataclass_fields__) <= set(r)
        assert r["benchmark"] == "toy4" and r["k"] == 2 and r["n_problems"] == 4 and len(r["problems"]) == 4
        assert 0.0 <= r["avg_at_k"] <= 1.0 and set(map(int, r["pass_at_k"])) == {1, 2}
    assert [s for s, sc, _ in recording_sink.steps if "eval/accuracy" in sc] == [2, 3]


def test_eval_suite_is_checked(tiny_cfg):
    from gft_core.errors import ConfigError

    with pytest.raises(ConfigError, match="eval_suite.benchmarks"):
        tiny_cfg(eval_suite={"settings": {}, "benchmarks": []}).validate()
    with pytest.raises(ConfigError, match="k"):
        tiny_cfg(eval_suite={"settings": {"k": 0}, "benchmarks": [{"name": "a", "path": "x", "mapping": "toy"}]}).validate()


def test_group_records_mark_truncated_responses(tiny_cfg):
    """An expert answer cut at max_response_len and a self sample that reached it unfinished are
    marked truncated in the group records; complete answers are not (issue 18)."""
    def records(max_response_len: int) -> list[dict]:
        trainer = Trainer(tiny_cfg(max_response_len=max_response_len, n_teacher=0, kl_interval=0, micro_batch_size=3))
        trainer.setup()
        rollout = trainer.collect_rollout()
        *_, recs = trainer.optimizer_step(rollout.chunks[0], rollout)
        return [r for g in recs for r in g["responses"]]

    short = records(4)
    experts, samples = [r for r in short if r["source"] == "expert"], [r for r in short if r["source"] == "self"]
    assert experts and all(r["truncated"] and len(r["tokens"]) == 4 for r in experts)
    assert any(r["truncated"] for r in samples)  # a random tiny model does not stop within 4 tokens
    assert all(len(r["tokens"]) == 4 for r in samples if r["truncated"])
    full = records(64)
    assert not any(r["truncated"] for r in full if r["source"] == "expert")


def test_groups_use_the_prompt_format(tiny_cfg, tiny_model_dir, tmp_path):
    """The trainer encodes prompts in the run's format: a model whose tokenizer has a chat template
    gets it (with the dataset's system prompt and suffix); the tiny tokenizer, without one, plain."""
    import json
    import shutil

    from gft_core.tiny import CHAT_TEMPLATE

    suffix = "Put the final answer within \\boxed{}."
    chat = tmp_path / "chat-model"
    shutil.copytree(tiny_model_dir, chat)
    tc = json.loads((chat / "tokenizer_config.json").read_text())
    (chat / "tokenizer_config.json").write_text(json.dumps({**tc, "chat_template": CHAT_TEMPLATE}))
    for model, expect_template in ((chat, True), (tiny_model_dir, False)):
        cfg = tiny_cfg(model_path=str(model))
        cfg.data.system_prompt, cfg.data.instruction_suffix = "Be exact.", suffix
        t = Trainer(cfg.validate())
        t.setup()
        ex = t.train_examples[0]
        group = t.build_groups([ex], 0)[0]
        text = t.tokenizer.decode(group.prompt_ids, skip_special_tokens=True)
        if expect_template:
            assert text == f"Question: Be exact.\n\n{ex.prompt}\n{suffix}\nAnswer:"
        else:
            assert text == f"Be exact.\n\n{ex.prompt}\n{suffix}"
