"""Dataset lifecycle: upload, new versions, archive, delete (webapp.resources.services), validation hand-off.

Called by the browser views and by the REST API alike. Uploads are checked while they stream to
ARTIFACT_ROOT/datasets/<team id>/<sha256[:2]>/<sha256><suffix> (content-addressed, so versions that
reuse a file share it); a version used by a run is never edited in place.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from gft_core.data import PRESETS, ColumnMapping, DataError, load_examples
from webapp import dispatch
from webapp.accounts import quotas
from webapp.resources import services as resources
from webapp.resources.services import InUseError, archive, used_by, versions

from .models import Dataset
from .uploads import StoredUpload, UploadError, store_upload

# Rows read synchronously at upload to catch a wrong mapping or broken first lines at once; the
# validation task reads every row.
QUICK_CHECK_ROWS = 50

__all__ = [
    "UploadError", "DuplicateDatasetError", "InUseError", "create_dataset_from_upload", "new_dataset_version",
    "archive", "delete", "used_by", "versions", "start_validation", "mapping_from", "prompt_format_from", "prompt_format", "prompt_preview", "data_config", "derived_version",
]


class DuplicateDatasetError(UploadError):
    """The team already has a dataset with the same file (same sha256)."""

    def __init__(self, existing: Dataset, label: str):
        self.existing = existing
        super().__init__(f"{label} is identical (same sha256) to {existing} of your team, uploaded {existing.created_at:%Y-%m-%d %H:%M}.")


# --- mapping ---------------------------------------------------------------------------------

def mapping_from(value: str | dict | ColumnMapping) -> dict:
    """A validated ColumnMapping dict from a preset name, a dict of its fields or a ColumnMapping."""
    if isinstance(value, str):
        if value not in PRESETS:
            raise UploadError(f"Unknown column-mapping preset {value!r}; known: {', '.join(sorted(PRESETS))}.")
        value = PRESETS[value]
    if isinstance(value, dict):
        try:
            value = ColumnMapping(**value)
        except TypeError as e:
            raise UploadError(f"Not a valid column mapping: {e}.") from None
    if not isinstance(value, ColumnMapping):
        raise UploadError("The column mapping must be a preset name or a mapping of columns.")
    if not isinstance(value.prompt, str) or not value.prompt.strip():
        raise UploadError("The column mapping needs a prompt column.")
    if value.ground_truth_extract not in ("raw", "gsm8k", "boxed"):
        raise UploadError("ground_truth_extract must be raw, gsm8k or boxed.")
    d = dataclasses.asdict(value)
    if isinstance(d["teacher"], tuple):
        d["teacher"] = list(d["teacher"])
    return d


PROMPT_FORMAT_KEYS = ("system_prompt", "instruction_suffix")


def prompt_format_from(value: dict | None) -> dict:
    """The dataset's prompt settings ({system_prompt, instruction_suffix}, blank ones left out),
    checked like gft_core's DataConfig; UploadError naming the key otherwise."""
    from gft_core.config import MAX_PROMPT_TEXT

    value = value or {}
    if not isinstance(value, dict):
        raise UploadError("prompt_format: must be a mapping of system_prompt and instruction_suffix.")
    out = {}
    for key, text in value.items():
        if key not in PROMPT_FORMAT_KEYS:
            raise UploadError(f"prompt_format.{key}: unknown setting; known: {', '.join(PROMPT_FORMAT_KEYS)}.")
        if text is None:
            continue
        if not isinstance(text, str):
            raise UploadError(f"prompt_format.{key}: must be text.")
        if len(text) > MAX_PROMPT_TEXT:
            raise UploadError(f"prompt_format.{key}: at most {MAX_PROMPT_TEXT} characters (got {len(text)}).")
        if text.strip():
            out[key] = text.strip()
    return out


def prompt_format(dataset: Dataset):
    """The gft_core PromptFormat of `dataset` (its system prompt and suffix; chat template on)."""
    from gft_core.policy import PromptFormat

    return PromptFormat.from_dict(dataset.prompt_format)


def prompt_preview(dataset: Dataset) -> dict:
    """The dataset's prompt settings and its first prompt as the model's user turn (the instruction
    suffix on its own line), for the dataset page and the launch form's group preview."""
    fmt = dict(dataset.prompt_format or {})
    out = {"system_prompt": fmt.get("system_prompt", ""), "instruction_suffix": fmt.get("instruction_suffix", ""),
           "example": None}
    try:
        first = load_examples(dataset.path, column_mapping(dataset), limit=1)
    except (DataError, OSError, TypeError):
        return out
    if first:
        out["example"] = prompt_format(dataset).content(first[0].prompt)
    return out


def column_mapping(dataset: Dataset) -> ColumnMapping:
    return ColumnMapping(**dataset.mapping)


def data_config(dataset: Dataset) -> dict:
    """The `data` section of a gft_core config (DataConfig fields) for training on `dataset`."""
    cfg: dict = {"path": str(dataset.path), "mapping": dict(dataset.mapping), **(dataset.prompt_format or {})}
    if dataset.eval_split == Dataset.EvalSplit.FILE and dataset.eval_file_path:
        cfg["eval_path"] = str(dataset.eval_path)
    elif dataset.eval_split == Dataset.EvalSplit.FRACTION and dataset.eval_fraction:
        cfg["eval_fraction"] = dataset.eval_fraction
    return cfg


# --- storage ---------------------------------------------------------------------------------

def team_dir(team) -> Path:
    return Path(settings.ARTIFACT_ROOT) / "datasets" / str(team.pk)


def _final_relpath(team, stored: StoredUpload) -> str:
    return f"datasets/{team.pk}/{stored.sha256[:2]}/{stored.sha256}{stored.suffix}"


def _quick_check(stored: StoredUpload, mapping: dict, label: str) -> None:
    """Map the first rows through gft_core so a wrong mapping or a broken first line fails at once."""
    try:
        load_examples(stored.tmp_path, ColumnMapping(**mapping), limit=QUICK_CHECK_ROWS)
    except DataError as e:
        raise UploadError(str(e).replace(str(stored.tmp_path), label)) from None
    except Exception as e:  # pyarrow and csv raise their own types on files they cannot parse
        raise UploadError(f"{label}: cannot be read: {e}") from None


def _receive(team, fileobj: BinaryIO, filename: str, mapping: dict, label: str) -> StoredUpload:
    stored = store_upload(fileobj, filename, team_dir(team) / ".incoming", label=label)
    try:
        _quick_check(stored, mapping, label)
    except BaseException:
        stored.discard()
        raise
    return stored


class _PlacedUploads:
    """Moves checked uploads to their content-addressed paths; undoes the moves on failure."""

    def __init__(self) -> None:
        self.created: list[Path] = []

    def place(self, team, stored: StoredUpload) -> str:
        rel = _final_relpath(team, stored)
        dest = Path(settings.ARTIFACT_ROOT) / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():  # same bytes already stored (an earlier version): keep that copy
            stored.discard()
        else:
            os.replace(stored.tmp_path, dest)
            self.created.append(dest)
        return rel

    def undo(self) -> None:
        for path in self.created:
            if not _referenced(path):
                path.unlink(missing_ok=True)


def _referenced(path: Path) -> bool:
    rel = str(path.relative_to(Path(settings.ARTIFACT_ROOT)))
    return Dataset.objects.filter(Q(file_path=rel) | Q(eval_file_path=rel)).exists()


def find_duplicate(team, sha256: str) -> Dataset | None:
    return Dataset.objects.filter(team=team, sha256=sha256).order_by("-created_at").first()


def _eval_fields(eval_split: str, eval_fraction: float | None, eval_seed: int, has_file: bool) -> dict:
    if eval_split not in Dataset.EvalSplit.values:
        raise UploadError(f"Unknown eval split {eval_split!r}.")
    if eval_split == Dataset.EvalSplit.FRACTION:
        if eval_fraction is None or not 0 < eval_fraction < 1:
            raise UploadError("The eval fraction must be between 0 and 1 (e.g. 0.05).")
        return {"eval_split": eval_split, "eval_fraction": float(eval_fraction), "eval_seed": int(eval_seed)}
    if eval_split == Dataset.EvalSplit.FILE and not has_file:
        raise UploadError("Choose the eval file, or another eval split.")
    return {"eval_split": eval_split, "eval_fraction": None, "eval_seed": int(eval_seed)}


def _create(team, user, *, name: str, version: int, previous: Dataset | None, fields: dict,
            uploads: list[tuple[str, StoredUpload]], tokenizer: str) -> Dataset:
    """Place the checked files and insert the row, all or nothing."""
    if uploads:  # the team's storage quota (webapp.accounts.quotas): refused before anything is placed
        try:
            quotas.check_storage(team, sum(stored.size_bytes for _, stored in uploads))
        except quotas.QuotaExceeded as e:
            for _, stored in uploads:
                stored.discard()
            raise UploadError(str(e)) from e
    placed = _PlacedUploads()
    try:
        for role, stored in uploads:
            rel = placed.place(team, stored)
            if role == "train":
                fields.update(file_path=rel, original_filename=stored.original_filename,
                              file_format=stored.file_format, sha256=stored.sha256, size_bytes=stored.size_bytes)
            else:
                fields.update(eval_file_path=rel, eval_original_filename=stored.original_filename,
                              eval_sha256=stored.sha256, eval_size_bytes=stored.size_bytes)
        with transaction.atomic():
            dataset = Dataset.objects.create(team=team, name=name, version=version, previous=previous,
                                             created_by=user, tokenizer=tokenizer, **fields)
    except IntegrityError:
        placed.undo()
        raise UploadError(f"A dataset named {name!r} version {version} already exists; try again.") from None
    except BaseException:
        placed.undo()
        raise
    finally:
        for _, stored in uploads:
            stored.discard()  # no-op once moved
    start_validation(dataset)
    return dataset


def create_dataset_from_upload(
    team, user, fileobj: BinaryIO, *, name: str, filename: str, mapping: str | dict | ColumnMapping,
    eval_split: str = Dataset.EvalSplit.NONE, eval_fraction: float | None = None, eval_seed: int = 0,
    eval_fileobj: BinaryIO | None = None, eval_filename: str = "", tokenizer: str = "",
    allow_duplicate: bool = False, prompt_format: dict | None = None,
) -> Dataset:
    """Store an uploaded file as version 1 of a new dataset of `team` and queue its validation.

    Raises UploadError with a message for the user (nothing is left behind); DuplicateDatasetError
    (a subclass, with `.existing`) when the team has the same file already, unless allow_duplicate.
    """
    name = (name or "").strip()
    if not name:
        raise UploadError("Give the dataset a name.")
    if len(name) > Dataset._meta.get_field("name").max_length:
        raise UploadError(f"The name is too long (at most {Dataset._meta.get_field('name').max_length} characters).")
    if Dataset.objects.filter(team=team, name=name).exists():
        raise UploadError(f"Your team already has a dataset named {name!r}; upload a new version from its page or pick another name.")
    mapping_d = mapping_from(mapping)
    prompt_d = prompt_format_from(prompt_format)
    eval_f = _eval_fields(eval_split, eval_fraction, eval_seed, eval_fileobj is not None)
    tokenizer = check_tokenizer(tokenizer)
    uploads = _receive_all(team, fileobj, filename, eval_fileobj if eval_f["eval_split"] == "file" else None,
                           eval_filename, mapping_d)
    if not allow_duplicate:
        existing = find_duplicate(team, uploads[0][1].sha256)
        if existing is not None:
            for _, stored in uploads:
                stored.discard()
            raise DuplicateDatasetError(existing, os.path.basename(filename))
    return _create(team, user, name=name, version=1, previous=None,
                   fields={"mapping": mapping_d, "prompt_format": prompt_d, **eval_f},
                   uploads=uploads, tokenizer=tokenizer)


def _receive_all(team, fileobj, filename, eval_fileobj, eval_filename, mapping_d) -> list[tuple[str, StoredUpload]]:
    uploads: list[tuple[str, StoredUpload]] = []
    try:
        if fileobj is not None:
            uploads.append(("train", _receive(team, fileobj, filename, mapping_d, os.path.basename(filename))))
        if eval_fileobj is not None:
            label = f"Eval file {os.path.basename(eval_filename)}"
            uploads.append(("eval", _receive(team, eval_fileobj, eval_filename, mapping_d, label)))
    except BaseException:
        for _, stored in uploads:
            stored.discard()
        raise
    return uploads


def new_dataset_version(
    dataset: Dataset, user, *, fileobj: BinaryIO | None = None, filename: str = "",
    mapping: str | dict | ColumnMapping | None = None, eval_split: str | None = None,
    eval_fraction: float | None = None, eval_seed: int | None = None, eval_fileobj: BinaryIO | None = None,
    eval_filename: str = "", tokenizer: str | None = None, prompt_format: dict | None = None,
) -> Dataset:
    """A new version of `dataset` (same name, version + 1, previous -> `dataset`) with the changes given.

    Unchanged parts (the file, the eval file, the mapping, ...) are taken over from `dataset`; the
    old version stays as it is, so runs that used it keep their exact data.
    """
    team = dataset.team
    mapping_d = mapping_from(mapping) if mapping is not None else dict(dataset.mapping)
    prompt_d = prompt_format_from(prompt_format) if prompt_format is not None else dict(dataset.prompt_format or {})
    split = eval_split if eval_split is not None else dataset.eval_split
    keep_eval_file = split == Dataset.EvalSplit.FILE and eval_fileobj is None and bool(dataset.eval_file_path)
    eval_f = _eval_fields(
        split,
        eval_fraction if eval_fraction is not None else dataset.eval_fraction,
        eval_seed if eval_seed is not None else dataset.eval_seed,
        eval_fileobj is not None or keep_eval_file,
    )
    tokenizer = check_tokenizer(tokenizer if tokenizer is not None else dataset.tokenizer)
    uploads = _receive_all(team, fileobj, filename, eval_fileobj if split == "file" else None, eval_filename, mapping_d)
    fields: dict = {"mapping": mapping_d, "prompt_format": prompt_d, **eval_f}
    if fileobj is None:
        fields.update(file_path=dataset.file_path, original_filename=dataset.original_filename,
                      file_format=dataset.file_format, sha256=dataset.sha256, size_bytes=dataset.size_bytes)
        if mapping is not None:  # the stored file must still fit the new mapping
            try:
                load_examples(dataset.path, ColumnMapping(**mapping_d), limit=QUICK_CHECK_ROWS)
            except DataError as e:
                for _, stored in uploads:
                    stored.discard()
                raise UploadError(str(e).replace(str(dataset.path), dataset.original_filename)) from None
    if keep_eval_file:
        fields.update(eval_file_path=dataset.eval_file_path, eval_original_filename=dataset.eval_original_filename,
                      eval_sha256=dataset.eval_sha256, eval_size_bytes=dataset.eval_size_bytes)
    version = resources.next_version(Dataset, team, dataset.name)
    return _create(team, user, name=dataset.name, version=version, previous=dataset, fields=fields,
                   uploads=uploads, tokenizer=tokenizer)


def derived_version(dataset: Dataset, user, path: Path, *, filename: str, mapping: ColumnMapping | dict,
                    lineage: dict, eval_path: Path | None = None) -> Dataset:
    """A new version of `dataset` whose training file is `path` (made here: teacher answers joined
    on), stored and checked like an upload, validated like one; the eval split is taken over (with
    `eval_path` as its eval file when given). `lineage` says how it was made (its page shows it).
    UploadError for the user, nothing left behind."""
    mapping_d = mapping_from(dataclasses.asdict(mapping) if isinstance(mapping, ColumnMapping) else mapping)
    with open(path, "rb") as f, (open(eval_path, "rb") if eval_path else contextlib.nullcontext()) as ef:
        uploads = _receive_all(dataset.team, f, filename, ef, dataset.eval_original_filename or "eval.jsonl", mapping_d)
    fields: dict = {"mapping": mapping_d, "lineage": lineage, "purpose": dataset.purpose,
                    "prompt_format": dict(dataset.prompt_format or {}),
                    **_eval_fields(dataset.eval_split, dataset.eval_fraction, dataset.eval_seed, eval_path is not None)}
    version = resources.next_version(Dataset, dataset.team, dataset.name)
    return _create(dataset.team, user, name=dataset.name, version=version, previous=dataset, fields=fields,
                   uploads=uploads, tokenizer=dataset.tokenizer)


# --- tokenizers for the length report ----------------------------------------------------------

TINY_TOKENIZER = ""


def available_tokenizers() -> list[tuple[str, str]]:
    """(value, label) of the tokenizers a user may pick: the built-in tiny one and local HF dirs."""
    choices = [(TINY_TOKENIZER, "Built-in tiny tokenizer (gft_core.tiny)")]
    for root in settings.MODEL_ROOTS:
        root = Path(root)
        if not root.is_dir():
            continue
        for cfg in sorted(list(root.glob("*/tokenizer_config.json")) + list(root.glob("*/*/tokenizer_config.json"))):
            choices.append((str(cfg.parent), str(cfg.parent.relative_to(root))))
    return choices


def check_tokenizer(value: str) -> str:
    """A tokenizer dir is accepted only below one of settings.MODEL_ROOTS (or blank = tiny)."""
    value = (value or "").strip()
    if not value:
        return TINY_TOKENIZER
    path = Path(value).resolve()
    if not any(path.is_relative_to(Path(root).resolve()) for root in settings.MODEL_ROOTS):
        raise UploadError("The tokenizer must be a directory under one of the model roots (MODEL_ROOTS).")
    if not (path / "tokenizer_config.json").is_file():
        raise UploadError(f"{path} holds no Hugging Face tokenizer (tokenizer_config.json).")
    return str(path)


# --- validation, archive, delete ---------------------------------------------------------------

def start_validation(dataset: Dataset, *, tokenizer: str | None = None) -> None:
    """Mark the dataset as waiting for validation and queue the task once the row is committed.

    A broker that cannot be reached makes it invalid with the reason (the page offers "Validate
    again") instead of leaving it waiting for a worker that will never hear of it.
    """
    fields = {"status": Dataset.Status.UPLOADED, "report": {}}
    if tokenizer is not None:
        fields["tokenizer"] = check_tokenizer(tokenizer)
    Dataset.objects.filter(pk=dataset.pk).update(**fields)
    for k, v in fields.items():
        setattr(dataset, k, v)

    def not_queued(exc: Exception) -> None:
        fatal = f"The validation could not be queued ({type(exc).__name__}: {exc}). Validate again."
        Dataset.objects.filter(pk=dataset.pk, status=Dataset.Status.UPLOADED).update(
            status=Dataset.Status.INVALID, report={"fatal": fatal})

    dispatch.send(dispatch.VALIDATE_DATASET, [dataset.pk], on_error=not_queued)


def delete(dataset: Dataset, user) -> None:
    """Delete a dataset version and its files (unless another version shares them).

    Raises InUseError if a run used it (such a dataset can only be archived), PermissionDenied
    unless `user` created it or is a team admin.
    """
    paths = [p for p in (dataset.path, dataset.eval_path) if p is not None]

    def remove_files() -> None:
        for p in paths:
            if not _referenced(p):
                p.unlink(missing_ok=True)

    resources.delete(dataset, user, on_commit=remove_files)
