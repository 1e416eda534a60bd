"""FSDP: the mechanisms the trainer relies on, on CPU (torch's FSDP on gloo, one process); the
trainer on two CPU ranks under FSDP, with the environment accelerate derives from the worker's
flags (tests/core/fsdp_cpu_child.py); and real FSDP training through `accelerate launch` with
those flags on two CUDA GPUs in bf16 (skipped without them)."""
from __future__ import annotations

import functools
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gft_core.distributed import accelerate_flags, decoder_layer_class

TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP training needs two CUDA GPUs")


@pytest.fixture
def gloo_group(monkeypatch):
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(k, v)
    dist.init_process_group("gloo")
    yield
    dist.destroy_process_group()


def test_fsdp_rollout_and_full_state_round_trip_on_cpu(gloo_group, tiny_model_dir):
    """What the trainer does under FSDP (full shard, decoder layers wrapped, use_orig_params):
    sampling through the wrapper's forward with a KV cache, stopping in lockstep; the gathered
    full state dict loads into a fresh model (a checkpoint's `model/`); the gathered optimizer
    state loads back into the sharded optimizer (a resume)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, ShardingStrategy, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
    from transformers import AutoModelForCausalLM

    from gft_core.rollout import _all_ranks_done, left_pad, sample_tokens

    layer = decoder_layer_class(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    layer_cls = {type(m) for m in model.modules() if type(m).__name__ == layer}
    wrapped = FSDP(model, auto_wrap_policy=functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=layer_cls),
                   sharding_strategy=ShardingStrategy.FULL_SHARD, use_orig_params=True, device_id=torch.device("cpu"))
    assert sum(isinstance(m, FSDP) for m in wrapped.modules()) == 1 + len(model.model.layers)

    class Reducer:  # accelerate's reduce, on the gloo group
        def reduce(self, t, reduction):
            dist.all_reduce(t)
            return t

    ids, mask = left_pad([[1, 5, 6, 7], [1, 8, 9]], 0)
    out = sample_tokens(wrapped, ids, mask, n=2, max_new_tokens=6, temperature=1.0, top_p=1.0, stop_ids=[2], pad_id=0,
                        generator=torch.Generator().manual_seed(0), all_done=_all_ranks_done(Reducer()))
    assert out.shape[0] == 4 and 1 <= out.shape[1] <= 6

    # the trainer's call: generate_samples through accelerate's FSDP type, as many batches as the busiest rank
    from accelerate.utils import DistributedType

    from gft_core.rollout import generate_samples
    from gft_core.tiny import build_tokenizer

    class FsdpAccelerator(Reducer):
        distributed_type, device, process_index, num_processes = DistributedType.FSDP, torch.device("cpu"), 0, 1

        def gather(self, t):
            return t

        def autocast(self):
            return torch.autocast("cpu", enabled=False)

    samples = generate_samples(wrapped, build_tokenizer(), [[1, 5, 6], [1, 7], [1, 8, 9]], n=2, max_new_tokens=4,
                               batch_size=4, accelerator=FsdpAccelerator())
    assert [len(s) for s in samples] == [2, 2, 2]

    optimizer = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=1e-2)
    wrapped(input_ids=ids, attention_mask=mask).logits.float().pow(2).mean().backward()
    optimizer.step()
    FSDP.set_state_dict_type(wrapped, StateDictType.FULL_STATE_DICT, FullStateDictConfig(offload_to_cpu=True, rank0_only=True),
                             FullOptimStateDictConfig(offload_to_cpu=True, rank0_only=True))
    state, optim_state = wrapped.state_dict(), FSDP.optim_state_dict(wrapped, optimizer)
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    before = fresh.model.embed_tokens.weight.clone()
    result = fresh.load_state_dict(state, strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    assert not torch.equal(before, fresh.model.embed_tokens.weight)  # the trained weights, not the start
    optimizer.load_state_dict(FSDP.optim_state_dict_to_load(wrapped, optimizer, optim_state))
    assert all(s["step"].item() == 1 for s in optimizer.state.values())


@pytest.mark.parametrize("merged", [True, False], ids=["merged", "adapter"])
def test_lora_saved_from_a_gathered_state_equals_the_usual_export(tiny_model_dir, tmp_path, merged):
    """Under FSDP a LoRA run's checkpoints and final model are saved through a CPU copy of the
    PeftModel holding the gathered state (PEFT's own save picks adapters by module names, which
    FSDP's wrappers change): the files equal those of the run's usual save."""
    from safetensors.torch import load_file

    from gft_core.lora import apply_lora, peft_state, save_final_model, unsharded_copy
    from gft_core.policy import load_policy

    model, tokenizer = load_policy(tiny_model_dir)
    peft = apply_lora(model, rank=4, alpha=8, dropout=0.0, targets="auto")
    with torch.no_grad():  # trained adapters: B is zero at the start
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.add_(0.01)
    save_final_model(model, tokenizer, tmp_path / "usual", peft=peft, merged=merged)
    copy = unsharded_copy(peft, peft_state(model.state_dict()))  # the state as FSDP gathers it: the base's names
    assert unsharded_copy(peft, peft_state(model.state_dict()), into=copy) is copy  # later checkpoints reuse it
    save_final_model(None, tokenizer, tmp_path / "gathered", peft=copy, merged=merged)
    name = "model.safetensors" if merged else "adapter_model.safetensors"
    usual, gathered = load_file(tmp_path / "usual" / name), load_file(tmp_path / "gathered" / name)
    assert usual and sorted(usual) == sorted(gathered) and all(torch.equal(usual[k], gathered[k]) for k in usual)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_fsdp(cfg: dict, tmp_path: Path, tag: str) -> dict:
    """Two CPU ranks of workers.train_child under FSDP: the environment `accelerate launch` makes
    of the worker's FSDP flags (its own parser and prepare_multi_gpu_env), started by torchrun."""
    import os

    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    config, result = tmp_path / f"{tag}.json", tmp_path / f"{tag}-result.json"
    config.write_text(json.dumps(cfg))
    flags = accelerate_flags(num_gpus=2, mixed_precision="no", strategy="fsdp", cuda=True,
                             layer_class=decoder_layer_class(cfg["model_path"]))
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(flags + ["x.py"]))
    env = {k: v for k, v in prepare_multi_gpu_env(args).items() if k.startswith(("ACCELERATE_", "FSDP_"))}
    env["FSDP_SYNC_MODULE_STATES"] = "false"  # every rank loaded the same weights; the sync needs a GPU device
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(root / "tests" / "core" / "fsdp_cpu_child.py"), "--config", str(config), "--metrics",
           str(tmp_path / f"{tag}.jsonl"), "--stop-file", str(tmp_path / "STOP"), "--result", str(result)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root,
                          env={**os.environ, **env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(result.read_text())


def _steps(path: Path) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["type"] == "step"]


@pytest.mark.parametrize("lora_rank", [0, 4], ids=["full", "lora"])
def test_trainer_under_fsdp_on_two_cpu_ranks(tiny_cfg, tmp_path, lora_rank):
    """Rollouts, the loss, the KL probe and evaluation with every parameter sharded over two
    ranks; checkpoints of the gathered states in the usual format; the final model; a resume."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    cfg = tiny_cfg(max_steps=2, checkpoint_interval=1, kl_interval=1, kl_probe_size=2, eval_max_prompts=3,
                   max_response_len=48, lora_rank=lora_rank, lora_export="merged").to_dict()
    first = _cpu_fsdp(cfg, tmp_path, "first")
    assert first["status"] == "succeeded" and first["step"] == 2
    steps = _steps(tmp_path / "first.jsonl")
    assert [r["step"] for r in steps] == [1, 2] and all(r["scalars"]["grad_norm"] > 0 for r in steps), steps
    assert all("policy/kl_start" in r["scalars"] for r in steps) and "eval/accuracy" in steps[-1]["scalars"]
    model_dir = Path(cfg["output_dir"]) / "checkpoints" / "step-2" / "model"
    start = AutoModelForCausalLM.from_pretrained(cfg["model_path"])
    if lora_rank:  # the adapters alone, trained (B starts at zero)
        adapter = load_file(model_dir / "adapter_model.safetensors")
        assert adapter and any(v.abs().max() > 0 for k, v in adapter.items() if "lora_B" in k)
    else:  # the whole model, gathered from both ranks' shards
        trained = AutoModelForCausalLM.from_pretrained(model_dir)
        assert sum(p.numel() for p in trained.parameters()) == sum(p.numel() for p in start.parameters())
        assert not torch.equal(trained.model.layers[0].mlp.up_proj.weight, start.model.layers[0].mlp.up_proj.weight)
    final = AutoModelForCausalLM.from_pretrained(first["final_dir"])  # LoRA: merged
    assert not torch.equal(final.model.layers[0].self_attn.q_proj.weight, start.model.layers[0].self_attn.q_proj.weight)
    if not lora_rank:
        second = _cpu_fsdp({**cfg, "max_steps": 3}, tmp_path, "second")
        assert second["step"] == 3 and [r["step"] for r in _steps(tmp_path / "second.jsonl")] == [3]


def _launch(cfg: dict, tmp_path: Path, tag: str) -> dict:
    """workers.train_child on two GPUs with the worker's FSDP flags; its result file."""
    config, result = tmp_path / f"{tag}.json", tmp_path / f"{tag}-result.json"
    config.write_text(json.dumps(cfg))
    flags = accelerate_flags(num_gpus=2, mixed_precision="bf16", strategy="fsdp", cuda=True,
                             layer_class=decoder_layer_class(cfg["model_path"]))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *flags, "-m", "workers.train_child", "--config",
           str(config), "--metrics", str(tmp_path / f"{tag}.jsonl"), "--stop-file", str(tmp_path / "STOP"),
           "--result", str(result)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(result.read_text())


@TWO_GPUS
@pytest.mark.parametrize("lora_rank", [0, 4], ids=["full", "lora"])
def test_fsdp_bf16_on_two_gpus_trains_checkpoints_and_resumes(tiny_cfg, tmp_path, lora_rank):
    """Two ranks, full shard, bf16: two steps with a checkpoint each, the checkpoint a plain Hugging
    Face directory; a third step resumes from it (optimizer state re-sharded)."""
    from transformers import AutoModelForCausalLM

    cfg = tiny_cfg(mixed_precision="bf16", max_steps=2, checkpoint_interval=1, kl_interval=1, kl_probe_size=2,
                   eval_max_prompts=3,  # 3 prompts on 2 ranks: uneven shards, the rollouts still in lockstep
                   lora_rank=lora_rank, lora_export="merged").to_dict()
    first = _launch(cfg, tmp_path, "first")
    assert first["status"] == "succeeded" and first["step"] == 2
    step2 = Path(cfg["output_dir"]) / "checkpoints" / "step-2"
    assert (step2 / "optimizer.pt").is_file()
    start = AutoModelForCausalLM.from_pretrained(cfg["model_path"])
    if not lora_rank:  # the checkpoint holds the gathered full weights, trained
        trained = AutoModelForCausalLM.from_pretrained(step2 / "model")
        assert not torch.equal(trained.model.embed_tokens.weight, start.model.embed_tokens.weight)
    final = AutoModelForCausalLM.from_pretrained(first["final_dir"])  # LoRA: merged from the gathered state
    assert sum(p.numel() for p in final.parameters()) == sum(p.numel() for p in start.parameters())
    second = _launch({**cfg, "max_steps": 3}, tmp_path, "second")
    assert second["status"] == "succeeded" and second["step"] == 3
    lines = [json.loads(x) for x in (tmp_path / "second.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["type"] == "step"] == [3]  # steps 1-2 came from the checkpoint
