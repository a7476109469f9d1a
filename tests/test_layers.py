"""The package's floors: a module imports only from its own unit or from a lower floor, and no two
modules import each other, directly or around a circle (read off the source with ast, lazy imports
inside functions included, so a newcomer can rely on the map below).

Lowest floor first. A unit is a top-level module or a subpackage of quant_cli; units on the same
floor are independent of each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "quant_cli"

FLOORS: list[set[str]] = [
    {"plugin_api"},  # the decorator user factor plugins import: nothing of the package (the package exports it)
    {"__init__", "errors", "report", "schema", "workers"},  # ground: imports nothing of the package but these
    {"io", "backend"},  # files on disk, the compute backend
    {"data"},  # sources, the canonical schema, the Delta store
    {"recipe"},  # TOML loading and checks (reads data.frequency)
    {"features"},  # the feature registry, engine, store, raw-bar channels
    {"splits", "pipeline"},  # folds and embargo; the FittedPipeline
    {"dataset"},  # the modelling table: features + labels + weights
    {"backtest", "models"},  # the engine and metrics; model families and registry
    {"runs"},  # run directories, listing, the trial ledger
    {"serve"},  # bundles, batch predict, the app
    {"stages"},  # orchestration: fitting, cross-validation, each stage
    {"walkforward", "tune", "audit", "finetune"},  # built on the stages (the audit refits runs; PPO fine-tunes one)
    {"doctor"},  # `qfactory doctor`'s report on the environment
    {"cli"},  # the command line: translates only
]

# Import circles still present, each as the set of modules on it: none since models register
# themselves (the registry no longer imports models.ensemble, which looks its members up in it).
KNOWN_CYCLES: list[set[str]] = []

# Lazy imports against the floors, each kept on purpose (an import inside the one function that needs it):
KNOWN_UPWARD: dict[str, str] = {
    # a recipe's factor expressions and reference groups are refused at load, before any data is read
    # (issue 23 §1, issue 21 §5); their grammar lives with the features that compute them
    "quant_cli.recipe.checks -> quant_cli.features.expression_eval": "expressions checked at recipe load",
    "quant_cli.recipe.checks -> quant_cli.features.references": "reference groups checked at recipe load",
    # a reference dataset's bars are price-adjusted as the run's own bars are (pipeline/adjust.py)
    "quant_cli.features.store -> quant_cli.pipeline.adjust": "reference bars adjusted like the run's bars",
}


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """Modules of the package that module `name` (of `source`) imports; `from pkg import sub` counts as
    importing pkg.sub, `from pkg import obj` as importing pkg."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            subs = {f"{source}.{a.name}" for a in node.names} & modules
            names_only = any(f"{source}.{a.name}" not in modules for a in node.names)
            found.update(subs)
            if source in modules and names_only:
                found.add(source)
    found.discard(name)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    files = {_module_name(p, package): p for p in package.rglob("*.py")}
    return {
        name: _imports(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", set(files))
        for name, path in files.items()
    }


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def floor_of(module: str) -> int:
    unit = _unit(module)
    for i, floor in enumerate(FLOORS):
        if unit in floor:
            return i
    raise AssertionError(f"{module}: unit {unit!r} is on no floor; add it to FLOORS in tests/test_layers.py")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'a -> b' for each import of a module on a higher floor, or of another unit on the same floor."""
    bad = []
    for module, deps in sorted(graph.items()):
        for dep in sorted(deps):
            if _unit(dep) != _unit(module) and floor_of(dep) >= floor_of(module):
                if f"{module} -> {dep}" not in KNOWN_UPWARD:
                    bad.append(f"{module} -> {dep}")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The import circles: strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_every_unit_of_the_package_is_on_a_floor():
    for module in import_graph():
        floor_of(module)


def test_no_module_imports_from_a_higher_floor_or_a_sibling_unit():
    assert upward_imports(import_graph()) == []


def test_no_import_circle_but_the_known_ones():
    assert [c for c in cycles(import_graph()) if c not in KNOWN_CYCLES] == []


@pytest.mark.parametrize(
    "text",
    [
        "from quant_cli.stages import fitting\n",
        "def lazy():\n    from quant_cli.cli.common import emit\n",
        "import quant_cli.serve.bundle\n",
    ],
)
def test_an_upward_import_is_caught(text):
    graph = import_graph()
    graph["quant_cli.models.base"] |= _imports(text, "quant_cli.models.base", False, set(graph))
    assert upward_imports(graph)


def test_a_circle_is_caught():
    graph = import_graph()
    graph["quant_cli.models.base"] |= _imports("from . import boosting\n", "quant_cli.models.base", False, set(graph))
    assert {"quant_cli.models.base", "quant_cli.models.boosting"} in cycles(graph)  # boosting imports base
