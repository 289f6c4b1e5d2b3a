"""The package's architecture holds: no import cycle between hf_medtl's modules, no package importing one later in
the flow (config -> data -> models -> training -> evaluation -> inference -> hub -> stages -> studies -> cli), both
counting imports inside functions (which only hide a loop until the function runs), and no module touching another
package's private name (`from x import _y` or `x._y`)."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_medtl"


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
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


def _graph(package: Path = PACKAGE):
    modules = _modules(package)
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


def _private_uses(package: Path = PACKAGE) -> list[str]:
    """Every use of another package's private name: `from x import _y`, or `x._y` where x names a module of another
    package (imported as a module, or a module taken from its package: `from hf_medtl import outputs`)."""
    modules, graph = _graph(package)
    bad = [f"{m} imports {n} from {target}" for m, edges in graph.items() for target, n in edges
           if n and n.startswith("_") and not n.startswith("__") and _package_of(target) != _package_of(m)]
    for name, path in modules.items():
        tree, aliases = ast.parse(path.read_text()), {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for a in node.names:
                    module = _resolve(name, path, node, a.name)
                    if module in modules:
                        aliases[a.asname or a.name] = module
            elif isinstance(node, ast.Import):
                aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in modules})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")
                    and _package_of(aliases[node.value.id]) != _package_of(name)):
                bad.append(f"{name} uses {aliases[node.value.id]}.{node.attr}")
    return bad


def _resolve(name: str, path: Path, node: ast.ImportFrom, taken: str) -> str:
    """The module ``from <node.module> import <taken>`` names when ``taken`` is itself a module."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    base = node.module or ""
    if node.level:
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
    return f"{base}.{taken}"


def test_no_module_uses_a_private_name_of_another_package():
    bad = _private_uses()
    assert not bad, "; ".join(bad)


# The flow, ground floor first. A package may import only from its own rank or below, even inside a function.
# (outputs reads config's recipe comparison; the root package is the public facade: `hf_medtl.predict`.)
RANKS = {name: rank for rank, names in enumerate([
    ["hf_medtl.errors", "hf_medtl.console", "hf_medtl.timings"], ["hf_medtl.config"], ["hf_medtl.outputs"],
    ["hf_medtl.data"], ["hf_medtl.models"], ["hf_medtl.training"], ["hf_medtl.metrics"], ["hf_medtl.evaluation"],
    ["hf_medtl.inference"], ["hf_medtl.hub"], ["hf_medtl.stages"], ["hf_medtl.studies"],
    ["hf_medtl.cli", "hf_medtl.finetune", "hf_medtl"]]) for name in names}


def _back_arrows(package: Path = PACKAGE) -> list[str]:
    modules, graph = _graph(package)
    arrows = {(_package_of(m), _package_of(t), m) for m, edges in graph.items() for t, _ in edges}
    return sorted(f"{src} -> {dst} ({m})" for src, dst, m in arrows if RANKS[src] < RANKS[dst])


def test_every_package_has_a_rank():
    modules, _ = _graph()
    assert {_package_of(m) for m in modules} <= set(RANKS), "give the new package its place in RANKS"


def test_no_package_imports_one_later_in_the_flow():
    bad = _back_arrows()
    assert not bad, "imports back up the flow: " + "; ".join(bad)


def test_a_planted_back_import_and_private_access_are_found(tmp_path):
    """The checks can fail: a copy of the package with an import of cli inside a config function, and a use of
    outputs' private name from data, is caught by both."""
    import shutil

    copy = tmp_path / "hf_medtl"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    assert not _back_arrows(copy) and not _private_uses(copy)
    with open(copy / "config" / "recipe.py", "a") as f:
        f.write("\n\ndef _planted():\n    from hf_medtl.cli import common  # noqa\n")
    with open(copy / "data" / "split.py", "a") as f:
        f.write("\n\ndef _planted():\n    from hf_medtl import outputs\n    return outputs._planted_secret\n")
    assert any("hf_medtl.config -> hf_medtl.cli" in a for a in _back_arrows(copy))
    assert any("outputs._planted_secret" in b for b in _private_uses(copy))
