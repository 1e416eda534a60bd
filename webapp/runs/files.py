"""The files of a run: the worker log read by byte windows, artifact downloads, group samples as
JSONL. Everything is streamed by async iterators (under ASGI Django reads a sync iterator whole
into memory first; a final model can be GBs) and every read is bounded.

- log_window(): at most LOG_WINDOW_BYTES of the log, cut at line ends, after or before an offset;
  the Logs page follows a live log with it (and pages back through a big one).
- artifact_response(): a file as is (Content-Length), a directory (checkpoint, final model) as an
  uncompressed tar written header by header and chunk by chunk: its length is known in advance.
- group_samples_response(): GroupSample rows as JSON lines, read page by page.
Artifacts are served only from inside their run's directory (a path elsewhere is a 404).
"""
from __future__ import annotations

import asyncio
import json
import tarfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

from asgiref.sync import sync_to_async
from django.db.models import Q
from django.http import Http404, StreamingHttpResponse

from .models import Artifact, GroupSample, Run

LOG_WINDOW_BYTES = 256 * 1024  # the most of the log one page or poll answer holds
CHUNK_BYTES = 256 * 1024
GROUP_PAGE_ROWS = 100  # group records are large (tokens, per-token probabilities)


def disk_size(path: str | Path) -> int:
    """Bytes on disk: a file's size, a directory's total (0 when it is not there)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return 0


def _servable(root: Path, artifact: Artifact) -> Path | None:
    """The artifact's resolved path when it exists inside the run's resolved directory `root`."""
    path = Path(artifact.path).resolve()
    return path if path.is_relative_to(root) and path.exists() else None


def artifacts_with_sizes(run: Run) -> list[Artifact]:
    """The run's artifacts, size_bytes the real size on disk now (the log grows after it is
    recorded; a checkpoint may be pruned), on_disk whether it can be downloaded: what the run page
    and the API show."""
    root = run.directory.resolve()
    arts = list(run.artifacts.all())
    for a in arts:
        path = _servable(root, a)  # only what can be downloaded (artifact_path) is measured and offered
        a.on_disk = path is not None
        if path is not None:
            a.size_bytes = disk_size(path)
    return arts


# ---------------------------------------------------------------------------- the log
@dataclass
class LogWindow:
    start: int  # byte offset of the first byte of text
    end: int  # byte offset after the last byte of text
    size: int  # the file's size when read
    text: str


def log_window(path: Path, *, after: int | None = None, before: int | None = None,
               limit: int = LOG_WINDOW_BYTES, partial_end: bool = False) -> LogWindow:
    """At most `limit` bytes of the log: from `after` on (the next lines of a followed log), or up
    to `before` (earlier lines; the default: the end of the file, i.e. its tail). Cut at line ends
    so that no line (nor UTF-8 character) is split across two windows, unless a single line is
    longer than the window. `partial_end`: a last line without its newline comes too (the log of
    an ended run: nothing will complete it)."""
    if not path.is_file():
        return LogWindow(0, 0, 0, "")
    with path.open("rb") as f:
        size = f.seek(0, 2)
        if after is not None:
            start = min(max(0, after), size)
            f.seek(start)
            data = f.read(min(limit, size - start))
            cut = data.rfind(b"\n") + 1
            if partial_end is False and (cut or len(data) < limit):
                data = data[:cut]  # a line still being written comes in a later window
        else:
            end = size if before is None else min(max(0, before), size)
            start = max(0, end - limit)
            f.seek(start)
            data = f.read(end - start)
            if start > 0:  # drop the partial first line
                cut = data.find(b"\n") + 1
                if 0 < cut < len(data):
                    start, data = start + cut, data[cut:]
    return LogWindow(start, start + len(data), size, data.decode("utf-8", errors="replace"))


async def file_chunks(path: Path, size: int, chunk: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
    """The first `size` bytes of a file in chunks, each read in a worker thread: an async iterator,
    so under ASGI the response streams instead of being read whole into memory."""
    f = await asyncio.to_thread(path.open, "rb")
    try:
        left = size
        while left > 0:
            data = await asyncio.to_thread(f.read, min(chunk, left))
            if not data:
                return
            left -= len(data)
            yield data
    finally:
        await asyncio.to_thread(f.close)


# ---------------------------------------------------------------------------- artifacts
def artifact_path(run: Run, artifact: Artifact) -> Path:
    """The artifact's path, when it exists inside the run's directory; else 404."""
    path = _servable(run.directory.resolve(), artifact)
    if path is None:
        raise Http404("This artifact is not on disk (pruned or deleted).")
    return path


def artifact_filename(run: Run, artifact: Artifact, path: Path) -> str:
    if path.is_dir():
        return f"run{run.pk}-{artifact.kind}-step{artifact.step}.tar"
    return f"run{run.pk}-{path.name}"


def _tar_members(root: Path, arcroot: str) -> list[tuple[Path | None, bytes, int]]:
    """(file or None for a directory, tar header, size) of every entry under `root`, sorted."""
    members = []
    for p in [root, *sorted(root.rglob("*"))]:
        if p.is_symlink() or not (p.is_dir() or p.is_file()):
            continue  # only plain files and directories leave the run directory
        st = p.stat()
        info = tarfile.TarInfo("/".join([arcroot, *p.relative_to(root).parts]))
        info.mtime = int(st.st_mtime)
        if p.is_dir():
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            members.append((None, info.tobuf(tarfile.PAX_FORMAT), 0))
        else:
            info.size, info.mode = st.st_size, 0o644
            members.append((p, info.tobuf(tarfile.PAX_FORMAT), st.st_size))
    return members


def _tar_length(members: Iterable[tuple[Path | None, bytes, int]]) -> int:
    body = sum(len(h) + size + (-size % tarfile.BLOCKSIZE) for _, h, size in members) + 2 * tarfile.BLOCKSIZE
    return body + (-body % tarfile.RECORDSIZE)


async def tar_chunks(members: list[tuple[Path | None, bytes, int]]) -> AsyncIterator[bytes]:
    """A tar of `members`, streamed: each header, then the file in chunks. A file that shrank
    since its header was made is padded with zeros, one that grew is cut, so the archive has
    exactly _tar_length(members) bytes."""
    total = 0
    for path, header, size in members:
        yield header
        total += len(header)
        if path is None:
            continue
        sent = 0
        async for data in file_chunks(path, size):
            sent += len(data)
            yield data
        pad = size - sent + (-size % tarfile.BLOCKSIZE)
        if pad:
            yield b"\0" * pad
        total += size + (-size % tarfile.BLOCKSIZE)
    yield b"\0" * (_tar_length(members) - total)  # the end-of-archive blocks, padded to a record


def artifact_response(run: Run, artifact: Artifact) -> StreamingHttpResponse:
    """The artifact as a download: a file as is, a directory as a streamed tar."""
    path = artifact_path(run, artifact)
    name = artifact_filename(run, artifact, path)
    if path.is_dir():
        members = _tar_members(path, name.removesuffix(".tar"))
        body, length, ctype = tar_chunks(members), _tar_length(members), "application/x-tar"
    else:
        length = path.stat().st_size  # the bytes there now: a live log grows behind them
        body = file_chunks(path, length)
        ctype = "text/plain; charset=utf-8" if artifact.kind == Artifact.Kind.LOG else "application/octet-stream"
    return StreamingHttpResponse(body, content_type=ctype, headers={
        "Content-Length": str(length), "Content-Disposition": f'attachment; filename="{name}"'})


# ---------------------------------------------------------------------------- group samples
def _group_page(run_id: int, after: tuple[int, int] | None) -> list[tuple[int, int, dict]]:
    qs = GroupSample.objects.filter(run_id=run_id)
    if after is not None:
        qs = qs.filter(Q(step__gt=after[0]) | Q(step=after[0], group_index__gt=after[1]))
    return list(qs.order_by("step", "group_index").values_list("step", "group_index", "data")[:GROUP_PAGE_ROWS])


async def group_sample_lines(run_id: int) -> AsyncIterator[str]:
    """One JSON object per sampled group ({run, step, group_index, ...the trainer's record}), in
    step order, read GROUP_PAGE_ROWS rows at a time (keyset pages: no OFFSET)."""
    after = None
    while True:
        page = await sync_to_async(_group_page)(run_id, after)
        if not page:
            return
        yield "".join(json.dumps({**(data if isinstance(data, dict) else {"data": data}), "run": run_id,
                                  "step": step, "group_index": index}) + "\n" for step, index, data in page)
        after = page[-1][:2]


def group_samples_response(run: Run) -> StreamingHttpResponse:
    return StreamingHttpResponse(group_sample_lines(run.pk), content_type="application/x-ndjson", headers={
        "Content-Disposition": f'attachment; filename="run{run.pk}-group-samples.jsonl"'})
