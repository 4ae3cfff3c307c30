"""The deployment files: Dockerfile, .dockerignore, docker-compose.yml and the Makefile.

No Docker engine runs where the tests run, so the Docker files are read, and checked
against what Trinity itself does: the environment variables it reads, the folders it
writes, the way a build swaps its output into place. The Makefile's targets run for real
where that is safe (`help`, and the log targets on planted logs, with jq) and as a dry run
(`make -n STAMP=`, so no virtual environment is set up) where they would start containers
or the test suite.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from trinity.config import load_settings
from trinity.logs import ContextFilter, json_formatter, log_context
from trinity.logsettings import choose_profile, load_logging_settings
from trinity.staging import StagedOutput

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE_FILE = REPO / "docker-compose.yml"
MAKEFILE = REPO / "Makefile"
# The files `docker compose` looks for when given no -f, in its order of preference.
COMPOSE_DEFAULT_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
REDIS_DEFAULT_PORT = 6379
# Variables a parent `make` (or the developer's shell) could pass down and change what the
# Makefile under test does.
MAKE_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEFILES", "GNUMAKEFLAGS", "MAKEOVERRIDES")
MAKEFILE_KNOBS = ("JQ", "VENV", "PYTHON", "THEME", "STAMP", "WHEELHOUSE")


# ---------------------------------------------------------------------------- helpers


_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?-)(?P<default>[^}]*))?\}|\$(?P<bare>\w+)")


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """`${NAME}`, `${NAME:-default}`, `${NAME-default}` and `$NAME`, as Compose and
    Dockerfile ARGs expand them."""

    def value(match: re.Match[str]) -> str:
        name = match["name"] or match["bare"]
        if name in variables and (variables[name] or match["op"] != ":-"):
            return variables[name]
        return match["default"] or ""

    return _VARIABLE.sub(value, text)


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script, split at `&&`, `||`, `;`, `|` and `&`;
    a command substitution `$(…)` stands as one word."""
    script = re.sub(r"\$\([^()]*\)", "SUBSTITUTED", script)
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            commands.append([])
        else:
            commands[-1].append(token)
    return [command for command in commands if command]


def option_values(args: list[str], *names: str) -> list[str]:
    """Values of an option given as `--name value`, `--name=value` or `-n value`."""
    values = []
    for index, arg in enumerate(args):
        for name in names:
            if arg == name and index + 1 < len(args):
                values.append(args[index + 1])
            elif arg.startswith(name + "=") and name.startswith("--"):
                values.append(arg.split("=", 1)[1])
    return values


def pip_call(command: list[str]) -> tuple[str, list[str]] | None:
    """(subcommand, arguments) when `command` runs pip (`pip …` or `python -m pip …`)."""
    words = command
    while words and re.match(r"^\w+=", words[0]):  # leading VAR=value assignments
        words = words[1:]
    if words and PurePosixPath(words[0]).name in {"pip", "pip3"}:
        rest = words[1:]
    elif len(words) >= 3 and PurePosixPath(words[0]).name.startswith("python"):
        if words[1:3] != ["-m", "pip"]:
            return None
        rest = words[3:]
    else:
        return None
    subcommands = [word for word in rest if not word.startswith("-")]
    return (subcommands[0], rest) if subcommands else None


def same_path(a: str, b: str) -> bool:
    return PurePosixPath(a.rstrip("/") or "/") == PurePosixPath(b.rstrip("/") or "/")


def is_within(path: PurePosixPath, folder: PurePosixPath) -> bool:
    return path == folder or folder in path.parents


# ---------------------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, or None for the shell form."""
        if not self.args.startswith("["):
            return None
        value = json.loads(self.args)
        assert isinstance(value, list), self
        return [str(item) for item in value]

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """`--name=value` flags (COPY --from, --chown, …) and the remaining words."""
        flags: dict[str, str] = {}
        words = self.exec_form() or shlex.split(self.args)
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            flags[name] = value
        return flags, words


@dataclass
class Stage:
    index: int
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def commands(self) -> list[list[str]]:
        """Every simple command of every RUN of the stage."""
        return [command for run in self.all("RUN") for command in shell_commands(run.args)]

    def context_copies(self) -> list[Instruction]:
        """COPY and ADD instructions that read the build context (no --from)."""
        return [
            i
            for i in self.instructions
            if i.keyword in {"COPY", "ADD"} and "from" not in i.flags_and_words()[0]
        ]


@dataclass(frozen=True)
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, reference: str) -> Stage | None:
        """The stage a `--from=` names (by name or by index), if it is one of ours."""
        for stage in self.stages:
            if stage.name == reference or str(stage.index) == reference:
                return stage
        return None


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, instruction) with continuations joined and comments dropped."""
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # blank and comment lines, also inside a continuation
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        yield start, " ".join(part for part in parts if part)
        parts = []
    if parts:
        yield start, " ".join(part for part in parts if part)


def parse_dockerfile(text: str) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, content in logical_lines(text):
        keyword, _, args = content.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [word for word in args.split() if not word.startswith("--")]
            image = interpolate(words[0], global_args)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(len(stages), image, name))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, args, line))
        elif keyword == "ARG":  # an ARG before the first FROM can be used in FROM lines
            name, _, default = args.partition("=")
            global_args[name.strip()] = default.strip().strip("\"'")
    return Dockerfile(global_args, stages)


def healthcheck_command(instruction: Instruction) -> list[str]:
    """The command of `HEALTHCHECK [options] CMD …` (empty for `HEALTHCHECK NONE`)."""
    match = re.search(r"(?:^|\s)CMD\s+(.*)$", instruction.args, re.IGNORECASE)
    if match is None:
        return []
    command = match[1].strip()
    if command.startswith("["):
        return [str(word) for word in json.loads(command)]
    return shlex.split(command)


# ---------------------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker's pattern matcher reads it (`**` spans folders)."""
    out = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            out += ".*" if i >= len(pattern) else "(.*/)?"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.find("]", i)
            out += pattern[i : end + 1] if end > i else re.escape(char)
            i = end if end > i else i
        else:
            out += re.escape(char)
        i += 1
    return re.compile(f"^{out}$")


@dataclass(frozen=True)
class DockerIgnore:
    rules: tuple[tuple[re.Pattern[str], bool], ...]  # (pattern, is an exception `!`)

    @classmethod
    def read(cls, text: str) -> DockerIgnore:
        rules = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
            rules.append((_pattern_regex(pattern), negated))
        return cls(tuple(rules))

    def excludes(self, relative: str) -> bool:
        """True if the file at `relative` (from the context root) is left out of the build
        context: a pattern matches it or one of its parent folders, and no later `!` does."""
        path = PurePosixPath(relative)
        candidates = [path.as_posix(), *(p.as_posix() for p in path.parents if p.parts)]
        excluded = False
        for pattern, negated in self.rules:
            if any(pattern.match(candidate) for candidate in candidates):
                excluded = not negated
        return excluded


# ---------------------------------------------------------------------------- compose


@dataclass(frozen=True)
class Mount:
    source: str
    target: PurePosixPath
    bind: bool  # a host folder (else a named volume)


def mounts(service: Mapping[str, Any]) -> list[Mount]:
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
            bind = source.startswith((".", "/", "~"))
        else:
            source, target = str(volume.get("source", "")), str(volume["target"])
            bind = volume.get("type") == "bind"
        found.append(Mount(source, PurePosixPath(target), bind))
    return found


def mount_holding(service: Mapping[str, Any], path: PurePosixPath) -> Mount | None:
    """The bind mount `path` lies in inside the container (the deepest one), if any."""
    holding = [m for m in mounts(service) if m.bind and is_within(path, m.target)]
    return max(holding, key=lambda m: len(m.target.parts), default=None)


def host_path(mount: Mount, path: PurePosixPath) -> str:
    """Where `path` in the container is on the host, relative to the compose file."""
    return os.path.normpath(PurePosixPath(mount.source) / path.relative_to(mount.target))


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as the container gets it, with nothing set on the host."""
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.partition("=")[::2] for item in raw)
    return {str(k): interpolate("" if v is None else str(v), {}) for k, v in raw.items()}


def healthcheck_argv(service: Mapping[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return shlex.split(test)
    assert test[0] in {"CMD", "CMD-SHELL"}, test
    return shlex.split(test[1]) if test[0] == "CMD-SHELL" else [str(word) for word in test[1:]]


def depends_on(service: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    raw = service.get("depends_on", {})
    if isinstance(raw, list):
        return {name: {"condition": "service_started"} for name in raw}
    return {str(name): dict(spec or {}) for name, spec in raw.items()}


# ---------------------------------------------------------------------------- Makefile


_RULE = re.compile(r"^(?P<targets>[^\s:=#$][^:=#]*?)\s*:(?![:=])(?P<rest>.*)$")


def makefile_lines(text: str) -> list[str]:
    """Logical lines outside recipes, with continuations joined."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if not pending and raw.startswith("\t"):
            continue
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    return lines


def makefile_rules() -> dict[str, str | None]:
    """Each explicit target defined with a name (not `$(VAR)`) -> its `## ` description."""
    rules: dict[str, str | None] = {}
    for line in makefile_lines(MAKEFILE.read_text("utf-8")):
        match = _RULE.match(line)
        if match is None:
            continue
        rest = match["rest"]
        description = rest.split("## ", 1)[1].strip() if "## " in rest else None
        for target in match["targets"].split():
            if not target.startswith("."):
                rules[target] = description
    return rules


def makefile_recipe(target: str) -> str:
    """The recipe of `target`: its tab-indented lines, continuations kept as written."""
    lines = MAKEFILE.read_text("utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line[1:])
    return "\n".join(recipe)


def phony_targets() -> set[str]:
    names: set[str] = set()
    for line in makefile_lines(MAKEFILE.read_text("utf-8")):
        if line.startswith(".PHONY:"):
            names.update(line.removeprefix(".PHONY:").split())
    return names


def make_environment() -> dict[str, str]:
    """This process's environment without what would change the Makefile under test."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in MAKE_VARIABLES and name not in MAKEFILE_KNOBS
    }


def run_make(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    return subprocess.run(
        ["make", "-f", str(MAKEFILE), *args],
        cwd=cwd,
        env=make_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def dry_run(target: str) -> list[list[str]]:
    """The commands `make <target>` would run, the venv setup left out (STAMP empty)."""
    proc = run_make("-n", "STAMP=", target)
    assert proc.returncode == 0, proc.stderr
    commands = [c for line in proc.stdout.splitlines() for c in shell_commands(line)]
    assert not [c for c in commands if c[1:3] == ["-m", "venv"]], "the venv would be set up"
    return commands


def find_command(commands: list[list[str]], *program: str) -> list[str]:
    """The first command (after VAR=value assignments) that starts with `program`."""
    for command in commands:
        words = list(command)
        while words and re.match(r"^\w+=", words[0]):
            words.pop(0)
        if tuple(words[: len(program)]) == program:
            return command
    raise AssertionError(f"no `{' '.join(program)}` among {commands}")


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text("utf-8"))


@pytest.fixture(scope="module")
def dockerignore() -> DockerIgnore:
    return DockerIgnore.read(DOCKERIGNORE.read_text("utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text("utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(name): dict(spec or {}) for name, spec in compose["services"].items()}


@pytest.fixture(scope="module")
def workdir(dockerfile: Dockerfile) -> PurePosixPath:
    """The final stage's working folder: where the image's `trinity` runs."""
    found = dockerfile.final.last("WORKDIR")
    assert found is not None, "the final stage sets no WORKDIR"
    return PurePosixPath(found.args)


@pytest.fixture(scope="module")
def written_folders(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The folders a build in the trinity container writes, relative to the project:
    read from the repository's config with the service's environment."""
    env = environment(services["trinity"])
    settings = load_settings(REPO, None, env)
    profile = choose_profile(load_logging_settings(REPO / "config"), None, env)
    assert profile.directory is not None, f"the {profile.name} profile writes no log files"
    return {
        "output": settings.build.output_dir.relative_to(REPO).as_posix(),
        "logs": profile.directory.as_posix(),
        "cache": settings.cache.disk.directory.relative_to(REPO).as_posix(),
    }


def staged_beside_output(tmp_path: Path) -> bool:
    """True if a build stages its output in the output folder's parent (and so swaps it
    into place by renaming, which needs the parent writable and on the same mount)."""
    output = tmp_path / "site" / "output"
    staged = StagedOutput(output)
    try:
        return staged.staging.parent == output.parent
    finally:
        staged.discard()


# ---------------------------------------------------------------------------- compose tests


def test_compose_runs_trinity_beside_redis_7_alpine(services: dict[str, dict[str, Any]]) -> None:
    assert {"trinity", "redis"} <= set(services)
    assert services["redis"]["image"] == "redis:7-alpine"


def test_every_compose_healthcheck_runs_a_real_command(
    services: dict[str, dict[str, Any]],
) -> None:
    checked = {name: s for name, s in services.items() if "healthcheck" in s}

    assert "redis" in checked, "redis has no healthcheck, so nothing can wait for it"
    for name, service in checked.items():
        argv = healthcheck_argv(service)
        assert argv and argv[0].strip(), f"{name}: empty healthcheck"
        for key in ("interval", "timeout"):
            if key in service["healthcheck"]:
                assert re.fullmatch(r"(\d+(ms|s|m|h))+", str(service["healthcheck"][key])), key
    assert healthcheck_argv(services["redis"])[:2] == ["redis-cli", "ping"]


def test_trinity_starts_only_once_redis_is_healthy(services: dict[str, dict[str, Any]]) -> None:
    assert depends_on(services["trinity"]).get("redis") == {"condition": "service_healthy"}


def test_ollama_runs_only_under_its_profile(services: dict[str, dict[str, Any]]) -> None:
    assert "ollama" in services
    assert services["ollama"].get("profiles") == ["ollama"]
    assert "profiles" not in services["trinity"]
    assert "profiles" not in services["redis"]
    # trinity must start without the ollama profile enabled.
    profiled = {name for name, s in services.items() if s.get("profiles")}
    assert not set(depends_on(services["trinity"])) & profiled


def test_compose_environment_switches_trinity_to_redis_and_production_logs(
    services: dict[str, dict[str, Any]],
) -> None:
    env = environment(services["trinity"])
    redis_command = services["redis"].get("command", [])
    words = shlex.split(redis_command) if isinstance(redis_command, str) else redis_command
    ports = option_values([str(word) for word in words], "--port")
    redis_port = int(ports[-1]) if ports else REDIS_DEFAULT_PORT

    assert env["LOG_PROFILE"] == "production"
    assert env["CACHE_REDIS_HOST"] == "redis"
    assert env.get("CACHE_REDIS_PORT", str(REDIS_DEFAULT_PORT)) == str(redis_port)
    # And Trinity reads them so: Redis on, at the redis service, and the JSON log profile.
    settings = load_settings(REPO, None, env)
    assert "redis" in settings.cache.tiers
    assert (settings.cache.redis.host, settings.cache.redis.port) == ("redis", redis_port)
    assert settings.cache.redis.host in services
    profile = choose_profile(load_logging_settings(REPO / "config"), None, env)
    assert (profile.name, profile.format) == ("production", "json")


def test_output_logs_and_cache_are_mounted_into_the_workdir(
    services: dict[str, dict[str, Any]], workdir: PurePosixPath, written_folders: dict[str, str]
) -> None:
    assert written_folders == {"output": "output", "logs": "logs", "cache": ".cache"}
    for relative in written_folders.values():
        inside = workdir / relative
        mount = mount_holding(services["trinity"], inside)
        assert mount is not None, (
            f"{inside} is not on a host folder: the build's {relative} is lost"
        )
        assert host_path(mount, inside) == relative, mount


def test_the_output_folder_can_be_swapped_inside_one_writable_mount(
    tmp_path: Path,
    services: dict[str, dict[str, Any]],
    workdir: PurePosixPath,
    written_folders: dict[str, str],
) -> None:
    assert staged_beside_output(tmp_path)
    output = workdir / written_folders["output"]
    mount = mount_holding(services["trinity"], output)

    assert mount is not None
    # rename(2) of a mount point fails with EBUSY, and the staging folder is made in the
    # parent: the parent must be the same host folder (writable by TRINITY_UID), not the
    # image's root-owned one.
    assert mount.target != output, (
        f"{output} is a mount point, so the build's final rename fails (EBUSY); "
        f"mount a folder that holds it instead (e.g. `.:{workdir}`)"
    )
    assert is_within(output.parent, mount.target), (
        f"the build stages its output in {output.parent}, which is not on the mount "
        f"{mount.source}:{mount.target}"
    )


def shard_commands(services: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    return {
        name: [str(word) for word in spec["command"]]
        for name, spec in services.items()
        if "--shard" in spec.get("command", [])
    }


def test_compose_shards_cover_every_share_once_then_render(
    services: dict[str, dict[str, Any]],
) -> None:
    shards = shard_commands(services)
    shares = sorted(option_values(command, "--shard")[0] for command in shards.values())
    count = len(shards)

    assert count >= 2
    assert shares == sorted(f"{k}/{count}" for k in range(1, count + 1))
    for name, command in shards.items():
        assert command[0] == "build" and "--generate-only" in command, name
        # Each shard runs as the trinity service does, against the same Redis.
        assert environment(services[name]) == environment(services["trinity"]), name
        assert services[name].get("profiles") == ["shards"], name
        assert depends_on(services[name]).get("redis") == {"condition": "service_healthy"}
    render = services["render"]
    assert render["command"] == ["build"]
    assert environment(render) == environment(services["trinity"])
    assert depends_on(render) == {
        "redis": {"condition": "service_healthy"},
        **{name: {"condition": "service_completed_successfully"} for name in shards},
    }
    # Plain `docker compose up` still runs the one-process build alone.
    assert "profiles" not in services["trinity"]


def test_make_shards_runs_every_share_then_renders() -> None:
    recipe = makefile_recipe("shards")
    assert "--generate-only --shard $$k/$(SHARDS)" in recipe
    assert "wait $$pid" in recipe
    assert recipe.strip().splitlines()[-1].strip() == "$(BIN)/trinity build --theme $(THEME)"


def test_named_volumes_are_declared_and_redis_keeps_its_data_on_one(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose.get("volumes") or {})
    named = {m.source for s in services.values() for m in mounts(s) if not m.bind}

    assert named <= declared, f"used but not declared at top level: {named - declared}"
    redis_data = [m for m in mounts(services["redis"]) if not m.bind]
    assert [m.target for m in redis_data] == [PurePosixPath("/data")]


def test_trinity_image_is_built_from_this_repository(
    services: dict[str, dict[str, Any]],
) -> None:
    build = services["trinity"]["build"]
    spec = {"context": build} if isinstance(build, str) else dict(build)

    assert (COMPOSE_FILE.parent / spec["context"]).resolve() == REPO
    assert (REPO / spec["context"] / spec.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE


def test_compose_default_user_is_the_one_the_image_creates(
    services: dict[str, dict[str, Any]], dockerfile: Dockerfile
) -> None:
    user = services["trinity"].get("user")
    if user is None:
        pytest.skip("compose runs the image's own USER")
    uids = [
        option_values(c, "--uid", "-u") for c in dockerfile.final.commands() if c[0] == "useradd"
    ]
    uid = interpolate(str(user), {}).split(":")[0]

    assert [uid] in uids, f"compose runs as {uid} by default; the image creates {uids}"


# ---------------------------------------------------------------------------- Dockerfile tests


def test_dockerfile_parser_joins_continuations_and_reads_stages() -> None:
    parsed = parse_dockerfile(
        "ARG V=3.12\n# syntax comment\nFROM python:${V}-slim AS build\n"
        "RUN a \\\n  # dropped\n    && b\nFROM build\nUSER app\n"
    )

    assert [(s.image, s.name) for s in parsed.stages] == [
        ("python:3.12-slim", "build"),
        ("build", None),
    ]
    assert parsed.stages[0].commands() == [["a"], ["b"]]
    assert parsed.final.last("USER") == Instruction("USER", "app", 8)


def test_image_has_several_stages_each_on_slim_python(dockerfile: Dockerfile) -> None:
    minimum = re.search(
        r'requires-python\s*=\s*">=(\d+)\.(\d+)"', (REPO / "pyproject.toml").read_text("utf-8")
    )
    assert minimum is not None

    assert len(dockerfile.stages) >= 2
    for stage in dockerfile.stages:
        match = re.fullmatch(
            r"(?:docker\.io/)?(?:library/)?python:(\d+)\.(\d+)[\w.]*-slim\S*", stage.image
        )
        assert match, f"stage {stage.name or stage.index} is not on a slim Python: {stage.image}"
        assert (int(match[1]), int(match[2])) >= (int(minimum[1]), int(minimum[2])), stage.image


def test_final_stage_installs_trinity_from_wheels_built_earlier(dockerfile: Dockerfile) -> None:
    copies: list[tuple[Stage, list[str]]] = []  # (the stage copied from, COPY's words)
    for copy in dockerfile.final.all("COPY"):
        flags, words = copy.flags_and_words()
        source = dockerfile.stage(flags.get("from", ""))
        if source is not None and source is not dockerfile.final:
            copies.append((source, words))
    assert copies, "the final stage copies nothing from an earlier stage"
    wheel_dirs = {
        (stage.index, d)
        for stage in dockerfile.stages[:-1]
        for call in map(pip_call, stage.commands())
        if call is not None and call[0] == "wheel"
        for d in option_values(call[1], "--wheel-dir", "-w")
    }
    # The wheels folder of a build stage, copied into the final stage.
    landed = [
        words[-1]
        for stage, words in copies
        if any(i == stage.index and same_path(words[0], d) for i, d in wheel_dirs)
    ]
    assert landed, f"no COPY --from brings the wheels ({wheel_dirs}) over"
    installs = [
        call[1]
        for call in map(pip_call, dockerfile.final.commands())
        if call is not None and call[0] == "install"
    ]
    from_wheels = [args for args in installs if installs_from(args, landed)]
    assert from_wheels, f"no pip install from {landed} (--no-index --find-links, or a .whl)"
    assert any(re.match(r"^trinity(\[|$)", a) or "trinity-" in a for a in from_wheels[0])


def installs_from(args: list[str], folders: list[str]) -> bool:
    """True if `pip install args` takes its packages only from `folders`."""
    links = option_values(args, "--find-links", "-f")
    if "--no-index" in args and any(same_path(v, d) for v in links for d in folders):
        return True
    return any(a.endswith(".whl") and a.startswith(tuple(folders)) for a in args)


def test_runtime_stage_has_no_toolchain_and_no_source_tree(dockerfile: Dockerfile) -> None:
    final = dockerfile.final
    installed = {w for c in final.commands() if c[:2] == ["apt-get", "install"] for w in c}
    copied = {w for i in final.context_copies() for w in i.flags_and_words()[1][:-1]}

    assert not installed & {"build-essential", "gcc", "g++", "cmake", "make"}
    assert not copied & {".", "./", "pyproject.toml", "trinity", "trinity/"}
    for call in map(pip_call, final.commands()):
        if call is not None and call[0] == "install":
            assert not {"-e", "--editable", "."} & set(call[1]), call


def test_runs_as_a_non_root_user_the_image_creates(dockerfile: Dockerfile) -> None:
    final = dockerfile.final
    user = final.last("USER")
    entrypoint = final.last("ENTRYPOINT")
    assert user is not None and entrypoint is not None

    assert user.line < entrypoint.line
    name = user.args.split(":")[0]
    assert name not in {"root", "0"}
    created = [c for c in final.commands() if c[0] in {"useradd", "adduser"}]
    assert any(name in c[1:] for c in created), f"USER {name}, but the image creates {created}"


def test_entrypoint_is_trinity_in_exec_form(dockerfile: Dockerfile) -> None:
    entrypoint = dockerfile.final.last("ENTRYPOINT")
    assert entrypoint is not None

    assert entrypoint.exec_form() == ["trinity"]


def test_default_command_and_healthcheck_are_ones_trinity_accepts(
    dockerfile: Dockerfile, services: dict[str, dict[str, Any]]
) -> None:
    final = dockerfile.final
    health = final.last("HEALTHCHECK")
    cmd = final.last("CMD")
    assert health is not None, "the final stage has no HEALTHCHECK"
    argv = healthcheck_command(health)
    assert argv[:1] == ["trinity"], health
    default = (cmd.exec_form() if cmd else None) or []
    trinity = Path(sys.executable).with_name("trinity")
    if not trinity.exists():
        pytest.skip("the trinity script is not installed beside this Python")

    runs = [argv, ["trinity", *default, "--help"]]
    command = services["trinity"].get("command")
    if command:
        words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
        runs.append(["trinity", *words, "--help"])
    for run in runs:
        proc = subprocess.run(
            [str(trinity), *run[1:]], capture_output=True, text=True, timeout=20, check=False
        )
        assert proc.returncode == 0, (run, proc.stdout, proc.stderr)


def test_runtime_user_can_write_the_workdir(
    tmp_path: Path, dockerfile: Dockerfile, workdir: PurePosixPath
) -> None:
    assert staged_beside_output(tmp_path)
    final = dockerfile.final
    user = final.last("USER")
    assert user is not None
    name = user.args.split(":")[0]
    workdir_line = max(i.line for i in final.all("WORKDIR"))
    chowned = {
        PurePosixPath(str(workdir / arg))
        for run in final.all("RUN")
        if run.line > workdir_line
        for command in shell_commands(run.args)
        if command[0] == "chown"
        for owner, *paths in [[w for w in command[1:] if not w.startswith("-")]]
        if owner.split(":")[0] == name
        for arg in paths
    }
    # WORKDIR makes the folder as root; a build writes its staging folder there.
    assert workdir in chowned, (
        f"{workdir} stays owned by root, so `trinity build` as {name} cannot stage its "
        f"output beside {workdir}/output; chown {workdir} itself (e.g. `chown {name}:{name} .`)"
    )


def test_every_file_copied_from_the_context_is_there_and_not_ignored(
    dockerfile: Dockerfile, dockerignore: DockerIgnore
) -> None:
    sources = [
        source
        for stage in dockerfile.stages
        for copy in stage.context_copies()
        for source in copy.flags_and_words()[1][:-1]
    ]
    assert sources

    for source in sources:
        path = REPO / source
        assert path.exists(), f"COPY {source}: not in the repository"
        assert not dockerignore.excludes(source), f"COPY {source}: excluded by .dockerignore"
        if path.is_dir():
            files = tracked_files(path)
            assert files, source
            ignored = [f for f in files if dockerignore.excludes(f)]
            assert ignored == [], f"COPY {source}: .dockerignore leaves out {ignored}"


def tracked_files(folder: Path) -> list[str]:
    """The files under `folder` that git tracks (or all but caches, outside a checkout)."""
    proc = subprocess.run(
        ["git", "ls-files", "-z", "--", folder.relative_to(REPO).as_posix()],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode == 0 and proc.stdout:
        return [name for name in proc.stdout.split("\0") if name]
    return [
        p.relative_to(REPO).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]


@pytest.mark.parametrize("local_state", [".venv", ".git", "output", "logs", ".cache"])
def test_dockerignore_keeps_local_state_out_of_the_context(
    dockerignore: DockerIgnore, local_state: str
) -> None:
    assert dockerignore.excludes(local_state)
    assert dockerignore.excludes(f"{local_state}/some/file")


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        ("output", "output/index.html", True),
        ("output", "trinity/output", False),
        ("**/__pycache__", "trinity/llm/__pycache__/x.pyc", True),
        ("**/__pycache__", "__pycache__", True),
        ("*.log", "a.log", True),
        ("*.log", "logs/a.log", False),
        ("logs\n!logs/keep", "logs/keep", False),
    ],
)
def test_dockerignore_matcher_follows_docker(patterns: str, path: str, excluded: bool) -> None:
    assert DockerIgnore.read(patterns).excludes(path) is excluded


# ---------------------------------------------------------------------------- Makefile tests


REQUIRED_TARGETS = (
    "shards",
    "logs",
    "logs-json",
    "logs-errors",
    "logs-analyze",
    "logs-clear",
    "test-coverage",
    "test-async",
    "docker-build",
    "docker-run",
    "docker-stop",
    "cache-clear",
    "build",
    "test",
    "bench",
)


@pytest.fixture(scope="module")
def help_lines() -> list[tuple[str, str]]:
    proc = run_make("-s", "help")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    parsed = [re.fullmatch(r"\s*(\S+)\s+(\S.*?)\s*", line) for line in lines]
    assert all(parsed), [line for line, match in zip(lines, parsed, strict=True) if not match]
    return [(m[1], m[2]) for m in parsed if m]


def test_help_lists_every_documented_target_once(help_lines: list[tuple[str, str]]) -> None:
    documented = {name: text for name, text in makefile_rules().items() if text is not None}
    names = [name for name, _ in help_lines]

    assert sorted(names) == sorted(set(names)), "a target is listed twice"
    assert set(names) == set(documented), "help lines and `## ` targets differ"
    assert dict(help_lines) == documented


def test_every_target_has_a_help_line(help_lines: list[tuple[str, str]]) -> None:
    shown = {name for name, _ in help_lines}
    rules = makefile_rules()

    assert phony_targets() <= set(rules), "a .PHONY target has no rule"
    assert sorted(phony_targets() - shown) == []
    assert sorted(set(rules) - shown) == []


@pytest.mark.parametrize("target", REQUIRED_TARGETS)
def test_required_target_exists(target: str) -> None:
    assert target in makefile_rules()


def test_docker_build_tags_the_image_compose_runs(services: dict[str, dict[str, Any]]) -> None:
    build = find_command(dry_run("docker-build"), "docker", "build")

    assert build[-1] == "."
    assert option_values(build, "-t", "--tag") == [services["trinity"]["image"]]


def test_docker_run_brings_up_the_compose_file_as_the_current_user(
    services: dict[str, dict[str, Any]],
) -> None:
    up = find_command(dry_run("docker-run"), "docker", "compose")
    files = option_values(up, "-f", "--file")

    assert "up" in up and "trinity" in up[up.index("up") :]
    if files:
        assert [(REPO / f).resolve() for f in files] == [COMPOSE_FILE]
    else:  # compose picks the first default name present in the folder
        present = [name for name in COMPOSE_DEFAULT_NAMES if (REPO / name).exists()]
        assert present[:1] == [COMPOSE_FILE.name]
    wanted = set(re.findall(r"\$\{(\w+)", str(services["trinity"].get("user", ""))))
    assigned = {w.split("=", 1)[0] for w in up if re.match(r"^\w+=", w)}
    assert wanted <= assigned, f"compose reads {wanted} for the user; docker-run sets {assigned}"


def test_docker_stop_takes_the_stack_down_but_keeps_the_redis_volume() -> None:
    down = find_command(dry_run("docker-stop"), "docker", "compose")

    assert "down" in down
    assert not {"-v", "--volumes"} & set(down)


def test_test_coverage_measures_the_package() -> None:
    pytest_run = next(c for c in dry_run("test-coverage") if PurePosixPath(c[0]).name == "pytest")

    assert "--cov=trinity" in pytest_run
    assert re.search(r'"pytest-cov\b', (REPO / "pyproject.toml").read_text("utf-8"))


def test_test_async_selects_exactly_the_anyio_tests(tmp_path: Path) -> None:
    pytest_run = next(c for c in dry_run("test-async") if PurePosixPath(c[0]).name == "pytest")
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n\n\n@pytest.mark.anyio\nasync def test_async() -> None:\n    pass\n\n\n"
        "def test_sync() -> None:\n    pass\n",
        encoding="utf-8",
    )

    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", *pytest_run[1:], "--collect-only", "-q"),
            *("-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    collected = [line.split("::")[-1] for line in proc.stdout.splitlines() if "::" in line]
    assert collected
    assert all(re.fullmatch(r"test_async(\[\w+\])?", name) for name in collected), collected
    marked = [
        p for p in (REPO / "tests").rglob("test_*.py") if "mark.anyio" in p.read_text("utf-8")
    ]
    assert marked, "no test in the suite is marked anyio"


# ---------------------------------------------------------------------------- log targets


def _record(second: int, level: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "timestamp": f"2025-06-01T10:{second // 60:02d}:{second % 60:02d}.000000+00:00",
        "level": level,
        "logger": "trinity.build",
        "message": message,
        "correlation_id": "5f0c2a9e",
        **extra,
    }


def _llm(
    second: int, latency: float, page: str, block: str, attempt: int, status: int | str
) -> dict[str, Any]:
    level = "INFO" if status in {"ok", "cached"} else "WARNING"
    what = f"attempt {attempt}: {status}" if status != "cached" else "from the disk cache"
    return _record(
        second,
        level,
        f"LLM ollama:llama3.2 {what} in {latency:.0f} ms",
        logger="trinity.llm.client",
        event="llm_request",
        page=page,
        block=block,
        model="llama3.2",
        attempt=attempt,
        status=status,
        latency_ms=latency,
        cache_tier="disk" if status == "cached" else None,
        # Records written before wait_ms was logged lack it: the list must read both.
        **({"wait_ms": WAITS[page]} if page in WAITS else {}),
    )


# Time spent queued before the model answered, logged apart from latency_ms.
WAITS = {"about": 40000, "projects": 12.5}


# (latency_ms, page, block, attempt, status): the cached one is the slowest of all, and must
# still never count as a slow request.
LLM_REQUESTS: list[tuple[float, str, str, int, int | str]] = [
    (850.5, "about", "bio", 1, "ok"),
    (9999.0, "home", "intro", 0, "cached"),
    (2300.0, "projects", "list", 2, "ok"),
    (1200.0, "projects", "list", 1, 503),
    (120.0, "contact", "note", 1, "ok"),
]


@dataclass(frozen=True)
class PlantedLogs:
    folder: Path
    records: list[dict[str, Any]]  # in logs/trinity.log
    errors: list[dict[str, Any]]  # in logs/errors.log


@pytest.fixture
def planted_logs(tmp_path: Path) -> PlantedLogs:
    """A project folder with logs/trinity.log (60 records) and logs/errors.log."""
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed; the log targets need it")
    records = [_record(0, "INFO", "build started")]
    records += [_record(1 + n, "DEBUG", f"rendered page {n}") for n in range(40)]
    records += [_llm(41 + n, *request) for n, request in enumerate(LLM_REQUESTS)]
    records += [_record(46, "WARNING", "retrying projects/list in 2 s")]
    errors = [
        _record(47 + n, "ERROR", f"block projects/list failed after {n + 3} attempts")
        for n in range(2)
    ]
    records += errors
    records += [_record(49 + n, "INFO", f"wrote page{n}.html") for n in range(11)]
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "trinity.log").write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    (logs / "errors.log").write_text("".join(json.dumps(r) + "\n" for r in errors), "utf-8")
    return PlantedLogs(tmp_path, records, errors)


def _readable(record: Mapping[str, Any]) -> str:
    return f"{record['timestamp']} {record['level']} {record['logger']}: {record['message']}"


def _section(output: str, title: str) -> list[str]:
    """The lines of `logs-analyze` under `== title`, up to the next `==` heading."""
    lines = output.splitlines()
    start = lines.index(f"== {title}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("== ")), len(lines))
    return lines[start:end]


def test_make_logs_shows_the_last_50_records_readably(planted_logs: PlantedLogs) -> None:
    folder, records = planted_logs.folder, planted_logs.records

    proc = run_make("-s", "logs", cwd=folder)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [_readable(r) for r in records[-50:]]


def test_make_logs_json_prints_every_record(planted_logs: PlantedLogs) -> None:
    folder, records = planted_logs.folder, planted_logs.records

    proc = run_make("-s", "logs-json", cwd=folder)

    assert proc.returncode == 0, proc.stderr
    decoder, text, shown = json.JSONDecoder(), proc.stdout.strip(), []
    position = 0
    while position < len(text):
        value, end = decoder.raw_decode(text, position)
        shown.append(value)
        position = end + len(text[end:]) - len(text[end:].lstrip())
    assert shown == planted_logs.records
    assert len(proc.stdout.splitlines()) > len(records)  # pretty: one field a line


def test_make_logs_errors_shows_only_errors(planted_logs: PlantedLogs) -> None:
    folder, errors = planted_logs.folder, planted_logs.errors

    proc = run_make("-s", "logs-errors", cwd=folder)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [_readable(r) for r in errors]


def test_make_logs_errors_without_an_error_log_says_none(planted_logs: PlantedLogs) -> None:
    folder = planted_logs.folder
    (folder / "logs" / "errors.log").unlink()

    proc = run_make("-s", "logs-errors", cwd=folder)

    assert proc.returncode == 0, proc.stderr
    assert "no errors" in proc.stdout


def test_make_logs_analyze_counts_records_by_level(planted_logs: PlantedLogs) -> None:
    folder, records = planted_logs.folder, planted_logs.records

    proc = run_make("-s", "logs-analyze", cwd=folder)

    assert proc.returncode == 0, proc.stderr
    counts = {
        level: int(count)
        for count, level in (line.split() for line in _section(proc.stdout, "records by level"))
    }
    assert counts == Counter(r["level"] for r in records)


def test_make_logs_analyze_folds_numbers_in_top_messages(planted_logs: PlantedLogs) -> None:
    folder = planted_logs.folder

    proc = run_make("-s", "logs-analyze", cwd=folder)

    top = [
        line.split(maxsplit=1) for line in _section(proc.stdout, "top messages (numbers folded)")
    ]
    assert top[0] == ["40", "rendered page N"]
    assert ["11", "wrote pageN.html"] in top
    assert ["2", "block projects/list failed after N attempts"] in top
    assert len(top) <= 10


def test_make_logs_analyze_lists_slowest_requests_first_without_cached(
    planted_logs: PlantedLogs,
) -> None:
    folder = planted_logs.folder

    proc = run_make("-s", "logs-analyze", cwd=folder)

    slowest = _section(proc.stdout, "slowest LLM requests")
    expected = sorted((r for r in LLM_REQUESTS if r[4] != "cached"), key=lambda r: -r[0])
    assert [float(line.split(" ms", 1)[0]) for line in slowest] == [r[0] for r in expected]
    for line, (_, page, block, attempt, status) in zip(slowest, expected, strict=True):
        # A long wait never makes a request slow: it is shown beside the model's time.
        assert line.split(" ms", 1)[1].split() == [
            f"(+{WAITS.get(page, 0)}",
            "ms",
            "waiting)",
            f"{page}/{block}",
            "llama3.2",
            "attempt",
            f"{attempt}:",
            str(status),
        ]
    assert "cached" not in "\n".join(slowest)


def test_make_logs_clear_deletes_logs_and_their_backups(planted_logs: PlantedLogs) -> None:
    folder = planted_logs.folder
    logs = folder / "logs"
    for backup in ("trinity.log.1", "trinity.log.5", "errors.log.2"):
        (logs / backup).write_text("{}\n", "utf-8")
    (logs / "notes.txt").write_text("mine\n", "utf-8")

    proc = run_make("-s", "logs-clear", cwd=folder)

    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in logs.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("target", ["logs", "logs-json", "logs-analyze"])
def test_log_targets_without_a_log_file_say_so_and_fail(tmp_path: Path, target: str) -> None:
    proc = run_make("-s", target, cwd=tmp_path)

    assert proc.returncode != 0
    assert "no logs/trinity.log yet" in proc.stdout + proc.stderr


def test_the_fields_the_log_targets_read_are_in_trinitys_json_lines() -> None:
    makefile = MAKEFILE.read_text("utf-8")
    filters = re.findall(r"^(?:LOG_LINE|SLOWEST)\s*:?=\s*(.*)$", makefile, re.MULTILINE)
    assert len(filters) == 2
    fields = {name for text in filters for name in re.findall(r"\.([a-z_]+)", text)}
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("trinity.tests.deployment")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the line goes to `stream` only
    try:
        with log_context(page="about", block="bio"):
            logger.info(
                "LLM ollama:m attempt 1: ok in 12 ms",
                extra={
                    "event": "llm_request",
                    "model": "m",
                    "attempt": 1,
                    "status": "ok",
                    "latency_ms": 12.0,
                    "wait_ms": 0.0,
                    "cache_tier": None,
                },
            )
    finally:
        logger.removeHandler(handler)
        logger.propagate = True

    (line,) = stream.getvalue().splitlines()
    missing = fields - set(json.loads(line))
    assert missing == set(), f"the log targets read fields Trinity never writes: {missing}"
