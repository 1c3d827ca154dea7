"""The `rnn-tuner` command (also `python -m tuner`): validate, run, status, best, report, retrain.

The only module that reads argv and the environment. Heavy libraries (torch, Lightning, Optuna,
MLflow) are imported inside the commands that need them, so `--help` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from tuner.urls import DEFAULT_STORAGE, DEFAULT_TRACKING_URI, absolute_sqlite

STORAGE_ENV = "RNN_TUNER_STORAGE"
TRACKING_ENV = "MLFLOW_TRACKING_URI"  # MLflow's own convention
# The worker's index among the study's workers, as a cluster numbers them: a Kubernetes Indexed
# Job's pod, a Slurm job-array task. It tags the worker's trial runs and its output lines.
WORKER_INDEX_ENVS = ("JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID")

_storage_option = click.option(
    "--storage",
    metavar="URL",
    help=f"Study database URL. Default: ${STORAGE_ENV}, else the study file's study.storage, "
    f"else {DEFAULT_STORAGE}.",
)


def _load(path: Path, read_test: bool = False):  # noqa: ANN202 - StudyConfig, imported lazily
    """The validated study file (a separate test file checked only if `read_test`); exit 2 if bad.
    Labels that only validation/test data hold are not an error: one warning lists them."""
    from tuner.config import StudyFileError, data_warning, load_study_file

    try:
        cfg = load_study_file(path, read_test)
    except StudyFileError as e:
        click.echo(str(e), err=True)
        click.echo("Fix the keys above and run `rnn-tuner validate FILE` again.", err=True)
        sys.exit(2)
    warning = data_warning(cfg, read_test)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    return cfg


def _storage(cli_value: str | None, file_value: str | None = None) -> str:
    return absolute_sqlite(
        cli_value or os.environ.get(STORAGE_ENV) or file_value or DEFAULT_STORAGE
    )


def _tracking_uri(cli_value: str | None, file_value: str | None) -> str:
    uri = cli_value or os.environ.get(TRACKING_ENV) or file_value or DEFAULT_TRACKING_URI
    return absolute_sqlite(uri)


def _cluster_worker_index() -> int | None:
    for var in WORKER_INDEX_ENVS:
        value = os.environ.get(var)
        if value is None:
            continue
        if not value.isdigit():
            _fail(
                f"{var}={value!r} is not a worker index (a whole number >= 0); unset it, or "
                "let the Kubernetes Job or Slurm array that runs this worker set it",
                code=2,
            )
        return int(value)
    return None


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Tune RNN, LSTM and GRU networks with Optuna; every trial recorded in MLflow.

    Start with `rnn-tuner run studies/quickstart.yaml`, then `mlflow ui --backend-store-uri
    sqlite:///mlflow.db` to see the study's runs.
    """


@main.command()
@click.argument("study_file", type=click.Path(path_type=Path))
def validate(study_file: Path) -> None:
    """Check a study file without running it; every problem is listed with its key path."""
    cfg = _load(study_file, read_test=True)
    click.echo(
        f"{study_file}: ok (study {cfg.study.name!r}, task {cfg.task.source}, "
        f"{len(cfg.search)} searched parameter(s), sampler {cfg.sampler.name}, "
        f"pruner {cfg.pruner_name})"
    )
    size = cfg.default_search
    if size is not None:  # what will be searched, as a block to paste and edit
        import yaml

        unit = "tokens" if size.task == "language_model" else "sequences"
        per = " per fold" if cfg.cv_folds else ""
        click.echo(
            f"search: the default space for a {size.task} task of {size.n_train:g} training "
            f"{unit}{per}, {size.max_len} steps long (docs/study-files.md, The default space)"
        )
        for name, dist in cfg.search.items():
            shown = dist.model_dump(exclude_defaults=True)
            click.echo(
                f"  {name}: "
                + yaml.safe_dump(shown, default_flow_style=True, sort_keys=False).strip()
            )


@main.command()
@click.argument("study_file", type=click.Path(path_type=Path))
@click.option(
    "--n-trials", type=click.IntRange(min=1), help="Trials to run now (default: budget.n_trials)."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Start no new trial after this long (default: budget.timeout).",
)
@_storage_option
@click.option("--study-name", metavar="NAME", help="Default: the study file's study.name.")
@click.option(
    "--tracking-uri",
    metavar="URI",
    help=f"MLflow tracking URI. Default: ${TRACKING_ENV}, else tracking.uri, else "
    f"{DEFAULT_TRACKING_URI}.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes on this machine, each with its share of the CPU threads.",
)
@click.option(
    "--max-trials",
    type=click.IntRange(min=1),
    metavar="M",
    help="Stop when the study holds M trials, counted across every worker on every "
    "machine (default: budget.max_trials).",
)
def run(
    study_file: Path,
    n_trials: int | None,
    timeout: float | None,
    storage: str | None,
    study_name: str | None,
    tracking_uri: str | None,
    workers: int,
    max_trials: int | None,
) -> None:
    """Create or resume the study and run trials; a second run adds trials to the same study.

    The same command on other machines, with the same --storage URL, joins the same study."""
    cfg = _load(study_file)
    mlflow_defaults()
    _quiet_libraries()
    from tuner.request import RunRequest
    from tuner.urls import redact

    req = RunRequest(
        cfg=cfg,
        storage=_storage(storage, cfg.study.storage),
        tracking_uri=_tracking_uri(tracking_uri, cfg.tracking.uri),
        study_name=study_name or cfg.study.name,
        n_trials=n_trials or cfg.budget.n_trials,
        timeout=timeout or cfg.budget.timeout,
        study_file=study_file,
        max_trials=max_trials or cfg.budget.max_trials,
        worker_index=_cluster_worker_index(),
    )
    _refuse_sqlite_for_many(req.storage, workers)
    click.echo(
        f"study {req.study_name!r} in {redact(req.storage)}; MLflow at {redact(req.tracking_uri)}",
        err=True,
    )
    sys.exit(_run_many(req, workers) if workers > 1 else _run_one(req))


def _refuse_sqlite_for_many(storage: str, workers: int) -> None:
    from tuner.urls import is_sqlite, redact

    if workers > 1 and is_sqlite(storage):
        _fail(
            f"--workers {workers} needs a database that several processes can write at once; "
            f"{redact(storage)} is SQLite, which is for one process. Use a PostgreSQL URL "
            "(--storage postgresql+psycopg://USER:PASSWORD@HOST:5432/DB, see docs/team.md), "
            "or run one worker.",
            code=2,
        )


def _run_many(req, workers: int) -> int:  # noqa: ANN001 - RunRequest
    """`workers` processes on this machine; returns the command's exit code."""
    from tuner.launch import run_workers

    _preflight(req)
    code = run_workers(req, workers)
    if code == 130:
        click.echo(
            "interrupted: running trials were recorded as failed; run again to resume", err=True
        )
    return code


def _run_one(req) -> int:  # noqa: ANN001 - RunRequest
    """The worker in this process; returns the command's exit code."""
    from tuner.study import StorageError
    from tuner.tracking import TrackingError
    from tuner.worker import run_worker

    try:
        summary = run_worker(req)
    except (StorageError, TrackingError, ValueError) as e:
        _fail(str(e))
    prefix = "" if req.worker_index is None else f"[w{req.worker_index}] "
    click.echo(prefix + summary.line())
    if summary.interrupted_by == "SIGINT":
        click.echo(
            "interrupted: the running trial was recorded as failed; run again to resume", err=True
        )
        return 130
    return 0


def _preflight(req) -> None:  # noqa: ANN001 - RunRequest
    """Reach the database and the tracking store once, so N workers do not fail N times."""
    from tuner.study import StorageError, make_storage
    from tuner.tracking import Tracker, TrackingError

    try:
        make_storage(req.storage).engine.dispose()
        Tracker(req.tracking_uri, req.cfg.experiment_name())
    except (StorageError, TrackingError) as e:
        _fail(str(e))


def mlflow_defaults() -> None:
    """MLflow settings for a worker, unless the user set them (benchmarks call this too)."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # only matters for a file:// URI
    # MLflow's own defaults retry an unreachable server for minutes; fail within seconds instead.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    # MLflow 3 wraps every client call for usage telemetry: time in every trial.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _quiet_libraries() -> None:
    """Our own line per trial replaces Optuna's log; experimental-feature notices are ours to heed."""
    import logging
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # Lightning says this at every fit wherever Slurm's srun is installed; a trial is one process.
    warnings.filterwarnings("ignore", message="The `srun` command is available")
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@main.command()
@click.argument("study", required=False)
@_storage_option
def status(study: str | None, storage: str | None) -> None:
    """Trials by state, best value and parameters (every study when STUDY is omitted)."""
    from tuner.report import status_text

    _quiet_libraries()
    _with_study_errors(lambda: click.echo(status_text(_storage(storage), study)))


@main.command()
@click.argument("study")
@_storage_option
def best(study: str, storage: str | None) -> None:
    """The best parameters as a `fixed:` YAML block to paste back into a study file."""
    from tuner.report import best_yaml

    _quiet_libraries()
    _with_study_errors(lambda: click.echo(best_yaml(_storage(storage), study), nl=False))


def _with_study_errors(action) -> None:  # noqa: ANN001
    from tuner.report import NoSuchStudy
    from tuner.study import StorageError

    try:
        action()
    except (NoSuchStudy, StorageError) as e:
        _fail(str(e))


_tracking_option = click.option(
    "--tracking-uri",
    metavar="URI",
    help=f"MLflow tracking URI the study was run with. Default: ${TRACKING_ENV}, else "
    f"{DEFAULT_TRACKING_URI}.",
)


def _study_and_parent(storage_url: str, name: str, tracking_uri: str):  # noqa: ANN202
    """The study, a tracker on its experiment and its parent run's id (lazy imports)."""
    from tuner.plots import NoParentRun
    from tuner.report import load_study
    from tuner.study import PARENT_ATTR
    from tuner.tracking import Tracker

    mlflow_defaults()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file
    study = load_study(storage_url, name)
    parent_id = study.user_attrs.get(PARENT_ATTR)
    if parent_id is None:
        raise NoParentRun(f"study {name!r} has no MLflow parent run; run it with `rnn-tuner run`")
    return study, Tracker.for_run(tracking_uri, parent_id), parent_id


def _results_errors() -> tuple[type[Exception], ...]:
    from tuner.config import StudyFileError
    from tuner.plots import NoParentRun
    from tuner.report import NoSuchStudy
    from tuner.retrain import NoBestTrial, NoStudyFile
    from tuner.study import StorageError
    from tuner.tracking import TrackingError

    return (NoSuchStudy, StorageError, TrackingError, NoParentRun, NoStudyFile, NoBestTrial, StudyFileError)  # fmt: skip


@main.command()
@click.argument("study")
@_storage_option
@_tracking_option
def report(study: str, storage: str | None, tracking_uri: str | None) -> None:
    """Plots of the study (its parent run, under plots/) and of each trial (curves.png in its
    run), logged to MLflow; works while workers are still running. `run` does it at the end."""
    _quiet_libraries()
    from tuner.plots import write_report

    try:
        found, tracker, parent_id = _study_and_parent(
            _storage(storage), study, _tracking_uri(tracking_uri, None)
        )
        click.echo(f"study {study!r}: " + write_report(found, tracker, parent_id).text())
    except _results_errors() as e:
        _fail(str(e))


@main.command()
@click.argument("study")
@_storage_option
@_tracking_option
@click.option(
    "--study-file",
    type=click.Path(path_type=Path),
    help="The study's file (task and data). Default: the copy logged in the parent run.",
)
def retrain(
    study: str, storage: str | None, tracking_uri: str | None, study_file: Path | None
) -> None:
    """Train the best trial's configuration again (seeded), test it once on the test split,
    and register it in the MLflow model registry as a new version of rnn-tuner-STUDY."""
    _quiet_libraries()
    import logging

    # The model is pickled on purpose (docs/results.md): MLflow's warning about it, once per
    # retrain, would only repeat what the docs say.
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    from models.errors import DataError
    from tuner.config import StudyFileError
    from tuner.retrain import retrain as retrain_best
    from tuner.retrain import study_config

    try:
        cfg = _load(study_file, read_test=True) if study_file is not None else None
        found, tracker, parent_id = _study_and_parent(
            _storage(storage, cfg and cfg.study.storage),
            study,
            _tracking_uri(tracking_uri, cfg and cfg.tracking.uri),
        )
        cfg = cfg or study_config(tracker, parent_id, None)
        click.echo(retrain_best(found, cfg, tracker, parent_id).text())
    except (StudyFileError, DataError) as e:  # the data: a file moved or changed since the run
        _fail(str(e), code=2)
    except _results_errors() as e:
        _fail(str(e))


@main.command()
@click.option("--markdown", is_flag=True, help="The key tables of the docs instead of the schema.")
@click.option(
    "--write-docs",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    metavar="DIR",
    help="Rewrite the generated parts of DIR/study-files.md, DIR/data.md and "
    "DIR/study-file.schema.json (a checkout's docs/).",
)
def schema(markdown: bool, write_docs: Path | None) -> None:
    """The study file's JSON Schema, generated from the code (editors validate study files
    with it: docs/study-files.md says how), or with --markdown the key tables of the docs."""
    from tuner.reference import markdown_text, schema_text
    from tuner.reference import write_docs as rewrite

    if write_docs is not None:
        try:
            changed = rewrite(write_docs)
        except (OSError, KeyError) as e:
            _fail(f"cannot update {write_docs}: {e}", code=2)
        click.echo(f"{len(changed)} file(s) updated" + "".join(f"\n  {p}" for p in changed))
    else:
        click.echo(markdown_text() if markdown else schema_text(), nl=False)
