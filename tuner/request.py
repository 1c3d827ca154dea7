"""What `rnn-tuner run` asks of a worker (`RunRequest`) and what the worker reports (`RunSummary`).

Its own module so that the command, the launcher of local workers and the worker share them
without importing each other; nothing heavy is imported here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tuner.config import StudyConfig
from tuner.threads import Threads


@dataclass
class RunRequest:
    cfg: StudyConfig
    storage: str
    tracking_uri: str
    study_name: str
    n_trials: int | None = None  # trials this command runs; None: until timeout or Ctrl-C
    max_trials: int | None = None  # the study's trials in all, across every worker anywhere
    timeout: float | None = None  # seconds after which no new trial starts
    study_file: Path | None = None  # logged as an artifact of a new parent run
    progress: bool = True  # tuner.progress: bars on a terminal, else a line per trial
    verbose: bool = False  # also a line per epoch of each trial
    report: bool = True  # the study's figures when the last worker ends (tuner.end_of_study)
    bars: bool = True  # False where several workers share one terminal (--workers N)
    worker_index: int | None = None  # a cluster's or --workers' index: GPU, tags, output
    threads: Threads = field(default_factory=Threads)  # intra-op threads per trial
    where: dict[str, str] = field(default_factory=dict)  # MLflow tags: the node a trial ran on
    # False from tuner.api: no signal handlers (a notebook's Ctrl-C is a KeyboardInterrupt)
    handle_signals: bool = True


@dataclass
class RunSummary:
    study_name: str
    parent_run_id: str
    states: Counter = field(default_factory=Counter)
    interrupted_by: str | None = None
    stopped: str | None = None  # the study-file rule that stopped the study (tuner.stop_rules)

    def line(self) -> str:
        states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.states.items()))
        stopped = ""
        if self.stopped is not None:
            rule = self.stopped.split(":", 1)[0]
            stopped = (
                f"; study stopped by {self.stopped}; to go on, loosen {rule} in the study file"
            )
        return (
            f"study {self.study_name!r}: {states or 'no trials'} here; "
            f"MLflow parent run {self.parent_run_id}{stopped}"
        )
