"""config/logging.yaml: named logging profiles, and which one a run uses.

The profile is chosen by `--log-profile`, then `LOG_PROFILE`, then `TRINITY_ENV=production`
(which means the JSON profile), then the file's `default_profile`. `LOG_LEVEL` and
`LOG_FORMAT` then override single fields. The three built-in profiles exist even when the
file is missing or names only some of them; the file's values override theirs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from trinity.errors import ConfigError
from trinity.logs import LogProfile
from trinity.messages import did_you_mean, shown_path
from trinity.schema import Fields
from trinity.yamlfile import load_data_file

LOGGING_FILE = "logging.yaml"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")

BUILT_IN_PROFILES = {
    # The console shows warnings and up, so progress stays readable; the file gets DEBUG.
    "development": LogProfile("development", level="DEBUG", console_level="WARNING"),
    "production": LogProfile("production", level="INFO", format="json", color=False),
    "testing": LogProfile("testing", level="WARNING", format="json", color=False),
}
DEFAULT_PROFILE = "development"


@dataclass(frozen=True)
class LoggingSettings:
    default_profile: str
    profiles: Mapping[str, LogProfile]
    path: str  # as shown in messages


def load_logging_settings(config_dir: Path) -> LoggingSettings:
    """The profiles in `config_dir/logging.yaml`, over the built-in ones."""
    path = config_dir / LOGGING_FILE
    shown = shown_path(path)
    if not path.is_file():
        return LoggingSettings(DEFAULT_PROFILE, dict(BUILT_IN_PROFILES), shown)
    top = Fields(load_data_file(path, ConfigError), path=shown, key="", error=ConfigError)
    raw_profiles = top.mapping("profiles")
    profiles = dict(BUILT_IN_PROFILES)
    for name in raw_profiles:
        fields = Fields(raw_profiles[name], path=shown, key=f"profiles.{name}", error=ConfigError)
        profiles[name] = _read_profile(name, fields, profiles.get(name))
    default = top.string("default_profile", DEFAULT_PROFILE, nonempty=True)
    if default not in profiles:
        hint = did_you_mean(default, profiles)
        raise top.fail(
            f"'{default}' is not a profile here ({', '.join(profiles)}){hint}", "default_profile"
        )
    top.done()
    return LoggingSettings(default, profiles, shown)


def _read_profile(name: str, f: Fields, base: LogProfile | None) -> LogProfile:
    start = base or LogProfile(name)
    directory = f.string("dir", None if start.directory is None else str(start.directory))
    profile = LogProfile(
        name,
        level=f.string("level", start.level, choices=LEVELS),
        format=f.string("format", start.format, choices=FORMATS),
        color=f.boolean("color", start.color),
        console=f.boolean("console", start.console),
        console_level=f.string("console_level", start.console_level, choices=LEVELS),
        directory=Path(directory) if f.boolean("files", directory is not None) else None,
        max_bytes=f.integer("max_bytes", start.max_bytes, minimum=1024),
        backup_count=f.integer("backup_count", start.backup_count, minimum=0),
    )
    f.done()
    return profile


def choose_profile(
    settings: LoggingSettings,
    option: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> LogProfile:
    """The profile this run uses, with LOG_LEVEL and LOG_FORMAT applied."""
    env = os.environ if environ is None else environ
    if option:
        name, where, key = option, None, None
    elif env.get("LOG_PROFILE"):
        name, where, key = env["LOG_PROFILE"], "environment", "LOG_PROFILE"
    elif env.get("TRINITY_ENV", "").strip().lower() == "production":
        name, where, key = "production", "environment", "TRINITY_ENV"
    else:
        name, where, key = settings.default_profile, settings.path, "default_profile"
    profile = settings.profiles.get(name)
    if profile is None:
        hint = did_you_mean(name, settings.profiles)
        raise ConfigError(
            f"no logging profile '{name}' in {settings.path} "
            f"(there are {', '.join(settings.profiles)}){hint}",
            path=where,
            key=key,
            argument="log_profile" if option else None,
        )
    return _overridden(profile, env)


def _overridden(profile: LogProfile, env: Mapping[str, str]) -> LogProfile:
    changes: dict[str, Any] = {}
    level = _environment_choice(env, "LOG_LEVEL", LEVELS, str.upper)
    if level:
        changes.update(level=level, console_level=None)
    log_format = _environment_choice(env, "LOG_FORMAT", FORMATS, str.lower)
    if log_format:
        changes["format"] = log_format
    return replace(profile, **changes)


def _environment_choice(
    env: Mapping[str, str], name: str, choices: tuple[str, ...], normal: Callable[[str], str]
) -> str | None:
    """The variable's value if it is one of `choices` (in any case); None when unset."""
    value = normal(env.get(name, "").strip())
    if not value:
        return None
    if value not in choices:
        raise ConfigError(
            f"'{env[name]}' is not one of {', '.join(choices)}", path="environment", key=name
        )
    return value
