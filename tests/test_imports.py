"""The package's import graph: no import circles, and Ray imported only under ``nasq_ray/search/``."""

from __future__ import annotations

import ast
from pathlib import Path

import nasq_ray

PKG = Path(nasq_ray.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = ("nasq_ray", *path.relative_to(PKG).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(package modules ``name`` imports, top-level names of other packages it imports), at any
    depth of the file except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    inside, outside = set(), set()

    def visit(node):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                (inside if a.name.startswith("nasq_ray") else outside).add(a.name)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module
            if base.startswith("nasq_ray"):
                for a in node.names:
                    inside.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
            else:
                outside.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    # importing a.b.c first runs a.b's __init__ (except the packages ``name`` itself lives in)
    implicit = set()
    for mod in inside:
        parts = mod.split(".")
        implicit |= {".".join(parts[:k]) for k in range(1, len(parts)) if not name.startswith(".".join(parts[:k]))}
    return {m for m in inside | implicit if m in modules and m != name}, {m.split(".")[0] for m in outside}


def _graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_no_import_circles():
    graph = {name: edges for name, (edges, _) in _graph().items()}
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def walk(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)


def test_ray_is_imported_only_under_search():
    offenders = sorted(name for name, (_, outside) in _graph().items()
                       if "ray" in outside and not name.startswith("nasq_ray.search"))
    assert not offenders, f"modules outside nasq_ray/search import ray: {offenders}"


def test_the_checks_see_a_circle_and_ray(tmp_path, monkeypatch):
    """The walker is not blind: a module pair importing each other, and an import of ray, are found."""
    modules = {"nasq_ray.a": tmp_path / "a.py", "nasq_ray.b": tmp_path / "b.py"}
    modules["nasq_ray.a"].write_text("def f():\n    from .b import g\n")
    modules["nasq_ray.b"].write_text("from nasq_ray.a import f\nimport ray.tune\n")
    (a_edges, _), (b_edges, b_out) = (_imports(n, p, modules) for n, p in modules.items())
    assert a_edges == {"nasq_ray.b"} and b_edges == {"nasq_ray.a"} and "ray" in b_out
