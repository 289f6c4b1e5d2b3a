"""The package's architecture holds: no import cycle between hf_medtl's modules (counting imports inside functions,
which only hide a cycle until the function runs), and no module imports another package's private name."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_medtl"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict) -> list[tuple[str, str | None]]:
    """(imported hf_medtl module, the name taken from it or None) for every import statement of the module."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name.split(".")[0] == "hf_medtl"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "hf_medtl":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub, None) if sub in modules else (base, a.name))
    return [(m, n) for m, n in out if m in modules]


def _graph():
    modules = _modules()
    return modules, {name: _imports(name, path, modules) for name, path in modules.items()}


def test_the_import_graph_is_read():
    modules, graph = _graph()
    assert {"hf_medtl.data.types", "hf_medtl.inference.core", "hf_medtl.cli", "hf_medtl.finetune"} <= set(modules)
    assert ("hf_medtl.data.types", "DataError") in graph["hf_medtl.data.sources"]


def _cycle(graph: dict) -> list[str] | None:
    """One cycle of the module graph (as a path a -> ... -> a), or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for target, _ in graph[m]:
            if target == m:
                continue
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle():
    _, graph = _graph()
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": [("b", None)], "b": [("c", None)], "c": [("a", None)]}) == ["a", "b", "c", "a"]
    assert _cycle({"a": [("b", None)], "b": []}) is None


def _package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


@pytest.mark.parametrize("kind", ["private names"])
def test_no_module_imports_a_private_name_of_another_package(kind):
    modules, graph = _graph()
    bad = [f"{m} imports {n} from {target}" for m, edges in graph.items() for target, n in edges
           if n and n.startswith("_") and not n.startswith("__") and _package_of(target) != _package_of(m)]
    assert not bad, "; ".join(bad)
