"""Registry of named, parameterised reward functions (GFT.md section 3).

A reward is built from a spec `{"name": str, "params": {...}}` with `build_reward(spec)` and is
called on a batch: `fn(responses, ground_truths, prompts) -> list[float]`, one score per response.
The trainer scores every response of a group this way, whatever its source.

Rewards cannot hang their caller: every parameter is type-checked and bounded when the spec is
built (RewardSpecError names the field), user patterns run on RE2 (linear time), and each
response is scored in a forked child under a wall-clock budget (gft_core.scoring): a response
over it scores 0.0 and is counted in the reward's cumulative `timeouts`. The one exception is
`reward_model`, which runs torch in the calling process (see RewardModel).
"""

from __future__ import annotations

import abc
import functools
import json
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import re2

from gft_core.answers import (answers_equal, extract_answer, final_line_answer, gsm8k_number, gsm8k_response_answer,
                              last_boxed, load_sympy)
from gft_core.scoring import ScoreOne, Scorer

RewardFn = Callable[[list[str], list["str | None"], list[str]], list[float]]

DEFAULT_BUDGET_S = 3.0  # wall-clock budget for scoring one response
MAX_BUDGET_S = 60.0
MAX_DEPTH = 4  # weighted_sum inside weighted_sum, at most this many levels
MAX_TERMS = 16
MAX_STR = 4096  # any string parameter (paths); patterns are shorter
MAX_ABS_REWARD = 1000.0  # a reward or weight (rewards are normalised per group anyway)


class RewardSpecError(ValueError):
    """A reward spec names an unknown reward or holds a bad parameter."""

    def __init__(self, field: str, value: Any, message: str):
        self.field, self.value = field, value
        super().__init__(f"{field}={value!r}: {message}")


# --- what build_reward returns ---------------------------------------------------------------

class Reward(abc.ABC):
    """A built reward: `reward(responses, ground_truths, prompts) -> list[float]`.

    `timeouts`: how many responses so far scored 0.0 because their scoring ran over the budget
    (cumulative; the trainer logs it as reward/timeouts).
    """

    name: str
    timeouts: int

    def __call__(self, responses: list[str], ground_truths: list[str | None], prompts: list[str]) -> list[float]:
        if not len(responses) == len(ground_truths) == len(prompts):
            raise ValueError(f"{self.name}: {len(responses)} responses, {len(ground_truths)} ground truths "
                             f"and {len(prompts)} prompts; expected one of each per response")
        return self.score(list(responses), list(ground_truths), list(prompts))

    @abc.abstractmethod
    def score(self, responses: list[str], ground_truths: list[str | None], prompts: list[str]) -> list[float]:
        """One score per response (the lists have equal lengths)."""


@dataclass(frozen=True)
class PerResponse:
    """What most factories return: score(response, ground_truth, prompt) -> float, run in a forked
    child under `budget_s`; prepare(), if given, runs in the caller first (loads what the child uses)."""

    score: ScoreOne
    budget_s: float = DEFAULT_BUDGET_S
    prepare: Callable[[], Any] | None = None


class BudgetedReward(Reward):
    """A PerResponse scored in a forked child under its budget (gft_core.scoring.Scorer)."""

    def __init__(self, name: str, scoring: PerResponse, needs_ground_truth: bool):
        self.name, self.scoring, self.needs_ground_truth = name, scoring, needs_ground_truth
        self.scorer = Scorer(scoring.score, scoring.budget_s)
        self.timeouts = 0

    def score(self, responses: list[str], ground_truths: list[str | None], prompts: list[str]) -> list[float]:
        if self.needs_ground_truth:
            for i, gt in enumerate(ground_truths):
                if gt is None:
                    raise ValueError(f"ground_truths[{i}]: the {self.name} reward needs a ground truth, got None")
        if not responses:
            return []
        if self.scoring.prepare is not None:
            self.scoring.prepare()
        scores, timeouts = self.scorer(responses, ground_truths, prompts)
        self.timeouts += timeouts
        return scores


class WeightedSum(Reward):
    """Sum of built rewards times their weights; its timeouts are its terms'."""

    name = "weighted_sum"

    def __init__(self, parts: list[tuple[float, Reward]]):
        self.parts = parts

    @property
    def timeouts(self) -> int:  # type: ignore[override]
        return sum(fn.timeouts for _, fn in self.parts)

    def score(self, responses: list[str], ground_truths: list[str | None], prompts: list[str]) -> list[float]:
        total = [0.0] * len(responses)
        for weight, fn in self.parts:
            total = [t + weight * s for t, s in zip(total, fn(responses, ground_truths, prompts))]
        return total


# --- the registry ----------------------------------------------------------------------------

_REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """A typed reward parameter; numbers are bounded (min/max inclusive unless min_exclusive),
    strings and lists by max_len."""

    name: str
    type: type
    default: Any = _REQUIRED
    help: str = ""
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_len: int | None = None


@dataclass(frozen=True)
class RewardInfo:
    name: str
    description: str
    params: tuple[Param, ...]
    factory: Callable[..., "PerResponse | Reward"]
    needs_ground_truth: bool


REWARDS: dict[str, RewardInfo] = {}


def register(name: str, description: str, *params: Param, needs_ground_truth: bool = False):
    """Decorator: add a reward factory (keyword arguments = params, plus _field) to REWARDS.

    The factory returns a PerResponse (scored under the budget) or a Reward."""

    def wrap(factory: Callable[..., PerResponse | Reward]) -> Callable[..., PerResponse | Reward]:
        REWARDS[name] = RewardInfo(name, description, params, factory, needs_ground_truth)
        return factory

    return wrap


def needs_ground_truth(spec: dict) -> bool:
    """Whether the reward `spec` (or any term of a weighted sum) compares with a ground truth."""
    if not isinstance(spec, dict):
        return False
    info = REWARDS.get(spec.get("name"))
    if info is None:
        return False
    if info.needs_ground_truth:
        return True
    terms = (spec.get("params") or {}).get("terms") if spec.get("name") == "weighted_sum" else None
    return any(needs_ground_truth(t) for t in terms or [] if isinstance(t, dict))


def describe_rewards() -> list[dict]:
    """Every registered reward with its parameters, for forms and docs."""
    return [
        {
            "name": info.name,
            "description": info.description,
            "params": [
                {
                    "name": p.name,
                    "type": p.type.__name__,
                    "default": None if p.default is _REQUIRED else p.default,
                    "required": p.default is _REQUIRED,
                    "help": p.help + (f" One of: {', '.join(map(str, p.choices))}." if p.choices else ""),
                    "min": p.min,
                    "max": p.max,
                }
                for p in info.params
            ],
        }
        for info in REWARDS.values()
    ]


def _check_param(p: Param, value: Any, field: str) -> Any:
    ok = isinstance(value, p.type) and not (p.type in (int, float) and isinstance(value, bool))
    if p.type is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise RewardSpecError(field, value, f"expected {p.type.__name__}, got {type(value).__name__}")
    if p.choices is not None and value not in p.choices:
        raise RewardSpecError(field, value, f"expected one of {list(p.choices)}")
    if p.type is float and not math.isfinite(value):
        raise RewardSpecError(field, value, "must be a finite number")
    if p.min is not None and (value <= p.min if p.min_exclusive else value < p.min):
        raise RewardSpecError(field, value, f"must be {'>' if p.min_exclusive else '>='} {p.min:g}")
    if p.max is not None and value > p.max:
        raise RewardSpecError(field, value, f"must be <= {p.max:g}")
    max_len = p.max_len if p.max_len is not None else MAX_STR if p.type is str else None
    if max_len is not None and len(value) > max_len:
        unit = "characters" if p.type is str else "items"
        raise RewardSpecError(field, value if len(value) <= 100 else f"{value[:100]}...",
                              f"at most {max_len} {unit}, got {len(value)}")
    return value


def _check_nesting(spec: Any, field: str) -> None:
    """Refuse weighted_sum specs nested more than MAX_DEPTH levels, before building recurses into
    them (breadth first: the work is linear in the size of the spec, never a RecursionError)."""
    level, depth = [(spec, field)], 0
    while level:
        sums = [(s, f) for s, f in level if isinstance(s, dict) and s.get("name") == "weighted_sum"]
        if not sums:
            return
        depth += 1
        if depth > MAX_DEPTH:
            raise RewardSpecError(f"{sums[0][1]}.name", "weighted_sum", f"weighted_sum nested more than {MAX_DEPTH} levels deep")
        level = []
        for s, f in sums:
            params = s.get("params")
            terms = params.get("terms") if isinstance(params, dict) else None
            if isinstance(terms, list):
                level += [(t, f"{f}.params.terms[{k}]") for k, t in enumerate(terms[:MAX_TERMS])]


def build_reward(spec: dict, _field: str = "reward") -> Reward:
    """Build a Reward from {"name": ..., "params": {...}}; RewardSpecError names the bad field."""
    if not isinstance(spec, dict):
        raise RewardSpecError(_field, spec, 'expected a mapping {"name": ..., "params": {...}}')
    extra = sorted(str(k) for k in spec if k not in ("name", "params"))
    if extra:
        key = next(k for k in spec if str(k) == extra[0])
        raise RewardSpecError(f"{_field}.{extra[0]}", spec[key], "unknown key; expected name and params")
    name = spec.get("name")
    if not isinstance(name, str) or name not in REWARDS:
        raise RewardSpecError(f"{_field}.name", name, f"unknown reward; known: {', '.join(REWARDS)}")
    params = spec.get("params") or {}
    if not isinstance(params, dict):
        raise RewardSpecError(f"{_field}.params", params, "expected a mapping of parameter names to values")
    _check_nesting(spec, _field)
    info = REWARDS[name]
    known = {p.name: p for p in info.params}
    for key in params:
        if key not in known:
            raise RewardSpecError(f"{_field}.params.{key}", params[key], f"unknown parameter of {name}; known: {', '.join(known) or 'none'}")
    kwargs = {}
    for p in info.params:
        field = f"{_field}.params.{p.name}"
        if p.name in params:
            kwargs[p.name] = _check_param(p, params[p.name], field)
        elif p.default is _REQUIRED:
            raise RewardSpecError(field, None, f"required parameter of {name} is missing")
        else:
            kwargs[p.name] = p.default
    built = info.factory(**kwargs, _field=f"{_field}.params")
    return BudgetedReward(name, built, info.needs_ground_truth) if isinstance(built, PerResponse) else built


# --- rewards ---------------------------------------------------------------------------------

_BUDGET_HELP = (f"Wall-clock budget for scoring one response, seconds (at most {MAX_BUDGET_S:g}); a response "
                "over it scores 0 and is counted in reward/timeouts.")


@register(
    "math_verify",
    "Math answer verifier: last \\boxed{} (else a final '#### x' line, else 'the answer is', else last number) "
    "against the ground "
    "truth by normalised string, number (also x100, /100) and sympy. 1.0 or 0.0.",
    Param("rel_tol", float, 1e-4, "Relative tolerance of numeric equality.", min=0.0, max=1.0),
    Param("percent", bool, True, "Also accept the ground truth x100 or /100 (percentages)."),
    Param("timeout_s", float, DEFAULT_BUDGET_S, _BUDGET_HELP, min=0.0, min_exclusive=True, max=MAX_BUDGET_S),
    needs_ground_truth=True,
)
def math_verify(*, rel_tol: float, percent: bool, timeout_s: float, _field: str) -> PerResponse:
    def score(response: str, ground_truth: str, prompt: str) -> float:
        truth = last_boxed(ground_truth) or final_line_answer(ground_truth) or ground_truth
        pred = extract_answer(response)
        return 1.0 if pred is not None and answers_equal(pred, truth, rel_tol=rel_tol, percent=percent) else 0.0

    # sympy is imported in the caller, once, not in each forked child against a response's budget
    return PerResponse(score, budget_s=timeout_s, prepare=load_sympy)


@register(
    "gsm8k",
    "GSM8K: the response's last '#### x' (else the math answer) equals the ground truth as a number. 1.0 or 0.0.",
    needs_ground_truth=True,
)
def gsm8k(*, _field: str) -> PerResponse:
    def score(response: str, ground_truth: str, prompt: str) -> float:
        truth = gsm8k_number(ground_truth.rsplit("####", 1)[-1])
        answer = gsm8k_response_answer(response)
        pred = gsm8k_number(answer) if answer is not None else None
        return 1.0 if pred is not None and truth is not None and pred == truth else 0.0

    return PerResponse(score)


@register(
    "exact_match",
    "The whole response equals the ground truth. 1.0 or 0.0.",
    Param("strip", bool, True, "Strip surrounding whitespace from both."),
    Param("case_sensitive", bool, True, "Compare case-sensitively."),
    needs_ground_truth=True,
)
def exact_match(*, strip: bool, case_sensitive: bool, _field: str) -> PerResponse:
    def canon(s: str) -> str:
        s = s.strip() if strip else s
        return s if case_sensitive else s.casefold()

    def score(response: str, ground_truth: str, prompt: str) -> float:
        return 1.0 if canon(response) == canon(ground_truth) else 0.0

    return PerResponse(score)


MAX_PATTERN = 1000


@register(
    "regex_match",
    "A fixed reward when the response matches a regular expression (searched anywhere), else 0.0.",
    Param("pattern", str, help="RE2 regular expression (linear time: no backreferences or lookaround).",
          max_len=MAX_PATTERN),
    Param("reward", float, 1.0, "Reward on a match.", min=-MAX_ABS_REWARD, max=MAX_ABS_REWARD),
)
def regex_match(*, pattern: str, reward: float, _field: str) -> PerResponse:
    options = re2.Options()
    options.log_errors = False  # the error is raised (and reported) here, not printed by RE2
    try:
        compiled = re2.compile(pattern, options)
    except re2.error as e:
        reason = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise RewardSpecError(f"{_field}.pattern", pattern, f"invalid regular expression (RE2): {reason}") from None

    def score(response: str, ground_truth: str | None, prompt: str) -> float:
        return reward if compiled.search(response) else 0.0

    return PerResponse(score)


@register(
    "length_penalty",
    "-penalty x (length - max_len) for responses longer than max_len, else 0.0.",
    Param("max_len", int, help="Length allowed without penalty.", min=0, max=10_000_000),
    Param("penalty", float, 0.01, "Penalty per unit above max_len.", min=0.0, max=MAX_ABS_REWARD),
    Param("unit", str, "chars", "Length unit.", choices=("chars", "tokens")),
    Param("tokenizer", str, "", "Local Hugging Face tokenizer directory; required with unit=tokens."),
)
def length_penalty(*, max_len: int, penalty: float, unit: str, tokenizer: str, _field: str) -> PerResponse:
    prepare = None
    if unit == "tokens":
        if not tokenizer or not Path(tokenizer).is_dir():
            raise RewardSpecError(f"{_field}.tokenizer", tokenizer, "unit=tokens needs a local tokenizer directory")

        @functools.cache
        def load_tokenizer():  # on first use, in the caller: building a spec loads nothing
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(tokenizer)

        def length(text: str) -> int:
            return len(load_tokenizer().encode(text, add_special_tokens=False))

        prepare = load_tokenizer
    else:
        length = len

    def score(response: str, ground_truth: str | None, prompt: str) -> float:
        return -penalty * max(0, length(response) - max_len)

    return PerResponse(score, prepare=prepare)


@register(
    "weighted_sum",
    "Sum of other rewards, each times its weight.",
    Param("terms", list, help='List of {"name", "weight", "params"}.', max_len=MAX_TERMS),
)
def weighted_sum(*, terms: list, _field: str) -> Reward:
    if not terms:
        raise RewardSpecError(f"{_field}.terms", terms, "needs at least one term")
    parts: list[tuple[float, Reward]] = []
    for k, term in enumerate(terms):
        field = f"{_field}.terms[{k}]"
        if not isinstance(term, dict):
            raise RewardSpecError(field, term, 'expected {"name", "weight", "params"}')
        weight = _check_param(Param("weight", float, min=-MAX_ABS_REWARD, max=MAX_ABS_REWARD),
                              term.get("weight", 1.0), f"{field}.weight")
        parts.append((weight, build_reward({k: v for k, v in term.items() if k != "weight"}, field)))
    return WeightedSum(parts)


_DEVICE = re.compile(r"cpu|cuda(:\d{1,3})?|mps")
MAX_CONFIG_BYTES = 10 * 1024 * 1024


@register(
    "reward_model",
    "Score of a local Hugging Face sequence-classification model on (prompt, response).",
    Param("path", str, help="Local model directory (AutoModelForSequenceClassification + AutoTokenizer)."),
    Param("label_index", int, 0, "Index of the output logit used as the score.", min=0, max=100_000),
    Param("transform", str, "logit", "Raw logit or its sigmoid.", choices=("logit", "sigmoid")),
    Param("batch_size", int, 8, "Responses per forward pass.", min=1, max=4096),
    Param("max_length", int, 2048, "Truncate inputs to this many tokens.", min=1, max=131072),
    Param("device", str, "cpu", "torch device of the reward model: cpu, cuda, cuda:N or mps.", max_len=10),
)
def reward_model(
    *, path: str, label_index: int, transform: str, batch_size: int, max_length: int, device: str, _field: str
) -> Reward:
    # Checked from config.json only: building a spec (e.g. validating it in the web process)
    # never loads weights; the model loads on the first call.
    config_file = Path(path) / "config.json"
    if not Path(path).is_dir() or not config_file.is_file():
        raise RewardSpecError(f"{_field}.path", path, "not a local model directory (with a config.json)")
    try:
        if config_file.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"larger than {MAX_CONFIG_BYTES} bytes")
        config = json.loads(config_file.read_text())
        id2label = config.get("id2label")
        num_labels = len(id2label) if isinstance(id2label, dict) else int(config.get("num_labels", 2))
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise RewardSpecError(f"{_field}.path", path, f"unreadable config.json: {e}") from None
    if label_index >= num_labels:
        raise RewardSpecError(f"{_field}.label_index", label_index, f"model has {num_labels} labels")
    if not _DEVICE.fullmatch(device):
        raise RewardSpecError(f"{_field}.device", device, "expected cpu, cuda, cuda:N or mps")
    return RewardModel(path, label_index, transform, batch_size, max_length, device)


class RewardModel(Reward):
    """A sequence-classification model scoring in the calling process, loaded on the first call.

    Not forked: torch (maybe on a GPU) cannot run in a forked child. Its time is bounded by the
    batch size and max_length, and torch releases the GIL while it computes, so the caller's
    other threads keep running; `timeouts` stays 0.
    """

    name = "reward_model"

    def __init__(self, path: str, label_index: int, transform: str, batch_size: int, max_length: int, device: str):
        self.path, self.label_index, self.transform = path, label_index, transform
        self.batch_size, self.max_length, self.device = batch_size, max_length, device
        self.timeouts = 0
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._loaded is None:
                from transformers import AutoModelForSequenceClassification, AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(self.path)
                model = AutoModelForSequenceClassification.from_pretrained(self.path).to(self.device).eval()
                if tokenizer.pad_token is None:  # batching needs a pad token; decoder RMs often lack one
                    tokenizer.pad_token = tokenizer.eos_token
                if model.config.pad_token_id is None:
                    model.config.pad_token_id = tokenizer.pad_token_id
                self._loaded = (tokenizer, model)
            return self._loaded

    def _encode(self, tokenizer, prompts: list[str], responses: list[str]) -> dict:
        kw = dict(padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        if tokenizer.chat_template:  # chat RMs were trained on templated conversations
            texts = [
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False
                )
                for p, r in zip(prompts, responses)
            ]
            return tokenizer(texts, **kw).to(self.device)
        return tokenizer(prompts, responses, **kw).to(self.device)

    def score(self, responses: list[str], ground_truths: list[str | None], prompts: list[str]) -> list[float]:
        import torch

        tokenizer, model = self._load()
        out: list[float] = []
        with torch.no_grad():
            for i in range(0, len(responses), self.batch_size):
                batch = self._encode(tokenizer, prompts[i : i + self.batch_size], responses[i : i + self.batch_size])
                s = model(**batch).logits[:, self.label_index].float()
                out += (torch.sigmoid(s) if self.transform == "sigmoid" else s).tolist()
        return out
