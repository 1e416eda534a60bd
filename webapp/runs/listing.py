"""The run list: filters and sorting (by any final metric in Run.summary)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.db.models import F, Func, QuerySet
from django.db.models.fields.json import KeyTransform

from .models import Run

SORTS = {"-created": "Newest first", "created": "Oldest first", "name": "Name", "status": "Status"}
METRIC_PREFIX = "metric:"
MAX_ID = 2**63 - 1  # ids are Postgres bigints
_ASCII_DIGITS = re.compile(r"[0-9]{1,19}")


def parse_id(raw: str) -> int | None:
    """A database id from text, or None. Only ASCII digits count: str.isdigit() also accepts "²"
    (which int() refuses) and int() accepts "٣"; neither names a row."""
    raw = (raw or "").strip()
    if not _ASCII_DIGITS.fullmatch(raw):
        return None
    value = int(raw)
    return value if value <= MAX_ID else None


@dataclass
class RunFilter:
    status: str = ""
    method: str = ""
    dataset: str = ""
    tag: str = ""
    user: str = ""
    q: str = ""
    sort: str = "-created"
    desc: bool = True  # for metric sorts
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_params(cls, params) -> "RunFilter":
        f = cls(**{k: params.get(k, "").strip() for k in ("status", "method", "dataset", "tag", "user", "q")})
        f.sort = params.get("sort", "-created") or "-created"
        f.desc = params.get("dir", "desc") != "asc"
        if f.status and f.status not in Run.Status.values:
            f.errors.append(f"Unknown status {f.status!r}.")
            f.status = ""
        if f.dataset and parse_id(f.dataset) is None:
            f.errors.append("Dataset must be a dataset id.")
            f.dataset = ""
        if f.sort not in SORTS and not f.sort.startswith(METRIC_PREFIX):
            f.errors.append(f"Unknown sort {f.sort!r}.")
            f.sort = "-created"
        return f

    @property
    def metric(self) -> str | None:
        return self.sort[len(METRIC_PREFIX):] if self.sort.startswith(METRIC_PREFIX) else None

    def apply(self, qs: QuerySet[Run]) -> QuerySet[Run]:
        if self.status:
            qs = qs.filter(status=self.status)
        if self.method:
            qs = qs.filter(method=self.method)
        if self.dataset:
            qs = qs.filter(dataset_id=int(self.dataset))
        if self.tag:
            qs = qs.filter(tags__contains=[self.tag])
        if self.user:
            qs = qs.filter(created_by__username=self.user)
        if self.q:
            qs = qs.filter(name__icontains=self.q)
        metric = self.metric
        if metric:
            # jsonb compares numbers numerically; runs without the metric go last either way.
            qs = qs.annotate(sort_value=KeyTransform(metric, "summary"))
            order = F("sort_value").desc(nulls_last=True) if self.desc else F("sort_value").asc(nulls_last=True)
            return qs.order_by(order, "-created_at")
        return qs.order_by({"-created": "-created_at", "created": "created_at", "name": "name",
                            "status": "status"}[self.sort], "-id")


def summary_metrics(qs: QuerySet[Run]) -> list[str]:
    """The metric names found in the summaries of these runs (choices for sorting)."""
    names = (qs.order_by().annotate(k=Func(F("summary"), function="jsonb_object_keys"))
             .values_list("k", flat=True).distinct())
    return sorted(names)


def filter_choices(qs: QuerySet[Run]) -> dict[str, list]:
    """Values present in the team's runs, for the filter selects."""
    base = qs.order_by()
    return {
        "methods": sorted(set(base.values_list("method", flat=True))),
        "users": sorted({u for u in base.values_list("created_by__username", flat=True) if u}),
        "tags": sorted({t for tags in base.values_list("tags", flat=True) for t in tags}),
        "datasets": sorted({(d, str(n)) for d, n in base.exclude(dataset=None)
                            .values_list("dataset_id", "dataset__name") if d}, key=lambda x: x[1]),
    }
