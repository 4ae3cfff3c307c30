"""Reading YAML and JSON files into plain data, with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from trinity.errors import InputError
from trinity.messages import shown_path

try:
    from yaml import CSafeLoader as _FastSafeLoader
except ImportError:  # a PyYAML built without libyaml: the pure-Python loader does it all
    from yaml import SafeLoader as _FastSafeLoader  # type: ignore[assignment]

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys, which PyYAML would silently overwrite."""


class _FastStrictLoader(_FastSafeLoader):
    """`_StrictLoader` parsing with libyaml, when PyYAML has it: several times as fast."""


def _construct_mapping(
    loader: _StrictLoader | _FastStrictLoader, node: yaml.MappingNode
) -> dict[Hashable, Any]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # '<<: *anchor' merge keys; construct_mapping below expands them
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "found an unhashable key", key_node.start_mark
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


for _loader in (_StrictLoader, _FastStrictLoader):
    _loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_data_file(path: Path, error: type[InputError]) -> Any:
    """Parse a YAML (.yaml, .yml) or JSON (.json) file; raise `error` naming file and line."""
    shown = shown_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error("file not found", path=shown) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read file: {exc}", path=shown) from None
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise error(f"invalid JSON at line {exc.lineno}: {exc.msg}", path=shown) from None
    try:
        return _parse_yaml(text)
    except yaml.YAMLError as exc:
        raise error(_describe_yaml_error(exc), path=shown) from None


def _parse_yaml(text: str) -> Any:
    """Strict YAML at libyaml's speed, its errors in the pure-Python parser's words."""
    try:
        return yaml.load(text, Loader=_FastStrictLoader)
    except yaml.YAMLError:
        # libyaml words some errors differently ("did not find expected ',' or ']'") and
        # names another context for some. Errors are rare, so the pure-Python loader reads
        # the text again: its error is the one users see, and should the two parsers ever
        # disagree on a document, its reading is the one Trinity always had.
        return yaml.load(text, Loader=_StrictLoader)


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    # PyYAML's context says where an unclosed bracket or quote began, often the real culprit.
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    started = ""
    if context and context_mark is not None:
        started = f" ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})"
    if mark is not None:
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        return f"invalid YAML at {where}: {problem}{started}"
    return f"invalid YAML: {problem}{started}"
