"""Benchmark evaluation speed (issue 17): gft_core's batched evaluation vs transformers `generate`
in a loop, on MATH-500 prompts with k samples each, on the tiny model.

- ours: `gft_core.benchmarks.evaluate_benchmark` (the trainer's rollout engine: prompts batched,
  k samples of a prompt decoded together sharing its KV cache; scoring by the math_verify reward
  and the Math-Verify second checker, each in a forked child under its budget, while the next
  batch generates). Its wall time includes the scoring. Scoring share: the time the evaluation
  waited for scores / its wall time; also shown, the scoring work (overlapped or not) / wall time.
- generate: for each prompt, `model.generate(num_return_sequences=k)` with the same prompt ids,
  temperature, top-p, max new tokens and stop tokens; generation only (no scoring at all).
Model: gft_core.tiny.make_tiny_model (random weights, 192 hidden, 4 layers; positions up to 2048
so that a long MATH prompt fits), into a temporary directory. Prompts keep their last
--max-prompt-len tokens. One small warm-up of each side is excluded. The two sides alternate on
slices of --slice problems (80), so that a change of load on a shared machine hits both.
Goals: ours >= 1.3x generate, scoring < 5% of ours.
The default (--problems 40, --reps 2) runs in ~2 min on 2 loaded cores; `--problems 500 --reps 1`
is the whole MATH-500 (~8 min on 1 CPU thread).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, Skip, Stat, print_table, record, verdict

GOAL_RATIO = 1.3
GOAL_SCORING = 0.05
MATH500 = ROOT.parent / "shared" / "data" / "math_eval" / "math_oai.jsonl"


def generate_loop(model, tokenizer, prompt_ids, *, k: int, max_new_tokens: int, temperature: float,
                  top_p: float, stop_ids: list[int], pad_id: int) -> list[list[str]]:
    """The naive evaluation loop: one `generate` call per prompt, k return sequences."""
    import torch

    out = []
    with torch.no_grad():
        for ids in prompt_ids:
            x = torch.tensor([ids])
            kw = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
            gen = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                                 num_return_sequences=k, eos_token_id=stop_ids, pad_token_id=pad_id, **kw)
            out.append(tokenizer.batch_decode(gen[:, x.shape[1]:], skip_special_tokens=True))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench evaluation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", type=int, default=40, help="first N MATH-500 problems (500 = all)")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--max-prompt-len", type=int, default=512)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=16, help="prompts per batch of ours (x k sequences)")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--slice", type=int, default=80, help="problems per slice; the two sides alternate per slice")
    p.add_argument("--data", default=str(MATH500))
    p.add_argument("--quick", action="store_true", help="tiny sizes, nothing recorded")
    a = p.parse_args(argv)
    if a.quick:
        a.problems, a.reps, a.max_new_tokens = 4, 1, 8
    if not Path(a.data).is_file():
        raise Skip(f"MATH-500 not found at {a.data}")

    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    from gft_core.benchmarks import EvalSettings, evaluate_benchmark, load_benchmark
    from gft_core.policy import encode_prompt, load_policy
    from gft_core.rollout import eos_ids
    from gft_core.tiny import make_tiny_model

    examples = load_benchmark(a.data, "math", limit=a.problems)
    settings = EvalSettings(k=a.k, temperature=a.temperature, top_p=a.top_p, max_new_tokens=a.max_new_tokens,
                            batch_size=a.batch_size, max_prompt_len=a.max_prompt_len)
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        model, tokenizer = load_policy(make_tiny_model(Path(tmp) / "tiny", max_positions=a.max_prompt_len
                                                       + a.max_new_tokens + 16))
    model.eval()
    prompt_ids = [encode_prompt(tokenizer, e.prompt, max_len=a.max_prompt_len, chat_template=False) for e in examples]
    stop_ids = eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]

    def ours(exs):
        t = time.perf_counter()
        r = evaluate_benchmark(model, tokenizer, exs, settings, name="math500")
        return time.perf_counter() - t, r

    def theirs(ids):
        t = time.perf_counter()
        texts = generate_loop(model, tokenizer, ids, k=a.k, max_new_tokens=a.max_new_tokens,
                              temperature=a.temperature, top_p=a.top_p, stop_ids=stop_ids, pad_id=pad_id)
        return time.perf_counter() - t, texts

    ours(examples[:2])  # warm-up: imports, the scoring children's first fork, kernels
    theirs(prompt_ids[:2])
    # The sides alternate on slices of --slice problems (so a change in the machine's load hits
    # both alike); within a repetition their times are summed over the slices.
    slices = [range(i, min(i + a.slice, len(examples))) for i in range(0, len(examples), a.slice)]
    our_s, gen_s, their_s, ratios, shares, work, tokens = [], [], [], [], [], [], []
    results = []
    for rep in range(a.reps):
        o_t = g_t = wait_t = work_t = th_t = 0.0
        results = []
        for n, sl in enumerate(slices):
            for side in (("ours", "generate") if (rep + n) % 2 == 0 else ("generate", "ours")):
                if side == "ours":
                    dt, res = ours([examples[i] for i in sl])
                    o_t, g_t, wait_t, work_t = o_t + dt, g_t + res.generation_s, wait_t + res.scoring_s, work_t + res.scoring_work_s
                    results.append(res)
                else:
                    th_t += theirs([prompt_ids[i] for i in sl])[0]
        our_s.append(o_t)
        their_s.append(th_t)
        gen_s.append(g_t)
        shares.append(wait_t / o_t)
        work.append(work_t / o_t)
        tokens.append(sum(n for res in results for pr in res.problems for n in pr.lengths))
        ratios.append(th_t / o_t)
    o, t, r, s, g, w = (Stat.of(x) for x in (our_s, their_s, ratios, shares, gen_s, work))
    n_seq = len(examples) * a.k
    size = (f"{len(examples)} MATH-500 problems x k={a.k}, {a.max_new_tokens} new tokens, T={a.temperature}, "
            f"tiny model, {torch.get_num_threads()} thread(s)")
    print_table(f"evaluation: {size}", ["side", "seconds", "sequences/s", "note"], [
        ("ours (evaluate_benchmark)", o.fmt(), f"{n_seq / o.median:.1f}",
         f"generation {g.fmt()} s; waiting for scores {s.fmt(scale=100, digits=2, unit='%')}, "
         f"scoring work {w.fmt(scale=100, digits=2, unit='%')} (overlapped)"),
        ("transformers generate loop", t.fmt(), f"{n_seq / t.median:.1f}", "generation only, one call per prompt"),
        ("generate / ours", r.fmt(digits=2, unit="x"), "", f"goal >= {GOAL_RATIO}x"),
    ])
    n_resp = sum(res.n_problems * res.k for res in results)
    print(f"ours: {sum(tokens) / max(len(tokens), 1):.0f} tokens per evaluation, "
          f"avg@k {sum(res.avg_at_k * res.n_problems * res.k for res in results) / n_resp:.3f}, "
          f"truncated {sum(res.truncation_rate * res.n_problems * res.k for res in results) / n_resp:.0%}, "
          f"Math-Verify disagreements {sum(res.disagreements for res in results)} of {n_resp} responses")
    record("evaluation", [
        (f"evaluation vs generate loop ({size})", f"{r.fmt(digits=2, unit='x')} (ours {o.fmt()} s, generate {t.fmt()} s)",
         f">= {GOAL_RATIO}x", verdict(r.median >= GOAL_RATIO)),
        ("evaluation scoring share: waiting for scores (scoring work, overlapped with generation: "
         f"{w.fmt(scale=100, digits=2, unit='%')})", s.fmt(scale=100, digits=2, unit="%"),
         f"< {GOAL_SCORING:.0%}", verdict(s.median < GOAL_SCORING)),
    ], quick=a.quick)
    return 0
