"""The layout, checked from the source: rooms import only from rooms below them, no module cycle, and no private
name crosses a room. ``python tests/test_layout.py`` prints the room graph.

Every import counts, the lazy ones inside functions included: a lazy import hides a dependency from import time,
not from the design. The order (docs/layout.md says why runtime sits low, under the pipeline's stages):
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "frugalml"
# Lowest first. A room may import from rooms before it in this list, never from one after it.
ORDER = ["version", "errors", "registry", "data", "runtime", "candidates", "evaluation", "selection", "compression",
         "report", "serve", "verbs", "cli", "__init__"]


def module_name(path: Path) -> str:
    parts = ["frugalml", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, list[tuple[str, str]]]:
    """module -> [(imported module, imported name or '')], for every frugalml import in its source."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out, modules = [], {}  # modules: local name -> the frugalml module it is bound to
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "frugalml":
                        out.append((a.name, ""))
                        if a.asname:
                            modules[a.asname] = a.name
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "frugalml":
                    continue
                for a in node.names:  # `from .x import y` where y is a module: the edge goes to the module
                    sub = f"{target}.{a.name}"
                    if is_module(sub):
                        out.append((sub, ""))
                        modules[a.asname or a.name] = sub
                    else:
                        out.append((target, a.name))
        # `module._name` on a module imported under a name: a private name used across rooms all the same
        out += [(modules[n.value.id], n.attr) for n in ast.walk(tree)
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in modules]
        found[name] = out
    return found


def is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_room_is_in_the_order():
    rooms = {room(m) for m in imports()}
    assert rooms <= set(ORDER), f"rooms missing from ORDER: {sorted(rooms - set(ORDER))}"


def test_no_room_imports_from_a_room_above_it():
    bad = [f"{m} imports {t}" for m, targets in imports().items() for t, _ in targets
           if ORDER.index(room(t)) > ORDER.index(room(m))]
    assert not bad, "\n".join(bad)


def test_no_private_name_crosses_a_room():
    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__")

    bad = [f"{m} imports {t} {n}".strip() for m, targets in imports().items() for t, n in targets
           if room(t) != room(m) and (private(n) or any(private(p) for p in t.split(".")))]
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    graph = {m: {t for t, _ in targets if t != m} for m, targets in imports().items()}
    # a package's __init__ re-exporting its own modules is how a package presents itself, not a cycle of ideas
    graph = {m: {t for t in ts if not (m == t.rpartition(".")[0] and t.startswith(m + "."))} for m, ts in graph.items()}
    for m in graph:  # a module importing its own package's __init__ is importing from its facade
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".")}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == "open":
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(cycles)


def test_the_checks_catch_what_they_are_for(tmp_path, monkeypatch):
    """The walker sees relative, absolute and lazy imports, and the order check fires on an upward one."""
    pkg = tmp_path / "frugalml"
    (pkg / "data").mkdir(parents=True)
    (pkg / "selection").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("def f():\n    from ..selection.decide import _fmt\n")
    (pkg / "selection" / "__init__.py").write_text("")
    (pkg / "selection" / "decide.py").write_text("import frugalml.data\n")
    (pkg / "selection" / "stats.py").write_text("from ..data import split\nsplit._fold\n")
    (pkg / "data" / "split.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    found = imports()
    assert found["frugalml.data"] == [("frugalml.selection.decide", "_fmt")]
    assert found["frugalml.selection.decide"] == [("frugalml.data", "")]
    assert found["frugalml.selection.stats"] == [("frugalml.data.split", ""), ("frugalml.data.split", "_fold")]
    import pytest

    with pytest.raises(AssertionError, match="frugalml.data imports frugalml.selection.decide"):
        test_no_room_imports_from_a_room_above_it()
    with pytest.raises(AssertionError, match="(?s)_fmt.*frugalml.selection.stats imports frugalml.data.split _fold"):
        test_no_private_name_crosses_a_room()
    with pytest.raises(AssertionError, match="frugalml.data -> frugalml.selection.decide -> frugalml.data"):
        test_no_import_cycle()


if __name__ == "__main__":
    edges = defaultdict(set)
    for m, targets in imports().items():
        edges[room(m)] |= {room(t) for t, _ in targets if room(t) != room(m)}
    for r in ORDER:
        print(f"{r:12} -> {', '.join(sorted(edges[r], key=ORDER.index)) or '-'}")
