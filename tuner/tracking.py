"""The only module that imports mlflow: one experiment per study, one parent run per study, one
child run per trial.

Calls are few and batched: a trial costs `create_run`, one `log_batch` with its parameters, one
`log_batch` per epoch as the epoch ends (a live curve in the UI; epochs shorter than
`LIVE_INTERVAL_S` share one, at most one a second per run), and at its end one `log_batch` with
the final figures and `set_terminated`. Every one of them goes through one sender per
worker, in the order it was made: a trial's start only queues its run (a `TrialRun`, whose id the
sender fills in while the network is built), training only queues an epoch's metrics, a trial's
end only queues its final figures (they are written while the next trial starts), and the run's
status is set after every metric it records. `flush()` waits for them all; `close()`, which the
worker calls before it ends, also ends the sender.

The sender is a process forked from the worker at its start (`send_from_process`,
`_ProcessSender`): MLflow's client runs milliseconds of Python per call, which in a thread would
hold the GIL the training thread needs. Where forking is unsafe (another thread already runs: a
notebook's kernel, a Ray actor) it is a thread of the worker (`_Sender`), with the same writes.

After the study has started, a tracking failure is logged as a warning and never fails a trial:
the Optuna side of the study is the record that must not be lost. A run the server could not make
at the trial's start is made at its end; epochs that could not be sent while the server was away
are sent again with the trial's final figures.
"""

from __future__ import annotations

import gc
import itertools
import logging
import math
import os
import pickle
import queue
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from tuner.errors import BadInput
from tuner.urls import redact

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)

# Optuna trial state -> MLflow run status.
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call
# A run's live curve is written at most this often: short epochs' rows wait and go together (the
# first epoch of a run goes at once). A store write is ~7 ms of CPU in the sender, which beside
# 0.08 s epochs cost the training 2-3% on a 2-core machine.
LIVE_INTERVAL_S = 1.0


class TrackingError(RuntimeError):
    """The tracking store could not be reached or used at the start of a study."""


class DeletedExperiment(BadInput, TrackingError):
    """The study's experiment name belongs to a deleted experiment: MLflow keeps deleted
    experiments (and their names) until `mlflow gc`, so reusing it silently would revive it."""


class Tracker:
    def __init__(self, tracking_uri: str, experiment: str) -> None:
        """Reach the store and look the experiment up (an error now, if either fails); the
        experiment is created with the first run, so a run that fails to start leaves none."""
        self.uri, self.experiment_name = tracking_uri, experiment
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.sender = _Sender(self)
        # Touched only by the sender: epochs each trial's run holds, runs whose epochs wait for
        # the trial's end because the server failed one of them, epochs waiting for the run's
        # next write (LIVE_INTERVAL_S) and when each run's last write was made.
        self._sent: dict[str, set[int]] = {}
        self._behind: set[str] = set()
        self._held: dict[str, list[dict[str, float]]] = {}
        self._last_write: dict[str, float] = {}
        try:
            self._experiment_id = self._existing(experiment)
        except (MlflowException, OSError) as e:
            raise TrackingError(_start_error(tracking_uri, e)) from e

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            try:
                self._experiment_id = self.client.create_experiment(self.experiment_name)
            except MlflowException:  # another worker created it first
                self._experiment_id = self._existing(self.experiment_name)
                if self._experiment_id is None:
                    raise
        return self._experiment_id

    def _existing(self, name: str) -> str | None:
        found = self.client.get_experiment_by_name(name)
        if found is not None and found.lifecycle_stage == "deleted":
            raise DeletedExperiment(
                f"the MLflow experiment {name!r} is deleted (id {found.experiment_id}): "
                f"restore it with `MLFLOW_TRACKING_URI={redact(self.uri)} mlflow experiments "
                f"restore --experiment-id {found.experiment_id}`, or use another name "
                "(tracking.experiment in the study file, or --study-name)"
            )
        return None if found is None else found.experiment_id

    # ------------------------------------------------------------------ the study's parent run

    def create_parent(self, study_name: str, tags: Mapping[str, str]) -> str:
        try:
            run = self.client.create_run(
                self.experiment_id,
                run_name=study_name,
                tags=_texts({"rnn_tuner.role": "study", "rnn_tuner.study": study_name, **tags}),
            )
        except MlflowException as e:  # e.g. an account that may read the experiment, not write
            raise TrackingError(_start_error(self.uri, e)) from e
        return run.info.run_id

    def has_run(self, run_id: str) -> bool:
        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            return False

    def reopen_parent(self, run_id: str) -> None:
        self._safely(self.client.update_run, run_id, status="RUNNING")

    def close_parent(self, run_id: str) -> None:
        self._safely(self.client.set_terminated, run_id, "FINISHED")

    def update_best(self, parent_id: str, best: FrozenTrial, n_finished: int) -> None:
        """Keep the parent's best value(s) and parameters current (params are immutable: tags)."""
        now = _now_ms()
        names = (
            ["value"] if len(best.values) == 1 else [f"value_{i}" for i in range(len(best.values))]
        )
        metrics = [
            Metric(f"best_{k}", float(v), now, n_finished)
            for k, v in zip(names, best.values, strict=True)
        ]
        tags = [RunTag("best_trial", str(best.number))]
        tags += [RunTag(f"best.{k}", _text(v)) for k, v in best.params.items()]
        self.sender.submit(_Write(self, "_log_batch", (parent_id, metrics, tags)))

    def _log_batch(self, run_id: str, metrics: list[Metric], tags: list[RunTag]) -> None:
        self._safely(self.client.log_batch, run_id, metrics=metrics, tags=tags)

    # ------------------------------------------------------------------ one run per trial

    def start_trial(
        self, parent_id: str, number: int, params: Mapping[str, Any], tags: Mapping[str, str]
    ) -> TrialRun:
        """Queue the trial's run with its parameters (it shows as running in the UI once made);
        returns at once, the sender makes it (`TrialRun.wait` for its id)."""
        run_tags = {
            "mlflow.parentRunId": parent_id,
            "rnn_tuner.role": "trial",
            "rnn_tuner.trial": str(number),
            "optuna.state": "RUNNING",
            **tags,
        }
        run = TrialRun(number, _texts(params), _texts(run_tags))
        self.sender.submit(_Write(self, "_make_run", (run,)))
        return run

    def _make_run(self, run: TrialRun) -> None:
        """In the sender: create the run (unless made already) and log its parameters."""
        try:
            if run.id is None:
                made = self._safely(self._create_run, f"trial-{run.number}", run.tags)
                if made is not None:
                    run.id = made.info.run_id
                    params = [Param(k, v) for k, v in run.params.items()]
                    self._safely(self.client.log_batch, run.id, params=params)
        finally:
            run.made.set()

    def _create_run(self, name: str, tags: Mapping[str, str]) -> Any:
        return self.client.create_run(self.experiment_id, run_name=name, tags=dict(tags))

    def log_epoch(self, run: TrialRun, row: Mapping[str, float]) -> None:
        """Queue one finished epoch's metrics (step = `row["epoch"]`, timestamp `row["time_ms"]`)
        for the trial's run; returns at once, the sender writes them (within LIVE_INTERVAL_S)."""
        self.sender.submit(_Write(self, "_send_epoch", (run, dict(row))))

    def finish_trial(
        self,
        run: TrialRun,
        state: str,
        history: Iterable[Mapping[str, float]],
        summary: Mapping[str, float],
        reason: str | None = None,
        profiles: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        """After the epochs queued before it: any epoch of `history` the run does not hold yet
        (step = epoch), final figures, per-time-step profiles (step = time step, e.g.
        `grad_norm_by_step`), state tags, then the run status. Returns at once: the sender
        thread writes them while the next trial starts (`flush` waits for them)."""
        rows = [dict(row) for row in history]
        summary, profiles = dict(summary), None if profiles is None else dict(profiles)
        run.finishing = True  # epochs still queued go in the final batch, not a batch each
        args = (run, state, rows, summary, reason, profiles)
        self.sender.submit(_Write(self, "_send_finish", args))

    def flush(self) -> None:
        """Wait until every write queued so far has been made (or has failed with a warning),
        epochs waiting for their run's next write included."""
        self.sender.submit(_Write(self, "send_held", ()))
        self.sender.flush()

    def send_from_process(self) -> bool:
        """Make the queued writes in a process of this worker's own from now on, if forking is
        safe here (POSIX, no thread but this one: a worker's process, not a notebook's or a Ray
        actor's), so that MLflow's client never holds the training thread's GIL; True if so.
        `close` ends that process; if the worker dies first, the process makes every write it
        was sent, then exits."""
        if not hasattr(os, "fork") or threading.active_count() > 1:
            return False
        try:
            sender = _ProcessSender(self)
        except OSError as e:  # no process to spare (a container's limit): the thread does it
            log.warning("MLflow writes stay in a thread: cannot start a process (%s)", e)
            return False
        self.sender.close()
        self.sender = sender
        return True

    def close(self) -> None:
        """Wait for every queued write, then end the sender (its thread or process)."""
        self.flush()
        self.sender.close()

    def _send_epoch(self, run: TrialRun, row: Mapping[str, float]) -> None:
        # no run yet, the trial's end already queued, or after one failure: the epoch goes with
        # the trial's final figures
        if run.id is None or run.finishing or run.id in self._behind:
            return
        self._held.setdefault(run.id, []).append(dict(row))
        if time.monotonic() - self._last_write.get(run.id, -math.inf) >= LIVE_INTERVAL_S:
            self._send_rows(run.id)

    def _send_rows(self, run_id: str) -> None:
        rows = self._held.pop(run_id, [])
        self._last_write[run_id] = time.monotonic()
        if self._attempt(self.client.log_batch, run_id, metrics=_run_metrics(rows, {})):
            self._sent.setdefault(run_id, set()).update(int(row["epoch"]) for row in rows)
        else:
            self._behind.add(run_id)

    def send_held(self, due_only: bool = False) -> None:
        """In the sender: write the epochs waiting for their run's next write (`due_only`: those
        whose run's interval is up)."""
        now = time.monotonic()
        for run_id in list(self._held):
            if not due_only or now - self._last_write[run_id] >= LIVE_INTERVAL_S:
                self._send_rows(run_id)

    def held_due(self) -> float | None:
        """In the sender: seconds until an epoch waiting for its run's next write is due (0 if
        one is), None if none waits."""
        if not self._held:
            return None
        due = min(self._last_write[run_id] for run_id in self._held) + LIVE_INTERVAL_S
        return max(due - time.monotonic(), 0.0)

    def _send_finish(
        self,
        run: TrialRun,
        state: str,
        history: list[dict[str, float]],
        summary: Mapping[str, float],
        reason: str | None,
        profiles: Mapping[str, Sequence[float]] | None,
    ) -> None:
        self._make_run(run)  # the server was away when the trial began: try again
        if run.id is None:
            return
        sent = self._sent.pop(run.id, set())
        self._behind.discard(run.id)
        self._held.pop(run.id, None)  # they are in `history`: the final batch takes them
        self._last_write.pop(run.id, None)
        unsent = [row for row in history if int(row["epoch"]) not in sent]
        metrics = _run_metrics(unsent, summary, profiles)
        tags = [RunTag("optuna.state", state)]
        if reason:
            tags.append(RunTag("fail_reason", redact(reason)[:4000]))
        for i in range(0, max(len(metrics), 1), _BATCH):
            self._safely(
                self.client.log_batch,
                run.id,
                metrics=metrics[i : i + _BATCH],
                tags=tags if i == 0 else [],
            )
        self._safely(self.client.set_terminated, run.id, RUN_STATUS[state])

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> None:
        self._safely(self.client.log_artifact, run_id, path, artifact_path)

    def log_study_file(self, run_id: str, path: str) -> None:
        """The study file as an artifact under its own name, its passwords replaced by ***."""
        from pathlib import Path

        text = redact(Path(path).read_text(encoding="utf-8"))
        self._safely(self.client.log_text, run_id, text, Path(path).name)

    # ------------------------------------------------------------------ reading a study back

    @classmethod
    def for_run(cls, tracking_uri: str, run_id: str) -> Tracker:
        """A tracker on the experiment that holds `run_id` (a study's parent run)."""
        client = MlflowClient(tracking_uri=tracking_uri)
        try:
            experiment_id = client.get_run(run_id).info.experiment_id
            name = client.get_experiment(experiment_id).name
        except (MlflowException, OSError) as e:
            raise TrackingError(
                f"no run {run_id} in the MLflow tracking store at {redact(tracking_uri)} ({e}); "
                "pass the --tracking-uri (or MLFLOW_TRACKING_URI) the study was run with"
            ) from e
        return cls(tracking_uri, name)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    def child_runs(self, parent_id: str) -> list[ChildRun]:
        """Every run nested under the parent, whichever worker made it (trials, retrains)."""
        found: list[ChildRun] = []
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                f"tags.mlflow.parentRunId = '{parent_id}'",
                max_results=1000,
                page_token=token,
            )
            found += [ChildRun(r.info.run_id, r.info.status, dict(r.data.tags)) for r in page]
            token = page.token
            if not token:
                return found

    def trial_run(self, parent_id: str, number: int) -> str | None:
        """The run of trial `number` under the parent, found by its tags (None if there is none
        or the tracking server does not answer)."""
        found = self._safely(
            self.client.search_runs,
            [self.experiment_id],
            f"tags.mlflow.parentRunId = '{parent_id}' and tags.`rnn_tuner.role` = 'trial'"
            f" and tags.`rnn_tuner.trial` = '{number}'",
            max_results=1,
        )
        return found[0].info.run_id if found else None

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) pairs of one metric, by step."""
        return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, local_dir, artifact_path)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, _text(v)) for k, v in tags.items()])

    def delete_tags(self, run_id: str, keys: Iterable[str]) -> None:
        """Remove those of `keys` that the run has."""
        present = self.run_tags(run_id)
        for key in keys:
            if key in present:
                self.client.delete_tag(run_id, key)

    def artifact_paths(self, run_id: str, path: str | None = None) -> list[str]:
        return [a.path for a in self.client.list_artifacts(run_id, path)]

    def download_artifact(self, run_id: str, path: str, dst_dir: str) -> str:
        return self.client.download_artifacts(run_id, path, dst_dir)

    # ------------------------------------------------------------------ the retrained best model

    def start_retrain(
        self, parent_id: str, params: Mapping[str, Any], tags: Mapping[str, str]
    ) -> str:
        """A run `retrain` nested under the study's parent run (and tagged with its id)."""
        run_tags = {
            "mlflow.parentRunId": parent_id,
            "rnn_tuner.role": "retrain",
            "rnn_tuner.retrain_of": parent_id,
            **tags,
        }
        run = self.client.create_run(self.experiment_id, run_name="retrain", tags=_texts(run_tags))
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=[Param(k, _text(v)) for k, v in params.items()])
        return run_id

    def log_metrics(
        self,
        run_id: str,
        history: Iterable[Mapping[str, float]],
        summary: Mapping[str, float],
    ) -> None:
        """Per-epoch metrics (step = epoch) and final figures (step 0), as for a trial."""
        metrics = _run_metrics(history, summary)
        for i in range(0, len(metrics), _BATCH):
            self.client.log_batch(run_id, metrics=metrics[i : i + _BATCH])

    def log_model(
        self,
        run_id: str,
        model: Any,
        input_example: Any,
        output_example: Any,
        registered_name: str | None,
        *,
        code_paths: Sequence[str] = (),
        pip_requirements: Sequence[str] = (),
    ) -> tuple[str, str]:
        """Log a torch module as the run's model (pickled, with a signature and an input
        example) and register it as a new version of `registered_name` (None: not registered).

        Returns (model URI, registered version or "")."""
        import mlflow
        import mlflow.pytorch
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri  # mlflow is pinned

        # log_model works through the fluent API, which reads the process-wide tracking URI:
        # set it for this call only.
        with _use_tracking_uri(self.uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                model,
                name="model",
                signature=_signature(input_example, output_example),
                input_example=input_example,
                registered_model_name=registered_name,
                # the default, torch.export (pt2), cannot trace packed variable-length sequences
                serialization_format="pickle",
                code_paths=list(code_paths),
                pip_requirements=list(pip_requirements),  # explicit: inferring them costs ~10 s
            )
        version = "" if registered_name is None else str(info.registered_model_version)
        return info.model_uri, version

    def load_model(self, model_uri: str) -> Any:
        """The torch module logged at `model_uri` (`runs:/...`, `models:/...`)."""
        import mlflow.pytorch
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        try:
            with _use_tracking_uri(self.uri):
                return mlflow.pytorch.load_model(model_uri, map_location="cpu")
        except (MlflowException, OSError) as e:
            raise TrackingError(
                f"cannot load the model {model_uri} from {redact(self.uri)}: {e}"
            ) from e

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def safely(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)`, or None with a warning if it fails: for MLflow work that
        must never fail a trial."""
        return self._safely(fn, *args, **kwargs)

    def _safely(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """`fn(...)`, or None with a warning if it failed: tracking must never fail a trial."""
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any failure of the tracking store
            _warn(fn, e)
            return None

    def _attempt(self, fn: Any, *args: Any, **kwargs: Any) -> bool:
        """Whether `fn(...)` succeeded (for calls that return nothing); warns if not."""
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any failure of the tracking store
            _warn(fn, e)
            return False
        return True


def _warn(fn: Any, error: Exception) -> None:
    log.warning(
        "MLflow call %s failed (%s); the Optuna study keeps the trial",
        getattr(fn, "__name__", "?"),
        redact(str(error)),
    )


@dataclass
class _Write:
    """One queued MLflow write: a `Tracker` method and its arguments, which a sender process
    receives without the tracker (it has its own copy)."""

    tracker: Tracker
    method: str
    args: tuple

    def __call__(self) -> None:
        getattr(self.tracker, self.method)(*self.args)


class _Sender:
    """A worker's one thread for the MLflow writes of its trials: the caller queues a write and
    goes on; writes run one at a time in the order they were queued (a run's status after its
    metrics). Started on first use; a daemon, as every queued write is flushed at a trial's end."""

    def __init__(self, tracker: Tracker) -> None:
        self._tracker = tracker  # its epochs held for their run's next write
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.busy_s = 0.0  # CPU time the thread spent writing (benchmarks/bench_overhead.py)

    def submit(self, job: Callable[[], None]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="mlflow-sender", daemon=True)
            self._thread.start()
        self._jobs.put(job)

    def flush(self) -> None:
        """Wait until every queued write is done."""
        self._jobs.join()

    def close(self) -> None:
        """Make every queued write, then end the thread."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self._tracker.held_due())
            except queue.Empty:  # no write queued: the held epochs whose time has come
                self._run(lambda: self._tracker.send_held(due_only=True))
                continue
            try:
                self._run(self._tracker.send_held if job is None else job)
                if job is None:
                    return
            finally:
                self._jobs.task_done()

    def _run(self, job: Callable[[], None]) -> None:
        started = time.thread_time()
        try:
            job()
        except Exception:  # noqa: BLE001 - a bug in a job must not stop the later writes
            log.exception("MLflow write failed")
        finally:
            self.busy_s += time.thread_time() - started


class _ProcessSender:
    """The same queue of writes, made by a child process forked from the worker: MLflow's client
    (SQLAlchemy for a database store) runs a few milliseconds of Python per call, and in a thread
    that held the GIL the training thread needed (a trial's main thread waited 55 ms in a 1.3 s
    trial with the thread, 1 ms in the bare loop). The worker pickles each write onto a pipe
    (a thread of its own writes it, so a slow store never blocks training); the child makes them
    in order and sends back each trial's run id and each flush's end. The child holds the only
    read end: when the worker dies, even by SIGKILL, it makes every write already sent, then
    exits."""

    def __init__(self, tracker: Tracker) -> None:
        jobs_in, jobs_out = os.pipe()
        replies_in, replies_out = os.pipe()
        # The child's garbage collector leaves the worker's objects alone (frozen there): its
        # sweeps would otherwise write to, and so copy, every page of the worker's heap.
        gc.freeze()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(jobs_out)
            os.close(replies_in)
            _serve(
                tracker,
                Connection(jobs_in, writable=False),
                Connection(replies_out, readable=False),
            )
        gc.unfreeze()
        os.close(jobs_in)
        os.close(replies_out)
        self.pid = pid
        self._tracker = tracker  # for a thread, should the process die
        self.busy_s = 0.0  # the child's CPU time, as of the last flush
        self._jobs: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._runs: weakref.WeakValueDictionary[int, TrialRun] = weakref.WeakValueDictionary()
        self._keys = itertools.count()
        self._flushes: dict[int, threading.Event] = {}
        self._lost = False  # the child died (killed): later writes go to a thread
        self._fallback: _Sender | None = None
        out, replies = Connection(jobs_out, readable=False), Connection(replies_in, writable=False)
        self._writer = threading.Thread(target=self._write, args=(out,), daemon=True)
        self._reader = threading.Thread(target=self._read, args=(replies,), daemon=True)
        self._writer.start()
        self._reader.start()

    def submit(self, job: Callable[[], None]) -> None:
        if self._lost:
            self._thread_sender().submit(job)
            return
        if not isinstance(job, _Write):
            raise TypeError("a sender process takes Tracker writes (_Write), not any callable")
        self._jobs.put(pickle.dumps((job.method, tuple(self._wire(a) for a in job.args))))

    def flush(self) -> None:
        token, done = next(self._keys), threading.Event()
        self._flushes[token] = done
        if not self._lost:
            self._jobs.put(pickle.dumps(("_flush", (token,))))
            done.wait()
        self._flushes.pop(token, None)
        if self._fallback is not None:
            self._fallback.flush()

    def close(self) -> None:
        self.flush()
        self._jobs.put(None)  # the writer closes the pipe: the child exits
        self._writer.join()
        self._reader.join()
        os.waitpid(self.pid, 0)
        if self._fallback is not None:
            self._fallback.close()

    def _wire(self, arg: Any) -> Any:
        if not isinstance(arg, TrialRun):
            return arg
        if arg.key is None:
            arg.key = next(self._keys)
            self._runs[arg.key] = arg
        return _RunRef(arg.key, arg.number, arg.params, arg.tags, arg.id, arg.finishing)

    def _write(self, out: Connection) -> None:
        try:
            while (data := self._jobs.get()) is not None:
                out.send_bytes(data)
        except OSError:  # the child is gone; the reader notices
            pass
        finally:
            out.close()

    def _read(self, replies: Connection) -> None:
        try:
            while True:
                kind, key, value = replies.recv()
                if kind == "made" and (run := self._runs.get(key)) is not None:
                    run.id = value
                    run.made.set()
                elif kind == "flushed" and (done := self._flushes.get(key)) is not None:
                    self.busy_s = value
                    done.set()
        except (EOFError, OSError):
            pass
        finally:
            replies.close()
            self._lost = True  # a clean close, or the child was killed: nothing waits for it
            for run in list(self._runs.values()):
                run.made.set()
            for done in list(self._flushes.values()):
                done.set()

    def _thread_sender(self) -> _Sender:
        if self._fallback is None:
            log.warning("the MLflow sender process ended early; this worker writes from a thread")
            self._fallback = _Sender(self._tracker)
        return self._fallback


@dataclass(frozen=True)
class _RunRef:
    """A `TrialRun` as it travels to the sender process (its Event does not)."""

    key: int
    number: int
    params: dict[str, str]
    tags: dict[str, str]
    id: str | None
    finishing: bool


def _serve(tracker: Tracker, jobs: Connection, replies: Connection) -> None:
    """The sender process: make the writes in the order they come until the worker closes the
    pipe (or dies), then exit without the worker's exit handlers."""
    code = 1
    try:
        # Ctrl-C and SIGTERM are the worker's to handle: it fails its trial and closes the pipe.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _fresh_connections()
        runs: dict[int, TrialRun] = {}
        pending: queue.SimpleQueue[tuple[str, tuple] | None] = queue.SimpleQueue()

        def local(arg: Any) -> Any:
            if not isinstance(arg, _RunRef):
                return arg
            run = runs.get(arg.key)
            if run is None:
                run = runs[arg.key] = TrialRun(arg.number, arg.params, arg.tags, arg.id)
                run.key = arg.key
            run.finishing |= arg.finishing
            return run

        def receive() -> None:  # read ahead, so a trial's end reaches its queued epochs
            try:
                while True:
                    method, args = pickle.loads(jobs.recv_bytes())
                    # a trial's end marks its run finishing here (`local`), before the
                    # epochs queued ahead of it run: they go in its final batch
                    pending.put((method, tuple(local(a) for a in args)))
            except (EOFError, OSError):
                pass
            finally:
                pending.put(None)

        threading.Thread(target=receive, daemon=True).start()
        busy, told = 0.0, {}
        while True:
            try:
                job = pending.get(timeout=tracker.held_due())
            except queue.Empty:  # no write queued: the held epochs whose time has come
                job = ("send_held", (True,))
            if job is None:  # the worker closed the pipe, or died: what it sent is written
                tracker.send_held()
                break
            method, args = job
            if method == "_flush":
                replies.send(("flushed", args[0], busy))
                continue
            started = time.thread_time()
            try:
                getattr(tracker, method)(*args)
            except Exception:  # noqa: BLE001 - a bug in a job must not stop the later writes
                log.exception("MLflow write failed")
            busy += time.thread_time() - started
            for run in args:  # the worker learns a run's id once made (or that it failed)
                if not isinstance(run, TrialRun):
                    continue
                if method == "_make_run" or (run.id is not None and told.get(run.key) != run.id):
                    told[run.key] = run.id
                    replies.send(("made", run.key, run.id))
                if method == "_send_finish":
                    runs.pop(run.key, None)
                    told.pop(run.key, None)
        code = 0
    except BaseException:  # noqa: BLE001 - reported; the worker's trials are unaffected
        log.exception("the MLflow sender process failed")
    finally:
        os._exit(code)


def _fresh_connections() -> None:
    """Drop the database connections the worker had open at the fork (MLflow's engines), without
    closing them: they are the worker's; this process opens its own."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for engine in list(getattr(SqlAlchemyStore, "_engine_map", {}).values()):
        engine.dispose(close=False)


def _start_error(tracking_uri: str, e: Exception) -> str:
    """What to fix when the tracking store refused a study at its start. A server with logins
    answers 401 to a missing or wrong password and 403 to an account without write access."""
    where = redact(tracking_uri)
    status = e.get_http_status_code() if isinstance(e, MlflowException) else None
    if status == 401:
        return (
            f"the MLflow tracking server at {where} refused the login (HTTP 401): set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to your account on it "
            "(docs/team.md, Accounts)"
        )
    if status == 403:
        return (
            f"the MLflow tracking server at {where} lets the account in MLFLOW_TRACKING_USERNAME "
            "read but not record runs (HTTP 403): ask its admin to give the account the team's "
            "role (docs/team.md, Accounts)"
        )
    return (
        f"cannot use the MLflow tracking store at {where}: {redact(str(e))}. "
        "Start the server or fix MLFLOW_TRACKING_URI / tracking.uri."
    )


@dataclass
class TrialRun:
    """A trial's MLflow run, which the sender makes: `id` is None until it is made (and stays None
    if the tracking store refused it; the trial's end tries again)."""

    number: int  # the trial's
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    id: str | None = None
    made: threading.Event = field(default_factory=threading.Event, repr=False)
    finishing: bool = False  # its end is queued (Tracker.finish_trial)
    key: int | None = None  # its name on the way to a sender process

    @classmethod
    def existing(cls, number: int, run_id: str) -> TrialRun:
        """A run that exists already (a lost worker's, closed by another: tuner.stale)."""
        run = cls(number, id=run_id)
        run.made.set()
        return run

    def wait(self, timeout: float | None = None) -> str | None:
        """The run's id once the sender has tried to make it (None if that failed)."""
        self.made.wait(timeout)
        return self.id


@dataclass(frozen=True)
class ChildRun:
    run_id: str
    status: str  # RUNNING, FINISHED, KILLED, FAILED
    tags: dict[str, str]


_MAX_PROFILE = 256  # points per profile: keeps a trial's metrics in one log_batch call


def _run_metrics(
    history: Iterable[Mapping[str, float]],
    summary: Mapping[str, float],
    profiles: Mapping[str, Sequence[float]] | None = None,
) -> list[Metric]:
    metrics = [
        Metric(key, float(value), int(row.get("time_ms", 0)) or _now_ms(), int(row["epoch"]))
        for row in history
        for key, value in row.items()
        if key not in ("epoch", "time_ms")
    ]
    now = _now_ms()
    metrics += [Metric(k, float(v), now, 0) for k, v in summary.items()]
    for key, values in (profiles or {}).items():
        # long sequences: evenly spaced steps, always the first and the last, at their real step
        stride = max(1, -(-(len(values) - 1) // (_MAX_PROFILE - 1)))
        steps = sorted({*range(0, len(values), stride), len(values) - 1} - {-1})
        metrics += [Metric(key, float(values[t]), now, t) for t in steps]
    return metrics


def _signature(inputs: Any, outputs: Any) -> Any:
    """Batch and time vary: only a feature axis is fixed ((B, T) token ids vary in both)."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    def spec(array: Any, features: bool) -> TensorSpec:
        shape = [-1] * (array.ndim - 1) + [array.shape[-1] if features else -1]
        return TensorSpec(array.dtype, tuple(shape))

    return ModelSignature(Schema([spec(inputs, inputs.ndim == 3)]), Schema([spec(outputs, True)]))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _texts(values: Mapping[str, Any]) -> dict[str, str]:
    return {k: _text(v) for k, v in values.items()}


def _text(value: Any) -> str:
    """A parameter or tag value as MLflow stores it: text, never a password."""
    return "null" if value is None else redact(str(value))
