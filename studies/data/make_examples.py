"""Regenerate the example data files next to this script (fixed seeds, nothing downloaded).

    python studies/data/make_examples.py

waves.npz    classification: 600 noisy sine / square / sawtooth waves of 20-60 steps (ragged)
load.csv     regression: 2000 days of a synthetic electricity load with weekly and yearly seasons
stores.csv   forecasting many series: daily sales of 8 shops in long format (one row per shop and
             day), of different sizes and opening dates, with weekly seasons and promotions
stories.txt  language modelling: ~80 KB of English-like sentences from a small grammar
tagged.tsv   tagging: 500 part-of-speech-tagged sentences whose ambiguous words ("watch", "light")
             need context to tag
"""

from __future__ import annotations

import datetime as dt
import random
import textwrap
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 0


def waves(path: Path, n: int = 600) -> None:
    rng = np.random.default_rng(SEED)
    shapes = {
        "sine": lambda p: np.sin(2 * np.pi * p),
        "square": lambda p: np.sign(np.sin(2 * np.pi * p)),
        "sawtooth": lambda p: 2 * (p - np.floor(p + 0.5)),
    }
    names = list(shapes)
    x, y = np.empty(n, dtype=object), []
    for i in range(n):
        name = names[i % len(names)]
        steps = np.arange(rng.integers(20, 61))
        phase = steps / rng.uniform(6, 20) + rng.uniform(0, 1)  # in cycles
        wave = rng.uniform(0.6, 1.4) * shapes[name](phase) + 0.3 * rng.standard_normal(len(steps))
        x[i] = wave.astype(np.float32)[:, None]  # (T_i, 1)
        y.append(name)
    np.savez_compressed(path, X=x, y=np.array(y))


def load(path: Path, days: int = 2000) -> None:
    rng = np.random.default_rng(SEED)
    start = dt.date(2019, 1, 1)
    weather = 0.0
    lines = ["date,day_of_week,temperature,holiday,load"]
    for t in range(days):
        day = start + dt.timedelta(days=t)
        weather = 0.8 * weather + rng.normal(0, 2.0)  # a few days of memory
        temp = 12 + 10 * np.sin(2 * np.pi * (day.timetuple().tm_yday - 110) / 365.25) + weather
        holiday = int((day.month, day.day) in {(1, 1), (5, 1), (12, 25), (12, 26)})
        weekend = day.weekday() >= 5
        demand = (
            100 + 0.01 * t - 15 * weekend - 20 * holiday
            + 1.5 * max(0.0, 15 - temp) + 2.0 * max(0.0, temp - 22)
            + rng.normal(0, 3.0)
        )  # fmt: skip
        lines.append(f"{day},{day.weekday()},{temp:.2f},{holiday},{demand:.2f}")
    path.write_text("\n".join(lines) + "\n")


def stores(path: Path, shops: int = 8, days: int = 364) -> None:
    """Long format, rows by date then shop, as a till system exports them. Each shop opens on its
    own day (so series differ in length), sells on its own scale with its own weekly profile, and
    runs promotions on about one day in seven that lift sales by a quarter to a half."""
    rng = np.random.default_rng(SEED)
    start = dt.date(2022, 1, 1)
    names = ["north", "south", "east", "west", "harbour", "station", "market", "airport"][:shops]
    opens = rng.integers(0, days - 240, shops)  # every shop keeps at least 240 days
    level = rng.uniform(50, 500, shops)
    weekly = 1 + rng.uniform(0.1, 0.5, (shops, 1)) * np.sin(
        2 * np.pi * (np.arange(7) + rng.integers(0, 7, (shops, 1))) / 7
    )  # (shops, 7) multiplicative day-of-week profile
    growth = rng.uniform(-0.3, 0.6, shops)  # change over the year, relative
    lines = ["store,date,promo,sales"]
    for t in range(days):
        day = start + dt.timedelta(days=t)
        for k, name in enumerate(names):
            if t < opens[k]:
                continue
            promo = int(rng.random() < 0.15)
            mean = level[k] * weekly[k, day.weekday()] * (1 + growth[k] * t / days)
            sales = mean * (1 + promo * rng.uniform(0.25, 0.5)) * rng.lognormal(0, 0.08)
            lines.append(f"{name},{day},{promo},{sales:.1f}")
    path.write_text("\n".join(lines) + "\n")


PEOPLE = [
    "the old man",
    "a little girl",
    "my brother",
    "the teacher",
    "Anna",
    "Tom",
    "the baker",
    "her mother",
    "the farmer",
    "a young sailor",
    "the king",
    "our neighbour",
]
ANIMALS = ["the cat", "a small dog", "the brown horse", "an owl", "the fox", "a black bird"]
THINGS = [
    "the door",
    "a red apple",
    "the letter",
    "an old map",
    "the lamp",
    "a warm coat",
    "the boat",
    "a loaf of bread",
    "the garden gate",
    "a silver key",
]
PLACES = [
    "in the garden",
    "near the river",
    "under the bridge",
    "at the market",
    "in the forest",
    "by the sea",
    "on the hill",
    "behind the house",
    "in the kitchen",
    "at school",
]
TIMES = [
    "In the morning",
    "After the rain",
    "Late at night",
    "One cold winter day",
    "On Sunday",
    "Before dinner",
    "At last",
    "Every summer",
]
TRANSITIVE = ["found", "opened", "carried", "saw", "lost", "painted", "watched", "followed"]
INTRANSITIVE = ["laughed", "slept", "waited", "sang", "ran away", "smiled", "cried", "listened"]
ADVERBS = ["quietly", "happily", "slowly", "at once", "again", "for a long time", "all day"]
ADJECTIVES = ["tired", "happy", "hungry", "afraid", "very kind", "quite sure", "cold", "lost"]


def stories(path: Path, size: int = 80_000) -> None:
    rng = random.Random(SEED)

    def someone() -> str:
        return rng.choice(PEOPLE + ANIMALS)

    templates = [
        lambda: f"{someone()} {rng.choice(TRANSITIVE)} {rng.choice(THINGS)} {rng.choice(PLACES)}.",
        lambda: (
            f"{rng.choice(TIMES)}, {someone()} {rng.choice(INTRANSITIVE)} {rng.choice(ADVERBS)}."
        ),
        lambda: f'"I am {rng.choice(ADJECTIVES)}," said {someone()}.',
        lambda: (
            f"{someone()} was {rng.choice(ADJECTIVES)}, so {someone()} {rng.choice(INTRANSITIVE)}."
        ),
        lambda: (
            f"When {someone()} {rng.choice(TRANSITIVE)} {rng.choice(THINGS)}, "
            f"{someone()} {rng.choice(INTRANSITIVE)} {rng.choice(ADVERBS)}."
        ),
    ]
    paragraphs, total = [], 0
    while total < size:
        sentences = [rng.choice(templates)() for _ in range(rng.randint(3, 6))]
        text = " ".join(s[0].upper() + s[1:] for s in sentences)
        paragraphs.append(textwrap.fill(text, width=72))
        total += len(paragraphs[-1]) + 2
    path.write_text("\n\n".join(paragraphs) + "\n")


# Words that are nouns after a determiner or adjective and verbs after a subject or auxiliary.
AMBIGUOUS = ["watch", "play", "light", "book", "fish", "walk", "rain", "dance"]
LEXICON = {
    "DET": ["the", "a", "every", "this", "that"],
    "ADJ": ["small", "old", "red", "quiet", "happy", "long", "light"],
    "NOUN": ["dog", "river", "teacher", "garden", "letter", "child", "house", *AMBIGUOUS],
    "VERB": ["see", "find", "open", "carry", "like", "paint", *AMBIGUOUS],
    "AUX": ["can", "will", "must", "should"],
    "PRON": ["they", "we", "you", "I"],
    "PROPN": ["Anna", "Tom", "Lisbon", "Maria"],
    "ADP": ["in", "near", "under", "with", "after"],
    "ADV": ["today", "slowly", "often", "again", "soon"],
}


def tagged(path: Path, n: int = 500) -> None:
    rng = random.Random(SEED)

    def word(tag: str) -> tuple[str, str]:
        return rng.choice(LEXICON[tag]), tag

    def noun_phrase() -> list[tuple[str, str]]:
        if rng.random() < 0.15:
            return [word("PROPN")]
        adjectives = [word("ADJ") for _ in range(rng.choice([0, 0, 1, 2]))]
        return [word("DET"), *adjectives, word("NOUN")]

    sentences = []
    for _ in range(n):
        subject = [word("PRON")] if rng.random() < 0.3 else noun_phrase()
        # A noun-phrase subject needs an auxiliary so that the bare verb form is grammatical.
        aux = [word("AUX")] if subject[-1][1] != "PRON" or rng.random() < 0.5 else []
        sentence = [*subject, *aux, word("VERB"), *noun_phrase()]
        if rng.random() < 0.4:
            sentence += [word("ADP"), *noun_phrase()]
        if rng.random() < 0.3:
            sentence.append(word("ADV"))
        sentence.append((rng.choice([".", "!"]), "PUNCT"))
        sentences.append("\n".join(f"{w}\t{t}" for w, t in sentence))
    path.write_text("\n\n".join(sentences) + "\n")


if __name__ == "__main__":
    waves(HERE / "waves.npz")
    load(HERE / "load.csv")
    stores(HERE / "stores.csv")
    stories(HERE / "stories.txt")
    tagged(HERE / "tagged.tsv")
    for name in ("waves.npz", "load.csv", "stores.csv", "stories.txt", "tagged.tsv"):
        print(f"{HERE / name}: {(HERE / name).stat().st_size / 1000:.0f} KB")
