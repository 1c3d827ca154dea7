"""SequenceModule: losses, truncated BPTT, the language model's carried state, clipping,
penalties, divergence, schedulers, per-epoch metrics and the gradient-flow diagnostic.

Every test trains or evaluates for real on tiny data made here."""

import math
from dataclasses import asdict

import pytest
import pytorch_lightning as pl
import torch

from models.config import Settings
from models.data.base import Batch, DataInfo, Split, TaskData
from models.data.datamodule import SequenceDataModule
from models.errors import DivergenceError
from models.metrics import METRIC_MODES, default_monitor
from models.module import SequenceModule

# torch 2.13 deprecates a pytree class that Lightning 2.6 still checks for (train() hides it too)
pytestmark = pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\):FutureWarning")

# --- tiny tasks -----------------------------------------------------------------------------


def _padded(n, steps, generator, features=2):
    """(N, T, F) normal inputs with lengths in [3, T] and garbage in the padding."""
    lengths = torch.randint(3, steps + 1, (n,), generator=generator)
    x = torch.randn(n, steps, features, generator=generator)
    pad = torch.arange(steps) >= lengths[:, None]
    x[pad] = 7.0  # padding must never matter; a loud value makes sure it does not
    return x, lengths, ~pad


def _classification(n=(192, 64), steps=8):
    g = torch.Generator().manual_seed(1)

    def split(size):
        x, lengths, real = _padded(size, steps, g)
        y = ((x[..., 0] * real).sum(1) > 0).long()  # the sign of the sum of the first feature
        return Split(x, y, lengths)

    info = DataInfo("classification", 2, None, 2, steps, n[0])
    return TaskData(info, split(n[0]), split(n[1]), split(n[1]))


def _regression(n=(192, 64), steps=8):
    g = torch.Generator().manual_seed(2)

    def split(size):
        x, lengths, real = _padded(size, steps, g)
        y = (x[..., 0] * real).sum(1, keepdim=True) / lengths[:, None]  # (N, 1) the mean
        return Split(x, y, lengths)

    info = DataInfo("regression", 2, None, 1, steps, n[0])
    return TaskData(info, split(n[0]), split(n[1]), split(n[1]))


def _tagging(n=(192, 64), steps=8, variable=True):
    g = torch.Generator().manual_seed(3)

    def split(size):
        tokens = torch.randint(1, 9, (size, steps), generator=g)
        lengths = torch.randint(3, steps + 1, (size,), generator=g)
        if not variable:
            lengths[:] = steps
        pad = torch.arange(steps) >= lengths[:, None]
        tags = tokens % 3  # the tag of each token, plus the previous token's
        tags[:, 1:] = (tags[:, 1:] + tokens[:, :-1]) % 3
        tokens[pad], tags[pad] = 0, -100
        return Split(tokens, tags, None if not variable else lengths)

    info = DataInfo("tagging", None, 9, 3, steps, n[0])
    return TaskData(info, split(n[0]), split(n[1]), split(n[1]))


def _language(tokens=(3000, 800), window=12):
    """A noisy cycle of 7 symbols: the next symbol is predictable 90% of the time."""
    g = torch.Generator().manual_seed(4)

    def stream(size):
        s = torch.arange(size) % 7
        noise = torch.rand(size, generator=g) < 0.1
        s[noise] = torch.randint(0, 7, (int(noise.sum()),), generator=g)
        return Split(s, None, None)

    info = DataInfo("language_model", None, 7, 7, window, tokens[0], level="char")
    return TaskData(info, stream(tokens[0]), stream(tokens[1]), stream(tokens[1]))


def _module(data, **settings):
    s = Settings(**{"hidden_size": 16, "batch_size": 32, **settings})
    torch.manual_seed(s.seed)
    return SequenceModule(s.to_dict(), asdict(data.info))


def _fit(module, data, epochs=1, callbacks=(), logger=False, **trainer_kwargs):
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
        **trainer_kwargs,
    )
    s = module.settings
    trainer.fit(module, datamodule=SequenceDataModule(data, s.batch_size, s.seed))
    return trainer


def _batch(split, n):
    lengths = None if split.lengths is None else split.lengths[:n]
    return Batch(split.inputs[:n], split.targets[:n], lengths)


# --- truncated BPTT -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell,pooling", [("rnn", "last"), ("lstm", "last"), ("gru", "last"), ("lstm", "mean"), ("gru", "max")]
)  # fmt: skip
def test_truncation_cuts_the_many_to_one_gradient_to_the_last_k_steps(cell, pooling):
    info = DataInfo("regression", 2, None, 1, 12, 4)
    torch.manual_seed(0)
    x, y = torch.randn(4, 12, 2, requires_grad=True), torch.randn(4, 1)
    for k in (4, None):
        module = _module(TaskData(info, *[None] * 3), cell=cell, pooling=pooling, truncation=k)
        x.grad = None
        loss = module.truncated_loss(Batch(x, y, None))
        loss.backward()
        torch.testing.assert_close(loss, module.loss(Batch(x, y, None)))  # same value
        older = x.grad[:, :8].abs().sum(-1)  # (B, 8) per step
        assert (x.grad[:, 8:].abs().sum((1, 2)) > 0).all()  # max pooling may skip a step
        if k is not None:
            assert (older == 0).all()
        else:
            assert (older > 0).all()


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_a_bidirectional_training_loss_is_the_whole_sequence_loss(pooling):
    """Equal lengths take a shortcut past the step mask; a bidirectional network's backward
    half must still be read where it ends (step 0)."""
    info = DataInfo("regression", 2, None, 1, 12, 4)
    torch.manual_seed(0)
    x, y = torch.randn(4, 12, 2), torch.randn(4, 1)
    module = _module(TaskData(info, *[None] * 3), bidirectional=True, pooling=pooling)
    torch.testing.assert_close(module.truncated_loss(Batch(x, y, None)), module.loss(Batch(x, y, None)))  # fmt: skip
    features, _ = module.net.encode(x)
    ends = torch.cat([features[:, -1, :16], features[:, 0, 16:]], 1) if pooling == "last" else features.mean(1)  # fmt: skip
    torch.testing.assert_close(module.net.pool(features, torch.ones(4, 12, dtype=torch.bool), torch.full((4,), 11)), ends)  # fmt: skip


def test_truncation_with_variable_lengths_keeps_each_sequences_own_last_k_steps():
    data = _classification()
    module = _module(data, truncation=3, pooling="mean")
    batch = _batch(data.train, 6)
    x = batch.inputs.clone().requires_grad_(True)
    module.truncated_loss(Batch(x, batch.targets, batch.lengths)).backward()
    for row, length in enumerate(batch.lengths.tolist()):
        steps_with_grad = (x.grad[row].abs().sum(-1) > 0).nonzero().squeeze(1).tolist()
        assert steps_with_grad == list(range(max(length - 3, 0), length))


@pytest.mark.parametrize("task", ["language_model", "tagging"])
def test_many_to_many_truncation_steps_the_optimizer_per_chunk(task):
    data = _language() if task == "language_model" else _tagging(steps=10, variable=False)
    module = _module(data, truncation=5 if task == "language_model" else 3)
    trainer = _fit(module, data, epochs=1, limit_val_batches=0)
    loader = SequenceDataModule(data, 32, 0).train_dataloader()
    k = module.settings.truncation
    expected = sum(math.ceil(b.inputs.shape[1] / k) for b in loader)
    assert expected > len(loader)  # several chunks per batch
    assert trainer.global_step == expected


def test_a_callback_on_the_step_hooks_is_called_at_every_optimizer_step():
    """The module calls torch's backward and step itself while no one listens to Lightning's
    step hooks; a callback that does listen gets every call, and the step count is Lightning's."""

    class Counting(pl.Callback):
        def __init__(self) -> None:
            self.calls: dict[str, int] = {}

        def _count(self, hook: str) -> None:
            self.calls[hook] = self.calls.get(hook, 0) + 1

        def on_before_backward(self, trainer, module, loss) -> None:  # noqa: ANN001
            self._count("before_backward")

        def on_after_backward(self, trainer, module) -> None:  # noqa: ANN001
            self._count("after_backward")

        def on_before_optimizer_step(self, trainer, module, optimizer) -> None:  # noqa: ANN001
            self._count("before_step")

    data = _language()
    counting = Counting()
    trainer = _fit(_module(data, truncation=5), data, callbacks=[counting], limit_val_batches=0)
    assert trainer.global_step > 0
    assert counting.calls == dict.fromkeys(("before_backward", "after_backward", "before_step"), trainer.global_step)  # fmt: skip


@pytest.mark.parametrize("task", ["language_model", "tagging"])
def test_chunk_losses_weigh_every_step_as_the_full_bptt_loss_does(task):
    data = _language() if task == "language_model" else _tagging(steps=10)
    module = _module(data, truncation=3).eval()
    if task == "language_model":
        batch = next(iter(SequenceDataModule(data, 8, 0).train_dataloader()))
    else:
        batch = _batch(data.train, 8)
    full = module.loss(batch)
    full.backward()
    head_grad = module.net.decoder.weight.grad.clone()  # the head's gradient has no time path
    module.zero_grad()
    chunks = 0
    total = torch.zeros(())
    for loss, _, _ in module.chunk_losses(batch):
        loss.backward()  # gradients add up across the chunks
        total, chunks = total + loss.detach(), chunks + 1
    assert chunks == math.ceil(batch.inputs.shape[1] / 3)
    torch.testing.assert_close(total, full.detach())
    torch.testing.assert_close(module.net.decoder.weight.grad, head_grad)


def test_language_model_carries_its_state_across_batches_in_order():
    class Record(pl.Callback):
        def __init__(self):
            self.rows = []  # (epoch, inputs, state at batch start, state at batch end)

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.rows.append([trainer.current_epoch, batch.inputs, _copy(module.train_state)])

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.rows[-1].append(_copy(module.train_state))

    data = _language()
    # updates of lr 1e-30 vanish below float32 resolution: the weights stay fixed, so the carried
    # state can be recomputed in one pass
    module = _module(data, cell="lstm", optimizer="sgd", lr=1e-30, truncation=4)
    record = Record()
    _fit(module, data, epochs=2, callbacks=[record], limit_val_batches=0)
    for epoch in (0, 1):
        rows = [r for r in record.rows if r[0] == epoch]
        assert rows[0][2] is None  # reset at the epoch start
        for before, after in zip(rows, rows[1:], strict=False):
            torch.testing.assert_close(after[2], before[3])
        stream = torch.cat([r[1] for r in rows[:4]], 1)  # the first 4 windows, end to end
        with torch.no_grad():
            _, state = module.net.encode(stream)
        torch.testing.assert_close(rows[3][3], state)


def _copy(state):
    if state is None:
        return None
    return tuple(s.clone() for s in state) if isinstance(state, tuple) else state.clone()


# --- losses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task,pooling",
    [("classification", "last"), ("classification", "mean"), ("classification", "max"),
     ("regression", "last"), ("tagging", "last")],
)  # fmt: skip
def test_padding_never_changes_a_loss(task, pooling):
    data = {"classification": _classification, "regression": _regression, "tagging": _tagging}[task]()  # fmt: skip
    batch = _batch(data.train, 8)
    extra = 5
    inputs = torch.cat([batch.inputs, batch.inputs[:, :extra] * 0 + 8], 1)  # 5 steps of junk
    targets = batch.targets
    if task == "tagging":
        targets = torch.cat([targets, torch.full((8, extra), -100)], 1)
    padded = Batch(inputs, targets, batch.lengths)
    for k in (None, 3):
        module = _module(data, pooling=pooling, truncation=k).eval()
        torch.testing.assert_close(module.loss(padded), module.loss(batch))
        if task != "tagging":
            torch.testing.assert_close(module.truncated_loss(padded), module.truncated_loss(batch))
        sums, _ = module.evaluate_batch(padded)
        reference, _ = module.evaluate_batch(batch)
        for key in reference:
            torch.testing.assert_close(torch.as_tensor(sums[key]), torch.as_tensor(reference[key]))


# --- optimisation ---------------------------------------------------------------------------


def _grads(module):
    return [p.grad for p in module.parameters() if p.grad is not None]


def test_clip_norm_bounds_the_gradient_norm_and_the_log_keeps_the_raw_norm():
    data = _regression()
    module = _module(data, clip_norm=0.01)
    _fit(module, data, epochs=1, limit_val_batches=0)
    clipped = torch.nn.utils.get_total_norm(_grads(module))  # the last step's, after clipping
    assert clipped <= 0.01 * (1 + 1e-5)
    assert module.history[-1]["grad_norm_max"] > 0.01  # recorded before clipping
    assert module.history[-1]["grad_norm_mean"] <= module.history[-1]["grad_norm_max"]


def test_clip_value_bounds_every_gradient_element():
    data = _regression()
    module = _module(data, clip_norm=None, clip_value=1e-3)
    _fit(module, data, epochs=1, limit_val_batches=0)
    largest = max(float(g.abs().max()) for g in _grads(module))
    assert largest == pytest.approx(1e-3)  # some element was clipped, none went beyond


@pytest.mark.parametrize("penalty", ["l1", "weight_decay"])
def test_l1_and_weight_decay_change_the_update_of_the_weights_only(penalty):
    data = _classification()
    runs = {}
    for strength in (0.0, 0.05):
        module = _module(data, optimizer="sgd", momentum=0.0, lr=0.1, clip_norm=None, **{penalty: strength})  # fmt: skip
        start = {n: p.detach().clone() for n, p in module.named_parameters()}
        _fit(module, data, epochs=1, limit_train_batches=1, limit_val_batches=0)
        runs[strength] = {n: p.detach() for n, p in module.named_parameters()}
    for name, p0 in start.items():
        shift = runs[0.05][name] - runs[0.0][name]
        if p0.ndim < 2:  # biases and norms are spared
            expected = torch.zeros_like(p0)
        elif penalty == "l1":
            expected = -0.1 * 0.05 * p0.sign()  # lr * l1 * sign(w)
        else:
            expected = -0.1 * 0.05 * p0  # lr * weight_decay * w
        torch.testing.assert_close(shift, expected, atol=1e-6, rtol=1e-4)


def test_a_nan_loss_raises_divergence_error_before_the_update():
    data = _regression()
    bad = data.train.inputs.clone()
    bad[100, 0, 0] = math.nan  # one sample somewhere in the shuffled epoch
    data = TaskData(data.info, Split(bad, data.train.targets, data.train.lengths), data.val, data.test)  # fmt: skip
    module = _module(data)
    trainer = None
    with pytest.raises(DivergenceError) as caught:
        trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
        trainer.fit(module, datamodule=SequenceDataModule(data, 32, 0))
    err = caught.value
    assert err.epoch == 0
    assert err.step == trainer.global_step  # the steps before it went through
    assert f"epoch 0, step {err.step}" in str(err)
    assert math.isnan(err.loss)
    assert all(torch.isfinite(p).all() for p in module.parameters())  # the NaN never applied


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_every_optimizer_trains(name):
    data = _classification()
    module = _module(data, optimizer=name, lr=1e-2)
    before = [p.detach().clone() for p in module.parameters()]
    _fit(module, data, epochs=1, limit_train_batches=2, limit_val_batches=0)
    assert type(module.optimizers().optimizer).__name__.lower() == name
    assert all(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def test_step_scheduler_decays_the_learning_rate_every_lr_step_epochs():
    data = _classification(n=(64, 32))
    module = _module(data, lr=0.01, scheduler="step", lr_step=2, lr_gamma=0.5)
    _fit(module, data, epochs=5)
    assert [r["lr"] for r in module.history] == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])


def test_plateau_scheduler_cuts_the_learning_rate_when_val_loss_stalls():
    data = _classification(n=(64, 32))
    # a learning rate this small leaves the validation loss flat: a plateau from the start
    module = _module(data, optimizer="sgd", momentum=0.0, lr=1e-6, scheduler="plateau", lr_step=1, lr_gamma=0.1)  # fmt: skip
    _fit(module, data, epochs=4)
    assert [r["lr"] for r in module.history] == pytest.approx([1e-6, 1e-6, 1e-6, 1e-7])


# --- metrics --------------------------------------------------------------------------------

TASKS = {
    "classification": (_classification, "val_acc", {"val_loss", "val_acc"}),
    "regression": (_regression, "val_mse", {"val_loss", "val_mse", "val_mae"}),
    "tagging": (_tagging, "val_acc", {"val_loss", "val_acc"}),
    "language_model": (_language, "val_ppl", {"val_loss", "val_ppl", "val_bpc"}),
}


@pytest.mark.parametrize("task", list(TASKS))
def test_each_task_trains_and_its_validation_metric_improves(task, tmp_path):
    make, metric, val_names = TASKS[task]
    data = make()
    truncation = 4 if task in ("language_model", "tagging") else None
    module = _module(data, cell="gru", lr=2e-2, truncation=truncation)
    untrained = _val_metrics(module, data)[metric]
    trainer = _fit(module, data, epochs=4, logger=pl.loggers.CSVLogger(tmp_path))

    history = module.history
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    last = history[-1][metric]
    better = last > untrained + 0.1 if METRIC_MODES[metric] == "max" else last < 0.8 * untrained
    assert better, (untrained, [r[metric] for r in history])
    assert _val_metrics(module, data)[metric] == pytest.approx(last)  # validation == evaluation
    names = {"train_loss", "lr", "grad_norm_mean", "grad_norm_max", "grad_flow"}
    names |= val_names | {f"best_{n}" for n in val_names}
    assert names <= set(history[-1])
    assert names <= set(trainer.callback_metrics)  # logged through Lightning, given a logger
    best = [r[f"best_{metric}"] for r in history]
    assert best[-1] == (max if METRIC_MODES[metric] == "max" else min)(r[metric] for r in history)
    assert all(math.isfinite(r["grad_flow"]) for r in history)
    assert len(module.grad_flow_profile) == data.info.max_len
    if task == "language_model":
        assert history[-1]["val_ppl"] == pytest.approx(math.exp(history[-1]["val_loss"]))
        assert history[-1]["val_bpc"] == pytest.approx(history[-1]["val_loss"] / math.log(2))


@torch.no_grad()
def _val_metrics(module, data):
    """The validation metrics of `module` as it stands, through its own evaluation code."""
    sums, state = {}, None
    for batch in SequenceDataModule(data, 32, 0).val_dataloader():
        batch_sums, state = module.eval().evaluate_batch(batch, state)
        for key, value in batch_sums.items():
            sums[key] = sums.get(key, 0) + value
    module.train()
    return module.metrics(sums, "val_")


def test_default_monitor_by_task():
    assert default_monitor("classification") == ("val_acc", "max")
    assert default_monitor("tagging") == ("val_acc", "max")
    assert default_monitor("regression") == ("val_mse", "min")
    assert default_monitor("language_model") == ("val_ppl", "min")


def test_vanilla_rnn_gradient_vanishes_faster_than_lstm_gradient():
    torch.manual_seed(0)
    steps = 100
    x = torch.rand(16, steps, 2)
    batch = Batch(x, x[:, :, 0].sum(1, keepdim=True), None)
    info = DataInfo("regression", 2, None, 1, steps, 16)
    data = TaskData(info, *[None] * 3)
    flow = {cell: _module(data, cell=cell, hidden_size=32).eval().gradient_flow(batch) for cell in ("rnn", "lstm")}  # fmt: skip
    assert flow["rnn"] < -15  # about -20: |dL/dx_1| is 1e-20 of |dL/dx_100|
    assert flow["lstm"] > flow["rnn"] + 6  # about -7


# --- inference ------------------------------------------------------------------------------


def test_checkpoint_reloads_and_predicts_the_same(tmp_path):
    data = _tagging()
    module = _module(data, cell="lstm")
    trainer = _fit(module, data, epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    reloaded = SequenceModule.load_from_checkpoint(tmp_path / "model.ckpt").eval()
    batch = _batch(data.test, 5)
    with torch.no_grad():
        expected = module.eval()(batch.inputs, batch.lengths)
        torch.testing.assert_close(reloaded(batch.inputs, batch.lengths), expected)
    predictions = trainer.predict(module, SequenceDataModule(data, 32, 0).test_dataloader())
    assert predictions[0].shape == (32, data.test.inputs.shape[1], 3)
