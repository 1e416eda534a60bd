"""Scoring under a wall-clock budget per response, in a forked child process.

Reward code runs on text a model wrote and on parameters a user typed: sympy can spend minutes on
one answer, and code stuck in C (sympy's big integers, a regex engine) holds the GIL, so neither a
thread nor a signal in the calling process can stop it, and the caller's other threads (the run's
heartbeat) would stop with it. So a Scorer forks ONE child on its first batch and keeps it. The
parent sends each batch through a pipe; the child scores response after response into a small
shared-memory area (score + count done, no system call per response) and says "done" through a
pipe. The parent waits in select() (GIL released), looking at the count every few ms: a response
that has not finished `budget_s` after the previous one scores 0 and is counted; that child is
killed and a new one forked for the responses after it. A child that dies counts the same way.

Cost in the common case: no fork after the first batch, the batch pickled through a pipe, one
wake-up per batch (a fork costs ~6 ms for a 160 MB process but ~170 ms for a 2 GiB one on a VM,
so it is not paid per batch). The child shares the parent's memory copy-on-write as of its fork;
pages the parent rewrites later stay with the child: at most the parent's memory at that time.
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import mmap
import os
import pickle
import select
import signal
import struct
import threading
import time
from typing import Callable, Sequence

ScoreOne = Callable[[str, "str | None", str], float]

CHUNK = 4096  # responses per request: the shared area holds this many scores
_POLL_S = 0.05  # how often the parent looks at the count while a batch runs
_LENGTH = struct.Struct("<Q")  # parent -> child: length + pickled (responses, ground_truths, prompts)
_COUNT = struct.Struct("<Q")  # shared area: responses done in this request, then CHUNK float64 scores
_DONE, _ERROR = b"D", b"E"  # child -> parent: done; or b"E" + length + pickled exception
_PR_SET_PDEATHSIG = 1
_PIPE_BYTES = 1 << 20  # Linux's default maximum pipe size for unprivileged processes


class Scorer:
    """score_one(response, ground_truth, prompt) -> float, applied to batches in a forked child
    under a per-response wall-clock budget. Thread-safe (batches are scored one at a time)."""

    def __init__(self, score_one: ScoreOne, budget_s: float):
        self.score_one, self.budget_s = score_one, budget_s
        self._lock = threading.Lock()
        self._child: _Child | None = None

    def __call__(self, responses: Sequence[str], ground_truths: Sequence[str | None],
                 prompts: Sequence[str]) -> tuple[list[float], int]:
        """(score per response, how many ran over the budget and scored 0.0). An exception raised
        by score_one is raised here, with a note naming the response."""
        scores: list[float] = []
        timeouts = 0
        with self._lock:
            while len(scores) < len(responses):
                start = len(scores)
                end = min(start + CHUNK, len(responses))
                done = self._score_chunk(responses[start:end], ground_truths[start:end], prompts[start:end], start)
                scores += done
                if start + len(done) < end:  # this response ran over its budget: 0.0, go on after it
                    scores.append(0.0)
                    timeouts += 1
        return scores, timeouts

    def close(self) -> None:
        """Stop the child (also done when the Scorer is garbage-collected or the parent exits)."""
        child, self._child = self._child, None
        if child is not None:
            child.stop()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit os may be half torn down; the child dies with us anyway
            pass

    def _score_chunk(self, responses, ground_truths, prompts, offset: int) -> list[float]:
        """Scores of the responses the child finished in time (all of them, or those before the
        one that ran over the budget or killed the child)."""
        if self._child is not None and self._child.owner != os.getpid():
            self.close()  # we are a process forked from the one that forked this child
        request = pickle.dumps((list(responses), list(ground_truths), list(prompts)), protocol=5)
        if self._child is not None:
            try:
                self._child.send(request)
            except BrokenPipeError:  # it died since the last batch: that costs no response
                self.close()
        if self._child is None:
            self._child = _Child(self.score_one)
            self._child.send(request)
        child, in_sync = self._child, False
        try:
            n_done = child.wait(len(responses), self.budget_s)
            in_sync = n_done == len(responses)
            return child.scores(n_done)
        except _ChildError as e:
            in_sync = True  # the child reported the error and stopped this request
            e.error.add_note(f"(while scoring responses[{offset + e.index}])")
            raise e.error from None
        finally:
            if not in_sync:  # over budget, dead, or interrupted: a new child for what is left
                self.close()


class _ChildError(Exception):
    def __init__(self, error: BaseException, index: int):
        self.error, self.index = error, index


class _Child:
    """A forked scoring process, its pipes and the shared area it writes scores into."""

    def __init__(self, score_one: ScoreOne):
        self.owner = os.getpid()
        self.shared = mmap.mmap(-1, _COUNT.size + 8 * CHUNK)  # anonymous and shared with the child
        request_r, self.request_fd = os.pipe()
        try:  # a batch in one write rather than 64 KiB at a time, each waking the child
            fcntl.fcntl(self.request_fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        except (OSError, AttributeError):
            pass
        self.reply_fd, reply_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self.request_fd)
            os.close(self.reply_fd)
            _serve(score_one, request_r, reply_w, self.shared)  # never returns
        os.close(request_r)
        os.close(reply_w)

    def send(self, request: bytes) -> None:
        _COUNT.pack_into(self.shared, 0, 0)
        _write_all(self.request_fd, _LENGTH.pack(len(request)) + request)

    def done(self) -> int:
        return _COUNT.unpack_from(self.shared, 0)[0]

    def wait(self, n: int, budget_s: float) -> int:
        """Wait until the child has scored all n responses or one ran over budget_s; return how
        many it finished. Raise _ChildError for an exception in the scoring."""
        seen, deadline = 0, time.monotonic() + budget_s
        while True:
            left = deadline - time.monotonic()
            if left > 0 and select.select([self.reply_fd], [], [], min(left, _POLL_S, budget_s / 4))[0]:
                tag = os.read(self.reply_fd, 1)
                if tag == _DONE:
                    return n
                if tag == _ERROR:
                    length = _LENGTH.unpack(_read_exactly(self.reply_fd, _LENGTH.size))[0]
                    raise _ChildError(pickle.loads(_read_exactly(self.reply_fd, length)), self.done())
                return self._stop_at()  # EOF: the child died (killed, out of memory, crashed)
            done = self.done()
            if done > seen:
                seen, deadline = done, time.monotonic() + budget_s
            elif time.monotonic() >= deadline:
                return self._stop_at()

    def _stop_at(self) -> int:
        self.stop()
        return self.done()  # final once the child is gone

    def scores(self, n: int) -> list[float]:
        return list(struct.unpack_from(f"<{n}d", self.shared, _COUNT.size))

    def stop(self) -> None:
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        os.close(self.request_fd)
        os.close(self.reply_fd)
        if self.owner == os.getpid():  # a process forked from ours holds a copy of this object, not the child
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exactly(fd: int, n: int) -> bytes | None:
    parts, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _serve(score_one: ScoreOne, request_fd: int, reply_fd: int, shared: mmap.mmap) -> None:
    """The child: serve requests until the parent closes the pipe; exit without the parent's
    cleanup (atexit handlers, buffered output, database sockets)."""
    try:
        # Objects inherited from the parent are never collected here: a full collection would
        # touch (and so copy) every page of the parent's heap.
        gc.freeze()
        try:  # if the parent dies, so does a child stuck in C code (Linux)
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
        while True:
            header = _read_exactly(request_fd, _LENGTH.size)
            body = _read_exactly(request_fd, _LENGTH.unpack(header)[0]) if header else None
            if body is None:
                return
            responses, ground_truths, prompts = pickle.loads(body)
            reply = _DONE
            for i in range(len(responses)):
                try:
                    score = float(score_one(responses[i], ground_truths[i], prompts[i]))
                except Exception as e:
                    try:
                        payload = pickle.dumps(e)
                    except Exception:
                        payload = pickle.dumps(RuntimeError(f"{type(e).__name__}: {e}"))
                    reply = _ERROR + _LENGTH.pack(len(payload)) + payload
                    break
                struct.pack_into("<d", shared, _COUNT.size + 8 * i, score)
                _COUNT.pack_into(shared, 0, i + 1)
            _write_all(reply_fd, reply)
    finally:
        os._exit(0)
