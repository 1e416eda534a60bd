"""The built-in GFT rules: on by default for every team, each a row the team may change, mute or
disable (created the first time the team's rules are read: ensure_builtin_rules)."""
from __future__ import annotations

from django.db import IntegrityError, transaction

from .models import AlertRule

# key -> fields. Thresholds (GFT.md, docs/INTERFACES.md metric names):
BUILTIN_RULES: dict[str, dict] = {
    # Entropy far below where the run started: the policy collapsed onto few tokens (a too-high lr,
    # DCR off). Relative, since healthy entropy depends on the model and vocabulary.
    "entropy_collapse": dict(name="Entropy collapse", metric="policy/entropy", condition="below", window=10,
                             aggregation="mean", threshold=0.3, baseline="first_window", severity="critical"),
    # Every group rewarded alike: zero advantages, so GFT gets no learning signal from them.
    "no_learning_signal": dict(name="No learning signal", metric="adv/zero_var_groups", condition="above",
                               window=20, aggregation="mean", threshold=0.8, severity="warning"),
    # rectified_frac = share of tokens with pi < tau: ~1 means tau rectifies everything (too high),
    # ~0 means it rectifies nothing (too low); either way DCR does nothing.
    "dcr_inert_high": dict(name="DCR inert: tau too high", metric="dcr/rectified_frac", condition="above", window=20,
                           aggregation="mean", threshold=0.95, severity="warning"),
    "dcr_inert_low": dict(name="DCR inert: tau too low", metric="dcr/rectified_frac", condition="below", window=20,
                          aggregation="mean", threshold=0.01, severity="warning"),
    "grad_spike": dict(name="Gradient spike", metric="grad_norm", condition="above", window=1, aggregation="last",
                       threshold=10.0, baseline="running_median", severity="warning"),
    # Mean self-sample reward over 50 steps moves by less than 0.01 from the 50 before.
    "reward_plateau": dict(name="Reward plateau (self samples)", metric="reward/self", condition="change_below",
                           window=50, aggregation="mean", threshold=0.01, severity="info"),
    "nonfinite_loss": dict(name="Non-finite loss", metric="loss", condition="nonfinite", window=1,
                           severity="critical"),
    # No new step for 10x the median step time (and at least STALL_MIN_S: housekeeping).
    "stalled": dict(name="Run stalled", metric="", condition="stalled", threshold=10.0, severity="critical"),
    "run_failed": dict(name="Run failed", metric="", condition="failed", severity="critical"),
}


def ensure_builtin_rules(team) -> None:
    """Create the built-in rules the team does not have yet (idempotent, race-safe)."""
    have = set(AlertRule.objects.filter(team=team).exclude(builtin="").values_list("builtin", flat=True))
    for key, fields in BUILTIN_RULES.items():
        if key in have:
            continue
        try:
            with transaction.atomic():
                AlertRule.objects.create(team=team, builtin=key, **fields)
        except IntegrityError:  # another process created it meanwhile
            pass
