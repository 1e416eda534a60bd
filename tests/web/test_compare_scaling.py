"""Compare that scales (issue 19, item 4): the config diff without noise (no output paths, each field
once, lineage as the model), runs that differ only in seed grouped, the run picker, the pipeline's
"compare all stages" (tests/web/test_pipelines.py) and the dashboards sharing it."""
from __future__ import annotations

import pytest

from webapp.runs.models import Run

pytestmark = pytest.mark.django_db


def make_run(team, user, name: str, seed: int, tau: float = 0.3, **fields) -> Run:
    config = {"method": "gft", "tau": tau, "lr": 1e-4, "seed": seed, "model_path": "/models/m",
              "output_dir": f"/artifacts/runs/{name}", "data": {"path": "/d/train.jsonl", "eval_path": None,
                                                               "eval_fraction": 0.0, "mapping": {"prompt": "q"}},
              "reward": {"name": "math_verify", "params": {}}}
    return Run.objects.create(team=team, name=name, method="gft", created_by=user, status=Run.Status.SUCCEEDED,
                              config=config, **fields)


def test_diff_without_noise_seed_groups_and_picker(auth_client, team, user):
    a = make_run(team, user, "tau0.3 s0", seed=0)
    b = make_run(team, user, "tau0.3 s1", seed=1)
    c = make_run(team, user, "tau0.7 s0", seed=0, tau=0.7, init_from_run=a, init_from_step=2)
    d = make_run(team, user, "not shown", seed=3)
    resp = auth_client.get(f"/compare/?runs={a.pk},{b.pk}&pick={c.pk}")
    assert resp.status_code == 200
    ctx = resp.context
    assert [r.pk for r in ctx["runs"]] == [a.pk, b.pk, c.pk]  # ?runs= then the picker's additions
    diff = dict(ctx["diff"])
    assert diff["seed"] == [0, 1, 0] and diff["tau"] == [0.3, 0.3, 0.7]
    assert diff["model"] == ["/models/m", "/models/m", f"run #{a.pk} step 2"]
    assert not [k for k in diff if "output_dir" in k or k.startswith(("data.path", "data.mapping", "reward"))]
    assert len(diff) == len(set(diff)) == 3  # each field once: no "(method)" beside "method"

    groups = ctx["page"]["groups"]
    assert [g["runs"] for g in groups] == [[a.pk, b.pk], [c.pk]]
    assert groups[0]["label"] == f"#{a.pk} +1 seeds" and ctx["seed_groups"] == 1
    body = resp.content.decode()
    assert 'name="groupseeds"' in body and 'value="relative"' in body
    assert [r.pk for r in ctx["picker"]] == [d.pk]  # offered: the team's runs not shown yet
    assert f'<option value="{d.pk}">' in body
