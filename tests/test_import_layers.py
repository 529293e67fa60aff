"""No import cycles: no module of routeiq_router (or routeiq_operator) imports a module that
imports it back, counting function-level and TYPE_CHECKING imports too. The layers themselves
are import-linter contracts in pyproject.toml (`lint-imports`); this is the whole-graph check."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import grimp
import pytest


def import_graph(package: str, *, external: bool = False) -> grimp.ImportGraph:
    return grimp.build_graph(package, include_external_packages=external, cache_dir=None)


def strongly_connected(graph: grimp.ImportGraph) -> Iterator[list[str]]:
    """The sets of modules that import each other, directly or through others (Tarjan's
    algorithm, iterative); a set of one module is no cycle and is left out."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, imported = work[-1]
            for other in imported:
                if other not in index:
                    index[other] = low[other] = len(index)
                    stack.append(other)
                    on_stack.add(other)
                    work.append((other, iter(sorted(graph.find_modules_directly_imported_by(other)))))
                    break
                if other in on_stack:
                    low[module] = min(low[module], index[other])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[module])
                if low[module] == index[module]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == module:
                            break
                    if len(component) > 1:
                        yield sorted(component)


def describe(graph: grimp.ImportGraph, component: list[str]) -> str:
    lines = []
    for importer in component:
        for imported in component:
            if graph.direct_import_exists(importer=importer, imported=imported):
                where = sorted(
                    detail["line_number"]
                    for detail in graph.get_import_details(importer=importer, imported=imported)
                )
                lines.append(f"  {importer} -> {imported} (line {', '.join(map(str, where))})")
    return "\n".join(lines)


@pytest.mark.parametrize("package", ["routeiq_router", "routeiq_operator"])
def test_no_import_cycle(package: str) -> None:
    graph = import_graph(package)
    cycles = [describe(graph, component) for component in strongly_connected(graph)]
    assert not cycles, "modules that import each other:\n" + "\n\n".join(cycles)


def test_the_graph_counts_lazy_and_type_checking_imports() -> None:
    # so that a cycle closed by an import inside a function or under TYPE_CHECKING still fails
    graph = import_graph("routeiq_router")
    lazy = graph.get_import_details(importer="routeiq_router.gateway.app", imported="routeiq_router.routing")
    assert any(detail["line_contents"].startswith("from routeiq_router.routing import") for detail in lazy)
    type_checking = graph.get_import_details(
        importer="routeiq_router.artifacts.ssrf", imported="routeiq_router.settings"
    )
    assert type_checking, "artifacts.ssrf names RouteIQSettings under TYPE_CHECKING"


def test_a_cycle_is_found() -> None:
    graph = import_graph("routeiq_router")
    graph.add_import(importer="routeiq_router.uris", imported="routeiq_router.settings")
    assert ["routeiq_router.settings", "routeiq_router.uris"] in list(strongly_connected(graph))


@pytest.mark.parametrize("module", ["routeiq_router.strategies.catalog", "routeiq_router.uris"])
def test_leaf_modules_import_only_the_standard_library(module: str) -> None:
    # the operator imports the catalog, the settings the URI parser: neither may pull anything in
    imported = import_graph("routeiq_router", external=True).find_modules_directly_imported_by(module)
    assert {name.split(".")[0] for name in imported} <= set(sys.stdlib_module_names)


def test_the_catalog_imports_without_litellm_numpy_or_torch() -> None:
    heavy = ("litellm", "numpy", "torch", "sklearn", "sentence_transformers", "redis")
    code = (
        "import sys\n"
        "from routeiq_router.strategies.catalog import STRATEGY_NAMES\n"
        f"sys.exit(', '.join(name for name in {heavy!r} if name in sys.modules) or None)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, f"importing the catalog loaded {result.stderr.strip()}"
