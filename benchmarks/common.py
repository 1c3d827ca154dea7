"""Shared pieces of the benchmarks: result rows, side-by-side statistics, a throwaway PostgreSQL
database, timers around library methods inside a worker process, and the machine's description.

Every benchmark measures its cases side by side in one run (a b a b ..., medians of paired
ratios), so a machine busy with other work slows both sides alike and the ratio survives.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import multiprocessing as mp
import os
import platform
import queue
import statistics
import threading
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

# The server the team-mode tests use; the benchmarks create and drop their own databases on it.
POSTGRES_URL_ENV = "RNN_TUNER_BENCH_POSTGRES_URL"
POSTGRES_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


class Skip(Exception):
    """A benchmark cannot run here (no PostgreSQL server, say); the harness records why."""


def row(
    name: str, ratio: float | None, target: str, met: bool | None, **measured: Any
) -> dict[str, Any]:
    """One line of the results table. `target` reads like `>= 1.7` or `<= 0.5 s`; `met` is None
    for a row without a target (a what-if); `measured` holds the figures behind the ratio
    (rounded here so the JSON stays readable)."""
    return {
        "name": name,
        "ratio": None if ratio is None or math.isnan(ratio) else round(ratio, 4),
        "target": target,
        "met": None if met is None else bool(met),
        **{k: _rounded(v) for k, v in measured.items()},
    }


def _rounded(v: Any) -> Any:
    if isinstance(v, float):
        return None if math.isnan(v) else float(f"{v:.4g}")
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_rounded(x) for x in v]
    return v


def median(xs: Iterable[float]) -> float:
    return statistics.median(list(xs))


def percentile(xs: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no data."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median_interval(xs: Sequence[float], level: float = 0.9) -> tuple[float, float, float]:
    """Where the median of the distribution the rounds came from lies, assuming nothing of that
    distribution: the k-th smallest and k-th largest of `xs`, with the largest k whose coverage
    is at least `level` (the whole range if none is), and that coverage. Nine rounds give the
    2nd and 8th values, 96%; three give their range, 75%."""
    s, n = sorted(xs), len(xs)

    def coverage(k: int) -> float:  # P(x(k) <= median <= x(n+1-k)), from the binomial(n, 1/2)
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n

    k = max((k for k in range(1, (n + 1) // 2 + 1) if coverage(k) >= level), default=1)
    return s[k - 1], s[n - k], coverage(k)


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of b[i] / a[i]: each round's pair ran back to back. NaN when no
    round has a positive a[i]."""
    ratios = [y / x for x, y in zip(a, b, strict=True) if x > 0]
    return median(ratios) if ratios else float("nan")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, to say how busy the machine was."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@functools.cache
def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for mod in ("torch", "pytorch_lightning", "optuna", "mlflow", "sqlalchemy"):
        with contextlib.suppress(ImportError):
            versions[mod] = __import__(mod).__version__
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
    }


# ---------------------------------------------------------------- PostgreSQL


def postgres_admin_url() -> str:
    return os.environ.get(
        POSTGRES_URL_ENV, os.environ.get("RNN_TUNER_TEST_POSTGRES_URL", POSTGRES_DEFAULT)
    )


@contextlib.contextmanager
def postgres_database(tag: str) -> Iterator[str]:
    """A fresh database on the benchmark server, dropped afterwards; yields its URL.
    Raises Skip when no server answers."""
    import sqlalchemy as sa

    base = sa.make_url(postgres_admin_url())
    name = f"rnn_bench_{tag}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(
        base, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as e:
        admin.dispose()
        raise Skip(f"no PostgreSQL at {base.render_as_string(hide_password=True)}: {e}") from e
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ---------------------------------------------------------------- worker processes


def process_context() -> Any:
    """Worker processes forked from a server that imported the heavy libraries once: 32 stress
    workers start in a second instead of each importing torch on two cores. If another part of
    this process already started the fork server, the preload is skipped (slower, still right)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(list(_PRELOAD))
    return ctx


# Modules whose top-level imports (Optuna, SQLAlchemy, tuner, torch, Lightning, MLflow) every
# benchmark worker needs.
_PRELOAD = ("benchmarks.bench_storage", "benchmarks.bench_workers")


class Pool:
    """Long-lived worker processes, so a measurement times work, not interpreter start-up.

    `setup()` runs once in each process (install timers, say) and returns its state;
    `work(task, state, ready)` runs one task and returns a picklable report. Every worker given a
    task calls `ready()` once it is set up; it returns when all of them are, at one shared start
    time, which it returns. Both functions must be module-level (they are pickled by name).
    """

    def __init__(self, ctx: Any, n: int, setup: Callable[[], Any], work: Callable[..., Any]):
        self.outbox = ctx.Queue()
        self.inboxes = [ctx.Queue() for _ in range(n)]
        self.procs = [
            ctx.Process(target=_pool_main, args=(setup, work, q, self.outbox), daemon=True)
            for q in self.inboxes
        ]
        for p in self.procs:
            p.start()

    def run(self, task: Any, n: int, timeout: float = 600) -> tuple[float, list[Any]]:
        """Run `task` on the first n workers from one start time; returns it and the reports."""
        for q in self.inboxes[:n]:
            q.put(task)
        self._collect(n, timeout)  # all set up
        start = time.time() + 0.2
        for q in self.inboxes[:n]:
            q.put(start)
        return start, self._collect(n, timeout)

    def _collect(self, n: int, timeout: float) -> list[Any]:
        reports: list[Any] = []
        give_up = time.monotonic() + timeout
        while len(reports) < n:
            try:
                kind, payload = self.outbox.get(timeout=1)
            except queue.Empty:
                dead = [p.name for p in self.procs[:n] if not p.is_alive()]
                if dead or time.monotonic() > give_up:
                    raise RuntimeError(f"benchmark workers lost: {dead or 'timed out'}") from None
                continue
            if kind == "error":
                raise RuntimeError(f"a benchmark worker failed:\n{payload}")
            reports.append(payload)
        return reports

    def close(self) -> None:
        for q in self.inboxes:
            q.put(None)
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join()


def _pool_main(setup: Callable[[], Any], work: Callable[..., Any], inbox: Any, outbox: Any) -> None:
    state = setup()

    def ready() -> float:
        outbox.put(("ready", None))
        start = inbox.get()
        wait_until(start)
        return start

    while (task := inbox.get()) is not None:
        try:
            outbox.put(("report", work(task, state, ready)))
        except Exception:  # noqa: BLE001 - the parent stops the benchmark and shows it
            outbox.put(("error", traceback.format_exc()))


# ---------------------------------------------------------------- timing library calls


class CallTimer:
    """Wall time spent inside chosen methods, by category, installed in a worker process.

    Only the outermost timed call of a thread counts, under its own category: a storage read made
    inside a pruning check counts once, as pruning. Calls made by threads other than the main one
    (Optuna's heartbeat thread) count under `background`.
    """

    BACKGROUND = "background"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self.totals: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self._originals: list[tuple[type, str, Any]] = []

    def wrap(self, owner: type, category: str, names: Iterable[str] | None = None) -> None:
        """Time `owner`'s methods (by default every plain method it defines, private ones too:
        Optuna calls some of them across classes, e.g. the stale-trial check)."""
        if names is None:
            names = [
                n
                for n, f in vars(owner).items()
                if inspect.isfunction(f) and not n.startswith("__")
            ]
        for name in names:
            fn = vars(owner)[name]
            if not getattr(fn, "_bench_timed", False):
                self._originals.append((owner, name, fn))
                setattr(owner, name, self._timed(fn, category))

    def restore(self) -> None:
        """Put every wrapped method back (for timers installed in the harness's own process)."""
        for owner, name, fn in reversed(self._originals):
            setattr(owner, name, fn)
        self._originals.clear()

    def _timed(self, fn: Callable[..., Any], category: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if getattr(self._local, "inside", False):
                return fn(*args, **kwargs)
            self._local.inside = True
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                self._local.inside = False
                main = threading.current_thread() is threading.main_thread()
                key = category if main else self.BACKGROUND
                with self._lock:
                    self.totals[key] += elapsed
                    self.counts[key] += 1

        timed._bench_timed = True  # type: ignore[attr-defined]
        return timed

    def take(self) -> tuple[dict[str, float], dict[str, int]]:
        """Totals and call counts since the last take, then start again from zero."""
        with self._lock:
            totals, counts = dict(self.totals), dict(self.counts)
            self.totals.clear()
            self.counts.clear()
        return totals, counts


def wrap_storage(timer: CallTimer, category: str = "storage") -> None:
    """Time every Optuna storage method: the RDB storage, the cache Optuna puts in front of it,
    the journal storage and rnn-tuner's heartbeats on it, the methods they inherit, and the gRPC
    proxy client."""
    import optuna.storages as st
    from optuna.storages._heartbeat import BaseHeartbeat

    from tuner.journal import JournalStudyStorage

    owners = (st.BaseStorage, BaseHeartbeat, st.RDBStorage, st._CachedStorage, st.JournalStorage)
    for cls in (*owners, JournalStudyStorage):
        timer.wrap(cls, category)
    with contextlib.suppress(ImportError, AttributeError):
        from optuna.storages._grpc.client import GrpcStorageProxy

        timer.wrap(GrpcStorageProxy, category)


def wait_until(t: float) -> None:
    """Sleep until wall-clock time t (time.time()), shared by every process on the machine."""
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)
