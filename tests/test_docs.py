"""Docs that cannot drift: the generated parts of the docs equal what their commands make now, the
shipped study files pass the published JSON Schema, and the docs' examples are what the code says."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from benchmarks.__main__ import DOCS_WITH_TABLE, latest_table
from benchmarks.__main__ import REGENERATE as REGENERATE_BENCHMARKS
from tests.conftest import ROOT, STUDIES, tiny_study
from tuner.cli import main
from tuner.config import parse_study
from tuner.reference import REGENERATE, SCHEMA_FILE, generated_docs, study_file_schema

DOCS = ROOT / "docs"
SCHEMA_LINE = f"# yaml-language-server: $schema=../docs/{SCHEMA_FILE}"


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", sorted(generated_docs(DOCS)), ids=lambda p: p.name)
def test_the_study_file_reference_is_what_the_code_generates(path: Path):
    expected = generated_docs(DOCS)[path]
    assert path.read_text(encoding="utf-8") == expected, (
        f"{path.relative_to(ROOT)} differs from the reference generated from the code; "
        f"run `{REGENERATE}` and commit the result"
    )


@pytest.mark.parametrize("doc", DOCS_WITH_TABLE, ids=lambda p: p.name)
def test_the_benchmark_tables_are_what_latest_json_generates(doc: Path):
    text = doc.read_text(encoding="utf-8")
    block = re.search(r"<!-- BEGIN GENERATED benchmarks [^\n]*-->\n(.*?)\n<!-- END", text, re.S)
    assert block is not None, f"{doc.name} has no generated benchmarks block"
    assert block.group(1).strip() == latest_table(), (
        f"{doc.relative_to(ROOT)}'s benchmark table differs from benchmarks/results/latest.json; "
        f"run `{REGENERATE_BENCHMARKS}` and commit the result"
    )


def test_the_schema_command_prints_the_committed_schema_and_tables():
    assert cli("schema") == (DOCS / SCHEMA_FILE).read_text(encoding="utf-8")
    tables = cli("schema", "--markdown")
    assert "| `heartbeat_interval` | int >= 1 | `10` |" in tables
    assert "| `max_trials` | int >= 1 or null | `null` |" in tables
    assert "| `delay` | int >= 0 | `20` |" in tables  # a data source's key, for docs/data.md


def test_write_docs_puts_back_a_table_edited_by_hand(tmp_path: Path):
    docs = shutil.copytree(DOCS, tmp_path / "docs")
    page = docs / "study-files.md"
    page.write_text(page.read_text().replace("| `grace_period` |", "| `grace` |"))
    out = cli("schema", "--write-docs", str(docs))
    assert "1 file(s) updated" in out and "study-files.md" in out
    assert page.read_text() == (DOCS / "study-files.md").read_text()


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_study_file_names_the_schema_and_passes_it(path: Path):
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == SCHEMA_LINE, "editors find the schema on the first line"
    assert (path.parent / SCHEMA_LINE.split("=", 1)[1]).resolve() == DOCS / SCHEMA_FILE
    jsonschema.validate(yaml.safe_load(text), study_file_schema())


def test_the_schema_rejects_what_validate_rejects_in_one_block():
    bad = tiny_study(fixed={"cell": "lstmx"}, budget={"n_trials": 0})
    errors = jsonschema.Draft202012Validator(study_file_schema()).iter_errors(bad)
    where = {"/".join(map(str, e.absolute_path)) for e in errors}
    assert where == {"fixed/cell", "budget/n_trials"}


def test_the_error_example_in_study_files_is_what_validate_prints(workdir: Path):
    text = (DOCS / "study-files.md").read_text(encoding="utf-8")
    study, printed = re.search(
        r"For example, `studies/mine.yaml`:\n\n```yaml\n(.*?)```.*?\n```\n(.*?)```", text, re.S
    ).groups()
    (workdir / "studies").mkdir()
    (workdir / "studies" / "mine.yaml").write_text(study)
    result = CliRunner().invoke(main, ["validate", "studies/mine.yaml"])
    assert result.exit_code == 2
    assert result.output == printed


def test_the_complete_example_in_study_files_is_the_quickstart():
    text = (DOCS / "study-files.md").read_text(encoding="utf-8")
    shown = re.search(r"this is `studies/quickstart.yaml`\):\n\n```yaml\n(.*?)```", text, re.S)
    assert shown is not None
    assert shown.group(1) == (STUDIES / "quickstart.yaml").read_text(encoding="utf-8")


def test_the_stopping_example_in_study_files_validates_and_means_what_it_says():
    text = (DOCS / "study-files.md").read_text(encoding="utf-8")
    shown = re.search(r"### Stopping a study\n.*?```yaml\n(.*?)```", text, re.S)
    assert shown is not None
    budget = yaml.safe_load(shown.group(1))["budget"]
    jsonschema.validate(tiny_study(budget=budget), study_file_schema())
    cfg = parse_study(tiny_study(budget=budget))
    assert (cfg.budget.stop_after_no_improvement, cfg.budget.target) == (20, 0.01)
    assert cfg.budget.wall_time == 8 * 3600
