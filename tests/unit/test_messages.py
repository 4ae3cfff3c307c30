"""What messages show a user: paths as they know them, near misses, exceptions on one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from trinity.messages import did_you_mean, one_line, shown_path

# ---------------------------------------------------------------------------- shown_path


def test_shown_path_is_relative_inside_the_working_folder(tmp_path: Path) -> None:
    assert shown_path(tmp_path / "content" / "pages.yaml") == str(Path("content", "pages.yaml"))
    assert shown_path(str(tmp_path / "d.yaml")) == "d.yaml"


def test_shown_path_of_a_relative_path_stays_relative(tmp_path: Path) -> None:
    assert shown_path(Path("content") / "pages.yaml") == str(Path("content", "pages.yaml"))


def test_shown_path_is_absolute_outside_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    assert shown_path(tmp_path / "other.yaml") == str(tmp_path / "other.yaml")


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


def test_one_line_folds_white_space_and_names_a_silent_exception() -> None:
    assert one_line(ValueError("line one\n   line two ")) == "line one line two"
    assert one_line(KeyboardInterrupt()) == "KeyboardInterrupt"
