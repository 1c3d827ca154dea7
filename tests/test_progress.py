"""What `rnn-tuner run` shows while it runs: live bars on a terminal (a real pseudo-terminal
here), plain lines elsewhere (a pipe, as in CI or `docker logs`)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tests.conftest import ROOT, tiny_study, write_study

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
TRIAL_LINE = re.compile(r"trial (\d+) COMPLETE [\d.e-]+ \| complete \d+ pruned 0 failed 0 \| best ")
EPOCH_LINE = re.compile(r"^trial (\d+) epoch (\d+)/3 val_mse [\d.e-]+$")


def study(workdir: Path, n_trials: int) -> Path:
    return write_study(
        workdir / "s.yaml", tiny_study(budget={"n_trials": n_trials, "max_epochs": 3})
    )


def run_on_a_terminal(workdir: Path, study_file: Path, *args: str) -> str:
    """`rnn-tuner run` with stdin, stdout and stderr on a 120-column pseudo-terminal: its
    whole output, escape codes included."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner", "run", str(study_file), *args],
        cwd=workdir, env=ENV, stdin=follower, stdout=follower, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=120) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_a_terminal_shows_epochs_eta_and_best_value_live(workdir: Path):
    out = run_on_a_terminal(workdir, study(workdir, 3), "--workers", "1")  # bars: one worker
    for k in (1, 2, 3):  # the running trial's epoch, redrawn as each one ends
        assert re.search(rf"epoch +{k}/3 \|[^|]*\| trial \d val_mse [\d.]+", out), out
    assert re.search(r"trials 3/3 \|[^|]*\| ETA \d\d:\d\d \| best [\d.]+ \(trial \d\)", out), out
    assert "\x1b[A" in out  # tqdm moves between its two bars
    finished = [m[1] for m in TRIAL_LINE.finditer(out)]
    assert finished == ["0", "1", "2"]  # each finished trial's line scrolls above the bars


def test_a_pipe_gets_a_line_per_trial_and_with_verbose_a_line_per_epoch(workdir: Path):
    study_file = study(workdir, 2)
    command = [sys.executable, "-m", "tuner", "run", str(study_file), "--workers", "1"]
    plain = subprocess.run(command, cwd=workdir, env=ENV, capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    assert "\x1b" not in plain.stderr and "\r" not in plain.stderr  # no bar, no escape codes
    lines = plain.stderr.splitlines()
    assert [int(m[1]) for m in map(TRIAL_LINE.match, lines) if m] == [0, 1]  # from the start
    assert not [line for line in lines if EPOCH_LINE.match(line)]

    verbose = command + ["--n-trials", "1", "--verbose"]  # resumes: trial 2
    result = subprocess.run(verbose, cwd=workdir, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    epochs = [(int(m[1]), int(m[2])) for m in map(EPOCH_LINE.match, lines) if m]
    assert epochs == [(2, 1), (2, 2), (2, 3)]
    assert [int(m[1]) for m in map(TRIAL_LINE.match, lines) if m] == [2]
    assert "\x1b" not in result.stderr


@pytest.mark.slow
def test_workers_sharing_a_terminal_print_lines_not_bars(workdir: Path, postgres_url: str):
    out = run_on_a_terminal(workdir, study(workdir, 2), "--workers", "2", "--storage", postgres_url)
    assert "\x1b[" not in out and "|" + "\u2588" not in out  # no bar, no cursor movement
    finished = re.findall(r"^\[w(\d)\] trial (\d+) COMPLETE", out, re.MULTILINE)
    assert sorted(number for _, number in finished) == ["0", "1"]
