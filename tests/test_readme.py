"""The README stays true: every metric the trainer logs is documented, and the two commands exist."""
from __future__ import annotations

import re

from gft_core.groups import SOURCES
from gft_core.metrics import HISTOGRAM_NAMES, METRIC_NAMES

from .conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_every_metric_name_is_documented():
    prose = re.sub(r"```.*?```", "", README, flags=re.S)  # fenced blocks would shift the backtick pairs
    documented = set(re.findall(r"`([^`]+)`", prose))
    missing = []
    for name in METRIC_NAMES + HISTOGRAM_NAMES:
        generic = re.sub(rf"/({'|'.join(SOURCES)})$", "/{source}", name)
        if name not in documented and generic not in documented:
            missing.append(name)
    assert not missing, f"metrics missing from README.md: {missing}"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["./studio up", "./studio test"]
    assert "exec ./studio test" in (ROOT / ".ci" / "run").read_text()
