"""The house rules of the package, read from the source (AST only: nothing is imported).

* Every module belongs to a room (the longest package prefix in :data:`LAYERS`), every room to a layer.
  A module may import its own room, a room nested in it or around it, and any room of a lower layer;
  never a room of its own layer (siblings stay independent) nor of a higher one. So the direction is
  common <- theory <- engine <- runs <- analysis <- {workbench, profiler} <- allocation <- cli <- the
  package root, and nothing imports the CLI.
* No import cycle between modules (function-level imports count: a deferred import is still a
  dependency).
* Every ``lqtheory`` import anywhere in the repository (package, tests, benchmarks, tools, the
  notebooks' code cells) names a module that exists in this checkout, so no stale path survives a move.

A new room is one line in :data:`LAYERS`.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package prefix -> layer (lower layers may be imported by higher ones, never the reverse)
LAYERS: dict[str, int] = {
    "lqtheory.common": 0,  # checks, atomic writes, digests, environment, formatting, vocabulary
    "lqtheory.theory": 1,  # the paper's mathematics
    "lqtheory.engine": 2,  # models, data, masks, pruning, training
    "lqtheory.engine.bank": 2,  # runs trained together
    "lqtheory.runs": 3,  # run folders, the loop, leases, the grid executor
    "lqtheory.analysis": 4,  # statistics and comparisons
    "lqtheory.workbench": 5,  # notebooks -> reproducible paper
    "lqtheory.workbench.manuscript": 5,  # report rendering
    "lqtheory.profiler": 5,  # `lqtheory profile`
    "lqtheory.allocation": 6,  # `lqtheory allocate`: reuses the profiler's loading, data and masks
    "lqtheory.cli": 7,  # the `lqtheory` command
    "lqtheory.__main__": 8,
    "lqtheory": 8,  # the package root: re-exports the public API
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path, package: str = "lqtheory") -> dict[str, Path]:
    """Every module of ``package`` under ``root``: dotted name -> file."""
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py")) if "__pycache__" not in p.parts}


def imported_modules(tree: ast.AST, current: str, is_package: bool, known: set[str]) -> list[tuple[str, int]]:
    """``(module, line)`` for every ``lqtheory`` import in ``tree``; ``from a import b`` names the module
    ``a.b`` when that is a module, else ``a``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.split(".")[0] == "lqtheory"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = current.split(".") if is_package else current.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lqtheory":
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            found += [(s, node.lineno) for s in subs]
            if len(subs) < len(node.names):
                found.append((target, node.lineno))
    return found


def room_of(module: str, layers: dict[str, int]) -> str:
    prefixes = [p for p in layers if module == p or module.startswith(p + ".")]
    if not prefixes:
        raise AssertionError(f"{module} belongs to no room: add its package to LAYERS")
    return max(prefixes, key=len)


def import_graph(root: Path) -> tuple[dict[str, set[str]], dict[tuple[str, str], int]]:
    modules = package_modules(root)
    known = set(modules)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    lines: dict[tuple[str, str], int] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for target, line in imported_modules(tree, name, path.name == "__init__.py", known):
            if target != name:
                graph[name].add(target)
                lines.setdefault((name, target), line)
    return graph, lines


def layering_violations(graph: dict[str, set[str]], lines: dict, layers: dict[str, int]) -> list[str]:
    out = []
    for source, targets in sorted(graph.items()):
        src_room = room_of(source, layers)
        for target in sorted(targets):
            dst_room = room_of(target, layers)
            nested = src_room == dst_room or src_room.startswith(dst_room + ".") or dst_room.startswith(src_room + ".")
            if nested and dst_room != "lqtheory":
                continue
            if layers[dst_room] < layers[src_room]:
                continue
            kind = "a sibling room" if layers[dst_room] == layers[src_room] else "a higher layer"
            out.append(f"{source} (line {lines[(source, target)]}) imports {target}: {kind} "
                       f"({src_room} is layer {layers[src_room]}, {dst_room} is layer {layers[dst_room]})")
    return out


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


# --------------------------------------------------------------------------------------------------
# The package itself


def test_every_import_goes_down_the_layers():
    graph, lines = import_graph(ROOT)
    violations = layering_violations(graph, lines, LAYERS)
    assert not violations, "imports against the layering:\n" + "\n".join(violations)


def test_no_import_cycles():
    graph, _ = import_graph(ROOT)
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_nothing_imports_the_cli():
    graph, lines = import_graph(ROOT)
    outside = ("lqtheory.cli", "lqtheory.__main__")
    users = [f"{m} (line {lines[(m, t)]})" for m, ts in graph.items() for t in ts
             if room_of(t, LAYERS) == "lqtheory.cli" and room_of(m, LAYERS) not in outside]
    assert not users, f"the CLI is imported by {users}"


def _code_sources():
    for folder in ("lqtheory", "tests", "benchmarks", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path, path.read_text()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        lines = [line for cell in code for line in cell.splitlines() if not line.lstrip().startswith(("%", "!"))]
        yield path, "\n".join(lines)


def defined_names(path: Path) -> set[str] | None:
    """Names a module defines or imports at top level (also under ``if``/``try``); None when it has a
    module ``__getattr__`` (any name may exist)."""
    names: set[str] = set()
    body = list(ast.parse(path.read_text()).body)
    while body:
        node = body.pop(0)
        if isinstance(node, (ast.If, ast.Try)):
            body += node.body + node.orelse + getattr(node, "finalbody", []) + [
                n for h in getattr(node, "handlers", []) for n in h.body]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == "__getattr__":
                return None
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def test_every_lqtheory_import_in_the_repository_exists():
    """Module and name: ``from lqtheory.x import y`` needs module ``lqtheory.x`` and ``y`` defined there
    (or a submodule ``lqtheory.x.y``), so a name moved to another module cannot be imported from its old home
    (an editable install of another checkout would otherwise answer for the missing module)."""
    modules = package_modules(ROOT)
    missing = []
    for path, text in _code_sources():
        tree = ast.parse(text, filename=str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                missing += [f"{where}: {a.name}" for a in node.names
                            if a.name.split(".")[0] == "lqtheory" and a.name not in modules]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                if node.module.split(".")[0] != "lqtheory":
                    continue
                if node.module not in modules:
                    missing.append(f"{where}: {node.module}")
                    continue
                defined = defined_names(modules[node.module])
                missing += [f"{where}: {node.module}.{a.name}" for a in node.names if defined is not None
                            and a.name not in defined and f"{node.module}.{a.name}" not in modules]
    assert not missing, "imports of modules or names that do not exist:\n" + "\n".join(missing)


# --------------------------------------------------------------------------------------------------
# The checker can fail (a synthetic package in a temporary folder)


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in {"lqtheory/__init__.py": "", **files}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_checker_reports_an_upward_import_a_sibling_import_and_a_cycle(tmp_path):
    root = _package(tmp_path, {
        "lqtheory/theory/__init__.py": "",
        "lqtheory/theory/norms.py": "def f():\n    from lqtheory.engine.masks import Mask\n",
        "lqtheory/engine/__init__.py": "",
        "lqtheory/engine/masks.py": "from lqtheory.theory import norms\n",
        "lqtheory/workbench/__init__.py": "",
        "lqtheory/workbench/a.py": "from lqtheory.profiler import b\n",
        "lqtheory/profiler/__init__.py": "",
        "lqtheory/profiler/b.py": "from . import c\n",
        "lqtheory/profiler/c.py": "from lqtheory.profiler.b import x\n",
    })
    graph, lines = import_graph(root)
    violations = layering_violations(graph, lines, LAYERS)
    assert any(v.startswith("lqtheory.theory.norms (line 2) imports lqtheory.engine.masks: a higher layer")
               for v in violations)
    assert any(v.startswith("lqtheory.workbench.a (line 1) imports lqtheory.profiler.b: a sibling room")
               for v in violations)
    assert len(violations) == 2  # engine -> theory and profiler -> profiler are fine
    cycles = import_cycles(graph)
    assert sorted(cycles) == [["lqtheory.engine.masks", "lqtheory.theory.norms"],
                              ["lqtheory.profiler.b", "lqtheory.profiler.c"]]


def test_checker_refuses_a_module_outside_every_room(tmp_path):
    graph, lines = import_graph(_package(tmp_path, {"lqtheory/stray.py": "import lqtheory.theory\n",
                                                     "lqtheory/theory/__init__.py": ""}))
    with pytest.raises(AssertionError, match="belongs to no room"):
        layering_violations(graph, lines, {k: v for k, v in LAYERS.items() if k != "lqtheory"} | {"lqtheory.theory": 1})
