"""Fixtures for the evaluation tests (web and e2e): a benchmark dataset of toy problems, a suite."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.runs_support import validated


def make_benchmark(team, tiny_assets, *, name: str = "toy_bench", n: int | None = None, validate: bool = True):
    """A validated benchmark Dataset (purpose evaluation) of the toy eval problems (the first `n`,
    or the eval file repeated to `n` rows)."""
    from webapp.datasets.models import Dataset
    from webapp.datasets.services import mapping_from

    root = tiny_assets["root"]
    src = tiny_assets["eval"]
    path = src
    if n is not None:
        rows = [json.loads(x) for x in src.read_text().splitlines() if x.strip()]
        rows = (rows * (n // len(rows) + 1))[:n]
        path = Path(root) / "datasets" / "tests" / f"{name}-{n}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = Dataset.objects.create(
        team=team, name=name, file_path=str(path.relative_to(root)), original_filename=path.name, file_format="jsonl",
        sha256="1" * 64, size_bytes=path.stat().st_size, mapping=mapping_from("toy"), purpose=Dataset.Purpose.EVALUATION)
    return validated(ds) if validate else ds


@pytest.fixture
def benchmark(team, tiny_assets):
    return make_benchmark(team, tiny_assets)


@pytest.fixture
def suite(team, user, benchmark):
    from webapp.evaluations import services

    return services.create_suite(team, user, name="math", benchmarks=[benchmark.pk],
                                 settings={"k": 2, "max_new_tokens": 8, "temperature": 1.0, "batch_size": 4,
                                           "max_prompt_len": 48})
