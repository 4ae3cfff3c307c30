"""yamlfile.load_data_file: strict YAML, JSON, and errors with lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from trinity.errors import ContentError
from trinity.yamlfile import (
    _FastStrictLoader,
    _StrictLoader,
    load_data_file,
)

BOTH_LOADERS = [
    pytest.param(_StrictLoader, id="pure-python"),
    pytest.param(_FastStrictLoader, id="libyaml"),
]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_and_json_load_to_the_same_data(tmp_path: Path) -> None:
    yaml_file = write(tmp_path, "a.yaml", "items:\n  - {name: x, n: 1}\n")
    json_file = write(tmp_path, "a.json", '{"items": [{"name": "x", "n": 1}]}')
    assert load_data_file(yaml_file, ContentError) == load_data_file(json_file, ContentError)


def test_merge_keys_work_and_explicit_keys_override_merged_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "base: &b {x: 1, z: 3}\nother:\n  <<: *b\n  x: 2\n")
    assert load_data_file(path, ContentError) == {
        "base": {"x": 1, "z": 3},
        "other": {"x": 2, "z": 3},
    }


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param("a: 1\nb:\n  c: 1\n  c: 2\n", 4, id="nested"),
        pytest.param("- {k: 1, k: 2}\n", 1, id="flow"),
        pytest.param("a:\n  <<: {x: 1}\n  y: 1\n  y: 2\n", 4, id="beside-merge"),
    ],
)
def test_duplicate_keys_are_refused(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, "d.yaml", text)
    with pytest.raises(ContentError, match=rf"line {line}, column \d+: duplicate key") as caught:
        load_data_file(path, ContentError)
    assert caught.value.path == "d.yaml"


def test_unhashable_key_is_an_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, "u.yaml", "? [a, b]\n: 1\n")
    with pytest.raises(ContentError, match="line 1"):
        load_data_file(path, ContentError)


def test_python_tags_are_not_constructed(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "x: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ContentError, match="invalid YAML"):
        load_data_file(path, ContentError)


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.json", '{\n  "a": 1,\n  "b": \n}\n')
    with pytest.raises(ContentError, match="invalid JSON at line 4") as caught:
        load_data_file(path, ContentError)
    assert caught.value.path == "bad.json"


@pytest.mark.parametrize(
    ("text", "problem", "opened"),
    [
        pytest.param(
            "title: T\nitems: [a, b\nnext: 1\n",
            "invalid YAML at line 3, column 5: expected ',' or ']', but got ':'",
            "(while parsing a flow sequence at line 2, column 8)",
            id="unclosed-bracket",
        ),
        pytest.param(
            'title: "T\nnext: 1\n',
            "invalid YAML at line 3, column 1: found unexpected end of stream",
            "(while scanning a quoted scalar at line 1, column 8)",
            id="unclosed-quote",
        ),
    ],
)
def test_yaml_error_names_where_an_unclosed_bracket_or_quote_was_opened(
    tmp_path: Path, text: str, problem: str, opened: str
) -> None:
    path = write(tmp_path, "open.yaml", text)
    with pytest.raises(ContentError) as caught:
        load_data_file(path, ContentError)
    assert str(caught.value) == f"open.yaml: {problem} {opened}"


def test_yaml_error_without_a_context_adds_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, "plain.yaml", "a: 1\na: 2\n")
    with pytest.raises(ContentError) as caught:
        load_data_file(path, ContentError)
    assert str(caught.value) == "plain.yaml: invalid YAML at line 2, column 1: duplicate key 'a'"


# ---------------------------------------------------------------------------- the two loaders


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="this PyYAML was built without libyaml")
def test_the_fast_loader_parses_with_libyaml() -> None:
    assert issubclass(_FastStrictLoader, yaml.CSafeLoader)


@pytest.mark.parametrize("loader", BOTH_LOADERS)
@pytest.mark.parametrize(
    ("text", "problem", "line", "column"),
    [
        pytest.param("a: 1\nb:\n  c: 1\n  c: 2\n", "duplicate key 'c'", 4, 3, id="nested"),
        pytest.param("- {k: 1, k: 2}\n", "duplicate key 'k'", 1, 10, id="flow"),
        pytest.param("a:\n  <<: {x: 1}\n  y: 1\n  y: 2\n", "duplicate key 'y'", 4, 3, id="merge"),
        pytest.param("a: 1\r\nb: 2\r\na: 3\r\n", "duplicate key 'a'", 3, 1, id="crlf"),
        pytest.param(
            "# ✓✓✓\nx: {ké: 1, 😀: 2, ké: 3}\n", "duplicate key 'ké'", 2, 18, id="unicode"
        ),
        pytest.param("a: 'x\u2028y'\nb: 1\na: 2\n", "duplicate key 'a'", 4, 1, id="u2028-break"),
        pytest.param("? [a, b]\n: 1\n", "found an unhashable key", 1, 3, id="unhashable"),
    ],
)
def test_both_loaders_mark_a_refused_key_where_it_stands(
    loader: Any, text: str, problem: str, line: int, column: int
) -> None:
    with pytest.raises(yaml.constructor.ConstructorError) as caught:
        yaml.load(text, Loader=loader)
    mark = caught.value.problem_mark
    assert mark is not None
    assert (caught.value.problem, mark.line + 1, mark.column + 1) == (problem, line, column)


def test_both_loaders_read_a_document_alike() -> None:
    text = (
        "base: &b {x: 1, when: 2024-05-01, ok: yes, none: ~, f: 1.5e3}\n"
        "other:\n  <<: *b\n  x: 2\n"
        "list: [1, '2', \"três\", {nested: [true, null]}]\n"
        "block: |\n  line one\n  line two\n"
    )
    pure = yaml.load(text, Loader=_StrictLoader)
    fast = yaml.load(text, Loader=_FastStrictLoader)
    assert fast == pure
    assert pure["other"]["x"] == 2
    assert pure["other"]["when"] == pure["base"]["when"]


def test_the_pure_python_loader_decides_when_the_fast_one_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused: list[str] = []

    class Refusing(_FastStrictLoader):
        def get_single_data(self) -> Any:
            refused.append("refused")
            raise yaml.YAMLError("libyaml disagrees")

    monkeypatch.setattr("trinity.yamlfile._FastStrictLoader", Refusing)
    path = write(tmp_path, "ok.yaml", "items: [a, b]\n")
    assert load_data_file(path, ContentError) == {"items": ["a", "b"]}
    assert refused == ["refused"]


def test_undecodable_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"title: caf\xe9\n")
    with pytest.raises(ContentError, match="cannot read file"):
        load_data_file(path, ContentError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ContentError, match="file not found") as caught:
        load_data_file(tmp_path / "missing.yaml", ContentError)
    assert caught.value.path == "missing.yaml"


def test_a_file_outside_the_working_folder_is_shown_by_its_full_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "d.yaml", "a: 1\na: 2\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(ContentError) as caught:
        load_data_file(path, ContentError)
    assert caught.value.path == str(path)
