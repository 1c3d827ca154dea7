"""Worker scaling on PostgreSQL, and what storage and tracking cost a trial.

One study on PostgreSQL (MLflow's store on the same server), a real training trial of a few
seconds (adding problem, small LSTM, every trial the same cost: only the learning rate is searched,
no early stopping, a median pruner that checks every epoch but never prunes). Each round runs the
study with 1 worker, then with 2 (order alternating), each worker a process with 1 torch thread
running rnn-tuner's own worker loop (`tuner.worker.run_worker`: budget claim, heartbeats,
pruning checks, MLflow run per trial). Trials per hour: each worker's rate from the end of its
first trial to the end of its last, summed over workers; the row is the median over rounds of
(2 workers) / (1 worker).

Inside the workers, Optuna's storage methods (heartbeat thread included), the pruning checks
(`Trial.report`, `Trial.should_prune`), the sampler, the budget claim and the MLflow calls
(`Tracker`) are timed from outside, by wrapping them in the benchmark's own process: a call inside
another counts once, under the outer one. Their sum per trial, as a share of the trial's time, is
extrapolated to a 30-second trial.

Default workers: the same study run by the real command, `rnn-tuner run FILE --storage
journal:///...` without `--workers` (one worker per core: tuner.threads.default_workers) against
`--workers 1`, alternating; trials per hour from the study's first finished trial to its last.
Target: at least 0.9 x the cores.

    python -m benchmarks --only workers [--quick]
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml

from benchmarks.common import (
    CallTimer,
    Pool,
    median,
    paired_ratio,
    postgres_database,
    process_context,
    row,
    wrap_storage,
)
from tuner.budget import TrialBudget
from tuner.config import parse_study
from tuner.request import RunRequest
from tuner.study import make_storage
from tuner.threads import cores, default_workers
from tuner.tracking import Tracker
from tuner.worker import run_worker

EPOCHS = 8
HEARTBEAT_S = 10  # the study file default
TRIAL_30S = 30.0
# A trial of about two seconds on an idle core; identical cost every time.
STUDY = {
    "study": {"name": "bench-workers", "heartbeat_interval": HEARTBEAT_S},
    "task": {"source": "adding", "seq_len": 50, "n_train": 2000, "n_val": 500, "n_test": 100},
    "fixed": {"cell": "lstm", "hidden_size": 48, "batch_size": 64, "patience": None},
    "search": {"lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True}},
    "objective": "val_mse",
    "sampler": {"name": "tpe"},
    # Checks every epoch like any median pruner, reads the study like any, never prunes.
    "pruner": {"name": "median", "options": {"n_startup_trials": 3, "n_warmup_steps": 1000}},
    "budget": {"max_epochs": EPOCHS},
}
OVERHEAD = ("storage", "pruning", "sampler", "budget", "tracking")  # main-thread categories


def run(quick: bool) -> list[dict[str, Any]]:
    rounds = 1 if quick else 3
    per_worker = 3 if quick else 4
    bare_s = 3.0 if quick else 5.0
    throughput: dict[str, list[float]] = {"1": [], "2": [], "bare 1": [], "bare 2": []}
    trials: list[dict[str, Any]] = []
    with postgres_database("workers") as url, postgres_database("mlflow") as mlflow_url:
        Tracker(mlflow_url, "bench-workers")  # MLflow's tables, made once before workers race
        pool = Pool(process_context(), 2, _setup, _work)
        try:
            for r in range(rounds):
                cases = ["1", "2", "bare 1", "bare 2"]
                for case in cases if r % 2 == 0 else cases[::-1]:
                    n = int(case[-1])
                    task = {
                        "bare_s": bare_s if case.startswith("bare") else None,
                        "url": url,
                        "mlflow": mlflow_url,
                        "study": f"workers-{n}-{r}",
                        "trials": per_worker,
                    }
                    _, reports = pool.run(task, n, timeout=900)
                    rate = sum(_rate(rep["trials"]) for rep in reports)
                    throughput[case].append(rate)
                    if task["bare_s"] is None:  # each worker's first trial is its warm-up
                        trials += [{**t, "n": n} for rep in reports for t in rep["trials"][1:]]
                    unit = "steps/s" if task["bare_s"] else "trials/h"
                    shown = rate if task["bare_s"] else 3600 * rate
                    print(f"  workers round {r}, {case}: {shown:.0f} {unit}", file=sys.stderr)
        finally:
            pool.close()
    return [_scaling_row(throughput, trials), _share_row(trials), _default_workers_row(quick)]


def _default_workers_row(quick: bool) -> dict[str, Any]:
    """`rnn-tuner run` with its default workers against `--workers 1`, on a journal file."""
    n_cores = cores()
    trials = (3 if quick else 6) * n_cores
    rates: dict[str, list[float]] = {"default": [], "1": []}
    for r in range(1 if quick else 2):
        for case in ("default", "1") if r % 2 == 0 else ("1", "default"):
            rates[case].append(_command_rate(case, trials))
            print(
                f"  workers default row {r}, {case}: {rates[case][-1]:.0f} trials/h",
                file=sys.stderr,
            )
    ratio = paired_ratio(rates["1"], rates["default"])
    target = 0.9 * n_cores
    return row(
        f"trials/h, default workers ({default_workers(None, trials)}) vs --workers 1",
        ratio,
        f">= {target:.2g}",
        ratio >= target,
        summary=f"{median(rates['default']):.0f} vs {median(rates['1']):.0f} trials/h on {n_cores} cores",
        trials_per_hour={k: median(v) for k, v in rates.items()},
        per_round=[y / x for x, y in zip(rates["1"], rates["default"], strict=True)],
    )


def _command_rate(workers: str, trials: int) -> float:
    """Trials per hour of one `rnn-tuner run` of `trials` trials in a fresh directory."""
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        study_file = Path(tmp) / "s.yaml"
        study_file.write_text(yaml.safe_dump({**STUDY, "study": {"name": "default-workers"}}))
        storage = f"journal:///{tmp}/s.log"
        argv = [sys.executable, "-m", "tuner", "run", str(study_file), "--storage", storage]
        argv += ["--tracking-uri", f"sqlite:///{tmp}/mlflow.db", "--n-trials", str(trials)]
        env = {
            k: v for k, v in os.environ.items() if k not in ("RNN_TUNER_WORKERS", "OMP_NUM_THREADS")
        }
        if workers != "default":
            env["RNN_TUNER_WORKERS"] = workers
        subprocess.run(argv, cwd=tmp, env=env, check=True, capture_output=True, timeout=1800)
        opened = make_storage(storage)
        ends = sorted(
            t.datetime_complete.timestamp()
            for t in optuna.load_study(study_name="default-workers", storage=opened).trials
            if t.datetime_complete is not None
        )
        opened.engine.dispose()
    return 3600 * (len(ends) - 1) / (ends[-1] - ends[0])


def _rate(trials: list[dict[str, Any]]) -> float:
    """One worker's trials (or steps) per second, from the end of its first to its last."""
    ends = [t["end"] for t in trials]
    return (len(ends) - 1) / (ends[-1] - ends[0])


def _scaling_row(
    throughput: dict[str, list[float]], trials: list[dict[str, Any]]
) -> dict[str, Any]:
    """The bare loop's scaling, measured in the same rounds, says how many cores the machine
    had free: on a machine busy with other work, neither can reach 2x."""
    ratio = paired_ratio(throughput["1"], throughput["2"])
    bare = paired_ratio(throughput["bare 1"], throughput["bare 2"])
    per_hour = {n: 3600 * median(throughput[n]) for n in ("1", "2")}
    return row(
        "trials/h, 2 workers vs 1 (1 thread each)",
        ratio,
        ">= 1.7",
        ratio >= 1.7,
        summary=f"{per_hour['2']:.0f} vs {per_hour['1']:.0f} trials/h; a bare torch loop "
        f"scaled {bare:.2f}x in the same rounds",
        trials_per_hour=per_hour,
        bare_torch_loop_scaling=bare,
        efficiency_vs_bare=ratio / bare,
        trial_s={str(n): median(t["seconds"] for t in trials if t["n"] == n) for n in (1, 2)},
        trial_cpu_s={str(n): median(t["cpu_s"] for t in trials if t["n"] == n) for n in (1, 2)},
        per_round=[y / x for x, y in zip(throughput["1"], throughput["2"], strict=True)],
        bare_per_round=[
            y / x for x, y in zip(throughput["bare 1"], throughput["bare 2"], strict=True)
        ],
    )


def _share_row(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Storage + tracking time per trial as a share of the trial, and extrapolated to 30 s."""
    ms = {c: median(1000 * t["totals"].get(c, 0.0) for t in trials) for c in OVERHEAD}
    hb = [t for t in trials if t["counts"].get(CallTimer.BACKGROUND)]
    heartbeat_ms = (
        median(
            1000 * t["totals"][CallTimer.BACKGROUND] / t["counts"][CallTimer.BACKGROUND] for t in hb
        )
        if hb
        else 0.0
    )
    trial_s = median(t["seconds"] for t in trials)
    measured = median(sum(t["totals"].get(c, 0.0) for c in OVERHEAD) / t["seconds"] for t in trials)
    # The same trial, its epochs longer: the calls per trial stay, the heartbeats follow the
    # clock (one at the start, then every HEARTBEAT_S seconds).
    beats = TRIAL_30S / HEARTBEAT_S + 1
    share_30 = (sum(ms.values()) + heartbeat_ms * beats) / 1000 / TRIAL_30S
    # The pessimistic bound: a 30 s trial of epochs as short as these, so many more of the
    # per-epoch pruning checks.
    epochs_30 = TRIAL_30S / (trial_s / EPOCHS)
    short_epochs_ms = sum(ms.values()) + ms["pruning"] * (epochs_30 / EPOCHS - 1)
    share_30_short = (short_epochs_ms + heartbeat_ms * beats) / 1000 / TRIAL_30S
    return row(
        "storage+tracking share of a 30 s trial",
        share_30,
        "< 0.01",
        share_30 < 0.01,
        summary=f"{sum(ms.values()):.0f} ms per trial of {trial_s:.1f} s; bound with 30 s of "
        f"short epochs {share_30_short:.3f}",
        ms_per_trial=ms,
        heartbeat_ms_per_call=heartbeat_ms,
        trial_s=trial_s,
        share_measured=measured,
        share_30s_short_epochs=share_30_short,
        trials=len(trials),
    )


# ---------------------------------------------------------------- inside a worker process


class _Phase:
    """The trials of one task: the first one waits for the shared start; each records its time
    and the timed calls since the previous one (the budget claim before it included)."""

    def __init__(self, timer: CallTimer, ready: Any) -> None:
        self.timer, self.ready, self.trials = timer, ready, []
        self.started = False


_PHASE: _Phase | None = None


def _setup() -> CallTimer:
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")  # Lightning's and Optuna's notices, once per trial
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    timer = CallTimer()
    wrap_storage(timer)
    timer.wrap(optuna.trial.Trial, "pruning", ["report", "should_prune"])
    timer.wrap(
        optuna.samplers.TPESampler,
        "sampler",
        ["infer_relative_search_space", "sample_relative", "sample_independent"],
    )
    timer.wrap(TrialBudget, "budget", ["claim"])
    timer.wrap(Tracker, "tracking", ["start_trial", "finish_trial", "update_best"])
    optimize = optuna.Study.optimize

    def timed_optimize(study: optuna.Study, *args: Any, **kwargs: Any) -> None:
        phase = _PHASE
        if phase is None:
            return optimize(study, *args, **kwargs)
        if not phase.started:  # set up (study, parent run): every worker starts together
            phase.ready()
            phase.started = True
            timer.take()
        started, cpu = time.perf_counter(), time.process_time()
        optimize(study, *args, **kwargs)
        totals, counts = timer.take()
        phase.trials.append(
            {
                "end": time.time(),
                "seconds": time.perf_counter() - started,
                "cpu_s": time.process_time() - cpu,  # this process, every thread
                "totals": totals,
                "counts": counts,
            }
        )

    optuna.Study.optimize = timed_optimize  # type: ignore[method-assign]
    return timer


def _work(task: dict[str, Any], timer: CallTimer, ready: Any) -> dict[str, Any]:
    global _PHASE
    if task["bare_s"] is not None:
        return {"trials": _bare_loop(task["bare_s"], ready)}
    cfg = parse_study({**STUDY, "study": {**STUDY["study"], "name": task["study"]}})
    req = RunRequest(
        cfg=cfg,
        storage=task["url"],
        tracking_uri=task["mlflow"],
        study_name=task["study"],
        n_trials=task["trials"],
        max_trials=10**6,  # the claim is timed; the limit is never reached
        progress=False,
    )
    _PHASE = _Phase(timer, ready)
    try:
        summary = run_worker(req)
    finally:
        phase, _PHASE = _PHASE, None
    if summary.states.get("COMPLETE", 0) != task["trials"]:
        raise RuntimeError(f"expected {task['trials']} complete trials, got {dict(summary.states)}")
    return {"trials": phase.trials}


def _bare_loop(seconds: float, ready: Any) -> list[dict[str, float]]:
    """The same network and batch shape trained by a plain PyTorch loop: a step's end time each."""
    torch.manual_seed(0)
    inputs, targets = torch.rand(64, 50, 2), torch.rand(64, 1)  # (batch, time, features)
    lstm, head = torch.nn.LSTM(2, 48, batch_first=True), torch.nn.Linear(48, 1)
    params = [*lstm.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    steps = []
    start = ready()
    while time.time() < start + seconds:
        out, _ = lstm(inputs)  # (batch, time, hidden)
        loss = torch.nn.functional.mse_loss(head(out[:, -1]), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps.append({"end": time.time()})
    return steps
