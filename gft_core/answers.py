"""Final answers of math responses: extracting them and deciding whether two agree.

Extraction follows the paper: the last \\boxed{...} (else the text after "the answer is", else
the last number); a response may also end with a GSM8K-style "#### x" line, which comes right after
\\boxed. Two answers agree by normalised string,
by number (relative tolerance, also x100 and /100 for percentages), then symbolically with sympy.

Nothing here bounds its own time: sympy can run for very long on a pathological answer
(10^{10^{10}}). The rewards (gft_core.rewards) call these functions under their wall-clock budget.
"""

from __future__ import annotations

import cmath
import functools
import math
import re


# --- extraction ------------------------------------------------------------------------------

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


NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?|-?\.\d+")
# A thousands separator written in LaTeX between digit groups: "1{,}000" (the MATH dataset's own
# spelling), "1\\,000" (a thin space), "1\\!000"; each becomes a plain "," ("1,000").
_LATEX_THOUSANDS = re.compile(r"(?<=\d)(?:\{,\}|\\[,!]|\\ )(?=\d{3}(?!\d))")


def plain_thousands(text: str) -> str:
    """Spell LaTeX thousands separators as plain commas: "1{,}000{,}000" -> "1,000,000"."""
    return _LATEX_THOUSANDS.sub(",", text) if "\\" in text or "{,}" in text else text


# Words between "the answer is" and the answer itself: "the answer is therefore 3."
_FILLER = re.compile(r"^(?:(?:therefore|thus|hence|then|so|simply|just|indeed|clearly|exactly|actually|now)\b[\s,:]*)+",
                     re.IGNORECASE)


def final_line_answer(text: str) -> str | None:
    """"x" when the text's last line is GSM8K's "#### x" (None otherwise: a "#### Step 1" heading
    earlier in a response is not its answer)."""
    if "####" not in text:
        return None
    last = text.rstrip().rsplit("\n", 1)[-1].strip()
    return last[4:].strip() or None if last.startswith("####") else None


def extract_answer(text: str) -> str | None:
    """The final answer of a response: last \\boxed{}, else a final "#### x" line, else after "the
    answer is" (filler words and a closing full stop dropped), else the last number."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    hashes = final_line_answer(text)
    if hashes is not None:
        return hashes
    said = list(re.finditer(r"the answer is[:\s]*", text, flags=re.IGNORECASE))
    if said:
        rest = _FILLER.sub("", text[said[-1].end() :].split("\n", 1)[0].strip())
        inline = re.match(r"\$+([^$]+)\$", rest)  # "the answer is $12$ because ..." -> "12"
        if inline:
            return inline.group(1).strip()
        rest = re.sub(r"(?<!\.)\.$", "", rest).strip()  # "... is 3." -> "3" (not "3..")
        if rest:
            return rest
    numbers = NUMBER.findall(plain_thousands(text))
    return numbers[-1].replace(",", "") if numbers else None


# --- normalisation and comparison ------------------------------------------------------------

_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")


def normalize_answer(s: str) -> str:
    """Canonical string form of a LaTeX answer (in the spirit of the MATH grader's strip_string)."""
    s = plain_thousands(s.strip().replace("\n", ""))
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


def to_float(s: str) -> float | None:
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
        elif c.isascii() and c.isalpha():
            word = re.match(r"[a-zA-Z]+", s[i:]).group(0)
            if len(word) > 1 and word not in _SYMPY_NAMES:
                return None  # multi-letter words ("Evelyn") are text, not algebra
            out.append(" I " if word == "i" else f" {word} ")
            i += len(word)
        elif c in "0123456789+-*/(). ":  # ASCII digits only: sympy's parser refuses "۰" (U+06F0)
            out.append(c)
            i += 1
        else:  # "}", "=", ",", "<", "_", "!", ... : not a single expression we handle
            return None
    expr = "".join(out)
    return expr if expr.strip() else None


@functools.cache
def load_sympy():
    """(sympy, its parser, the parser's transformations), imported on first use: reading a dataset
    needs last_boxed only, and sympy takes ~1 s and ~60 MB to import."""
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    return sympy, parse_expr, standard_transformations + (implicit_multiplication_application, convert_xor)


def _sympy_equal(a: str, b: str, rel_tol: float) -> bool:
    """Symbolic (or, for constants, numeric) equality of two sympy expression strings."""
    sympy, parse_expr, transformations = load_sympy()
    x = parse_expr(a, transformations=transformations)
    y = parse_expr(b, transformations=transformations)
    if sympy.simplify(x - y) == 0:
        return True
    if not x.free_symbols and not y.free_symbols:
        xv, yv = complex(sympy.N(x)), complex(sympy.N(y))
        return cmath_isclose(xv, yv, rel_tol)
    return False


def cmath_isclose(x: complex, y: complex, rel_tol: float) -> bool:
    """Numeric closeness; a non-finite value (oo, or a power too large for a float) equals only itself:
    inf - 3 <= rel_tol * inf would call every number close to infinity."""
    if not (cmath.isfinite(x) and cmath.isfinite(y)):
        return x == y
    return abs(x - y) <= max(rel_tol * max(abs(x), abs(y)), 1e-12)


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


def answers_equal(pred: str, truth: str, *, rel_tol: float = 1e-4, percent: bool = True) -> bool:
    """Whether two final answers agree: normalised string, number, then sympy (unbounded time:
    callers that score untrusted text run this under a budget, as the rewards do)."""
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
        return all(_atoms_equal(a, b, rel_tol, percent) for a, b in zip(p_items, t_items))
    return _atoms_equal(p, t, rel_tol, percent)


def _atoms_equal(p: str, t: str, rel_tol: float, percent: bool) -> bool:
    if p == t:
        return True
    pf, tf = to_float(p), to_float(t)
    if pf is not None and tf is not None:
        return numbers_equal(pf, tf, rel_tol, percent)
    ps, ts = latex_to_sympy(p), latex_to_sympy(t)
    if ps is None or ts is None:
        return False
    try:
        return _sympy_equal(ps, ts, rel_tol)
    except Exception:  # noqa: BLE001 - "1+", "(1": text sympy cannot parse or compare is not equal
        return False


# --- GSM8K -----------------------------------------------------------------------------------

def gsm8k_number(text: str) -> float | None:
    """A GSM8K answer as a number: "$1,080.00" -> 1080.0; None if there is no number."""
    s = normalize_answer(plain_thousands(text).replace(",", ""))
    value = to_float(s)
    if value is None:
        m = NUMBER.search(s)
        value = float(m.group(0)) if m else None
    return value


def gsm8k_response_answer(response: str) -> str | None:
    """The answer a response gives: its last "#### x" line, else the math extraction."""
    if "####" in response:
        tail = response.rsplit("####", 1)[1].strip()
        if tail:
            return tail.split("\n", 1)[0]
    return extract_answer(response)
