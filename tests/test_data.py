"""The data side of `models`: every source through `load_task`, and `SequenceDataModule` batching."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from models.data import (
    UNSEEN,
    AddingData,
    CopyData,
    CsvData,
    NpzData,
    SequenceDataModule,
    SineData,
    TaggedData,
    TaskData,
    TextData,
    UnseenLabel,
    load_task,
)
from models.data.chars import WORD_CHARS, WORD_SLOTS
from models.errors import DataError

EXAMPLES = Path(__file__).resolve().parents[1] / "studies" / "data"
SMALL = {"n_train": 64, "n_val": 16, "n_test": 16}
CONFIGS = {
    "adding": AddingData(seq_len=20, **SMALL),
    "copy": CopyData(n_symbols=4, copy_len=3, delay=5, **SMALL),
    "sine": SineData(seq_len=20, horizon=3, **SMALL),
    "npz": NpzData(path=str(EXAMPLES / "waves.npz"), target="classification"),
    "csv": CsvData(path=str(EXAMPLES / "load.csv"), target="load"),
    "text": TextData(path=str(EXAMPLES / "stories.txt")),
    "text_word": TextData(path=str(EXAMPLES / "stories.txt"), level="word", seq_len=20),
    "tagged": TaggedData(path=str(EXAMPLES / "tagged.tsv")),
}


def tensors(data: TaskData) -> list[torch.Tensor | None]:
    return [getattr(s, f) for s in (data.train, data.val, data.test) for f in ("inputs", "targets", "lengths")]  # fmt: skip


def assert_same(a: TaskData, b: TaskData) -> None:
    assert a.info == b.info
    for x, y in zip(tensors(a), tensors(b), strict=True):
        assert (x is None and y is None) or torch.equal(x, y)


@pytest.mark.parametrize("name", CONFIGS)
def test_same_config_gives_identical_tensors(name: str) -> None:
    assert_same(load_task(CONFIGS[name]), load_task(CONFIGS[name]))


@pytest.mark.parametrize("name", ["adding", "copy", "sine", "npz", "tagged"])
def test_seed_changes_the_data_or_split(name: str) -> None:
    cfg = CONFIGS[name]
    a, b = load_task(cfg), load_task(type(cfg)(**{**vars(cfg), "seed": 1}))
    assert not torch.equal(a.train.inputs, b.train.inputs)


# task, input_size, vocab_size, output_size, max_len, n_train, train inputs shape
EXPECTED = {
    "npz": ("classification", 1, None, 3, 60, 420, (420, 60, 1)),
    "csv": ("regression", 4, None, 1, 24, 1376, (1376, 24, 4)),
    "text": ("language_model", None, 41, 41, 64, 64076, (64076,)),
    "tagged": ("tagging", None, 58, 10, 16, 350, (350, 16, 1 + WORD_SLOTS)),
}


@pytest.mark.parametrize("name", EXPECTED)
def test_example_files_load_with_their_shapes(name: str) -> None:
    data = load_task(CONFIGS[name])
    task, input_size, vocab_size, output_size, max_len, n_train, shape = EXPECTED[name]
    info = data.info
    assert (info.task, info.input_size, info.vocab_size, info.output_size) == (
        task, input_size, vocab_size, output_size
    )  # fmt: skip
    assert (info.max_len, info.n_train, tuple(data.train.inputs.shape)) == (max_len, n_train, shape)
    assert (info.vocab is None) == (vocab_size is None)
    for split in (data.train, data.val, data.test):
        if task != "language_model":
            assert len(split.targets) == len(split.inputs)
            assert torch.isfinite(split.inputs.float()).all()


def test_example_labels_and_levels() -> None:
    assert load_task(CONFIGS["npz"]).info.labels == ("sawtooth", "sine", "square")
    assert "NOUN" in load_task(CONFIGS["tagged"]).info.labels
    text = load_task(CONFIGS["text_word"]).info
    assert text.level == "word" and "<eos>" in text.vocab and text.vocab[0] == "<unk>"


def test_example_files_are_small_and_regenerate_identically(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    make.stories(tmp_path / "stories.txt")
    make.tagged(tmp_path / "tagged.tsv")
    make.stores(tmp_path / "stores.csv")
    for name in ("stories.txt", "tagged.tsv", "stores.csv"):
        assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes()
    for path in EXAMPLES.glob("*.*"):
        assert path.stat().st_size < 200_000, path


def test_npz_split_is_disjoint_and_covers_every_sequence() -> None:
    data = load_task(CONFIGS["npz"])
    sizes = [len(s.inputs) for s in (data.train, data.val, data.test)]
    assert sizes == [420, 90, 90]
    # Every noisy waveform is unique, so a row's bytes identify the sequence it came from.
    rows = [r.numpy().tobytes() for s in (data.train, data.val, data.test) for r in s.inputs]
    assert len(set(rows)) == 600


def test_adding_targets_are_the_marked_sums() -> None:
    data = load_task(AddingData(seq_len=30, n_train=4000, n_val=10, n_test=10))
    x, y = data.train.inputs, data.train.targets  # (N, T, 2), (N, 1)
    markers = x[:, :, 1]
    assert (markers[:, :15].sum(1) == 1).all() and (markers[:, 15:].sum(1) == 1).all()
    assert torch.allclose((x[:, :, 0] * markers).sum(1, keepdim=True), y)
    assert abs(((y - y.mean()) ** 2).mean().item() - 1 / 6) < 0.015  # the mean predictor's MSE


def test_copy_targets_ignore_all_but_the_recall_phase() -> None:
    data = load_task(CONFIGS["copy"])
    x, y = data.train.inputs, data.train.targets  # (N, 12), (N, 12)
    assert x.shape[1] == 2 * 3 + 5 + 1 and (x[:, 8] == 1).all()  # the delimiter
    assert (y[:, :9] == -100).all()
    assert torch.equal(y[:, 9:], x[:, :3] - 2)  # symbols are ids 2.., classes 0..n_symbols-1


def test_csv_windows_stay_inside_their_split_and_use_training_statistics(tmp_path: Path) -> None:
    path = tmp_path / "series.csv"
    rows = [f"2020-01-{i:03d},{i},{i * i}" for i in range(100)]
    path.write_text("day,x,y\n" + "\n".join(rows) + "\n")
    cfg = CsvData(path=str(path), target="y", features=("x",), window=5, horizon=2,
                  val_fraction=0.2, test_fraction=0.2)  # fmt: skip
    data = load_task(cfg)
    x_mean, x_std = np.arange(60).mean(), np.arange(60).std()  # the 60 training rows only
    y_train = np.arange(60) ** 2
    assert [len(s.inputs) for s in (data.train, data.val, data.test)] == [54, 14, 14]
    # First validation window: rows 60-64, targets at rows 65 and 66 (horizon 2).
    assert torch.allclose(data.val.inputs[0, :, 0], torch.tensor((np.arange(60, 65) - x_mean) / x_std, dtype=torch.float32))  # fmt: skip
    assert data.val.targets[0].tolist() == pytest.approx((np.array([65, 66]) ** 2 - y_train.mean()) / y_train.std(), rel=1e-5)  # fmt: skip
    # The last test window's last target is the last row: no window reaches past its part.
    assert data.test.targets[-1, -1].item() == pytest.approx((99**2 - y_train.mean()) / y_train.std(), rel=1e-5)  # fmt: skip
    everything = load_task(CsvData(path=str(path), target="y", window=5))
    assert everything.info.input_size == 2  # x and y; "day" is not a number


def write_npz(path: Path, x: object, y: object) -> str:
    np.savez(path, X=x, y=y)
    return str(path)


def ragged(lengths: list[int]) -> np.ndarray:
    x = np.empty(len(lengths), dtype=object)
    for i, n in enumerate(lengths):
        x[i] = np.full((n, 2), i + 1, dtype=np.float32)
    return x


def test_ragged_npz_batches_carry_lengths_and_cut_padding(tmp_path: Path) -> None:
    lengths = [3, 5, 2, 7, 4, 6, 5, 3, 2, 4] * 2
    path = write_npz(tmp_path / "r.npz", ragged(lengths), np.array([5, 9, 7, 5] * 5))
    data = load_task(NpzData(path=path, target="classification", val_fraction=0.2,
                             test_fraction=0.2))  # fmt: skip
    assert data.info.labels == ("5", "7", "9") and data.info.max_len == 7
    assert set(data.train.targets.tolist()) == {0, 1, 2}
    batches = list(SequenceDataModule(data, batch_size=4).train_dataloader())
    assert any(b.lengths is not None for b in batches)
    for batch in batches:
        seq_ids = batch.inputs[:, 0, 0].long() - 1  # each sequence is filled with its index + 1
        true = torch.tensor([lengths[i] for i in seq_ids])
        if batch.lengths is None:
            assert (true == batch.inputs.shape[1]).all()
        else:
            assert torch.equal(batch.lengths, true)
        assert batch.inputs.shape[1] == true.max()  # padding no sequence needs is cut
        steps = torch.arange(batch.inputs.shape[1])
        assert ((batch.inputs[:, :, 0] != 0) == (steps < true[:, None])).all()


def test_batches_of_equal_lengths_have_no_lengths(tmp_path: Path) -> None:
    lengths = [4, 2, 3, 4, 1, 2, 4, 3, 2, 4]
    path = write_npz(tmp_path / "r.npz", ragged(lengths), np.arange(10) % 2)
    data = load_task(NpzData(path=path, target="classification", val_fraction=0.1,
                             test_fraction=0.1))  # fmt: skip
    for batch in SequenceDataModule(data, batch_size=1).train_dataloader():
        assert batch.lengths is None  # one sequence is always full length, once cut
        assert batch.inputs.shape[1] == lengths[int(batch.inputs[0, 0, 0]) - 1]
    batches = SequenceDataModule(data, batch_size=4).train_dataloader()
    assert any(b.lengths is not None for b in batches)


def test_train_order_is_seeded_and_changes_each_epoch_while_val_order_is_fixed() -> None:
    data = load_task(CONFIGS["adding"])

    def epochs(seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        dm = SequenceDataModule(data, batch_size=16, seed=seed)
        train, val = dm.train_dataloader(), dm.val_dataloader()
        return ([torch.cat([b.targets for b in train]) for _ in range(2)],
                [torch.cat([b.targets for b in val]) for _ in range(2)])  # fmt: skip

    (first, second), (val1, val2) = epochs(seed=0)
    assert not torch.equal(first, second)
    assert torch.equal(torch.sort(first.flatten()).values, torch.sort(data.train.targets.flatten()).values)  # fmt: skip
    assert torch.equal(val1, data.val.targets) and torch.equal(val2, data.val.targets)
    again, _ = epochs(seed=0)
    other, _ = epochs(seed=1)
    assert torch.equal(again[0], first) and torch.equal(again[1], second)
    assert not torch.equal(other[0], first)


def test_lightning_sets_the_epoch_so_runs_repeat_their_orders() -> None:
    import pytorch_lightning as pl

    class Record(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.first_targets: list[float] = []

        def training_step(self, batch, i):  # noqa: ANN001
            if i == 0:
                self.first_targets.append(batch.targets[0, 0].item())
            return (self.w * batch.targets).pow(2).mean()

        def configure_optimizers(self):  # noqa: ANN201
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def run() -> list[float]:
        module = Record()
        trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             limit_val_batches=0, accelerator="cpu")  # fmt: skip
        trainer.fit(module, SequenceDataModule(load_task(CONFIGS["adding"]), 16, seed=3))
        return module.first_targets

    first = run()
    assert len(set(first)) == 3 and run() == first


def test_language_model_windows_are_consecutive_in_every_stream() -> None:
    data = load_task(CONFIGS["text"])
    stream, window = data.train.inputs, data.info.max_len
    batches = list(SequenceDataModule(data, batch_size=8).train_dataloader())
    per_stream = len(stream) // 8
    assert len(batches) == -(-(per_stream - 1) // window)
    for b in batches:
        assert b.lengths is None and b.inputs.shape[0] == 8
        assert torch.equal(b.inputs[:, 1:], b.targets[:, :-1])
    for a, b in zip(batches[:-1], batches[1:], strict=True):
        assert torch.equal(b.inputs[:, 0], a.targets[:, -1])
    assert batches[0].inputs.shape[1] == window
    assert torch.equal(batches[0].inputs[:, 0], stream[: 8 * per_stream : per_stream])
    last = batches[-1].targets[:, -1]
    assert torch.equal(last, stream[per_stream - 1 : 8 * per_stream : per_stream])


def test_language_model_eval_streams_do_not_depend_on_batch_size() -> None:
    data = load_task(CONFIGS["text"])
    for batch_size in (4, 32):
        val = list(SequenceDataModule(data, batch_size=batch_size).val_dataloader())
        assert {b.inputs.shape[0] for b in val} == {10}
    tiny = load_task(TextData(path=CONFIGS["text"].path, seq_len=2000))
    val = list(SequenceDataModule(tiny, batch_size=2).val_dataloader())  # 8009 tokens -> 4 streams
    assert val[0].inputs.shape == (4, 2000)


def test_text_vocabulary_comes_from_training_text_only(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("ab" * 399 + "cc" + "zzab" * 25 + "ab" * 50)  # 1000 chars; "z" only in val
    data = load_task(TextData(path=str(path), seq_len=8, min_freq=3))
    vocab = data.info.vocab
    assert set(vocab) == {"<unk>", "a", "b"}  # "c" is seen twice, below min_freq
    unk = vocab.index("<unk>")
    assert data.val.inputs[:4].tolist() == [unk, unk, vocab.index("a"), vocab.index("b")]
    assert data.train.inputs[-1] == unk


def test_tagged_vocabulary_and_tags_come_from_training_sentences(tmp_path: Path) -> None:
    path = tmp_path / "tags.tsv"
    extra = ["", "big\tADJ\n"]  # every other sentence is longer, so some are padded
    sentences = [f"The\tDET\nword{i}\tNOUN\n{extra[i % 2]}.\tPUNCT" for i in range(20)]
    path.write_text("\n\n".join(sentences) + "\n")
    data = load_task(TaggedData(path=str(path), lowercase=True))
    vocab, unk = data.info.vocab, data.info.vocab.index("<unk>")
    assert vocab[0] == "<pad>" and "the" in vocab and "The" not in vocab
    assert data.info.labels == ("ADJ", "DET", "NOUN", "PUNCT")
    words = {split: getattr(data, split).inputs[..., 0] for split in ("train", "val")}
    assert (words["val"][:, 1] == unk).all()  # every "word<i>" occurs in one sentence only
    assert (words["train"][:, 1] != unk).all()
    padding = words["train"] == 0
    assert padding.any() and (data.train.targets[padding] == -100).all()
    assert (data.train.targets[~padding] >= 0).all()
    assert torch.equal(padding.logical_not().sum(1), data.train.lengths)


def test_tagged_tokens_carry_their_characters_from_a_training_alphabet(tmp_path: Path) -> None:
    train, val = tmp_path / "train.tsv", tmp_path / "val.tsv"
    train.write_text("walking\tVERB\ntables\tNOUN\n\n" * 4)
    long_word = "internationalisation"  # 20 characters: first and last WORD_CHARS // 2 kept
    val.write_text(f"jumping\tVERB\n{long_word}\tNOUN\nzing\tVERB\n")
    data = load_task(TaggedData(train=str(train), val=str(val)))
    chars = data.info.chars
    assert chars[:4] == ("<pad>", "<unk>", "<w>", "</w>")
    assert set(chars[4:]) == set("walkingtables")  # the training split's characters only
    assert data.train.inputs.shape == (4, 2, 1 + WORD_SLOTS)

    def spelled(row: torch.Tensor) -> str:
        return "".join("?" if i == 1 else chars[i] for i in row[1:].tolist() if i not in (0, 2, 3))

    jumping, long, zing = data.val.inputs[0]
    assert jumping[0] == data.info.vocab.index("<unk>")  # unknown word, known suffix
    assert spelled(jumping) == "????ing"  # j, u, m and p never occur in training
    assert jumping[1] == chars.index("<w>") and jumping[1 + len("jumping") + 1] == chars.index(
        "</w>"
    )
    half = WORD_CHARS // 2
    assert spelled(long) == "".join(c if c in chars else "?" for c in long_word[:half] + long_word[-half:])  # fmt: skip
    assert long[-1] == chars.index("</w>")  # the longest kept word fills every slot
    assert (zing[1 + len("zing") + 2 :] == 0).all()  # padding after the end marker


def test_a_tag_seen_only_outside_training_is_kept_as_unseen(tmp_path: Path) -> None:
    path = tmp_path / "tags.tsv"
    sentences = ["a\tX\nb\tY"] * 9 + ["odd\tODD"]
    path.write_text("\n\n".join(sentences) + "\n")
    outside = 0
    for seed in range(15):  # some seeds put the ODD sentence in training, some outside it
        data = load_task(TaggedData(path=str(path), seed=seed))
        if "ODD" in data.info.labels:
            assert data.unseen == ()
            continue
        outside += 1
        where = "validation" if (data.val.targets == UNSEEN).any() else "test"
        assert data.unseen == (UnseenLabel("ODD", f"{path} ({where} part)", 1),)
    assert 0 < outside < 15


def bad_npz(tmp_path: Path, kind: str) -> str:
    x = np.zeros((4, 3, 2), dtype=np.float32)
    if kind == "no_y":
        np.savez(tmp_path / "d.npz", X=x)
        return str(tmp_path / "d.npz")
    if kind == "nan":
        x[2, 1, 0] = np.nan
    return write_npz(tmp_path / "d.npz", x, np.arange(3 if kind == "mismatch" else 4) % 2)


def write(tmp_path: Path, name: str, text: str) -> str:
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


CSV = "t,a,b\n" + "".join(f"{i},{i},{2 * i}\n" for i in range(40))
BAD_INPUTS = {
    "missing file": (
        lambda p: NpzData(path="nowhere.npz", target="regression"),
        ["nowhere.npz", "working directory"],
    ),
    "npz without y": (
        lambda p: NpzData(path=bad_npz(p, "no_y"), target="classification"),
        ["d.npz", "missing key(s) y", "X"],
    ),
    "npz N disagrees": (
        lambda p: NpzData(path=bad_npz(p, "mismatch"), target="classification"),
        ["d.npz", "y has 3 rows", "X has 4"],
    ),
    "npz NaN": (
        lambda p: NpzData(path=bad_npz(p, "nan"), target="classification"),
        ["d.npz", "X[2]", "NaN"],
    ),
    "not an npz": (
        lambda p: NpzData(path=write(p, "d.npz", "hello"), target="regression"),
        ["d.npz", "not an .npz"],
    ),
    "csv missing column": (
        lambda p: CsvData(path=write(p, "s.csv", CSV), target="nope"),
        ["s.csv", "'nope'", "t, a, b"],
    ),
    "csv missing feature": (
        lambda p: CsvData(path=write(p, "s.csv", CSV), target="a", features=("b", "c")),
        ["task.features", "'c'"],
    ),
    "csv non-numeric": (
        lambda p: CsvData(
            path=write(p, "s.csv", CSV.replace("\n2,2,4", "\n2,2,x")), target="b", window=3
        ),
        ["s.csv", "line 4", "'b'", "'x'"],
    ),
    "csv empty cell": (
        lambda p: CsvData(
            path=write(p, "s.csv", CSV.replace("\n2,2,4", "\n2,,4")), target="b", window=3
        ),
        ["line 4", "'a'", "empty cell"],
    ),
    "csv too few rows": (
        lambda p: CsvData(path=write(p, "s.csv", CSV), target="b", window=40),
        ["s.csv", "too few rows", "window"],
    ),
    "csv short val part": (
        lambda p: CsvData(path=write(p, "s.csv", CSV), target="b", window=6),
        ["s.csv", "validation part has 6 rows", "val_fraction"],
    ),
    "tagged without tab": (
        lambda p: TaggedData(path=write(p, "t.tsv", "a\tX\nb Y\n")),
        ["t.tsv", "line 2", "no tab"],
    ),
    "empty file": (lambda p: TextData(path=write(p, "e.txt", "")), ["e.txt", "empty"]),
    "empty split": (
        lambda p: TaggedData(path=write(p, "t.tsv", "a\tX\n\nb\tX\n\nc\tX\n")),
        ["t.tsv", "validation split would be empty", "val_fraction"],
    ),
    "text too short": (
        lambda p: TextData(path=write(p, "t.txt", "abc" * 100), seq_len=40),
        ["t.txt", "too short for one window", "seq_len"],
    ),
    "bad setting": (lambda p: AddingData(seq_len=1), ["task.seq_len", "got 1"]),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_raise_data_errors_that_say_where(case: str, tmp_path: Path) -> None:
    make_cfg, fragments = BAD_INPUTS[case]
    cfg = make_cfg(tmp_path)
    with pytest.raises(DataError) as raised:
        load_task(cfg)
    for fragment in fragments:
        assert fragment in str(raised.value)


def test_text_too_short_for_the_batch_size_names_it(tmp_path: Path) -> None:
    data = load_task(TextData(path=write(tmp_path, "t.txt", "abcd" * 250), seq_len=20))
    with pytest.raises(DataError, match="batch_size 64"):
        SequenceDataModule(data, batch_size=64)
    assert len(SequenceDataModule(data, batch_size=8).train_dataloader()) > 0


@pytest.mark.parametrize("name", ["adding", "text", "tagged"])
def test_batches_per_step_groups_the_same_batches_in_the_same_order(name: str) -> None:
    data = load_task(CONFIGS[name])
    one, grouped = (SequenceDataModule(data, 8, seed=1, batches_per_step=k) for k in (1, 3))
    for split in ("train", "val"):
        batches = list(getattr(one, f"{split}_dataloader")())
        groups = list(getattr(grouped, f"{split}_dataloader")())
        assert (
            len(groups) == len(getattr(grouped, f"{split}_dataloader")()) == -(-len(batches) // 3)
        )
        flat = [batch for group in groups for batch in group]
        assert len(flat) == len(batches)
        for a, b in zip(batches, flat, strict=True):
            assert all(torch.equal(x, y) for x, y in zip(a[:2], b[:2], strict=True))
    with pytest.raises(DataError, match="batches_per_step must be at least 1, got 0"):
        SequenceDataModule(data, 8, batches_per_step=0)
