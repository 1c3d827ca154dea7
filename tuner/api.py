"""rnn-tuner from Python (a notebook, a script): run a study, read its results, load its model.

    import tuner
    study = tuner.run("studies/quickstart.yaml", n_trials=10)   # or a dict with the same keys
    table = tuner.results("quickstart")                          # pandas: one row per trial
    net = tuner.best_model("quickstart")                         # the kept torch.nn.Module

The same study, storage and MLflow records as `rnn-tuner run`; docs/python.md has the details.
Unlike the command, nothing here installs signal handlers, calls sys.exit or reads environment
variables: arguments, then the study file, then the embedded defaults (`rnn_tuner.log`, a
journal file, and `mlflow.db` in the working directory; or an older rnn-tuner's `rnn_tuner.db`
found there without a journal, with a warning). Ctrl-C (a KeyboardInterrupt, also Jupyter's "interrupt
the kernel") records the running trial as failed and is raised again once the worker stopped.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tuner.config import StudyConfig, load_study_file, parse_study
from tuner.urls import (
    DEFAULT_TRACKING_URI,
    absolute_sqlite,
    embedded_storage,
    redact,
    shared_by_processes,
)

if TYPE_CHECKING:
    import optuna
    import pandas
    import torch


def run(
    study: str | Path | dict[str, Any],
    n_trials: int | None = None,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    workers: int = 1,
    study_name: str | None = None,
    timeout: float | None = None,
    progress: bool = True,
    report: bool = True,
) -> optuna.Study:
    """Create or resume the study and run `n_trials` trials (default: its `budget.n_trials`);
    returns the `optuna.Study`. `study`: a study file's path, or its content as a dict.
    `report=False` skips the study's figures at the end (`rnn-tuner run --no-report`).

    Raises StudyFileError (every problem of the study at once), ValueError (e.g. several
    `workers` on SQLite), StorageError or TrackingError before any trial runs."""
    cfg = _config(study)
    from tuner.request import RunRequest

    with tempfile.TemporaryDirectory(prefix="rnn-tuner-") as tmp:
        req = RunRequest(
            cfg=cfg,
            storage=absolute_sqlite(storage or cfg.study.storage or _default_storage()),
            tracking_uri=absolute_sqlite(tracking_uri or cfg.tracking.uri or DEFAULT_TRACKING_URI),
            study_name=study_name or cfg.study.name,
            n_trials=n_trials or cfg.budget.n_trials,
            max_trials=cfg.budget.max_trials,
            timeout=timeout or cfg.budget.timeout,
            study_file=_study_file(study, cfg, Path(tmp)),  # the parent run keeps a copy
            progress=progress,
            report=report,
            handle_signals=False,
        )
        _run_request(req, workers)
    return load(req.study_name, storage=req.storage)


def _config(study: str | Path | dict[str, Any]) -> StudyConfig:
    if isinstance(study, dict):
        return parse_study(study, "<dict>")
    return load_study_file(study)


def _default_storage() -> str:
    url, notice = embedded_storage()
    if notice:
        warnings.warn(notice, stacklevel=3)
    return url


def _study_file(study: str | Path | dict[str, Any], cfg: StudyConfig, tmp: Path) -> Path:
    if not isinstance(study, dict):
        return Path(study)
    path = tmp / f"{cfg.study.name}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    return path


def _run_request(req: Any, workers: int) -> None:
    """One worker in this process, or `workers` processes; a KeyboardInterrupt once stopped."""
    from tuner.cli import mlflow_defaults

    mlflow_defaults()
    if workers > 1 and not shared_by_processes(req.storage):
        raise ValueError(
            f"workers={workers} needs a storage that several processes can write at once; "
            f"{redact(req.storage)} is SQLite. Pass storage='journal:///rnn_tuner.log' (this "
            "machine, the default) or 'journal+postgresql+psycopg://USER@HOST/DB' (docs/team.md), or run "
            "one worker."
        )
    if workers > 1:
        from tuner.launch import run_workers

        code = run_workers(req, workers)
        interrupted = code == 130
        if code not in (0, 130):
            raise RuntimeError(f"a worker process failed (exit code {code}); see its output above")
    else:
        from tuner.worker import run_worker

        interrupted = run_worker(req).interrupted_by is not None
    if interrupted:
        raise KeyboardInterrupt("the study stopped; the running trial was recorded as failed")


def load(name: str, *, storage: str | None = None) -> optuna.Study:
    """The study `name` as Optuna holds it (default storage: rnn_tuner.log here).
    Raises NoSuchStudy listing the studies the storage holds."""
    from tuner.report import load_study

    return load_study(absolute_sqlite(storage or _default_storage()), name)


def results(name: str, *, storage: str | None = None) -> pandas.DataFrame:
    """One row per trial: number, state, each objective's value (named by its metric), every
    parameter, duration_s, mlflow_run_id and best_epoch (of the validation metric)."""
    import pandas

    study = load(name, storage=storage)
    metrics = _objective_names(study)
    params = sorted({p for t in study.trials for p in t.params})
    rows = []
    for t in study.trials:
        values = t.values or [None] * len(metrics)
        seconds = t.duration.total_seconds() if t.duration is not None else None
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                **dict(zip(metrics, values, strict=True)),
                **{p: t.params.get(p) for p in params},
                "duration_s": seconds,
                "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
                "best_epoch": t.user_attrs.get("best_epoch"),
            }
        )
    columns = ["number", "state", *metrics, *params, "duration_s", "mlflow_run_id", "best_epoch"]
    return pandas.DataFrame(rows, columns=columns)


def _objective_names(study: optuna.Study) -> list[str]:
    """The metrics a study optimises, as `rnn-tuner run` names them; Optuna's names otherwise."""
    if study.metric_names:
        return list(study.metric_names)
    n = len(study.directions)
    return ["value"] if n == 1 else [f"value_{i}" for i in range(n)]


def best_model(
    name: str,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    trial: int | None = None,
) -> torch.nn.Module:
    """The network kept for the study's best trial (or for trial number `trial`), with its best
    epoch's weights, in eval mode on the CPU: `net(inputs)` or `net(inputs, lengths)`.
    Raises NoKeptModel when that trial kept none (`tracking.keep_best`)."""
    from tuner.keep import NoKeptModel, kept_model_uri
    from tuner.study import PARENT_ATTR
    from tuner.tracking import Tracker

    study = load(name, storage=storage)
    parent_id = study.user_attrs.get(PARENT_ATTR)
    if parent_id is None:
        raise NoKeptModel(f"study {name!r} has no MLflow parent run; run it with tuner.run")
    tracker = Tracker.for_run(absolute_sqlite(tracking_uri or DEFAULT_TRACKING_URI), parent_id)
    _, uri = kept_model_uri(study, tracker, parent_id, trial)
    return tracker.load_model(uri).eval()
