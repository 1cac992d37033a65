"""The package's layers import downwards only, function-local imports included.

engine (with backends, formats, predictors) < methods < records, store < runner < predictor
training < cli. The engine knows nothing of files, HTTP or the CLI; the predictor-training
pipeline sits above synthesis and never the reverse. `tessy.durable` (how durable files are
written) is the floor: it imports nothing of tessy.
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
