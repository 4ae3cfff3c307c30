"""Helpers for end-to-end tests: a Trinity project wired to the fake LLM server.

`SiteProject.create` writes the example project that `trinity init` writes, points its
`llm:` section (which the example sets to the embedded model) at a `FakeLLMServer` over
the Ollama or OpenAI protocol, with fast retries (`FAST_RETRY`), adds a json block
(`highlights`) to the `projects` collection and scripts its answers so that they match
its schema. Everything lives under the test's `tmp_path`; nothing is ever written into
the repository.

Runs go through `SiteProject.cli` (Typer's CliRunner, in process) or
`SiteProject.run` / `SiteProject.popen` (`python -m trinity` in a subprocess).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml
from rich.console import Console
from typer.testing import CliRunner

from tests.environment import is_leaky_variable
from tests.fakellm import FakeLLMServer, prompt_digest
from trinity import cli
from trinity.scaffold import write_project

BUILTIN_THEMES = Path(cli.__file__).resolve().parent / "themes"
# The model name the fixture writes into llm.model: a chat model served by the fake server.
MODEL = "fake-chat-model"
# The example: index, about and one page for each of its four projects; blocks intro,
# about + now, and summary + lessons on each project's page.
PAGES = 6
EXAMPLE_ITEM_BLOCKS = ("summary", "lessons")
EXAMPLE_BLOCKS = 3 + 4 * len(EXAMPLE_ITEM_BLOCKS)
# As `SiteProject.create` leaves it: each project's page also has the json block highlights.
ITEM_BLOCKS = (*EXAMPLE_ITEM_BLOCKS, "highlights")
BLOCKS = 3 + 4 * len(ITEM_BLOCKS)
# The json block the fixture adds to the projects collection (the example has none).
HIGHLIGHTS_BLOCK: dict[str, Any] = {
    "format": "json",
    "prompt": (
        "List three short highlights of {{ item.name }} ({{ item.description }}) as JSON:"
        ' an object with a "highlights" key holding a list of three strings.'
    ),
    "schema": {
        "type": "object",
        "required": ["highlights"],
        "properties": {"highlights": {"type": "array", "items": {"type": "string"}}},
    },
    # No max_tokens: this block takes llm.max_tokens, the others set their own.
}
# Retries as the client makes them, but with backoff in hundredths of a second: the CLI
# builds really sleep (the defaults wait 0.5..8 s), and e2e tests must stay fast.
FAST_RETRY: dict[str, float] = {"base_delay": 0.01, "max_delay": 0.05}
FAST_RETRY_YAML = "  retry: {base_delay: 0.01, max_delay: 0.05}"
# Wide enough that Rich never wraps a message or a table cell in the tests.
CONSOLE_WIDTH = 240


Args = Sequence[str | Path]


@dataclass(frozen=True)
class RunResult:
    """What one run of the CLI did."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def flat(self) -> str:
        """stdout + stderr with every run of whitespace collapsed to one space."""
        return " ".join(self.output.split())

    def describe(self) -> str:
        return f"exit {self.exit_code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


@contextmanager
def wide_consoles() -> Iterator[None]:
    """Swap the CLI's consoles for plain, wide ones that write to the current sys.stdout/err.

    Rich reads the terminal size once, when a console is made; this makes output in the
    tests independent of the developer's terminal and of FORCE_COLOR.
    """
    saved = (cli.consoles.out, cli.consoles.err)
    cli.consoles.out = Console(width=CONSOLE_WIDTH, color_system=None, force_terminal=False)
    cli.consoles.err = Console(
        width=CONSOLE_WIDTH, color_system=None, force_terminal=False, stderr=True
    )
    try:
        yield
    finally:
        cli.consoles.out, cli.consoles.err = saved


def invoke(args: Args, env: Mapping[str, str] | None = None) -> RunResult:
    """Run `trinity ARGS` in process through Typer's CliRunner."""
    runner = CliRunner()
    with wide_consoles():
        result = runner.invoke(cli.app, [str(a) for a in args], env=dict(env or {}))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # An exception that escaped the CLI is a bug: fail with its own traceback.
        raise result.exception
    return RunResult(result.exit_code, result.stdout, result.stderr)


def subprocess_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a `python -m trinity` child: no leaky variables, wide output."""
    env = {k: v for k, v in os.environ.items() if not is_leaky_variable(k)}
    env.update(
        COLUMNS=str(CONSOLE_WIDTH),
        NO_COLOR="1",
        PYTHONIOENCODING="utf-8",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra or {})
    return env


def run_trinity(
    args: Args,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> RunResult:
    """Run `python -m trinity ARGS` in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "trinity", *(str(a) for a in args)],
        cwd=cwd,
        env=subprocess_env(env),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )
    return RunResult(proc.returncode, proc.stdout, proc.stderr)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative POSIX path -> bytes)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def highlights_for(name: str) -> list[str]:
    """The scripted answer of the fixture's `highlights` json block for one project."""
    return [f"{name} highlight {n}" for n in ("one", "two", "three")]


def highlights_prompt_marker(name: str) -> str:
    """A substring of the `highlights` prompt for the project `name` only."""
    return f"highlights of {name} ("


# --------------------------------------------------------------------------- links


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(str(values["id"]))
        href = values.get("href")
        if tag in ("a", "link") and href is not None:
            self.links.append((tag, href))

    handle_startendtag = handle_starttag


def parse_page(path: Path) -> _PageParser:
    parser = _PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


@dataclass(frozen=True)
class LinkCheck:
    checked: int
    external: list[str]
    broken: list[str]


def check_links(site: Path) -> LinkCheck:
    """Resolve every <a href> and <link href> of every HTML file in `site`.

    A relative link must name a file, or a folder holding index.html, inside the site;
    a fragment must name an id in the target page. Root-absolute links ("/x") are broken
    (the site must work from any sub-path); links with a scheme or host are listed apart.
    """
    site = site.resolve()
    parsed: dict[Path, _PageParser] = {}

    def page(path: Path) -> _PageParser:
        if path not in parsed:
            parsed[path] = parse_page(path)
        return parsed[path]

    checked, external, broken = 0, [], []
    for html in sorted(site.rglob("*.html")):
        where = html.relative_to(site).as_posix()
        for tag, href in page(html).links:
            parts = urlsplit(href)
            if parts.scheme or parts.netloc:
                external.append(f"{where}: <{tag} href={href!r}>")
                continue
            checked += 1
            path = unquote(parts.path)
            if path.startswith("/"):
                broken.append(f"{where}: <{tag} href={href!r}> is root-absolute")
                continue
            base = html.parent.relative_to(site).as_posix()
            joined = posixpath.normpath(posixpath.join(base, path)) if path else where
            if joined == ".." or joined.startswith("../"):
                broken.append(f"{where}: <{tag} href={href!r}> leaves the site")
                continue
            target = site / joined
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{where}: <{tag} href={href!r}> -> {joined} does not exist")
                continue
            fragment = unquote(parts.fragment)
            if fragment and target.suffix == ".html" and fragment not in page(target).ids:
                broken.append(f"{where}: <{tag} href={href!r}> -> no id {fragment!r}")
    return LinkCheck(checked, external, broken)


# --------------------------------------------------------------------------- project


class SiteProject:
    """A Trinity project under tmp_path whose llm section points at a fake server."""

    def __init__(self, root: Path, server: FakeLLMServer, provider: str) -> None:
        self.root = root
        self.server = server
        self.provider = provider

    @classmethod
    def create(cls, root: Path, server: FakeLLMServer, *, provider: str = "ollama") -> SiteProject:
        write_project(root)
        project = cls(root, server, provider)
        project._point_llm_at(server.url)
        project._add_highlights_block()
        project.rescript_highlights()
        return project

    def _point_llm_at(self, url: str) -> None:
        """Swap the example's embedded model for a chat model on the fake server."""
        text = self.settings_path.read_text(encoding="utf-8")
        # Edit the text rather than re-dump the YAML: the example's file stays as written.
        assert not re.search(r"^\s*api_url:", text, re.MULTILINE), "the example sets api_url"
        replacements = {
            r"^  provider: local\b.*$": f"  provider: {self.provider}\n  api_url: {url}",
            r"^  model: gemma3-270m\b.*$": f"  model: {MODEL}",
            r"^  timeout: 120\b.*$": "  timeout: 30\n" + FAST_RETRY_YAML,
        }
        for pattern, new in replacements.items():
            text, count = re.subn(pattern, new, text, flags=re.MULTILINE)
            assert count == 1, f"the example settings changed: {pattern!r}"
        self.settings_path.write_text(text, encoding="utf-8")
        llm = self.settings()["llm"]
        assert (llm["provider"], llm["api_url"], llm["model"], llm["timeout"]) == (
            self.provider,
            url,
            MODEL,
            30,
        )
        assert llm["retry"] == FAST_RETRY

    def _add_highlights_block(self) -> None:
        """Append the json block `highlights` to the example's projects collection."""

        def add(pages: list[dict[str, Any]]) -> None:
            (collection,) = [p for p in pages if p.get("collection") == "projects"]
            blocks = collection["blocks"]
            assert tuple(blocks) == EXAMPLE_ITEM_BLOCKS, "the example's project blocks changed"
            blocks["highlights"] = dict(HIGHLIGHTS_BLOCK)

        self.edit_pages(add)

    def script_highlights(self, name: str, answer: str | None = None) -> None:
        """Script the answer of project `name`'s highlights block (default: a valid one)."""
        if answer is None:
            answer = json.dumps({"highlights": highlights_for(name)})
        self.server.script(highlights_prompt_marker(name), answer)

    def rescript_highlights(self, answers: Mapping[str, str] | None = None) -> None:
        """Script every project's highlights afresh: `answers` by project name, and the
        valid default for the others (scripts match first come, first served)."""
        self.server.clear_scripts()
        for name, answer in (answers or {}).items():
            self.script_highlights(name, answer)
        for item in self.items:
            self.script_highlights(item["name"])

    def add_item(
        self, name: str, description: str, language: str = "Rust", topic: str = "tooling"
    ) -> None:
        """Add a project to the example's `projects` collection."""
        item = {"name": name, "language": language, "year": 2021, "topic": topic}
        items = [*self.items, {**item, "description": description}]
        (self.data_dir / "projects.yaml").write_text(yaml.safe_dump(items, sort_keys=False))

    def use_collection(self, count: int, *, max_tokens: int = 20) -> None:
        """Make the site `count` project pages of one cheap text block each, and nothing else.

        The projects are "Item 001", "Item 002", ...; their block `summary` asks a prompt
        that names the item, so each page gets its own answer (see `expected_digests`).
        """
        items = [
            {
                "name": f"Item {n:03d}",
                "language": "Python",
                "year": 2020,
                "description": f"Example item number {n}.",
            }
            for n in range(1, count + 1)
        ]
        (self.data_dir / "projects.yaml").write_text(yaml.safe_dump(items, sort_keys=False))
        page = {
            "collection": "projects",
            "slug": "projects/{{ item.name | slugify }}",
            "title": "{{ item.name }}",
            "blocks": {
                "summary": {
                    "format": "text",
                    "prompt": "One line about {{ item.name }}.",
                    "max_tokens": max_tokens,
                }
            },
        }
        data = self.pages()
        data["pages"] = [page]
        self.write_pages(data)

    def copy(self, name: str) -> SiteProject:
        """This project copied beside it as `name`: another machine's checkout, with a
        disk cache and an output folder of its own, on the same fake server."""
        root = self.root.parent / name
        shutil.copytree(self.root, root)
        return SiteProject(root, self.server, self.provider)

    # ------------------------------------------------------------------ paths

    @property
    def settings_path(self) -> Path:
        return self.root / "config" / "settings.yaml"

    @property
    def pages_path(self) -> Path:
        return self.root / "content" / "pages.yaml"

    @property
    def data_dir(self) -> Path:
        return self.root / "content" / "data"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def items(self) -> list[dict[str, Any]]:
        """The example's `projects` collection."""
        data = yaml.safe_load((self.data_dir / "projects.yaml").read_text(encoding="utf-8"))
        assert isinstance(data, list)
        return data

    @property
    def item_slugs(self) -> list[str]:
        return [_slugify(item["name"]) for item in self.items]

    def page_files(self) -> list[str]:
        """Every page's HTML file, relative to the output folder."""
        return [
            "index.html",
            "about/index.html",
            *(f"projects/{slug}/index.html" for slug in self.item_slugs),
        ]

    def leftovers(self) -> list[Path]:
        """Staging or retired output folders that a build left behind."""
        return sorted(
            p for p in self.root.iterdir() if re.match(r"\.output\.(staging|old)-", p.name)
        )

    # ------------------------------------------------------------------ files

    def settings(self) -> dict[str, Any]:
        data = yaml.safe_load(self.settings_path.read_text(encoding="utf-8"))
        assert isinstance(data, dict)
        return data

    def write_settings(self, data: Mapping[str, Any]) -> None:
        self.settings_path.write_text(yaml.safe_dump(dict(data), sort_keys=False), "utf-8")

    def update_settings(self, section: str, **values: Any) -> None:
        data = self.settings()
        data.setdefault(section, {}).update(values)
        self.write_settings(data)

    def pages(self) -> dict[str, Any]:
        data = yaml.safe_load(self.pages_path.read_text(encoding="utf-8"))
        assert isinstance(data, dict)
        return data

    def write_pages(self, data: Mapping[str, Any]) -> None:
        self.pages_path.write_text(yaml.safe_dump(dict(data), sort_keys=False), "utf-8")

    def edit_pages(self, change: Callable[[list[dict[str, Any]]], None]) -> None:
        data = self.pages()
        change(data["pages"])
        self.write_pages(data)

    def report(self, output: Path | None = None) -> dict[str, Any]:
        path = (output or self.output) / ".trinity" / "report.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(data, dict)
        return data

    def html(self, relative: str, output: Path | None = None) -> str:
        return ((output or self.output) / relative).read_text(encoding="utf-8")

    # ------------------------------------------------------------------ runs

    def cli(self, *args: str | Path, env: Mapping[str, str] | None = None) -> RunResult:
        """`trinity ARGS` through CliRunner (in process)."""
        return invoke(args, env)

    def build(self, *args: str | Path, env: Mapping[str, str] | None = None) -> RunResult:
        """`trinity build --project ROOT ARGS` through CliRunner."""
        return invoke(["build", "--project", self.root, *args], env)

    def run(
        self, *args: str | Path, env: Mapping[str, str] | None = None, timeout: float = 120
    ) -> RunResult:
        """`python -m trinity ARGS` in a subprocess, from the project's parent folder."""
        return run_trinity(args, cwd=self.root.parent, env=env, timeout=timeout)

    def popen(
        self, *args: str | Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """`python -m trinity ARGS`, running on; with Ctrl-C working even when this test
        run was started in the background (whose children inherit SIGINT ignored)."""
        return subprocess.Popen(
            [sys.executable, "-m", "trinity", *(str(a) for a in args)],
            cwd=self.root.parent,
            env=subprocess_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            preexec_fn=_default_sigint if sys.platform != "win32" else None,
        )

    # ------------------------------------------------------------------ expectations

    def expected_digests(self, theme: str = "minimal") -> dict[str, list[str]]:
        """Page file -> the digests of the fake server's answers to its text blocks.

        The system message is the theme's voice from its theme.yaml (the example sets no
        site or block system prompt); the user message is the block's rendered prompt, with
        a collection page's facts after it (`chat_prompt`).
        """
        from trinity.plan import chat_prompt
        from trinity.project import prepare

        voice = yaml.safe_load((BUILTIN_THEMES / theme / "theme.yaml").read_text("utf-8"))[
            "voice"
        ].strip()
        project = prepare(self.root, theme=theme)
        return {
            page.output_path: [
                prompt_digest(voice, chat_prompt(page, block))
                for block in page.blocks
                if block.format != "json"
            ]
            for page in project.site.pages
        }


def interrupt_when(
    proc: subprocess.Popen[str], ready: Callable[[], bool], what: str, timeout: float = 60
) -> tuple[RunResult, float]:
    """Ctrl-C (SIGINT) to `proc` once `ready()` holds; what it did, and the seconds from the
    signal to its exit. Fails if it exits first or `ready` takes longer than `timeout`."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"the build never {what}"
            time.sleep(0.01)
        signalled = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=timeout)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return RunResult(proc.returncode, stdout, stderr), took


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
