"""rnn-tuner's tuning service: study files, Optuna studies, MLflow records.

From Python (docs/python.md): `tuner.run`, `tuner.load`, `tuner.results`, `tuner.best_model`
(tuner/api.py). From the shell: `rnn-tuner` (tuner/cli.py).

A newcomer's path, from `rnn-tuner run studies/x.yaml` to the MLflow run of one trial:
  cli.run: config.load_study_file -> StudyConfig; a request.RunRequest; cli._run_one (or
    cli._run_many -> launch.run_workers: N processes, each calling worker.run_worker).
  worker.run_worker: tracking.Tracker; stale.storage_with_heartbeats (study.make_storage: Optuna's
    RDB storage, or its journal for a `journal` URL: journal.JournalStudyStorage); study.open_study
    (sampler and pruner from plugins); worker._attach_parent (the study's MLflow parent run).
  worker.run_trials, the loop: budget.Slots.claim, then study.optimize(n_trials=1): Optuna asks
    for a trial, calls objective.Objective (through worker.LastTrial, which keeps the outcome
    until it is recorded), tells the result and calls keep.KeepBest (the
    network kept if the study ranks the trial among its best) and worker.RecordTrial.
  objective.Objective.__call__: space.suggest; Tracker.start_trial queues the trial's child run;
    models.train fits with PruningCallback; Tracker.finish_trial logs epochs, closes the run.
  The last worker out: end_of_study.finish_if_last -> plots.write_report, Tracker.close_parent.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuner.api import best_model, load, results, run

_API = ("run", "load", "results", "best_model")


def __getattr__(name: str) -> Any:
    # on first use: `rnn-tuner --help` imports this package and stays fast
    if name in _API:
        value = getattr(import_module("tuner.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["best_model", "load", "results", "run"]
