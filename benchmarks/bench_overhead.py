"""Trial overhead: one rnn-tuner trial with everything on, against a bare PyTorch loop.

(a) the limit: a plain loop over the same in-memory tensors, same network, optimizer, clipping
    and a validation pass per epoch; for truncation k, a plain TBPTT loop (the first T-k steps
    without a graph) and for language modelling a loop that carries the state across batches;
    the word-level LM (the classic small PTB shape, on a synthetic Zipf stream of 10,000 words)
    trains with plain SGD, as both sides do;
(b) trials as `rnn-tuner run` runs them: Optuna trials on a journal-file study, Lightning, the
    pruning callback reporting each epoch, an MLflow child run with every per-epoch metric; a
    worker's `TRIALS_PER_ROUND` trials back to back (the word LM's one), until their last MLflow
    write is made, against as many bare loops.

Rounds interleave a b, b a, a b ...; the figure is the median of the paired ratios b/a of time per epoch.

The peer row runs the same trial (adding T=50, LSTM-64) as a user would write it by hand in a
separate venv (benchmarks/peer_trial.py: `lightning`, optuna-integration's pruning callback,
Lightning's MLFlowLogger), rounds interleaved with ours: time per epoch (between the first and the
last epoch's end) and per trial (the whole `study.optimize`).

The memory rows give the peak resident memory (VmHWM of a fresh child process) of one worker
running the quickstart trial and the word LM trial, plus the private memory of its MLflow sender
process, next to the bare loop on the same data, and what importing torch, Lightning, MLflow and
the tuner adds.

A row prices the live curves on a quickstart trial: the same trial with each epoch sent to
MLflow as it ends (the default) against sending every epoch at the trial's end (as before live
curves), and the sender process's CPU time as a share of the epoch time. Another prices a trial's
end: a worker's short trials whose final MLflow writes overlap the next trial (the default)
against each trial waiting for them (as before).

    python -m benchmarks --only overhead
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.common import median_interval, row
from models import Settings
from models.data.base import Batch
from models.data.config import AddingData, TextData

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.05  # every case, truncated BPTT included (the target)
# A round's trial side is a worker's run of this many trials back to back (against as many bare
# loops): a worker makes a trial's last MLflow writes while its next trial trains, and waits for
# them once, at its end. One trial a round charged every trial that wait (16-20 ms on 1-2 s).
TRIALS_PER_ROUND = 3


def zipf_text(path: Path, n_tokens: int, vocab: int = 10_000) -> Path:
    """A word stream whose frequencies follow Zipf's law (rank r drawn with weight 1/r), as lines
    of 20 words: every word of the vocabulary occurs, the frequent ones as often as in English."""
    gen = torch.Generator().manual_seed(0)
    weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    ids = torch.multinomial(weights, n_tokens, replacement=True, generator=gen).view(-1, 20)
    path.write_text("\n".join(" ".join(f"w{i}" for i in line) for line in ids.tolist()) + "\n")
    return path


def word_lm_case(quick: bool, workdir: Path) -> dict:
    """Zaremba et al.'s small LSTM LM (2x200 units, 200-dim embeddings, batch 20, 20 steps, SGD
    with clipping) on about a million tokens (200,000 with --quick)."""
    text = zipf_text(workdir / "zipf.txt", 200_000 if quick else 1_000_000)
    settings = Settings(
        cell="lstm",
        num_layers=2,
        hidden_size=200,
        embedding_dim=200,
        batch_size=20,
        optimizer="sgd",
        momentum=0.0,
        lr=1.0,
        clip_norm=5.0,
        patience=None,
        max_epochs=1 if quick else 2,
    )
    data = TextData(path=str(text), level="word", seq_len=20)
    return {
        "name": "word LM 10k words LSTM 2x200",
        "data": data,
        "settings": settings,
    }


def _cases(quick: bool) -> list[dict]:
    n = 2048 if quick else 4096
    adding = AddingData(seq_len=50, n_train=n, n_val=512, n_test=64)
    base = Settings(
        cell="lstm",
        hidden_size=64,
        batch_size=128,
        lr=1e-3,
        clip_norm=1.0,
        patience=None,
        max_epochs=3 if quick else 5,
    )
    text = TextData(path=str(ROOT / "studies/data/stories.txt"), level="char", seq_len=50)
    cases = [
        {"name": "adding T=50 LSTM-64 full BPTT", "data": adding, "settings": base},
        {
            "name": "adding T=50 LSTM-64 k=10",
            "data": adding,
            "settings": replace(base, truncation=10),
        },
        {
            "name": "adding T=50 GRU-64 full BPTT",
            "data": adding,
            "settings": replace(base, cell="gru"),
        },
        {
            "name": "adding T=50 RNN-64 full BPTT",
            "data": adding,
            "settings": replace(base, cell="rnn"),
        },
        {
            "name": "char LM LSTM-128 state carried",
            "data": text,
            "settings": replace(base, hidden_size=128, batch_size=32, max_epochs=2 if quick else 3),
        },
    ]
    return cases[:2] + cases[4:] if quick else cases


# ---------------------------------------------------------------- (a) the bare loop


class _Bare(nn.Module):
    def __init__(self, s: Settings, info) -> None:  # noqa: ANN001
        super().__init__()
        cell = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[s.cell]
        self.embed = nn.Embedding(info.vocab_size, s.embedding_dim) if info.vocab_size else None
        size = s.embedding_dim if info.vocab_size else info.input_size
        self.rnn = cell(size, s.hidden_size, s.num_layers, batch_first=True)
        self.head = nn.Linear(s.hidden_size, info.output_size)

    def forward(self, x, state=None):  # noqa: ANN001, ANN201
        if self.embed is not None:
            x = self.embed(x)
        out, state = self.rnn(x, state)
        return out, state


def _detach(state):  # noqa: ANN001, ANN202
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


class _PlainBatches:
    """Train and validation batches without the datamodule (so without importing Lightning), for
    the memory rows: shuffled slices of the tensors, or a language model's windows in order."""

    def __init__(self, task, batch_size: int) -> None:  # noqa: ANN001
        self.task, self.batch_size = task, batch_size

    def _batches(self, split, streams: int, shuffle: bool):  # noqa: ANN001, ANN202
        if self.task.info.task == "language_model":
            rows = split.inputs[: len(split.inputs) // streams * streams].view(streams, -1)
            window = self.task.info.max_len
            for t in range(0, rows.shape[1] - 1, window):
                stop = min(t + window, rows.shape[1] - 1)  # the last window may be shorter
                yield Batch(rows[:, t:stop], rows[:, t + 1 : stop + 1], None)
            return
        n = len(split.inputs)
        order = torch.randperm(n) if shuffle else torch.arange(n)
        for index in order.split(self.batch_size):
            yield Batch(split.inputs[index], split.targets[index], None)

    def train_dataloader(self):  # noqa: ANN201
        return self._batches(self.task.train, self.batch_size, shuffle=True)

    def val_dataloader(self):  # noqa: ANN201
        return self._batches(self.task.val, 10, shuffle=False)


def bare_loop(
    s: Settings,
    task,  # noqa: ANN001
    plain: bool = False,
    ends: list | None = None,
    mark: Callable[[str], None] | None = None,
) -> float:
    """Seconds per epoch of the plainest loop that trains the same thing; `plain` batches without
    the datamodule (the memory rows: no Lightning import); `ends` receives each epoch's end;
    `mark` is called where the clock is read: "start", "epoch" (at each end), "end"."""
    torch.manual_seed(s.seed)
    info, lm = task.info, task.info.task == "language_model"
    model = _Bare(s, info)
    opt = (
        torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum)
        if s.optimizer == "sgd"
        else torch.optim.Adam(model.parameters(), lr=s.lr)
    )
    if plain:
        dm = _PlainBatches(task, s.batch_size)
    else:
        from models.data import SequenceDataModule

        dm = SequenceDataModule(task, s.batch_size, s.seed)
    mark = mark or (lambda at: None)
    mark("start")
    started = time.perf_counter()
    for _ in range(s.max_epochs):
        state = None
        model.train()
        for batch in dm.train_dataloader():
            x, y = batch.inputs, batch.targets
            if lm:
                if state is not None and state[0].shape[1] != x.shape[0]:
                    state = None
                out, state = model(x, state)
                state = _detach(state)
                loss = nn.functional.cross_entropy(model.head(out).flatten(0, 1), y.flatten())
            elif s.truncation:
                cut = x.shape[1] - s.truncation
                with torch.no_grad():
                    _, prefix = model(x[:, :cut])
                out, _ = model(x[:, cut:], prefix)
                loss = nn.functional.mse_loss(model.head(out[:, -1]), y)
            else:
                out, _ = model(x)
                loss = nn.functional.mse_loss(model.head(out[:, -1]), y)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), s.clip_norm)
            opt.step()
        model.eval()
        total, state = 0.0, None
        with torch.no_grad():
            for batch in dm.val_dataloader():
                out, state = model(batch.inputs, state if lm else None)
                pred = model.head(out if lm else out[:, -1])
                if lm:
                    total += nn.functional.cross_entropy(
                        pred.flatten(0, 1), batch.targets.flatten()
                    ).item()
                else:
                    total += nn.functional.mse_loss(pred, batch.targets).item()
        if ends is not None:
            ends.append(time.perf_counter())
        mark("epoch")
    elapsed = time.perf_counter() - started
    mark("end")
    return elapsed / s.max_epochs


def bare_loops(s: Settings, task, n: int, ends: list[list[float]]) -> float:  # noqa: ANN001
    """`bare_loop` n times (each from a fresh network), seconds per epoch over all of them;
    `ends` receives each loop's epoch ends."""
    per_epoch = []
    for _ in range(n):
        ends.append([])
        per_epoch.append(bare_loop(s, task, ends=ends[-1]))
    return statistics.mean(per_epoch)


# ---------------------------------------------------------------- (b) one rnn-tuner trial


def tuner_trial(
    s: Settings,
    data_cfg,  # noqa: ANN001
    workdir: Path,
    round_: int,
    live: bool = True,
    stats: dict | None = None,
    n_trials: int = 1,
    wait_at_end: bool = False,
    mark: Callable[[str], None] | None = None,
) -> float:
    """Seconds per epoch of `n_trials` trials run by the tuner's own objective, recorded
    everywhere, until their last MLflow write is made.

    `live=False` sends the epochs with the trial's end instead of as each ends; `wait_at_end`
    makes each trial wait for its MLflow writes (as before they overlapped the next trial);
    `stats` receives each trial's epoch ends (`epoch_ends`, a list per trial), the whole time
    (`trial_s`) and the MLflow sender's CPU seconds (`sender_cpu_s`); `mark` is called where the
    clock is read: "start", "epoch" (as each epoch is handed to the tracker), "end"."""
    from tuner.config import parse_study
    from tuner.interrupts import Interrupts
    from tuner.objective import Objective
    from tuner.stale import storage_with_heartbeats
    from tuner.study import open_study
    from tuner.threads import Threads

    fixed = {k: v for k, v in s.to_dict().items() if k not in ("max_epochs", "lr")}
    cfg = parse_study(
        {
            "study": {"name": f"overhead-{round_}"},
            "task": {k: v for k, v in data_cfg.__dict__.items()},
            "fixed": fixed,
            "search": {"lr": {"type": "categorical", "choices": [s.lr]}},
            "objective": "val_loss",
            "pruner": {"name": "median"},
            "budget": {"max_epochs": s.max_epochs},
        }
    )
    tracker = _worker_tracker(workdir)
    busy_before = tracker.sender.busy_s
    if not live:
        tracker.log_epoch = lambda run_id, row: None  # type: ignore[method-assign]
    elif stats is not None or mark is not None:  # each epoch's end, as the tracker gets it
        ends = ({} if stats is None else stats).setdefault("epoch_ends", [])
        log_epoch = tracker.log_epoch

        def timed(run_id, row):  # noqa: ANN001, ANN202
            if row["epoch"] == 0:  # the next trial's
                ends.append([])
            ends[-1].append(time.perf_counter())
            if mark is not None:
                mark("epoch")
            log_epoch(run_id, row)

        tracker.log_epoch = timed  # type: ignore[method-assign]
    if wait_at_end:
        finish = tracker.finish_trial

        def waited(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            finish(*args, **kwargs)
            tracker.flush()

        tracker.finish_trial = waited  # type: ignore[method-assign]
    parent = tracker.create_parent(cfg.study.name, {})
    # the study as a worker opens it on the default storage: the journal file, with heartbeats
    storage = storage_with_heartbeats(f"journal:///{workdir}/rnn_tuner.log", tracker, cfg.study)
    study, _ = open_study(cfg, storage, cfg.study.name)
    with Interrupts() as interrupts:
        # one thread, as the bare loop (a network past tuner.threads' size would get two)
        objective = Objective(cfg, tracker, parent, interrupts, threads=Threads(fixed=1))
        if mark is not None:
            mark("start")
        started = time.perf_counter()
        study.optimize(objective, n_trials=n_trials)
        tracker.flush()  # as a worker does before it ends
        elapsed = time.perf_counter() - started
        if mark is not None:
            mark("end")
    for patched in ("log_epoch", "finish_trial"):  # the next trial's tracker is unpatched
        tracker.__dict__.pop(patched, None)
    assert {t.state.name for t in study.trials} == {"COMPLETE"}
    if stats is not None:
        stats["sender_cpu_s"] = tracker.sender.busy_s - busy_before
        stats["trial_s"] = elapsed
    return elapsed / sum(len(t.intermediate_values) for t in study.trials)


_trackers: dict[Path, Any] = {}


def _worker_tracker(workdir: Path) -> Any:  # noqa: ANN401
    """One tracker per benchmark process, as one per worker (`run_worker`): its sender process is
    forked once. Forking before each trial would charge every trial the copy-on-write faults a
    worker pays once, at its start."""
    from tuner.tracking import Tracker

    if workdir not in _trackers:
        tracker = Tracker(f"sqlite:///{workdir}/mlflow.db", "overhead")
        tracker.send_from_process()  # as run_worker does, before any thread starts
        _trackers[workdir] = tracker
    return _trackers[workdir]


def _close_trackers() -> None:
    while _trackers:
        _trackers.popitem()[1].close()


# ---------------------------------------------------------------- (c) the hand-written peer

PEER_VENV = Path.home() / ".cache" / "rnn-tuner" / "peer-venv"


def _peer_packages() -> list[str]:
    """The peer's packages, at the versions of ours (`lightning` is `pytorch_lightning` under its
    other name); optuna-integration at the release that matches Optuna 5."""
    torch_version = metadata.version("torch").split("+")[0]
    same = {name: metadata.version(name) for name in ("optuna", "mlflow")}
    return [
        f"torch=={torch_version}",
        f"lightning=={metadata.version('pytorch-lightning')}",
        *(f"{name}=={version}" for name, version in same.items()),
        "optuna-integration==5.0.0",
    ]


def peer_python() -> Path:
    """The peer venv's python, made on first use (a few minutes: a clean venv, no system site
    packages, so `lightning` and our `pytorch_lightning` never meet)."""
    python, marker = PEER_VENV / "bin" / "python", PEER_VENV / "rnn-tuner-packages.txt"
    packages = _peer_packages()
    if marker.exists() and marker.read_text().split() == packages:
        return python
    print(f"making the peer venv {PEER_VENV}: {' '.join(packages)}", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
    log = PEER_VENV / "pip-install.log"
    with log.open("w") as out:
        done = subprocess.run(
            [str(python), "-m", "pip", "install", *packages], stdout=out, stderr=out
        )
    if done.returncode != 0:
        raise OSError(f"pip install failed, see {log}")
    marker.write_text("\n".join(packages) + "\n")
    return python


def paired(round_: int, first: Callable[[], float], second: Callable[[], float]) -> list:
    """One round of a pair: both sides' results and minor page faults, [(first's, faults),
    (second's, faults)], run in the order a b in even rounds and b a in odd ones, so that
    neither side always runs in the state the other leaves (its heap, caches, the clock)."""
    out: list = [None, None]
    for i in (0, 1) if round_ % 2 == 0 else (1, 0):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        result = (first, second)[i]()
        out[i] = (result, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return out


def noise_floor(quick: bool) -> dict:
    """The bare loop against itself, paired and rounded as the rows above (on the vanilla RNN,
    the cheapest of them; quick mode has none: its first case): how far from 1 a row's median
    lands when both sides do the same work, the precision of every ratio of this run."""
    from models.data import task_data

    cases = _cases(quick)
    case = next((c for c in cases if " RNN-" in c["name"]), cases[0])
    task = task_data(case["data"])
    ratios = []
    for r in range(3 if quick else 9):
        loops = partial(bare_loops, case["settings"], task, TRIALS_PER_ROUND, [])
        (a, _), (b, _) = paired(r, loops, loops)
        ratios.append(b / a)
    ratio = statistics.median(ratios)
    return row(
        f"noise floor: the bare loop against itself ({case['name']}, paired as above)",
        ratio,
        "-",
        None,
        summary=_spread(ratios),
        round_ratios=ratios,
        ratio_interval=list(median_interval(ratios)[:2]),
    )


def _spread(ratios: list[float]) -> str:
    """How well the rounds pin the median down (benchmarks.common.median_interval)."""
    low, high, coverage = median_interval(ratios)
    spread = f"{len(ratios)} rounds from {min(ratios):.3f} to {max(ratios):.3f}"
    if (low, high) == (min(ratios), max(ratios)):  # few rounds: the interval is their range
        return f"{spread}, the median within them ({coverage:.0%})"
    return f"{spread}; median within {low:.3f}-{high:.3f} ({coverage:.0%})"


def _steady_epoch_s(ends: list[float]) -> float:
    """Time per epoch between the first epoch's end and the last's (no setup, no teardown)."""
    return (ends[-1] - ends[0]) / (len(ends) - 1)


def peer_rows(quick: bool, workdir: Path) -> list[dict]:
    """Our trial against the peer's, adding T=50 LSTM-64: per epoch and per trial."""
    from models.data import task_data

    case = _cases(quick)[0]
    s, task = case["settings"], task_data(case["data"])
    name = "peer: hand-written Lightning + optuna-integration + MLFlowLogger, adding LSTM-64"
    try:
        python = peer_python()
    except (subprocess.CalledProcessError, OSError) as e:
        return [row(f"{name}: not run, the peer venv could not be made ({e})", None, "-", None)]
    data = workdir / "peer.pt"
    torch.save(
        {
            "x": task.train.inputs,
            "y": task.train.targets,
            "vx": task.val.inputs,
            "vy": task.val.targets,
            "settings": s.to_dict(),
        },
        data,
    )
    script = str(ROOT / "benchmarks" / "peer_trial.py")
    peer = subprocess.Popen(
        [str(python), script, str(data), str(workdir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )

    def peer_trial() -> dict:
        assert peer.stdin is not None and peer.stdout is not None
        peer.stdin.write("trial\n")
        peer.stdin.flush()
        line = peer.stdout.readline()
        if not line:
            raise RuntimeError(f"the peer ({script}) stopped: exit code {peer.wait()}")
        return json.loads(line)

    epoch, trial, ours_epoch, theirs_epoch, ours_trial, theirs_trial = [], [], [], [], [], []
    try:
        peer_trial()  # warm-up: imports done, first-call allocations
        for r in range(3 if quick else 5):
            theirs = peer_trial()
            stats: dict = {}
            tuner_trial(s, case["data"], workdir, 5000 + r, stats=stats)
            ours_epoch.append(_steady_epoch_s(stats["epoch_ends"][0]))
            theirs_epoch.append(_steady_epoch_s(theirs["epoch_ends"]))
            ours_trial.append(stats["trial_s"])
            theirs_trial.append(theirs["trial_s"])
            epoch.append(ours_epoch[-1] / theirs_epoch[-1])
            trial.append(ours_trial[-1] / theirs_trial[-1])
    finally:
        if peer.stdin:
            peer.stdin.close()
        peer.wait(timeout=60)
    return [
        row(
            f"{name}, per epoch",
            statistics.median(epoch),
            "-",
            None,
            ours_s_per_epoch=statistics.median(ours_epoch),
            peer_s_per_epoch=statistics.median(theirs_epoch),
        ),
        row(
            f"{name}, per trial of {s.max_epochs} epochs",
            statistics.median(trial),
            "-",
            None,
            ours_s_per_trial=statistics.median(ours_trial),
            peer_s_per_trial=statistics.median(theirs_trial),
        ),
    ]


# ---------------------------------------------------------------- (d) peak resident memory


def _quickstart_case() -> dict:
    """studies/quickstart.yaml's task with a mid-range configuration of its space."""
    data = AddingData(seq_len=30, n_train=2000, n_val=500, n_test=500)
    s = Settings(cell="lstm", hidden_size=32, batch_size=64, lr=1e-2, clip_norm=1.0)
    return {"name": "quickstart trial", "data": data, "settings": replace(s, patience=None)}


_IMPORTS = {  # what a worker imports, in order: each step's module adds to the one before
    "torch": "torch",
    "pytorch_lightning": "pytorch_lightning",
    "optuna": "optuna",
    "mlflow": "mlflow",
    "the tuner": "tuner.worker",
}


def _peak_mb() -> float:
    """This process's peak resident memory (MB): VmHWM, the high-water mark of its own address
    space. Not ru_maxrss: on Linux a child keeps, across exec, the peak of the parent's memory it
    was forked (or vforked) from, so every child of a large benchmark process reported the
    parent's peak (859 MB for the bare loop and the trial alike)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (the memory rows need Linux)")


def _memory_child(which: str, side: str, workdir: str) -> None:
    """In a fresh process: `side` "bare" (the bare loop, no Lightning) or "trial" (one trial as a
    worker runs it), printing its peak RSS last, or "imports" (the peak RSS after each of
    `_IMPORTS`)."""
    import importlib

    if side == "imports":
        steps = {}
        for label, module in _IMPORTS.items():
            importlib.import_module(module)
            steps[label] = _peak_mb()
        print(json.dumps(steps))
        return
    torch.set_num_threads(1)
    work = Path(workdir)
    case = _quickstart_case() if which == "quickstart" else word_lm_case(True, work)
    s = replace(case["settings"], max_epochs=1)
    if side == "bare":
        from models.data import task_data

        bare_loop(s, task_data(case["data"]), plain=True)
        assert "pytorch_lightning" not in sys.modules
    else:
        from tuner.cli import mlflow_defaults

        mlflow_defaults()
        tuner_trial(s, case["data"], work, 9000 + (which == "word_lm"))  # one study each
        pid = getattr(next(iter(_trackers.values())).sender, "pid", None)  # None: a thread,
        sender = 0.0 if pid is None else _private_mb(pid)  # its memory in the worker's peak
        _close_trackers()
        print(json.dumps({"peak_mb": _peak_mb(), "sender_private_mb": sender}))
        return
    print(json.dumps({"peak_mb": _peak_mb()}))


def _private_mb(pid: int) -> float:
    """The memory (MB) process `pid` holds alone: its private pages. The worker's MLflow sender
    is forked from it after its imports, so the rest of its resident memory is the worker's own
    pages, shared, and already in the worker's peak."""
    fields = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    kb = sum(int(line.split()[1]) for line in fields if line.startswith("Private_"))
    return kb / 1024


def _memory_child_says(*args: str) -> dict:
    """The last output line (JSON) of `python -m benchmarks.bench_overhead --memory ARGS`, run
    in a fresh process."""
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_overhead", "--memory", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    if child.returncode != 0:
        raise RuntimeError(f"memory child {args} exited {child.returncode}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def memory_rows(quick: bool, workdir: Path) -> list[dict]:
    """Peak RSS of one worker's trial, plus what its MLflow sender process holds alone (its
    private memory at the trial's end), against the bare loop's; and what the imports add."""
    steps, before, added = _memory_child_says("-", "imports", str(workdir)), 0.0, {}
    for label, peak in steps.items():
        added[f"{label}_mb"] = peak - before
        before = peak
    rows = []
    for which in ("quickstart", "word_lm"):
        bare = _memory_child_says(which, "bare", str(workdir))["peak_mb"]
        trial = _memory_child_says(which, "trial", str(workdir))
        worker = trial["peak_mb"] + trial["sender_private_mb"]
        rows.append(
            row(
                f"memory: peak RSS of one worker with its MLflow sender, {which} trial vs bare loop",
                worker / bare,
                "-",
                None,
                summary=f"worker {trial['peak_mb']:.0f} MB + its sender's own "
                f"{trial['sender_private_mb']:.0f} MB, bare loop {bare:.0f} MB",
                trial_mb=trial["peak_mb"],
                sender_private_mb=trial["sender_private_mb"],
                bare_mb=bare,
                **(added if which == "quickstart" else {}),
            )
        )
    return rows


def live_curves(workdir: Path, quick: bool) -> dict:
    """A quickstart trial (studies/quickstart.yaml's task, a mid-range configuration) with its
    epochs sent live against sent at its end: paired rounds, median ratio of time per epoch."""
    data = AddingData(seq_len=30, n_train=2000, n_val=500, n_test=500)
    s = Settings(cell="lstm", hidden_size=32, batch_size=64, lr=1e-2, clip_norm=1.0)
    s = replace(s, patience=None, max_epochs=4 if quick else 8)
    ratios, live, deferred, shares = [], [], [], []
    for r in range(5 if quick else 9):
        stats: dict = {}
        (b, _), (a, _) = paired(
            r,
            partial(tuner_trial, s, data, workdir, 1000 + 2 * r, live=True, stats=stats),
            partial(tuner_trial, s, data, workdir, 1001 + 2 * r, live=False),
        )
        live.append(b)
        deferred.append(a)
        ratios.append(b / a)
        shares.append(stats["sender_cpu_s"] / (b * s.max_epochs))
    ratio = statistics.median(ratios)
    return row(
        "live curves: quickstart trial, epochs sent as they end vs at its end",
        ratio,
        "<= 1.01",
        ratio <= 1.01,
        live_s_per_epoch=statistics.median(live),
        at_end_s_per_epoch=statistics.median(deferred),
        sender_cpu_share_of_epoch=statistics.median(shares),
    )


def trial_end_rows(quick: bool, workdir: Path) -> list[dict]:
    return [trial_ends(workdir, quick)]


def trial_ends(workdir: Path, quick: bool) -> dict:
    """A worker's run of short quickstart trials whose MLflow writes at each trial's end (final
    figures, run status, the parent's best) overlap the next trial, against each trial waiting
    for them: paired rounds, median ratio of time per epoch, the last write included."""
    data = AddingData(seq_len=30, n_train=500, n_val=200, n_test=200)
    s = Settings(cell="lstm", hidden_size=32, batch_size=64, lr=1e-2, clip_norm=1.0)
    s = replace(s, patience=None, max_epochs=2)
    n_trials = 4 if quick else 8
    ratios, overlapped, waited = [], [], []
    for r in range(3 if quick else 7):
        (b, _), (a, _) = paired(
            r,
            partial(tuner_trial, s, data, workdir, 2000 + 2 * r, n_trials=n_trials),
            partial(
                tuner_trial, s, data, workdir, 2001 + 2 * r, n_trials=n_trials, wait_at_end=True
            ),
        )
        overlapped.append(b)
        waited.append(a)
        ratios.append(b / a)
    ratio = statistics.median(ratios)
    return row(
        f"trial ends: MLflow writes overlapping the next trial vs waited for ({n_trials} short trials)",
        ratio,
        "< 1",
        ratio < 1,
        overlapped_s_per_epoch=statistics.median(overlapped),
        waited_s_per_epoch=statistics.median(waited),
    )


def like_a_worker() -> None:
    """Set up this process as `rnn-tuner run` sets up a worker, for both sides of a pair."""
    from tuner.cli import mlflow_defaults, quiet_libraries
    from tuner.memory import keep_freed_memory

    mlflow_defaults()  # as `rnn-tuner run` sets them, and its warning filters
    quiet_libraries()
    torch.set_num_threads(1)  # both sides alike; the machine is shared
    # as every worker does (tuner.memory): the trial's freed tensors were faulted in again at
    # every step, more than the bare loop's; the loop, in this process too, gets it alike
    keep_freed_memory()


def run(quick: bool) -> list[dict]:
    from models.data import task_data

    like_a_worker()
    # one pair moves by 10-45% on a shared 2-core machine: nine rounds steady the median
    rounds = 3 if quick else 9
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # warm-up: imports, the MLflow store's tables, first-call allocations
        tuner_trial(
            replace(_cases(True)[0]["settings"], max_epochs=1),
            AddingData(seq_len=10, n_train=256, n_val=64, n_test=64),
            workdir,
            -1,
        )
        for case in [*_cases(quick), word_lm_case(quick, workdir)]:
            task = task_data(case["data"])
            ratios, bare, ours, steady, fixed, faults = [], [], [], [], [], []
            # the full word LM: 2 epochs of a million tokens, ~9 minutes a side on 2 slow
            # cores; three rounds of one trial keep the full run near an hour
            word_lm = case["name"].startswith("word LM")
            n_rounds = min(rounds, 3) if word_lm else rounds
            n_trials = 1 if word_lm else TRIALS_PER_ROUND
            for r in range(n_rounds):
                bare_ends: list[list[float]] = []
                stats: dict = {}
                (a, bare_faults), (b, trial_faults) = paired(
                    r,
                    partial(bare_loops, case["settings"], task, n_trials, bare_ends),
                    partial(
                        tuner_trial,
                        case["settings"],
                        case["data"],
                        workdir,
                        len(rows) * 100 + r,
                        stats=stats,
                        n_trials=n_trials,
                    ),
                )
                bare.append(a)
                ours.append(b)
                ratios.append(b / a)
                faults.append((bare_faults, trial_faults))
                ends = stats["epoch_ends"]
                if len(ends[0]) > 1:  # not the one-epoch quick word LM
                    epoch = statistics.mean(map(_steady_epoch_s, ends))
                    steady.append(epoch / statistics.mean(map(_steady_epoch_s, bare_ends)))
                    n_epochs = sum(map(len, ends))
                    fixed.append((stats["trial_s"] - n_epochs * epoch) / n_trials)
            ratio = statistics.median(ratios)
            rows.append(
                row(
                    case["name"],
                    ratio,
                    f"<= {TARGET}",
                    ratio <= TARGET,
                    summary=_spread(ratios) + f", bare {statistics.median(bare):.3g} s an epoch",
                    trials_per_round=n_trials,
                    bare_s_per_epoch=statistics.median(bare),
                    trial_s_per_epoch=statistics.median(ours),
                    # the ratio split: epochs after the first against the bare loop's epochs
                    # after its first, and what a trial costs beyond its epochs (set-up, MLflow
                    # run, ask and tell, the last writes)
                    steady_epoch_ratio=statistics.median(steady) if steady else None,
                    fixed_s_per_trial=statistics.median(fixed) if fixed else None,
                    # every round's (bare, trial) minor page faults (glibc handing freed memory
                    # back and faulting it in again cost the word LM 6% before tuner.memory)
                    page_faults=faults,
                    round_ratios=ratios,  # the spread the median hides
                    ratio_interval=list(median_interval(ratios)[:2]),
                )
            )
            print(rows[-1], flush=True)
        rows.append(noise_floor(quick))
        print(rows[-1], flush=True)
        rows.append(live_curves(workdir, quick))
        print(rows[-1], flush=True)
        for extra in (trial_end_rows, peer_rows, memory_rows):
            try:  # newer rows: a failure is reported in the table, the rows above are kept
                more = extra(quick, workdir)
            except Exception as e:  # noqa: BLE001
                more = [row(f"{extra.__name__}: failed ({type(e).__name__}: {e})", None, "-", None)]
            for one in more:
                rows.append(one)
                print(one, flush=True)
        _close_trackers()
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--memory"]:
        _memory_child(*sys.argv[2:5])
    else:
        run(quick=True)
