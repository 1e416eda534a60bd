"""Command line: python -m gft_core {train, eval, make-tiny, make-toy-data}.

No Django, Postgres or Redis: metrics go to a JSONL file and the console. A bad config or data
file prints one line naming the field and the value, and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """--set key=value (value parsed as YAML; dotted keys reach into data.*)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"error: --set expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(raw)
    return out


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for k, v in over.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def cmd_train(args: argparse.Namespace) -> int:
    from gft_core.config import GFTConfig, load_config
    from gft_core.metrics import ConsoleSink, JSONLSink, MultiSink
    from gft_core.trainer import Trainer

    cfg = load_config(args.config)
    if args.set:
        cfg = GFTConfig.from_dict(_merge(cfg.to_dict(), _parse_set(args.set)))
    cfg.validate()
    metrics_path = Path(args.metrics_jsonl or Path(cfg.output_dir) / "metrics.jsonl")
    trainer = Trainer(cfg, resume=args.resume)
    sinks = [JSONLSink(metrics_path)]
    if not args.quiet:
        sinks.append(ConsoleSink())
    trainer.sink = MultiSink(*sinks)
    result = trainer.train()
    summary = {"status": result.status, "step": result.step, "final_dir": result.final_dir,
               "eval_accuracy": result.eval_accuracy, "metrics": str(metrics_path)}
    if trainer.accelerator.is_main_process:  # under `accelerate launch`, one summary line
        print(json.dumps(summary))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from gft_core.benchmarks import (EvalSettings, evaluate_benchmark, format_table, load_benchmark,
                                     resolve_benchmark)
    from gft_core.config import ConfigError, _check_model_dir, resolve_mapping
    from gft_core.policy import load_policy, saved_prompt_format

    _check_model_dir(args.model)
    if not args.benchmark and not args.data:
        raise ConfigError("benchmark", None, "give --benchmark PATH_OR_PRESET (repeatable) or --data FILE")
    try:
        params = json.loads(args.reward_params) if args.reward_params else {}
    except json.JSONDecodeError as e:
        raise ConfigError("reward_params", args.reward_params, f"not JSON: {e.msg}") from None
    settings = EvalSettings(
        k=args.k, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
        use_chat_template=args.chat_template, system_prompt=args.system_prompt,
        instruction_suffix=args.instruction_suffix, reward={"name": args.reward, "params": params}, seed=args.seed,
        batch_size=max(1, args.batch_size // max(args.k, 1)), max_prompt_len=args.max_prompt_len)
    # a run's checkpoint or final model is evaluated with the run's prompt format unless a flag says otherwise
    prompt_format = settings.prompt_format(saved_prompt_format(args.model))
    sources = [resolve_benchmark(b, args.data_root, args.mapping) for b in args.benchmark]
    if args.data:
        sources.append(resolve_benchmark(args.data, None, args.mapping or "toy"))
    loaded = [(name, load_benchmark(path, resolve_mapping(mapping, "mapping"), limit=args.max_prompts))
              for name, path, mapping in sources]
    model, tokenizer = load_policy(args.model)
    results = []
    for name, examples in loaded:
        results.append(evaluate_benchmark(model, tokenizer, examples, settings, name=name, prompt_format=prompt_format))
    print(format_table(results))
    for r in results:
        if r.disagreements:
            print(f"{r.benchmark}: Math-Verify disagrees with our checker on {r.disagreements} of "
                  f"{r.n_problems * r.k} responses (examples in --json)")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": settings.to_dict(), "prompt_format": results[0].prompt_format
                                               if results else prompt_format.to_dict(),
                                               "results": [r.to_dict() for r in results]}, indent=1))
    for r in results:  # one machine-readable line per benchmark, last
        print(json.dumps({"benchmark": r.benchmark, "accuracy": r.avg_at_k, "prompts": r.n_problems, "k": r.k,
                          "temperature": settings.temperature, f"pass@{r.k}": r.pass_at_k[r.k],
                          "maj@k": r.maj_at_k}))
    return 0


def cmd_make_tiny(args: argparse.Namespace) -> int:
    from gft_core.metrics import ConsoleSink
    from gft_core.tiny import count_parameters, make_tiny

    out = make_tiny(args.out, warmup_steps=args.warmup_steps, warmup_data=args.warmup_data,
                    warmup_method=args.warmup_method, warmup_lr=args.warmup_lr, seed=args.seed,
                    sink=None if args.quiet else ConsoleSink(),
                    hidden_size=args.hidden_size, num_layers=args.layers)
    print(json.dumps({"model": str(out), "parameters": count_parameters(out), "warmup_steps": args.warmup_steps}))
    return 0


def cmd_make_toy_data(args: argparse.Namespace) -> int:
    from gft_core.tiny import EASY_TOY, make_toy_data

    kw = dict(EASY_TOY) if args.easy else {}
    paths = make_toy_data(args.out, n_train=args.n_train, n_eval=args.n_eval, seed=args.seed, **kw)
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gft_core", description="Group Fine-Tuning (GFT) trainer")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train from a YAML/JSON config")
    t.add_argument("--config", required=True, help="run.yaml or run.json")
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    t.add_argument("--metrics-jsonl", help="metric file (default: output_dir/metrics.jsonl)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting (repeatable)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="benchmark a model: avg@k, pass@k, maj@k, lengths, truncation, checker disagreements")
    e.add_argument("--model", required=True, help="Hugging Face model directory")
    e.add_argument("--benchmark", action="append", default=[], metavar="PATH_OR_PRESET",
                   help="benchmark file, or a preset (math500, aime24, amc23, minerva_math, gsm8k_test) under "
                        "--data-root; repeatable")
    e.add_argument("--data-root", default=None, help="directory the presets' paths are relative to (../shared/data)")
    e.add_argument("--data", default=None, help="one more benchmark file, read with --mapping (default toy)")
    e.add_argument("--mapping", default=None, help="column preset (toy, gsm8k, math); default: the preset's, else math")
    e.add_argument("--k", type=int, default=16, help="samples per problem")
    e.add_argument("--temperature", type=float, default=0.5, help="0 = greedy")
    e.add_argument("--top-p", type=float, default=1.0)
    e.add_argument("--max-new-tokens", "--max-response-len", dest="max_new_tokens", type=int, default=256)
    e.add_argument("--max-prompts", type=int, default=None, help="the first N problems of each benchmark")
    e.add_argument("--max-prompt-len", type=int, default=512)
    e.add_argument("--batch-size", type=int, default=64, help="sequences per generation batch (prompts x k)")
    e.add_argument("--reward", default="math_verify")
    e.add_argument("--reward-params", default=None, help="JSON object of reward parameters")
    e.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=None,
                   help="wrap prompts in the model's chat template when it has one (default: the run's setting "
                        "for a run's checkpoint or final model, else on)")
    e.add_argument("--system-prompt", default=None, help="system prompt (default: the run's, else none)")
    e.add_argument("--instruction-suffix", default=None,
                   help="text after each prompt on its own line (default: the run's, else none)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", "--output", dest="json", metavar="FILE",
                   help="write settings and every result (metrics, per-problem samples) to this JSON file")
    e.set_defaults(func=cmd_eval)

    m = sub.add_parser("make-tiny", help="build the tiny model (+ optional warm-up SFT on the toy task)")
    m.add_argument("out")
    m.add_argument("--warmup-steps", type=int, default=0)
    m.add_argument("--warmup-data", default=None,
                   help="toy train.jsonl for the warm-up (default: freshly generated toy rows)")
    m.add_argument("--warmup-method", choices=("sft", "sft_mix"), default="sft",
                   help="sft: expert answers; sft_mix: expert + teacher answers (the warm-up before GFT)")
    m.add_argument("--warmup-lr", type=float, default=2e-3, help="peak learning rate of the cosine warm-up")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--hidden-size", type=int, default=192)
    m.add_argument("--layers", type=int, default=4)
    m.add_argument("--quiet", action="store_true")
    m.set_defaults(func=cmd_make_tiny)

    d = sub.add_parser("make-toy-data", help="write the toy arithmetic task (train.jsonl, eval.jsonl)")
    d.add_argument("out")
    d.add_argument("--n-train", type=int, default=2000)
    d.add_argument("--n-eval", type=int, default=200)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--easy", action="store_true",
                   help="the easy variant: two operations without parentheses, operands 1..6")
    d.set_defaults(func=cmd_make_toy_data)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gft_core.config import ConfigError
    from gft_core.data import DataError

    try:
        return args.func(args)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - TrainingError and the like: one line, not a traceback
        from gft_core.trainer import TrainingError

        if isinstance(e, TrainingError):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
