"""Token files: plain text for language modelling and `token<TAB>tag` files for tagging.

Vocabularies (and tag sets) come from the training split only; rarer training tokens and tokens
never seen in training become `<unk>`, so validation text never shapes the model's input space.
"""

from __future__ import annotations

import numpy as np
import torch

from models.data.base import DataInfo, Split, TaskData
from models.data.config import TaggedData, TextData
from models.data.files import build_vocab, check_positive, read_text, shuffled_split, split_sizes
from models.errors import DataError

UNK, EOS, PAD = "<unk>", "<eos>", "<pad>"


def load_text(cfg: TextData) -> TaskData:
    """Token streams (1-D long) of the file's first (1 - val - test) part, then val, then test.

    char: every character is a token, newlines included. word: whitespace-separated words, plus
    `<eos>` at the end of every line (as in the Penn Treebank language-model files).
    """
    check_positive(cfg.seq_len, "seq_len")
    check_positive(cfg.min_freq, "min_freq")
    if cfg.level not in ("char", "word"):
        raise DataError(f"task.level must be 'char' or 'word', got {cfg.level!r}")
    text = read_text(cfg.path).replace("\r\n", "\n")
    if cfg.level == "char":
        tokens = list(text)
    else:
        tokens = [w for line in text.splitlines() for w in (*line.split(), EOS)]
    sizes = split_sizes(len(tokens), cfg.val_fraction, cfg.test_fraction, cfg.path, "tokens")
    for name, count in zip(("training", "validation", "test"), sizes, strict=True):
        if count < cfg.seq_len + 1:
            raise DataError(
                f"{cfg.path}: text too short for one window: the {name} part has {count} "
                f"{cfg.level} tokens, fewer than task.seq_len + 1 = {cfg.seq_len + 1}; lower "
                "task.seq_len, change task.val_fraction / task.test_fraction, or add text"
            )
    n_train, n_val, _ = sizes
    vocab = build_vocab(tokens[:n_train], cfg.min_freq, (UNK,))
    unk = vocab[UNK]
    ids = torch.tensor([vocab.get(t, unk) for t in tokens], dtype=torch.long)  # (n_tokens,)
    train, val, test = ids[:n_train], ids[n_train : n_train + n_val], ids[n_train + n_val :]
    info = DataInfo(
        "language_model", None, len(vocab), len(vocab), cfg.seq_len, n_train,
        level=cfg.level, vocab=tuple(vocab),
    )  # fmt: skip
    return TaskData(info, *(Split(s.clone(), None, None) for s in (train, val, test)))


def load_tagged(cfg: TaggedData) -> TaskData:
    """Padded sentences: inputs (N, T) token ids (0 = `<pad>`), targets (N, T) tag ids with -100
    on padding, lengths (N,). Sentences are shuffled into the splits with `cfg.seed`."""
    check_positive(cfg.min_freq, "min_freq")
    sentences = _sentences(cfg.path, cfg.lowercase)
    sizes = split_sizes(len(sentences), cfg.val_fraction, cfg.test_fraction, cfg.path, "sentences")
    parts = [[sentences[i] for i in idx] for idx in shuffled_split(len(sentences), sizes, cfg.seed)]
    vocab = build_vocab((tok for s in parts[0] for tok, _, _ in s), cfg.min_freq, (PAD, UNK))
    tags = sorted({tag for s in parts[0] for _, tag, _ in s})
    tag_ids = {t: i for i, t in enumerate(tags)}
    for part, name in zip(parts[1:], ("validation", "test"), strict=True):
        for tok, tag, line in (item for s in part for item in s):
            if tag not in tag_ids:
                raise DataError(
                    f"{cfg.path}, line {line}: tag {tag!r} (token {tok!r}, in the {name} split) "
                    f"never occurs in the training split, whose tags are {', '.join(tags)}; "
                    "the tag set comes from training: change task.seed or add sentences with it"
                )
    max_len = max(len(s) for s in sentences)

    def split(part: list[list[tuple[str, str, int]]]) -> Split:
        inputs = np.full((len(part), max_len), vocab[PAD], dtype=np.int64)
        targets = np.full((len(part), max_len), -100, dtype=np.int64)
        for i, sentence in enumerate(part):
            inputs[i, : len(sentence)] = [vocab.get(tok, vocab[UNK]) for tok, _, _ in sentence]
            targets[i, : len(sentence)] = [tag_ids[tag] for _, tag, _ in sentence]
        lengths = torch.tensor([len(s) for s in part], dtype=torch.long)
        return Split(torch.from_numpy(inputs), torch.from_numpy(targets), lengths)

    info = DataInfo(
        "tagging", None, len(vocab), len(tags), max_len, sizes[0], vocab=tuple(vocab),
        labels=tuple(tags),
    )  # fmt: skip
    return TaskData(info, *(split(p) for p in parts))


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
