"""The package's layers as folders: a module imports only from its own folder and from the
folders below it, and no import cycle exists (docs/development.md, Layout)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "auth0_proxy"
# Lowest first; the package's own modules (the app factory, the CLI) sit above them all.
LAYERS = (
    "core",
    "storage",
    "spending",
    "caching",
    "auth0",
    "members",
    "access",
    "edge",
    "edge.api_v2",
    "ops",
    "",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def folder_of(module: str, is_package: bool) -> str:
    return module if is_package else module.rpartition(".")[0]


def imports_of(source: str, folder: str) -> set[str]:
    """The proxy's modules (names relative to the package) that ``source``, a module of
    ``folder``, imports."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = folder.split(".") if folder else []
            target = ".".join([*base[: len(base) - node.level + 1], node.module or ""])
        elif (node.module or "").startswith("auth0_proxy"):
            target = node.module.removeprefix("auth0_proxy")
        else:
            continue
        target = target.strip(".")
        found.add(target)
        found.update(f"{target}.{alias.name}".strip(".") for alias in node.names)
    return {name for name in found if module_file(name)}


def module_file(name: str) -> Path | None:
    base = PACKAGE.joinpath(*name.split(".")) if name else PACKAGE
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def graph() -> dict[str, set[str]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        modules[name] = imports_of(path.read_text(), folder_of(name, path.name == "__init__.py"))
    return modules


def rank(module: str) -> int:
    path = module_file(module)
    return LAYERS.index(folder_of(module, path is not None and path.name == "__init__.py"))


def test_every_folder_is_a_layer():
    folders = {folder_of(name, module_file(name).name == "__init__.py") for name in graph()}
    assert folders == set(LAYERS)


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        for target in targets
        if rank(target) > rank(module)
    ]
    assert upward == []


def test_no_import_cycle():
    edges, done, path = graph(), set(), []

    def visit(module: str) -> None:
        assert module not in path, "cycle: " + " -> ".join([*path[path.index(module) :], module])
        if module in done:
            return
        path.append(module)
        for target in sorted(edges[module]):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(edges):
        visit(module)


def test_the_checker_reads_every_form_of_import():
    """Absolute, relative and package imports are all seen, so an upward one cannot hide."""
    source = (
        "from auth0_proxy.edge.users import bp\n"
        "from ..members import directory\n"
        "from . import metrics\n"
        "from auth0_proxy.spending import policy\n"
    )
    assert imports_of(source, "core") == {
        "edge.users",
        "members",
        "members.directory",
        "core",
        "core.metrics",
        "spending",
        "spending.policy",
    }
    assert rank("edge.users") > rank("core.metrics")
