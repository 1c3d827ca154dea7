"""Character features: a tagger that reads each word's characters tells unknown words apart."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from models import Settings, evaluate, load_task, train
from models.data import TaggedData
from models.network import SequenceNet
from tuner.config import StudyFileError, parse_study

from .conftest import tiny_study

SUFFIX_TAGS = {"ing": "VERB", "ment": "NOUN"}  # the suffix alone decides the tag


def _words(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """`n` words of each suffix, made from random stems: (word, tag)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    stems = {"".join(rng.choices(letters, k=4)) for _ in range(4 * n)}
    stems_by_suffix = iter(sorted(stems))
    return [
        (next(stems_by_suffix) + suffix, tag)
        for suffix, tag in SUFFIX_TAGS.items()
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def suffix_task(tmp_path_factory: pytest.TempPathFactory):
    """One-word sentences; every validation word is unseen in training (so it is `<unk>`)."""
    folder = tmp_path_factory.mktemp("suffix")
    words = _words(random.Random(0), 60)
    random.Random(1).shuffle(words)
    train, val = words[:90], words[90:]
    for name, part in (("train.tsv", train), ("val.tsv", val)):
        (folder / name).write_text("".join(f"{w}\t{t}\n\n" for w, t in part))
    data = load_task(TaggedData(train=str(folder / "train.tsv"), val=str(folder / "val.tsv")))
    assert (data.val.inputs[..., 0] == data.info.vocab.index("<unk>")).all()
    return data


def _tagger(data, char_features: bool):
    settings = Settings(
        char_features=char_features, char_dim=8, char_hidden=16, embedding_dim=8,
        hidden_size=16, lr=3e-2, batch_size=32, max_epochs=10, patience=None,
    )  # fmt: skip
    return train(settings, data).module


@torch.no_grad()
def _tags(module, data) -> list[str]:
    module.eval()
    logits = module(data.val.inputs, data.val.lengths)  # (N, 1, tags)
    return [data.info.labels[i] for i in logits[:, 0].argmax(-1).tolist()]


def test_unseen_words_are_tagged_by_their_suffix_only_with_char_features(suffix_task) -> None:
    truth = [suffix_task.info.labels[t] for t in suffix_task.val.targets[:, 0].tolist()]
    assert set(truth) == {"VERB", "NOUN"}

    with_chars = _tags(_tagger(suffix_task, char_features=True), suffix_task)
    assert with_chars == truth  # "-ing" words are verbs, "-ment" words nouns, all unseen

    words_only = _tagger(suffix_task, char_features=False)
    alike = _tags(words_only, suffix_task)
    assert len(set(alike)) == 1  # every <unk> alike: one tag for all
    accuracy = evaluate(words_only, suffix_task, "val")["val_acc"]
    assert accuracy == pytest.approx(truth.count(alike[0]) / len(truth)) and accuracy < 0.7


def test_char_features_refuse_a_task_without_characters() -> None:
    data = load_task(TaggedData(path="studies/data/tagged.tsv"))
    info = data.info.__class__(**{**vars(data.info), "chars": None})
    with pytest.raises(ValueError, match="char_features=True needs each token's characters"):
        SequenceNet(Settings(char_features=True), info)


def test_validate_names_char_features_on_a_task_without_tokens(tmp_path: Path) -> None:
    study = tiny_study(fixed={"batch_size": 32, "char_features": True})
    study["search"]["char_hidden"] = {"type": "categorical", "choices": [8, 16]}
    with pytest.raises(StudyFileError) as e:
        parse_study(study)
    assert e.value.problems == [
        "fixed.char_features: needs the characters of tagged tokens (task.source: tagged), "
        "which task.source adding has not; set it to false"
    ]
