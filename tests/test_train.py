"""train() and evaluate(): the straight-line training entry, on real tiny tasks."""

import logging
import math
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping

from models import AddingData, EpochCallback, Settings, TrainResult, evaluate, load_task, train
from models.data import SineData, TaggedData
from models.data.base import DataInfo, Split, TaskData

EXAMPLES = Path(__file__).resolve().parents[1] / "studies" / "data"
TINY = Settings(hidden_size=16, batch_size=32, lr=2e-2, max_epochs=3, patience=None)


@pytest.fixture(scope="module")
def adding():
    return load_task(AddingData(seq_len=10, n_train=256, n_val=64, n_test=64))


def _language(tokens=(2000, 600), window=10):
    g = torch.Generator().manual_seed(0)

    def stream(size):
        s = torch.arange(size) % 5
        noise = torch.rand(size, generator=g) < 0.1
        s[noise] = torch.randint(0, 5, (int(noise.sum()),), generator=g)
        return Split(s, None, None)

    info = DataInfo("language_model", None, 5, 5, window, tokens[0], level="char")
    return TaskData(info, stream(tokens[0]), stream(tokens[1]), stream(tokens[1]))


class _Sabotage(pl.Callback):
    """Scrambles the weights before epoch `epoch`, so later epochs validate worse."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.add_(5 * torch.randn_like(p))


def test_train_returns_the_best_validation_value_not_the_last(adding):
    settings = Settings(**{**TINY.to_dict(), "max_epochs": 4, "lr": 1e-2, "optimizer": "sgd"})
    result = train(settings, adding, callbacks=[_Sabotage(epoch=3)])
    assert isinstance(result, TrainResult)
    assert (result.monitor, result.mode) == ("val_mse", "min")
    values = [row["val_mse"] for row in result.history]
    assert result.epochs == len(values) == 4
    assert result.best_value == min(values)
    assert result.best_value < values[-1]  # the sabotaged last epoch is not the best
    assert result.history[-1]["best_val_mse"] == result.best_value
    assert result.n_params == sum(p.numel() for p in result.module.parameters())


def test_early_stopping_ends_after_patience_epochs_without_improvement(adding):
    # no epoch can improve on the first by min_delta = 10, so patience 1 stops after epoch 2
    settings = Settings(**{**TINY.to_dict(), "max_epochs": 10, "patience": 1, "min_delta": 10.0})
    result = train(settings, adding)
    assert result.epochs == 2
    assert result.trainer.current_epoch == 2


def test_monitor_may_be_chosen_but_must_be_logged_for_the_task(adding):
    result = train(TINY, adding, monitor="val_mae")
    assert (result.monitor, result.mode) == ("val_mae", "min")
    assert result.best_value == min(row["val_mae"] for row in result.history)
    with pytest.raises(ValueError, match="val_acc.*valid: train_loss, val_loss, val_mse, val_mae"):
        train(TINY, adding, monitor="val_acc")


def test_callbacks_see_the_epochs_row_in_on_train_epoch_end(adding):
    class Seen(pl.Callback):
        rows: list = []

        def on_train_epoch_end(self, trainer, pl_module):
            self.rows.append((trainer.current_epoch, dict(pl_module.history[-1])))

    seen = Seen()
    train(TINY, adding, callbacks=[seen])
    assert [epoch for epoch, _ in seen.rows] == [0, 1, 2]
    assert all(row["epoch"] == epoch and math.isfinite(row["val_mse"]) for epoch, row in seen.rows)


class _Watch(EpochCallback):
    """Notes what the TrainResult held at each call, and raises `stop_at` at that epoch."""

    def __init__(self, stop_at=None):
        self.stop_at, self.result, self.seen = stop_at, None, []

    def on_start(self, result):
        self.result = result
        self.seen.append(("start", result.n_params, len(result.history)))

    def on_epoch(self, result):
        row = result.history[-1]
        self.seen.append((row["epoch"], len(result.history), result.best_value, result.best_epoch))
        assert len(result.grad_flow_profile) in (0, 10)  # empty only without validation
        if row["epoch"] == self.stop_at:
            raise KeyError("stop here")


def test_epoch_callbacks_follow_the_result_that_train_returns(adding):
    watch = _Watch()
    result = train(Settings(**{**TINY.to_dict(), "max_epochs": 4}), adding, callbacks=[watch])
    assert watch.result is result
    assert watch.seen[0] == ("start", result.n_params, 0)
    values = [row["val_mse"] for row in result.history]
    for epoch, (seen_epoch, rows, best, best_epoch) in enumerate(watch.seen[1:]):
        assert (seen_epoch, rows) == (epoch, epoch + 1)
        assert best == min(values[: epoch + 1]) == values[best_epoch]
    assert result.best_epoch == values.index(result.best_value)
    assert len(result.grad_flow_profile) == adding.info.max_len


def test_an_epoch_callback_that_raises_stops_training_and_keeps_the_epochs_before(adding):
    watch = _Watch(stop_at=1)
    with pytest.raises(KeyError, match="stop here"):
        train(Settings(**{**TINY.to_dict(), "max_epochs": 5}), adding, callbacks=[watch])
    assert [row["epoch"] for row in watch.result.history] == [0, 1]
    assert watch.result.best_value == min(row["val_mse"] for row in watch.result.history)


def test_an_epoch_without_validation_still_reaches_the_epoch_callbacks(adding):
    watch = _Watch()
    result = train(TINY, adding, callbacks=[watch], trainer_kwargs={"limit_val_batches": 0})
    assert [s[0] for s in watch.seen[1:]] == [0, 1, 2]
    assert all(math.isfinite(row["train_loss"]) and "val_mse" not in row for row in result.history)
    assert math.isnan(result.best_value) and result.best_epoch is None


def test_same_seed_same_history(adding):
    first = train(TINY, adding).history
    assert train(TINY, adding).history == first
    other_seed = Settings(**{**TINY.to_dict(), "seed": 1})
    assert train(other_seed, adding).history != first


@pytest.mark.parametrize("task", ["regression", "language_model"])
def test_evaluate_gives_the_validation_metrics_on_any_split(task, adding):
    data = adding if task == "regression" else _language()
    result = train(TINY, data)
    on_val = evaluate(result.module, data, "val")
    last = result.history[-1]
    assert on_val == pytest.approx({k: last[k] for k in on_val})
    on_test = evaluate(result.module, data, "test")
    names = {"regression": {"loss", "mse", "mae"}, "language_model": {"loss", "ppl", "bpc"}}[task]
    assert set(on_test) == {f"test_{n}" for n in names}
    assert evaluate(result.module, data, "train")["train_loss"] > 0
    with pytest.raises(ValueError, match="split"):
        evaluate(result.module, data, "dev")


def test_train_prints_no_lightning_banners(adding, capsys, caplog):
    caplog.set_level(logging.INFO)
    train(Settings(**{**TINY.to_dict(), "max_epochs": 1}), adding)
    out, err = capsys.readouterr()
    for text in (out, err, caplog.text):
        assert "GPU available" not in text
        assert "max_epochs" not in text  # "`Trainer.fit` stopped: `max_epochs=1` reached."


def test_callbacks_a_package_registers_reach_every_trainer(adding, tmp_path, monkeypatch):
    """Lightning's entry points for callback factories (looked up once per sys.path: the lookup
    reads every installed package's metadata): a package installed on a new path is seen, and
    each training gets callbacks of its own from the factory."""
    package = "rnn_tuner_test_callbacks"
    (tmp_path / f"{package}.py").write_text(
        "import pytorch_lightning as pl\n"
        "fits = []\n"
        "class Seen(pl.Callback):\n"
        "    def on_fit_start(self, trainer, pl_module):\n"
        "        fits.append(self)\n"
        "def factory():\n"
        "    return [Seen()]\n"
    )
    info = tmp_path / f"{package}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[pytorch_lightning.callbacks_factory]\nseen = {package}:factory\n"
    )
    one_epoch = Settings(**{**TINY.to_dict(), "max_epochs": 1})
    train(one_epoch, adding)  # the lookup made before the package's path is known
    monkeypatch.syspath_prepend(str(tmp_path))
    train(one_epoch, adding)
    train(one_epoch, adding)
    fits = __import__(package).fits
    assert len(fits) == 2 and fits[0] is not fits[1]
    monkeypatch.delitem(sys.modules, package)


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_lstm_and_gru_solve_the_adding_problem_at_length_50(cell):
    data = load_task(AddingData(seq_len=50))  # predicting the mean scores MSE 0.167
    settings = Settings(
        cell=cell, hidden_size=64, lr=1e-2, batch_size=32, max_epochs=15, patience=None
    )
    solved = EarlyStopping("val_mse", patience=15, mode="min", stopping_threshold=0.01)
    result = train(settings, data, callbacks=[solved])
    assert result.best_value < 0.05, [round(row["val_mse"], 4) for row in result.history]


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


GROUPED = {  # a few batches per epoch, so that groups of 3 leave a short last group
    "adding LSTM 2 layers, dropout, L2, clipping, step schedule": (
        AddingData(seq_len=12, n_train=224, n_val=96, n_test=32),
        dict(num_layers=2, dropout=0.3, weight_decay=1e-3, scheduler="step", lr_step=1),
    ),
    "adding GRU truncated k=4, L1, clip by value": (
        AddingData(seq_len=12, n_train=224, n_val=96, n_test=32),
        dict(cell="gru", truncation=4, l1=1e-4, clip_norm=None, clip_value=0.5),
    ),
    "char LM RNN truncated k=3, state carried, output dropout, cosine schedule": (
        _language(),
        dict(cell="rnn", truncation=3, output_dropout=0.2, scheduler="cosine", batch_size=8),
    ),
    "tagging bidirectional LSTM": (
        TaggedData(path=str(EXAMPLES / "tagged.tsv")),
        dict(bidirectional=True, input_dropout=0.1),
    ),
    "sine regression, L1, SGD": (
        SineData(seq_len=16, horizon=2, n_train=200, n_val=64, n_test=32),
        dict(l1=1e-3, optimizer="sgd", momentum=0.9),
    ),
}


@pytest.mark.parametrize("name", GROUPED)
def test_batches_per_step_trains_exactly_as_one_batch_per_step(name):
    """Several batches per Lightning step (fewer of its per-step calls) is the same training:
    the same history, value for value, the same optimizer steps and the same weights."""
    data, changes = GROUPED[name]
    task = data if isinstance(data, TaskData) else load_task(data)
    settings = Settings(**{**TINY.to_dict(), "max_epochs": 3, **changes})
    runs = [train(settings, task, batches_per_step=k) for k in (1, 3, None)]
    one = runs[0]
    assert len(one.history) == 3
    for other in runs[1:]:
        assert len(other.history) == len(one.history)
        for row, other_row in zip(one.history, other.history, strict=True):
            assert row.keys() == other_row.keys()
            assert all(_same(row[k], other_row[k]) for k in row), (row, other_row)
        assert other.trainer.global_step == one.trainer.global_step
        assert other.grad_flow_profile == one.grad_flow_profile
        for p, q in zip(one.module.parameters(), other.module.parameters(), strict=True):
            assert torch.equal(p, q)
