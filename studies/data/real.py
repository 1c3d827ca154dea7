"""Convert the real data sets behind the studies/real-*.yaml files, from packages that ship them.

    pip install -e '.[real-data]'                  # sktime, rdata, hironsancorpus, statsmodels
    apt-get install r-cran-janeaustenr             # Jane Austen's novels (or: apt-get download
                                                   # it and dpkg-deb -x it, then pass --austen)
    python studies/data/real.py                    # writes studies/data/real/

Nothing is downloaded at run time: every data set comes from a package's own files. The outputs
are committed (a few MB), so the studies and the tests need none of these packages; run this to
check or rebuild them (the same packages give the same files).

- japanese-vowels-{train,test}.npz: UEA JapaneseVowels through sktime's load_japanese_vowels,
  its official split (270 train, 370 test), ragged (T_i, 12) sequences, labels "1".."9".
- airline.csv: monthly airline passengers 1949-1960 (Box & Jenkins' Series G), sktime load_airline.
- grunfeld.csv: Grunfeld's investment panel, 11 US firms x 20 years (1935-1954) of gross
  investment, market value and capital stock, as statsmodels ships it (Kleiber & Zeileis' 2008
  recreation from Grunfeld's thesis), in long format: one row per (firm, year).
- austen-{train,valid,test}.txt: Jane Austen's novels from R's janeaustenr (read with rdata),
  split by novel: Sense and Sensibility + Pride and Prejudice train, Northanger Abbey validates,
  Persuasion tests.
- hironsan-ner-{train,test}.tsv: the IOB2 Japanese named-entity sample of hironsancorpus, its
  own split (the first 90% of sentences train, the rest test), as `token<TAB>tag`.
"""

from __future__ import annotations

import argparse
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "real"
AUSTEN = Path("/usr/lib/R/site-library/janeaustenr")
NOVELS = {
    "train": ("sensesensibility", "prideprejudice"),
    "valid": ("northangerabbey",),
    "test": ("persuasion",),
}


def japanese_vowels(out: Path) -> None:
    from sktime.datasets import load_japanese_vowels

    for split in ("train", "test"):
        x, y = load_japanese_vowels(split=split.upper(), return_type="nested_univ")
        sequences = np.empty(len(x), dtype=object)
        # nested frame: one row per utterance, one cell (a Series over time) per channel
        sequences[:] = [np.stack([cell.to_numpy() for cell in row], axis=1) for row in x.itertuples(index=False)]  # fmt: skip
        np.savez_compressed(out / f"japanese-vowels-{split}.npz", X=sequences, y=np.asarray(y, dtype=str))  # fmt: skip


def airline(out: Path) -> None:
    from sktime.datasets import load_airline

    series = load_airline()
    rows = [f"{period},{int(value)}" for period, value in series.items()]
    (out / "airline.csv").write_text("month,passengers\n" + "\n".join(rows) + "\n")


def grunfeld(out: Path) -> None:
    from statsmodels.datasets import grunfeld as data

    panel = data.load_pandas().data
    rows = [f"{r.firm},{int(r.year)},{r.invest:g},{r.value:g},{r.capital:g}" for r in panel.itertuples()]  # fmt: skip
    (out / "grunfeld.csv").write_text("firm,year,invest,value,capital\n" + "\n".join(rows) + "\n")


def austen(out: Path, package: Path) -> None:
    """R keeps a package's data as a lazy-load database: an index (.rdx, an RDS file) of each
    object's offset and length in the .rdb file, where it is a 4-byte length and zlib data."""
    import rdata

    base = package / "data" / "Rdata"
    with warnings.catch_warnings():  # rdata warns that .rdx is not a usual RDS file name
        warnings.simplefilter("ignore")
        index = rdata.conversion.convert(rdata.parser.parse_file(base.with_suffix(".rdx")))
    blob = base.with_suffix(".rdb").read_bytes()

    def novel(name: str) -> str:
        offset, length = (int(v) for v in index["variables"][name])
        raw = zlib.decompress(blob[offset + 4 : offset + length])
        assert len(raw) == struct.unpack(">I", blob[offset : offset + 4])[0]
        return "\n".join(str(line) for line in rdata.conversion.convert(rdata.parser.parse_data(raw)))  # fmt: skip

    for split, names in NOVELS.items():
        (out / f"austen-{split}.txt").write_text("\n".join(novel(n) for n in names) + "\n")


def hironsan(out: Path) -> None:
    from hironsan.corpus import hiron2016

    for split in ("train", "test"):
        sentences = ["\n".join(f"{t[0]}\t{t[-1]}" for t in s) for s in hiron2016.iob_sents(split) if s]  # fmt: skip
        (out / f"hironsan-ner-{split}.tsv").write_text("\n\n".join(sentences) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--austen", type=Path, default=AUSTEN, help="janeaustenr's R package folder")  # fmt: skip
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    japanese_vowels(args.out)
    airline(args.out)
    grunfeld(args.out)
    austen(args.out, args.austen)
    hironsan(args.out)
    for path in sorted(args.out.iterdir()):
        print(f"{path.stat().st_size:>9}  {path}")


if __name__ == "__main__":
    main()
