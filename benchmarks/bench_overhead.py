"""Trial overhead: one rnn-tuner trial with everything on, against a bare PyTorch loop.

(a) the limit: a plain loop over the same in-memory tensors, same network, optimizer, clipping
    and a validation pass per epoch; for truncation k, a plain TBPTT loop (the first T-k steps
    without a graph) and for language modelling a loop that carries the state across batches;
    the word-level LM (the classic small PTB shape, on a synthetic Zipf stream of 10,000 words)
    trains with plain SGD, as both sides do;
(b) one trial as `rnn-tuner run` runs it: Optuna trial on a SQLite study, Lightning, the pruning
    callback reporting each epoch, an MLflow child run with every per-epoch metric.

Rounds interleave a b a b; the figure is the median of the paired ratios b/a of time per epoch.

A last row prices the live curves on a quickstart trial: the same trial with each epoch sent to
MLflow as it ends (the default) against sending every epoch at the trial's end (as before live
curves), and the sender thread's CPU time as a share of the epoch time.

    python -m benchmarks --only overhead
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import row
from models import Settings
from models.data import SequenceDataModule
from models.data.config import AddingData, TextData

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"full": 1.05, "truncated": 1.10}


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
        "kind": "full",
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
        {"name": "adding T=50 LSTM-64 full BPTT", "data": adding, "settings": base, "kind": "full"},
        {
            "name": "adding T=50 LSTM-64 k=10",
            "data": adding,
            "settings": replace(base, truncation=10),
            "kind": "truncated",
        },
        {
            "name": "adding T=50 GRU-64 full BPTT",
            "data": adding,
            "settings": replace(base, cell="gru"),
            "kind": "full",
        },
        {
            "name": "adding T=50 RNN-64 full BPTT",
            "data": adding,
            "settings": replace(base, cell="rnn"),
            "kind": "full",
        },
        {
            "name": "char LM LSTM-128 state carried",
            "data": text,
            "settings": replace(base, hidden_size=128, batch_size=32, max_epochs=2 if quick else 3),
            "kind": "full",
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


def bare_loop(s: Settings, task) -> float:  # noqa: ANN001
    """Seconds per epoch of the plainest loop that trains the same thing."""
    torch.manual_seed(s.seed)
    info, lm = task.info, task.info.task == "language_model"
    model = _Bare(s, info)
    opt = (
        torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum)
        if s.optimizer == "sgd"
        else torch.optim.Adam(model.parameters(), lr=s.lr)
    )
    dm = SequenceDataModule(task, s.batch_size, s.seed)
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
    return (time.perf_counter() - started) / s.max_epochs


# ---------------------------------------------------------------- (b) one rnn-tuner trial


def tuner_trial(
    s: Settings,
    data_cfg,  # noqa: ANN001
    workdir: Path,
    round_: int,
    live: bool = True,
    stats: dict | None = None,
) -> float:
    """Seconds per epoch of one trial run by the tuner's own objective, recorded everywhere.

    `live=False` sends the epochs with the trial's end instead of as each ends; `stats` receives
    the MLflow sender thread's CPU seconds (`sender_cpu_s`)."""
    import optuna

    from tuner.config import parse_study
    from tuner.interrupts import Interrupts
    from tuner.objective import Objective
    from tuner.tracking import Tracker

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
    tracker = Tracker(f"sqlite:///{workdir}/mlflow.db", "overhead")
    if not live:
        tracker.log_epoch = lambda run_id, row: None  # type: ignore[method-assign]
    parent = tracker.create_parent(cfg.study.name, {})
    study = optuna.create_study(
        storage=f"sqlite:///{workdir}/optuna.db",
        study_name=cfg.study.name,
        pruner=optuna.pruners.MedianPruner(),
    )
    with Interrupts() as interrupts:
        objective = Objective(cfg, tracker, parent, interrupts)
        started = time.perf_counter()
        study.optimize(objective, n_trials=1)
        elapsed = time.perf_counter() - started
    assert study.trials[-1].state.name == "COMPLETE"
    if stats is not None:
        stats["sender_cpu_s"] = tracker.sender.busy_s
    return elapsed / len(study.trials[-1].intermediate_values)


def live_curves(workdir: Path, quick: bool) -> dict:
    """A quickstart trial (studies/quickstart.yaml's task, a mid-range configuration) with its
    epochs sent live against sent at its end: paired rounds, median ratio of time per epoch."""
    data = AddingData(seq_len=30, n_train=2000, n_val=500, n_test=500)
    s = Settings(cell="lstm", hidden_size=32, batch_size=64, lr=1e-2, clip_norm=1.0)
    s = replace(s, patience=None, max_epochs=4 if quick else 8)
    ratios, live, deferred, shares = [], [], [], []
    for r in range(5 if quick else 9):
        stats: dict = {}
        b = tuner_trial(s, data, workdir, 1000 + 2 * r, live=True, stats=stats)
        a = tuner_trial(s, data, workdir, 1001 + 2 * r, live=False)
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


def run(quick: bool) -> list[dict]:
    import optuna

    from models.data import task_data
    from tuner.cli import mlflow_defaults

    mlflow_defaults()  # as `rnn-tuner run` sets them
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # both sides alike; the machine is shared
    rounds = 3 if quick else 5
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
            ratios, bare, ours = [], [], []
            for r in range(rounds):
                a = bare_loop(case["settings"], task)
                b = tuner_trial(case["settings"], case["data"], workdir, len(rows) * 100 + r)
                bare.append(a)
                ours.append(b)
                ratios.append(b / a)
            target = TARGETS[case["kind"]]
            ratio = statistics.median(ratios)
            rows.append(
                row(
                    case["name"],
                    ratio,
                    f"<= {target}",
                    ratio <= target,
                    bare_s_per_epoch=statistics.median(bare),
                    trial_s_per_epoch=statistics.median(ours),
                )
            )
            print(rows[-1], flush=True)
        rows.append(live_curves(workdir, quick))
        print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    run(quick=True)
