"""The layout rules of docs/architecture.md, checked on the code as it stands.

- The library never imports dagster, fastapi or the serving package, and serving never imports
  orchestration: checked on the source, and by importing every module in a fresh interpreter
  (there without fastapi, which `mlflow.pyfunc` loads for its own scoring server).
- Inside the library, arrows point one way: a stage package imports only itself and the stages
  before it (checked on the source, `TYPE_CHECKING` imports included).
- No library or serving module over 500 lines, no function over 80 lines.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "recommender_lib"

# The stages in data order; a package may import only packages at its own rank or below.
STAGES = (
    ("atomic", "config"),  # shared helpers of every stage
    ("sources",),
    ("warehouse",),
    ("modeling",),
    ("index",),
    ("bundle",),
    ("engine",),
    ("evaluation",),
    ("registry",),
    ("workflow",),
)
RANK = {name: rank for rank, names in enumerate(STAGES) for name in names}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _modules(package: Path) -> list[Path]:
    return sorted(p for p in package.rglob("*.py") if p.name != "__main__.py")


def _dotted(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imported_after_import(modules: list[str]) -> set[str]:
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_every_library_package_is_a_known_stage() -> None:
    found = {p.stem for p in LIBRARY.glob("*.py") if p.stem != "__init__"}
    found |= {p.parent.name for p in LIBRARY.glob("*/__init__.py")}
    assert found == set(RANK)


FORBIDDEN_IN_LIBRARY = {"dagster", "dagster_mlflow", "fastapi", "starlette", "uvicorn", "serving"}


def _top_level_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
    return found


def test_the_library_source_imports_no_orchestration_web_or_serving_code() -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(_top_level_imports(path) & FORBIDDEN_IN_LIBRARY)
        for path in _modules(LIBRARY)
    }
    assert not {k: v for k, v in wrong.items() if v}


def test_importing_the_library_loads_no_orchestration_or_serving() -> None:
    loaded = _imported_after_import([_dotted(p) for p in _modules(LIBRARY)])
    assert "recommender_lib" in loaded
    assert not loaded & {"dagster", "dagster_mlflow", "serving", "orchestration"}


def test_serving_never_imports_orchestration() -> None:
    for path in _modules(ROOT / "serving"):
        assert not _top_level_imports(path) & {"orchestration", "dagster"}, path
    loaded = _imported_after_import([_dotted(p) for p in _modules(ROOT / "serving")])
    assert "serving" in loaded
    assert not loaded & {"orchestration", "dagster"}


def _library_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "recommender_lib" and len(parts) > 1 and parts[1] in RANK:
                found.append((node.lineno, parts[1]))
    return found


def test_library_stages_import_only_earlier_stages() -> None:
    wrong = []
    for path in _modules(LIBRARY):
        parts = path.relative_to(LIBRARY).with_suffix("").parts
        if parts == ("__init__",):
            continue
        own = RANK[parts[0]]
        for line, stage in _library_imports(path):
            if RANK[stage] > own:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {stage}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", ["recommender_lib", "serving"])
def test_modules_and_functions_stay_small(package: str) -> None:
    too_long = []
    for path in _modules(ROOT / package):
        source = path.read_text(encoding="utf-8")
        lines = source.count("\n")
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length}")
    assert not too_long, "\n".join(too_long)
