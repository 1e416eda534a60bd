"""The second checker: Hugging Face's Math-Verify library (`math-verify`), for disagreement counts.

Our math_verify reward stays the verdict of an evaluation; this one only tells how many answers a
second, independent checker judges differently (evaluation noise a team should see before trusting
a 1-point gain). It runs like the rewards do, in a forked child under a per-response wall-clock
budget (gft_core.scoring.Scorer), so a pathological answer cannot hang an evaluation; Math-Verify's
own signal-based timeouts are switched off (our budget bounds it instead).
"""

from __future__ import annotations

import functools
from typing import Any

from gft_core.scoring import Scorer

# What hf_verdict returns; a response over the budget scores 0.0 in the Scorer: "no verdict".
CORRECT, WRONG, NO_VERDICT = 1.0, -1.0, 0.0


@functools.cache
def _math_verify() -> Any:
    """The library, imported and warmed up once in the caller before a scoring child is forked
    (the import and its first parse, which builds the ANTLR/regex machinery, take ~1 s): every
    child inherits it ready, so no response's budget, nor each evaluation, pays for it."""
    import logging

    import math_verify

    # It warns on every call that its own timeouts are off: they are, on purpose (see above).
    for module in ("grader", "parser"):
        logging.getLogger(f"math_verify.{module}").setLevel(logging.ERROR)
    gold = math_verify.parse("\\boxed{\\frac{1}{2}}", parsing_timeout=None)
    math_verify.verify(gold, math_verify.parse("so $x = 0.5$", parsing_timeout=None), timeout_seconds=None)
    return math_verify


def hf_verdict(response: str, ground_truth: str | None, prompt: str) -> float:
    """CORRECT or WRONG by Math-Verify: the ground truth is parsed as if boxed, the response with the
    library's default extraction (LaTeX and plain expressions); NO_VERDICT if it cannot tell."""
    if ground_truth is None:
        return NO_VERDICT
    mv = _math_verify()
    try:
        gold = mv.parse("\\boxed{" + ground_truth + "}", parsing_timeout=None)
        pred = mv.parse(response, parsing_timeout=None)
        if not gold:
            return NO_VERDICT
        return CORRECT if pred and mv.verify(gold, pred, timeout_seconds=None) else WRONG
    except Exception:  # noqa: BLE001 - the second opinion never stops an evaluation
        return NO_VERDICT


class HFChecker:
    """verdicts(responses, ground_truths, prompts) -> list of CORRECT / WRONG / NO_VERDICT."""

    def __init__(self, budget_s: float):
        _math_verify()
        self.scorer = Scorer(hf_verdict, budget_s)
        self.timeouts = 0

    def __call__(self, responses: list[str], ground_truths: list[str | None], prompts: list[str]) -> list[float]:
        scores, timeouts = self.scorer(responses, ground_truths, prompts)
        self.timeouts += timeouts
        return scores

    def close(self) -> None:
        self.scorer.close()
