"""GPU: training-step MFU of a ~0.5B Qwen2-shaped model in bf16, and rollout tokens/s.

Runs only when torch.cuda.is_available(); otherwise prints "skipped: no CUDA device" and records
that. The model is Qwen2.5-0.5B-shaped (24 layers, hidden 896, MLP 4864, 14 query / 2 KV heads,
vocabulary 151,936, tied embeddings) with random weights, in bf16, SDPA attention.
- fwd/bwd: gft_core's training path on one micro-batch (response_logprobs: forward, float32
  log-softmax of the response positions, then gft_loss, then backward), B sequences of
  prompt + response tokens. MFU = model FLOPs / time / peak bf16 FLOPS of the device, with model
  FLOPs = 6 x N x tokens + 12 x layers x hidden x seq x tokens (attention scores and values,
  forward + backward; the usual estimate, causal masking not discounted) and N the parameters
  used in matmuls (tied embedding counted once, as the LM head).
- rollout: gft_core.rollout.generate_samples (KV cache, sampling at temperature 1), prompts x n
  samples, `new` new tokens; generated tokens / s.
Peak FLOPS come from the device name (H100 SXM/H200 989 TFLOPS dense bf16, H100 PCIe 756,
A100 312, L40S 362, L4 121, A10 125); set BENCH_PEAK_TFLOPS to override.
--cpu-check runs the same code on a tiny Qwen2 on the CPU (checks the code, no figures recorded).
"""
from __future__ import annotations

import argparse
import os
import time

from bench.common import Stat, print_table, record, verdict

GOAL_MFU = 0.40
PEAKS_TFLOPS = [("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H800", 989.0),
                ("GH200", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0),
                ("L40", 181.0), ("L4", 121.0), ("A10G", 125.0), ("A10", 125.0), ("RTX 4090", 165.0)]
QWEN2_05B = dict(vocab_size=151_936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32_768,
                 rope_theta=1_000_000.0, tie_word_embeddings=True, rms_norm_eps=1e-6)
TINY = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True)


def peak_flops(name: str) -> float | None:
    if os.environ.get("BENCH_PEAK_TFLOPS"):
        return float(os.environ["BENCH_PEAK_TFLOPS"]) * 1e12
    for key, tf in PEAKS_TFLOPS:
        if key.lower() in name.lower():
            return tf * 1e12
    return None


class _StubTokenizer:
    """What generate_samples needs from a tokenizer (ids only: the model has random weights)."""

    pad_token_id = 0
    eos_token_id = 1

    def decode(self, ids, skip_special_tokens=True):
        return ""


def build_model(shape: dict, device, dtype):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(**shape, bos_token_id=0, eos_token_id=1, pad_token_id=0)
    cfg._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(cfg).to(device=device, dtype=dtype)
    model.generation_config.pad_token_id = 0
    return model


def train_flops(model, B: int, seq: int) -> float:
    c = model.config
    n = sum(p.numel() for p in model.parameters())  # tied: the embedding counted once (= LM head)
    tokens = B * seq
    return 6.0 * n * tokens + 12.0 * c.num_hidden_layers * c.hidden_size * seq * tokens


def fwd_bwd_times(model, B: int, P: int, T: int, reps: int, warmup: int, sync) -> list[float]:
    import torch

    from gft_core.losses import gft_loss
    from gft_core.logprobs import TrainSeq, collate, response_logprobs

    dev = next(model.parameters()).device
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    seqs = [TrainSeq(torch.randint(2, V, (P,), generator=g).tolist(), torch.randint(2, V, (T,), generator=g).tolist(),
                     "self", 0.0, float(i % 3 - 1), i // 8, "") for i in range(B)]
    batch = collate(seqs, 0, dev)
    adv = torch.tensor([s.advantage for s in seqs], device=dev)
    mask = batch["resp_mask"].float()
    model.train()
    times = []
    for i in range(warmup + reps):
        model.zero_grad(set_to_none=True)
        sync()
        t0 = time.perf_counter()
        logprobs, _ = response_logprobs(model, batch, keep=True)
        loss = gft_loss(logprobs, logprobs.exp(), adv, mask, tau=0.3)
        loss.backward()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    return times


def rollout_times(model, prompts: int, n: int, P: int, new: int, reps: int, warmup: int, sync) -> list[tuple[float, int]]:
    import torch

    from gft_core.rollout import generate_samples

    V = model.config.vocab_size
    g = torch.Generator().manual_seed(1)
    prompt_ids = [torch.randint(2, V, (P,), generator=g).tolist() for _ in range(prompts)]
    out = []
    for i in range(warmup + reps):
        torch.manual_seed(i)
        sync()
        t0 = time.perf_counter()
        samples = generate_samples(model, _StubTokenizer(), prompt_ids, n=n, max_new_tokens=new,
                                   batch_size=prompts * n)
        sync()
        dt = time.perf_counter() - t0
        if i >= warmup:
            out.append((dt, sum(len(s.token_ids) for ss in samples for s in ss)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cpu-check", action="store_true", help="run the code on a tiny Qwen2 on the CPU")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--response-len", type=int, default=768)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--new", type=int, default=256)
    a = p.parse_args(argv)
    import torch

    cpu = a.cpu_check
    if not cpu and not torch.cuda.is_available():
        print("skipped: no CUDA device", flush=True)
        record("gpu", [("MFU fwd/bwd (0.5B Qwen2-shaped, bf16)", "skipped: no CUDA device", f">= {GOAL_MFU:.0%}", "n/a"),
                       ("rollout tokens/s", "skipped: no CUDA device", "", "n/a")], quick=a.quick)
        return 0
    if a.quick or cpu:
        a.batch, a.prompt_len, a.response_len, a.reps, a.warmup, a.prompts, a.n, a.new = 2, 8, 16, 2, 1, 2, 2, 8
    device = torch.device("cpu" if cpu else "cuda")
    sync = (lambda: None) if cpu else torch.cuda.synchronize
    if not cpu:
        torch.backends.cuda.matmul.allow_tf32 = True
    model = build_model(TINY if cpu else QWEN2_05B, device, torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    name = "CPU (check only)" if cpu else torch.cuda.get_device_name(0)
    peak = None if cpu else peak_flops(name)
    seq = a.prompt_len + a.response_len

    fb = fwd_bwd_times(model, a.batch, a.prompt_len, a.response_len, a.reps, a.warmup, sync)
    flops = train_flops(model, a.batch, seq)
    st = Stat.of(fb)
    tflops = Stat.of([flops / t / 1e12 for t in fb])
    mfu = Stat.of([flops / t / peak for t in fb]) if peak else None
    ro = rollout_times(model, a.prompts, a.n, a.prompt_len, a.new, a.reps, a.warmup, sync)
    tok_s = Stat.of([n / t for t, n in ro])
    mem = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if not cpu else "-"
    rows = [
        ["fwd/bwd (gft loss)", f"{a.batch} x ({a.prompt_len}+{a.response_len}) tokens", st.fmt(4, 1000, " ms"),
         f"{tflops.fmt(3)} TFLOPS", mfu.fmt(3, 100, "%") if mfu else "n/a (unknown peak)", mem],
        ["rollout (generate_samples)", f"{a.prompts} prompts x {a.n}, {a.new} new tokens",
         Stat.of([t for t, _ in ro]).fmt(4, 1000, " ms"), f"{tok_s.fmt(3)} tokens/s", "", ""],
    ]
    print_table(f"gpu: {name}, Qwen2-shaped model of {n_params / 1e6:,.0f}M parameters, bf16, "
                f"peak {peak / 1e12 if peak else float('nan'):.0f} TFLOPS", ["phase", "work", "time [min-max]",
                                                                             "throughput", "MFU", "peak memory"], rows)
    if not cpu:
        record("gpu", [(f"MFU fwd/bwd ({name}, {n_params / 1e6:.0f}M Qwen2-shaped, bf16)",
                        mfu.fmt(3, 100, "%") if mfu else f"{tflops.fmt()} TFLOPS (peak unknown)", f">= {GOAL_MFU:.0%}",
                        verdict(mfu.median >= GOAL_MFU) if mfu else "n/a"),
                       (f"rollout tokens/s ({name})", tok_s.fmt(), "", "")], quick=a.quick)
    return 0
