"""gft_core: Group Fine-Tuning (GFT, arXiv 2604.14258) as a plain library.

    from gft_core import GFTConfig, Trainer, JSONLSink
    cfg = GFTConfig.from_dict({...}).validate()
    Trainer(cfg, sink=JSONLSink("metrics.jsonl")).train()

Names are imported lazily (torch and transformers load on first use), so `import gft_core` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # methods, losses and advantages
    "Method": "methods", "METHODS": "config", "get_method": "methods",
    "aggregate": "losses", "dcr_coefficients": "losses", "gft_loss": "losses", "sft_loss": "losses",
    "dft_loss": "losses", "grpo_loss": "losses",
    "SOURCES": "methods", "Response": "groups", "Group": "groups", "off_policy_responses": "groups",
    "group_advantages": "groups",
    # rewards and data
    "build_reward": "rewards", "describe_rewards": "rewards", "RewardSpecError": "rewards", "REWARDS": "rewards",
    "ColumnMapping": "data", "PRESETS": "data", "Example": "data", "iter_rows": "data", "load_examples": "data",
    "split_eval": "data", "DataError": "data",
    # configuration
    "GFTConfig": "config", "DataConfig": "config", "ConfigError": "errors", "load_config": "config",
    "FieldSpec": "config", "FIELDS": "config", "LAUNCH_FIELDS": "config", "check_field": "config",
    "config_diff": "config",
    # training
    "Trainer": "trainer", "TrainResult": "trainer", "TrainingError": "trainer", "lr_lambda": "trainer",
    "TrainSeq": "logprobs", "collate": "logprobs", "response_logprobs": "logprobs",
    "shared_prefix_logits": "logprobs",
    "load_policy": "policy", "encode_prompt": "policy", "derive_seed": "policy",
    "evaluate_accuracy": "evaluation", "KLProbe": "evaluation",
    "pass_at_k": "benchmarks", "EvalSettings": "benchmarks", "ProblemResult": "benchmarks",
    "BenchmarkResult": "benchmarks", "evaluate_benchmark": "benchmarks", "load_benchmark": "benchmarks",
    "BENCHMARK_PRESETS": "benchmarks", "EvaluationStopped": "benchmarks",
    "latest_checkpoint": "checkpoints",
    "generate_samples": "rollout",
    # metrics
    "MetricSink": "metrics", "JSONLSink": "metrics", "ConsoleSink": "metrics", "MultiSink": "metrics",
    "NullSink": "metrics", "METRIC_NAMES": "metrics", "Histogram": "metrics", "StepStats": "step_stats",
    # tiny model and toy task
    "build_tokenizer": "tiny", "make_tiny_model": "tiny", "make_toy_data": "tiny", "make_tiny": "tiny",
    "warmup_sft": "tiny",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gft_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"gft_core.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
