"""Quality on real data: does a tuned study beat an untuned model, and reach published results?

For every real-data study shipped (`studies/real-*.yaml`: JapaneseVowels, airline passengers,
Grunfeld's investment panel, Jane Austen, Japanese NER), and each seed:

(a) untuned: the settings' defaults plus the study's own `fixed:` block, trained once at the
    benchmark's epoch budget; its best validation epoch's weights score the test split.
(b) tuned: the study run by `rnn-tuner run` with the default space (`search: default` where this
    version of rnn-tuner has one, else the study's own `search:`), the default sampler and
    pruner, a fixed number of trials at the same epoch budget; `rnn-tuner retrain` then retrains
    the best trial and scores it once on the official test split.

Each row is one data set: the test score of (a) and (b) (median over seeds, with the range), the
published result the study file cites, and the ratio (b)/(a) of the medians. Target: (b) beats
(a), in the metric's direction. The (data set, seed) runs go `PARALLEL` at a time, each in its
own process, seed 0 of every set first. A text set trains and validates on the first
`text_chars` characters of its files (300,000: with the whole Austen training text the study's
own 10 trials take an hour on 2 cores) and tests on the whole official test file; `--quick`
runs one seed, 4 trials of 4 epochs, and cuts the test file too (50,000 characters, so its text
row's test is not the official one).

Ctrl-C or SIGTERM stops the run and keeps what finished: a row for every set with at least one
seed done, and a `partial` row counting what did not finish (its summary names them).

    python -m benchmarks --only quality [--quick]
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import Skip, row
from models import evaluate, train
from models.data import task_data
from models.metrics import METRIC_MODES
from tuner.config import StudyConfig, StudyFileError, parse_study
from tuner.retrain import BestWeights

ROOT = Path(__file__).resolve().parent.parent
# Published results the study files cite, on the same test split: (text, value in the metric).
PUBLISHED = {
    "real-japanese-vowels": ("1-NN DTW about 0.95 (Bagnall et al. 2018; to be checked)", 0.949),
    "real-airline": ("seasonal ARIMA (Box & Jenkins); no hold-out score quoted", None),
    "real-austen": ("none on this split (1.67 bpc on Wikipedia, Graves 2013)", None),
    "real-hironsan-ner": ("none found", None),
    "real-grunfeld": ("none found (the textbook panel-regression example)", None),
}
# max_epochs None: the study's; text_chars / test_chars: the first characters of a text set's
# train and val / test files read (None: the whole file).
QUICK = {"seeds": 1, "n_trials": 4, "max_epochs": 4, "text_chars": 50_000, "test_chars": 50_000}
FULL = {"seeds": 3, "n_trials": 20, "max_epochs": None, "text_chars": 300_000, "test_chars": None}
FILE_KEYS = ("path", "train", "val", "test")
PARALLEL = 4  # (data set, seed) runs at a time, each its own process
# Study files by their cost a seed, cheapest first, as their headers give it (a minute, five
# minutes, five, 20-80 s a trial, an hour with the whole text).
CHEAPEST_FIRST = ("real-airline", "real-japanese-vowels", "real-hironsan-ner", "real-grunfeld", "real-austen")  # fmt: skip
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run(quick: bool) -> list[dict]:
    studies = sorted((ROOT / "studies").glob("real-*.yaml"), key=_cheapest_first)
    if not studies:
        raise Skip("no studies/real-*.yaml in this checkout")
    plan = QUICK if quick else FULL
    # Seed 0 of every set first, so that a run stopped early has every set at least once.
    jobs = [(path, seed) for seed in range(plan["seeds"]) for path in studies]
    scores: dict[tuple[Path, int], dict[str, Any]] = {}
    failed: dict[tuple[Path, int], str] = {}

    def done(job: tuple[Path, int], score: dict[str, Any] | None, error: str = "") -> None:
        if score is None:
            failed[job] = error  # one failed seed must not lose the rest
        else:
            scores[job] = score
        said = score if score is not None else f"failed: {error}"
        print(f"{job[0].stem} seed {job[1]}: {said}", file=sys.stderr, flush=True)

    # Side by side: quality does not depend on time, and a loaded machine gives each process
    # its share, so the runs end sooner than one after the other.
    spawn = mp.get_context("spawn")  # no fork after torch's threads have started
    with (
        tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp,
        spawn.Pool(min(PARALLEL, len(jobs))) as pool,
        _stopped_by_signals(),
    ):
        pending = [
            pool.apply_async(
                _one_seed,
                (job[0], Path(tmp) / f"{job[0].stem}-{job[1]}", plan, job[1]),
                callback=lambda score, job=job: done(job, score),
                error_callback=lambda e, job=job: done(job, None, f"{type(e).__name__}: {e}"),
            )
            for job in jobs
        ]
        try:
            for result in pending:
                result.wait()
        except KeyboardInterrupt:  # keep what finished; leaving the pool stops the rest
            print("stopped: keeping the seeds that finished", file=sys.stderr, flush=True)
    rows = []
    for path in studies:
        finished = [scores[path, s] for s in range(plan["seeds"]) if (path, s) in scores]
        if finished:
            rows.append(_row(path.stem, finished, plan["seeds"]))
            print(rows[-1], flush=True)
    missing = [f"{p.stem} seed {s}" for p, s in jobs if (p, s) not in scores]
    if missing:
        # a short name (it is the table's first column); what did not finish goes in the summary
        name = f"partial: {len(missing)} of {len(jobs)} runs not finished"
        errors = {f"{p.stem} seed {s}": e for (p, s), e in failed.items()}
        said = "; ".join(f"{k} failed: {e}" for k, e in errors.items()) or "stopped"
        said = f"{said}; not finished: {', '.join(missing)}"
        rows.insert(0, row(name, None, "-", None, failed=errors, summary=said[:300]))
    return rows


def _cheapest_first(path: Path) -> tuple[int, str]:
    """Sets in the order of their cost a seed, as their study files' headers give it (unknown
    last): a run stopped early has finished the most sets."""
    return (CHEAPEST_FIRST.index(path.stem) if path.stem in CHEAPEST_FIRST else len(CHEAPEST_FIRST), path.stem)  # fmt: skip


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt here, also in a job started in the background
    (`... &`), where a shell without job control makes SIGINT ignored."""
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _one_seed(path: Path, workdir: Path, plan: dict, seed: int) -> dict[str, Any]:
    """Test scores of (a) and (b) for one seed, with the metric and the space searched."""
    workdir.mkdir(parents=True)
    raw, space = _benchmark_study(path, workdir, plan, seed)
    cfg = parse_study(raw, workdir / "study.yaml", read_test=True)
    test_metric = "test_" + cfg.primary_metric.removeprefix("val_")
    untuned = _untuned(cfg)[test_metric]
    tuned = _tuned(workdir / "study.yaml", raw["study"]["name"], workdir)[test_metric]
    return {"metric": cfg.primary_metric, "untuned": untuned, "tuned": tuned, "space": space}


def _benchmark_study(path: Path, workdir: Path, plan: dict, seed: int) -> tuple[dict, str]:
    """The study file as the benchmark runs it: its data files by absolute path (text cut short
    in quick mode), the budget and seeds set, the default space where there is one."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    task = raw["task"]
    for key in FILE_KEYS:
        if task.get(key):
            chars = plan["test_chars" if key == "test" else "text_chars"]
            task[key] = _data_file(ROOT / task[key], workdir, chars, task)
    raw["seed"] = seed  # the sampler's
    raw["fixed"] = {**raw.get("fixed", {}), "seed": seed}  # every training run's
    budget = raw.setdefault("budget", {})
    budget["n_trials"] = plan["n_trials"]
    budget["max_epochs"] = plan["max_epochs"] or budget.get("max_epochs", 20)
    for key in ("sampler", "pruner"):  # the defaults
        raw.pop(key, None)
    space = "default"
    try:
        parse_study({**raw, "search": "default"}, path, read_test=True)
        raw["search"] = "default"
    except StudyFileError as e:  # no default space in this version, or it clashes with `fixed`
        print(f"{path.name}: the study's own space, since `search: default` gives: {e}", file=sys.stderr)  # fmt: skip
        space = "study's own"
    (workdir / "study.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return raw, space


def _data_file(path: Path, workdir: Path, text_chars: int | None, task: dict) -> str:
    if text_chars is None or task.get("source") != "text":
        return str(path)
    short = workdir / path.name
    short.write_text(path.read_text(encoding="utf-8")[:text_chars], encoding="utf-8")
    return str(short)


def _untuned(cfg: StudyConfig) -> dict[str, float]:
    """(a): the study's base settings, best validation epoch kept, scored on the test split."""
    data = task_data(cfg.task, with_test=True)
    keep = BestWeights(cfg.objectives[cfg.primary_index])  # as `retrain` keeps them
    result = train(cfg.base_settings(), data, monitor=cfg.primary_metric, callbacks=[keep])
    if keep.state is not None:
        result.module.load_state_dict(keep.state)
    return evaluate(result.module, data, "test")


def _tuned(study_file: Path, name: str, workdir: Path) -> dict[str, float]:
    """(b): `rnn-tuner run`, then `rnn-tuner retrain`; the test metrics it prints."""
    env = {k: v for k, v in os.environ.items() if k not in ("RNN_TUNER_STORAGE", "MLFLOW_TRACKING_URI")}  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cli = [sys.executable, "-m", "tuner"]
    for args in (["run", str(study_file)], ["retrain", name, "--study-file", str(study_file)]):
        done = subprocess.run(cli + args, cwd=workdir, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"rnn-tuner {args[0]} failed: {done.stderr[-2000:]}")
    line = next(ln for ln in done.stdout.splitlines() if ln.strip().startswith("test "))
    return {f"test_{k}": float(v) for k, v in re.findall(r"test_(\w+):? ([-\d.eE+naif]+)", line)}


def _row(name: str, scores: list[dict[str, Any]], seeds: int) -> dict[str, Any]:
    metric = scores[0]["metric"]
    higher = METRIC_MODES[metric] == "max"
    untuned = [s["untuned"] for s in scores]
    tuned = [s["tuned"] for s in scores]
    a, b = statistics.median(untuned), statistics.median(tuned)
    published, value = PUBLISHED.get(name, ("not cited", None))
    test = "test_" + metric.removeprefix("val_")
    return row(
        name, b / a if a else None, f"(b) {'>' if higher else '<'} (a)", b > a if higher else b < a,
        metric=test, untuned=a, tuned=b, untuned_range=[min(untuned), max(untuned)],
        tuned_range=[min(tuned), max(tuned)], published=published, published_value=value,
        reaches_published=None if value is None else (b >= value if higher else b <= value),
        space=scores[0]["space"], seeds=len(scores),
        summary=f"{test}: (a) {_spread(untuned)}, (b) {_spread(tuned)}; published {published}"
        + ("" if len(scores) == seeds else f" ({len(scores)} of {seeds} seeds)"),
    )  # fmt: skip


def _spread(values: list[float]) -> str:
    median = f"{statistics.median(values):.4g}"
    return median if len(values) == 1 else f"{median} [{min(values):.4g}, {max(values):.4g}]"


if __name__ == "__main__":
    run(quick=True)
