"""Pre-split data files (`train:`, `val:`, `test:`) for every file source, through `load_task`
and the `rnn-tuner` command: what is learned comes from the training file, validation is carved
from it when no file is given, labels unseen in training are wrong predictions with one warning,
and no trial reads the test file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from models import Settings, evaluate, train
from models.data import UNSEEN, CsvData, NpzData, TaggedData, TextData, UnseenLabel, load_task
from models.errors import DataError
from tests.conftest import ROOT, write_study
from tuner.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def npz(path: Path, n: int, labels: list, length: int = 6, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    y = np.array([labels[i % len(labels)] for i in range(n)])
    x = rng.normal(size=(n, length, 2)).astype(np.float32)
    np.savez(path, X=x, y=y)
    return str(path)


def csv(path: Path, start: int, rows: int) -> str:
    lines = [f"{i},{2 * i}" for i in range(start, start + rows)]
    path.write_text("x,y\n" + "\n".join(lines) + "\n")
    return str(path)


def tagged(path: Path, sentences: list[list[tuple[str, str]]]) -> str:
    blocks = ["\n".join(f"{tok}\t{tag}" for tok, tag in s) for s in sentences]
    path.write_text("\n\n".join(blocks) + "\n")
    return str(path)


def three_npz(d: Path) -> NpzData:
    return NpzData(
        target="classification",
        train=npz(d / "train.npz", 40, ["a", "b"]),
        val=npz(d / "val.npz", 10, ["a", "b", "c"], length=9, seed=1),
        test=npz(d / "test.npz", 12, ["b", "d"], seed=2),
    )


# ---------------------------------------------------------------- each source from three files


def test_npz_from_three_files_keeps_each_file_as_its_split(tmp_path: Path) -> None:
    data = load_task(three_npz(tmp_path))
    assert [len(s.inputs) for s in (data.train, data.val, data.test)] == [40, 10, 12]
    assert data.info.labels == ("a", "b")  # from the training file only
    assert data.info.n_train == 40 and data.info.max_len == 9  # the longest of train and val
    assert data.val.targets.tolist() == [0, 1, UNSEEN] * 3 + [0]
    assert data.test.targets.tolist() == [1, UNSEEN] * 6
    assert data.unseen == (
        UnseenLabel("c", str(tmp_path / "val.npz"), 3),
        UnseenLabel("d", str(tmp_path / "test.npz"), 6),
    )


def test_csv_from_three_files_normalises_with_the_training_file(tmp_path: Path) -> None:
    cfg = CsvData(
        target="y", window=3, train=csv(tmp_path / "tr.csv", 0, 50),
        val=csv(tmp_path / "va.csv", 100, 10), test=csv(tmp_path / "te.csv", 200, 8),
    )  # fmt: skip
    data = load_task(cfg)
    assert [len(s.inputs) for s in (data.train, data.val, data.test)] == [47, 7, 5]
    x = np.arange(50)
    # the first validation window starts at x=100, in units of the training file's x
    assert data.val.inputs[0, 0, 0].item() == pytest.approx((100 - x.mean()) / x.std(), rel=1e-5)
    assert data.test.targets[-1, 0].item() == pytest.approx((2 * 207 - 2 * x.mean()) / (2 * x.std()), rel=1e-5)  # fmt: skip


def test_csv_series_files_carve_val_per_series_and_normalise_per_training_series(
    tmp_path: Path,
) -> None:
    rows = [f"{s},{t},{t + 100 * k}" for k, s in enumerate("ab") for t in range(20)]
    (tmp_path / "train.csv").write_text("id,t,y\n" + "\n".join(rows) + "\n")
    (tmp_path / "test.csv").write_text("id,t,y\n" + "\n".join(f"c,{t},{t}" for t in range(6)) + "\n")  # fmt: skip
    cfg = CsvData(target="y", series="id", time="t", window=3, normalize=False, val_fraction=0.25,
                  train=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"))  # fmt: skip
    data = load_task(cfg)
    # each series: 15 training rows (12 windows), its last 5 rows validate (2 windows)
    assert [len(s.inputs) for s in (data.train, data.val, data.test)] == [24, 4, 3]
    assert data.val.inputs[:, 0, 0].tolist() == [15, 16, 115, 116]
    with pytest.raises(DataError, match="test.csv: series 'c' has no rows in the training file"):
        load_task(CsvData(**{**vars(cfg), "normalize": "series"}))


def test_text_from_three_files_maps_unseen_tokens_to_unk(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("abab " * 40)
    (tmp_path / "valid.txt").write_text("abcz " * 10)
    (tmp_path / "test.txt").write_text("ba " * 30)
    cfg = TextData(train=str(tmp_path / "train.txt"), val=str(tmp_path / "valid.txt"),
                   test=str(tmp_path / "test.txt"), seq_len=8)  # fmt: skip
    data = load_task(cfg)
    assert data.info.vocab == ("<unk>", "a", "b", " ")
    assert [len(s.inputs) for s in (data.train, data.val, data.test)] == [200, 50, 90]
    assert data.val.inputs[:5].tolist() == [1, 2, 0, 0, 3]  # c and z: <unk>


def test_tagged_from_three_files_keeps_unseen_tags_as_wrong_answers(tmp_path: Path) -> None:
    train = tagged(tmp_path / "train.tsv", [[("the", "DET"), ("dog", "NOUN")]] * 8)
    val = tagged(tmp_path / "val.tsv", [[("the", "DET"), ("$", "SYM"), ("cat", "NOUN")]] * 2)
    data = load_task(TaggedData(train=train, val=val))  # no test file
    assert data.test is None
    assert data.info.labels == ("DET", "NOUN") and data.info.max_len == 3
    assert data.val.targets.tolist() == [[0, UNSEEN, 1]] * 2
    assert data.val.inputs[0, 1, 0].item() == data.info.vocab.index("<unk>")
    assert data.unseen == (UnseenLabel("SYM", val, 2),)


# ---------------------------------------------------------------- carving and leaving out


def test_val_is_carved_from_the_training_file_by_each_source_rule(tmp_path: Path) -> None:
    path = npz(tmp_path / "train.npz", 40, ["a", "b"])
    carved = load_task(NpzData(target="classification", train=path, val_fraction=0.25, seed=3))
    assert (len(carved.train.inputs), len(carved.val.inputs), carved.test) == (30, 10, None)
    everything = np.load(path)["X"]
    rows = {r.tobytes() for r in everything}
    assert {r.numpy().tobytes() for r in carved.val.inputs} <= rows  # a shuffled subset ...
    assert not torch.equal(carved.val.inputs, torch.from_numpy(everything[30:]))  # ... not the end

    series = load_task(CsvData(target="y", window=3, normalize=False, train=csv(tmp_path / "s.csv", 0, 100), val_fraction=0.2))  # fmt: skip
    assert series.val.inputs[0, 0, 0].item() == 80  # the last 20 rows validate
    (tmp_path / "t.txt").write_text("xz" * 40 + "y" * 20)
    text = load_task(TextData(train=str(tmp_path / "t.txt"), seq_len=4, val_fraction=0.2))
    assert text.info.vocab == ("<unk>", "x", "z")  # the carved-off end (y...) is not training text
    assert (text.val.inputs == 0).all()


def test_trials_never_read_the_test_file(tmp_path: Path) -> None:
    cfg = three_npz(tmp_path)
    with_test = load_task(cfg)
    Path(cfg.test).unlink()
    without = load_task(cfg, with_test=False)
    assert without.test is None
    assert torch.equal(without.val.targets, with_test.val.targets)
    assert without.unseen == with_test.unseen[:1]  # only the validation file's
    with pytest.raises(DataError, match="test.npz: no such file"):
        load_task(cfg)


def test_unseen_labels_count_as_wrong_and_stay_out_of_the_loss(tmp_path: Path) -> None:
    data = load_task(three_npz(tmp_path))
    result = train(Settings(hidden_size=4, max_epochs=1, batch_size=8, patience=None), data)
    metrics = evaluate(result.module, data, "test")  # half the test labels ("d") are unseen
    assert metrics["test_acc"] <= 0.5
    assert np.isfinite(metrics["test_loss"])
    known = load_task(NpzData(target="classification", train=str(tmp_path / "train.npz"), val=str(tmp_path / "val.npz"), test=str(tmp_path / "train.npz")))  # fmt: skip
    assert (
        evaluate(result.module, known, "test")["test_acc"] > 0
    )  # the same model scores seen labels


# ---------------------------------------------------------------- the command


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def study(task: dict, name: str = "presplit", **extra) -> dict:
    return {
        "study": {"name": name},
        "task": task,
        "fixed": {"batch_size": 8, "hidden_size": 4, "patience": None},
        "search": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        "objective": "val_acc",
        "pruner": {"name": "none"},
        "budget": {"n_trials": 2, "max_epochs": 1},
        **extra,
    }


BAD_TASKS = {
    "path and train": (
        {"path": "a.npz", "train": "a.npz"},
        "task: task.path and task.train are both given",
    ),
    "neither": ({}, "task: task.path (one file, split by fractions) or task.train"),
    "val without train": ({"val": "a.npz"}, "task: task.val needs task.train"),
    "missing val file": (
        {"train": "a.npz", "val": "nope.npz"},
        "task.val: data file not found: nope.npz",
    ),  # fmt: skip
    "missing test file": (
        {"train": "a.npz", "test": "gone.npz"},
        "task.test: data file not found: gone.npz",
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", BAD_TASKS)
def test_validate_names_a_bad_choice_of_files(case: str, workdir: Path) -> None:
    npz(workdir / "a.npz", 20, [0, 1])
    keys, message = BAD_TASKS[case]
    task = {"source": "npz", "target": "classification", **keys}
    result = run_cli("validate", str(write_study(workdir / "s.yaml", study(task))))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_validate_reads_every_file_and_warns_once_about_unseen_labels(workdir: Path) -> None:
    three_npz(workdir)
    task = {"source": "npz", "target": "classification", "train": "train.npz", "val": "val.npz", "test": "test.npz"}  # fmt: skip
    study_file = write_study(workdir / "s.yaml", study(task))
    result = run_cli("validate", str(study_file))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: 2 label(s) in validation/test data never occur in the training data and count "
        "as wrong predictions: 'c' x3 in val.npz; 'd' x6 in test.npz"
    ]
    np.savez(workdir / "wide.npz", X=np.zeros((3, 4, 5)), y=np.array(["a", "b", "a"]))
    write_study(study_file, study({**task, "test": "wide.npz"}))
    result = run_cli("validate", str(study_file))
    assert result.exit_code == 2 and "wide.npz: X has 5 features per step" in result.output


def rnn_tuner(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """The command as its own process, so nothing read by an earlier command is still in memory."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RNN_TUNER_STORAGE", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "tuner", *args], cwd=workdir, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_trials_run_without_the_test_file_and_only_retrain_misses_it(workdir: Path) -> None:
    three_npz(workdir)
    task = {"source": "npz", "target": "classification", "train": "train.npz", "val": "val.npz", "test": "test.npz"}  # fmt: skip
    study_file = write_study(workdir / "s.yaml", study(task))
    assert rnn_tuner(workdir, "validate", "s.yaml").returncode == 0
    (workdir / "test.npz").unlink()

    ran = rnn_tuner(workdir, "run", "s.yaml")
    assert ran.returncode == 0, ran.stderr
    assert "2 complete" in ran.stdout + ran.stderr
    assert ran.stderr.count("warning:") == 1 and "'c' x3 in val.npz" in ran.stderr
    assert "test.npz" not in ran.stderr  # run never looked for it

    retrained = rnn_tuner(workdir, "retrain", "presplit", "--study-file", str(study_file))
    assert retrained.returncode == 2
    assert "task.test: data file not found: test.npz" in retrained.stderr
    assert "Traceback" not in retrained.stderr


@pytest.mark.slow
def test_retrain_without_a_test_file_says_so(workdir: Path) -> None:
    three_npz(workdir)
    task = {"source": "npz", "target": "classification", "train": "train.npz", "val": "val.npz"}
    write_study(workdir / "s.yaml", study(task, name="notest"))
    assert run_cli("run", "s.yaml").exit_code == 0
    result = run_cli("retrain", "notest")
    assert result.exit_code == 0, result.output
    assert "test       none: the study file names no task.test file" in result.output
