"""The run table: filters, configurable columns, server-side sort and pagination (a selector).

Columns are named in the URL (`?cols=config:tau,final:loss,max:reward/mean,eval:gsm8k`):
- `config:<field>`: any gft_core setting (gft_core.config.FIELDS, dotted ones inside `data`);
- `final:<metric>`: the latest value (Run.summary), `min:` / `max:` its extremes and `best:` the
  better of them by webapp.runs.series.direction (Run.metric_range, kept by the sink);
- `eval:<benchmark>`: avg@k (percent) of the newest succeeded evaluation of the run's latest
  evaluated checkpoint.
Every column can be the sort (`?sort=<column>&dir=asc|desc`; missing values last). A page costs
the same few queries whatever the number of runs: a count, the page's rows, one query for the
page's evaluation results, and the filter choices (each one SQL DISTINCT).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.core.paginator import Paginator
from django.db.models import F, FloatField, Func, OuterRef, Q, QuerySet, Subquery
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast

from gft_core.config import FIELDS

from .models import MetricKey, Run, RunStatus

BASE_SORTS = {"created": "created_at", "name": "name", "status": "status", "step": "step", "id": "id"}
METRIC_PREFIX = "metric:"  # older URLs: metric:<m> = final:<m>
STATS = ("final", "best", "min", "max")
ARCHIVED = {"": "hidden", "all": "shown", "only": "only archived"}
MAX_COLUMNS = 40
PAGE_SIZES = (25, 50, 100, 200)
MAX_ID = 2**63 - 1  # ids are Postgres bigints
_ASCII_DIGITS = re.compile(r"[0-9]{1,19}")
_METRIC_NAME = re.compile(r"[\w./@:+-]{1,100}")


def parse_id(raw: str) -> int | None:
    """A database id from text, or None. Only ASCII digits count: str.isdigit() also accepts "²"
    (which int() refuses) and int() accepts "٣"; neither names a row."""
    raw = (raw or "").strip()
    if not _ASCII_DIGITS.fullmatch(raw):
        return None
    value = int(raw)
    return value if value <= MAX_ID else None


def _json_path(column: str, path: list[str]):
    expr: Any = column
    for part in path:
        expr = KeyTransform(part, expr)
    return expr


@dataclass(frozen=True)
class Column:
    """One chosen column: `spec` as in the URL ("config:tau"), its kind and argument."""

    spec: str
    kind: str  # config | final | best | min | max | eval
    arg: str

    @property
    def label(self) -> str:
        return self.arg if self.kind == "config" else f"{self.kind} {self.arg}"

    def expression(self):
        """SQL value to sort by (jsonb compares numbers numerically)."""
        if self.kind == "config":
            return _json_path("config", self.arg.split("."))
        if self.kind == "final":
            return KeyTransform(self.arg, "summary")
        if self.kind in ("min", "max", "best"):
            return KeyTransform(self._range_index(), KeyTransform(self.arg, "metric_range"))
        from webapp.evaluations.models import EvalResult, EvalStatus  # evaluations import runs

        newest = (EvalResult.objects.filter(evaluation__run=OuterRef("pk"), benchmark_name=self.arg,
                                            evaluation__status=EvalStatus.SUCCEEDED)
                  .order_by("-evaluation__checkpoint_step", "-evaluation__finished_at", "-id")
                  .annotate(v=Cast(KeyTextTransform("avg_at_k", "metrics"), FloatField())).values("v")[:1])
        return Subquery(newest, output_field=FloatField())

    def _range_index(self) -> int:
        if self.kind == "best":
            from .series import direction

            return 0 if direction(self.arg) == "min" else 1
        return 0 if self.kind == "min" else 1

    def value(self, run: Run, evals: dict[tuple[int, str], float | None]) -> Any:
        """The cell of `run` (from the row itself; eval columns from `evals`)."""
        if self.kind == "config":
            value: Any = run.config or {}
            for part in self.arg.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            return value
        if self.kind == "final":
            return (run.summary or {}).get(self.arg)
        if self.kind == "eval":
            return evals.get((run.pk, self.arg))
        pair = (run.metric_range or {}).get(self.arg)
        return pair[self._range_index()] if isinstance(pair, list) and len(pair) == 2 else None


def parse_column(spec: str) -> Column | str:
    """A Column, or the error message naming what is wrong with `spec`."""
    kind, _, arg = spec.strip().partition(":")
    if kind == "config":
        return Column(spec, kind, arg) if arg in FIELDS else f"Unknown config field {arg!r}."
    if kind in STATS or kind == "eval":
        if not _METRIC_NAME.fullmatch(arg):
            return f"Column {spec[:60]!r} needs a metric or benchmark name."
        return Column(spec.strip(), kind, arg)
    return f"Unknown column {spec[:60]!r}: use config:, final:, best:, min:, max: or eval:."


DEFAULT_COLUMNS = ("config:tau", "final:loss", "final:reward/mean")


@dataclass
class RunFilter:
    status: str = ""
    method: str = ""
    dataset: str = ""
    tag: str = ""
    user: str = ""
    q: str = ""
    archived: str = ""
    sort: str = "created"
    desc: bool = True
    columns: list[Column] = field(default_factory=list)
    per_page: int = 50
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_params(cls, params) -> "RunFilter":
        f = cls(**{k: params.get(k, "").strip() for k in ("status", "method", "dataset", "tag", "user", "q", "archived")})
        if f.status and f.status not in RunStatus.values:
            f.errors.append(f"Unknown status {f.status!r}.")
            f.status = ""
        if f.dataset and parse_id(f.dataset) is None:
            f.errors.append("Dataset must be a dataset id.")
            f.dataset = ""
        if f.archived not in ARCHIVED:
            f.errors.append(f"archived must be empty, 'all' or 'only' (got {f.archived[:20]!r}).")
            f.archived = ""
        raw_cols = params.get("cols")
        specs = [c for c in (raw_cols.split(",") if raw_cols is not None else DEFAULT_COLUMNS) if c.strip()]
        for spec in dict.fromkeys(specs[:MAX_COLUMNS]):
            col = parse_column(spec)
            (f.errors.append if isinstance(col, str) else f.columns.append)(col)
        per_page = parse_id(params.get("per_page", ""))
        f.per_page = per_page if per_page in PAGE_SIZES else 50
        f.desc = params.get("dir", "desc") != "asc"
        f._parse_sort(params.get("sort", "") or "created")
        return f

    def _parse_sort(self, sort: str) -> None:
        if sort.startswith("-") and sort[1:] in BASE_SORTS:  # older URLs: -created
            sort, self.desc = sort[1:], True
        if sort.startswith(METRIC_PREFIX):
            sort = "final:" + sort[len(METRIC_PREFIX):]
        if sort in BASE_SORTS:
            self.sort = sort
            return
        col = parse_column(sort)
        if isinstance(col, str):
            self.errors.append(f"Unknown sort {sort[:60]!r}.")
            self.sort, self.desc = "created", True
            return
        self.sort = col.spec

    @property
    def metric(self) -> str | None:
        return self.sort[len("final:"):] if self.sort.startswith("final:") else None

    @property
    def column_specs(self) -> str:
        return ",".join(c.spec for c in self.columns)

    def apply(self, qs: QuerySet[Run]) -> QuerySet[Run]:
        """The filtered runs in table order."""
        if self.archived == "":
            qs = qs.filter(archived_at=None)
        elif self.archived == "only":
            qs = qs.exclude(archived_at=None)
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
            qs = qs.filter(Q(name__icontains=self.q) | Q(notes__icontains=self.q) | Q(tags__contains=[self.q]))
        if self.sort in BASE_SORTS:
            field_name = BASE_SORTS[self.sort]
            return qs.order_by(f"-{field_name}" if self.desc else field_name, "-id")
        col = parse_column(self.sort)
        qs = qs.annotate(sort_value=col.expression())
        order = F("sort_value").desc(nulls_last=True) if self.desc else F("sort_value").asc(nulls_last=True)
        return qs.order_by(order, "-id")


@dataclass
class RunTable:
    filter: RunFilter
    page: Any  # django.core.paginator.Page of Run, each with .cells (one value per column)
    columns: list[Column]


def run_table(team_runs: QuerySet[Run], params, page_number: str | int = 1) -> RunTable:
    """One page of the run table of these runs (already scoped to a team)."""
    flt = RunFilter.from_params(params)
    # Ids first, rows second: sorting only (sort value, id) is what keeps 10,000 runs fast; a
    # single query would carry every row's config and summaries through the sort.
    page = Paginator(flt.apply(team_runs).values_list("pk", flat=True), flt.per_page).get_page(page_number)
    ids = list(page.object_list)
    found = Run.objects.select_related("dataset", "created_by").defer("log_tail", "error").in_bulk(ids)
    runs = [found[i] for i in ids if i in found]
    evals = eval_values([r.pk for r in runs], [c.arg for c in flt.columns if c.kind == "eval"])
    for run in runs:
        run.cells = [display(col.value(run, evals)) for col in flt.columns]
    page.object_list = runs
    return RunTable(filter=flt, page=page, columns=flt.columns)


def display(value: Any) -> str:
    """A cell as text: numbers to 6 significant digits, "–" when missing."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if len(text) <= 40 else text[:39] + "…"


def eval_values(run_ids: list[int], benchmarks: list[str]) -> dict[tuple[int, str], float | None]:
    """{(run id, benchmark): avg@k percent} of the newest succeeded evaluation of each run's latest
    evaluated checkpoint: one query for the whole page."""
    if not run_ids or not benchmarks:
        return {}
    from webapp.evaluations.models import EvalResult, EvalStatus
    from webapp.evaluations.selectors import metric_value

    rows = (EvalResult.objects.filter(evaluation__run_id__in=run_ids, benchmark_name__in=benchmarks,
                                      evaluation__status=EvalStatus.SUCCEEDED)
            .order_by("evaluation__run_id", "benchmark_name", "-evaluation__checkpoint_step",
                      "-evaluation__finished_at", "-id")
            .distinct("evaluation__run_id", "benchmark_name")
            .values_list("evaluation__run_id", "benchmark_name", "metrics"))
    return {(run_id, name): metric_value(metrics or {}) for run_id, name, metrics in rows}


def column_choices(team) -> dict[str, list[str]]:
    """What the column picker offers: every config field, every metric name logged (MetricKey is
    small: one row per name), the benchmarks the team evaluated on."""
    from webapp.evaluations.models import EvalResult

    benchmarks = (EvalResult.objects.filter(evaluation__team=team, evaluation__run__isnull=False)
                  .order_by("benchmark_name").values_list("benchmark_name", flat=True).distinct())
    return {"config": list(FIELDS), "metrics": list(MetricKey.objects.order_by("name").values_list("name", flat=True)),
            "benchmarks": list(benchmarks)}


def filter_choices(qs: QuerySet[Run], team) -> dict[str, list]:
    """Choices of the filter selects: the methods (gft_core's table), the team's members, and the
    tags and datasets present in its runs (each one SELECT DISTINCT)."""
    from gft_core.methods import METHODS

    from webapp.accounts.models import Membership

    base = qs.order_by()
    return {
        "methods": sorted(METHODS),
        "users": list(Membership.objects.filter(team=team).order_by("user__username")
                      .values_list("user__username", flat=True)),
        "tags": list(base.annotate(t=Func(F("tags"), function="unnest")).values_list("t", flat=True)
                     .distinct().order_by("t")),
        "datasets": [(d, str(n)) for d, n in base.exclude(dataset=None).values_list("dataset_id", "dataset__name")
                     .distinct().order_by("dataset__name", "dataset_id")],
    }
