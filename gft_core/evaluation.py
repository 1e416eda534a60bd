"""Held-out accuracy (eval/accuracy) and the KL to the start model on a probe set (policy/kl_start);
benchmark evaluation (pass@k, maj@k, ...) lives in gft_core.benchmarks and is re-exported here."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from gft_core.benchmarks import (  # noqa: F401 - issue 17's benchmark evaluation, importable from here
    BENCHMARK_PRESETS,
    BenchmarkResult,
    EvalSettings,
    EvaluationStopped,
    ProblemResult,
    evaluate_benchmark,
    format_table,
    load_benchmark,
    pass_at_k,
    resolve_benchmark,
)
from gft_core.data import Example
from gft_core.groups import off_policy_responses
from gft_core.logprobs import TrainSeq, collate
from gft_core.policy import PromptFormat, derive_seed, encode_prompt, frozen_copy
from gft_core.rollout import generate_samples

# The start model's log-softmax on the probe tokens is cached when it takes at most this many bytes;
# a larger probe keeps a frozen copy of the start model instead.
PROBE_CACHE_BYTES = 512 * 2**20


@torch.no_grad()
def evaluate_accuracy(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    reward_fn: Callable,
    *,
    k: int,
    temperature: float,
    max_prompt_len: int,
    max_response_len: int,
    top_p: float = 1.0,
    chat_template: "PromptFormat | bool" = False,
    batch_size: int = 64,
    seed: int = 0,
    accelerator: Any = None,
) -> tuple[float, list[dict]]:
    """Mean accuracy over k samples per prompt (a sample is correct when its reward >= 1).

    With several processes each takes a shard of the prompts; the counts are summed. The global
    RNG is left untouched (sampling runs in a forked RNG seeded with `seed`).
    Returns (accuracy, per-prompt records of this process).
    """
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    shard = list(examples)[rank::world]
    prompt_ids = [encode_prompt(tokenizer, e.prompt, max_len=max_prompt_len, chat_template=chat_template) for e in shard]
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derive_seed(seed, "eval", rank))
        samples = generate_samples(model, tokenizer, prompt_ids, n=k, max_new_tokens=max_response_len,
                                   temperature=temperature, top_p=top_p, batch_size=batch_size, accelerator=accelerator)
    texts = [s.text for ss in samples for s in ss]
    truths = [e.ground_truth for e, ss in zip(shard, samples) for _ in ss]
    prompts = [e.prompt for e, ss in zip(shard, samples) for _ in ss]
    rewards = reward_fn(texts, truths, prompts) if texts else []
    correct = [float(r >= 1.0) for r in rewards]
    counts = torch.tensor([sum(correct), len(correct)], dtype=torch.float64)
    if accelerator is not None and world > 1:
        counts = accelerator.reduce(counts.to(accelerator.device), reduction="sum").cpu()
    records, i = [], 0
    for e, ss in zip(shard, samples):
        records.append({"prompt": e.prompt, "ground_truth": e.ground_truth,
                        "samples": [s.text for s in ss], "correct": correct[i:i + len(ss)]})
        i += len(ss)
    return float(counts[0] / counts[1]) if counts[1] > 0 else 0.0, records


class KLProbe:
    """KL(pi_theta || pi_start) on fixed probe tokens: one expert (else teacher) answer per prompt.

    Built from the start model before any update: its log-softmax on the probe tokens is cached
    when small, else a frozen copy of it is kept (or the reference model passed in is reused).
    """

    def __init__(self, examples: Sequence[Example], tokenizer: Any, start_model: Any, *, max_prompt_len: int,
                 max_response_len: int, chat_template: "PromptFormat | bool", micro_batch_size: int, pad_id: int, device: Any,
                 ref_model: Any = None):
        seqs = []
        for ex in examples:
            prompt_ids = encode_prompt(tokenizer, ex.prompt, max_len=max_prompt_len, chat_template=chat_template)
            resp = off_policy_responses(ex, tokenizer, n_expert=1, n_teacher=0 if ex.expert else 1,
                                        max_response_len=max_response_len)[0]
            seqs.append(TrainSeq(prompt_ids, resp.token_ids, resp.source, 0.0, 0.0, -1, resp.text))
        self.batches = [collate(seqs[i:i + micro_batch_size], pad_id, device)
                        for i in range(0, len(seqs), micro_batch_size)]
        self.start_logp: list[torch.Tensor] | None = None
        self.start_model: Any = None
        vocab = start_model.get_output_embeddings().weight.shape[0]
        n_tokens = sum(int(b["resp_mask"].sum()) for b in self.batches)
        if n_tokens * vocab * 4 <= PROBE_CACHE_BYTES:
            with torch.no_grad():
                start_model.to(device).eval()
                self.start_logp = [probe_logsoftmax(start_model, b).cpu() for b in self.batches]
                start_model.train()
        else:
            self.start_model = ref_model or frozen_copy(start_model, device)

    @torch.no_grad()
    def kl(self, net: Any) -> float:
        """Mean over probe tokens of KL(pi_theta || pi_start) = sum_v p log(p / p_start)."""
        was_training = net.training
        net.eval()
        total, count = 0.0, 0
        for i, batch in enumerate(self.batches):
            logp = probe_logsoftmax(net, batch)
            if self.start_logp is not None:
                logq = self.start_logp[i].to(logp.device)
            else:
                logq = probe_logsoftmax(self.start_model, batch)
            total += float((logp.exp() * (logp - logq)).sum())
            count += logp.shape[0]
        net.train(was_training)
        return total / max(count, 1)


def probe_logsoftmax(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N_valid, V) float32 log-softmax at the valid response positions of a probe batch."""
    response_width = batch["targets"].shape[1]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], use_cache=False).logits[:, -(response_width + 1):-1, :]
    return F.log_softmax(logits.float(), dim=-1)[batch["resp_mask"].bool()]


# ---------------------------------------------------------------------- a suite during training
def check_eval_suite(value: Any) -> dict | None:
    """GFTConfig.eval_suite as plain data, or ConfigError naming the part that is wrong:
    {"suite_id": int | None, "name": str, "settings": EvalSettings dict,
     "benchmarks": [{"name": str, "path": str, "mapping": str | dict, "dataset_id": int | None}, ...]}."""
    from gft_core.errors import ConfigError

    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError("eval_suite", value, 'expected {"settings": {...}, "benchmarks": [...]}')
    EvalSettings.from_dict(dict(value.get("settings") or {}))  # ConfigError naming the setting
    benchmarks = value.get("benchmarks")
    if not isinstance(benchmarks, list) or not benchmarks:
        raise ConfigError("eval_suite.benchmarks", benchmarks, "must be a non-empty list")
    for i, b in enumerate(benchmarks):
        if not isinstance(b, dict) or not isinstance(b.get("name"), str) or not isinstance(b.get("path"), str) \
                or not isinstance(b.get("mapping"), (str, dict)):
            raise ConfigError(f"eval_suite.benchmarks[{i}]", b, 'expected {"name": ..., "path": ..., "mapping": ...}')
    return value


class SuiteEvaluation:
    """Issue 17: the suite of GFTConfig.eval_suite evaluated with the current policy, between
    optimizer steps, through the same batched engine as an evaluation job (evaluate_benchmark).
    The main process generates and hands each BenchmarkResult.to_dict() to the sink's optional
    `log_evaluation(step, benchmark_name, result)`; the other processes wait. Prompts are built
    with the run's own format (`model_format`, its DataConfig.prompt_format) where the suite's
    settings leave it unset."""

    def __init__(self, suite: dict, model_format: PromptFormat | None = None):
        self.suite = check_eval_suite(suite)
        self.settings = EvalSettings.from_dict(dict(suite.get("settings") or {}))
        self.prompt_format = self.settings.prompt_format(model_format)
        self._examples: dict[str, list[Example]] = {}

    def examples(self, benchmark: dict) -> list[Example]:
        if benchmark["name"] not in self._examples:  # loaded once, at the first evaluation
            self._examples[benchmark["name"]] = load_benchmark(benchmark["path"], benchmark["mapping"])
        return self._examples[benchmark["name"]]

    def run(self, model: Any, tokenizer: Any, step: int, sink: Any, accelerator: Any = None) -> list[BenchmarkResult]:
        main = accelerator is None or accelerator.is_main_process
        results = []
        if main:
            net = accelerator.unwrap_model(model) if accelerator is not None else model
            was_training = net.training
            net.eval()
            log = getattr(sink, "log_evaluation", None)
            try:
                for b in self.suite["benchmarks"]:
                    with torch.no_grad():
                        result = evaluate_benchmark(net, tokenizer, self.examples(b), self.settings, name=b["name"],
                                                    prompt_format=self.prompt_format)
                    results.append(result)
                    if log is not None:
                        log(step, b["name"], result.to_dict())
            finally:
                net.train(was_training)
        if accelerator is not None:
            accelerator.wait_for_everyone()
        return results
