"""Registry of named, parameterised reward functions (GFT.md section 3).

A reward is built from a spec `{"name": str, "params": {...}}` with `build_reward(spec)` and is
called on a batch: `fn(responses, ground_truths, prompts) -> list[float]`, one score per response.
The trainer scores every response of a group this way, whatever its source.

The math verifier follows the paper: take the last \\boxed{...} (else the text after "the answer
is", else the last number) and compare it with the ground truth by normalised string, by number
(relative tolerance, also x100 and /100 for percentages), then symbolically with sympy in a forked
process under a hard time limit.
"""

from __future__ import annotations

import math
import os
import re
import select
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import sympy
from sympy.parsing.sympy_parser import (
    convert_xor,
    implicit_multiplication_application,
    parse_expr,
    standard_transformations,
)

RewardFn = Callable[[list[str], list["str | None"], list[str]], list[float]]


class RewardSpecError(ValueError):
    """A reward spec names an unknown reward or holds a bad parameter."""

    def __init__(self, field: str, value: Any, message: str):
        self.field, self.value = field, value
        super().__init__(f"{field}={value!r}: {message}")


# --- answer extraction -----------------------------------------------------------------------

def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, nested braces allowed."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    if text.startswith(" ", i):  # "\boxed 5": the argument runs to the next "$" or space
        m = re.match(r" +([^\s$]+)", text[i:])
        return m.group(1) if m else None
    if not text.startswith("{", i):
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None  # unbalanced braces


_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?|-?\.\d+")


def extract_answer(text: str) -> str | None:
    """The final answer of a response: last \\boxed{}, else after "the answer is", else last number."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    said = list(re.finditer(r"the answer is[:\s]*", text, flags=re.IGNORECASE))
    if said:
        rest = text[said[-1].end() :].split("\n", 1)[0].strip()
        inline = re.match(r"\$+([^$]+)\$", rest)  # "the answer is $12$ because ..." -> "12"
        if inline or rest:
            return inline.group(1).strip() if inline else rest
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


# --- normalisation and comparison ------------------------------------------------------------

_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")


def normalize_answer(s: str) -> str:
    """Canonical string form of a LaTeX answer (in the spirit of the MATH grader's strip_string)."""
    s = s.strip().replace("\n", "")
    for unit_cmd in ("\\text{ ", "\\mbox{ "):  # "5 \text{ cm}": a unit after the value
        if unit_cmd in s and s.split(unit_cmd)[0].strip():
            s = s.split(unit_cmd)[0]
    while True:  # \text{...} and friends keep their content; loop for nesting
        stripped = _TEXT_CMD.sub(r"\1", s)
        if stripped == s:
            break
        s = stripped
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", s)
    s = s.replace("\\displaystyle", "").replace("dfrac", "frac").replace("tfrac", "frac")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\circ", "")
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    for space in ("\\!", "\\,", "\\;", "\\:", "\\ ", "~", " "):
        s = s.replace(space, "")
    s = s.rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):  # thousands separators
        s = s.replace(",", "")
    if s.startswith("."):
        s = "0" + s
    s = re.sub(r"^[a-zA-Z]\\in", "", s)  # "x \in [-2,7]" -> "[-2,7]"
    return s


def _to_float(s: str) -> float | None:
    """A plain number, a/b or \\frac{a}{b} (normalised string) as a float, else None."""
    if re.fullmatch(r"-?\d+(\.\d+)?|-?\.\d+|-?\d+\.", s):
        return float(s)
    m = re.fullmatch(r"(-?)(?:\\frac\{(-?\d+(?:\.\d+)?)\}\{(\d+(?:\.\d+)?)\}|(\d+)/(\d+)|\\frac(\d)(\d))", s)
    if not m:
        return None
    num, den = [g for g in m.groups()[1:] if g is not None]
    if float(den) == 0:
        return None
    return (-1 if m.group(1) else 1) * float(num) / float(den)


def numbers_equal(pred: float, truth: float, rel_tol: float, percent: bool = True) -> bool:
    """pred == truth within rel_tol; with percent, also against truth x100 and /100."""
    targets = (truth, truth * 100, truth / 100) if percent else (truth,)
    return any(math.isclose(pred, t, rel_tol=rel_tol, abs_tol=1e-12) for t in targets)


_LATEX_NAMES = {
    "pi": " pi ", "infty": " oo ", "cdot": "*", "times": "*", "div": "/", "sqrt": "sqrt",
    "ln": " log", "log": " log", "exp": " exp", "sin": " sin", "cos": " cos", "tan": " tan",
    "sec": " sec", "csc": " csc", "cot": " cot", "arcsin": " asin", "arccos": " acos", "arctan": " atan",
}
_SYMPY_NAMES = {"pi", "oo", "sqrt", "log", "exp", "sin", "cos", "tan", "sec", "csc", "cot", "asin", "acos", "atan", "I"}


def _latex_group(s: str, i: int) -> tuple[str | None, int]:
    """One LaTeX argument at s[i]: a {...} group, a \\command or a single character."""
    if i >= len(s):
        return None, i
    if s[i] == "{":
        depth = 0
        for j in range(i, len(s)):
            depth += {"{": 1, "}": -1}.get(s[j], 0)
            if depth == 0:
                return s[i + 1 : j], j + 1
        return None, len(s)
    if s[i] == "\\":
        m = re.match(r"\\[a-zA-Z]+", s[i:])
        if m:
            return m.group(0), i + len(m.group(0))
    return s[i], i + 1


def latex_to_sympy(s: str) -> str | None:
    """Translate a normalised LaTeX answer into a sympy expression string, or None if unsupported.

    Supports \\frac, \\sqrt (with [n]), ^, \\pi, \\cdot, \\times, \\infty and common functions.
    The result contains only digits, operators, parentheses, single-letter symbols and known
    sympy names, so parsing it cannot run arbitrary code.
    """
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if s.startswith("\\frac", i):
            num, i = _latex_group(s, i + len("\\frac"))
            den, i = _latex_group(s, i)
            parts = [latex_to_sympy(x) if x is not None else None for x in (num, den)]
            if None in parts:
                return None
            out.append(f"(({parts[0]})/({parts[1]}))")
        elif s.startswith("\\sqrt", i):
            i += len("\\sqrt")
            index = None
            if s.startswith("[", i):
                close = s.find("]", i)
                if close < 0:
                    return None
                index, i = latex_to_sympy(s[i + 1 : close]), close + 1
            arg, i = _latex_group(s, i)
            body = latex_to_sympy(arg) if arg is not None else None
            if body is None:
                return None
            out.append(f"(({body})**(1/({index})))" if index else f"sqrt({body})")
        elif c == "^":
            arg, i = _latex_group(s, i + 1)
            body = latex_to_sympy(arg) if arg is not None else None
            if body is None:
                return None
            out.append(f"**({body})")
        elif c == "\\":
            m = re.match(r"\\([a-zA-Z]+)", s[i:])
            if not m or m.group(1) not in _LATEX_NAMES:
                return None
            out.append(_LATEX_NAMES[m.group(1)])
            i += len(m.group(0))
        elif c == "{":
            arg, i = _latex_group(s, i)
            body = latex_to_sympy(arg) if arg is not None else None
            if body is None:
                return None
            out.append(f"({body})")
        elif c.isalpha():
            word = re.match(r"[a-zA-Z]+", s[i:]).group(0)
            if len(word) > 1 and word not in _SYMPY_NAMES:
                return None  # multi-letter words ("Evelyn") are text, not algebra
            out.append(" I " if word == "i" else f" {word} ")
            i += len(word)
        elif c.isdigit() or c in "+-*/(). ":
            out.append(c)
            i += 1
        else:  # "}", "=", ",", "<", "_", "!", ... : not a single expression we handle
            return None
    expr = "".join(out)
    return expr if expr.strip() else None


_TRANSFORMATIONS = standard_transformations + (implicit_multiplication_application, convert_xor)


def _sympy_equal(a: str, b: str, rel_tol: float) -> bool:
    """Symbolic (or, for constants, numeric) equality of two sympy expression strings."""
    x = parse_expr(a, transformations=_TRANSFORMATIONS)
    y = parse_expr(b, transformations=_TRANSFORMATIONS)
    if sympy.simplify(x - y) == 0:
        return True
    if not x.free_symbols and not y.free_symbols:
        xv, yv = complex(sympy.N(x)), complex(sympy.N(y))
        return cmath_isclose(xv, yv, rel_tol)
    return False


def cmath_isclose(x: complex, y: complex, rel_tol: float) -> bool:
    return abs(x - y) <= max(rel_tol * max(abs(x), abs(y)), 1e-12)


def run_with_timeout(fn: Callable[..., bool], args: tuple, timeout_s: float) -> bool:
    """Run fn(*args) in a forked child and return its bool result; False on timeout or error.

    A fork (not a thread or signal.alarm) gives a hard limit from any thread, even when sympy is
    stuck in C code (huge integers); the child is killed when the time is up.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: compute, write one byte, exit without running the parent's cleanup
        os.close(read_fd)
        try:
            os.write(write_fd, b"1" if fn(*args) else b"0")
        except BaseException:
            os.write(write_fd, b"0")
        finally:
            os._exit(0)
    os.close(write_fd)
    answer = b""
    try:
        ready, _, _ = select.select([read_fd], [], [], timeout_s)
        if ready:
            answer = os.read(read_fd, 1)
    finally:
        os.close(read_fd)
        if not answer:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return answer == b"1"


def _closes_at_end(s: str) -> bool:
    """Whether the bracket opened at s[0] is closed by s[-1] ("(a,b)" yes, "(a)\\cup(b)" no)."""
    depth = 0
    for k, c in enumerate(s):
        depth += 1 if c in "([{" else -1 if c in ")]}" else 0
        if depth == 0:
            return k == len(s) - 1
    return False


def _split_top_level(s: str) -> tuple[str, list[str], str]:
    """(open bracket, items, close bracket) of a tuple/interval/set "(a,b)"; brackets may be ""."""
    s = s.replace("\\{", "{").replace("\\}", "}")
    open_b = close_b = ""
    if len(s) >= 2 and s[0] in "([{" and s[-1] in ")]}" and _closes_at_end(s):
        open_b, close_b, s = s[0], s[-1], s[1:-1]
    items, depth, cur = [], 0, []
    for c in s:
        depth += 1 if c in "([{" else -1 if c in ")]}" else 0
        if c == "," and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    items.append("".join(cur))
    return open_b, items, close_b


def _strip_variable(s: str) -> str:
    """ "x=5" -> "5": a prediction may name the variable the ground truth leaves out."""
    m = re.fullmatch(r"[a-zA-Z](?:_\{?\w+\}?)?=([^=]+)", s)
    return m.group(1) if m else s


def answers_equal(pred: str, truth: str, *, rel_tol: float = 1e-4, percent: bool = True, timeout_s: float = 3.0) -> bool:
    """Whether two final answers agree: normalised string, number, then sympy (time-limited)."""
    p, t = normalize_answer(pred), normalize_answer(truth)
    if p == t:
        return True
    if not p or not t:
        return False
    if "=" not in t:
        p = _strip_variable(p)
    if "=" not in p:
        t = _strip_variable(t)
    p_open, p_items, p_close = _split_top_level(p)
    t_open, t_items, t_close = _split_top_level(t)
    if len(p_items) > 1 or len(t_items) > 1:
        if len(p_items) != len(t_items):
            return False
        if p_open and t_open and (p_open, p_close) != (t_open, t_close):
            return False  # (a, b) is not [a, b]
        return all(_atoms_equal(a, b, rel_tol, percent, timeout_s) for a, b in zip(p_items, t_items))
    return _atoms_equal(p, t, rel_tol, percent, timeout_s)


def _atoms_equal(p: str, t: str, rel_tol: float, percent: bool, timeout_s: float) -> bool:
    if p == t:
        return True
    pf, tf = _to_float(p), _to_float(t)
    if pf is not None and tf is not None:
        return numbers_equal(pf, tf, rel_tol, percent)
    ps, ts = latex_to_sympy(p), latex_to_sympy(t)
    if ps is None or ts is None:
        return False
    return run_with_timeout(_sympy_equal, (ps, ts, rel_tol), timeout_s)


# --- the registry ----------------------------------------------------------------------------

_REQUIRED = object()


@dataclass(frozen=True)
class Param:
    name: str
    type: type
    default: Any = _REQUIRED
    help: str = ""
    choices: tuple | None = None


@dataclass(frozen=True)
class RewardInfo:
    name: str
    description: str
    params: tuple[Param, ...]
    factory: Callable[..., RewardFn]


REWARDS: dict[str, RewardInfo] = {}


def register(name: str, description: str, *params: Param) -> Callable[[Callable[..., RewardFn]], Callable[..., RewardFn]]:
    """Decorator: add a reward factory (keyword arguments = params) to REWARDS."""

    def wrap(factory: Callable[..., RewardFn]) -> Callable[..., RewardFn]:
        REWARDS[name] = RewardInfo(name, description, params, factory)
        return factory

    return wrap


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
    return value


def build_reward(spec: dict, _field: str = "reward") -> RewardFn:
    """Build a RewardFn from {"name": ..., "params": {...}}; RewardSpecError names the bad field."""
    if not isinstance(spec, dict):
        raise RewardSpecError(_field, spec, 'expected a mapping {"name": ..., "params": {...}}')
    extra = set(spec) - {"name", "params"}
    if extra:
        raise RewardSpecError(f"{_field}.{sorted(extra)[0]}", spec[sorted(extra)[0]], "unknown key; expected name and params")
    name = spec.get("name")
    if name not in REWARDS:
        raise RewardSpecError(f"{_field}.name", name, f"unknown reward; known: {', '.join(REWARDS)}")
    params = spec.get("params") or {}
    if not isinstance(params, dict):
        raise RewardSpecError(f"{_field}.params", params, "expected a mapping of parameter names to values")
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
    return info.factory(**kwargs, _field=f"{_field}.params")


def _ground_truth(gt: str | None, name: str, i: int) -> str:
    if gt is None:
        raise ValueError(f"ground_truths[{i}]: the {name} reward needs a ground truth, got None")
    return gt


# --- rewards ---------------------------------------------------------------------------------

@register(
    "math_verify",
    "Math answer verifier: last \\boxed{} (else 'the answer is', else last number) against the ground "
    "truth by normalised string, number (also x100, /100) and sympy. 1.0 or 0.0.",
    Param("rel_tol", float, 1e-4, "Relative tolerance of numeric equality."),
    Param("percent", bool, True, "Also accept the ground truth x100 or /100 (percentages)."),
    Param("timeout_s", float, 3.0, "Time limit of one symbolic comparison, seconds."),
)
def math_verify(*, rel_tol: float, percent: bool, timeout_s: float, _field: str) -> RewardFn:
    if rel_tol < 0:
        raise RewardSpecError(f"{_field}.rel_tol", rel_tol, "must be >= 0")
    if timeout_s <= 0:
        raise RewardSpecError(f"{_field}.timeout_s", timeout_s, "must be > 0")

    def score(responses: list[str], ground_truths: list[str | None], prompts: list[str]) -> list[float]:
        out = []
        for i, (response, gt) in enumerate(zip(responses, ground_truths)):
            truth = _ground_truth(gt, "math_verify", i)
            truth = last_boxed(truth) or truth
            pred = extract_answer(response)
            ok = pred is not None and answers_equal(pred, truth, rel_tol=rel_tol, percent=percent, timeout_s=timeout_s)
            out.append(1.0 if ok else 0.0)
        return out

    return score


def gsm8k_number(text: str) -> float | None:
    """A GSM8K answer as a number: "$1,080.00" -> 1080.0; None if there is no number."""
    s = normalize_answer(text.replace(",", ""))
    value = _to_float(s)
    if value is None:
        m = _NUMBER.search(s)
        value = float(m.group(0)) if m else None
    return value


def gsm8k_response_answer(response: str) -> str | None:
    """The answer a response gives: its last "#### x" line, else math_verify's extraction."""
    if "####" in response:
        tail = response.rsplit("####", 1)[1].strip()
        if tail:
            return tail.split("\n", 1)[0]
    return extract_answer(response)


@register("gsm8k", "GSM8K: the response's last '#### x' (else the math answer) equals the ground truth as a number. 1.0 or 0.0.")
def gsm8k(*, _field: str) -> RewardFn:
    def score(responses: list[str], ground_truths: list[str | None], prompts: list[str]) -> list[float]:
        out = []
        for i, (response, gt) in enumerate(zip(responses, ground_truths)):
            truth = gsm8k_number(_ground_truth(gt, "gsm8k", i).rsplit("####", 1)[-1])
            answer = gsm8k_response_answer(response)
            pred = gsm8k_number(answer) if answer is not None else None
            out.append(1.0 if pred is not None and truth is not None and pred == truth else 0.0)
        return out

    return score


@register(
    "exact_match",
    "The whole response equals the ground truth. 1.0 or 0.0.",
    Param("strip", bool, True, "Strip surrounding whitespace from both."),
    Param("case_sensitive", bool, True, "Compare case-sensitively."),
)
def exact_match(*, strip: bool, case_sensitive: bool, _field: str) -> RewardFn:
    def canon(s: str) -> str:
        s = s.strip() if strip else s
        return s if case_sensitive else s.casefold()

    def score(responses: list[str], ground_truths: list[str | None], prompts: list[str]) -> list[float]:
        return [
            1.0 if canon(r) == canon(_ground_truth(gt, "exact_match", i)) else 0.0
            for i, (r, gt) in enumerate(zip(responses, ground_truths))
        ]

    return score


@register(
    "regex_match",
    "A fixed reward when the response matches a regular expression (re.search), else 0.0.",
    Param("pattern", str, help="Python regular expression."),
    Param("reward", float, 1.0, "Reward on a match."),
)
def regex_match(*, pattern: str, reward: float, _field: str) -> RewardFn:
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise RewardSpecError(f"{_field}.pattern", pattern, f"invalid regular expression: {e}") from None

    def score(responses: list[str], ground_truths: list[str | None], prompts: list[str]) -> list[float]:
        return [reward if compiled.search(r) else 0.0 for r in responses]

    return score


@register(
    "length_penalty",
    "-penalty x (length - max_len) for responses longer than max_len, else 0.0.",
    Param("max_len", int, help="Length allowed without penalty."),
    Param("penalty", float, 0.01, "Penalty per unit above max_len."),
    Param("unit", str, "chars", "Length unit.", choices=("chars", "tokens")),
    Param("tokenizer", str, "", "Local Hugging Face tokenizer directory; required with unit=tokens."),
)
def length_penalty(*, max_len: int, penalty: float, unit: str, tokenizer: str, _field: str) -> RewardFn:
    if max_len < 0:
        raise RewardSpecError(f"{_field}.max_len", max_len, "must be >= 0")
    if penalty < 0:
        raise RewardSpecError(f"{_field}.penalty", penalty, "must be >= 0 (it is subtracted)")
    if unit == "tokens":
        if not tokenizer or not Path(tokenizer).is_dir():
            raise RewardSpecError(f"{_field}.tokenizer", tokenizer, "unit=tokens needs a local tokenizer directory")
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer)

        def length(text: str) -> int:
            return len(tok.encode(text, add_special_tokens=False))
    else:
        length = len

    def score(responses: list[str], ground_truths: list[str | None], prompts: list[str]) -> list[float]:
        return [-penalty * max(0, length(r) - max_len) for r in responses]

    return score


@register(
    "weighted_sum",
    "Sum of other rewards, each times its weight.",
    Param("terms", list, help='List of {"name", "weight", "params"}.'),
)
def weighted_sum(*, terms: list, _field: str) -> RewardFn:
    if not terms:
        raise RewardSpecError(f"{_field}.terms", terms, "needs at least one term")
    parts: list[tuple[float, RewardFn]] = []
    for k, term in enumerate(terms):
        field = f"{_field}.terms[{k}]"
        if not isinstance(term, dict):
            raise RewardSpecError(field, term, 'expected {"name", "weight", "params"}')
        weight = term.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise RewardSpecError(f"{field}.weight", weight, "expected a number")
        parts.append((float(weight), build_reward({k: v for k, v in term.items() if k != "weight"}, field)))

    def score(responses: list[str], ground_truths: list[str | None], prompts: list[str]) -> list[float]:
        total = [0.0] * len(responses)
        for weight, fn in parts:
            total = [t + weight * s for t, s in zip(total, fn(responses, ground_truths, prompts))]
        return total

    return score


@register(
    "reward_model",
    "Score of a local Hugging Face sequence-classification model on (prompt, response).",
    Param("path", str, help="Local model directory (AutoModelForSequenceClassification + AutoTokenizer)."),
    Param("label_index", int, 0, "Index of the output logit used as the score."),
    Param("transform", str, "logit", "Raw logit or its sigmoid.", choices=("logit", "sigmoid")),
    Param("batch_size", int, 8, "Responses per forward pass."),
    Param("max_length", int, 2048, "Truncate inputs to this many tokens."),
    Param("device", str, "cpu", "torch device of the reward model."),
)
def reward_model(
    *, path: str, label_index: int, transform: str, batch_size: int, max_length: int, device: str, _field: str
) -> RewardFn:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not Path(path).is_dir():
        raise RewardSpecError(f"{_field}.path", path, "not a local model directory")
    if batch_size < 1:
        raise RewardSpecError(f"{_field}.batch_size", batch_size, "must be >= 1")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
    if not 0 <= label_index < model.config.num_labels:
        raise RewardSpecError(f"{_field}.label_index", label_index, f"model has {model.config.num_labels} labels")
    if tokenizer.pad_token is None:  # batching needs a pad token; decoder RMs often lack one
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id

    def encode(prompts: list[str], responses: list[str]) -> dict:
        kw = dict(padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        if tokenizer.chat_template:  # chat RMs were trained on templated conversations
            texts = [
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False
                )
                for p, r in zip(prompts, responses)
            ]
            return tokenizer(texts, **kw).to(device)
        return tokenizer(prompts, responses, **kw).to(device)

    @torch.no_grad()
    def score(responses: list[str], ground_truths: list[str | None], prompts: list[str]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(responses), batch_size):
            logits = model(**encode(prompts[i : i + batch_size], responses[i : i + batch_size])).logits
            s = logits[:, label_index].float()
            out += (torch.sigmoid(s) if transform == "sigmoid" else s).tolist()
        return out

    return score
