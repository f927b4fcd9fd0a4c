"""The declared dependency direction between apps (see .importlinter) holds."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports), ".importlinter"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 7 kept, 0 broken." in result.stdout


def _runner_imports() -> dict[str, set[str]]:
    """Each runner module's imports of sibling modules, wherever in the module they are written."""
    import ast

    package = ROOT / "verification" / "runner"
    modules = {path.stem for path in package.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name in modules:
        tree = ast.parse((package / f"{name}.py").read_text())
        siblings = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    siblings.add(node.module.split(".")[0])
                else:
                    siblings.update(alias.name for alias in node.names)
        graph[name] = (siblings & modules) - {name}
    return graph


def test_the_runner_has_no_import_cycles():
    graph = _runner_imports()
    graph.pop("__init__")  # the package's facade imports everything and is imported by nothing inside
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            assert state.get(imported) != "open", " -> ".join([*path, module, imported])
            if imported not in state:
                visit(imported, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert "api" not in graph, "the verification session lives in session.py"
