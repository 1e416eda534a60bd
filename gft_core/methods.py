"""The one method table: what GFT and each baseline trains on and with which loss.

Every per-method decision of the library (which group sources take part, the advantage and
coefficient the loss sees, the loss function, GRPO's old/reference log-probabilities, which
settings matter, which charts a run page shows) is read from a `Method` here. Adding an
ablation is one entry in METHODS. See docs/GFT.md sections 2-8 for the methods themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from gft_core.errors import ConfigError

SOURCES: tuple[str, ...] = ("expert", "teacher", "self")  # the group sources, in group order
ADVANTAGES: tuple[str, ...] = ("group", "one", "group_self")
COEFFICIENTS: tuple[str, ...] = ("dcr", "prob", "one")
LOSSES: tuple[str, ...] = ("gft", "sft", "dft", "grpo")


@dataclass(frozen=True)
class Method:
    """One training method.

    advantage: "group" = the GAL advantage for every response; "one" = A = 1 (SFT-style);
    "group_self" = GAL for self samples, 1 for off-policy ones (gft_no_gal).
    coefficient: "dcr" = C_t rectified with tau; "prob" = C_t = pi_t (DFT); "one" = C_t = 1.
    loss: the losses.py function the loss is computed with.
    min_self: the fewest self samples per prompt the method accepts (GRPO needs 2 for a group).
    """

    name: str
    label: str
    sources: tuple[str, ...]
    advantage: str
    coefficient: str
    loss: str
    min_self: int = 0

    def __post_init__(self) -> None:
        if not self.sources or tuple(s for s in SOURCES if s in self.sources) != self.sources:
            raise ValueError(f"{self.name}: sources must be a non-empty ordered subset of {SOURCES}")
        for attr, allowed in (("advantage", ADVANTAGES), ("coefficient", COEFFICIENTS), ("loss", LOSSES)):
            if getattr(self, attr) not in allowed:
                raise ValueError(f"{self.name}: {attr} must be one of {', '.join(allowed)}")

    @property
    def uses_tau(self) -> bool:
        return self.coefficient == "dcr"

    @property
    def uses_old_logprobs(self) -> bool:
        """GRPO's clipped ratio needs log pi_old of the sampling policy (and pi_ref for its KL)."""
        return self.loss == "grpo"

    @property
    def charts(self) -> frozenset[str]:
        """The chart groups a run page shows for this method."""
        out = set()
        if self.advantage != "one":
            out.add("advantages")
        if self.coefficient != "one":
            out.add("rectification")
        return frozenset(out)

    def coefficient_tau(self, tau: float) -> float | None:
        """The threshold of C_t = stopgrad(pi_t) if pi_t < threshold else 1; None when C_t = 1.

        DFT's C_t = pi_t is the same rule with threshold 1 (pi_t <= 1 always)."""
        return {"dcr": tau, "prob": 1.0, "one": None}[self.coefficient]

    def loss_advantage(self, advantage: float, source: str) -> float:
        """The advantage the loss uses for one response of `source`, given its group advantage."""
        if self.advantage == "one" or (self.advantage == "group_self" and source != "self"):
            return 1.0
        return advantage


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("gft", "GFT (group advantage + dynamic coefficient rectification)", SOURCES, "group", "dcr", "gft"),
    Method("sft", "SFT (expert answers only)", ("expert",), "one", "one", "sft"),
    Method("sft_mix", "SFT on expert + teacher answers", ("expert", "teacher"), "one", "one", "sft"),
    Method("dft", "DFT (token-probability weighted SFT)", ("expert",), "one", "prob", "dft"),
    Method("grpo", "GRPO (self samples only)", ("self",), "group", "one", "grpo", min_self=2),
    Method("gft_no_dcr", "GFT without DCR (ablation)", SOURCES, "group", "one", "gft"),
    Method("gft_no_gal", "GFT without group advantage (ablation)", SOURCES, "group_self", "dcr", "gft"),
)}


class MethodNames(tuple):
    """The names of METHODS as a tuple (for forms and APIs), whose `in` asks the table itself: a
    method registered after import (a test's temporary ablation) is a valid choice too."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in METHODS


def get_method(name: str) -> Method:
    """The Method called `name`; ConfigError("method", ...) if there is none."""
    method = METHODS.get(name) if isinstance(name, str) else None
    if method is None:
        raise ConfigError("method", name, f"must be one of {', '.join(METHODS)}")
    return method
