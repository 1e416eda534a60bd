"""Reward configs: gft_core reward specs stored as data, versioned, tested on real samples.

A spec is `{"name": <registry name>, "params": {...}}` (several rewards combine through
`weighted_sum`). Nothing typed in a browser is ever executed: a spec only selects registered
functions and their typed parameters, and build_reward checks it.
"""
from __future__ import annotations

import copy
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction

from gft_core.rewards import REWARDS, RewardSpecError, build_reward, describe_rewards, needs_ground_truth
from webapp import dispatch
from webapp.resources import services as resources
from webapp.resources.services import InUseError, archive, delete, used_by, versions

from .models import RewardConfig, RewardTest

__all__ = [
    "RewardConfigError", "InUseError", "check_spec", "create_reward_config", "new_reward_version", "archive",
    "delete", "used_by", "versions", "start_reward_test", "describe", "spec_from_terms", "terms_from_spec",
]

# Parameters that name a local path: they must lie below settings.MODEL_ROOTS.
PATH_PARAMS = {("reward_model", "path"), ("length_penalty", "tokenizer")}
# Rewards whose construction loads a model: checked by parameter types here, built in the worker.
HEAVY_REWARDS = {"reward_model"}
MAX_SAMPLE = 1000
# Containers (mappings, lists) nested in a spec: a nested weighted_sum takes 3 levels per sum.
MAX_SPEC_DEPTH = 32


class RewardConfigError(ValueError):
    """The config is refused; the message is meant for the user."""


def _depth(value) -> int:
    """How deeply mappings and lists nest in `value`, counted without recursion (a spec that
    nests too deeply must be refused, not crash the checker)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, (list, tuple)):
            children = v
        else:
            continue
        deepest = max(deepest, d)
        if deepest > MAX_SPEC_DEPTH:
            break
        stack += [(c, d + 1) for c in children]
    return deepest


def _terms(spec) -> list:
    """Every leaf spec of a (possibly nested) weighted_sum; a malformed sum is its own leaf (and
    build_reward names what is wrong with it)."""
    params = spec.get("params") if isinstance(spec, dict) and spec.get("name") == "weighted_sum" else None
    terms = params.get("terms") if isinstance(params, dict) else None
    if not isinstance(terms, list):
        return [spec]
    out = []
    for term in terms:
        out += _terms(term)
    return out


def _params(leaf: dict) -> dict:
    params = leaf.get("params")
    return params if isinstance(params, dict) else {}


def _check_types(spec: dict) -> None:
    """Check names, required parameters and their types against describe_rewards(), without building."""
    described = {r["name"]: r for r in describe_rewards()}
    name = spec.get("name")
    if name not in described:
        raise RewardSpecError("name", name, f"unknown reward; known: {', '.join(described)}")
    params = _params(spec)
    known = {p["name"]: p for p in described[name]["params"]}
    for key, value in params.items():
        if key not in known:
            raise RewardSpecError(f"params.{key}", value, f"unknown parameter of {name}")
        tname = known[key]["type"]
        ok = {"int": isinstance(value, int) and not isinstance(value, bool),
              "float": isinstance(value, (int, float)) and not isinstance(value, bool),
              "bool": isinstance(value, bool), "str": isinstance(value, str)}.get(tname, True)
        if not ok:
            raise RewardSpecError(f"params.{key}", value, f"expected {tname}")
    for p in known.values():
        if p["required"] and p["name"] not in params:
            raise RewardSpecError(f"params.{p['name']}", None, f"required parameter of {name} is missing")
    info = REWARDS[name]
    for p in info.params:
        if p.choices and p.name in params and params[p.name] not in p.choices:
            raise RewardSpecError(f"params.{p.name}", params[p.name], f"expected one of {', '.join(map(str, p.choices))}")


def check_spec(spec) -> dict:
    """A validated copy of `spec`, or RewardConfigError naming the bad field.

    Paths in parameters must lie below MODEL_ROOTS (a config must not make the worker read
    arbitrary files); rewards that load a model are type-checked here and built in the worker.
    Whatever the spec holds (a huge regex repeat, params of the wrong type, deep nesting), the
    answer is RewardConfigError, never another exception.
    """
    if not isinstance(spec, dict):
        raise RewardConfigError('A reward spec is a mapping {"name": ..., "params": {...}}.')
    if _depth(spec) > MAX_SPEC_DEPTH:
        raise RewardConfigError(f"Invalid reward: the spec nests deeper than {MAX_SPEC_DEPTH} levels.")
    spec = copy.deepcopy(spec)
    spec.setdefault("params", {})
    try:
        leaves = _terms(spec)
        for leaf in leaves:
            if not isinstance(leaf, dict):
                raise RewardSpecError("terms", leaf, 'expected {"name", "weight", "params"}')
            for (rname, pname) in PATH_PARAMS:
                value = _params(leaf).get(pname)
                if leaf.get("name") == rname and isinstance(value, str) and value:
                    path = Path(value).resolve()
                    if not any(path.is_relative_to(Path(r).resolve()) for r in settings.MODEL_ROOTS):
                        raise RewardSpecError(f"{rname}.params.{pname}", value, "must be a directory under MODEL_ROOTS")
        if any(leaf.get("name") in HEAVY_REWARDS for leaf in leaves):
            for leaf in leaves:
                _check_types({"name": leaf.get("name"), "params": _params(leaf)})
        else:
            build_reward(spec)
    except RecursionError:
        raise RewardConfigError("Invalid reward: the spec nests too deeply.") from None
    except (ValueError, TypeError, OverflowError) as e:  # RewardSpecError is a ValueError naming the field
        raise RewardConfigError(f"Invalid reward: {e}") from None
    return spec


def spec_from_terms(terms: list[dict]) -> dict:
    """One term of weight 1 is stored as itself; several as a weighted_sum."""
    if len(terms) == 1 and float(terms[0].get("weight", 1.0)) == 1.0:
        return {"name": terms[0]["name"], "params": terms[0].get("params", {})}
    return {"name": "weighted_sum", "params": {"terms": [
        {"name": t["name"], "weight": float(t.get("weight", 1.0)), "params": t.get("params", {})} for t in terms
    ]}}


def terms_from_spec(spec: dict) -> list[dict] | None:
    """The inverse of spec_from_terms for the form; None if the spec is nested deeper than a form shows."""
    if spec.get("name") == "weighted_sum":
        terms = (spec.get("params") or {}).get("terms") or []
        if any(t.get("name") == "weighted_sum" for t in terms):
            return None
        return [{"name": t["name"], "weight": t.get("weight", 1.0), "params": t.get("params") or {}} for t in terms]
    return [{"name": spec["name"], "weight": 1.0, "params": spec.get("params") or {}}]


def describe(spec: dict) -> str:
    """A one-line human reading of a spec: '1.0 x math_verify + 0.5 x length_penalty(max_len=400)'."""
    def one(s: dict) -> str:
        # Postgres jsonb reorders keys; show parameters in the registry's order.
        info = REWARDS.get(s.get("name"))
        order = [p.name for p in info.params] if info else []
        items = sorted((s.get("params") or {}).items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
        params = ", ".join(f"{k}={v!r}" for k, v in items)
        return f"{s.get('name')}({params})" if params else str(s.get("name"))

    if spec.get("name") == "weighted_sum":
        return " + ".join(f"{t.get('weight', 1.0):g} × {one(t)}" for t in spec["params"].get("terms", []))
    return one(spec)


def create_reward_config(team, user, *, name: str, spec: dict, description: str = "") -> RewardConfig:
    """Version 1 of a new reward config of `team`; RewardConfigError if the spec or name is refused."""
    name = (name or "").strip()
    if not name:
        raise RewardConfigError("Give the reward config a name.")
    if len(name) > RewardConfig._meta.get_field("name").max_length:
        raise RewardConfigError(f"The name is too long (at most {RewardConfig._meta.get_field('name').max_length} characters).")
    if RewardConfig.objects.filter(team=team, name=name).exists():
        raise RewardConfigError(f"Your team already has a reward config named {name!r}; edit it to make a new version, or pick another name.")
    spec = check_spec(spec)
    try:
        with transaction.atomic():
            return RewardConfig.objects.create(team=team, name=name, version=1, spec=spec,
                                               description=description or "", created_by=user)
    except IntegrityError:
        raise RewardConfigError(f"A reward config named {name!r} already exists.") from None


def new_reward_version(config: RewardConfig, user, *, spec: dict | None = None, description: str | None = None) -> RewardConfig:
    """Version + 1 of `config` (previous -> config); the old version stays as runs used it."""
    spec = check_spec(spec if spec is not None else config.spec)
    for _ in range(3):  # two editors at once: the loser retries with the next number
        version = resources.next_version(RewardConfig, config.team, config.name)
        try:
            with transaction.atomic():
                return RewardConfig.objects.create(
                    team=config.team, name=config.name, version=version, previous=config, spec=spec,
                    description=config.description if description is None else description, created_by=user,
                )
        except IntegrityError:
            continue
    raise RewardConfigError("Could not create the new version; try again.")


def start_reward_test(config: RewardConfig, dataset, user, *, sample_size: int = 100, seed: int = 0,
                      response: str = "", response_ground_truth: str = "") -> RewardTest:
    """Queue a "test this reward" job on the default queue: scores of the dataset's own answers.

    A task rather than a request: a reward may load a model (reward_model) or spend seconds per
    answer in time-limited sympy checks (forked processes), which a web worker must not do.
    """
    if dataset.team_id != config.team_id:
        raise RewardConfigError("The dataset belongs to another team.")
    if not 1 <= sample_size <= MAX_SAMPLE:
        raise RewardConfigError(f"Sample between 1 and {MAX_SAMPLE} rows.")
    if (response or "").strip() and not (response_ground_truth or "").strip() and needs_ground_truth(config.spec):
        raise RewardConfigError("response_ground_truth: the pasted response needs its own ground truth "
                                "(this reward compares the answer with one).")
    test = RewardTest.objects.create(reward_config=config, dataset=dataset, sample_size=sample_size, seed=seed,
                                     response=response or "", response_ground_truth=response_ground_truth or "",
                                     created_by=user)

    def not_queued(exc: Exception) -> None:  # broker down: say so instead of leaving it queued forever
        RewardTest.objects.filter(pk=test.pk).update(status=RewardTest.Status.FAILED, error=f"could not queue: {exc}")

    dispatch.send(dispatch.TEST_REWARD, [test.pk], on_error=not_queued)
    return test
