"""Learning-rate schedules and initialisation: the named shapes, warm-up, any torch scheduler by
name (its options checked at `validate`), and `init:` choices, each through the public entry points
(`train`, `SequenceNet`, the study file and `rnn-tuner validate`)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from models import AddingData, CopyData, SequenceNet, Settings, TextData, train
from models.data import task_data
from tests.conftest import tiny_study, write_study
from tuner.cli import main
from tuner.config import StudyFileError, parse_study

# torch 2.13 deprecates a pytree class that Lightning 2.6 still checks for (train() hides it too)
pytestmark = pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\):FutureWarning")

QUICK = {"hidden_size": 4, "batch_size": 16, "patience": None, "optimizer": "sgd", "momentum": 0.0}


@pytest.fixture(scope="module")
def data():
    return task_data(AddingData(seq_len=5, n_train=32, n_val=16, n_test=16))


def lrs(data, **settings) -> list[float]:
    """The learning rate of every epoch of a real training run."""
    return [row["lr"] for row in train(Settings(**{**QUICK, **settings}), data).history]


# --- named shapes -----------------------------------------------------------------------------


def test_constant_then_decay_holds_lr_for_decay_start_epochs_then_multiplies_each_epoch(data):
    lr = 0.1
    got = lrs(data, lr=lr, scheduler="constant-then-decay", decay_start=4, lr_gamma=0.5, max_epochs=6)  # fmt: skip
    assert got == [lr, lr, lr, lr, lr / 2, lr / 4]  # exactly: the Zaremba et al. schedule


def test_warm_up_ramps_linearly_to_lr_then_the_schedule_starts(data):
    got = lrs(data, lr=0.4, warmup_epochs=3, max_epochs=5)
    assert got == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4])
    # in front of a shape, whose epochs count from the end of the warm-up
    got = lrs(data, lr=0.4, warmup_epochs=1, scheduler="constant-then-decay", decay_start=2, lr_gamma=0.5, max_epochs=5)  # fmt: skip
    assert got == pytest.approx([0.2, 0.4, 0.4, 0.2, 0.1])


def test_warm_up_goes_in_front_of_a_torch_scheduler_and_of_plateau(data):
    got = lrs(data, lr=0.4, warmup_epochs=1, scheduler="ExponentialLR", scheduler_options={"gamma": 0.5}, max_epochs=4)  # fmt: skip
    assert got == pytest.approx([0.2, 0.4, 0.2, 0.1])
    # a rate this small leaves the validation loss flat: after the warm-up, a plateau at once
    got = lrs(data, lr=1e-7, warmup_epochs=2, scheduler="plateau", lr_step=1, lr_gamma=0.1, max_epochs=6)  # fmt: skip
    assert got[:3] == pytest.approx([1e-7 / 3, 2e-7 / 3, 1e-7])
    assert got[-1] == pytest.approx(1e-8)


def test_cosine_falls_from_lr_to_its_floor_at_the_last_epoch(data):
    got = lrs(data, lr=1.0, scheduler="cosine", lr_floor=0.1, max_epochs=5)
    half = [0.1 + 0.9 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)]
    assert got == pytest.approx(half)
    assert got[0] == 1.0 and got[-1] == pytest.approx(0.1)
    # after a warm-up, the cosine spans the epochs that are left
    got = lrs(data, lr=1.0, warmup_epochs=1, scheduler="cosine", lr_floor=0.0, max_epochs=4)
    assert got == pytest.approx([0.5, 1.0, 0.5, 0.0], abs=1e-12)


def test_a_torch_scheduler_steps_once_per_epoch_with_its_options(data):
    got = lrs(data, lr=0.3, scheduler="MultiStepLR", scheduler_options={"milestones": [1, 3], "gamma": 0.1}, max_epochs=4)  # fmt: skip
    assert got == pytest.approx([0.3, 0.03, 0.03, 0.003])


def test_an_unusable_scheduler_is_refused_when_training_starts(data):
    with pytest.raises(ValueError, match="scheduler_options.gama: StepLR takes no option 'gama'"):
        lrs(data, scheduler="StepLR", scheduler_options={"step_size": 1, "gama": 0.5})


# --- the study file: shapes searchable, mapping forms, errors at validate ----------------------


def test_schedule_settings_are_searchable_like_any_other():
    cfg = parse_study(
        tiny_study(
            fixed={"scheduler": "constant-then-decay", "batch_size": 32},
            search={
                "decay_start": {"type": "int", "low": 2, "high": 6},
                "lr_gamma": {"type": "float", "low": 0.3, "high": 0.9},
                "warmup_epochs": {"type": "int", "low": 0, "high": 2},
                "lr_floor": {"type": "float", "low": 0.0, "high": 0.5},
            },
        )
    )
    assert set(cfg.search) == {"decay_start", "lr_gamma", "warmup_epochs", "lr_floor"}


def test_the_mapping_forms_become_flat_settings():
    cfg = parse_study(
        tiny_study(
            fixed={
                "scheduler": {"name": "OneCycleLR", "options": {"max_lr": 0.1, "total_steps": 2}},
                "init": {"uniform": 0.08},
            }
        )
    )
    settings = cfg.base_settings()
    assert (settings.scheduler, settings.scheduler_options) == ("OneCycleLR", {"max_lr": 0.1, "total_steps": 2})  # fmt: skip
    assert (settings.init, settings.init_scale) == ("uniform", 0.08)
    assert "OneCycleLR" in str(settings.to_dict())  # flat and printable: MLflow params


def validate(tmp_path: Path, **blocks):
    path = write_study(tmp_path / "s.yaml", tiny_study(**blocks))
    return CliRunner().invoke(main, ["validate", str(path)])


def test_a_scheduler_option_the_class_does_not_take_is_a_validate_error_naming_the_valid_ones(
    tmp_path: Path,
):
    result = validate(
        tmp_path, fixed={"scheduler": {"name": "StepLR", "options": {"step_size": 2, "gama": 0.5}}}
    )
    assert result.exit_code == 2, result.output
    assert "fixed.scheduler_options.gama: StepLR takes no option 'gama'" in result.output
    assert "valid: step_size, gamma" in result.output
    assert "Traceback" not in result.output


def test_scheduler_mistakes_are_all_reported_at_validate(tmp_path: Path):
    # a missing option, a value torch refuses, an unknown name among the searched choices
    result = validate(
        tmp_path,
        fixed={"scheduler": "CosineAnnealingLR", "batch_size": 32},
        search={
            "scheduler": {"type": "categorical", "choices": ["cosine", "cosin"]},
        },
    )
    assert result.exit_code == 2
    assert "search.scheduler: also in fixed" in result.output
    result = validate(tmp_path, fixed={"scheduler": "CosineAnnealingLR"})
    assert "fixed.scheduler: CosineAnnealingLR needs option T_max" in result.output
    result = validate(tmp_path, fixed={"scheduler": "StepLR", "scheduler_options": {"step_size": 2, "gamma": "half"}})  # fmt: skip
    assert result.exit_code == 2
    assert "fixed.scheduler_options: StepLR refused them: TypeError" in result.output
    result = validate(tmp_path, fixed={"scheduler": "ExponentialLR", "scheduler_options": {"gamma": -0.5}})  # fmt: skip
    assert (
        "fixed.scheduler_options: ExponentialLR gives the learning rate -0.0005 in epoch 1"
        in result.output
    )
    result = validate(
        tmp_path,
        search={"scheduler": {"type": "categorical", "choices": ["cosine", "cosin", "LambdaLR"]}},
    )
    out = result.output
    assert "search.scheduler.choices.1: unknown scheduler 'cosin'; valid: none, step" in out
    assert "constant-then-decay, cosine" in out and "OneCycleLR" in out
    assert "search.scheduler.choices.2: LambdaLR takes a function" in out
    assert "choices.0" not in out


def test_options_without_a_torch_scheduler_and_bad_init_are_errors(tmp_path: Path):
    with pytest.raises(StudyFileError) as e:
        parse_study(tiny_study(search={"init": {"type": "categorical", "choices": ["default", {"uniform": 0.1}]}}))  # fmt: skip
    assert "search.init.choices.1: a choice is null, a bool, a number or a string" in str(e.value)
    assert "choices.0" not in str(e.value)
    with pytest.raises(StudyFileError) as e:
        parse_study(tiny_study(fixed={"scheduler": "cosine", "scheduler_options": {"T_max": 3}}))
    assert (
        "fixed.scheduler_options: options are for a torch.optim.lr_scheduler class; `cosine` takes"
        in str(e.value)
    )
    with pytest.raises(StudyFileError) as e:
        parse_study(tiny_study(fixed={"init": {"uniform": 0.1, "orthogonal": True}}))
    assert "fixed.init: " in str(e.value) and "{uniform: a}" in str(e.value)
    with pytest.raises(StudyFileError) as e:
        parse_study(tiny_study(fixed={"init": "xavier", "init_scale": 0, "decay_start": 0}))
    msg = str(e.value)
    assert "fixed.init: Input should be 'default', 'uniform' or 'orthogonal'" in msg
    assert "fixed.init_scale: init_scale must be > 0" in msg
    assert "fixed.decay_start: decay_start must be >= 1" in msg


# --- initialisation ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_info():
    return task_data(CopyData(n_symbols=6, copy_len=4, delay=3, n_train=32, n_val=8, n_test=8)).info


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_uniform_init_draws_every_parameter_from_plus_minus_a(cell, token_info):
    a = 0.05
    torch.manual_seed(0)
    settings = Settings(cell=cell, num_layers=2, layer_norm=True, init="uniform", init_scale=a)
    net = SequenceNet(settings, token_info)
    values = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert values.abs().max() <= a
    assert values.abs().max() > 0.9 * a and values.min() < 0 < values.max()  # spread, not shrunk
    for name, p in net.named_parameters():  # every tensor, biases and norms included
        assert p.abs().max() <= a and p.std() > a / 4, name


def test_orthogonal_init_makes_each_gate_recurrent_matrix_orthogonal(token_info):
    h = 6
    net = SequenceNet(Settings(cell="lstm", hidden_size=h, init="orthogonal"), token_info)
    w = net.rnn.weight_hh_l0.detach()  # (4h, h): input, forget, cell, output gates
    for gate in w.split(h):
        assert torch.allclose(gate @ gate.T, torch.eye(h), atol=1e-5)
    assert torch.all(net.rnn.bias_ih_l0.detach()[h : 2 * h] == 1.0)  # forget gates still open


def test_default_init_is_pytorchs_with_the_forget_gate_open(token_info):
    h = 6
    net = SequenceNet(Settings(cell="lstm", hidden_size=h), token_info)
    bias = net.rnn.bias_ih_l0.detach()
    assert torch.all(bias[h : 2 * h] == 1.0)
    assert not torch.any(bias[:h] == 1.0)  # the other gates keep PyTorch's draw
    bound = 1 / math.sqrt(h)  # PyTorch's U[-1/sqrt(h), 1/sqrt(h)] for every other entry
    assert net.rnn.weight_hh_l0.abs().max() <= bound


def test_uniform_init_trains_a_word_language_model(tmp_path: Path):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat .\nthe dog sat on the log .\n" * 40)
    data = task_data(TextData(path=str(text), level="word", seq_len=5))
    # Zaremba et al.'s steps for a loss summed over 20 steps: lr 1, clip 5; per token: 20, 0.25
    zaremba = {"init": "uniform", "init_scale": 0.1, "lr": 20.0, "clip_norm": 0.25}
    quick = {**QUICK, "hidden_size": 32, "batch_size": 8, "max_epochs": 4}
    result = train(Settings(**quick, **zaremba), data)
    assert result.history[-1]["val_loss"] < 0.5 * result.history[0]["val_loss"]


def test_the_zaremba_study_writes_the_papers_small_recipe():
    """Zaremba et al. 2014, section 4.1, the small non-regularised model."""
    from tests.conftest import STUDIES
    from tuner.config import load_study_file

    cfg = load_study_file(STUDIES / "zaremba-small.yaml")
    s = cfg.base_settings()
    assert (s.cell, s.num_layers, s.hidden_size, s.embedding_dim) == ("lstm", 2, 200, 200)
    assert (s.init, s.init_scale) == ("uniform", 0.1)
    assert (s.optimizer, s.momentum, s.lr, s.clip_norm) == ("sgd", 0.0, 1.0, 5.0)
    assert (s.scheduler, s.decay_start, s.lr_gamma, s.warmup_epochs) == ("constant-then-decay", 4, 0.5, 0)  # fmt: skip
    assert (s.max_epochs, s.patience, s.batch_size, cfg.task.seq_len) == (13, None, 20, 20)
    assert (s.dropout, s.input_dropout, s.output_dropout, s.truncation) == (0, 0, 0, None)
    assert (cfg.task.level, s.weight_decay, s.l1) == ("word", 0, 0)
    assert not cfg.search
