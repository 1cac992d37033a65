"""The package's layers import downwards only, function-local imports included, and no modules
import each other in a circle.

engine (with backends, formats, predictors) < methods < records, store < runner < predictor
training < cli. The engine knows nothing of files, HTTP or the CLI; the predictor-training
pipeline sits above synthesis and never the reverse. Within the engine the flow is one way too:
state, text < decode < cuts < pair < learned, observer, turn_request < speed < cooperative.
`tessy.durable` (how durable files are written) is the floor: it imports nothing of tessy.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "src" / "tessy"

#: module prefix -> prefixes it must never import
FORBIDDEN = {
    "tessy.durable": ("tessy",),
    "tessy.engine": ("tessy.methods", "tessy.records", "tessy.store", "tessy.runner", "tessy.cli", "tessy.inputs",
                     "tessy.config", "tessy.predictor_training", "tessy.backends.openai", "tessy.backends.hf",
                     "tessy.view", "tessy.analysis", "tessy.export", "tessy.verify"),
    "tessy.methods": ("tessy.records", "tessy.store", "tessy.runner", "tessy.cli", "tessy.predictor_training"),
    "tessy.records": ("tessy.runner", "tessy.cli", "tessy.predictor_training", "tessy.methods"),
    "tessy.store": ("tessy.records", "tessy.engine", "tessy.runner", "tessy.cli", "tessy.predictor_training"),
    "tessy.predictors": ("tessy.runner", "tessy.cli", "tessy.predictor_training", "tessy.records", "tessy.store",
                         "tessy.engine", "tessy.methods"),
    "tessy.backends": ("tessy.engine", "tessy.methods", "tessy.runner", "tessy.cli", "tessy.records", "tessy.store",
                       "tessy.predictor_training"),
    "tessy.formats": ("tessy.engine", "tessy.runner", "tessy.cli", "tessy.records", "tessy.store"),
    "tessy.runner": ("tessy.cli", "tessy.predictor_training"),
    "tessy.pipeline": ("tessy.runner", "tessy.cli", "tessy.predictor_training"),
    # Within the engine: the pair's operations know nothing of the loop, its speed layer or observer;
    # the speed layer makes steps and never runs the loop; cut rules and text are below both.
    "tessy.engine.pair": ("tessy.engine.cooperative", "tessy.engine.speed", "tessy.engine.learned",
                          "tessy.engine.observer", "tessy.engine.turn_request"),
    "tessy.engine.speed": ("tessy.engine.cooperative", "tessy.engine.observer"),
    "tessy.engine.cuts": ("tessy.engine.pair", "tessy.engine.speed", "tessy.engine.cooperative"),
    "tessy.engine.decode": ("tessy.engine.cuts", "tessy.engine.pair", "tessy.engine.speed"),
    "tessy.engine.text": ("tessy.engine.decode", "tessy.engine.cuts"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.startswith("tessy")}


def modules_imported(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that `path` imports (annotation-only imports included): `from a
    import b` names module `a.b` where that is one, else `a`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules
            found.update(submodules or {node.module})
    return {name for name in found if name in modules}


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (each one circle or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                circles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return circles


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_downwards(path):
    name = module_name(path)
    rules = [forbidden for prefix, forbidden in FORBIDDEN.items() if under(name, prefix)]
    wrong = sorted(imported for imported in imports_of(path) for forbidden in rules for bad in forbidden
                   if under(imported, bad))
    assert not wrong, f"{name} imports {wrong}"


def test_the_layer_rules_see_real_imports():
    assert "tessy.runner" in imports_of(PACKAGE / "predictor_training" / "sample.py")
    assert "tessy.engine.state" in imports_of(PACKAGE / "engine" / "pair.py")


def test_no_import_circles():
    modules = {module_name(path): path for path in MODULES}
    graph = {name: modules_imported(path, set(modules)) - {name} for name, path in modules.items()}
    assert import_circles(graph) == []


def test_the_circle_check_sees_circles():
    assert import_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
