"""The suite's layers go one way: no import cycle between its packages, and net/ (the model) imports
only torch, the standard library and itself.

    python -m pytest tests/test_layout.py
"""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"tests", ".venv", "data", "models", "runs", "docs"}


def suite_units() -> dict[str, list[Path]]:
    """The repository's own packages (folders with __init__.py) and top-level modules, with their files."""
    units = {path.stem: [path] for path in ROOT.glob("*.py")}
    for init in ROOT.glob("*/__init__.py"):
        if init.parent.name not in SKIP:
            units[init.parent.name] = sorted(init.parent.rglob("*.py"))
    return units


def imported(path: Path) -> set[str]:
    """Top-level names of every module a file imports, wherever the import statement sits."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def package_graph() -> dict[str, set[str]]:
    units = suite_units()
    return {unit: {name for path in files for name in imported(path) if name in units and name != unit}
            for unit, files in units.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None: depth-first search keeping the current path."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for target in sorted(graph[node]):
            cycle = visit(target, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def test_no_import_cycle_between_the_suite_packages():
    cycle = find_cycle(package_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_names_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_net_imports_only_torch_the_standard_library_and_itself():
    allowed = {"torch", "net", "__future__", *sys.stdlib_module_names}
    offenders = {f"{path.relative_to(ROOT)}: {name}" for path in suite_units()["net"]
                 for name in imported(path) if name not in allowed}
    assert not offenders, "net/ imports " + ", ".join(sorted(offenders))


def test_metrics_imports_only_numpy_scipy_torch_the_standard_library_and_itself():
    allowed = {"numpy", "scipy", "torch", "metrics", "__future__", *sys.stdlib_module_names}
    offenders = {f"{path.relative_to(ROOT)}: {name}" for path in suite_units()["metrics"]
                 for name in imported(path) if name not in allowed}
    assert not offenders, "metrics/ imports " + ", ".join(sorted(offenders))


def test_scoring_a_folder_does_not_import_the_training_stack():
    """evaluate.py's folder scoring needs the metrics and the image readers only."""
    code = "import sys, evaluate; print(sorted({m.split('.')[0] for m in sys.modules} & {'training', 'studies'}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"evaluate.py imports {out.strip()}"


def test_every_package_has_an_init_so_the_layout_checks_cover_it():
    folders = {path.parent for path in ROOT.glob("*/*.py") if path.parent.name not in SKIP}
    missing = sorted(folder.name for folder in folders if not (folder / "__init__.py").exists())
    assert not missing, "no __init__.py in " + ", ".join(missing)


def test_no_script_imports_another():
    scripts = {path.stem for path in ROOT.glob("*.py") if 'if __name__ == "__main__"' in path.read_text()}
    offenders = {f"{path.relative_to(ROOT)}: {name}" for files in suite_units().values() for path in files
                 for name in imported(path) & scripts}
    assert not offenders, "scripts imported as libraries: " + ", ".join(sorted(offenders))
