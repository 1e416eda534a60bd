"""PostgresRedisSink against the real Postgres and Redis, with real outages through a TCP proxy
that the test cuts and restores (no mocks): nothing buffered is lost, a retried batch creates no
duplicate, a resume rewrites the steps after its checkpoint, Redis down does not stop Postgres."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from tests.runs_support import tiny_assets, wait_for  # noqa: F401
from webapp.runs import live
from webapp.runs.models import Artifact, GroupSample, MetricHistogram, MetricKey, MetricPoint, Run
from workers.sink import PostgresRedisSink, conninfo_from_settings, run_observers

pytestmark = pytest.mark.django_db(transaction=True)


class Proxy:
    """A TCP forwarder to (host, port) that can be cut (every connection closed, new ones refused)."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.up = False
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self.conns = []

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def run(team):
    return Run.objects.create(team=team, name="sink", method="gft", config={})


def points(run_id: int, key: str = "loss") -> list[tuple[int, float]]:
    k = MetricKey.objects.get(name=key)
    return list(MetricPoint.objects.filter(run_id=run_id, key_id=k.pk).order_by("step").values_list("step", "value"))


def stream(run_id: int) -> list[dict]:
    return [json.loads(f[b"data"]) for _, f in live.client().xrange(live.stream_key(run_id)) if b"data" in f]


def test_everything_lands_in_postgres_and_redis(run, tmp_path):
    ckpt = tmp_path / "step-2"
    ckpt.mkdir()
    (ckpt / "w.bin").write_bytes(b"x" * 100)
    sink = PostgresRedisSink(run.pk, flush_interval=0.05)
    sink.start(total_steps=3, start_step=0, config={})
    for step in (1, 2, 3):
        sink.log(step, {"loss": 1.0 / step, "reward/mean": step * 0.1},
                 {"adv/hist": {"lo": -3.0, "hi": 3.0, "counts": [step, 0, 1]}})
    sink.log(3, {"eval/accuracy": 0.5})  # a second call for the same step merges
    sink.log_groups(2, [{"group_id": 0, "prompt": "1+1", "responses": []}])
    sink.artifact("checkpoint", str(ckpt), 2)
    sink.close()
    assert points(run.pk) == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    assert points(run.pk, "eval/accuracy") == [(3, 0.5)]
    assert MetricHistogram.objects.filter(run_id=run.pk).count() == 3
    assert GroupSample.objects.get(run=run).data["prompt"] == "1+1"
    assert Artifact.objects.get(run=run, kind="checkpoint").size_bytes == 100
    run.refresh_from_db()
    assert (run.step, run.total_steps) == (3, 3) and run.summary["loss"] == pytest.approx(1 / 3)
    entries = stream(run.pk)
    assert [e["step"] for e in entries] == [1, 2, 3]
    assert entries[-1]["scalars"]["eval/accuracy"] == 0.5 and entries[0]["histograms"]["adv/hist"]["counts"][0] == 1


def test_flush_observers_see_each_stored_batch_and_a_failing_one_stops_nothing(run):
    """The observer list: every observer gets {step: scalars} after the commit, in step order; one
    that raises is logged and the next still runs; run_observers() puts the team's alert rules in it
    (the built-in non-finite-loss rule fires from the sink's flush)."""
    from webapp.alerts.models import Alert

    seen: list[dict] = []

    def broken(batch):
        raise RuntimeError("observer bug")

    def recorder(batch):  # the points are committed when an observer runs
        seen.append({s: (sc, points(run.pk)[-1][0]) for s, sc in batch.items()})

    observers = run_observers(run.pk)
    assert [type(o).__name__ for o in observers] == ["RunMonitor"]  # not a sweep trial: no pruning reporter
    sink = PostgresRedisSink(run.pk, flush_interval=60, observers=[broken, *observers, recorder])
    sink.start(total_steps=3, start_step=0, config={})
    sink.log(2, {"loss": float("inf")})
    sink.log(1, {"loss": 1.0})
    sink.flush()
    sink.log(3, {"loss": 0.5})
    sink.close()
    assert [list(b) for b in seen] == [[1, 2], [3]]
    assert seen[0][2] == ({"loss": float("inf")}, 2) and seen[1][3] == ({"loss": 0.5}, 3)
    assert points(run.pk) == [(1, 1.0), (2, float("inf")), (3, 0.5)]
    fired = Alert.objects.get(run=run, rule__builtin="nonfinite_loss")
    assert (fired.step, fired.state, fired.cleared_step) == (2, "cleared", 3)


def test_points_are_stored_bit_for_bit(run):
    """The binary COPY rows carry each value, step and wall time exactly, non-finite values
    included (JSON consumers get null for those), whatever keys each step has."""
    values = {1: {"a": 0.1, "b": float("nan")}, 7: {"b": float("inf"), "c": -5e-324},
              2**31 - 1: {"a": -float("inf"), "c": 1.7976931348623157e308}}
    t0 = time.time()
    sink = PostgresRedisSink(run.pk, flush_interval=60)
    sink.start(total_steps=2**31 - 1, start_step=0, config={})
    for step, scalars in values.items():
        sink.log(step, scalars)
    sink.close()
    t1 = time.time()
    names = dict(MetricKey.objects.values_list("id", "name"))
    stored = {(step, names[key]): (value, wall) for key, step, value, wall in
              MetricPoint.objects.filter(run_id=run.pk).values_list("key_id", "step", "value", "wall_time")}
    expected = {(step, k): v for step, scalars in values.items() for k, v in scalars.items()}
    assert stored.keys() == expected.keys()
    for where, v in expected.items():
        got, wall = stored[where]
        assert (got == v) or (got != got and v != v), where
        assert t0 <= wall <= t1
    assert stored[(7, "b")][1] == stored[(7, "c")][1]  # one wall time per step
    run.refresh_from_db()
    assert run.summary["a"] is None and run.summary["b"] is None and float(run.summary["c"]) == 1.7976931348623157e308
    assert stream(run.pk)[0]["scalars"] == {"a": 0.1, "b": None}


def test_retried_batch_creates_no_duplicate(run):
    sink = PostgresRedisSink(run.pk, flush_interval=60)
    sink.start(total_steps=5, start_step=0, config={})
    batch = {s: [time.time(), {"loss": float(s), "grad_norm": 2.0 * s}, {}] for s in range(1, 6)}
    sink._write(dict(batch), [], [])
    batch[5][1]["loss"] = 50.0  # the retry carries the same steps (one value corrected)
    sink._write(dict(batch), [], [])  # e.g. a commit whose acknowledgement was lost
    sink.close()
    assert points(run.pk) == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 50.0)]
    assert MetricPoint.objects.filter(run_id=run.pk).count() == 10


def test_resume_rewrites_steps_after_the_checkpoint(run):
    sink = PostgresRedisSink(run.pk, flush_interval=0.05)
    sink.start(total_steps=10, start_step=0, config={})
    for s in range(1, 8):
        sink.log(s, {"loss": 1.0})
    sink.close()
    resumed = PostgresRedisSink(run.pk, flush_interval=0.05)
    resumed.start(total_steps=10, start_step=4, config={})  # checkpoint at 4: steps 5..7 are gone
    assert [s for s, _ in points(run.pk)] == [1, 2, 3, 4]
    for s in range(5, 11):
        resumed.log(s, {"loss": 2.0})
    resumed.close()
    assert points(run.pk) == [(s, 1.0) for s in range(1, 5)] + [(s, 2.0) for s in range(5, 11)]


def test_postgres_outage_loses_nothing(run):
    params = conninfo_from_settings()
    proxy = Proxy(params["host"], int(params["port"]))
    try:
        sink = PostgresRedisSink(run.pk, conninfo={**params, "host": "127.0.0.1", "port": proxy.port},
                                 flush_interval=0.05)
        sink.start(total_steps=60, start_step=0, config={})
        for s in range(1, 21):
            sink.log(s, {"loss": float(s)})
        wait_for(lambda: sink.last_step == 20, timeout=30, what="first batch")
        proxy.cut()
        for s in range(21, 41):  # Postgres unreachable: these wait in the buffer
            sink.log(s, {"loss": float(s)})
            time.sleep(0.02)
        wait_for(lambda: sink._error is not None, timeout=30, what="a failed flush")
        assert sink.last_step == 20
        proxy.restore()
        for s in range(41, 61):
            sink.log(s, {"loss": float(s)})
        sink.close()
    finally:
        proxy.close()
    assert points(run.pk) == [(s, float(s)) for s in range(1, 61)]


def test_redis_outage_keeps_postgres_and_the_stream_catches_up(run, settings):
    from urllib.parse import urlparse

    u = urlparse(settings.REDIS_URL)
    proxy = Proxy(u.hostname, u.port or 6379)
    try:
        url = u._replace(netloc=f"{u.netloc.rsplit('@', 1)[0] + '@' if '@' in u.netloc else ''}127.0.0.1:{proxy.port}").geturl()
        sink = PostgresRedisSink(run.pk, redis_url=url, flush_interval=0.05)
        sink.start(total_steps=30, start_step=0, config={})
        for s in range(1, 11):
            sink.log(s, {"loss": float(s)})
        wait_for(lambda: len(stream(run.pk)) == 10, timeout=30, what="live entries")
        proxy.cut()
        for s in range(11, 21):
            sink.log(s, {"loss": float(s)})
        wait_for(lambda: sink.last_step == 20, timeout=30, what="Postgres writes while Redis is down")
        assert len(stream(run.pk)) == 10
        proxy.restore()
        for s in range(21, 31):
            sink.log(s, {"loss": float(s)})
        sink.close()
    finally:
        proxy.close()
    assert [s for s, _ in points(run.pk)] == list(range(1, 31))
    assert [e["step"] for e in stream(run.pk)] == list(range(1, 31))


def test_buffer_overflow_is_a_clear_error(run):
    """The buffer only fills while Postgres is unreachable: then the trainer gets a clear error."""
    from workers.sink import SinkOverflowError

    params = conninfo_from_settings()
    proxy = Proxy(params["host"], int(params["port"]))
    try:
        sink = PostgresRedisSink(run.pk, conninfo={**params, "host": "127.0.0.1", "port": proxy.port},
                                 flush_interval=0.05, max_buffer_points=10, close_timeout=2)
        sink.start(total_steps=5, start_step=0, config={})
        proxy.cut()
        sink.log(1, {f"k{i}": 1.0 for i in range(8)})
        wait_for(lambda: sink._error is not None, timeout=30, what="a failed flush")
        with pytest.raises(SinkOverflowError, match="buffer of run"):
            sink.log(2, {f"k{i}": 1.0 for i in range(8)})
        proxy.restore()
        sink.close()
    finally:
        proxy.close()
    assert MetricPoint.objects.filter(run_id=run.pk).count() == 8


def test_group_record_with_nul_character_is_stored(run):
    """A sampled response can decode to text with NUL, which Postgres' jsonb refuses."""
    sink = PostgresRedisSink(run.pk, flush_interval=0.05)
    sink.start(total_steps=1, start_step=0, config={})
    sink.log(1, {"loss": 1.0})
    sink.log_groups(1, [{"group_id": 0, "prompt": "2+2", "responses": [
        {"source": "self", "text": "4\x00 = 4", "tokens": ["4", "\x00"], "reward": 0.0}]}])
    sink.close()
    response = GroupSample.objects.get(run=run).data["responses"][0]
    assert response["text"] == "4\ufffd = 4" and response["tokens"] == ["4", "\ufffd"]
    assert points(run.pk) == [(1, 1.0)]


def test_direct_flushes_racing_the_flusher_lose_and_reorder_nothing(run):
    """flush() is public (the browser tests call it) while the flusher thread runs: with a slow
    Redis, two overlapping flushes must neither duplicate nor drop live entries."""
    sink = PostgresRedisSink(run.pk, flush_interval=0.01)
    real_pipeline = sink.redis.pipeline

    def slow_pipeline(*args, **kwargs):  # the real Redis, 20 ms further away
        pipe = real_pipeline(*args, **kwargs)
        execute = pipe.execute
        pipe.execute = lambda *a, **k: (time.sleep(0.02), execute(*a, **k))[1]
        return pipe

    sink.redis.pipeline = slow_pipeline
    sink.start(total_steps=60, start_step=0, config={})
    done = threading.Event()

    def flush_often():
        while not done.is_set():
            sink.flush()

    racers = [threading.Thread(target=flush_often) for _ in range(2)]
    for r in racers:
        r.start()
    try:
        for s in range(1, 61):
            sink.log(s, {"loss": float(s)})
            time.sleep(0.005)
    finally:
        done.set()
        for r in racers:
            r.join()
    sink.close()
    assert [s for s, _ in points(run.pk)] == list(range(1, 61))
    assert [e["step"] for e in stream(run.pk)] == list(range(1, 61))


def test_evaluations_replayed_from_jsonl_are_stored_fenced_and_published(team, user, tiny_assets, tmp_path):  # noqa: F811
    """Issue 17: an eval-suite result the trainer logs (here through the multi-GPU JSONL tail) becomes an
    Evaluation of the run at that step with one EvalResult per benchmark, and a live event; once the
    attempt is superseded the next one is refused (AttemptSuperseded) and nothing more is written."""
    from gft_core.metrics import JSONLSink
    from tests.eval_support import make_benchmark
    from webapp.evaluations import services as evals
    from webapp.evaluations.models import EvalResult, Evaluation
    from workers.sink import AttemptSuperseded
    from workers.tasks import _JsonlTail

    bench = make_benchmark(team, tiny_assets, name="toy_bench")
    suite = evals.create_suite(team, user, name="math", benchmarks=[bench.pk], settings={"k": 2})
    run = Run.objects.create(team=team, name="evals", method="gft", config={}, status="running", attempt=1)
    result = {"benchmark": "toy_bench", "n_problems": 1, "k": 2, "avg_at_k": 0.5, "pass_at_k": {"1": 0.5, "2": 1.0},
              "problems": [{"index": 0, "prompt": "1+1", "ground_truth": "2", "responses": ["2", "3"],
                            "correct": [True, False], "extracted": ["2", "3"], "truncated": [False, False],
                            "lengths": [1, 1], "disagree": [False, False]}]}
    path = tmp_path / "metrics.jsonl"
    child = JSONLSink(path)
    child.start(total_steps=4, start_step=0, config={"eval_suite": evals.suite_config(suite)})
    child.log_evaluation(2, "toy_bench", result)
    sink = PostgresRedisSink(run.pk, attempt=1, flush_interval=0.05)
    tail = _JsonlTail(path, sink)
    tail.pump()
    ev = Evaluation.objects.get(run=run)
    assert (ev.suite_id, ev.checkpoint_step, ev.status, ev.done, ev.total) == (suite.pk, 2, "succeeded", 1, 1)
    res = EvalResult.objects.get(evaluation=ev)
    assert (res.benchmark_id, res.metrics["avg_at_k"], res.problems[0]["correct"]) == (bench.pk, 0.5, 1)
    events = [json.loads(f[b"event"]) for _, f in live.client().xrange(live.stream_key(run.pk)) if b"event" in f]
    assert {"kind": "evaluation", "step": 2, "benchmark": "toy_bench", "avg_at_k": 0.5}.items() <= events[-1].items()

    Run.objects.filter(pk=run.pk).update(attempt=2)  # another attempt owns the run now
    child.log_evaluation(4, "toy_bench", result)
    with pytest.raises(AttemptSuperseded):
        tail.pump()
    assert Evaluation.objects.filter(run=run).count() == 1
    child.close()
    with pytest.raises(AttemptSuperseded):
        sink.close()
