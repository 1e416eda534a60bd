"""Benchmarks: datasets marked for evaluation (Dataset.purpose = "evaluation"), and the presets
that create them from the shared benchmark files (settings.BENCHMARK_DATA, gft_core's
BENCHMARK_PRESETS: math500, aime24, amc23, minerva_math, gsm8k_test).

Used by the management command `add_benchmarks`, the API and the pages.
"""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import transaction

from webapp.datasets import services as datasets
from webapp.datasets.models import Dataset

# How the paper's Table 1 names the benchmarks our presets create (reference rows are matched on it).
REFERENCE_NAMES = {"math500": "MATH", "amc23": "AMC23", "minerva_math": "Minerva Math", "aime24": "AIME24",
                   "gsm8k_test": "GSM8K"}


class BenchmarkError(ValueError):
    """A preset that cannot be added; the message says why."""


def reference_name(benchmark: str) -> str:
    """The name reference results use for one of our benchmark names."""
    return REFERENCE_NAMES.get(benchmark, benchmark)


def presets() -> dict[str, dict]:
    """gft_core's benchmark presets: name -> {"path": relative to BENCHMARK_DATA, "mapping": ...}."""
    from gft_core.benchmarks import BENCHMARK_PRESETS

    return BENCHMARK_PRESETS


def preset_status(team) -> list[dict]:
    """Every preset with whether its file is here and the team's benchmark of that name (for a page)."""
    have = {d.name: d for d in benchmarks_of(team).filter(name__in=list(presets()))}
    out = []
    for name, preset in presets().items():
        path = Path(settings.BENCHMARK_DATA) / preset["path"]
        d = have.get(name)
        out.append({"name": name, "path": str(path), "available": path.is_file(),
                    "dataset": d.pk if d else None, "status": d.status if d else None})
    return out


def benchmarks_of(team):
    """The team's benchmark dataset versions (newest first within a name)."""
    return Dataset.objects.filter(team=team, purpose=Dataset.Purpose.EVALUATION).order_by("name", "-version")


@transaction.atomic
def mark_benchmark(dataset: Dataset, user, benchmark: bool = True) -> Dataset:
    """Mark a dataset version for evaluation (or back for training); creator or admin only."""
    from webapp.resources.services import require_manager

    require_manager(user, dataset)
    purpose = Dataset.Purpose.EVALUATION if benchmark else Dataset.Purpose.TRAIN
    Dataset.objects.filter(pk=dataset.pk).update(purpose=purpose)
    dataset.purpose = purpose
    return dataset


def add_benchmark(team, user, name: str) -> tuple[Dataset, bool]:
    """(the team's benchmark dataset of preset `name`, created?): an existing dataset of that name
    is returned as it is; else the preset's file is uploaded as a new dataset (validated in the
    background like any upload) and marked for evaluation."""
    all_presets = presets()
    if name not in all_presets:
        raise BenchmarkError(f"Unknown benchmark preset {name!r}; choose one of {', '.join(all_presets)}.")
    existing = Dataset.objects.filter(team=team, name=name).order_by("-version").first()
    if existing is not None:
        if not existing.is_benchmark:
            raise BenchmarkError(f"Team {team} has a training dataset named {name!r}; rename it to add the preset.")
        return existing, False
    preset = all_presets[name]
    path = Path(settings.BENCHMARK_DATA) / preset["path"]
    if not path.is_file():
        raise BenchmarkError(f"The benchmark file {path} is not there (settings.BENCHMARK_DATA).")
    return add_benchmark_file(team, user, name, path, preset["mapping"]), True


def add_benchmark_file(team, user, name: str, path: Path, mapping: str | dict) -> Dataset:
    """Upload the file at `path` as a new benchmark dataset `name` of the team (prompt + ground
    truth of `mapping`), its validation queued like any upload; BenchmarkError says why not."""
    with transaction.atomic(), Path(path).open("rb") as f:
        try:  # prompt + ground truth only: a benchmark has no expert or teacher answers to read
            mapping = {**datasets.mapping_from(mapping), "expert": None, "teacher": None}
            dataset = datasets.create_dataset_from_upload(team, user, f, name=name, filename=Path(path).name,
                                                          mapping=mapping, allow_duplicate=True)
        except datasets.UploadError as exc:
            raise BenchmarkError(f"{name}: {exc}") from None
        Dataset.objects.filter(pk=dataset.pk).update(purpose=Dataset.Purpose.EVALUATION)
        dataset.purpose = Dataset.Purpose.EVALUATION
    return dataset


def add_benchmarks(team, user, names: list[str] | None = None) -> list[tuple[Dataset, bool]]:
    """add_benchmark for each name (default: every preset whose file is here)."""
    if names is None:
        names = [p["name"] for p in preset_status(team) if p["available"]]
    unknown = [n for n in names if n not in presets()]
    if unknown:  # checked first: nothing is created when one name is wrong
        raise BenchmarkError(f"Unknown benchmark preset {unknown[0]!r}; choose one of {', '.join(presets())}.")
    with transaction.atomic():
        return [add_benchmark(team, user, n) for n in names]
