"""The `rnn-tuner` command (also `python -m tuner`): validate, run, status, best, report, retrain,
export.

The only module that reads argv and the environment. Heavy libraries (torch, Lightning, Optuna,
MLflow) are imported inside the commands that need them, so `--help` stays fast.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import click

from tuner.errors import BAD_INPUT, ENVIRONMENT, INTERRUPTED, BadInput, exit_code
from tuner.urls import (
    DEFAULT_STORAGE,
    DEFAULT_TRACKING_URI,
    absolute_sqlite,
    embedded_storage,
    hide_secrets,
    redact,
    remember_secrets,
    same_database,
    storage_problem,
    tracking_problem,
)

STORAGE_ENV = "RNN_TUNER_STORAGE"
TRACKING_ENV = "MLFLOW_TRACKING_URI"  # MLflow's own convention
# The worker's index among the study's workers, as a cluster numbers them: a Kubernetes Indexed
# Job's pod, a Slurm job-array task. It tags the worker's trial runs and its output lines.
WORKER_INDEX_ENVS = ("JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID")
WORKERS_ENV = "RNN_TUNER_WORKERS"  # --workers' default, e.g. 1 in a container scaled by compose
REPORT_ENV = "RNN_TUNER_REPORT"  # --report's default: 0 skips the figures at the end of a run
THREADS_ENV = "OMP_NUM_THREADS"  # OpenMP's own: fixes the threads of every trial
RAY_ADDRESS_ENV = "RAY_ADDRESS"  # Ray's own; `ray job submit` sets it for the command it runs
# What Ray's workers take from this shell (a remote node has none of it): MLflow's settings and
# login (MLFLOW_*), the threads, the debug switch. Passed as the actors' arguments, which Ray
# shows nowhere, rather than as a runtime_env, which its dashboard shows.
RAY_FORWARDED_ENV = (THREADS_ENV, "OMP_WAIT_POLICY", "RNN_TUNER_DEBUG")

_storage_option = click.option(
    "--storage",
    metavar="URL",
    help=f"Study database URL. Default: ${STORAGE_ENV}, else the study file's study.storage, "
    f"else {DEFAULT_STORAGE} (or an older rnn-tuner's rnn_tuner.db here, if no journal is).",
)


def _load(path: Path, read_test: bool = False):  # noqa: ANN202 - StudyConfig, imported lazily
    """The validated study file (a separate test file checked only if `read_test`); exit 2 if bad.
    Labels that only validation/test data hold are not an error: one warning lists them."""
    from tuner.config import StudyFileError, data_warning, load_study_file

    try:
        cfg = load_study_file(path, read_test)
    except StudyFileError as e:
        click.echo(redact(str(e)), err=True)
        click.echo("Fix the keys above and run `rnn-tuner validate FILE` again.", err=True)
        sys.exit(BAD_INPUT)
    warning = data_warning(cfg, read_test)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    return cfg


def _first(*candidates: tuple[str | None, str]) -> tuple[str, str]:
    """The first value given, and where it came from (a flag, a variable, a study-file key)."""
    return next((value, source) for value, source in candidates if value is not None)


def _env(name: str) -> str | None:
    return os.environ.get(name) or None  # set but empty: as good as unset


def _storage(
    cli_value: str | None, file_value: str | None = None, *, must_exist: bool = False
) -> tuple[str, str]:
    """The study database URL and its source; a URL that cannot work is an error (exit 2).
    `must_exist`: for the commands that only read, which must create no database."""
    default, notice = embedded_storage()
    url, source = _checked_url(
        storage_problem,
        must_exist,
        (cli_value, "--storage"),
        (_env(STORAGE_ENV), STORAGE_ENV),
        (file_value, "study.storage"),
        (default, "the default storage"),
    )
    if notice and source == "the default storage":
        click.echo(notice, err=True)
    return url, source


def _tracking_uri(
    cli_value: str | None, file_value: str | None, *, must_exist: bool = False
) -> tuple[str, str]:
    """The MLflow tracking URI and its source, checked like `_storage`."""
    return _checked_url(
        tracking_problem,
        must_exist,
        (cli_value, "--tracking-uri"),
        (_env(TRACKING_ENV), TRACKING_ENV),
        (file_value, "tracking.uri"),
        (DEFAULT_TRACKING_URI, "the default tracking URI"),
    )


def _checked_url(
    problem_of: Callable[..., str | None], must_exist: bool, *candidates: tuple[str | None, str]
) -> tuple[str, str]:
    """The first URL given, its secrets remembered for redaction; exit 2 naming its source if
    `problem_of` finds it cannot work."""
    url, source = _first(*candidates)
    remember_secrets(url)
    problem = problem_of(url, must_exist=must_exist)
    if problem:
        _fail(f"{source}: {problem}", BAD_INPUT)
    return absolute_sqlite(url), source


def _cluster_worker_index() -> int | None:
    for var in WORKER_INDEX_ENVS:
        value = os.environ.get(var)
        if value is None:
            continue
        if not value.isdigit():
            _fail(
                f"{var}={value!r} is not a worker index (a whole number >= 0); unset it, or "
                "let the Kubernetes Job or Slurm array that runs this worker set it",
                BAD_INPUT,
            )
        return int(value)
    return None


def _stores(cfg, cli_storage: str | None, cli_tracking: str | None) -> tuple[str, str]:  # noqa: ANN001
    """The study database and the MLflow store of a run, which must be two databases."""
    storage, storage_source = _storage(cli_storage, cfg.study.storage)
    tracking, tracking_source = _tracking_uri(cli_tracking, cfg.tracking.uri)
    if same_database(storage, tracking):
        _fail(
            f"the study database ({storage_source}) and the MLflow tracking store "
            f"({tracking_source}) are the same database {redact(storage)}; Optuna's and "
            f"MLflow's tables cannot share one: give MLflow its own, e.g. {DEFAULT_TRACKING_URI}",
            BAD_INPUT,
        )
    return storage, tracking


def _study_name(name: str, source: str) -> str:
    from tuner.config import name_problem, shorten

    problem = name_problem(name)
    if problem:
        _fail(f"{source}: the study name {shorten(repr(name), 60)} {problem}", BAD_INPUT)
    return name


def _fail(message: str, code: int = ENVIRONMENT) -> NoReturn:
    click.echo(f"error: {redact(message)}", err=True)
    sys.exit(code)


class _Commands(click.Group):
    """Whatever escapes a command ends as one line and the README's exit code, never a
    traceback (RNN_TUNER_DEBUG=1 lets it through, for a bug report)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            _fail("interrupted", INTERRUPTED)
        except BadInput as e:
            _fail(str(e), BAD_INPUT)
        except Exception as e:
            if os.environ.get("RNN_TUNER_DEBUG"):
                raise
            from tuner.config import shorten

            _fail(
                f"{type(e).__name__}: {shorten(str(e), 500)} (unexpected; run again with "
                "RNN_TUNER_DEBUG=1 to see where, and report it)",
                ENVIRONMENT,
            )


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rnn-tuner", prog_name="rnn-tuner")
def main() -> None:
    """Tune RNN, LSTM and GRU networks with Optuna; every trial recorded in MLflow.

    Start with `rnn-tuner run studies/quickstart.yaml`, then `mlflow ui --backend-store-uri
    sqlite:///mlflow.db` to see the study's runs.
    """
    hide_secrets(os.environ.get(STORAGE_ENV), os.environ.get(TRACKING_ENV))


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
    envvar=WORKERS_ENV,
    help=f"Worker processes on this machine. Default: ${WORKERS_ENV}, else one per core on a "
    "storage several processes share (a journal, PostgreSQL), else 1; with --ray, worker "
    "actors on the cluster (default: as many as it fits).",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="",
    metavar="[ADDRESS]",
    help=f"Run the workers as actors on a Ray cluster: `auto`, HOST:PORT, or none for "
    f"${RAY_ADDRESS_ENV}, else cluster.ray.address, else a Ray started on this machine for the "
    "run. Write it after FILE. Needs `pip install 'rnn-tuner[ray]'`.",
)
@click.option(
    "--max-trials",
    type=click.IntRange(min=1),
    metavar="M",
    help="Stop when the study holds M trials, counted across every worker on every "
    "machine (default: budget.max_trials).",
)
@click.option(
    "--verbose",
    is_flag=True,
    help="Also print a line per epoch of each trial (where no live bar shows the epochs: "
    "logs, CI, --workers).",
)
@click.option(
    "--report/--no-report",
    default=True,
    envvar=REPORT_ENV,
    help="Draw the study's figures into its parent run when the last worker ends (default; "
    f"${REPORT_ENV}=0 turns it off). `rnn-tuner report` draws them at any time.",
)
def run(
    study_file: Path,
    n_trials: int | None,
    timeout: float | None,
    storage: str | None,
    study_name: str | None,
    tracking_uri: str | None,
    workers: int | None,
    max_trials: int | None,
    verbose: bool,
    report: bool,
    ray_address: str | None,
) -> None:
    """Create or resume the study and run trials; a second run adds trials to the same study.

    The same command on other machines, with the same --storage URL, joins the same study."""
    threads = _thread_settings()
    cfg = _load(study_file)
    storage_url, tracking = _stores(cfg, storage, tracking_uri)
    name = cfg.study.name if study_name is None else _study_name(study_name, "--study-name")
    mlflow_defaults()
    quiet_libraries()
    from tuner.request import RunRequest

    req = RunRequest(
        cfg=cfg,
        storage=storage_url,
        tracking_uri=tracking,
        study_name=name,
        n_trials=n_trials or cfg.budget.n_trials,
        timeout=timeout or cfg.budget.timeout,
        study_file=study_file,
        max_trials=max_trials or cfg.budget.max_trials,
        worker_index=_cluster_worker_index(),
        threads=threads,
        verbose=verbose,
        report=report,
    )
    ray_plan = _ray_plan(cfg, ray_address, workers)
    if ray_plan is not None:
        _refuse_local_storage_on_ray(req.storage, req.tracking_uri, ray_plan.address)
    elif workers is None:
        workers = _default_workers(req)
    _refuse_sqlite_for_many(req.storage, workers or 1)
    click.echo(
        f"study {req.study_name!r} in {redact(req.storage)}; MLflow at {redact(req.tracking_uri)}"
        + (f"; {workers} workers" if ray_plan is None and workers > 1 else ""),
        err=True,
    )
    if ray_plan is not None:
        sys.exit(_run_on_ray(req, ray_plan))
    sys.exit(_run_many(req, workers) if (workers or 1) > 1 else _run_one(req))


def _thread_settings():  # noqa: ANN202 - tuner.threads.Threads
    """Idle OpenMP threads sleep instead of spinning against other processes: set before torch
    starts, here and in the --workers processes (they inherit it). The user's OMP_NUM_THREADS
    fixes the threads per trial; else each trial's network size decides (tuner.threads)."""
    from tuner.threads import Threads

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    value = os.environ.get(THREADS_ENV)
    if value is None:
        return Threads()
    if not value.isdigit() or int(value) < 1:
        _fail(
            f"{THREADS_ENV}={value!r} is not a thread count (a whole number >= 1); unset it to "
            "let rnn-tuner choose by each network's size",
            code=2,
        )
    return Threads(fixed=int(value))


def _default_workers(req) -> int:  # noqa: ANN001 - RunRequest
    """One per core (tuner.threads.default_workers) where several processes may share the
    storage; one on SQLite, and one under a cluster's worker index (the cluster places them)."""
    from tuner.threads import default_workers
    from tuner.urls import shared_by_processes

    if req.worker_index is not None or not shared_by_processes(req.storage):
        return 1
    trials = [n for n in (req.n_trials, req.max_trials) if n is not None]
    return default_workers(req.threads.fixed, min(trials) if trials else None)


def _refuse_sqlite_for_many(storage: str, workers: int) -> None:
    from tuner.urls import shared_by_processes

    if workers > 1 and not shared_by_processes(storage):
        _fail(
            f"--workers {workers} needs a storage that several processes can write at once; "
            f"{redact(storage)} is SQLite, which is for one process. On this machine use a "
            "journal file (--storage journal:///rnn_tuner.log, the default); across machines "
            "PostgreSQL (--storage journal+postgresql+psycopg://USER:PASSWORD@HOST:5432/DB, see "
            "docs/team.md); or run one worker.",
            BAD_INPUT,
        )


def _ray_plan(cfg, cli_address: str | None, workers: int | None):  # noqa: ANN001, ANN202
    """How the workers run on Ray (tuner.ray_workers.RayPlan), or None without `--ray` and
    without `cluster.ray`; Ray not installed is an error naming the extra (exit 2)."""
    if cli_address is None and cfg.cluster.ray is None:
        return None
    from tuner.config import RayBlock
    from tuner.ray_workers import RayPlan, import_ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every worker's trial lines, not a digest
    import_ray()
    block = cfg.cluster.ray or RayBlock()
    env = {
        name: value
        for name, value in os.environ.items()
        if name.startswith("MLFLOW_") or name in RAY_FORWARDED_ENV
    }
    return RayPlan(
        address=cli_address or _env(RAY_ADDRESS_ENV) or block.address,
        workers=workers,
        max_restarts=block.max_restarts,
        resources=cfg.cluster.resources,
        env=env,
    )


def _refuse_local_storage_on_ray(storage: str, tracking: str, address: str | None) -> None:
    """Ray's workers are processes on any node: the study needs a database server, also on a
    Ray started here (a rehearsal of the cluster run). An MLflow store in a file works only
    where every node sees the file (a local Ray, a shared disk)."""
    from tuner.urls import is_sqlite, journal_file

    fix = (
        "Use PostgreSQL (--storage postgresql+psycopg://USER:PASSWORD@HOST:5432/DB, or its "
        "journal: --storage journal+postgresql+psycopg://USER:PASSWORD@HOST:5432/DB; see "
        "docs/scale.md)"
    )
    if is_sqlite(storage) or journal_file(storage) is not None:
        what = (
            "SQLite, which is for one process on one machine"
            if is_sqlite(storage)
            else "a journal file on this machine, which workers on other nodes cannot share"
        )
        _fail(
            f"--ray runs workers as processes on any node of a Ray cluster; {redact(storage)} is "
            f"{what}. {fix}",
            BAD_INPUT,
        )
    if address is not None and not tracking.startswith(("http://", "https://", "databricks")):
        click.echo(
            f"warning: MLflow at {redact(tracking)} is a store on this machine's disk; Ray "
            "workers on other nodes see it only on a shared disk. A tracking server "
            "(--tracking-uri http://HOST:5000) works from every node",
            err=True,
        )


def _run_on_ray(req, plan) -> int:  # noqa: ANN001 - RunRequest, tuner.ray_workers.RayPlan
    """The workers as actors on a Ray cluster; returns the command's exit code."""
    from tuner.ray_workers import RayUnreachable, run_on_ray

    _preflight(req)
    try:
        code = run_on_ray(req, plan)
    except RayUnreachable as e:
        _fail(str(e), ENVIRONMENT)
    if code == 130:
        click.echo(
            "interrupted: running trials were recorded as failed; run again to resume", err=True
        )
    return code


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
    from tuner.worker import TooManyFailures, run_worker

    try:
        summary = run_worker(req)
    except (StorageError, TrackingError, TooManyFailures, ValueError, BadInput) as e:
        _fail(str(e), exit_code(e))
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
        _fail(str(e), exit_code(e))


def mlflow_defaults() -> None:
    """MLflow settings for a worker, unless the user set them (benchmarks call this too)."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # only matters for a file:// URI
    # MLflow's own defaults retry an unreachable server for minutes; fail within seconds instead.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    # MLflow 3 wraps every client call for usage telemetry: time in every trial.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def quiet_libraries() -> None:
    """Our own line per trial replaces Optuna's log; experimental-feature notices are ours to heed.
    Each `--workers` process and Ray worker calls it too: none of them inherits this process's
    settings."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna.study._optimize").addFilter(_not_said_by_us)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # Lightning says this at every fit wherever Slurm's srun is installed; a trial is one process.
    warnings.filterwarnings("ignore", message="The `srun` command is available")
    # cmaes with sampler.constraints, each trial: documented (they only decide the best)
    warnings.filterwarnings("ignore", message="Constraints have been set, but CmaEsSampler")
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Models are pickled on purpose (docs/results.md): MLflow's warning about it, at every kept
    # trial and every retrain, would only repeat what the docs say.
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    # Our warnings (a tracking call that failed, ...) as plain lines on stderr, whatever the root
    # logger says: importing mlflow.pytorch (a kept model) runs basicConfig(level=ERROR), which
    # silenced every warning after the first kept trial.
    # logging.lastResort: the handler that printed them before, the message alone on whatever
    # sys.stderr is at the time (a click test runner swaps it).
    ours = logging.getLogger("tuner")
    if not ours.handlers and logging.lastResort is not None:
        ours.addHandler(logging.lastResort)
        ours.setLevel(logging.WARNING)
        ours.propagate = False


# Optuna's two warnings on a trial our objective failed by raising: our line for the trial says
# its state and reason, with a worker's prefix. Its warning on a value it refused ("... because
# of the following error: The value nan is not acceptable.") names no exception: kept.
_SAID_BY_US = re.compile(
    r"Trial \d+ failed with parameters: .* because of the following error: [\w.]+\(.*\)\."
    r"|Trial \d+ failed with value None\.",
    re.S,
)


def _not_said_by_us(record: logging.LogRecord) -> bool:
    return _SAID_BY_US.fullmatch(record.getMessage()) is None


@main.command()
@click.argument("study", required=False)
@_storage_option
def status(study: str | None, storage: str | None) -> None:
    """Trials by state, best value and parameters (every study when STUDY is omitted)."""
    from tuner.report import status_text

    quiet_libraries()
    if study is not None:
        _study_name(study, "STUDY")
    url, _ = _storage(storage, must_exist=True)
    _with_study_errors(lambda: click.echo(status_text(url, study)))


@main.command()
@click.argument("study")
@_storage_option
def best(study: str, storage: str | None) -> None:
    """The best parameters as a `fixed:` YAML block to paste back into a study file."""
    from tuner.report import best_yaml

    quiet_libraries()
    _study_name(study, "STUDY")
    url, _ = _storage(storage, must_exist=True)
    _with_study_errors(lambda: click.echo(best_yaml(url, study), nl=False))


@main.command()
@click.argument("study")
@click.option("--from", "source", metavar="URL", required=True, help="The storage it is in now.")
@click.option(
    "--to",
    "destination",
    metavar="URL",
    default=DEFAULT_STORAGE,
    show_default=True,
    help="The storage to copy to.",
)
@click.option("--to-study-name", metavar="NAME", help="Its name there (default: the same).")
def migrate(study: str, source: str, destination: str, to_study_name: str | None) -> None:
    """Copy STUDY to another storage with optuna.copy_study, e.g. from an older rnn-tuner's
    default SQLite file to today's default journal file: `rnn-tuner migrate quickstart --from
    sqlite:///rnn_tuner.db`. The source keeps its copy; MLflow is untouched."""
    from tuner.optuna_tools import migrate as copy

    quiet_libraries()
    _study_name(study, "STUDY")
    if to_study_name is not None:
        _study_name(to_study_name, "--to-study-name")
    src = _checked_url(storage_problem, True, (source, "--from"))[0]
    dst = _checked_url(storage_problem, False, (destination, "--to"))[0]
    copied: list[int] = []
    _with_study_errors(lambda: copied.append(copy(study, src, dst, to_study_name)))
    click.echo(f"copied study {study!r} ({copied[0]} trials) to {redact(dst)}")


@main.command(
    "optuna",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def optuna_command(args: tuple[str, ...]) -> None:
    """The stock `optuna` command on the study storage (journals included, also in PostgreSQL):
    `rnn-tuner optuna trials --study-name NAME`; without --storage (or $OPTUNA_STORAGE), that of
    `rnn-tuner status`."""
    from tuner.optuna_tools import optuna_cli

    for i, arg in enumerate(args[:-1]):
        if arg == "--storage":
            remember_secrets(args[i + 1])
    creates = "create-study" in args
    sys.exit(optuna_cli(list(args), lambda: _storage(None, must_exist=not creates)[0]))


@main.command()
@_storage_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
def dashboard(storage: str | None, host: str, port: int) -> None:
    """optuna-dashboard on the study storage, journals included (it has no login: keep it on
    127.0.0.1 and reach it through an SSH tunnel)."""
    from tuner.optuna_tools import dashboard as serve

    quiet_libraries()
    url, _ = _storage(storage, must_exist=True)
    _with_study_errors(lambda: serve(url, host, port))


def _with_study_errors(action) -> None:  # noqa: ANN001
    from tuner.report import NoSuchStudy
    from tuner.study import StorageError

    try:
        action()
    except (NoSuchStudy, BadInput) as e:
        _fail(str(e), BAD_INPUT)
    except StorageError as e:
        _fail(str(e), exit_code(e))


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
    quiet_libraries()
    from tuner.plots import write_report

    try:
        _study_name(study, "STUDY")
        found, tracker, parent_id = _study_and_parent(
            _storage(storage, must_exist=True)[0],
            study,
            _tracking_uri(tracking_uri, None, must_exist=True)[0],
        )
        click.echo(f"study {study!r}: " + write_report(found, tracker, parent_id).text())
    except _results_errors() as e:
        _fail(str(e), exit_code(e))


_study_file_option = click.option(
    "--study-file",
    type=click.Path(path_type=Path),
    help="The study's file (task and data). Default: the copy logged in the parent run.",
)


@main.command()
@click.argument("study")
@_storage_option
@_tracking_option
@_study_file_option
def retrain(
    study: str, storage: str | None, tracking_uri: str | None, study_file: Path | None
) -> None:
    """Train the best trial's configuration again (seeded), test it once on the test split,
    and register it in the MLflow model registry as a new version of rnn-tuner-STUDY."""
    quiet_libraries()
    from models.errors import DataError
    from tuner.config import StudyFileError
    from tuner.retrain import retrain as retrain_best
    from tuner.retrain import study_config

    try:
        cfg = _load(study_file, read_test=True) if study_file is not None else None
        _study_name(study, "STUDY")
        found, tracker, parent_id = _study_and_parent(
            _storage(storage, cfg and cfg.study.storage, must_exist=True)[0],
            study,
            _tracking_uri(tracking_uri, cfg and cfg.tracking.uri, must_exist=True)[0],
        )
        cfg = cfg or study_config(tracker, parent_id, None)
        click.echo(retrain_best(found, cfg, tracker, parent_id).text())
    except (StudyFileError, DataError) as e:  # the data: a file moved or changed since the run
        _fail(str(e), BAD_INPUT)
    except _results_errors() as e:
        _fail(str(e), exit_code(e))


@main.command()
@click.argument("study")
@click.option("--trial", type=click.IntRange(min=0), help="Its kept model; default: the best's.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "torchscript"]),
    required=True,
    help="ONNX (runs in onnxruntime) or TorchScript (torch.jit.load, no Python code needed).",
)
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option(
    "--model-uri",
    metavar="URI",
    help="Another model of the study's network, e.g. models:/rnn-tuner-STUDY/1 (retrain's).",
)
@_storage_option
@_tracking_option
@_study_file_option
def export(
    study: str,
    trial: int | None,
    fmt: str,
    output: Path,
    model_uri: str | None,
    storage: str | None,
    tracking_uri: str | None,
    study_file: Path | None,
) -> None:
    """Write the study's kept model (its best trial's, or --trial N's) as ONNX or TorchScript,
    checked against the PyTorch model on the study's validation data."""
    quiet_libraries()
    from models.errors import DataError
    from models.export import NotExportable
    from tuner.config import StudyFileError
    from tuner.export import export_model
    from tuner.keep import NoKeptModel
    from tuner.retrain import study_config

    try:
        cfg = _load(study_file) if study_file is not None else None
        _study_name(study, "STUDY")
        found, tracker, parent_id = _study_and_parent(
            _storage(storage, cfg and cfg.study.storage, must_exist=True)[0],
            study,
            _tracking_uri(tracking_uri, cfg and cfg.tracking.uri, must_exist=True)[0],
        )
        cfg = cfg or study_config(tracker, parent_id, None)
        exported = export_model(found, cfg, tracker, parent_id, fmt, output, trial, model_uri)
        click.echo(exported.text())
    except (NotExportable, NoKeptModel, StudyFileError, DataError) as e:
        _fail(str(e), BAD_INPUT)
    except ImportError as e:  # onnxruntime: an optional extra
        _fail(f"{e}; install the export extra: pip install 'rnn-tuner[export]'", BAD_INPUT)
    except _results_errors() as e:
        _fail(str(e), exit_code(e))


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
            _fail(f"cannot update {write_docs}: {e}", BAD_INPUT)
        click.echo(f"{len(changed)} file(s) updated" + "".join(f"\n  {p}" for p in changed))
    else:
        click.echo(markdown_text() if markdown else schema_text(), nl=False)
