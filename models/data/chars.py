"""Each token's characters, for the character features of a tagger (`Settings.char_features`).

Tagged inputs carry, after each token's word id, `WORD_SLOTS` character ids: a word-start marker,
the characters, a word-end marker, then padding (id 0). A word longer than `WORD_CHARS` keeps its
first and last `WORD_CHARS // 2` characters, where prefixes and suffixes carry the morphology. The
character vocabulary comes from the training split only; a character it does not hold is `<unk>`.
"""

from __future__ import annotations

from collections.abc import Iterable

CHAR_PAD, CHAR_UNK, WORD_START, WORD_END = "<pad>", "<unk>", "<w>", "</w>"
CHAR_SPECIALS = (CHAR_PAD, CHAR_UNK, WORD_START, WORD_END)  # ids 0, 1, 2, 3
WORD_CHARS = 16  # characters kept per word
WORD_SLOTS = WORD_CHARS + 2  # with the start and end markers


def char_vocab(words: Iterable[str]) -> dict[str, int]:
    """Character -> id: the specials, then every character of `words` (the training tokens) in
    code-point order, so the ids never depend on the order of the file."""
    seen = sorted({c for word in words for c in word})  # a special is no single character
    return {c: i for i, c in enumerate((*CHAR_SPECIALS, *seen))}


def char_ids(word: str, chars: dict[str, int]) -> list[int]:
    """`WORD_SLOTS` ids: start marker, the (shortened) word's characters, end marker, padding."""
    if len(word) > WORD_CHARS:
        half = WORD_CHARS // 2
        word = word[:half] + word[-half:]
    unk = chars[CHAR_UNK]
    ids = [chars[WORD_START], *(chars.get(c, unk) for c in word), chars[WORD_END]]
    return ids + [chars[CHAR_PAD]] * (WORD_SLOTS - len(ids))
