"""The peer of an rnn-tuner trial: the same trial as a user would write it by hand.

A LightningModule with automatic optimisation, a `DataLoader` over a `TensorDataset`, a `lightning`
Trainer with its usual settings (checkpointing and model summary on, gradient clipping by norm),
Lightning's `MLFlowLogger`, and optuna-integration's `PyTorchLightningPruningCallback` reporting
`val_loss` to a median pruner on a SQLite study. It runs in its own venv (bench_overhead.peer_python
makes it), since optuna-integration imports `lightning.pytorch`, which must not share a process with
rnn-tuner's `pytorch_lightning`.

    python benchmarks/peer_trial.py DATA.pt WORKDIR     # then one line per trial on stdin

`DATA.pt` holds the tensors and settings (`bench_overhead.peer_row` writes it). Each line read on
stdin runs one trial (one study.optimize(n_trials=1)) and answers one JSON line: the trial's wall
time and the times its epochs ended.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import optuna
import torch
from lightning.pytorch.loggers import MLFlowLogger
from optuna_integration import PyTorchLightningPruningCallback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Regressor(pl.LightningModule):
    def __init__(self, input_size: int, hidden_size: int, cell: str, lr: float) -> None:
        super().__init__()
        self.save_hyperparameters()
        rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(input_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)  # (batch, time, hidden)
        return self.head(out[:, -1])

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class EpochEnds(pl.Callback):
    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.ends.append(time.perf_counter())


def main(data_path: str, workdir: str) -> None:
    torch.set_num_threads(1)  # as the other side
    d = torch.load(data_path)
    s = d["settings"]
    work = Path(workdir)
    tracking = f"sqlite:///{work}/peer-mlflow.db"
    storage = f"sqlite:///{work}/peer-optuna.db"

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_categorical("lr", [s["lr"]])
        pl.seed_everything(s["seed"], verbose=False)
        train = DataLoader(TensorDataset(d["x"], d["y"]), batch_size=s["batch_size"], shuffle=True)
        val = DataLoader(TensorDataset(d["vx"], d["vy"]), batch_size=s["batch_size"])
        model = Regressor(d["x"].shape[2], s["hidden_size"], s["cell"], lr)
        ends = EpochEnds()
        trainer = pl.Trainer(
            max_epochs=s["max_epochs"],
            accelerator="cpu",
            gradient_clip_val=s["clip_norm"],
            logger=MLFlowLogger(experiment_name="peer", tracking_uri=tracking),
            callbacks=[PyTorchLightningPruningCallback(trial, monitor="val_loss"), ends],
            enable_progress_bar=False,
            default_root_dir=workdir,
        )
        trainer.fit(model, train, val)
        trial.set_user_attr("epoch_ends", ends.ends)
        return float(trainer.callback_metrics["val_loss"])

    for round_, _ in enumerate(sys.stdin):
        study = optuna.create_study(
            storage=storage, study_name=f"peer-{round_}", pruner=optuna.pruners.MedianPruner()
        )
        started = time.perf_counter()
        study.optimize(objective, n_trials=1)
        elapsed = time.perf_counter() - started
        trial = study.trials[-1]
        assert trial.state.name == "COMPLETE", trial.state
        ends = trial.user_attrs["epoch_ends"]
        print(json.dumps({"trial_s": elapsed, "epoch_ends": ends}), flush=True)


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    main(sys.argv[1], sys.argv[2])
