"""YAML from users, parsed with bounds: ``yaml.safe_load`` plus limits on what a small file can cost.

``yaml.safe_load`` alone is safe against code execution but not against cost:

* "billion laughs": nine nested levels of aliases in a 1 KB file stand for 10^9 values.
  PyYAML itself shares aliased objects, so parsing is cheap, but anything that walks the
  result (pydantic validation, ``repr`` in an error message) expands every alias and takes
  minutes and gigabytes. :func:`load_user_yaml` counts the values the document stands for
  *before* constructing it, on PyYAML's node graph (each node measured once), and refuses
  documents beyond :data:`MAX_EXPANDED_NODES`.
* deep nesting ends in ``RecursionError`` inside the parser, an integer of thousands of
  digits in ``ValueError`` (Python's int-string limit), a file that is not UTF-8 in
  ``UnicodeDecodeError``: each becomes one :class:`~curatune.errors.ConfigError`.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

from curatune.errors import ConfigError

#: A config has a few hundred values; a generous bound that still stops alias bombs early.
MAX_EXPANDED_NODES = 100_000
#: PyYAML's scanner is quadratic in the depth of [ ] / { } nesting (2,000 levels: 4 s, and a
#: file of brackets would take hours), so deeper flow nesting is refused before parsing.
MAX_FLOW_DEPTH = 100

_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\']|\'\')*\'')
_BRACKETS = re.compile(r"[\[\]{}]")


class YamlSyntaxError(ConfigError):
    """The text is not YAML at all (``--set`` then takes it as plain text)."""


def load_user_yaml(text: str, where: str) -> Any:
    """Parse one YAML document from a user (a config file or a ``--set`` value).

    Raises ConfigError naming ``where`` for syntax errors, alias bombs, recursive aliases,
    nesting too deep to parse and numbers too large to convert.
    """
    if flow_depth(text) > MAX_FLOW_DEPTH:
        raise ConfigError(
            f"{where}: the YAML is nested too deeply to read (more than {MAX_FLOW_DEPTH} levels of [ or {{)"
        )
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return None
        expanded = _expanded_size(node, MAX_EXPANDED_NODES, where)
        if expanded > MAX_EXPANDED_NODES:
            raise ConfigError(
                f"{where}: the YAML aliases (*name) expand to more than {MAX_EXPANDED_NODES:,} values; "
                "refusing to expand it (a config needs a few hundred). Write the values out instead of nesting aliases."
            )
        return _construct(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise YamlSyntaxError(f"{where}:{pos} not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    except RecursionError:
        raise ConfigError(f"{where}: the YAML is nested too deeply to read (thousands of levels)") from None
    except ValueError as exc:  # int('9' * 5000): Python refuses to convert integers of > 4300 digits
        if "digits" in str(exc):
            raise ConfigError(f"{where}: a number is too long to read ({_short(str(exc).split(';')[0])})") from None
        raise ConfigError(f"{where}: a value cannot be read: {_short(str(exc))}") from None


def flow_depth(text: str) -> int:
    """Deepest nesting of [ ] and { } outside quoted strings (a cheap scan before parsing)."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(_QUOTED.sub("", text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(0, depth - 1)
    return deepest


def read_user_yaml_file(path: str, data: bytes) -> Any:
    """A config file's bytes -> parsed YAML; bytes that are not UTF-8 are one clear ConfigError."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}: not UTF-8 text: byte 0x{data[exc.start]:02x} at byte offset {exc.start} (line {line}); "
            "save the config as UTF-8"
        ) from None
    return load_user_yaml(text.removeprefix("\ufeff"), path)


def _construct(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node, limit: int, where: str) -> int:
    """How many values the document stands for with every alias expanded, stopping past ``limit``.

    Iterative post-order walk (no recursion limit), each distinct node measured once, so a
    bomb costs as many steps as it has nodes, not values. A node met again while still
    being measured is an alias to one of its own ancestors: a recursive structure."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            in_progress.discard(key)
            sizes[key] = min(limit + 1, 1 + sum(sizes[id(c)] for c in _children(node)))
            continue
        if key in sizes:
            continue
        if key in in_progress:
            raise ConfigError(f"{where}: a YAML alias refers to a value that contains it (a recursive structure)")
        in_progress.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in in_progress:
                raise ConfigError(f"{where}: a YAML alias refers to a value that contains it (a recursive structure)")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
