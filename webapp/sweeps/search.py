"""The Optuna side of a sweep: its study lives in the project's own Postgres (RDBStorage, a
SQLAlchemy URL built from Django's DATABASES), one study per sweep, driven by ask-and-tell.

Samplers are not stored with a study, so each ask rebuilds the sweep's sampler; seeded ones get
`seed + trials asked so far`, or every rebuilt RandomSampler would propose the same point again.
"""
from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import optuna
from django.db import connections
from sqlalchemy.pool import NullPool
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from .spaces import Param

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)
_storages: dict[str, optuna.storages.RDBStorage] = {}


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler whose after_trial does not call study.stop(): that only works inside
    study.optimize() and raises in ask-and-tell; the sweep stops asking at the grid's size itself."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def database_url() -> str:
    """postgresql+psycopg:// URL of Django's default database (the test database under pytest)."""
    db = connections["default"].settings_dict
    auth = quote(db["USER"] or "", safe="") + (f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else "")
    host = db.get("HOST") or "127.0.0.1"
    if host.startswith("/"):  # a Unix socket directory
        return f"postgresql+psycopg://{auth}@/{quote(db['NAME'])}?host={quote(host)}"
    return f"postgresql+psycopg://{auth}@{host}:{db.get('PORT') or 5432}/{quote(db['NAME'])}"


def storage() -> optuna.storages.RDBStorage:
    """One RDBStorage per process and database (it creates Optuna's tables the first time)."""
    url = database_url()
    if url not in _storages:
        # No pool: a connection per call (local, milliseconds; a few calls per trial and flush) holds
        # nothing open between them, across forked workers or a test database being dropped.
        _storages[url] = optuna.storages.RDBStorage(url=url, engine_kwargs={"poolclass": NullPool})
    return _storages[url]


def distributions(params: list[Param]) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for p in params:
        if p.kind == "values":
            out[p.name] = CategoricalDistribution(p.values)
        elif p.kind == "int":
            out[p.name] = IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            out[p.name] = FloatDistribution(float(p.low), float(p.high), log=p.log)
    return out


def sampler(strategy: str, params: list[Param], seed: int, asked: int, max_runs: int) -> optuna.samplers.BaseSampler:
    if strategy == "grid":
        return _AskTellGridSampler({p.name: p.values for p in params}, seed=seed)
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed + asked)
    # TPE models the finished trials after a few random ones (a quarter of the budget, 2..10)
    return optuna.samplers.TPESampler(seed=seed + asked, n_startup_trials=max(2, min(10, max_runs // 4)))


def pruner(spec: dict[str, Any]) -> optuna.pruners.BasePruner:
    name = (spec or {}).get("name", "none")
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.get("startup_trials", 2),
                                           n_warmup_steps=spec.get("warmup_steps", 0))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, spec.get("warmup_steps", 0)))
    return optuna.pruners.NopPruner()


def create(name: str, direction: str, strategy: str, params: list[Param], seed: int, max_runs: int,
           pruner_spec: dict) -> optuna.Study:
    return optuna.create_study(storage=storage(), study_name=name, direction="maximize" if direction == "max" else "minimize",
                               sampler=sampler(strategy, params, seed, 0, max_runs), pruner=pruner(pruner_spec))


def load(sweep) -> optuna.Study:
    """The study of `sweep` with its sampler and pruner (rebuilt: they are not stored)."""
    params = [Param.from_json(n, d) for n, d in sweep.parameters.items()]
    return optuna.load_study(study_name=sweep.study_name, storage=storage(),
                             sampler=sampler(sweep.strategy, params, sweep.seed, sweep.asked, sweep.max_runs),
                             pruner=pruner(sweep.pruner))


def delete(name: str) -> None:
    try:
        optuna.delete_study(study_name=name, storage=storage())
    except KeyError:
        pass
