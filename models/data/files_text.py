"""Token files: plain text for language modelling and `token<TAB>tag` files for tagging.

Vocabularies (and tag sets) come from the training split only; rarer training tokens and tokens
never seen in training become `<unk>`, so validation text never shapes the model's input space.
A validation or test tag that training never saw is kept as the target `UNSEEN`: always wrong.
Tagged tokens also carry their characters (`models.data.chars`), so a network with character
features can tell one unknown word from another.
"""

from __future__ import annotations

import numpy as np
import torch

from models.data.base import PAD_TARGET, UNSEEN, DataInfo, Split, TaskData
from models.data.chars import WORD_SLOTS, char_ids, char_vocab
from models.data.config import TaggedData, TextData
from models.data.files import (
    SPLIT_KEYS,
    build_vocab,
    carve_sizes,
    check_distinct,
    check_positive,
    named_files,
    part_label,
    read_text,
    shuffled_split,
    split_sizes,
    unseen_labels,
)
from models.errors import DataError

UNK, EOS, PAD = "<unk>", "<eos>", "<pad>"


def load_text(cfg: TextData, with_test: bool = True) -> TaskData:
    """Token streams (1-D long): one file's first (1 - val - test) part, then val, then test; or
    pre-split files, validation carved from the end of the training file if no file is given.

    char: every character is a token, newlines included. word: whitespace-separated words, plus
    `<eos>` at the end of every line (as in the Penn Treebank language-model files).
    """
    check_positive(cfg.seq_len, "seq_len")
    check_positive(cfg.min_freq, "min_freq")
    if cfg.level not in ("char", "word"):
        raise DataError(f"task.level must be 'char' or 'word', got {cfg.level!r}")
    files = named_files(cfg)
    parts = _token_parts(cfg, files, with_test)
    for split, part in zip(SPLIT_KEYS, parts, strict=True):
        if part is not None and len(part) < cfg.seq_len + 1:
            raise DataError(
                f"{part_label(files, split)}: text too short for one window: {len(part)} "
                f"{cfg.level} tokens, fewer than task.seq_len + 1 = {cfg.seq_len + 1}; lower "
                "task.seq_len, change task.val_fraction / task.test_fraction, or add text"
            )
    vocab = build_vocab(parts[0], cfg.min_freq, (UNK,))  # type: ignore[arg-type]
    # <eos> alone is no text to model either
    check_distinct(len(vocab.keys() - {UNK, EOS}), files.get("path") or files["train"], "token")
    streams = [None if p is None else Split(_ids(p, vocab), None, None) for p in parts]
    info = DataInfo(
        "language_model", None, len(vocab), len(vocab), cfg.seq_len, len(parts[0]),  # type: ignore[arg-type]
        level=cfg.level, vocab=tuple(vocab),
    )  # fmt: skip
    return TaskData(info, *streams)  # type: ignore[arg-type]


def _token_parts(cfg: TextData, files: dict[str, str], with_test: bool) -> list[list[str] | None]:
    """The train, val and test token lists: cut from one file, or read from pre-split files
    (val carved from the end of the training file if none is given; test None if not read)."""
    if "path" in files:
        tokens = _tokens(cfg.path, cfg.level)
        sizes = split_sizes(len(tokens), cfg.val_fraction, cfg.test_fraction, cfg.path, "tokens")
        return _consecutive(tokens, sizes)
    tokens = _tokens(files["train"], cfg.level)
    parts: list[list[str] | None]
    if "val" in files:
        parts = [tokens, _tokens(files["val"], cfg.level)]
    else:
        sizes = (*carve_sizes(len(tokens), cfg.val_fraction, files["train"], "tokens"), 0)
        parts = _consecutive(tokens, sizes)[:2]
    read_test = with_test and "test" in files
    parts.append(_tokens(files["test"], cfg.level) if read_test else None)
    return parts


def _tokens(path: str, level: str) -> list[str]:
    text = read_text(path).replace("\r\n", "\n")
    if level == "char":
        return list(text)
    return [w for line in text.splitlines() for w in (*line.split(), EOS)]


def _consecutive(items: list, sizes: tuple[int, int, int]) -> list:
    """The first sizes[0] items, the next sizes[1], the rest: a split in order."""
    n_train, n_val, _ = sizes
    return [items[:n_train], items[n_train : n_train + n_val], items[n_train + n_val :]]


def _ids(tokens: list[str], vocab: dict[str, int]) -> torch.Tensor:
    unk = vocab[UNK]
    return torch.tensor([vocab.get(t, unk) for t in tokens], dtype=torch.long)  # (n_tokens,)


def load_tagged(cfg: TaggedData, with_test: bool = True) -> TaskData:
    """Padded sentences: inputs (N, T, 1 + WORD_SLOTS), each token's id (0 = `<pad>`) followed by
    its character ids (`models.data.chars`), targets (N, T) tag ids with -100 on padding and
    `UNSEEN` for a tag training never saw, lengths (N,). One file's sentences are
    shuffled into the splits with `cfg.seed`; so are a training file's when val is carved from it."""
    check_positive(cfg.min_freq, "min_freq")
    files = named_files(cfg)
    if "path" in files:
        sentences = _sentences(cfg.path, cfg.lowercase)
        n = len(sentences)
        sizes = split_sizes(n, cfg.val_fraction, cfg.test_fraction, cfg.path, "sentences")
        parts: list[list | None] = [[sentences[i] for i in idx] for idx in shuffled_split(n, sizes, cfg.seed)]  # fmt: skip
    else:
        train = _sentences(files["train"], cfg.lowercase)
        if "val" in files:
            parts = [train, _sentences(files["val"], cfg.lowercase)]
        else:
            n_train, n_val = carve_sizes(len(train), cfg.val_fraction, files["train"], "sentences")
            split = shuffled_split(len(train), (n_train, n_val, 0), cfg.seed)
            parts = [[train[i] for i in idx] for idx in split[:2]]
        read_test = with_test and "test" in files
        parts.append(_sentences(files["test"], cfg.lowercase) if read_test else None)
    return _tagged_task(cfg, files, parts)


def _tagged_task(cfg: TaggedData, files: dict[str, str], parts: list[list | None]) -> TaskData:
    vocab = build_vocab((tok for s in parts[0] for tok, _, _ in s), cfg.min_freq, (PAD, UNK))  # type: ignore[union-attr]
    check_distinct(len(vocab.keys() - {PAD, UNK}), files.get("path") or files["train"], "token")
    tags = sorted({tag for s in parts[0] for _, tag, _ in s})  # type: ignore[union-attr]
    tag_ids = {t: i for i, t in enumerate(tags)}
    unseen = [
        u
        for split, part in zip(("val", "test"), parts[1:], strict=True)
        if part is not None
        for u in unseen_labels((t for s in part for _, t, _ in s), tags, part_label(files, split))
    ]
    max_len = max(len(s) for part in parts[:2] for s in part)  # type: ignore[union-attr]

    chars = char_vocab(tok for s in parts[0] for tok, _, _ in s)  # type: ignore[union-attr]
    rows = _TokenRows(vocab, chars)

    def split(part: list[list[tuple[str, str, int]]]) -> Split:
        width = max(len(s) for s in part)
        inputs = np.zeros((len(part), width, 1 + WORD_SLOTS), dtype=np.int64)  # all <pad>
        targets = np.full((len(part), width), PAD_TARGET, dtype=np.int64)
        for i, sentence in enumerate(part):
            inputs[i, : len(sentence)] = [rows[tok] for tok, _, _ in sentence]
            targets[i, : len(sentence)] = [tag_ids.get(tag, UNSEEN) for _, tag, _ in sentence]
        lengths = torch.tensor([len(s) for s in part], dtype=torch.long)
        return Split(torch.from_numpy(inputs), torch.from_numpy(targets), lengths)

    info = DataInfo(
        "tagging", None, len(vocab), len(tags), max_len, len(parts[0]), vocab=tuple(vocab),  # type: ignore[arg-type]
        labels=tuple(tags), chars=tuple(chars),
    )  # fmt: skip
    splits = [None if p is None else split(p) for p in parts]
    return TaskData(info, *splits, unseen=tuple(unseen))  # type: ignore[arg-type]


class _TokenRows(dict):
    """token -> its input row: the word id (`<unk>` if not in the vocabulary), then its
    character ids; each distinct token is spelled once."""

    def __init__(self, vocab: dict[str, int], chars: dict[str, int]) -> None:
        super().__init__()
        self.vocab, self.chars = vocab, chars

    def __missing__(self, token: str) -> list[int]:
        row = [self.vocab.get(token, self.vocab[UNK]), *char_ids(token, self.chars)]
        self[token] = row
        return row


def _sentences(path: str, lowercase: bool) -> list[list[tuple[str, str, int]]]:
    """Sentences as (token, tag, line number) triples; a blank line ends a sentence."""
    sentences: list[list[tuple[str, str, int]]] = []
    current: list[tuple[str, str, int]] = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            if current:
                sentences.append(current)
            current = []
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            found = "no tab" if len(fields) == 1 else f"{len(fields) - 1} tabs"
            if len(fields) == 2:
                found = "an empty token or tag"
            raise DataError(
                f"{path}, line {number}: expected `token<TAB>tag`, found {found}: {line!r}"
            )
        token, tag = fields[0].strip(), fields[1].strip()
        current.append((token.lower() if lowercase else token, tag, number))
    if current:
        sentences.append(current)
    return sentences
