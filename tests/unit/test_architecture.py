"""The layering docs/architecture.md draws, held by the imports the code really makes.

Every `import trinity...` and `from trinity... import` in the package is read (those under
`if TYPE_CHECKING:` too: an arrow is an arrow), and the rules are checked on that graph.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

import trinity

PACKAGE = Path(trinity.__file__).resolve().parent

# The layers, top first: a module may import from its own layer or any layer below.
LAYERS: list[set[str]] = [
    {"launch", "__main__"},
    {"cli"},
    {"doctor", "maintenance", "scaffold", "evaluation"},
    {"build", "unchanged"},
    {
        "project",
        "plan",
        "pages",
        "manifest",
        "answers",
        "review",
        "judge",
        "report",
        "metrics",
        "staging",
        "guardian",
        "estimate",
        "usagehistory",
        "batchrun",
    },
    {"site", "render"},
    {"config", "checksettings", "logsettings"},
    {"llm", "checks", "layout"},
    {"cache"},
    {"schema", "yamlfile", "messages", "lock", "logs", "urls", "oserrors", "projectfiles"},
    {"errors", "version"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """Module -> the trinity modules it imports (a package counts as its __init__)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        if {"themes", "example"} & set(path.relative_to(PACKAGE).parts):
            continue
        graph[module_name(path)] = frozenset(_imports(ast.parse(path.read_text("utf-8"))))
    return graph


def _imports(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "trinity":
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "trinity")


def layer_of(module: str) -> int:
    """The index in LAYERS of a module's layer, by its first name under trinity."""
    top = module.split(".")[1]
    for index, layer in enumerate(LAYERS):
        if top in layer:
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and the architecture doc")


def arrows() -> Iterator[tuple[str, str]]:
    for module, imported in import_graph().items():
        for target in imported:
            yield module, target


def test_every_module_has_a_layer() -> None:
    for module in import_graph():
        if module != "trinity":
            layer_of(module)


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{module} -> {target}"
        for module, target in arrows()
        if module != "trinity" and target != "trinity" and layer_of(target) < layer_of(module)
    ]
    assert upward == []


def test_nothing_imports_the_package_init() -> None:
    assert [module for module, target in arrows() if target == "trinity"] == []


@pytest.mark.parametrize(
    ("below", "never"),
    [
        ("trinity.cache", ("trinity.llm", "trinity.config")),
        ("trinity.llm", ("trinity.config", "trinity.site", "trinity.render")),
        ("trinity.maintenance", ("trinity.build",)),
    ],
)
def test_named_arrows_that_must_not_exist(below: str, never: tuple[str, ...]) -> None:
    wrong = [
        f"{module} -> {target}"
        for module, target in arrows()
        if module.startswith(below) and target.startswith(never)
    ]
    assert wrong == []


def test_only_the_cli_and_the_public_api_import_the_build() -> None:
    importers = {module for module, target in arrows() if target == "trinity.build"}
    assert importers <= {"trinity", "trinity.cli"}


def test_there_is_no_import_cycle() -> None:
    graph = import_graph()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            raise AssertionError(" -> ".join((*path[path.index(module) :], module)))
        if module in done or module not in graph:
            return
        for target in graph[module]:
            visit(target, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())
