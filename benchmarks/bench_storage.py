"""The study database under stress, and as a study grows.

Stress: 8, 16 and 32 worker processes share one PostgreSQL study and run a trivial objective
(three parameters, ten intermediate reports, `should_prune` after each, as the pruning callback
does) for a fixed window, long enough for a few trials per worker. Compared side by side, in
alternating order (the sampler is random in every mode: the figures are the storage's, not TPE's):

  rdb         Optuna's RDBStorage used directly: `study.optimize(objective, timeout=...)`
  tuner       what an rnn-tuner worker does on its storage for many workers, the journal in a
              PostgreSQL table (`journal+postgresql...`, tuner.journal): `make_storage` (heartbeats,
              pre-pinged pool), one budget claim per trial, `optimize(n_trials=1)`, the best trial
              read after each
and, at 16 workers, what-ifs:
  tuner-rdb   `tuner` on a plain PostgreSQL URL: Optuna's RDB tables (rnn-tuner's path before)
  tuner-lean  `tuner-rdb` without the pruning checks the pruner answers "no" to unread (warm-up)
  grpc        Optuna's gRPC storage proxy in front of the database (only where grpcio is installed)

Reported: trials/s finished inside the window, p95 of a trial's time in storage calls (ms), and
zero lost or duplicated trials (every trial a worker finished is in the database exactly once,
none left running, none there that no worker ran, every budget slot claimed became a trial).

Growth: one turn of a worker's loop without training or MLflow (budget claim, `optimize(n_trials=1)`
with heartbeats and the stale-trial check, the quickstart search space, three user attributes,
ten reports with `should_prune`, the best trial read after it) with rnn-tuner's sampler (TPE,
constant liar) and pruner (median), in a study already holding 10,000 trials against one holding
100, alternating; on both journals (PostgreSQL table and file), TPE on the whole history (rnn-tuner's
incremental TPE, tuner.history), with `sampler.history: 100`, and, as a what-if, Optuna's own
TPESampler on the whole history (the same draws, re-reading every trial at every sample).

    python -m benchmarks --only storage [--quick]
"""

from __future__ import annotations

import contextlib
import math
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from benchmarks.common import (
    CallTimer,
    Pool,
    median,
    paired_ratio,
    percentile,
    postgres_database,
    process_context,
    row,
    wrap_storage,
)
from tuner import keep
from tuner import study as tuner_study
from tuner.budget import TrialBudget
from tuner.config import load_study_file, parse_study
from tuner.space import suggest
from tuner.study import make_pruner, make_sampler, make_storage

ROOT = Path(__file__).resolve().parent.parent
N_REPORTS = 10
UNLIMITED = 10**9  # a budget that never runs out: the claim is measured, not the limit
# rnn-tuner's default pruner for a study file that names none (median, 4 startup trials, 2 warm-up
# steps); the sampler is random in every mode, so the numbers are the storage's, not TPE's.
_PRUNER_CFG = parse_study(
    {"study": {"name": "_"}, "task": {"source": "adding"}, "objective": "val_mse"}
)


def run(quick: bool) -> list[dict[str, Any]]:
    with postgres_database("storage") as url:
        rows = stress(url, quick)
    with postgres_database("growth") as url:  # a log of its own: no stress windows to replay
        return rows + growth(url, quick)


# ---------------------------------------------------------------- stress


def stress(url: str, quick: bool) -> list[dict[str, Any]]:
    # Windows long enough for a few trials per worker: a trial's latency grows with the workers.
    windows = {8: 3.0, 32: 8.0} if quick else {8: 5.0, 16: 8.0, 32: 14.0}
    sizes, rounds = tuple(windows), 1 if quick else 2
    # The what-ifs run at one size, to keep the whole benchmark within its time.
    what_ifs = [] if quick else [m for m in MODES if m not in BASE_MODES and _available(m)]
    plan = {n: [*BASE_MODES, *(what_ifs if n == 16 else [])] for n in sizes}
    # Optuna's tables, made once before anyone races to make them (the proxy and the workers).
    optuna.storages.RDBStorage(url).engine.dispose()
    ctx = process_context()
    results: dict[tuple[int, str], list[dict[str, Any]]] = {}
    with contextlib.ExitStack() as stack:
        urls = {mode: url for mode in MODES}
        pool = Pool(ctx, max(sizes), _setup, _stress_worker)
        stack.callback(pool.close)
        proxy = _start_proxy(ctx, url) if "grpc" in what_ifs else None
        if proxy is not None:
            stack.callback(proxy[0].join)
            stack.callback(proxy[0].terminate)
        for n, modes in plan.items():
            for r in range(rounds):
                for mode in modes if r % 2 == 0 else modes[::-1]:
                    name = f"stress_{mode}_{n}_{r}".replace("-", "_")
                    result = _window(pool, urls[mode], name, mode, n, windows[n], proxy)
                    results.setdefault((n, mode), []).append(result)
                    print(f"  storage {name}: {_brief(result)}", file=sys.stderr, flush=True)
    rows = []
    for n, modes in plan.items():
        base = results[(n, "rdb")]
        for mode in modes[1:]:
            runs = results[(n, mode)]
            ratio = paired_ratio(
                [x["trials_per_s"] for x in base], [x["trials_per_s"] for x in runs]
            )
            lost = sum(x["lost"] for x in base + runs)
            duplicated = sum(x["duplicated"] for x in base + runs)
            both = {"rdb": base, mode: runs}
            tps = {m: median(x["trials_per_s"] for x in v) for m, v in both.items()}
            rows.append(
                row(
                    f"{n} workers: {mode} vs rdb, trials/s",
                    ratio,
                    ">= 2.0" if mode == "tuner" else "what-if",
                    ratio >= 2.0 and lost == duplicated == 0 if mode == "tuner" else None,
                    summary=f"{tps[mode]:.1f} vs {tps['rdb']:.1f} trials/s; lost {lost}, "
                    f"duplicated {duplicated}",
                    trials_per_s=tps,
                    p95_storage_ms={
                        m: median(x["p95_storage_ms"] for x in v) for m, v in both.items()
                    },
                    storage_calls={m: median(x["calls"] for x in v) for m, v in both.items()},
                    lost=lost,
                    duplicated=duplicated,
                )
            )
    return rows


def _brief(result: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
    )


# mode -> (storage kind, worker loop, pruning checks): see the module docstring.
MODES = {
    "rdb": ("rdb", "optuna", "always"),
    "tuner": ("tuner", "tuner", "always"),  # rnn-tuner's storage for many workers: the journal
    # What-ifs:
    "tuner-rdb": ("tuner-rdb", "tuner", "always"),  # rnn-tuner on Optuna's RDB tables
    "tuner-lean": ("tuner-rdb", "tuner", "when-possible"),  # no check answered "no" unread
    "grpc": ("grpc", "optuna", "always"),  # Optuna's gRPC proxy in front of the database
}
BASE_MODES = ("rdb", "tuner")


def _storage(kind: str, url: str, study: str, port: int | None = None) -> Any:
    if kind == "rdb":
        return optuna.storages.RDBStorage(url)
    if kind == "tuner":
        return make_storage(f"journal+{url}", heartbeat_interval=10, grace_period=60)
    if kind == "tuner-rdb":
        return make_storage(url, heartbeat_interval=10, grace_period=60)
    storage = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=port)
    storage.wait_server_ready(timeout=30)
    return storage


def _window(
    pool: Pool, url: str, name: str, mode: str, n: int, seconds: float, proxy: Any
) -> dict[str, Any]:
    """One timed window: n workers on a fresh study; returns throughput, latency, integrity."""
    kind = MODES[mode][0]
    storage = _storage("rdb" if kind == "grpc" else kind, url, name)
    study = optuna.create_study(storage=storage, study_name=name, direction="minimize")
    if MODES[mode][1] == "tuner":  # the first worker of a real run makes the table and the row
        TrialBudget(storage, study._study_id, UNLIMITED, 0)
    task = {"mode": mode, "url": url, "study": name, "seconds": seconds}
    task["port"] = None if proxy is None else proxy[1]
    start, reports = pool.run(task, n, timeout=seconds + 120)
    deadline = start + seconds
    finished = [t for rep in reports for t in rep["trials"]]
    in_window = [t for t in finished if t["end"] <= deadline]

    # Integrity: every trial a worker finished is in the database once, finished; nothing is
    # left running; nothing is there that no worker ran; every budget slot claimed has its trial.
    db_trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    db_numbers = [t.number for t in db_trials]
    done = {t.number for t in db_trials if t.state.is_finished()}
    numbers = [t["number"] for t in finished]
    lost = sum(num not in done for num in numbers)
    lost += sum(t.state == TrialState.RUNNING for t in db_trials)
    duplicated = len(numbers) - len(set(numbers)) + len(db_numbers) - len(set(db_numbers))
    duplicated += len(set(db_numbers) - set(numbers))
    if MODES[mode][1] == "tuner":
        claimed = TrialBudget(storage, study._study_id, UNLIMITED, 0).claimed
        lost += abs(claimed - len(db_trials))
    storage.engine.dispose()
    return {
        "trials_per_s": len(in_window) / seconds,
        "p95_storage_ms": percentile([1000 * t["storage_s"] for t in in_window], 95),
        "calls": median(t["calls"] for t in in_window) if in_window else math.nan,
        "lost": lost,
        "duplicated": duplicated,
    }


def _setup() -> CallTimer:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    timer = CallTimer()
    wrap_storage(timer)
    timer.wrap(TrialBudget, "storage", ["claim"])
    return timer


def _stress_worker(task: dict[str, Any], timer: CallTimer, ready: Any) -> dict[str, Any]:
    kind, loop, checks = MODES[task["mode"]]
    storage = _storage(kind, task["url"], task["study"], task["port"])
    pruner = make_pruner(_PRUNER_CFG)
    study = optuna.load_study(
        study_name=task["study"],
        storage=storage,
        sampler=optuna.samplers.RandomSampler(),
        pruner=pruner,
    )
    objective = _Objective(pruner if checks == "when-possible" else None)
    budget = None
    if loop == "tuner":
        budget = TrialBudget(storage, study._study_id, UNLIMITED, 0)
    trials: list[dict[str, Any]] = []

    def on_end(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if loop == "tuner":  # the worker's callback keeps the parent run's best value current
            with contextlib.suppress(ValueError):
                _ = study.best_trial
        totals, counts = timer.take()
        trials.append(
            {
                "number": trial.number,
                "end": time.time(),
                "storage_s": totals.get("storage", 0.0),
                "calls": counts.get("storage", 0),
            }
        )

    start = ready()
    deadline = start + task["seconds"]
    timer.take()
    if budget is None:
        study.optimize(objective, timeout=task["seconds"], callbacks=[on_end])
    else:
        while time.time() < deadline and budget.claim():
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[on_end])
    if kind != "grpc":
        storage.engine.dispose()
    return {"trials": trials}


class _Objective:
    """Three parameters, ten reports and a pruning check after each; no training. Given the
    pruner, it skips the checks whose answer is "no" whatever the study holds (warm-up steps and
    steps between intervals), which Optuna's percentile pruner answers only after reading every
    finished trial."""

    def __init__(self, pruner: optuna.pruners.BasePruner | None) -> None:
        self.warmup = getattr(pruner, "_n_warmup_steps", 0) if pruner else 0
        self.interval = getattr(pruner, "_interval_steps", 1) if pruner else 1

    def __call__(self, trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        hidden = trial.suggest_int("hidden_size", 16, 256, log=True)
        cell = trial.suggest_categorical("cell", ["rnn", "lstm", "gru"])
        floor = abs(math.log10(lr) + 2.5) + 10 / hidden + (0.1 if cell == "rnn" else 0.0)
        value = math.inf
        for step in range(N_REPORTS):
            value = floor + 1.0 / (step + 1)
            trial.report(value, step)
            can_prune = step >= self.warmup and (step - self.warmup) % self.interval == 0
            if can_prune and trial.should_prune():
                raise optuna.TrialPruned()
        return value


def _available(mode: str) -> bool:
    """The gRPC proxy needs grpcio, which rnn-tuner does not depend on."""
    if mode != "grpc":
        return True
    try:
        import grpc  # noqa: F401
    except ImportError:
        print("  storage: grpcio not installed, gRPC proxy not measured", file=sys.stderr)
        return False
    return True


def _start_proxy(ctx: Any, url: str) -> tuple[Any, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = ctx.Process(target=_proxy, args=(url, port), daemon=True)
    proc.start()
    return proc, port


def _proxy(url: str, port: int) -> None:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # get_storage: the proxy keeps Optuna's trial cache in front of the database.
    storage = optuna.storages.get_storage(url)
    optuna.storages.run_grpc_proxy_server(storage, host="127.0.0.1", port=port)


# ---------------------------------------------------------------- growth

GROWTH_SIZES = {"small": 100, "big": 10_000}
GROWTH_HISTORY = 100  # the `sampler.history` of the capped rows


def growth(url: str, quick: bool) -> list[dict[str, Any]]:
    """Per-trial overhead with 10,000 trials in the study against 100, alternating, on both
    journals (`url`'s PostgreSQL table and a file), TPE on the whole history, capped, and
    Optuna's own TPESampler."""
    import tempfile

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        # ExperimentalWarning, and "heartbeat is for Study.optimize": trials here are asked.
        warnings.simplefilter("ignore")
        journals = {"journal+postgresql": f"journal+{url}", "journal file": f"journal:///{tmp}/g"}
        return [r for name, at in journals.items() for r in _growth(name, at, quick)]


def _growth(name: str, url: str, quick: bool) -> list[dict[str, Any]]:
    cfg = load_study_file(ROOT / "studies" / "quickstart.yaml")
    capped = cfg.model_copy(
        update={"sampler": cfg.sampler.model_copy(update={"history": GROWTH_HISTORY})}
    )
    seeds = _seed_trials(cfg, 100)
    seeding = make_storage(url)
    for key, size in GROWTH_SIZES.items():
        study = optuna.create_study(storage=seeding, study_name=f"growth-{key}")
        study.add_trials(seeds)
        _replicate(seeding, study._study_id, size // len(seeds) - 1)
        TrialBudget(seeding, study._study_id, UNLIMITED, size)
    seeding.engine.dispose()
    # A fresh storage, as a worker joining a running study has: the log not yet replayed.
    storage = make_storage(url, heartbeat_interval=10, grace_period=60)
    samplers = {  # rnn-tuner's TPE, capped, and Optuna's own as it would be (a what-if)
        "TPE whole history": lambda seed: make_sampler(cfg, seed),
        f"TPE history {GROWTH_HISTORY}": lambda seed: make_sampler(capped, seed),
        "Optuna's TPESampler": lambda seed: optuna.samplers.TPESampler(
            constant_liar=True, seed=seed
        ),
    }
    rows = []
    for label, sampler in samplers.items():
        studies = {
            key: optuna.load_study(
                study_name=f"growth-{key}",
                storage=storage,
                sampler=sampler(i),
                pruner=make_pruner(cfg),
            )
            for i, key in enumerate(GROWTH_SIZES)
        }
        budgets = {
            key: TrialBudget(storage, study._study_id, UNLIMITED, 0)
            for key, study in studies.items()
        }
        what_if = label.startswith("Optuna")
        rows.append(_growth_row(f"{name}, {label}", studies, budgets, cfg, quick, what_if))
    storage.engine.dispose()
    return rows


def _growth_row(
    name: str,
    studies: dict[str, Any],
    budgets: dict[str, Any],
    cfg: Any,
    quick: bool,
    what_if: bool = False,
) -> dict[str, Any]:
    rounds = 8 if quick else 20
    cold = {key: _one_trial(study, budgets[key], cfg) for key, study in studies.items()}
    times: dict[str, list[float]] = {key: [] for key in studies}
    parts: dict[str, list[dict[str, float]]] = {key: [] for key in studies}
    timer = CallTimer()  # where a trial's time goes: a call inside another counts once
    timer.wrap(optuna.pruners.PercentilePruner, "pruner", ["prune"])
    timer.wrap(optuna.samplers.TPESampler, "sampler", ["sample_relative", "sample_independent"])
    timer.wrap(TrialBudget, "budget", ["claim"])
    timer.wrap(tuner_study, "best", ["best_trial"])  # type: ignore[arg-type]
    timer.wrap(keep, "best", ["top_trials"])  # type: ignore[arg-type]
    wrap_storage(timer)
    try:
        for r in range(rounds + 2):
            order = list(studies) if r % 2 == 0 else list(studies)[::-1]
            for key in order:
                timer.take()
                t = _one_trial(studies[key], budgets[key], cfg)
                if r >= 2:  # two warm-up rounds
                    times[key].append(t)
                    parts[key].append(timer.take()[0])
    finally:
        timer.restore()
    ratio = paired_ratio(times["small"], times["big"])
    ms = {k: 1000 * median(v) for k, v in times.items()}
    split = {
        key: {
            c: 1000 * median(p.get(c, 0.0) for p in parts[key])
            for c in ("storage", "sampler", "pruner", "budget", "best", "background")
        }
        for key in studies
    }
    return row(
        f"growth ({name}): ms per trial, 10,000-trial vs 100-trial study",
        ratio,
        "what-if" if what_if else "<= 2.0",
        None if what_if else ratio <= 2.0,
        summary=f"{ms['big']:.0f} vs {ms['small']:.0f} ms; a fresh worker's first trial "
        f"{1000 * cold['big']:.0f} vs {1000 * cold['small']:.0f} ms",
        ms_per_trial=ms,
        ms_per_trial_in=split,
        first_trial_of_a_fresh_worker_ms={k: 1000 * v for k, v in cold.items()},
    )


def _one_trial(study: optuna.Study, budget: TrialBudget, cfg: Any) -> float:
    """One turn of a worker's loop (tuner.worker.run_trials) without training or MLflow: the
    budget claim, `optimize(n_trials=1)` (its heartbeat and stale-trial check) around the
    objective's storage calls (the search space, the user attributes it sets, ten reports
    with `should_prune`), then the best trial read as RecordTrial does and the ranking KeepBest
    reads for a complete trial."""

    def objective(trial: optuna.Trial) -> float:
        suggest(trial, cfg)
        trial.set_user_attr("mlflow_run_id", "-")
        trial.set_user_attr("torch_threads", 1)
        value = math.inf
        for step in range(N_REPORTS):
            value = 0.2 / (step + 1) + 0.05 * (trial.number % 7)
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("best_epoch", N_REPORTS - 1)
        return value

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        tuner_study.best_trial(study)
        if trial.state == TrialState.COMPLETE:
            keep.top_trials(study, 0, 1)

    started = time.perf_counter()
    if not budget.claim():
        raise RuntimeError("the benchmark's budget ran out")
    study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[record])
    return time.perf_counter() - started


def _seed_trials(cfg: Any, n: int) -> list[optuna.trial.FrozenTrial]:
    """n finished trials of the study's search space (random parameters, a learning curve each),
    made in memory: the fast way to fill a database is to add finished trials in bulk."""
    memory = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(n):
        trial = memory.ask()
        suggest(trial, cfg)
        final = 0.01 + 0.15 * ((i * 37) % 100) / 100
        for step in range(N_REPORTS):
            trial.report(final * (1 + 1.0 / (step + 1)), step)
        memory.tell(trial, final)
    return memory.get_trials()


def _replicate(storage: Any, study_id: int, copies: int) -> None:
    """Append `copies` copies of the study's trials to the journal in one write (numbers go on
    from the last), with their parameters and learning curves, values jittered by up to 10%."""
    import random

    rng = random.Random(0)
    create = optuna.storages.journal._storage.JournalOperation.CREATE_TRIAL
    made = [
        log
        for log in storage._backend.read_logs(0)
        if log["op_code"] == create and log["study_id"] == study_id
    ]
    logs = []
    for _ in range(copies):
        for log in made:
            jitter = 0.9 + 0.2 * rng.random()
            curve = {k: v * jitter for k, v in log["intermediate_values"].items()}
            logs.append({**log, "value": log["value"] * jitter, "intermediate_values": curve})
    if logs:
        storage._backend.append_logs(logs)
