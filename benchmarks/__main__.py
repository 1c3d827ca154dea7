"""`python -m benchmarks [--quick] [--only NAME ...]`: run every `benchmarks/bench_*.py`, print one
table of ratios, and write `benchmarks/results/<name>.json` plus the combined
`benchmarks/results/latest.json` (the newest result of every benchmark).

`quality` (hours: it tunes the real-data studies) runs only when named: `--only quality`.

`python -m benchmarks --table` prints latest.json as a Markdown table without running anything;
`python -m benchmarks --table --write-docs` puts that table into the README and
docs/performance.md, between their `<!-- BEGIN GENERATED benchmarks ... -->` markers (a test fails
when they differ from latest.json).

A benchmark module exposes `run(quick: bool) -> list[dict]`: rows with `name` (or `case`), `ratio`,
`target` (text), `met` (bool, or None for a row without a target) and the measured values behind
the ratio. It raises `benchmarks.common.Skip` when it cannot run here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.common import Skip, load_average, machine

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LATEST = RESULTS / "latest.json"
COLUMNS = ("benchmark", "case", "ratio", "target", "met", "measured")
DOCS_WITH_TABLE = (HERE.parent / "README.md", HERE.parent / "docs" / "performance.md")
REGENERATE = "python -m benchmarks --table --write-docs"
# Run only when named by --only: `quality` tunes real data sets, hours in a full run.
OPT_IN = ("quality",)


def discover() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def run_one(name: str, quick: bool) -> dict[str, Any]:
    print(f"== {name}{' (quick)' if quick else ''}", file=sys.stderr, flush=True)
    load_before, started = load_average(), time.perf_counter()
    rows: list[dict[str, Any]] = []
    error = None
    try:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        rows = [_normalised(name, r) for r in module.run(quick=quick)]
    except Skip as e:
        error = f"skipped: {e}"
    except Exception as e:  # noqa: BLE001 - one broken benchmark must not hide the others
        traceback.print_exc()
        error = f"failed: {type(e).__name__}: {e}"
    seconds = time.perf_counter() - started
    print(f"== {name}: {seconds:.0f} s{', ' + error if error else ''}", file=sys.stderr)
    return {
        "benchmark": name,
        "quick": quick,
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "load_before": load_before,
        "load_after": load_average(),
        "error": error,
        "rows": rows,
    }


def _normalised(benchmark: str, r: dict[str, Any]) -> dict[str, Any]:
    name = r.get("name") or r.get("case") or "?"
    rest = {k: v for k, v in r.items() if k not in ("name", "case", "benchmark")}
    return {"benchmark": benchmark, "name": name, **rest}


def table(results: list[dict[str, Any]]) -> str:
    """A Markdown table, columns padded so that it also reads well in a terminal."""
    lines = [list(COLUMNS)]
    for res in results:
        if res["error"]:
            lines.append([res["benchmark"], res["error"], "-", "-", "-", "-"])
        for r in res["rows"]:
            met = {True: "yes", False: "NO", None: "-"}[r.get("met")]
            ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.4g}"
            target = str(r.get("target", "-"))
            lines.append([r["benchmark"], r["name"], ratio, target, met, _summary(r)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    out = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
        for line in lines
    ]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def _summary(r: dict[str, Any]) -> str:
    """The row's own `summary`, else its first two plain measured values."""
    if "summary" in r:
        return str(r["summary"])
    skip = {"benchmark", "name", "ratio", "target", "met"}
    plain = [(k, v) for k, v in r.items() if k not in skip and isinstance(v, int | float | str)]
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in plain[:2])


def latest_table() -> str:
    """latest.json as the docs show it: the table, then where and when it was measured."""
    latest = json.loads(LATEST.read_text(encoding="utf-8"))
    results = list(latest["benchmarks"].values())
    return table(results) + "\n\n" + _provenance(latest["machine"], results)


def _provenance(info: dict[str, Any], results: list[dict[str, Any]]) -> str:
    days = sorted({str(res["finished"])[:10] for res in results})
    quick = [res["benchmark"] for res in results if res["quick"]]
    versions = ", ".join(
        f"{mod} {info[mod]}"
        for mod in ("torch", "pytorch_lightning", "optuna", "mlflow", "sqlalchemy")
        if mod in info
    )
    cpus: dict[str, list[str]] = {}  # each benchmark ran on the CPU of its own run
    for res in results:
        cpus.setdefault(res.get("cpu", info["cpu"]), []).append(res["benchmark"])
    where = (
        info["cpu"]
        if len(cpus) == 1
        else "; ".join(f"{cpu}: {', '.join(names)}" for cpu, names in cpus.items())
    )
    return (
        f"Measured {', '.join(days)}"
        + (f" (`--quick`: {', '.join(quick)})" if quick else "")
        + f" on {info['nproc']} cores ({where}), Python {info['python']}, {versions}; "
        "from `benchmarks/results/latest.json`."
    )


def write_docs() -> list[Path]:
    """Put the latest table into every doc that shows it; returns the docs that changed."""
    from tuner.reference import replace_generated  # the docs' one marker format

    changed = []
    body = latest_table()
    for doc in DOCS_WITH_TABLE:
        old = doc.read_text(encoding="utf-8")
        new = replace_generated(old, "benchmarks", body, REGENERATE)
        if new != old:
            doc.write_text(new, encoding="utf-8")
            changed.append(doc)
    return changed


def save(results: list[dict[str, Any]]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    info = machine()
    for res in results:
        (RESULTS / f"{res['benchmark']}.json").write_text(
            json.dumps({**res, "machine": info}, indent=2) + "\n", encoding="utf-8"
        )
    latest = LATEST
    combined: dict[str, Any] = {}
    if latest.exists():  # keep the benchmarks not run this time
        combined = json.loads(latest.read_text(encoding="utf-8")).get("benchmarks", {})
    combined.update({res["benchmark"]: {**res, "cpu": info["cpu"]} for res in results})
    ordered = {name: combined[name] for name in sorted(combined)}
    latest.write_text(
        json.dumps({"machine": info, "benchmarks": ordered}, indent=2) + "\n", encoding="utf-8"
    )
    return latest


def main(argv: list[str] | None = None) -> int:
    names = discover()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run rnn-tuner's benchmarks (docs/performance.md); print one table of ratios.",
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds: a minute or two")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only these: {', '.join(names)} ({', '.join(OPT_IN)} runs only when named)",
    )
    parser.add_argument(
        "--table", action="store_true", help="print the latest results as Markdown and exit"
    )
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="with --table: put it into README.md and docs/performance.md",
    )
    args = parser.parse_args(argv)
    if args.table:
        if not LATEST.exists():
            parser.error(f"no results yet ({LATEST}); run `python -m benchmarks` first")
        if args.write_docs:
            changed = write_docs()
            shown = [str(p.relative_to(HERE.parent)) for p in changed]
            print(f"{len(changed)} file(s) updated", *shown, sep="\n  ")
        else:
            print(latest_table())
        return 0
    chosen = [n.removeprefix("bench_") for n in args.only or [n for n in names if n not in OPT_IN]]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; valid: {', '.join(names)}")
    started = time.perf_counter()
    results = [run_one(name, args.quick) for name in chosen]
    path = save(results)
    print(table(results))
    print(
        f"\n{time.perf_counter() - started:.0f} s in all; load average now {load_average()} "
        f"on {machine()['nproc']} cores; results in {path}"
    )
    return 1 if any(res["error"] and res["error"].startswith("failed") for res in results) else 0


if __name__ == "__main__":
    sys.exit(main())
