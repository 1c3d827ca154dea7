"""Many series in one long table (CSV or Parquet), multi-step forecasts and the naive baselines,
through `load_task`, `train`/`evaluate` and `rnn-tuner validate`/`run`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from models import Settings, evaluate, train
from models.data import CsvData, SineData, TaskData, load_task
from models.errors import DataError
from tests.conftest import ROOT, STUDIES, default_study, tiny_study, write_study
from tuner.cli import main

SLOPES = {"a": 1, "b": 2, "c": 5, "short": 1}  # series name -> sales = 1000 * code + slope * t


def long_table(lengths: dict[str, int], seed: int = 0) -> pd.DataFrame:
    """One row per (series, day), rows shuffled: sales of series k at step t is 1000 * k + slope * t,
    so a value tells its series and its step."""
    start = dt.date(2021, 1, 1)
    rows = [
        (name, str(start + dt.timedelta(days=t)), 1000 * k + SLOPES[name] * t, t % 7)
        for k, (name, n) in enumerate(lengths.items(), start=1)
        for t in range(n)
    ]
    frame = pd.DataFrame(rows, columns=["store", "date", "sales", "promo"])
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def write_table(path: Path, frame: pd.DataFrame) -> str:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return str(path)


def series_cfg(path: str, **overrides) -> CsvData:
    keys = dict(series="store", time="date", target="sales", features=("sales", "promo"),
                window=4, horizon=3, normalize=False, val_fraction=0.2, test_fraction=0.2)  # fmt: skip
    return CsvData(path=path, **{**keys, **overrides})


def decode(values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Raw sales -> (series code, step) under SLOPES."""
    v = values.double().numpy().round().astype(int)
    code = v // 1000
    slope = np.vectorize(lambda k: list(SLOPES.values())[k - 1])(code)
    return code, (v - 1000 * code) // slope


LENGTHS = {"a": 40, "b": 50, "c": 60}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_windows_stay_inside_one_series_and_the_split_is_in_time(tmp_path: Path, suffix: str):
    data = load_task(series_cfg(write_table(tmp_path / f"sales{suffix}", long_table(LENGTHS))))
    assert (data.info.output_size, data.info.input_size, data.info.max_len) == (3, 2, 4)
    # per series: n - 2 * round(0.2 n) training rows, round(0.2 n) each for val and test;
    # every part loses window + horizon - 1 = 6 rows of windows
    parts = {n: (n - 2 * round(0.2 * n), round(0.2 * n)) for n in LENGTHS.values()}
    assert len(data.train.inputs) == sum(t - 6 for t, _ in parts.values())
    assert len(data.val.inputs) == len(data.test.inputs) == sum(v - 6 for _, v in parts.values())
    last_step: dict[str, dict[int, int]] = {}
    for name, split in (("train", data.train), ("val", data.val), ("test", data.test)):
        codes, steps = decode(torch.cat([split.inputs[:, :, 0], split.targets], dim=1))  # (N, 7)
        assert (codes == codes[:, :1]).all(), f"a {name} window crosses series"
        assert (np.diff(steps, axis=1) == 1).all(), f"a {name} window skips or reorders steps"
        assert torch.equal(split.inputs[:, :, 1], torch.from_numpy(steps[:, :4] % 7).float())
        last_step[name] = {int(k): int(s) for k, s in zip(codes[:, 0], steps.max(1), strict=True)}
        first = {int(k): int(s) for k, s in zip(codes[::-1, 0], steps[::-1].min(1), strict=True)}
        for code, n in enumerate(LENGTHS.values(), start=1):
            train, val = parts[n]
            start = {"train": 0, "val": train, "test": train + val}[name]
            assert first[code] == start  # each part begins where the one before it ended
            end = {"train": train, "val": train + val, "test": n}[name]
            assert last_step[name][code] == end - 1  # and no window reaches past its part


def test_csv_and_parquet_of_one_table_give_the_same_tensors(tmp_path: Path):
    frame = long_table(LENGTHS, seed=3)
    a = load_task(series_cfg(write_table(tmp_path / "t.csv", frame), normalize="series"))
    b = load_task(series_cfg(write_table(tmp_path / "t.parquet", frame), normalize="series"))
    assert a.info == b.info
    for x, y in zip(tensors(a), tensors(b), strict=True):
        assert torch.equal(x, y)


def test_typed_parquet_columns_read_like_their_csv_text(tmp_path: Path):
    # Parquet keeps types: dates as timestamps, series ids as integers; the order and the windows
    # must not depend on it.
    frame = long_table(LENGTHS, seed=5)
    typed = frame.assign(
        date=pd.to_datetime(frame["date"]), store=frame["store"].map({"a": 7, "b": 3, "c": 5})
    )
    a = load_task(series_cfg(write_table(tmp_path / "t.csv", frame)))
    b = load_task(series_cfg(write_table(tmp_path / "t.parquet", typed)))
    assert a.info == b.info
    for x, y in zip(tensors(a), tensors(b), strict=True):
        assert torch.equal(x, y)
    steps = frame.assign(date=(pd.to_datetime(frame["date"]) - pd.Timestamp("2021-01-01")).dt.days)
    c = load_task(series_cfg(write_table(tmp_path / "steps.csv", steps)))  # time as step numbers
    assert torch.equal(a.val.targets, c.val.targets)


def tensors(data: TaskData) -> list[torch.Tensor]:
    return [t for s in (data.train, data.val, data.test) for t in (s.inputs, s.targets)]


def test_series_normalisation_uses_each_series_own_training_rows(tmp_path: Path):
    path = write_table(tmp_path / "t.csv", long_table(LENGTHS))
    raw = load_task(series_cfg(path))
    scaled = load_task(series_cfg(path, normalize="series"))
    codes, _ = decode(raw.val.inputs[:, 0, 0])
    for code, n in enumerate(LENGTHS.values(), start=1):
        slope = list(SLOPES.values())[code - 1]
        train = 1000 * code + slope * np.arange(n - 2 * round(0.2 * n))  # the training rows
        rows = codes == code
        expected = (raw.val.targets[rows].double() - train.mean()) / train.std()
        assert torch.allclose(scaled.val.targets[rows].double(), expected, atol=1e-5)
    pooled = load_task(series_cfg(path, normalize=True))  # one mean and std for all series
    assert not torch.allclose(pooled.val.targets, scaled.val.targets)


def test_naive_baselines_match_their_values_by_hand(tmp_path: Path):
    # Series a rises by 1 per step, b by 2, both 40 rows: each split has as many windows of a as
    # of b. Naive (last value) misses step h of the horizon by h * slope: MSE (1 + 4 + 9) / 3 for
    # a, 4 times that for b; the mean is 35 / 3. Seasonal naive with season 2 takes steps h = 1, 2
    # from one season back and h = 3 from two: misses 2, 2, 4 (times the slope), MSE 8 and 32.
    path = write_table(tmp_path / "t.csv", long_table({"a": 40, "b": 40}))
    info = load_task(series_cfg(path, season=2)).info
    for split in ("train", "val", "test"):
        assert info.baselines[f"{split}_mse_naive"] == pytest.approx(35 / 3)
        assert info.baselines[f"{split}_mse_snaive"] == pytest.approx(20)
    # A season as long as the horizon repeats the value three steps back: every miss is 3 * slope.
    season3 = load_task(series_cfg(path, season=3)).info.baselines
    assert season3["val_mse_snaive"] == pytest.approx((9 + 36) / 2)
    # Normalised targets: the baselines are in the same units as the model's MSE.
    scaled = load_task(series_cfg(path, normalize=True)).info.baselines
    train = np.concatenate([1000 + np.arange(24), 2000 + 2 * np.arange(24)])
    assert scaled["val_mse_naive"] == pytest.approx(35 / 3 / train.var())
    assert "val_mse_snaive" not in scaled  # no season, no seasonal baseline


def test_sine_predicts_the_next_values_and_knows_its_naive_baseline():
    data = load_task(SineData(seq_len=20, horizon=3, n_train=64, n_val=16, n_test=16))
    assert data.info.output_size == 3 and data.val.targets.shape == (16, 3)
    last = data.val.inputs[:, -1, :]  # (N, 1), broadcast over the horizon
    mse = float(((data.val.targets - last) ** 2).mean())
    assert data.info.baselines["val_mse_naive"] == pytest.approx(mse, rel=1e-6)


def study_task(path: str, **overrides) -> dict:
    """The `task:` block of a study on a `long_table` file."""
    return {"source": "csv", "path": path, "series": "store", "time": "date", "target": "sales",
            "window": 4, "horizon": 3, "val_fraction": 0.2, "test_fraction": 0.2, **overrides}  # fmt: skip


def validate(path: Path):
    return CliRunner().invoke(main, ["validate", str(path)])


def test_a_long_table_study_validates(tmp_path: Path):
    path = write_table(tmp_path / "sales.parquet", long_table(LENGTHS))
    task = study_task(path, season=2, normalize="series")
    study = tiny_study(task=task, fixed={"batch_size": 16, "patience": None})
    result = validate(write_study(tmp_path / "s.yaml", study))
    assert result.exit_code == 0, result.output


BAD_TABLES = {
    "missing column": ({"series": "shop"}, None, ["task.series", "'shop'", "store, date, sales"]),
    "non-numeric target": (
        {},
        lambda f: f.assign(sales=f["sales"].astype(object).where(f.index != 7, "n/a")),
        ["task.target", "line 9", "'sales'", "'n/a' is not a number"],
    ),
    "too-short series": (
        {},
        lambda f: pd.concat([f, long_table({"short": 9})]),
        ["series 'short' (9 rows)", "task.window + task.horizon = 7", "drop this series"],
    ),
    "time neither number nor date": (
        {},
        lambda f: f.assign(date=f["date"].where(f.index != 3, "tomorrow")),
        ["line 5, column 'date' (task.time): 'tomorrow' is not a number or a date", "ISO 8601"],
    ),
    "empty series id": (
        {},
        lambda f: f.assign(store=f["store"].where(f.index != 0, None)),
        ["line 2, column 'store' (task.series): an empty cell"],
    ),
    "horizon below 1": (
        {"horizon": 0},
        None,
        ["task.horizon: Input should be greater than or equal to 1 (got 0)"],
    ),
    "season longer than the window": ({"season": 7}, None, ["task.season (7)", "task.window (4)"]),
    "same time twice": (
        {},
        lambda f: pd.concat([f, f.iloc[[0]]]),
        ["task.time", "line 152", "the same time as", "line 2"],
    ),
}


@pytest.mark.parametrize("case", BAD_TABLES)
def test_bad_tables_fail_validate_with_exit_2_naming_the_key(tmp_path: Path, case: str):
    overrides, edit, fragments = BAD_TABLES[case]
    frame = long_table(LENGTHS)
    path = write_table(tmp_path / "sales.csv", edit(frame) if edit else frame)
    result = validate(
        write_study(tmp_path / "s.yaml", tiny_study(task=study_task(path, **overrides)))
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output


def test_parquet_errors_name_the_row(tmp_path: Path):
    frame = long_table(LENGTHS)
    frame.loc[6, "sales"] = np.nan
    with pytest.raises(DataError, match=r"row 7, column 'sales' \(task.target\): an empty cell"):
        load_task(series_cfg(write_table(tmp_path / "t.parquet", frame)))
    (tmp_path / "bad.parquet").write_text("store,sales\na,1\n")
    with pytest.raises(DataError, match="bad.parquet: not a readable Parquet file"):
        load_task(series_cfg(str(tmp_path / "bad.parquet")))


def test_a_forecast_study_reports_the_naive_baselines_and_optimises_relative_mse(workdir: Path):
    path = write_table(workdir / "sales.parquet", long_table(LENGTHS))
    task = study_task(path, season=2, normalize="series")
    study = tiny_study(name="stores", task=task, objective={"metric": "val_mse_rel"},
                       budget={"n_trials": 2, "max_epochs": 2})  # fmt: skip
    result = CliRunner().invoke(main, ["run", str(write_study(workdir / "s.yaml", study))])
    assert result.exit_code == 0, result.output

    baselines = load_task(
        CsvData(**{k: v for k, v in task.items() if k != "source"})
    ).info.baselines
    trials = default_study("stores", workdir).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    experiment = client.get_experiment_by_name("stores")
    runs = client.search_runs([experiment.experiment_id], "tags.`rnn_tuner.role` = 'trial'")
    assert len(runs) == 2
    for run in runs:
        history = {k: [m.value for m in client.get_metric_history(run.info.run_id, k)]
                   for k in ("val_mse", "val_mse_naive", "val_mse_snaive", "val_mse_rel")}  # fmt: skip
        assert history["val_mse_naive"] == pytest.approx([baselines["val_mse_naive"]] * 2)
        assert history["val_mse_snaive"] == pytest.approx([baselines["val_mse_snaive"]] * 2)
        best_naive = min(baselines["val_mse_naive"], baselines["val_mse_snaive"])
        assert history["val_mse_rel"] == pytest.approx([m / best_naive for m in history["val_mse"]])
        trial = trials[int(run.data.tags["rnn_tuner.trial"])]
        assert trial.value == pytest.approx(min(history["val_mse_rel"]))


def test_train_monitors_relative_mse_and_evaluate_scores_the_test_split(tmp_path: Path):
    path = write_table(tmp_path / "t.csv", long_table(LENGTHS))
    data = load_task(series_cfg(path, normalize=True))
    result = train(
        Settings(hidden_size=8, max_epochs=2, batch_size=16), data, monitor="val_mse_rel"
    )
    row = result.history[-1]
    assert row["val_mse_rel"] == pytest.approx(
        row["val_mse"] / data.info.baselines["val_mse_naive"]
    )
    test = evaluate(result.module, data, "test")
    assert test["test_mse_naive"] == data.info.baselines["test_mse_naive"]
    assert test["test_mse_rel"] == pytest.approx(test["test_mse"] / test["test_mse_naive"])
    with pytest.raises(ValueError, match="val_mse_snaive"):  # no season, no seasonal baseline
        train(Settings(max_epochs=1), data, monitor="val_mse_snaive")


@pytest.mark.parametrize(
    "source,objective,message",
    [
        ("csv", "val_mse_snaive", "objective.metric: val_mse_snaive needs task.season"),
        ("adding", "val_mse_rel", "objective.metric: val_mse_rel needs a forecast (source csv or sine)"),
    ],
)  # fmt: skip
def test_a_naive_metric_the_data_cannot_score_is_a_study_file_error(
    tmp_path, source, objective, message
):
    task = study_task(write_table(tmp_path / "t.csv", long_table(LENGTHS)))
    if source == "adding":
        task = {"source": "adding", "seq_len": 10, "n_train": 64, "n_val": 16, "n_test": 16}
    result = validate(
        write_study(tmp_path / "s.yaml", tiny_study(task=task, objective={"metric": objective}))
    )
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.slow
def test_the_shipped_stores_study_runs_a_two_trial_smoke(workdir: Path):
    study = yaml.safe_load((STUDIES / "forecast-stores.yaml").read_text())
    study["task"]["path"] = str(ROOT / study["task"]["path"])
    study["budget"] = {"n_trials": 2, "max_epochs": 2}
    result = CliRunner().invoke(main, ["run", str(write_study(workdir / "s.yaml", study))])
    assert result.exit_code == 0, result.output
    trials = default_study("forecast-stores", workdir).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(0 < t.value < 10 for t in trials)  # val_mse_rel: a ratio near 1, not a raw MSE
