"""Reference results: numbers reported elsewhere, shown next to the team's own (never mixed up
with them: `from_paper` rows are labelled "reported by the paper")."""
from __future__ import annotations

import csv
from pathlib import Path

from django.conf import settings
from django.db import transaction

from .models import ReferenceResult

PAPER_TABLE = "gft_paper_table1.csv"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / PAPER_TABLE


def paper_table_path() -> Path:
    """settings.REFERENCE_DATA's copy of the table when it is there, else the one in the repository."""
    shared = Path(settings.REFERENCE_DATA) / PAPER_TABLE
    return shared if shared.is_file() else FIXTURE


def read_table(path: Path) -> list[dict]:
    """Rows {model, method, benchmark, metric, value (float), source} of a reference CSV."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [{"model": r["model"], "method": r["method"], "benchmark": r["benchmark"], "metric": r["metric"],
             "value": float(r["value"]), "source": r["source"]} for r in rows]


@transaction.atomic
def add_paper_table(team) -> int:
    """Load the GFT paper's Table 1 as the team's reference results (from_paper=True); loading it
    again updates the values instead of duplicating rows. Returns the number of rows."""
    rows = read_table(paper_table_path())
    for r in rows:
        ReferenceResult.objects.update_or_create(
            team=team, model=r["model"], method=r["method"], benchmark=r["benchmark"], metric=r["metric"],
            source=r["source"], defaults={"value": r["value"], "from_paper": True})
    return len(rows)


def add_reference(team, *, model: str, method: str, benchmark: str, value: float, metric: str = "accuracy",
                  source: str = "") -> ReferenceResult:
    """One reference row entered by hand (never `from_paper`); the same model, method, benchmark,
    metric and source again updates its value instead of adding a duplicate."""
    row, _ = ReferenceResult.objects.update_or_create(
        team=team, model=model.strip(), method=method.strip(), benchmark=benchmark.strip(), metric=metric.strip(),
        source=source.strip(), defaults={"value": float(value), "from_paper": False})
    return row


def delete_reference(row: ReferenceResult) -> None:
    row.delete()
