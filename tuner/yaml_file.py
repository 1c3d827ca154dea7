"""Reading a YAML file that anyone may have written: bytes -> data, or problems naming the line.

Refused before parsing: a file too large to be a study file, binary bytes, text that is not
UTF-8. Refused after composing (before building any value): more than one document, a key given
twice in one mapping (YAML's "last one wins" would silently drop the first), and anchors and
aliases that expand into more values than any study file needs (an "alias bomb"). Every key's
line is kept, so a problem found later by key path can say where it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1_000_000  # a study file is a few kilobytes
MAX_VALUES = 100_000  # values after expanding aliases


class YamlProblems(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def read_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    """The file's data and the line of every key path (`search.lr.step` -> 12)."""
    text = _text(path)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise YamlProblems(["the file is empty (or only comments); see studies/ for examples"])
        _check_size(node)
        lines: dict[str, int] = {}
        duplicates: list[str] = []
        _walk(node, "", lines, duplicates, set())
        if duplicates:
            raise YamlProblems(duplicates)
        return loader.construct_document(node), lines
    except yaml.composer.ComposerError as e:
        if "single document" in str(e):
            raise YamlProblems(
                [f"line {_line(e)}: a study file is one YAML document; remove the `---` split"]
            ) from None
        raise YamlProblems([_yaml_error(e)]) from None
    except yaml.YAMLError as e:
        raise YamlProblems([_yaml_error(e)]) from None
    finally:
        loader.dispose()


def _text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise YamlProblems(["is a directory; give a study file (.yaml)"]) from None
    except FileNotFoundError:
        raise YamlProblems([f"no such file (resolved to {path.resolve()})"]) from None
    except OSError as e:
        raise YamlProblems([f"cannot be read: {e.strerror}"]) from None
    if len(raw) > MAX_BYTES:
        raise YamlProblems(
            [
                f"{len(raw) / 1e6:.1f} MB is too large for a study file (at most "
                f"{MAX_BYTES // 1_000_000} MB; they are a few KB); is it the right file?"
            ]
        )
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise YamlProblems(["UTF-16 text; save the file as UTF-8"])
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise YamlProblems([f"line {line}: a NUL byte: a binary file, not a YAML study file"])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise YamlProblems(
            [f"line {line}: not valid UTF-8 (byte {e.start}); save the file as UTF-8"]
        ) from None


def _check_size(root: yaml.Node) -> None:
    """Values after expanding aliases, counted once per distinct node (memoised)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = 1  # a recursive alias counts once
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(v) for v in node.value)
        sizes[id(node)] = total = min(total, MAX_VALUES + 1)
        return total

    if size(root) > MAX_VALUES:
        raise YamlProblems(
            [
                f"anchors and aliases expand to more than {MAX_VALUES} values; a study file "
                "needs far fewer (is it an alias bomb?)"
            ]
        )


def _walk(
    node: yaml.Node, path: str, lines: dict[str, int], dups: list[str], seen: set[int]
) -> None:
    if id(node) in seen:  # an alias: its node was walked where it was defined
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else "<complex key>"
            line = key.start_mark.line + 1
            if name in first:
                where = f" in {path}" if path else ""
                dups.append(
                    f"line {line}: duplicate key {_short(name)!r}{where} (first at line "
                    f"{first[name]}); YAML would silently keep only the last, so keep one"
                )
            first.setdefault(name, line)
            child = f"{path}.{name}" if path else name
            lines.setdefault(child, line)
            _walk(value, child, lines, dups, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            child = f"{path}.{i}" if path else str(i)
            lines.setdefault(child, value.start_mark.line + 1)
            _walk(value, child, lines, dups, seen)


def _line(e: yaml.MarkedYAMLError) -> int:
    mark = e.problem_mark or e.context_mark
    return mark.line + 1 if mark else 1


def _yaml_error(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.MarkedYAMLError):
        what = " ".join(str(p) for p in (e.context, e.problem) if p)
        return f"line {_line(e)}: not valid YAML: {_short(what, 200)}"
    return f"not valid YAML: {_short(str(e), 200)}"


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
