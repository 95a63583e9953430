"""The package's shape: no import cycle between lit_sllm modules, no file over 400 lines, no callback reading shards.

The graph is read from the AST, not by importing: an edge A -> B is an import of B that runs when A is imported
(module level, also inside module-level `if`/`try`/`with` blocks and class bodies), not one inside a function and
not one under `if TYPE_CHECKING:`. `from lit_sllm.x import y` is an edge to `lit_sllm.x.y` when y is a submodule,
else to `lit_sllm.x`. A package's lazy `__getattr__` (`lit_sllm.data.SpeechTextDataModule`) is not followed, so
lit_sllm's own modules import the submodule that defines a name.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lit_sllm"
MAX_LINES = 400


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_time_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when a module with this body is imported."""
    found = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            found += import_time_imports(node.orelse if is_type_checking(node.test) else node.body + node.orelse)
        elif isinstance(node, ast.Try):
            blocks = node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
            found += import_time_imports(blocks)
        elif isinstance(node, ast.With | ast.ClassDef):
            found += import_time_imports(node.body)
    return found


def imported_modules(node: ast.Import | ast.ImportFrom, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The lit_sllm modules one import statement in module `name` imports."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    base = node.module or ""
    if node.level:
        anchor = name.split(".") if is_package else name.split(".")[:-1]
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join(anchor + ([node.module] if node.module else []))
    if base not in modules:
        return set()
    return {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the lit_sllm modules it imports at import time."""
    files = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges = set().union(
            *[imported_modules(n, name, is_package, set(files)) for n in import_time_imports(tree.body)]
        )
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None; depth-first search with the current path on a stack."""
    state: dict[str, str] = {}  # "open" while on the path, "done" after

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == "open":
                return path[path.index(child) :] + [child]
            if child not in state and (cycle := visit(child, path)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return None


def test_no_import_cycle():
    graph = import_graph()
    assert "lit_sllm.data.shards" in graph["lit_sllm.data.converters.manifest"]  # the graph sees real edges
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_names_the_cycle(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.c\n")
    (package / "c.py").write_text("def f():\n    from pkg import a\n")
    assert find_cycle(import_graph(package)) is None  # type-only and function-local imports are no edges
    (package / "c.py").write_text("from . import a\n")
    (package / "sub" / "b.py").write_text("from ..c import f\n")
    assert find_cycle(import_graph(package)) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]


def test_no_file_over_400_lines():
    sizes = {
        str(path.relative_to(PACKAGE.parent)): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")
    }
    too_long = {path: n for path, n in sizes.items() if n > MAX_LINES}
    assert not too_long, f"files over {MAX_LINES} lines, split them: {too_long}"


SHARD_READERS = {"lit_sllm.data.pipeline", "lit_sllm.data.remote", "lit_sllm.data.streams", "lit_sllm.data.shards"}


def test_callbacks_receive_batches_and_never_read_shards():
    graph = import_graph()
    callbacks = {name: edges for name, edges in graph.items() if name.startswith("lit_sllm.callbacks.")}
    assert {"lit_sllm.callbacks.forgetting", "lit_sllm.callbacks.generalization"} <= set(callbacks)
    readers = {name: sorted(edges & SHARD_READERS) for name, edges in callbacks.items() if edges & SHARD_READERS}
    assert not readers, f"callbacks that read shards themselves (take batches from the DataModule): {readers}"
    assert "lit_sllm.data.pipeline" in graph["lit_sllm.data.datamodule"]  # the check sees the real reader edges
