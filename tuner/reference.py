"""The study file's reference, generated from the code so that the docs cannot drift from it.

    rnn-tuner schema                     # the JSON Schema of a study file (editors validate with it)
    rnn-tuner schema --markdown          # the key tables of docs/study-files.md and docs/data.md
    rnn-tuner schema --write-docs docs   # rewrite those tables and docs/study-file.schema.json

The pydantic models of `tuner.config` and the dataclasses of `models.config` / `models.data.config`
are the one source: each field's description (a `Field(description=...)`, or the docstring under
a dataclass field) becomes its line in the tables and in the schema. A doc keeps its prose by
hand; only the parts between `<!-- BEGIN GENERATED name ... -->` and `<!-- END GENERATED name -->`
are written here, and tests/test_docs.py fails when a committed doc differs from what this makes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from models.config import MAPPING_FORMS, Settings
from models.data.config import SOURCES
from tuner.config import (
    Budget,
    CategoricalDist,
    Cluster,
    FloatDist,
    IntDist,
    Objective,
    RayBlock,
    Resources,
    SamplerBlock,
    StudyBlock,
    StudyConfig,
    Tracking,
)

SCHEMA_FILE = "study-file.schema.json"
REGENERATE = "rnn-tuner schema --write-docs docs"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# doc file -> its generated tables: block name -> the model or dataclass the table describes
TABLES: dict[str, dict[str, Any]] = {
    "study-files.md": {
        "top-level": StudyConfig,
        "study": StudyBlock,
        "settings": Settings,
        "search.float": FloatDist,
        "search.int": IntDist,
        "search.categorical": CategoricalDist,
        "objective": Objective,
        "sampler-pruner": SamplerBlock,
        "budget": Budget,
        "tracking": Tracking,
        "cluster": Cluster,
        "cluster.ray": RayBlock,
        "cluster.resources": Resources,
    },
    "data.md": {f"task.{name}": cls for name, cls in SOURCES.items()},
}


USER_PATTERN = r"^user\..+"  # `user.NAME`: the settings of your own network (`Settings.user`)


def study_file_schema() -> dict[str, Any]:
    """The JSON Schema of a study file. `fixed:` is given the settings' own schema and `search:`
    their names, so that an editor completes and checks setting names in both (the tuner itself
    checks them across blocks, in `tuner.config`)."""
    schema = StudyConfig.model_json_schema()
    settings = _schema_of(Settings)
    for name, form in MAPPING_FORMS.items():  # `fixed:` may write these as a mapping too
        prop = settings["properties"][name]
        plain = {k: prop.pop(k) for k in ("type", "enum") if k in prop}
        prop["anyOf"] = [plain, {"type": "object", "description": f"`{form}`"}]
    settings["patternProperties"] = {USER_PATTERN: {"description": "A setting of your network."}}
    schema["$defs"]["Settings"] = settings
    fixed = schema["properties"]["fixed"]
    schema["properties"]["fixed"] = {
        "$ref": "#/$defs/Settings",
        "description": fixed["description"],
    }
    schema["properties"]["search"]["propertyNames"] = {
        "anyOf": [{"enum": list(settings["properties"])}, {"pattern": USER_PATTERN}]
    }
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def schema_text() -> str:
    return json.dumps(study_file_schema(), indent=2) + "\n"


def _schema_of(kind: Any) -> dict[str, Any]:
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return kind.model_json_schema()
    return TypeAdapter(kind).json_schema()


# ---------------------------------------------------------------- Markdown tables


def markdown_tables() -> dict[str, dict[str, str]]:
    """doc file -> block name -> its Markdown table."""
    return {doc: {name: key_table(kind) for name, kind in blocks.items()} for doc, blocks in TABLES.items()}  # fmt: skip


def markdown_text() -> str:
    """Every table between the markers that hold it in its doc, for `rnn-tuner schema --markdown`."""
    parts = []
    for doc, blocks in markdown_tables().items():
        parts += [f"<!-- docs/{doc} -->"]
        parts += [marked(name, body, REGENERATE) for name, body in blocks.items()]
    return "\n\n".join(parts) + "\n"


def key_table(kind: Any) -> str:
    """key | type | default | meaning, one row per field, from the JSON Schema."""
    schema = _schema_of(kind)
    required = set(schema.get("required", ()))
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, prop in schema["properties"].items():
        default = "required" if key in required else _default(prop)
        meaning = " ".join(prop.get("description", "").split())
        rows.append(f"| `{key}` | {_type(prop)} | {default} | {meaning} |")
    return "\n".join(rows)


def _default(prop: dict[str, Any]) -> str:
    if "default" not in prop:
        return "-"  # a default factory: the meaning says what it gives
    value = prop["default"]
    if value == {} or value == []:
        return "none"
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def _type(prop: dict[str, Any]) -> str:
    """A JSON Schema type in YAML words: `int >= 1 or null`, `` `rnn`, `lstm` or `gru` ``."""
    if "anyOf" in prop or "oneOf" in prop:
        kinds = [_type(p) for p in prop.get("anyOf", prop.get("oneOf"))]
        return " or ".join(dict.fromkeys(kinds))  # a union of mappings is one `mapping`
    if "$ref" in prop:
        return "mapping"
    if "const" in prop:
        return f"`{prop['const']}`"
    if "enum" in prop:
        names = [f"`{v}`" for v in prop["enum"]]
        return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if kind == "object":
        return "mapping"
    words = {"integer": "int", "number": "float", "string": "str", "boolean": "bool"}
    return words.get(kind, kind) + _bounds(prop)


def _bounds(prop: dict[str, Any]) -> str:
    bounds = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    found = [f" {op} {prop[k]}" for k, op in bounds.items() if k in prop]
    if "minLength" in prop:
        found.append(f", at least {prop['minLength']} long")
    return "".join(found)


# ---------------------------------------------------------------- the generated parts of a doc


def marked(name: str, body: str, command: str) -> str:
    return (
        f"<!-- BEGIN GENERATED {name} by `{command}`: edit the code, not this -->\n\n"
        f"{body}\n\n<!-- END GENERATED {name} -->"  # blank lines: Markdown renders the table
    )


def _block_pattern(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"<!-- BEGIN GENERATED {re.escape(name)} [^\n]*-->\n.*?<!-- END GENERATED {re.escape(name)} -->",
        re.DOTALL,
    )


def replace_generated(text: str, name: str, body: str, command: str) -> str:
    """`text` with the block `name` holding `body`; a doc without that block is an error."""
    pattern = _block_pattern(name)
    if not pattern.search(text):
        raise KeyError(f"no `<!-- BEGIN GENERATED {name} ...-->` block; add one where it belongs")
    return pattern.sub(lambda _: marked(name, body, command), text, count=1)


def generated_docs(docs: Path) -> dict[Path, str]:
    """What every generated file under `docs` should hold: the schema and the docs' tables."""
    expected = {docs / SCHEMA_FILE: schema_text()}
    for doc, blocks in markdown_tables().items():
        text = (docs / doc).read_text(encoding="utf-8")
        for name, body in blocks.items():
            text = replace_generated(text, name, body, REGENERATE)
        expected[docs / doc] = text
    return expected


def write_docs(docs: Path) -> list[Path]:
    """Rewrite the generated files under `docs`; returns the ones that changed."""
    changed = []
    for path, text in generated_docs(docs).items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed
