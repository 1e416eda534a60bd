"""The `gft` client in a subprocess against the ASGI server (uvicorn) and a real worker."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import tarfile

import pytest
import yaml

from tests.conftest import subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)


def gft(*args: str, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "client", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cli_login_submit_follow_list_compare_export(celery_worker, live_server_url, api_token, launch_inputs, tmp_path):
    env = subprocess_env(XDG_CONFIG_HOME=str(tmp_path / "config"))
    env.pop("GFT_URL", None)
    env.pop("GFT_TOKEN", None)
    login = gft("login", "--url", live_server_url, "--token", api_token, env=env, cwd=tmp_path)
    assert login.returncode == 0, login.stderr
    assert "teams: Alpha" in login.stdout
    stored = json.loads((tmp_path / "config" / "gft" / "config.json").read_text())
    assert stored == {"url": live_server_url, "token": api_token}

    (tmp_path / "run.yaml").write_text(yaml.safe_dump({**launch_inputs, "name": "from-cli", "max_steps": 3}))
    submit = gft("runs", "submit", "run.yaml", env=env, cwd=tmp_path)
    assert submit.returncode == 0, submit.stderr
    run_id = int(submit.stdout.split("#")[1].split()[0])

    follow = gft("runs", "follow", str(run_id), "--interval", "0.5", env=env, cwd=tmp_path)
    assert follow.returncode == 0, follow.stdout + follow.stderr + celery_worker.log()[-3000:]
    assert f"Run #{run_id} succeeded" in follow.stdout and "3/3" in follow.stdout and "loss=" in follow.stdout

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**launch_inputs, "tau": 3}))
    bad = gft("runs", "submit", "bad.yaml", env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "tau" in bad.stderr

    (tmp_path / "other.yaml").write_text(yaml.safe_dump({**launch_inputs, "name": "other", "tau": 0.9}))
    other_id = int(gft("runs", "submit", "other.yaml", env=env, cwd=tmp_path).stdout.split("#")[1].split()[0])
    cancel = gft("runs", "cancel", str(other_id), env=env, cwd=tmp_path)
    assert cancel.returncode == 0, cancel.stderr

    listing = gft("runs", "list", env=env, cwd=tmp_path)
    assert listing.returncode == 0 and "from-cli" in listing.stdout and "succeeded" in listing.stdout

    compare = gft("runs", "compare", str(run_id), str(other_id), env=env, cwd=tmp_path)
    assert compare.returncode == 0, compare.stderr
    assert "tau" in compare.stdout and "max_steps" in compare.stdout and "loss" in compare.stdout

    listed = gft("runs", "download", str(run_id), env=env, cwd=tmp_path)
    assert listed.returncode == 0 and "final_model" in listed.stdout and "log" in listed.stdout, listed.stderr
    final = gft("runs", "download", str(run_id), "--artifact", "final", env=env, cwd=tmp_path)
    assert final.returncode == 0, final.stderr
    with tarfile.open(tmp_path / f"run{run_id}-final_model-step3.tar") as tar:
        assert any(m.name.endswith("/config.json") for m in tar.getmembers())
    log = gft("runs", "download", str(run_id), "--artifact", "log", "-o", "run.log", env=env, cwd=tmp_path)
    assert log.returncode == 0 and "step 3/3 loss=" in (tmp_path / "run.log").read_text(), log.stderr
    groups = gft("runs", "download", str(run_id), "--artifact", "groups", "-o", "g.jsonl", env=env, cwd=tmp_path)
    assert groups.returncode == 0, groups.stderr
    assert all(json.loads(line)["run"] == run_id for line in (tmp_path / "g.jsonl").read_text().splitlines())
    missing = gft("runs", "download", str(run_id), "--artifact", "checkpoint:999", env=env, cwd=tmp_path)
    assert missing.returncode == 2 and "checkpoint:999" in missing.stderr

    export = gft("metrics", "export", str(run_id), "--format", "csv", "-o", "m.csv", env=env, cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert sorted(int(r["step"]) for r in rows if r["key"] == "loss") == [1, 2, 3]
    parquet = gft("metrics", "export", str(run_id), "--format", "parquet", "-o", "m.parquet", env=env, cwd=tmp_path)
    assert parquet.returncode == 0, parquet.stderr
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "m.parquet").num_rows == len(rows)
