"""The CLI's options and commands: --dry-run, --no-cache, --concurrency, --output, --quiet,
--version, themes, check and init."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.text import Text
from typer.testing import CliRunner

from tests.e2e.sitekit import (
    BLOCKS,
    BUILTIN_THEMES,
    EXAMPLE_BLOCKS,
    EXAMPLE_ITEM_BLOCKS,
    ITEM_BLOCKS,
    MODEL,
    PAGES,
    RunResult,
    SiteProject,
    invoke,
    run_trinity,
    snapshot,
    subprocess_env,
)
from trinity import __version__, cli
from trinity.report import BlockResult, BuildReport


def assert_ok(result: RunResult) -> None:
    assert result.exit_code == 0, result.describe()
    assert "Traceback" not in result.output


def plan_rows(project: SiteProject) -> list[tuple[str, str]]:
    rows = [("index", "intro"), ("about", "about"), ("about", "now")]
    for slug in project.item_slugs:
        rows += [(f"projects/{slug}", block) for block in ITEM_BLOCKS]
    return rows


def assert_plan(
    result: RunResult, rows: list[tuple[str, str]], status: str, pages: int = PAGES
) -> None:
    """Each of `rows` (page, block) has a row of the plan table with `status`."""
    assert f"Plan: {pages} pages (dry run)" in result.stdout
    lines = result.stdout.splitlines()
    for page, block in rows:
        row = re.compile(rf"\b{re.escape(page)}\s+\W\s+{block}\s+\W\s+{re.escape(status)}")
        assert any(row.search(line) for line in lines), (page, block, result.stdout)


# --------------------------------------------------------------------------- --dry-run


def test_dry_run_calls_no_model_and_shows_what_is_cached(site_project: SiteProject) -> None:
    server = site_project.server

    fresh = site_project.build("--dry-run")

    assert_ok(fresh)
    assert server.request_count == 0
    assert_plan(fresh, plan_rows(site_project), "to generate")
    assert f"0 cached, {BLOCKS} to generate" in fresh.stdout
    assert not site_project.output.exists(), "a dry run writes no output"

    assert_ok(site_project.build())
    built = snapshot(site_project.output)
    requests = server.request_count

    cached = site_project.build("--dry-run")

    assert_ok(cached)
    assert server.request_count == requests
    assert_plan(cached, plan_rows(site_project), "cached (")
    assert f"{BLOCKS} cached, 0 to generate" in cached.stdout
    assert snapshot(site_project.output) == built
    assert site_project.leftovers() == []

    # In a new process only the disk tier has the answers.
    subprocess_run = site_project.run("build", "--project", site_project.root, "--dry-run")
    assert_ok(subprocess_run)
    assert_plan(subprocess_run, plan_rows(site_project), "cached (disk)")
    assert server.request_count == requests


def test_dry_run_after_a_content_change_lists_only_new_blocks(site_project: SiteProject) -> None:
    assert_ok(site_project.build())
    old_rows = plan_rows(site_project)
    site_project.add_item("Beacon", "A tiny status page generator.")
    site_project.script_highlights("Beacon")

    result = site_project.build("--dry-run")

    assert_ok(result)
    assert f"{BLOCKS} cached, {len(ITEM_BLOCKS)} to generate" in result.stdout
    assert_plan(result, old_rows, "cached (", pages=PAGES + 1)
    new_rows = [("projects/beacon", block) for block in ITEM_BLOCKS]
    assert_plan(result, new_rows, "to generate", pages=PAGES + 1)
    assert site_project.server.chat_count == BLOCKS


# --------------------------------------------------------------------------- --no-cache


LUMEN = "projects/lumen/index.html"


def test_no_cache_asks_again_and_caches_the_new_answers(site_project: SiteProject) -> None:
    server = site_project.server
    assert_ok(site_project.build())
    assert server.chat_count == BLOCKS
    # The model now answers one block differently.
    site_project.rescript_highlights({"Lumen": json.dumps({"highlights": ["Refreshed"]})})

    result = site_project.build("--no-cache")

    assert_ok(result)
    assert server.chat_count == 2 * BLOCKS, "every block is asked again"
    assert site_project.report()["totals"]["llm_calls"] == BLOCKS
    assert site_project.report()["totals"]["cache_hits"] == 0
    assert "Refreshed" in site_project.html(LUMEN)
    assert f"({PAGES - 1} unchanged, {BLOCKS} model calls)" in result.flat

    again = site_project.build()

    assert_ok(again)
    assert server.chat_count == 2 * BLOCKS, "the refreshed answers were cached"
    assert site_project.report()["totals"]["cache_hits"] == BLOCKS
    assert "Refreshed" in site_project.html(LUMEN)
    assert "Nothing changed" in again.flat


def test_no_cache_on_a_new_project_fills_the_cache(site_project: SiteProject) -> None:
    assert_ok(site_project.build("--no-cache"))
    assert site_project.server.chat_count == BLOCKS

    assert_ok(site_project.build())

    assert site_project.server.chat_count == BLOCKS
    assert site_project.report()["totals"]["cache_hits"] == BLOCKS


def test_no_cache_still_serves_the_old_answer_when_the_model_fails(
    site_project: SiteProject,
) -> None:
    assert_ok(site_project.build())
    pages = {page: site_project.html(page) for page in site_project.page_files()}
    site_project.server.close()

    result = site_project.build("--no-cache")

    assert_ok(result)
    assert site_project.report()["totals"]["stale"] == BLOCKS
    assert "Stale" in result.stderr
    assert {page: site_project.html(page) for page in site_project.page_files()} == pages


def test_no_cache_dry_run_plans_every_block(site_project: SiteProject) -> None:
    assert_ok(site_project.build())

    result = site_project.build("--dry-run", "--no-cache")

    assert_ok(result)
    assert_plan(result, plan_rows(site_project), "to generate")
    assert f"0 cached, {BLOCKS} to generate" in result.stdout
    assert site_project.server.chat_count == BLOCKS


def test_no_cache_help_says_what_it_does(site_project: SiteProject) -> None:
    result = site_project.cli("build", "--help")

    assert_ok(result)
    assert "Ask the model again for every block; the new answers replace the cached ones." in (
        result.flat
    )


# --------------------------------------------------------------------------- --concurrency


@pytest.mark.parametrize(
    ("flag", "setting", "limit"),
    [(["--concurrency", "1"], None, 1), (["--concurrency", "3"], 8, 3), ([], 2, 2)],
    ids=["flag-1", "flag-overrides-setting", "setting-2"],
)
def test_concurrency_limits_requests_in_flight(
    site_project: SiteProject, flag: list[str], setting: int | None, limit: int
) -> None:
    if setting is not None:
        site_project.update_settings("llm", concurrency=setting)
    site_project.server.latency = 0.08

    result = site_project.build(*flag)

    assert_ok(result)
    assert site_project.server.chat_count == BLOCKS
    # With fifteen slow blocks the limit is reached, and never passed.
    assert site_project.server.max_in_flight == limit


@pytest.mark.parametrize("value", ["0", "-1", "1001", "many"])
def test_bad_concurrency_is_refused(site_project: SiteProject, value: str) -> None:
    result = site_project.build("--concurrency", value)

    assert result.exit_code == 2, result.describe()
    assert "--concurrency" in result.output
    assert "Traceback" not in result.output
    assert site_project.server.request_count == 0


# --------------------------------------------------------------------------- --output


def test_output_option_writes_elsewhere(site_project: SiteProject, tmp_path: Path) -> None:
    elsewhere = tmp_path / "published" / "site"

    result = site_project.build("--output", elsewhere)

    assert_ok(result)
    assert not site_project.output.exists()
    assert (elsewhere / "index.html").is_file()
    for page_file in site_project.page_files():
        assert (elsewhere / page_file).is_file()
    assert site_project.report(elsewhere)["output_dir"] == str(elsewhere)
    assert f"into {elsewhere}" in result.flat


def test_relative_output_is_relative_to_the_working_directory(
    site_project: SiteProject, tmp_path: Path
) -> None:
    result = site_project.build("-o", "public")  # the fixture's cwd is tmp_path

    assert_ok(result)
    assert (tmp_path / "public" / "index.html").is_file()
    assert not site_project.output.exists()


def test_output_from_the_environment_is_relative_to_the_project(
    site_project: SiteProject,
) -> None:
    result = site_project.build(env={"TRINITY_OUTPUT_DIR": "public"})

    assert_ok(result)
    assert (site_project.root / "public" / "index.html").is_file()
    assert not site_project.output.exists()


def test_output_setting(site_project: SiteProject) -> None:
    site_project.update_settings("build", output_dir="dist/www")

    assert_ok(site_project.build())

    assert (site_project.root / "dist" / "www" / "about" / "index.html").is_file()
    assert not site_project.output.exists()
    # The lock file stays beside the output folder, as cargo's does beside target/.
    left = [p for p in site_project.root.glob("dist/.www.*") if p.name != ".www.lock"]
    assert left == [], "no staging folder left"


# --------------------------------------------------------------------------- --quiet


def test_quiet_prints_nothing_on_success(site_project: SiteProject) -> None:
    result = site_project.build("--quiet")

    assert_ok(result)
    assert result.stdout == ""
    assert result.stderr == ""
    assert (site_project.output / "index.html").is_file()


def test_quiet_in_a_subprocess(site_project: SiteProject) -> None:
    result = site_project.run("build", "-q", "--project", site_project.root)

    assert_ok(result)
    assert (result.stdout, result.stderr) == ("", "")


def test_quiet_still_reports_errors(site_project: SiteProject) -> None:
    site_project.update_settings("llm", concurrency="four")

    result = site_project.build("--quiet")

    assert result.exit_code == 2
    assert "llm.concurrency" in result.stderr


def test_summary_goes_to_stderr(site_project: SiteProject) -> None:
    result = site_project.build()

    assert_ok(result)
    assert result.stdout == "", "stdout is for results (the dry-run plan), not progress"
    for label in ("pages", "blocks", "LLM calls", "cache hits", "theme", "model"):
        assert label in result.stderr
    assert re.search(rf"LLM calls\s+{BLOCKS}\b", result.stderr)
    assert f"ollama:{MODEL}" in result.stderr


@pytest.mark.parametrize(
    ("pages", "unchanged", "calls", "line"),
    [
        (6, 6, 0, "Nothing changed: 6 pages in out up to date, no model call made"),
        (6, 0, 0, "Built 6 pages into out (0 model calls)"),
        (6, 5, 1, "Built 6 pages into out (5 unchanged, 1 model call)"),
        (1, 0, 2, "Built 1 page into out (2 model calls)"),
    ],
)
def test_the_last_line_says_what_changed(pages: int, unchanged: int, calls: int, line: str) -> None:
    report = BuildReport("site", "out", "minimal", "ollama", MODEL, pages, pages_reused=unchanged)
    report.blocks = [BlockResult("index", f"block{n}", "llm") for n in range(calls)]

    assert Text.from_markup(cli._outcome(report)).plain == line


# --------------------------------------------------------------------------- not a terminal


@pytest.fixture
def piped_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's consoles as made when stdout and stderr are pipes (Rich's 80 columns)."""
    monkeypatch.setenv("COLUMNS", "80")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        consoles = cli.Consoles()
    monkeypatch.setattr(cli, "consoles", consoles)


@pytest.mark.usefixtures("piped_consoles")
def test_a_long_error_is_one_line_when_stderr_is_not_a_terminal(
    site_project: SiteProject,
) -> None:
    site_project.update_settings("llm", temprature=0.5)

    result = CliRunner().invoke(cli.app, ["build", "--project", str(site_project.root)])

    message = (
        "Error: site/config/settings.yaml: llm.temprature: unknown key 'temprature' "
        "(did you mean 'temperature'?)"
    )
    assert result.exit_code == 2, result.output
    assert len(message) > 80
    assert message in result.stderr.splitlines()


@pytest.mark.usefixtures("piped_consoles")
def test_the_last_line_of_a_build_is_one_line_when_stderr_is_not_a_terminal(
    site_project: SiteProject,
) -> None:
    result = CliRunner().invoke(cli.app, ["build", "--project", str(site_project.root)])

    line = f"Built {PAGES} pages into {site_project.output} ({BLOCKS} model calls)"
    assert result.exit_code == 0, result.output
    assert len(line) > 80
    assert line in result.stderr.splitlines()


# --------------------------------------------------------------------------- --version


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag: str) -> None:
    result = invoke([flag])

    assert_ok(result)
    assert result.stdout == f"trinity {__version__}\n"


def test_version_with_python_dash_m(tmp_path: Path) -> None:
    result = run_trinity(["--version"], cwd=tmp_path)

    assert_ok(result)
    assert result.stdout == f"trinity {__version__}\n"
    assert result.stderr == ""


def test_version_with_the_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("trinity")
    if not script.is_file():
        pytest.skip(f"no console script next to {sys.executable}")
    proc = run_command([str(script), "--version"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"trinity {__version__}\n"


def run_command(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`command` run to its end in `cwd`, its output captured as text."""
    return subprocess.run(
        command,
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --------------------------------------------------------------------------- themes


def _description(theme: str) -> str:
    meta = yaml.safe_load((BUILTIN_THEMES / theme / "theme.yaml").read_text("utf-8"))
    description = meta["description"]
    assert isinstance(description, str)
    return description


def test_themes_lists_the_builtin_themes(tmp_path: Path) -> None:
    result = invoke(["themes", "--project", tmp_path])

    assert_ok(result)
    for theme in ("minimal", "brutalist"):
        line = next(ln for ln in result.stdout.splitlines() if ln.strip().startswith(theme))
        assert _description(theme) in line
        assert "built-in" in line


def test_themes_lists_project_themes(site_project: SiteProject) -> None:
    theme = site_project.root / "themes" / "calm"
    (theme / "templates").mkdir(parents=True)
    (theme / "theme.yaml").write_text(
        "name: calm\ndescription: Minimal, calmer.\nextends: minimal\n", "utf-8"
    )

    result = site_project.cli("themes", "--project", site_project.root)

    assert_ok(result)
    line = next(ln for ln in result.stdout.splitlines() if ln.strip().startswith("calm"))
    assert "Minimal, calmer." in line
    assert "minimal" in line.split("Minimal, calmer.", 1)[1]
    assert str(theme) in line
    assert site_project.server.request_count == 0


# --------------------------------------------------------------------------- check


def test_check_accepts_the_example_without_calling_a_model(site_project: SiteProject) -> None:
    result = site_project.cli("check", "--project", site_project.root)

    assert_ok(result)
    assert f"OK: {PAGES} pages, {BLOCKS} blocks, theme 'minimal'" in result.stdout
    assert site_project.server.request_count == 0
    assert not site_project.output.exists()


def test_check_with_a_theme(site_project: SiteProject) -> None:
    result = site_project.cli("check", "-p", site_project.root, "--theme", "brutalist")

    assert_ok(result)
    assert "theme 'brutalist'" in result.stdout


def test_check_fails_on_a_bad_project(site_project: SiteProject) -> None:
    site_project.update_settings("build", theme="baroque")

    result = site_project.cli("check", "--project", site_project.root)

    assert result.exit_code == 2, result.describe()
    assert "unknown theme 'baroque'" in result.flat
    assert site_project.server.request_count == 0


# --------------------------------------------------------------------------- init


def test_init_writes_a_project_that_check_accepts(tmp_path: Path) -> None:
    target = tmp_path / "new-site"

    result = invoke(["init", target])

    assert_ok(result)
    written = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()}
    assert {
        ".gitignore",
        "config/settings.yaml",
        "content/pages.yaml",
        "content/data/profile.yaml",
        "content/data/projects.yaml",
    } <= written
    assert f"Wrote {len(written)} files into {target}" in result.flat
    assert "trinity build" in result.flat

    checked = invoke(["check", "--project", target])

    assert_ok(checked)
    # The example as written: no highlights block (SiteProject.create adds it).
    assert f"OK: {PAGES} pages, {EXAMPLE_BLOCKS} blocks" in checked.stdout


def test_init_then_dry_run_plans_the_embedded_model_without_loading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trinity.llm.providers.local import LocalBackend

    def no_generation(self: LocalBackend, request: object) -> None:
        raise AssertionError("a dry run must not generate")

    monkeypatch.setattr(LocalBackend, "send", no_generation)
    target = tmp_path / "new-site"
    assert_ok(invoke(["init", target]))

    result = invoke(["build", "--project", target, "--dry-run"])

    assert_ok(result)
    rows = [("index", "intro"), ("about", "about"), ("about", "now")]
    slugs = ("tidewater", "quill-cli", "harbor-metrics", "lumen")
    rows += [(f"projects/{slug}", block) for slug in slugs for block in EXAMPLE_ITEM_BLOCKS]
    assert_plan(result, rows, "to generate")
    assert f"0 cached, {EXAMPLE_BLOCKS} to generate" in result.stdout
    assert not (target / "output").exists()


def test_init_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    assert_ok(invoke(["init"]))

    assert (tmp_path / "config" / "settings.yaml").is_file()
    assert_ok(invoke(["check"]))


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    target = tmp_path / "site"
    assert_ok(invoke(["init", target]))
    pages = target / "content" / "pages.yaml"
    pages.write_text("pages: []  # my own work\n", "utf-8")
    before = snapshot(target)

    refused = invoke(["init", target])

    assert refused.exit_code == 2, refused.describe()
    assert "already exists" in refused.flat
    assert "--force" in refused.flat
    assert "Traceback" not in refused.output
    assert snapshot(target) == before

    forced = invoke(["init", target, "--force"])

    assert_ok(forced)
    assert pages.read_text("utf-8") != "pages: []  # my own work\n"
    assert_ok(invoke(["check", "--project", target]))


def test_init_keeps_unrelated_files(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("mine\n", "utf-8")

    assert_ok(invoke(["init", tmp_path]))

    assert (tmp_path / "README.md").read_text("utf-8") == "mine\n"


# --------------------------------------------------------------------------- --help


def test_build_help_shows_where_defaults_come_from(tmp_path: Path) -> None:
    # Rich used to swallow "[default: ...]" in help texts as if it were markup.
    result = run_trinity(["build", "--help"], cwd=tmp_path)

    assert_ok(result)
    for text in (
        "Settings file (default: PROJECT/config/settings.yaml).",
        "Theme name (default: build.theme).",
        "Output folder (default: output).",
        "Requests in flight at once (default: llm.concurrency).",
    ):
        assert text in result.flat, text


def test_the_version_is_answered_without_loading_the_cli(tmp_path: Path) -> None:
    """`trinity --version` starts fast: the entry point answers it before Typer and Rich
    are imported (benchmarks/startup.py measures it)."""
    code = (
        "import sys, trinity.launch as launch; launch.main(['--version']);"
        " print(sorted(m for m in ('typer', 'rich', 'trinity.cli') if m in sys.modules))"
    )
    proc = run_command([sys.executable, "-c", code], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"trinity {__version__}\n[]\n"


def test_anything_else_goes_to_the_cli(tmp_path: Path) -> None:
    # The CLI's own --version is eager: with a command after it, it still only prints.
    with_command = run_trinity(["--version", "themes"], cwd=tmp_path)
    assert (with_command.exit_code, with_command.stdout) == (0, f"trinity {__version__}\n")
    assert run_trinity(["--help"], cwd=tmp_path).stdout.startswith("Usage")


def test_every_build_option_is_in_the_readme() -> None:
    import typer.main

    from trinity import cli

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text("utf-8")
    command = typer.main.get_command(cli.app).commands["build"]
    options = {name for param in command.params for name in param.opts if name.startswith("--")}
    missing = sorted(name for name in options - {"--help"} if f"`{name}" not in readme)
    assert options and not missing, f"README.md's build options lack {missing}"
