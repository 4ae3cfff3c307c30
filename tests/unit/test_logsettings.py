"""logsettings: the profiles in config/logging.yaml, and which one a run uses."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from trinity.errors import EXIT_BAD_INPUT, ConfigError
from trinity.logs import LogProfile
from trinity.logsettings import (
    BUILT_IN_PROFILES,
    DEFAULT_PROFILE,
    LoggingSettings,
    choose_profile,
    load_logging_settings,
)
from trinity.scaffold import EXAMPLE_DIR

SHOWN = "config/logging.yaml"  # as messages show it, from the project folder

WriteLogging = Callable[[str], Path]


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return tmp_path / "config"


@pytest.fixture
def write_logging(config_dir: Path) -> WriteLogging:
    """Write config/logging.yaml and return the config folder."""

    def write(text: str) -> Path:
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "logging.yaml").write_text(text, encoding="utf-8")
        return config_dir

    return write


def load_error(config_dir: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_logging_settings(config_dir)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    return caught.value


def choose_error(
    settings: LoggingSettings, option: str | None, environ: Mapping[str, str]
) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        choose_profile(settings, option, environ)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    return caught.value


# ---------------------------------------------------------------------------- built-ins


def test_without_a_file_the_built_in_profiles_apply(config_dir: Path) -> None:
    settings = load_logging_settings(config_dir)

    assert settings.default_profile == DEFAULT_PROFILE == "development"
    assert set(settings.profiles) == {"development", "production", "testing"}
    assert settings.path == SHOWN
    assert choose_profile(settings, None, {}) == settings.profiles["development"]


@pytest.mark.parametrize(
    ("name", "level", "console_level", "log_format"),
    [
        ("development", "DEBUG", "WARNING", "text"),
        ("production", "INFO", None, "json"),
        ("testing", "WARNING", None, "json"),
    ],
)
def test_built_in_profiles(
    config_dir: Path, name: str, level: str, console_level: str | None, log_format: str
) -> None:
    profile = load_logging_settings(config_dir).profiles[name]

    assert profile.name == name
    assert (profile.level, profile.console_level, profile.format) == (
        level,
        console_level,
        log_format,
    )
    # Machines read production and testing logs: no colour codes in them.
    assert profile.color is (log_format == "text")
    assert profile.directory == Path("logs")


def test_an_empty_file_keeps_the_built_in_profiles(write_logging: WriteLogging) -> None:
    settings = load_logging_settings(write_logging("# nothing yet\n"))

    assert settings.default_profile == "development"
    assert dict(settings.profiles) == BUILT_IN_PROFILES


def test_the_example_file_is_valid_and_keeps_testing_off_the_disk() -> None:
    settings = load_logging_settings(EXAMPLE_DIR / "config")

    assert settings.default_profile == "development"
    for name in ("development", "production"):
        assert settings.profiles[name] == BUILT_IN_PROFILES[name]
    assert settings.profiles["testing"] == replace(BUILT_IN_PROFILES["testing"], directory=None)


# ---------------------------------------------------------------------------- the file


def test_the_file_overrides_built_in_profiles_field_by_field(write_logging: WriteLogging) -> None:
    settings = load_logging_settings(
        write_logging(
            "profiles:\n"
            "  production:\n"
            "    level: WARNING\n"
            "    dir: var/log\n"
            "    max_bytes: 2048\n"
            "    backup_count: 0\n"
            "  development:\n"
            "    color: false\n"
        )
    )

    production = settings.profiles["production"]
    assert production == replace(
        BUILT_IN_PROFILES["production"],
        level="WARNING",
        directory=Path("var/log"),
        max_bytes=2048,
        backup_count=0,
    )
    # Only color changed: the console still shows warnings up, the files DEBUG.
    assert settings.profiles["development"] == replace(
        BUILT_IN_PROFILES["development"], color=False
    )
    assert settings.profiles["testing"] == BUILT_IN_PROFILES["testing"]


def test_the_file_adds_profiles_and_may_make_one_the_default(write_logging: WriteLogging) -> None:
    settings = load_logging_settings(
        write_logging(
            "default_profile: ci\n"
            "profiles:\n"
            "  ci:\n"
            "    level: ERROR\n"
            "    format: json\n"
            "    console: false\n"
            "    files: false\n"
        )
    )

    assert settings.default_profile == "ci"
    assert set(settings.profiles) == {"development", "production", "testing", "ci"}
    ci = choose_profile(settings, None, {})
    assert ci == LogProfile(
        "ci", level="ERROR", format="json", console=False, directory=None, console_level=None
    )


@pytest.mark.parametrize(
    ("fields", "directory"),
    [
        ("files: false", None),
        ("files: true", Path("logs")),
        ("dir: elsewhere/logs", Path("elsewhere/logs")),
        ("{files: false, dir: elsewhere}", None),
    ],
)
def test_files_and_dir_choose_the_log_folder(
    write_logging: WriteLogging, fields: str, directory: Path | None
) -> None:
    body = fields if fields.startswith("{") else "{" + fields + "}"
    settings = load_logging_settings(write_logging(f"profiles:\n  production: {body}\n"))

    assert settings.profiles["production"].directory == directory


# ---------------------------------------------------------------------------- selection

SELECTION_FILE = (
    "default_profile: from-file\n"
    "profiles:\n"
    "  from-option: {level: ERROR}\n"
    "  from-env: {level: INFO}\n"
    "  from-file: {level: CRITICAL}\n"
)


@pytest.mark.parametrize(
    ("option", "environ", "chosen"),
    [
        pytest.param(
            "from-option",
            {"LOG_PROFILE": "from-env", "TRINITY_ENV": "production"},
            "from-option",
            id="option-beats-LOG_PROFILE",
        ),
        pytest.param(
            None,
            {"LOG_PROFILE": "from-env", "TRINITY_ENV": "production"},
            "from-env",
            id="LOG_PROFILE-beats-TRINITY_ENV",
        ),
        pytest.param(None, {"TRINITY_ENV": "production"}, "production", id="TRINITY_ENV"),
        pytest.param(
            None, {"TRINITY_ENV": " PRODUCTION "}, "production", id="TRINITY_ENV-any-case"
        ),
        pytest.param(None, {}, "from-file", id="default_profile"),
        pytest.param(
            None, {"TRINITY_ENV": "staging"}, "from-file", id="other-TRINITY_ENV-is-no-choice"
        ),
        pytest.param(
            None, {"LOG_PROFILE": "", "TRINITY_ENV": "production"}, "production", id="empty-env"
        ),
        pytest.param("", {"LOG_PROFILE": "from-env"}, "from-env", id="empty-option"),
    ],
)
def test_each_source_beats_the_next(
    write_logging: WriteLogging, option: str | None, environ: dict[str, str], chosen: str
) -> None:
    settings = load_logging_settings(write_logging(SELECTION_FILE))

    profile = choose_profile(settings, option, environ)

    assert profile.name == chosen
    assert profile == settings.profiles[chosen]


def test_choose_profile_reads_os_environ_by_default(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_PROFILE", "testing")

    assert choose_profile(load_logging_settings(config_dir)).name == "testing"


@pytest.mark.parametrize(
    ("environ", "level", "console_level", "log_format"),
    [
        ({"LOG_LEVEL": "info"}, "INFO", None, "text"),
        ({"LOG_LEVEL": " Error "}, "ERROR", None, "text"),
        ({"LOG_FORMAT": "JSON"}, "DEBUG", "WARNING", "json"),
        ({"LOG_LEVEL": "WARNING", "LOG_FORMAT": "json"}, "WARNING", None, "json"),
        ({"LOG_LEVEL": "", "LOG_FORMAT": ""}, "DEBUG", "WARNING", "text"),
    ],
)
def test_log_level_and_log_format_override_the_chosen_profile(
    config_dir: Path,
    environ: dict[str, str],
    level: str,
    console_level: str | None,
    log_format: str,
) -> None:
    settings = load_logging_settings(config_dir)

    profile = choose_profile(settings, "development", environ)

    # LOG_LEVEL sets the one level everything shows, the console included.
    assert (profile.level, profile.console_level, profile.format) == (
        level,
        console_level,
        log_format,
    )
    assert profile.name == "development"
    assert settings.profiles["development"] == BUILT_IN_PROFILES["development"]


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        pytest.param(
            "default_profil: production\n",
            "default_profil",
            ["unknown key 'default_profil'", "did you mean 'default_profile'?"],
            id="unknown-top-key",
        ),
        pytest.param(
            "profiles:\n  production:\n    levl: INFO\n",
            "profiles.production.levl",
            ["unknown key 'levl'", "did you mean 'level'?"],
            id="unknown-profile-key",
        ),
        pytest.param(
            "profiles:\n  development:\n    level: LOUD\n",
            "profiles.development.level",
            ["'LOUD' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"],
            id="bad-level",
        ),
        pytest.param(
            "profiles:\n  development:\n    console_level: NOISY\n",
            "profiles.development.console_level",
            ["'NOISY' is not one of"],
            id="bad-console-level",
        ),
        pytest.param(
            "profiles:\n  mine:\n    format: jsno\n",
            "profiles.mine.format",
            ["'jsno' is not one of text, json", "did you mean 'json'?"],
            id="bad-format",
        ),
        pytest.param(
            "profiles:\n  mine:\n    color: sometimes\n",
            "profiles.mine.color",
            ["expected true or false"],
            id="bad-boolean",
        ),
        pytest.param(
            "profiles:\n  mine:\n    max_bytes: 10\n",
            "profiles.mine.max_bytes",
            ["must be at least 1024"],
            id="tiny-max-bytes",
        ),
        pytest.param(
            "profiles:\n  - production\n",
            "profiles",
            ["expected a mapping, got a list"],
            id="profiles-not-a-mapping",
        ),
        pytest.param(
            "profiles:\n  mine: loud\n",
            "profiles.mine",
            ["expected a mapping, got a string"],
            id="profile-not-a-mapping",
        ),
        pytest.param(
            "default_profile: prodution\n",
            "default_profile",
            ["'prodution' is not a profile here", "did you mean 'production'?"],
            id="unknown-default-profile",
        ),
        pytest.param(
            "default_profile: ''\n",
            "default_profile",
            ["must not be empty"],
            id="empty-default-profile",
        ),
    ],
)
def test_a_bad_file_names_the_file_and_key(
    write_logging: WriteLogging, text: str, key: str, words: list[str]
) -> None:
    error = load_error(write_logging(text))

    assert (error.path, error.key) == (SHOWN, key)
    assert str(error).startswith(f"{SHOWN}: {key}: ")
    for word in words:
        assert word in str(error)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        pytest.param(
            "profiles:\n  production: {level: INFO\n", ["invalid YAML", "line 3"], id="unclosed"
        ),
        pytest.param(
            "profiles:\n  mine: {}\n  mine: {}\n", ["duplicate key 'mine'", "line 3"], id="dupe"
        ),
    ],
)
def test_malformed_yaml_names_the_file_and_line(
    write_logging: WriteLogging, text: str, words: list[str]
) -> None:
    error = load_error(write_logging(text))

    assert error.path == SHOWN
    assert str(error).startswith(f"{SHOWN}: ")
    for word in words:
        assert word in str(error)


def test_an_unknown_log_profile_option_is_refused(config_dir: Path) -> None:
    error = choose_error(load_logging_settings(config_dir), "prodution", {"LOG_PROFILE": "testing"})

    assert (error.key, error.argument) == (None, "log_profile")
    assert str(error).startswith("log_profile: no logging profile 'prodution' in ")
    assert SHOWN in str(error)
    assert "did you mean 'production'?" in str(error)


@pytest.mark.parametrize(
    ("environ", "key", "words"),
    [
        ({"LOG_PROFILE": "tesing"}, "LOG_PROFILE", ["no logging profile 'tesing'", "'testing'"]),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL", ["'verbose' is not one of DEBUG, INFO"]),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT", ["'xml' is not one of text, json"]),
        (
            {"LOG_PROFILE": "production", "LOG_LEVEL": "DEBUG", "LOG_FORMAT": "yaml"},
            "LOG_FORMAT",
            ["'yaml'"],
        ),
    ],
)
def test_a_bad_environment_variable_names_it(
    config_dir: Path, environ: dict[str, str], key: str, words: list[str]
) -> None:
    error = choose_error(load_logging_settings(config_dir), None, environ)

    assert (error.path, error.key) == ("environment", key)
    assert str(error).startswith(f"environment: {key}: ")
    for word in words:
        assert word in str(error)
