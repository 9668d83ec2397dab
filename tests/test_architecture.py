"""The import rule of docs/architecture.md §2, checked on the source: three floors, no arrow up or sideways.

* the core (``lambdaflow``) imports no layer, no DAG and not the application;
* a layer (``batch_layer``, ``speed_layer``, ``serving_layer``) imports the core only — never another layer;
* the DAGs import the core and the layers they schedule (batch, serving), never the speed layer or the application;
* nothing but the application itself imports the application (``lambdaflow_app``).

Every ``import`` counts, including the lazy ones inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = "lambdaflow"
APP = "lambdaflow_app"
LAYERS = ("batch_layer", "speed_layer", "serving_layer")
PACKAGES = (CORE, APP, *LAYERS, "dags")

#: package → the project packages it may import (besides itself)
ALLOWED: dict[str, frozenset[str]] = {
    CORE: frozenset(),
    **{layer: frozenset({CORE}) for layer in LAYERS},
    # a DAG schedules batch jobs and serving checks; it never reaches into the speed layer
    "dags": frozenset({CORE, "batch_layer", "serving_layer"}),
    APP: frozenset({CORE, *LAYERS}),
}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in a file that names one of the project's packages."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES:
                found.append((node.lineno, top))
    return found


def violations(root: Path) -> list[str]:
    """Every import that breaks the rule, as ``file:line: a imports b``."""
    out = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, target in imported_packages(path):
                if target != package and target not in allowed:
                    out.append(f"{path.relative_to(root)}:{line}: {package} imports {target}")
    return out


def test_imports_go_one_way() -> None:
    assert violations(ROOT) == []


@pytest.mark.parametrize(
    ("package", "source"),
    [
        ("serving_layer", "from batch_layer.views import recompute_views\n"),
        ("speed_layer", "def f():\n    import serving_layer.engine\n"),
        ("lambdaflow", "from speed_layer import runner\n"),
        ("lambdaflow", "import lambdaflow_app.cli\n"),
        ("dags", "from lambdaflow_app import demo\n"),
    ],
)
def test_a_deliberate_wrong_import_is_reported(tmp_path: Path, package: str, source: str) -> None:
    for name in PACKAGES:
        (tmp_path / name).mkdir()
    (tmp_path / package / "bad.py").write_text(source)
    (tmp_path / package / "fine.py").write_text("import lambdaflow.config\nimport os\n")
    found = violations(tmp_path)
    assert len(found) == 1 and found[0].startswith(f"{package}/bad.py:")


def test_every_package_is_covered() -> None:
    """A new top-level package must be placed on a floor before it can import anything."""
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert on_disk <= set(ALLOWED), f"place {sorted(on_disk - set(ALLOWED))} in ALLOWED"
