"""yamlfile.load_data_file and did_you_mean: strict YAML, JSON, and errors with lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from trinity.errors import ContentError
from trinity.yamlfile import did_you_mean, load_data_file


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
    assert caught.value.path == str(path)


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
    assert caught.value.path == str(path)


def test_undecodable_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"title: caf\xe9\n")
    with pytest.raises(ContentError, match="cannot read file"):
        load_data_file(path, ContentError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ContentError, match="file not found"):
        load_data_file(tmp_path / "missing.yaml", ContentError)


@pytest.mark.parametrize(
    ("word", "choices", "expected"),
    [
        ("modle", ["model", "provider"], " (did you mean 'model'?)"),
        ("olama", ("ollama", "openai"), " (did you mean 'ollama'?)"),
        ("xyz", ["model"], ""),
        ("x", [], ""),
    ],
)
def test_did_you_mean(word: str, choices: list[str], expected: str) -> None:
    assert did_you_mean(word, choices) == expected
