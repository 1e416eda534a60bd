"""What a run's group per prompt will really be (issue 18), read from a dataset's validation report.

A row gives at most its own answers: one expert answer (if it has one) and its teacher answers,
so a dataset without teacher columns trains GFT with groups of 1 expert + 0 teachers + N self,
whatever the form asked. `effective_group` says so before launch (the launch form's preview, the
API's group-preview) and the launch service stores it on the Run. It also warns when the
dataset's expert or teacher answers are longer than max_response_len at a chosen percentile:
the trainer cuts them there, and a cut answer often scores 0.

Lengths are counted with the dataset's validation tokenizer, without the EOS the trainer adds.
"""
from __future__ import annotations

from bisect import bisect_left
from typing import Any, Mapping

from django.urls import reverse

from gft_core.config import ConfigError, GFTConfig, check_field
from gft_core.methods import get_method

PERCENTILES = (50, 90, 99)  # the launch form's choices; the API takes any whole percentile 1..100
DEFAULT_PERCENTILE = 90
PREVIEW_FIELDS = ("n_expert", "n_teacher", "n_self", "max_response_len")


class PreviewError(ValueError):
    """A bad preview parameter: `field` names it."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _label(counts: Mapping[str, int]) -> str:
    return f"{_plural(counts['expert'], 'expert')} + {_plural(counts['teacher'], 'teacher')} + {counts['self']} self"


def _rows_by_teachers(train: dict) -> dict[int, int] | None:
    """Rows per teacher-answer count; from min/max alone when the report predates the distribution."""
    teachers = train.get("teachers") or {}
    by_count = teachers.get("rows_by_count")
    if by_count is not None:
        return {int(k): int(v) for k, v in by_count.items()}
    if teachers.get("min") == teachers.get("max") and "max" in teachers:
        return {int(teachers["max"]): int(train.get("valid_rows") or 0)}
    return None  # an older report of uneven rows: the share is unknown until it is validated again


def _share_over(summary: dict, limit: int) -> float | None:
    """Share of the texts whose tokens + EOS exceed `limit`, from the p0..p100 list."""
    pct = summary.get("pct")
    if not pct:
        return None
    return 1.0 - bisect_left(pct, limit) / len(pct)  # tokens >= limit: the EOS does not fit


def _truncation(train: dict, counts: Mapping[str, int], limit: int, percentile: int) -> list[dict[str, Any]]:
    out = []
    for source in ("expert", "teacher"):
        summary = (train.get("lengths") or {}).get(source)
        if not counts[source] or not summary:
            continue
        pct = summary.get("pct")
        at = pct[percentile] if pct else summary.get(f"p{percentile}")
        share = _share_over(summary, limit)
        over = round(share * summary["n"]) if share is not None else None
        entry = {"source": source, "percentile": percentile, "tokens": at, "limit": limit, "answers": summary["n"],
                 "truncated": over, "share": share, "warn": at is not None and at + 1 > limit}
        if entry["warn"]:
            many = f"about {over} of {summary['n']}" if over is not None else "some"
            entry["message"] = (f"{source} answers: p{percentile} is {at} tokens (+ EOS), more than max_response_len "
                                f"{limit}: {many} {source} answers would be truncated.")
        out.append(entry)
    return out


def effective_group(report: dict | None, *, method: str, n_expert: int, n_teacher: int, n_self: int,
                    max_response_len: int, percentile: int = DEFAULT_PERCENTILE, dataset_url: str = "") -> dict[str, Any]:
    """The group per prompt a run with these settings gets on a dataset with this validation report.

    Returns asked (the counts the method uses), group (the commonest effective group), rows,
    short_rows and short_share (prompts whose group is smaller than asked; None when unknown),
    message (one line for people) and truncation (per off-policy source, see _truncation).
    """
    asked = GFTConfig(method=method, n_expert=n_expert, n_teacher=n_teacher, n_self=n_self).group_counts()
    train = (report or {}).get("train") or {}
    rows = int(train.get("valid_rows") or 0)
    expert_lengths = (train.get("lengths") or {}).get("expert")
    if expert_lengths is None and (report or {}).get("tokenizer_error"):  # no lengths were counted at all
        experts = rows - int(train.get("empty_expert") or 0)
    else:
        experts = int((expert_lengths or {}).get("n") or 0)
    by_teachers = _rows_by_teachers(train) if asked["teacher"] else {0: rows}
    groups: dict[tuple[int, int], int] = {}  # (experts, teachers) -> rows, assuming experts and teachers independent
    short: int | None = None
    teacher_max = int((train.get("teachers") or {}).get("max") or 0)
    if by_teachers is not None and rows:
        with_expert = min(experts, rows) / rows
        for k, n in by_teachers.items():
            t = min(asked["teacher"], k)
            for e, share in ((min(asked["expert"], 1), with_expert), (0, 1 - with_expert)):
                if share > 0:
                    groups[(e, t)] = groups.get((e, t), 0) + n * share
        short = round(sum(n for (e, t), n in groups.items() if e < asked["expert"] or t < asked["teacher"]))
        e, t = max(groups, key=groups.get) if groups else (0, 0)
    else:
        e, t = min(asked["expert"], 1 if experts else 0), min(asked["teacher"], teacher_max)
    group = {"expert": e, "teacher": t, "self": asked["self"]}
    notes = []
    if "teacher" in get_method(method).sources and teacher_max == 0:  # also when 0 were asked: say why
        notes.append("this dataset has no teacher answers; generate them")
    elif asked["teacher"] and short is None:
        notes.append("some rows have fewer teacher answers than asked; validate the dataset again for their share")
    if asked["expert"] and experts == 0:
        notes.append("this dataset has no expert answers")
    if short:
        notes.append(f"{short} of {rows} prompts ({short / rows:.0%}) get a short group (fewer answers than asked)")
    if not notes and rows:
        notes.append("every prompt gets the full group")
    limit = int(max_response_len)
    truncation = _truncation(train, asked, limit, percentile)
    return {"asked": asked, "group": group, "label": _label(group), "rows": rows, "short_rows": short,
            "short_share": round(short / rows, 4) if short is not None and rows else None,
            "message": f"{_label(group)}: {'; '.join(notes)}" if notes else _label(group),
            "truncation": truncation, "warnings": [x["message"] for x in truncation if x["warn"]],
            "dataset_url": dataset_url}


def preview_inputs(query: Mapping[str, Any]) -> dict[str, Any]:
    """method, the group counts, max_response_len and percentile from query parameters (missing
    ones take gft_core's defaults), each checked like the launch fields; PreviewError names the
    first bad one."""
    base = GFTConfig()
    method = query.get("method") or base.method
    try:
        get_method(method)
    except ConfigError as e:
        raise PreviewError("method", e.message) from None
    out: dict[str, Any] = {"method": method}
    for name in PREVIEW_FIELDS:
        raw = query.get(name)
        if raw in (None, ""):
            out[name] = getattr(base, name)
            continue
        try:
            out[name] = check_field(name, int(str(raw)))
        except ConfigError as e:  # before ValueError, which it is
            raise PreviewError(name, e.message) from None
        except ValueError:
            raise PreviewError(name, f"must be a whole number, got {str(raw)[:40]!r}") from None
    raw = query.get("percentile")
    try:
        out["percentile"] = int(str(raw)) if raw not in (None, "") else DEFAULT_PERCENTILE
    except ValueError:
        raise PreviewError("percentile", f"must be a whole number from 1 to 100, got {str(raw)[:40]!r}") from None
    if not 1 <= out["percentile"] <= 100:
        raise PreviewError("percentile", f"must be from 1 to 100, got {out['percentile']}")
    return out


def dataset_group(dataset, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """effective_group of a Dataset version for preview_inputs(...) (or a run's config values),
    with the dataset named and its page linked (where teacher answers are made)."""
    out = effective_group(dataset.report, method=inputs["method"], n_expert=inputs["n_expert"],
                          n_teacher=inputs["n_teacher"], n_self=inputs["n_self"],
                          max_response_len=inputs["max_response_len"],
                          percentile=inputs.get("percentile", DEFAULT_PERCENTILE), dataset_url=reverse("datasets:detail", args=[dataset.pk]))
    out["dataset"] = {"id": dataset.pk, "name": str(dataset)}
    return out
