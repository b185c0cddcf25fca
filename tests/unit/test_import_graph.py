"""The package's import graph: every package imports only the layers below it, and no module circle.

Every import counts: top level, inside functions (lazy) and under ``TYPE_CHECKING``, so a circle
cannot hide behind any of them. A new import that runs upward or closes a circle fails here with
the edge that does it.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "src" / "mmt_ard"
# bottom up: a package may import itself and the packages before it, never one after it
LAYERS = [
    "mmt_ard",
    "errors",
    "registry",
    "distributed",
    "devices",
    "precision",
    "io",
    "finished",
    "tables",
    "config",
    "models",
    "attacks",
    "data",
    "evaluation",
    "reporting",
    "training",
    "distill",
    "analysis",
    "export",
    "bench",
    "demo",
    "experiments",
    "cli",
]


def modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        name = ".".join(["mmt_ard", *f.relative_to(ROOT).with_suffix("").parts]).removesuffix(".__init__")
        out[name] = f
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The mmt_ard modules ``name`` imports; ``from pkg import submodule`` is an edge to the submodule only."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmt_ard") and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & known.keys()
            out |= subs if len(subs) == len(node.names) else subs | {node.module}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mmt_ard"


def test_every_package_is_in_a_layer():
    assert {layer(m) for m in modules()} <= set(LAYERS), "add the new package to LAYERS, at its level"


def test_no_package_imports_a_layer_above_it():
    upward = [
        f"{a} -> {b}"
        for a, targets in graph().items()
        for b in targets
        if LAYERS.index(layer(b)) > LAYERS.index(layer(a))
    ]
    assert upward == [], "imports that run upward (see LAYERS):\n" + "\n".join(sorted(upward))


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_imports_itself_in_a_circle():
    assert circles(graph()) == []


@pytest.mark.parametrize(
    "edges,expected",
    [
        ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_the_circle_finder_finds_circles(edges, expected):
    assert circles(edges) == expected


def test_a_lazy_import_counts(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from mmt_ard.cli import main\n")
    known = {"mmt_ard.cli": f, "mmt_ard.cli.main": f, "mmt_ard.models.x": f}
    assert imports("mmt_ard.models.x", f, known) == {"mmt_ard.cli.main"}
