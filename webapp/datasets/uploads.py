"""Streaming an uploaded dataset file to artifact storage while checking what it is.

One pass over the upload, in chunks (never the whole file in memory): the bytes go to a temporary
file next to their final place, into sha256, and (decompressed when gzipped) into an inspector
that checks the content matches the extension. Any problem raises UploadError and removes the
temporary file. Reading rows and columns is left to gft_core.data; this module only decides
whether the bytes are what the name says.
"""
from __future__ import annotations

import codecs
import hashlib
import os
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload

from gft_core.data import EXTENSIONS

CHUNK = 1024 * 1024
GZIP_INPUT_PIECE = 64 * 1024  # fed to zlib in pieces so the ratio guard reacts early
GZIP_OUTPUT_PIECE = 1024 * 1024  # zlib never returns more than this per call (a bomb cannot burst)
GZIP_RATIO_GRACE = 16 * 1024 * 1024  # small files may compress very well; judge the ratio above this
HEAD_BYTES = 64 * 1024

FORMAT_NAMES = {".jsonl": "JSON Lines", ".json": "JSON Lines", ".csv": "CSV", ".parquet": "Parquet"}
# Magic numbers of things people upload by mistake, to say what a file really is.
SIGNATURES: list[tuple[bytes, str]] = [
    (b"PAR1", "a Parquet file"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"PK\x03\x04", "a ZIP archive (or an Excel/Word file)"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x7fELF", "a Linux executable"),
    (b"SQLite format 3", "an SQLite database"),
    (b"\xd0\xcf\x11\xe0", "an old Microsoft Office file"),
    (b"BZh", "bzip2-compressed data"),
    (b"\xfd7zXZ", "xz-compressed data"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data"),
    (b"\xff\xfe", "UTF-16 text (save it as UTF-8)"),
    (b"\xfe\xff", "UTF-16 text (save it as UTF-8)"),
]


class UploadError(ValueError):
    """The upload is refused; the message is meant for the user."""


def max_upload_bytes() -> int:
    return int(settings.UPLOAD_MAX_BYTES)


def max_decompressed_bytes() -> int:
    return int(getattr(settings, "UPLOAD_MAX_DECOMPRESSED_BYTES", 4 * settings.UPLOAD_MAX_BYTES))


def max_gzip_ratio() -> float:
    return float(getattr(settings, "UPLOAD_MAX_GZIP_RATIO", 100))


def too_large_message(label: str) -> str:
    return f"{label}: the file is larger than the upload limit of {human_bytes(max_upload_bytes())}."


class SizeLimitUploadHandler(FileUploadHandler):
    """Stops reading a request's upload as soon as it passes UPLOAD_MAX_BYTES, before it fills the disk.

    Sets `request.upload_too_large` to the file's name (None while within the limit). Install it
    before anything reads the body (Django's docs: before CSRF checking). store_upload checks
    the limit again while storing; this handler only spares the temporary file Django would
    otherwise write in full.
    """

    def __init__(self, request):
        super().__init__(request)
        request.upload_too_large = None

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int):
        self.received += len(raw_data)
        if self.received > max_upload_bytes():
            self.request.upload_too_large = self.file_name
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size: int):
        return None


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def split_suffix(filename: str) -> tuple[str, bool]:
    """(data extension, gzipped) of a file name, or UploadError naming the accepted ones."""
    name = os.path.basename(filename or "").strip()
    lower = name.lower()
    gz = lower.endswith(".gz")
    stem = lower[:-3] if gz else lower
    for ext in EXTENSIONS:
        if stem.endswith(ext) and len(stem) > len(ext):
            return ext, gz
    accepted = ", ".join(EXTENSIONS)
    raise UploadError(
        f"{name or 'The file'}: unsupported file type. Upload {accepted} (optionally gzipped, e.g. data.jsonl.gz)."
    )


def describe_bytes(head: bytes) -> str | None:
    """What a file's first bytes say it is, if we recognise a binary signature."""
    for magic, what in SIGNATURES:
        if head.startswith(magic):
            return what
    return None


class _ContentInspector:
    """Checks decompressed bytes against the expected format as they stream past."""

    def __init__(self, ext: str, label: str):
        self.ext, self.label = ext, label
        self.text = ext != ".parquet"
        self.head = b""
        self.tail = b""
        self.size = 0
        self.newlines = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
            if self.size == 0:
                self._check_start()
        self.tail = (self.tail + data)[-8:]
        if self.text:
            self._check_text(data)
        self.size += len(data)

    def _check_start(self) -> None:
        kind = describe_bytes(self.head)
        expected = FORMAT_NAMES[self.ext]
        if self.ext == ".parquet":
            if not self.head.startswith(b"PAR1") and len(self.head) >= 4:
                found = kind or "not a Parquet file"
                raise UploadError(f"{self.label}: the name says {expected}, but the content is {found}.")
            return
        if kind is not None:
            hint = " Name it …" + self.ext + ".gz." if kind == "gzip-compressed data" else ""
            raise UploadError(f"{self.label}: the name says {expected}, but the content is {kind}.{hint}")

    def _check_text(self, data: bytes) -> None:
        if b"\x00" in data:
            line = self.newlines + data[: data.index(b"\x00")].count(b"\n") + 1
            raise UploadError(
                f"{self.label}: line {line} contains NUL bytes: this is binary data, not {FORMAT_NAMES[self.ext]} text."
            )
        pending = self._decoder.getstate()[0]
        try:
            self._decoder.decode(data)
        except UnicodeDecodeError as e:
            seen = pending + data
            line = self.newlines + seen[: e.start].count(b"\n") + 1
            raise UploadError(
                f"{self.label}: invalid UTF-8 on line {line} ({e.reason}, byte {seen[e.start:e.start + 1]!r}). "
                "Save the file as UTF-8 and upload it again."
            ) from None
        self.newlines += data.count(b"\n")

    def finish(self) -> None:
        if self.size == 0:
            raise UploadError(f"{self.label}: the file is empty.")
        if self.text:
            try:
                self._decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                raise UploadError(f"{self.label}: invalid UTF-8 at the end of the file (a truncated character).") from None
            first = self.head.lstrip(b"\xef\xbb\xbf").lstrip()
            if not first:
                raise UploadError(f"{self.label}: the file holds only blank lines; no rows.")
            expected = FORMAT_NAMES[self.ext]
            if self.ext in (".jsonl", ".json"):
                if first.startswith(b"["):
                    raise UploadError(
                        f"{self.label}: this is a JSON array; {expected} needs one JSON object per line "
                        "(e.g. convert with: jq -c '.[]' data.json > data.jsonl)."
                    )
                if not first.startswith(b"{"):
                    raise UploadError(
                        f"{self.label}: the name says {expected}, but line 1 does not start with a JSON object: "
                        f"{first[:60].decode('utf-8', 'replace')!r}"
                    )
            elif first.startswith((b"{", b"[")):
                raise UploadError(f"{self.label}: the name says CSV, but the content looks like JSON; name it .jsonl.")
        elif not (self.head.startswith(b"PAR1") and self.tail.endswith(b"PAR1") and self.size >= 12):
            raise UploadError(f"{self.label}: the name says Parquet, but the file is not a complete Parquet file.")


class _GunzipStream:
    """Streaming gunzip (multi-member) with a decompressed-size and ratio guard."""

    def __init__(self, inspector: _ContentInspector, label: str):
        self.inspector, self.label = inspector, label
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.consumed = 0
        self.out = 0
        self._started = False

    def feed(self, chunk: bytes) -> None:
        if not self._started:
            self._started = True
            if not chunk.startswith(b"\x1f\x8b"):
                what = describe_bytes(chunk) or "not gzip data"
                raise UploadError(f"{self.label}: the name ends in .gz, but the content is {what}.")
        for i in range(0, len(chunk), GZIP_INPUT_PIECE):
            self._feed_piece(chunk[i : i + GZIP_INPUT_PIECE])

    def _feed_piece(self, data: bytes) -> None:
        while data:
            if self._d.eof:  # next member of a multi-member gzip (as `cat a.gz b.gz` makes)
                data = self._d.unused_data + data
                self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = self._d.decompress(data, GZIP_OUTPUT_PIECE)
            except zlib.error as e:
                raise UploadError(f"{self.label}: corrupt gzip data ({e}).") from None
            self.consumed += len(data) - len(self._d.unconsumed_tail) - len(self._d.unused_data)
            self._emit(out)
            data = self._d.unconsumed_tail
            if self._d.eof and self._d.unused_data:
                data = self._d.unused_data + data
                self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                continue

    def _emit(self, out: bytes) -> None:
        self.out += len(out)
        limit = max_decompressed_bytes()
        if self.out > limit:
            raise UploadError(
                f"{self.label}: decompresses to more than {human_bytes(limit)}, the limit for gzipped uploads."
            )
        ratio = self.out / max(self.consumed, 1)
        if self.out > GZIP_RATIO_GRACE and ratio > max_gzip_ratio():
            raise UploadError(
                f"{self.label}: refused as a likely gzip bomb: it expands more than {max_gzip_ratio():.0f}x "
                f"({human_bytes(self.consumed)} gave {human_bytes(self.out)} and counting)."
            )
        self.inspector.feed(out)

    def finish(self) -> None:
        if not self._started:
            return
        if not self._d.eof:
            raise UploadError(f"{self.label}: the gzip data is truncated (an incomplete upload?).")


@dataclass
class StoredUpload:
    """A checked upload in its temporary place, ready to be moved to its final path."""

    tmp_path: Path
    original_filename: str
    file_format: str  # "jsonl", "parquet", "csv", "jsonl.gz", ...
    suffix: str  # ".jsonl", ".jsonl.gz", ...
    sha256: str
    size_bytes: int
    decompressed_bytes: int

    def discard(self) -> None:
        self.tmp_path.unlink(missing_ok=True)


def _read_chunks(fileobj) -> "iter[bytes]":
    if hasattr(fileobj, "chunks"):  # Django UploadedFile: reads from its temp file or memory
        fileobj.seek(0)
        yield from fileobj.chunks(CHUNK)
        return
    while True:
        chunk = fileobj.read(CHUNK)
        if not chunk:
            return
        yield chunk


def store_upload(fileobj: BinaryIO, filename: str, incoming_dir: Path, *, label: str | None = None) -> StoredUpload:
    """Stream `fileobj` into a temporary file under `incoming_dir`, checking it on the way.

    Raises UploadError (and leaves nothing behind) for a wrong extension, an empty file, a file
    over settings.UPLOAD_MAX_BYTES, content that is not what the extension says, invalid UTF-8
    in a text format, and gzip data that is corrupt or expands suspiciously (gzip bomb).
    """
    label = label or os.path.basename(filename or "upload")
    ext, gz = split_suffix(filename)
    suffix = ext + (".gz" if gz else "")
    incoming_dir.mkdir(parents=True, exist_ok=True)
    tmp_path = incoming_dir / f"{uuid.uuid4().hex}{suffix}"
    limit = max_upload_bytes()
    inspector = _ContentInspector(ext, label)
    gunzip = _GunzipStream(inspector, label) if gz else None
    digest = hashlib.sha256()
    size = 0
    try:
        with open(tmp_path, "xb") as out:
            for chunk in _read_chunks(fileobj):
                size += len(chunk)
                if size > limit:
                    raise UploadError(too_large_message(label))
                digest.update(chunk)
                out.write(chunk)
                (gunzip or inspector).feed(chunk)
        if size == 0:
            raise UploadError(f"{label}: the file is empty.")
        if gunzip is not None:
            gunzip.finish()
        inspector.finish()
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return StoredUpload(
        tmp_path=tmp_path,
        original_filename=os.path.basename(filename)[:255],
        file_format=suffix.lstrip("."),
        suffix=suffix,
        sha256=digest.hexdigest(),
        size_bytes=size,
        decompressed_bytes=inspector.size,
    )
