"""Search efficiency: how many training epochs rnn-tuner's default sampler and pruner need to
reach what random search without pruning reaches after 50 trials.

Every trial trains for real (the training core, a fixed training seed, so one configuration
always gives the same curve; exact repeats are served from a cache). Random search spends
50 x max_epochs epochs; the figure is the share of that which TPE with constant liar plus the
median pruner (rnn-tuner's defaults, built by tuner.study from a study file that names neither)
spends until its best value is as good. Median over seeds. A full run also tries the sampler
and pruner settings of `VARIANTS` on the same trained curves (a repeated configuration trains
once), one row each; `run(quick=False, tasks=[...], variants=[...])` runs a part:

    python -m benchmarks --only search
    python -c 'from benchmarks.bench_search import run; run(False, ["noisy sine forecast"])'
"""

from __future__ import annotations

import statistics
from dataclasses import replace

import optuna

from benchmarks.common import row
from models import Settings, train
from models.data import task_data
from models.data.config import AddingData, SineData
from tuner.config import parse_study
from tuner.study import make_pruner, make_sampler

TARGET = 1 / 3
# The shipped quickstart's space, shrunk to train fast.
SPACE = {
    "cell": ("categorical", ["rnn", "lstm", "gru"]),
    "lr": ("float", 1e-3, 1e-1),
    "hidden_size": ("int", 4, 32),
    "num_layers": ("int", 1, 2),
    "truncation": ("categorical", [None, 5, 10]),
}
RANDOM_TRIALS = 50
# Settings tried against the defaults (full runs only): the `sampler:` and `pruner:` blocks of a
# study file; a block not given is the default. No "multivariate TPE": Optuna 5's TPE is already.
VARIANTS: dict[str, dict[str, dict]] = {
    "median, 10 startup trials": {
        "pruner": {"name": "median", "options": {"n_startup_trials": 10}}
    },
    "percentile 75 (prunes the worst quarter)": {
        "pruner": {"name": "percentile", "options": {"percentile": 75.0}}
    },
    "hyperband": {"pruner": {"name": "hyperband"}},
    "successive-halving": {"pruner": {"name": "successive-halving"}},
    "TPE, 5 startup trials": {"sampler": {"name": "tpe", "options": {"n_startup_trials": 5}}},
    "TPE, 5 startup trials, hyperband": {
        "sampler": {"name": "tpe", "options": {"n_startup_trials": 5}},
        "pruner": {"name": "hyperband"},
    },
    # The history cap (tuner.history) at its smallest: it bites from the 21st finished trial on,
    # well inside a search of up to 200 trials (docs/performance.md, "Growth").
    "TPE, history 10": {"sampler": {"name": "tpe", "history": 10}},
}


def _tasks(quick: bool) -> list[tuple[str, object]]:
    return [
        ("adding T=20", AddingData(seq_len=20, n_train=384, n_val=192, n_test=32)),
        ("noisy sine forecast", SineData(seq_len=20, n_train=384, n_val=192, n_test=32)),
    ]


def _suggest(trial: optuna.Trial) -> dict:
    params = {}
    for name, (kind, *args) in SPACE.items():
        if kind == "categorical":
            params[name] = trial.suggest_categorical(name, args[0])
        elif kind == "float":
            params[name] = trial.suggest_float(name, *args, log=True)
        else:
            params[name] = trial.suggest_int(name, *args)
    return params


class Curves:
    """Validation curves by configuration, trained on first use."""

    def __init__(self, data_cfg, base: Settings) -> None:  # noqa: ANN001
        self.data, self.base, self.cache = task_data(data_cfg), base, {}

    def __call__(self, params: dict) -> list[float]:
        key = tuple(params[k] for k in SPACE)
        if key not in self.cache:
            result = train(replace(self.base, **params), self.data, monitor="val_mse")
            self.cache[key] = [row["val_mse"] for row in result.history]
        return self.cache[key]


def _search(curves: Curves, sampler, pruner, stop_at: float | None, max_trials: int):  # noqa: ANN001
    """Run a replayed study; returns (best value, epochs spent until it was reached)."""
    study = optuna.create_study(sampler=sampler, pruner=pruner)
    spent = {"epochs": 0, "until_best": 0}

    def objective(trial: optuna.Trial) -> float:
        curve = curves(_suggest(trial))
        for epoch, value in enumerate(curve):
            spent["epochs"] += 1
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return min(curve)

    def stop(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state.name == "COMPLETE" and trial.value == study.best_value:
            spent["until_best"] = spent["epochs"]
            if stop_at is not None and study.best_value <= stop_at:
                study.stop()

    study.optimize(objective, n_trials=max_trials, callbacks=[stop])
    return study.best_value, spent["until_best"], spent["epochs"]


MAX_EPOCHS = 6


def _study(blocks: dict[str, dict] | None = None):  # noqa: ANN202 - a StudyConfig
    """What a study file with these `sampler:` / `pruner:` blocks (none: the defaults) gets."""
    study = {
        "study": {"name": "defaults"},
        "task": {"source": "adding"},
        "search": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}},
        "objective": "val_mse",
        "budget": {"max_epochs": MAX_EPOCHS},
    }
    return parse_study({**study, **(blocks or {})})


def run(
    quick: bool, tasks: list[str] | None = None, variants: list[str] | None = None
) -> list[dict]:
    """`tasks` and `variants` ("default" or a VARIANTS name) choose a part: all if None; the
    variants run in full runs only, unless named."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    seeds = range(3 if quick else 5)
    base = Settings(batch_size=64, clip_norm=1.0, patience=None, max_epochs=MAX_EPOCHS)
    studies = {"default": _study()}
    studies.update({name: _study(blocks) for name, blocks in VARIANTS.items()})
    if variants is None:
        variants = ["default"] if quick else list(studies)
    studies = {name: studies[name] for name in variants}
    rows = []
    for name, data_cfg in _tasks(quick):
        if tasks is not None and name not in tasks:
            continue
        curves = Curves(data_cfg, base)  # shared: the variants' repeated trials train once
        random = [_search(curves, optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner(), None, RANDOM_TRIALS) for seed in seeds]  # fmt: skip
        for variant, cfg in studies.items():
            fractions, reached = [], []
            for seed, (target, _, random_epochs) in zip(seeds, random, strict=True):
                sampler, pruner = make_sampler(cfg, seed), make_pruner(cfg)
                best, epochs, _ = _search(curves, sampler, pruner, target, 4 * RANDOM_TRIALS)
                reached.append(best <= target)
                fractions.append(epochs / random_epochs if best <= target else 1.0)
                print(name, variant, seed, fractions[-1], flush=True)
            fraction = statistics.median(fractions)
            label = name if variant == "default" else f"{name}, {variant}"
            rows.append(
                row(label, fraction, f"<= {TARGET:.3f}", fraction <= TARGET,
                    trials_trained=len(curves.cache), per_seed=fractions, reached=reached)
            )  # fmt: skip
            print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    run(quick=True)
