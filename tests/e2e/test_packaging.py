"""The wheel: it must carry the themes, the example project and py.typed, and declare
every third-party package that trinity imports."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
THEMES = ("minimal", "brutalist")
THEME_FILES = (
    "theme.yaml",
    "static/style.css",
    "templates/base.html",
    "templates/index.html",
    "templates/page.html",
    "templates/item.html",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """A wheel built from a copy of the source tree (the repository is never written to)."""
    pytest.importorskip("hatchling", reason="building the wheel offline needs hatchling")
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(
        REPO / "trinity",
        source / "trinity",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache"),
    )
    dist = base / "dist"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "-w",
            str(dist),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = dist.glob("trinity-*.whl")
    return zipfile.ZipFile(built)


def _metadata(wheel: zipfile.ZipFile) -> tuple[str, str]:
    (meta,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    return wheel.read(meta).decode(), wheel.read(entry_points).decode()


@pytest.mark.slow
def test_wheel_contains_themes_example_and_py_typed(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())

    shipped = [
        path.relative_to(REPO).as_posix()
        for path in (REPO / "trinity" / "themes").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    for theme in THEMES:
        assert f"trinity/themes/{theme}/theme.yaml" in shipped, theme
    for relative in THEME_FILES:  # the root theme has the whole template contract
        assert f"trinity/themes/minimal/{relative}" in shipped, relative
    missing = sorted(set(shipped) - names)
    assert missing == [], f"theme files missing from the wheel: {missing}"
    example = {
        "trinity/example/config/settings.yaml",
        "trinity/example/content/pages.yaml",
        "trinity/example/content/data/profile.yaml",
        "trinity/example/content/data/projects.yaml",
        "trinity/example/gitignore",
    }
    assert example <= names
    assert "trinity/py.typed" in names
    assert "trinity/__main__.py" in names
    # The source tree's symlinks, caches and tests stay out.
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "config/"))]


@pytest.mark.slow
def test_wheel_declares_its_console_script(wheel: zipfile.ZipFile) -> None:
    _, entry_points = _metadata(wheel)

    assert re.search(r"^trinity\s*=\s*trinity\.launch:main\s*$", entry_points, re.MULTILINE)


def _imported_top_level_modules() -> tuple[set[str], set[str]]:
    """Third-party modules trinity imports: (at import time, only inside functions)."""
    eager: set[str] = set()
    lazy: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            found: set[str] = set()
            if isinstance(child, ast.Import):
                found = {alias.name.split(".")[0] for alias in child.names}
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found = {child.module.split(".")[0]}
            (lazy if in_function else eager).update(found)
            # `if TYPE_CHECKING:` never runs: what it imports is needed as late as a
            # function's imports are (the browser's Playwright types, say).
            deferred = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) or (
                isinstance(child, ast.If)
                and isinstance(child.test, ast.Name)
                and child.test.id == "TYPE_CHECKING"
            )
            visit(child, in_function or deferred)

    for path in (REPO / "trinity").rglob("*.py"):
        visit(ast.parse(path.read_text("utf-8")), False)
    ours = set(sys.stdlib_module_names) | {"trinity", "__future__"}
    return eager - ours, lazy - ours - eager


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(wheel: zipfile.ZipFile) -> tuple[set[str], dict[str, set[str]]]:
    """The wheel's declared distributions: (dependencies, extra -> its distributions)."""
    metadata, _ = _metadata(wheel)
    message = Parser().parsestr(metadata)
    core: set[str] = set()
    extras: dict[str, set[str]] = {}
    for requirement in message.get_all("Requires-Dist") or []:
        name = _normalise(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0])
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
        if extra:
            extras.setdefault(extra.group(1), set()).add(name)
        else:
            core.add(name)
    return core, extras


def _missing(modules: set[str], declared: set[str]) -> dict[str, list[str]]:
    providers = importlib.metadata.packages_distributions()
    missing = {}
    for module in sorted(modules):
        distributions = {_normalise(d) for d in providers.get(module, [module])}
        if not distributions & declared:
            missing[module] = sorted(distributions)
    return missing


@pytest.mark.slow
def test_wheel_declares_every_imported_distribution(wheel: zipfile.ZipFile) -> None:
    core, extras = _requirements(wheel)
    optional = set().union(*(names for extra, names in extras.items() if extra != "dev"))
    eager, lazy = _imported_top_level_modules()

    missing = _missing(eager, core)
    assert missing == {}, f"imported by trinity but not in [project].dependencies: {missing}"
    # Imports inside functions may come from an extra (the local provider's, say).
    missing = _missing(lazy, core | optional)
    assert missing == {}, f"imported by trinity but in no dependency or extra: {missing}"


@pytest.mark.slow
def test_local_extra_declares_the_packaged_model(wheel: zipfile.ZipFile) -> None:
    from trinity.llm.providers.local import MODEL_PACKAGE

    _, extras = _requirements(wheel)

    # The model package is imported by name (importlib), so the AST scan cannot see it.
    assert _missing({MODEL_PACKAGE, "llama_cpp"}, extras.get("local", set())) == {}
