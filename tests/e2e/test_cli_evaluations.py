"""`gft eval submit/results` and `gft runs leaderboard` in a subprocess against the ASGI server and a
real worker (as tests/e2e/test_cli.py does for runs)."""
from __future__ import annotations

import pytest

from tests.conftest import subprocess_env
from tests.e2e.test_cli import gft
from tests.e2e.test_evaluations_e2e import trained_run
from tests.eval_support import benchmark, suite  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def test_cli_eval_submit_results_leaderboard(celery_worker, live_server_url, api_token, team, user, launch_inputs,
                                             suite, tmp_path):  # noqa: F811
    run = trained_run(team, user, launch_inputs, celery_worker)
    env = subprocess_env(GFT_URL=live_server_url, GFT_TOKEN=api_token)

    submit = gft("eval", "submit", "--run", str(run.pk), "--suite", "math", "--step", "latest", "--follow",
                 "--interval", "0.5", "--no-chat-template", env=env, cwd=tmp_path)
    assert submit.returncode == 0, submit.stdout + submit.stderr + celery_worker.log()[-3000:]
    assert f"of run #{run.pk} step 2 with suite math is queued" in submit.stdout and "toy_bench" in submit.stdout
    assert f"Prompt format: plain (chat template off) (run #{run.pk}, set: use_chat_template)" in submit.stdout

    results = gft("eval", "results", str(run.pk), env=env, cwd=tmp_path)
    assert results.returncode == 0, results.stderr
    lines = results.stdout.splitlines()
    assert lines[1].split() == ["eval", "suite", "step", "status", "toy_bench", "average"]
    row = lines[3].split()
    assert row[1:4] == ["math", "2", "succeeded"] and 0.0 <= float(row[4]) <= 100.0 and row[4] == row[5]

    board = gft("runs", "leaderboard", str(run.pk), "--suite", "math", "--baseline", str(run.pk), env=env, cwd=tmp_path)
    assert board.returncode == 0, board.stderr
    assert f"#{run.pk} e2e" in board.stdout and "+0.0" in board.stdout

    bad = gft("eval", "submit", "--run", str(run.pk), "--suite", "math", "--step", "7", env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "step" in bad.stderr
    missing = gft("eval", "submit", "--run", str(run.pk), "--suite", "nope", env=env, cwd=tmp_path)
    assert missing.returncode == 2 and "No eval suite named 'nope'" in missing.stderr
    foreign = gft("eval", "results", "999999", env=env, cwd=tmp_path)
    assert foreign.returncode == 2 and "404" in foreign.stderr
