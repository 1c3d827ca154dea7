"""`SequenceDataModule`: batches of in-memory tensors, indexed a whole batch at a time.

No worker processes and no per-item collate: the sampler yields a batch's indices (a slice of a
seeded permutation, or a plain slice in order) and the dataset gathers them in one indexing call,
so loading costs about what a bare loop over `inputs[perm[i:i + B]]` costs.

Language models are different: the split's token stream is laid out as parallel streams and every
epoch walks consecutive windows in order, so the model can carry its state from one batch to the
next. Validation and test use `eval_streams` streams (10, as in pytorch/examples'
word_language_model) whatever the training batch size, so a trial's validation loss does not
depend on the `batch_size` being tuned; a split too short for that many full windows gets fewer.

With `batches_per_step=k > 1` the train and validation loaders yield lists of up to k batches in
the same order, and `SequenceModule` (which does its own optimisation) steps through each list: one
Lightning step per k batches, so its per-step hooks, progress and bookkeeping run k times less
often. Training and validation are unchanged; only what Lightning counts as a batch is a group.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler

from models.data.base import Batch, DataInfo, Split, TaskData
from models.errors import DataError


class SequenceDataModule(pl.LightningDataModule):
    def __init__(
        self,
        data: TaskData,
        batch_size: int,
        seed: int = 0,
        eval_streams: int | None = 10,
        batches_per_step: int = 1,
    ) -> None:
        """`seed` sets the training order of every epoch; `eval_streams` (language models only)
        is the number of parallel validation/test streams, None = `batch_size`;
        `batches_per_step` > 1 groups the train and validation batches into lists of that many."""
        super().__init__()
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        if eval_streams is not None and eval_streams < 1:
            raise DataError(f"eval_streams must be at least 1, got {eval_streams}")
        if batches_per_step < 1:
            raise DataError(f"batches_per_step must be at least 1, got {batches_per_step}")
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.batches_per_step = batches_per_step
        self.eval_streams = eval_streams or batch_size
        if self.info.task == "language_model":
            tokens, window = len(data.train.inputs), self.info.max_len
            if tokens // batch_size < window + 1:
                raise DataError(
                    f"text too short for one window with batch_size {batch_size}: "
                    f"{tokens} training tokens make {batch_size} streams of "
                    f"{tokens // batch_size} tokens, fewer than task.seq_len + 1 = {window + 1}; "
                    "lower batch_size or task.seq_len, or add text"
                )

    @property
    def info(self) -> DataInfo:
        return self.data.info

    def train_dataloader(self) -> DataLoader:
        if self.info.task == "language_model":
            windows = _Windows(self.data.train.inputs, self.batch_size, self.info.max_len)
            return _loader(windows, SequentialSampler(windows), self.batches_per_step)
        dataset = _Gather(self.data.train, trim_targets=self.info.task == "tagging")
        batches = _ShuffledBatches(len(dataset), self.batch_size, self.seed)
        return _loader(dataset, batches, self.batches_per_step)

    def val_dataloader(self) -> DataLoader:
        return self._in_order(self.data.val, self.batches_per_step)

    def test_dataloader(self) -> DataLoader:
        return self._in_order(self.data.test)

    def transfer_batch_to_device(
        self, batch: Batch | list[Batch], device: torch.device, dataloader_idx: int
    ) -> Batch | list[Batch]:
        """The split's tensors are in CPU memory: training there, nothing moves. (Lightning's
        transfer walks a group of batches calling `.to` on each tensor: 1 ms an epoch of 32.)"""
        if device.type == "cpu":
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _in_order(self, split: Split, group: int = 1) -> DataLoader:
        if self.info.task == "language_model":
            window = self.info.max_len
            streams = max(1, min(self.eval_streams, len(split.inputs) // (window + 1)))
            windows = _Windows(split.inputs, streams, window)
            return _loader(windows, SequentialSampler(windows), group)
        dataset = _Gather(split, trim_targets=self.info.task == "tagging")
        return _loader(dataset, _InOrderBatches(len(dataset), self.batch_size), group)


def _loader(dataset: Dataset, sampler: Sampler, group: int = 1) -> DataLoader:
    # batch_size=None: each index the sampler yields is a whole batch, passed to dataset[...].
    if group > 1:
        dataset, sampler = _Grouped(dataset), _GroupedSampler(sampler, group)
    return DataLoader(dataset, batch_size=None, sampler=sampler, collate_fn=_as_is)


def _as_is(batch: Batch) -> Batch:
    return batch


class _Grouped(Dataset):
    """A dataset indexed by a list of its own indices: the list of their batches."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:  # the batches it holds (Lightning reads it, e.g. under retrain)
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, indices: list) -> list[Batch]:
        return [self.dataset[i] for i in indices]


class _GroupedSampler(Sampler):
    """Another sampler's indices in consecutive lists of up to `group`."""

    def __init__(self, sampler: Sampler, group: int) -> None:
        self.sampler, self.group = sampler, group

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.group)

    def __iter__(self) -> Iterator[list]:
        indices = iter(self.sampler)
        while chunk := list(itertools.islice(indices, self.group)):
            yield chunk


class _Gather(Dataset):
    """A split indexed by a whole batch: a LongTensor of indices or a slice."""

    def __init__(self, split: Split, trim_targets: bool) -> None:
        assert split.targets is not None
        self.inputs, self.targets, self.lengths = split.inputs, split.targets, split.lengths
        self.trim_targets = trim_targets  # tagging targets are (N, T) and padded like the inputs

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: torch.Tensor | slice) -> Batch:
        if self.lengths is None:
            return Batch(self.inputs[index], self.targets[index], None)
        lengths = self.lengths[index]  # (B,)
        longest = int(lengths.max())
        # Cut the padding no sequence in this batch needs; full-length batches skip packing.
        inputs = self.inputs[index, :longest].contiguous()
        targets = self.targets[index, :longest] if self.trim_targets else self.targets[index]
        full = bool((lengths == longest).all())
        return Batch(inputs, targets.contiguous(), None if full else lengths)


class _ShuffledBatches(Sampler):
    """Batches of a fresh permutation each epoch, seeded by (seed, epoch) alone.

    Lightning calls `set_epoch` before every epoch (so a resumed run repeats the same orders);
    without Lightning each iteration moves to the next epoch.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        return iter(torch.randperm(self.n, generator=generator).split(self.batch_size))


class _InOrderBatches(Sampler):
    def __init__(self, n: int, batch_size: int) -> None:
        self.n, self.batch_size = n, batch_size

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[slice]:
        return (slice(i, i + self.batch_size) for i in range(0, self.n, self.batch_size))


class _Windows(Dataset):
    """A token stream as `streams` parallel rows; item i is the i-th window of `window` steps.

    Stream b is the b-th contiguous slice of the (trimmed) stream, so window i + 1 continues
    window i in every row. The last window may be shorter, so every token but the trim is used.
    """

    def __init__(self, stream: torch.Tensor, streams: int, window: int) -> None:
        usable = len(stream) // streams * streams
        self.rows = stream[:usable].view(streams, -1).contiguous()  # (streams, S)
        self.window = window

    def __len__(self) -> int:
        return math.ceil((self.rows.shape[1] - 1) / self.window)

    def __getitem__(self, i: int) -> Batch:
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = i * self.window
        stop = min(start + self.window, self.rows.shape[1] - 1)
        inputs = self.rows[:, start:stop].contiguous()  # (streams, L)
        targets = self.rows[:, start + 1 : stop + 1].contiguous()  # (streams, L), one step ahead
        return Batch(inputs, targets, None)
