"""The real-data studies (studies/real-*.yaml): each validates, and runs two short trials on its
committed data files. The files are what studies/data/real.py converts from the packages that
ship the data sets; with those packages installed (the `real-data` extra), a test rebuilds them
and compares."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import ROOT, STUDIES, write_study
from tuner.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

REAL = sorted(STUDIES.glob("real-*.yaml"))
FILE_KEYS = ("path", "train", "val", "test")


def shrunk(path: Path) -> dict:
    """The study with its files made absolute, two trials of one epoch, every searched int
    narrowed to its two lowest values (one value is a fixed setting, which validate asks for)
    and every categorical pinned to one choice, so the smoke trains small networks."""
    study = yaml.safe_load(path.read_text())
    for key in FILE_KEYS:
        if key in study["task"]:
            study["task"][key] = str(ROOT / study["task"][key])
    for name, dist in study["search"].items():
        if dist["type"] == "int":
            dist["high"] = min(dist["high"], dist["low"] + dist.get("step", 1))
        elif dist["type"] == "categorical":  # the largest batch: fewer steps per epoch
            dist["choices"] = (
                [max(dist["choices"])] if name == "batch_size" else dist["choices"][:1]
            )
    study["budget"] = {"n_trials": 2, "max_epochs": 1}
    return study


TEXT_HEAD = 50_000  # characters of each text file the smoke trains on: a few batches per epoch


def text_heads(study: dict, directory: Path) -> dict:
    """The study on copies of its text files cut to their first lines (TEXT_HEAD characters):
    the full corpus takes minutes per epoch, and the smoke is about the data path, not the fit."""
    task = study["task"]
    if task["source"] != "text":
        return study
    for key in FILE_KEYS:
        if key in task:
            text = Path(task[key]).read_text(encoding="utf-8")
            head = directory / Path(task[key]).name
            head.write_text(text[: text.rindex("\n", 0, TEXT_HEAD) + 1], encoding="utf-8")
            task[key] = str(head)
    return study


@pytest.mark.slow
@pytest.mark.parametrize("path", REAL, ids=lambda p: p.stem)
def test_a_real_data_study_validates_and_runs_two_trials(path: Path, workdir: Path) -> None:
    study_file = write_study(workdir / path.name, shrunk(path))
    validated = CliRunner().invoke(main, ["validate", str(study_file)])  # the full files
    assert validated.exit_code == 0, validated.output
    write_study(study_file, text_heads(shrunk(path), workdir))
    result = CliRunner().invoke(main, ["run", str(study_file)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "2 complete" in result.output


def test_every_real_data_study_names_its_source_and_a_published_result() -> None:
    assert len(REAL) == 5
    for path in REAL:
        opening = path.read_text().split("\n\n")[0]
        assert "studies/data/real.py" in opening and "Published:" in opening


PACKAGES = ("sktime", "rdata", "hironsan", "statsmodels")
AUSTEN = Path("/usr/lib/R/site-library/janeaustenr")


@pytest.mark.slow
@pytest.mark.skipif(
    not all(importlib.util.find_spec(p) for p in PACKAGES) or not AUSTEN.is_dir(),
    reason="needs the real-data extra and Debian's r-cran-janeaustenr",
)
def test_the_conversion_script_rebuilds_the_committed_files(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(STUDIES / "data" / "real.py"), "--out", str(tmp_path)], check=True)  # fmt: skip
    committed = STUDIES / "data" / "real"
    for made in tmp_path.iterdir():
        if made.suffix != ".npz":  # npz archives carry zip timestamps; compare their arrays
            assert made.read_bytes() == (committed / made.name).read_bytes(), made.name
