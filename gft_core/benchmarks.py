"""Benchmark evaluation (issue 17): avg@k, unbiased pass@k, maj@k, response lengths, truncation,
per-problem results, and how often a second checker (Hugging Face's Math-Verify) disagrees.

Generation goes through the trainer's batched rollout engine (gft_core.rollout.generate_samples:
k samples of each prompt decoded together, sharing its KV cache), scoring through the reward
registry (each response in a forked child under a wall-clock budget), so a cancelled job stops
at the next batch and a pathological answer cannot hang an evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from gft_core.answers import extract_answer, gsm8k_response_answer, normalize_answer
from gft_core.data import DataError, Example, iter_rows, to_example
from gft_core.errors import ConfigError

MAX_K = 1024
MAX_NEW_TOKENS = 131072
MAX_SEED = 2**32 - 1
MAX_EXAMPLES = 10  # disagreement examples kept per benchmark
TAIL_CHARS = 300  # characters of a response kept in a disagreement example

# Paths are relative to a data root the caller gives (../shared/data in this project). The "math"
# mapping fits all four math sets once the expert column is dropped: MATH-500, AIME 24 and AMC 23
# have "answer" (AMC's are floats, read as "27"), Minerva only a solution with a \boxed{} answer.
BENCHMARK_PRESETS: dict[str, dict] = {
    "math500": {"label": "MATH-500", "path": "math_eval/math_oai.jsonl", "mapping": "math", "rows": 500},
    "aime24": {"label": "AIME 2024", "path": "math_eval/aime24.jsonl", "mapping": "math", "rows": 30},
    "amc23": {"label": "AMC 2023", "path": "math_eval/amc23.jsonl", "mapping": "math", "rows": 40},
    "minerva_math": {"label": "Minerva Math", "path": "math_eval/minerva_math.jsonl", "mapping": "math", "rows": 272},
    "gsm8k_test": {"label": "GSM8K test", "path": "gsm8k/test.parquet", "mapping": "gsm8k", "rows": 1319},
}


class EvaluationStopped(Exception):
    """stop() returned true between two batches: the evaluation was cancelled."""


# --- metrics ----------------------------------------------------------------------------------

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021),
    as the product 1 - prod_{i=n-c+1..n} (1 - k / i): no huge binomials, stable for any n."""
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"pass_at_k: {name} must be an int, got {value!r}")
        if value < 0:
            raise ValueError(f"pass_at_k: {name} must be >= 0, got {value}")
    if c > n:
        raise ValueError(f"pass_at_k: c={c} correct out of n={n} samples")
    if k > n:
        raise ValueError(f"pass_at_k: k={k} is larger than the n={n} samples")
    if k == 0 or c == 0:
        return 0.0
    if n - c < k:  # every draw of k samples holds a correct one
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def majority_vote(keys: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """maj@k of one problem: whether the most frequent extracted answer is correct. Responses
    without an answer do not vote; a tie goes to the answer that came first."""
    votes = Counter(k for k in keys if k is not None)  # insertion order: first seen wins ties
    if not votes:
        return False
    top = max(votes.values())
    winner = next(k for k in votes if votes[k] == top)
    return any(c for k, c in zip(keys, correct) if k == winner)


# --- settings and results ---------------------------------------------------------------------

def _int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, value, "must be an integer")
    if not lo <= value <= hi:
        raise ConfigError(name, value, f"must be in {lo}..{hi}")
    return value


def _float(name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ConfigError(name, value, "must be a number")
    if value > hi or value < lo or (lo_open and value == lo):
        raise ConfigError(name, value, f"must be in {'(' if lo_open else '['}{lo:g}, {hi:g}]")
    return float(value)


def check_reward(reward: Any) -> None:
    """ConfigError naming the field unless `reward` is a reward spec gft_core can build."""
    from gft_core.rewards import RewardSpecError, build_reward

    if not isinstance(reward, dict):
        raise ConfigError("reward", reward, 'expected {"name": ..., "params": {...}}')
    try:
        build_reward(reward)
    except RewardSpecError as e:
        raise ConfigError(e.field, e.value, str(e).removeprefix(f"{e.field}={e.value!r}: ")) from None


def check_prompt_settings(s: Any) -> None:
    """ConfigError naming the field unless s.use_chat_template is a bool (or None where allowed) and
    s.system_prompt / s.instruction_suffix are text of at most MAX_PROMPT_TEXT characters (or None)."""
    from gft_core.config import MAX_PROMPT_TEXT

    if s.use_chat_template is not None and not isinstance(s.use_chat_template, bool):
        raise ConfigError("use_chat_template", s.use_chat_template, "must be true or false")
    for name in ("system_prompt", "instruction_suffix"):
        value = getattr(s, name, None)
        if value is not None and not isinstance(value, str):
            raise ConfigError(name, value, "must be text")
        if value is not None and len(value) > MAX_PROMPT_TEXT:
            raise ConfigError(name, f"{len(value)} characters", f"at most {MAX_PROMPT_TEXT} characters")


def settings_from_dict(cls: type, d: Any, what: str) -> Any:
    """`cls(**d)` for a settings dataclass; ConfigError naming an unknown key."""
    if not isinstance(d, dict):
        raise ConfigError("settings", d, f"expected a mapping of {what} settings")
    known = {f.name for f in dataclasses.fields(cls)}
    for key in d:
        if key not in known:
            raise ConfigError(str(key), d[key], f"unknown {what} setting; known: {', '.join(sorted(known))}")
    return cls(**d)


@dataclass
class EvalSettings:
    """How a benchmark is evaluated; invalid values raise ConfigError naming the field."""

    k: int = 4  # samples per problem
    temperature: float = 0.6  # 0 = greedy
    top_p: float = 0.95
    max_new_tokens: int = 2048
    # The prompt format (gft_core.policy.PromptFormat); None = the model's own: a run's training
    # settings for its checkpoints, else PromptFormat's defaults (chat template on, no system
    # prompt or suffix), as in training.
    use_chat_template: bool | None = None
    system_prompt: str | None = None
    instruction_suffix: str | None = None
    reward: dict = field(default_factory=lambda: {"name": "math_verify", "params": {}})
    seed: int = 0
    batch_size: int = 32  # prompts per generation batch (x k sequences)
    max_prompt_len: int = 2048  # longer prompts keep their last tokens

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "EvalSettings":
        _int("k", self.k, 1, MAX_K)
        self.temperature = _float("temperature", self.temperature, 0.0, 10.0)
        self.top_p = _float("top_p", self.top_p, 0.0, 1.0, lo_open=True)
        _int("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        check_prompt_settings(self)
        _int("seed", self.seed, 0, MAX_SEED)
        _int("batch_size", self.batch_size, 1, 4096)
        _int("max_prompt_len", self.max_prompt_len, 1, MAX_NEW_TOKENS)
        check_reward(self.reward)
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "EvalSettings":
        return settings_from_dict(cls, d, "evaluation")

    def prompt_format(self, model_format: Any = None) -> Any:
        """The PromptFormat prompts are encoded with: the settings given here over `model_format`
        (a run's training format) or, without one, PromptFormat's defaults."""
        from gft_core.policy import PromptFormat

        return (model_format or PromptFormat()).override(use_chat_template=self.use_chat_template,
                                                         system_prompt=self.system_prompt,
                                                         instruction_suffix=self.instruction_suffix)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class ProblemResult:
    """One problem: its k responses, our verdicts, extracted answers, cut flags, token counts, and
    where the second checker (Math-Verify) disagrees with ours."""

    index: int
    prompt: str
    ground_truth: str | None
    responses: list[str]
    correct: list[bool]
    extracted: list[str | None]
    truncated: list[bool]
    lengths: list[int]
    disagree: list[bool]

    @property
    def n_correct(self) -> int:
        return sum(self.correct)


@dataclass
class BenchmarkResult:
    benchmark: str
    n_problems: int
    k: int
    avg_at_k: float  # mean accuracy over all k samples of all problems
    pass_at_k: dict[int, float]  # k' -> mean unbiased pass@k' over problems, for k' in 1..k
    maj_at_k: float  # share of problems whose majority answer is correct
    mean_response_len: float  # tokens
    truncation_rate: float  # share of responses that hit max_new_tokens
    disagreements: int  # responses Math-Verify judges differently from ours
    disagreement_examples: list[dict]
    reward_timeouts: int  # responses whose scoring ran over the budget (scored 0)
    problems: list[ProblemResult]
    checker_timeouts: int = 0  # responses Math-Verify gave no verdict on within the budget
    generation_s: float = 0.0
    scoring_s: float = 0.0  # time the evaluation waited for scores (scoring overlaps generation)
    scoring_work_s: float = 0.0  # time the scoring took, overlapped or not (the slower checker per batch)
    prompt_format: dict = field(default_factory=dict)  # PromptFormat.describe(): how the prompts were built

    def summary(self) -> dict:
        """Everything but the problems, JSON-safe (pass_at_k keys as strings)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "problems"}
        d["pass_at_k"] = {str(k): v for k, v in self.pass_at_k.items()}
        d["disagreement_examples"] = [dict(e) for e in self.disagreement_examples]
        d["prompt_format"] = dict(self.prompt_format)
        return d

    def to_dict(self) -> dict:
        return {**self.summary(), "problems": [dataclasses.asdict(p) for p in self.problems]}


def summarize(name: str, k: int, problems: list[ProblemResult], *, reward_timeouts: int = 0,
              checker_timeouts: int = 0, generation_s: float = 0.0, scoring_s: float = 0.0,
              scoring_work_s: float = 0.0) -> BenchmarkResult:
    """The benchmark's metrics from its per-problem results."""
    n_problems = len(problems)
    responses = [r for p in problems for r in p.responses]
    n = max(len(responses), 1)
    examples = []
    for p in problems:
        for j, d in enumerate(p.disagree):
            if d and len(examples) < MAX_EXAMPLES:
                examples.append({"problem": p.index, "sample": j, "response_tail": p.responses[j][-TAIL_CHARS:],
                                 "extracted": p.extracted[j], "ours": p.correct[j], "theirs": not p.correct[j],
                                 "ground_truth": p.ground_truth})
    mean = (lambda xs: sum(xs) / n_problems) if n_problems else (lambda xs: 0.0)
    return BenchmarkResult(
        benchmark=name, n_problems=n_problems, k=k,
        avg_at_k=sum(p.n_correct for p in problems) / n if responses else 0.0,
        pass_at_k={j: mean([pass_at_k(len(p.correct), p.n_correct, j) for p in problems]) for j in range(1, k + 1)},
        maj_at_k=mean([majority_vote([_vote_key(a) for a in p.extracted], p.correct) for p in problems]),
        mean_response_len=sum(x for p in problems for x in p.lengths) / n if responses else 0.0,
        truncation_rate=sum(t for p in problems for t in p.truncated) / n if responses else 0.0,
        disagreements=sum(d for p in problems for d in p.disagree),
        disagreement_examples=examples, reward_timeouts=reward_timeouts, problems=problems,
        checker_timeouts=checker_timeouts, generation_s=generation_s, scoring_s=scoring_s,
        scoring_work_s=scoring_work_s,
    )


def _vote_key(answer: str | None) -> str | None:
    """Answers vote together when they normalise to the same string ("1{,}000" and "1000")."""
    if answer is None:
        return None
    key = normalize_answer(answer)
    return key or None


# --- benchmarks on disk -----------------------------------------------------------------------

def load_benchmark(path: str | Path, mapping: Any, *, limit: int | None = None) -> list[Example]:
    """Prompt + ground truth of each row (no expert or teacher columns are read). `mapping` is a
    preset name, a dict of ColumnMapping fields or a ColumnMapping. A row without a ground truth
    is a DataError naming its line (row, for Parquet)."""
    from gft_core.config import resolve_mapping

    m = resolve_mapping(mapping, "mapping")
    if m.ground_truth is None:
        raise DataError(f"column mapping: field ground_truth: a benchmark needs a ground-truth column, got {m!r}")
    m = dataclasses.replace(m, expert=None, teacher=None)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit: must be >= 1 or None, got {limit!r}")
    examples: list[Example] = []
    for number, row in iter_rows(path, columns=m.columns()):
        ex = to_example(row, number, m, path)
        if ex.ground_truth is None or not ex.ground_truth.strip():
            unit = "row" if ".parquet" in [s.lower() for s in Path(path).suffixes] else "line"
            raise DataError(f"{path}, {unit} {number}: field ground_truth: column {m.ground_truth!r} is empty")
        examples.append(ex)
        if limit is not None and len(examples) >= limit:
            break
    return examples


def resolve_benchmark(source: str, data_root: str | Path | None = None,
                      mapping: Any = None) -> tuple[str, Path, Any]:
    """(name, file, mapping) of a preset name (under data_root) or a file path (mapping "math"
    unless given)."""
    if source in BENCHMARK_PRESETS:
        preset = BENCHMARK_PRESETS[source]
        if data_root is None:
            raise ConfigError("data_root", None, f"preset {source!r} needs the data root its path "
                              f"{preset['path']!r} is relative to")
        return source, Path(data_root) / preset["path"], mapping or preset["mapping"]
    path = Path(source)
    if not path.is_file():
        raise ConfigError("benchmark", source, f"neither a preset ({', '.join(BENCHMARK_PRESETS)}) nor a file")
    return path.name.split(".")[0], path, mapping or "math"


# --- the evaluation ---------------------------------------------------------------------------

# Built rewards and second checkers, kept per process: each holds a forked scoring child that is
# warm after its first batch (a fresh child's first scores cost ~0.5 s on a loaded 2-core VM:
# fork, copy-on-write faults, sympy's and Math-Verify's first-use work), so evaluating several
# benchmarks or checkpoints in one worker pays for it once. At most _MAX_CACHED of each.
_MAX_CACHED = 4
_cache: dict[tuple[str, str], Any] = {}
_cache_lock = threading.Lock()


def _cached(kind: str, key: str, make: Callable[[], Any]) -> Any:
    with _cache_lock:
        if (kind, key) not in _cache:
            same = [k for k in _cache if k[0] == kind]
            if len(same) >= _MAX_CACHED:
                _close(_cache.pop(same[0]))
            _cache[(kind, key)] = make()
        return _cache[(kind, key)]


def _close(scorer_owner: Any) -> None:
    for part in [scorer_owner] + [fn for _, fn in getattr(scorer_owner, "parts", [])]:
        scorer = getattr(part, "scorer", None)
        if scorer is not None:
            scorer.close()


def _scorers(spec: dict, budget_s: float) -> tuple[Any, Any]:
    """(our reward, the Math-Verify checker) for this spec, their children forked here (in the
    calling thread) by a first one-response batch."""
    from gft_core.hf_checker import HFChecker
    from gft_core.rewards import build_reward

    def warm(fn: Any) -> Any:
        fn(["\\boxed{1}"], ["1"], [""])
        return fn

    reward = _cached("reward", json.dumps(spec, sort_keys=True), lambda: warm(build_reward(spec)))
    checker = _cached("checker", repr(budget_s), lambda: warm(HFChecker(budget_s)))
    return reward, checker


def evaluate_benchmark(model: Any, tokenizer: Any, examples: Sequence[Example], settings: EvalSettings | dict, *,
                       name: str, progress: Callable[[int, int], Any] | None = None,
                       stop: Callable[[], bool] | None = None, prompt_format: Any = None) -> BenchmarkResult:
    """k samples per problem from the batched rollout engine, scored by settings.reward (a sample
    is correct when it scores >= 1) and checked again by Math-Verify. `progress(done, total)`
    after each batch of problems; `stop()` before each batch (EvaluationStopped when true).
    Sampling is seeded by settings.seed (the global RNG is left alone). Prompts are encoded as in
    training (policy.encode_prompt) with `prompt_format` (a PromptFormat; default
    settings.prompt_format()); the result records it (BenchmarkResult.prompt_format).

    Scoring overlaps generation: a batch's responses go to the two scoring children (forked
    processes, each under its per-response budget) from two threads that only wait on them, while
    the next batch generates; `scoring_s` is the time the evaluation waited for scores."""
    import torch

    from gft_core.policy import derive_seed, encode_prompt, has_chat_template
    from gft_core.rewards import DEFAULT_BUDGET_S
    from gft_core.rollout import generate_samples

    s = settings if isinstance(settings, EvalSettings) else EvalSettings.from_dict(settings)
    s.validate()
    fmt = prompt_format or s.prompt_format()
    examples = list(examples)
    extract = gsm8k_response_answer if s.reward.get("name") == "gsm8k" else extract_answer
    reward, checker = _scorers(s.reward, float((s.reward.get("params") or {}).get("timeout_s", DEFAULT_BUDGET_S)))
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(s.seed, "benchmark"))
    problems: list[ProblemResult] = []
    gen_s = wait_s = work_s = 0.0
    timeouts_before, checker_before = reward.timeouts, checker.timeouts
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="eval-scoring")
    # Prompts of similar length share a batch (shortest first): left padding then costs little in
    # the prefill and in every decode step's attention. Results keep the examples' order.
    ids = [encode_prompt(tokenizer, e.prompt, max_len=s.max_prompt_len, chat_template=fmt) for e in examples]
    order = sorted(range(len(examples)), key=lambda i: len(ids[i]))
    pending: tuple | None = None  # (done before, indices, samples, our future, their future) of the last batch

    def collect() -> None:
        nonlocal wait_s, work_s
        before, batch_idx, samples, ours_f, theirs_f = pending
        t = time.perf_counter()
        (ours, ours_s), (theirs, theirs_s) = ours_f.result(), theirs_f.result()
        wait_s += time.perf_counter() - t
        work_s += max(ours_s, theirs_s)
        correct, disagree = compare(ours, theirs)
        for i, (j, ss) in enumerate(zip(batch_idx, samples)):
            lo, e = i * s.k, examples[j]
            problems.append(ProblemResult(
                index=j, prompt=e.prompt, ground_truth=e.ground_truth, responses=[x.text for x in ss],
                correct=correct[lo:lo + s.k], extracted=[extract(x.text) for x in ss],
                truncated=[x.truncated for x in ss], lengths=[len(x.token_ids) for x in ss],
                disagree=disagree[lo:lo + s.k]))
        if progress is not None:
            progress(before + len(batch_idx), len(examples))

    try:
        for start in range(0, len(examples), s.batch_size):
            if stop is not None and stop():
                raise EvaluationStopped(f"{name}: stopped after {start} of {len(examples)} problems")
            batch_idx = order[start:start + s.batch_size]
            t0 = time.perf_counter()
            samples = generate_samples(model, tokenizer, [ids[j] for j in batch_idx], n=s.k,
                                       max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                                       batch_size=len(batch_idx) * s.k, generator=generator)
            gen_s += time.perf_counter() - t0
            if pending is not None:
                collect()
            texts = [x.text for ss in samples for x in ss]
            truths = [examples[j].ground_truth for j in batch_idx for _ in range(s.k)]
            prompts = [examples[j].prompt for j in batch_idx for _ in range(s.k)]
            pending = (start, batch_idx, samples, pool.submit(_timed, reward, (texts, truths, prompts)),
                       pool.submit(_timed, checker, (texts, truths, prompts)))
        if pending is not None:
            collect()
    finally:
        pool.shutdown(wait=True)  # a stopped evaluation lets the batch being scored finish (bounded by budgets)
    problems.sort(key=lambda p: p.index)
    result = summarize(name, s.k, problems, reward_timeouts=reward.timeouts - timeouts_before,
                       checker_timeouts=checker.timeouts - checker_before, generation_s=gen_s, scoring_s=wait_s,
                       scoring_work_s=work_s)
    result.prompt_format = fmt.describe(has_chat_template(tokenizer))
    return result


def _timed(fn: Callable, args: tuple) -> tuple[Any, float]:
    t = time.perf_counter()
    return fn(*args), time.perf_counter() - t


def compare(ours: list[float], theirs: list[float]) -> tuple[list[bool], list[bool]]:
    """(correct by our reward: score >= 1, whether the second checker's verdict differs). A
    response the second checker gave no verdict on (over its budget) is not a disagreement."""
    from gft_core.hf_checker import CORRECT, NO_VERDICT

    correct = [r >= 1.0 for r in ours]
    return correct, [v != NO_VERDICT and (v == CORRECT) != c for v, c in zip(theirs, correct)]


def format_table(results: Sequence[BenchmarkResult]) -> str:
    """A plain-text table: one row per benchmark."""
    head = ["benchmark", "problems", "k", "avg@k", "pass@k", "maj@k", "mean len", "truncated", "disagree"]
    rows = [[r.benchmark, str(r.n_problems), str(r.k), f"{r.avg_at_k:.3f}",
             f"{r.pass_at_k.get(r.k, 0.0):.3f}", f"{r.maj_at_k:.3f}", f"{r.mean_response_len:.1f}",
             f"{r.truncation_rate:.1%}", str(r.disagreements)] for r in results]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = lambda row: "  ".join(x.ljust(w) for x, w in zip(row, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)])
