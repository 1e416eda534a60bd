"""Loss overhead: GFT loss + backward vs plain cross-entropy SFT, same tokens, same model.

One micro-batch of B sequences (prompt + response tokens, random ids, right-padded responses of
varied length), the tiny model of gft_core.tiny (random weights, float32). Each variant runs
forward -> loss -> backward with the same forward call (logits of the response positions only,
cast to float32), so the difference is the loss and its backward:
- sft-ce: F.cross_entropy over the valid response tokens (what an SFT trainer computes);
- gft: gft_core.logprobs.response_logprobs (log_softmax + gather) -> pi = exp(log pi) ->
  gft_core.losses.gft_loss with DCR (tau 0.3) and per-sequence advantages;
- gft+stats: what gft_core's Trainer does per micro-batch: response_logprobs with the entropy
  (on every ENTROPY_STRIDE-th valid token, as the Trainer logs it) and the DCR
  coefficients/rectified mask for its metrics, then gft_loss.
Variants interleaved in every repetition; the first repetitions are warm-up. Also on a model of
the same shape with a 32k vocabulary, where the loss (a softmax over the vocabulary) weighs more.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.common import Skip, Stat, print_table, record, verdict

GOAL = 0.05  # within 5%


def _batch(vocab: int, B: int, P: int, T: int, device, seed: int = 0):
    import torch

    from gft_core.logprobs import TrainSeq, collate

    g = torch.Generator().manual_seed(seed)
    seqs = []
    for i in range(B):
        p = torch.randint(4, vocab, (P - int(torch.randint(0, P // 4 + 1, (1,), generator=g)),), generator=g).tolist()
        r = torch.randint(4, vocab, (T - int(torch.randint(0, T // 2, (1,), generator=g)),), generator=g).tolist()
        seqs.append(TrainSeq(p, r, "self", 0.0, float(torch.randn(1, generator=g)), i // 8, ""))
    batch = collate(seqs, 0, device)
    adv = torch.tensor([s.advantage for s in seqs], device=device)
    return batch, adv


def variants(model, batch, adv, tau: float = 0.3):
    import torch
    import torch.nn.functional as F

    from gft_core.losses import dcr_coefficients, gft_loss
    from gft_core.logprobs import response_logprobs

    T = batch["targets"].shape[1]
    mask = batch["resp_mask"].float()

    def sft_ce():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"], use_cache=False, logits_to_keep=T + 1).logits[:, -(T + 1):-1, :]
        targets = batch["targets"].masked_fill(batch["resp_mask"] == 0, -100)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)

    def gft():
        logprobs, _ = response_logprobs(model, batch, keep=True)
        return gft_loss(logprobs, logprobs.exp(), adv, mask, tau=tau)

    def gft_stats():
        logprobs, entropy = response_logprobs(model, batch, with_entropy=True, keep=True)
        pi = logprobs.exp()
        loss = gft_loss(logprobs, pi, adv, mask, tau=tau)
        c, rect = dcr_coefficients(pi, tau), pi.detach() < tau
        valid = batch["resp_mask"].bool()
        _ = (pi.detach()[valid], c[valid], rect[valid], entropy[valid & ~entropy.isnan()])
        return loss

    return {"sft-ce": sft_ce, "gft": gft, "gft+stats": gft_stats}


def measure(model, fns: dict, reps: int, warmup: int) -> dict[str, list[float]]:
    """Times per variant; the order alternates (forward, reversed) so that drift hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + reps):
        order = list(fns.items()) if i % 2 == 0 else list(fns.items())[::-1]
        for name, fn in order:
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            fn().backward()
            dt = time.perf_counter() - t0
            if i >= warmup:
                times[name].append(dt)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench loss", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--response-len", type=int, default=96)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--wide-reps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--wide-vocab", type=int, default=32_000, help="0 = skip the wide-vocabulary model")
    a = p.parse_args(argv)
    if a.quick:
        a.batch, a.prompt_len, a.response_len, a.reps, a.warmup, a.wide_vocab = 4, 8, 16, 2, 1, 1000
        a.wide_reps = 2
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    try:
        from gft_core.tiny import make_tiny_model
        from gft_core.logprobs import response_logprobs  # noqa: F401
    except ImportError as e:
        raise Skip(f"gft_core is incomplete ({e})") from None
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    device = torch.device("cpu")
    tmp = Path(tempfile.mkdtemp(prefix="bench-loss-"))
    models = [("tiny", AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp / "tiny")))]
    if a.wide_vocab:
        cfg = models[0][1].config.to_dict()
        cfg.update(vocab_size=a.wide_vocab)
        for k in ("architectures", "transformers_version", "model_type"):
            cfg.pop(k, None)
        from transformers import LlamaConfig

        torch.manual_seed(0)
        models.append((f"tiny, vocab {a.wide_vocab:,}", LlamaForCausalLM(LlamaConfig(**cfg))))
    rows, out = [], []
    for label, model in models:
        model.to(device).train()
        batch, adv = _batch(model.config.vocab_size, a.batch, a.prompt_len, a.response_len, device)
        ntok = int(batch["resp_mask"].sum())
        reps = a.reps if label == "tiny" else min(a.reps, a.wide_reps)
        times = measure(model, variants(model, batch, adv), reps, a.warmup)
        base = Stat.of(times["sft-ce"])
        for name, ts in times.items():
            s = Stat.of(ts)
            # paired: each repetition's ratio to the sft-ce pass next to it (robust to load drift)
            paired = Stat.of([x / y for x, y in zip(ts, times["sft-ce"])])
            over = paired.median - 1
            rows.append([label, name, f"{a.batch} x ({a.prompt_len}+{a.response_len}), {ntok} resp tokens",
                         s.fmt(4, scale=1000, unit=" ms"), f"{ntok / s.median:,.0f}",
                         "-" if name == "sft-ce" else f"{over * 100:+.1f}% [{(paired.lo - 1) * 100:+.0f}%..{(paired.hi - 1) * 100:+.0f}%]"])
            if name != "sft-ce":
                out.append((f"{name} vs sft-ce overhead ({label})", f"{over * 100:+.1f}% ({s.fmt(4, 1000, ' ms')} vs "
                            f"{base.fmt(4, 1000, ' ms')})", f"<= +{GOAL * 100:.0f}%", verdict(over <= GOAL)))
    print_table(f"loss: forward + loss + backward, {a.reps} repetitions after {a.warmup} warm-up",
                ["model", "loss", "batch", "time [min-max]", "resp tokens/s", "vs sft-ce (median of paired ratios)"], rows)
    record("loss", out, quick=a.quick)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0
