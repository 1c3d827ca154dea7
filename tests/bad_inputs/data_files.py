"""Bad data files, one per source: the loaders' errors, found by `validate` before any trial."""

from __future__ import annotations

import io

import numpy as np

from tests.bad_inputs import Case, data_case

STORY = "the cat sat on the mat and the dog ran to the park in the sun.\n" * 40


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _text(path: str = "data.txt", **keys) -> dict:
    return {"source": "text", "path": path, "seq_len": 16, **keys}


def _tagged(**keys) -> dict:
    return {"source": "tagged", "path": "data.tsv", **keys}


def _csv(**keys) -> dict:
    return {"source": "csv", "path": "data.csv", "target": "y", "window": 4, **keys}


def _npz_task(**keys) -> dict:
    return {"source": "npz", "path": "data.npz", "target": "classification", **keys}


LM = {"objective": {"metric": "val_loss"}}  # the base study's val_mse is for regression
TAG = {"objective": {"metric": "val_acc"}}
SENTENCES = "".join(f"w{i % 7}\tT{i % 3}\n" + ("\n" if i % 4 == 3 else "") for i in range(400))
ROWS = "x,y\n" + "".join(f"{i % 10},{(i * 7) % 13}\n" for i in range(200))
WAVES = _npz(X=np.random.default_rng(0).normal(size=(60, 8, 2)), y=np.arange(60) % 2)

TEXT = [
    data_case("text-empty", r"data\.txt: the file is empty", _text(), {"data.txt": ""}, **LM),
    data_case(
        "text-whitespace",
        r"data\.txt: the file holds only whitespace",
        _text(),
        {"data.txt": " \n\t\n  \n"},
        **LM,
    ),
    data_case(
        "text-not-utf8",
        r"data\.txt, line 3: not valid UTF-8",
        _text(),
        {"data.txt": STORY[:130].encode() + "caf\xe9".encode("latin-1") + STORY.encode()},
        **LM,
    ),
    data_case(
        "text-binary",
        r"data\.txt.*(binary|UTF-8)",
        _text(),
        {"data.txt": bytes(range(256)) * 20},
        **LM,
    ),
    data_case(
        "text-one-token",
        r"data\.txt: .*one distinct (token|character)",
        _text(),
        {"data.txt": "a" * 5000},
        **LM,
    ),
    data_case(
        "text-one-word",
        r"data\.txt: .*one distinct token",
        _text(level="word"),
        {"data.txt": "ho " * 3000},
        **LM,
    ),
    data_case(
        "text-too-short",
        r"text too short for one window",
        _text(),
        {"data.txt": "abcdefghij" * 5},
        **LM,
    ),
    data_case(
        "text-seq-len-1",
        r"task\.seq_len: .*greater than or equal to 2",
        _text(seq_len=1),
        {"data.txt": STORY},
        **LM,
    ),
    data_case(
        "text-min-freq-0",
        r"task\.min_freq: .*greater than or equal to 1",
        _text(min_freq=0),
        {"data.txt": STORY},
        **LM,
    ),
    data_case(
        "text-val-fraction-0",
        r"task\.val_fraction: .*greater than 0",
        _text(val_fraction=0.0),
        {"data.txt": STORY},
        **LM,
    ),
    data_case(
        "text-test-fraction-above-1",
        r"task\.test_fraction: .*less than 1",
        _text(test_fraction=1.5),
        {"data.txt": STORY},
        **LM,
    ),
    data_case(
        "text-fractions-sum",
        r"val_fraction \+ task\.test_fraction must be below 1",
        _text(val_fraction=0.5, test_fraction=0.5),
        {"data.txt": STORY},
        **LM,
    ),
    data_case(
        "text-bidirectional",
        r"fixed\.bidirectional: .*language model",
        _text(),
        {"data.txt": STORY},
        **LM,
        **{"fixed.bidirectional": True},
    ),
    data_case(
        "text-bidirectional-searched",
        r"search\.bidirectional\.choices\.1: .*language model",
        _text(),
        {"data.txt": STORY},
        **LM,
        **{"search.bidirectional": {"type": "categorical", "choices": [False, True]}},
    ),
    data_case(
        "text-missing",
        r"task\.path: data file not found: nothere\.txt",
        _text("nothere.txt"),
        {},
        **LM,
    ),
    data_case(
        "text-directory", r"task\.path: .*not a file", _text("sub"), {"sub/x.txt": "x"}, **LM
    ),
    data_case("text-bad-level", r"task\.level", _text(level="byte"), {"data.txt": STORY}, **LM),
    data_case(
        "text-wrong-metric",
        r"objective\.metric: 'val_mse' is not measured for a language_model task",
        _text(),
        {"data.txt": STORY},
    ),
]

TAGGED = [
    data_case(
        "tagged-no-tab",
        r"data\.tsv, line 2: expected `token<TAB>tag`, found no tab",
        _tagged(),
        {"data.tsv": "a\tX\nb Y\n"},
        **TAG,
    ),
    data_case(
        "tagged-two-tabs",
        r"data\.tsv, line 1: .*2 tabs",
        _tagged(),
        {"data.tsv": "a\tX\tZ\n"},
        **TAG,
    ),
    data_case("tagged-empty", r"data\.tsv: the file is empty", _tagged(), {"data.tsv": ""}, **TAG),
    data_case(
        "tagged-not-utf8",
        r"data\.tsv, line 2: not valid UTF-8",
        _tagged(),
        {"data.tsv": b"a\tX\n\xff\tY\n" + SENTENCES.encode()},
        **TAG,
    ),
    data_case(
        "tagged-too-few",
        r"data\.tsv: the (validation|test) split would be empty",
        _tagged(),
        {"data.tsv": "a\tX\nb\tY\n"},
        **TAG,
    ),
    data_case(
        "tagged-val-fraction-0",
        r"task\.val_fraction: .*greater than 0",
        _tagged(val_fraction=0),
        {"data.tsv": SENTENCES},
        **TAG,
    ),
    data_case(
        "tagged-one-token",
        r"data\.tsv: .*one distinct token",
        _tagged(),
        {"data.tsv": "".join(f"a\tT{i % 2}\n\n" for i in range(200))},
        **TAG,
    ),
]

CSV = [
    data_case("csv-missing-target", r"task\.target.*'y'", _csv(), {"data.csv": "a,b\n1,2\n" * 50}),
    data_case(
        "csv-text-feature",
        r"data\.csv.*x",
        _csv(features=["x"]),
        {"data.csv": "x,y\n" + "low,1\n" * 100},
    ),
    data_case("csv-empty", r"data\.csv: the file is empty", _csv(), {"data.csv": ""}),
    data_case("csv-header-only", r"data\.csv", _csv(), {"data.csv": "x,y\n"}),
    data_case(
        "csv-too-few-rows",
        r"too few rows for one window",
        _csv(window=50),
        {"data.csv": "x,y\n" + "1,2\n" * 30},
    ),
    data_case(
        "csv-window-0",
        r"task\.window: .*greater than or equal to 1",
        _csv(window=0),
        {"data.csv": ROWS},
    ),
    data_case(
        "csv-not-utf8",
        r"data\.csv.*UTF-8",
        _csv(),
        {"data.csv": b"x,y\n\xff,1\n" + ROWS[4:].encode()},
    ),
    data_case(
        "csv-nan-target",
        r"data\.csv.*(NaN|missing|empty)",
        _csv(),
        {"data.csv": ROWS + "3,\n" + ROWS[4:]},
    ),
    data_case(
        "csv-fraction-above-1", r"task\.val_fraction", _csv(val_fraction=1.2), {"data.csv": ROWS}
    ),
]

NPZ = [
    data_case(
        "npz-not-archive",
        r"data\.npz: not an \.npz archive",
        _npz_task(),
        {"data.npz": "X,y\n1,2\n"},
        **TAG,
    ),
    data_case(
        "npz-missing-y",
        r"data\.npz: missing key\(s\) y",
        _npz_task(),
        {"data.npz": _npz(X=np.zeros((20, 5, 1)))},
        **TAG,
    ),
    data_case(
        "npz-length-mismatch",
        r"y has 10 rows but X has 20 sequences",
        _npz_task(),
        {"data.npz": _npz(X=np.zeros((20, 5, 1)), y=np.arange(10) % 2)},
        **TAG,
    ),
    data_case(
        "npz-nan",
        r"data\.npz.*(NaN|finite)",
        _npz_task(),
        {"data.npz": _npz(X=np.full((20, 5, 1), np.nan), y=np.arange(20) % 2)},
        **TAG,
    ),
    data_case(
        "npz-one-class",
        r"data\.npz.*(one class|single class|1 class)",
        _npz_task(),
        {"data.npz": _npz(X=np.zeros((40, 5, 1)), y=np.zeros(40, dtype=int))},
        **TAG,
    ),
    data_case(
        "npz-val-fraction-0",
        r"task\.val_fraction: .*greater than 0",
        _npz_task(val_fraction=0.0),
        {"data.npz": WAVES},
        **TAG,
    ),
    data_case(
        "npz-wrong-target",
        r"task\.target: .*'classification' or 'regression'",
        _npz_task(target="labels"),
        {"data.npz": WAVES},
        **TAG,
    ),
    data_case(
        "npz-empty-file", r"data\.npz: the file is empty", _npz_task(), {"data.npz": b""}, **TAG
    ),
]

CASES: list[Case] = TEXT + TAGGED + CSV + NPZ
