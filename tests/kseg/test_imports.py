"""No module of kseg or kseg_ops imports one that imports it back.

The import graph is read from the source with ``ast``: absolute and relative imports, at module
level and inside functions (a function-level import is still a dependency, only a later one).
``from kseg.x import y`` depends on ``kseg.x.y`` when ``y`` is a submodule, else on ``kseg.x``.
A submodule importing a sibling is not a circle with its package's ``__init__`` (Python has the
package in ``sys.modules`` by then); importing a *name* from the ``__init__`` that imports the
module back is (``from kseg.models import register`` in a model file).
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("kseg", "kseg_ops")


def _modules():
    """``{dotted name: path}`` of every module under the packages."""
    modules = {}
    for package in PACKAGES:
        for directory, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(directory, name)
                parts = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                modules[".".join(parts)] = path
    return modules


def import_graph(modules=None):
    """``{module: set of kseg/kseg_ops modules it imports}``, read with ``ast``."""
    modules = _modules() if modules is None else modules
    graph = {}
    for name, path in modules.items():
        is_package = os.path.basename(path) == "__init__.py"
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), path)
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        targets.add(alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    # Relative: resolved against this module's package.
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    base_parts = package[: len(package) - (node.level - 1)]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module
                if base.split(".")[0] not in PACKAGES:
                    continue
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    if submodule in modules:
                        targets.add(submodule)
                    elif base in modules:
                        targets.add(base)
        targets.discard(name)
        graph[name] = targets
    return graph


def components(graph):
    """The strongly connected components of more than one module (each a sorted list)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        # Tarjan's algorithm.
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def find_cycles(graph):
    """One cycle path (``[a, b, ..., a]``) through each strongly connected component."""
    return [_cycle_path(graph, component) for component in components(graph)]


def _cycle_path(graph, component):
    # One concrete loop through the component's first module, for the error message.
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & members):
            if target == start:
                return paths[node] + [start]
            if target not in paths:
                paths[target] = paths[node] + [target]
                queue.append(target)
    return component


def test_the_walker_finds_every_kind_of_import(tmp_path):
    # A hand-made package: relative, function-level and `from package import submodule` edges.
    files = {
        "kseg/__init__.py": "",
        "kseg/a.py": "def f():\n    from kseg import b\n",
        "kseg/b.py": "from .sub import c\n",
        "kseg/sub/__init__.py": "",
        "kseg/sub/c.py": "import kseg.a\n",
        "kseg/d.py": "from kseg.sub.c import something\nimport os\n",
        "kseg/e.py": "from kseg.sub import helper, c\n",
    }
    modules = {}
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        parts = relative[: -len(".py")].split("/")
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = str(path)
    graph = import_graph(modules)
    assert graph["kseg.a"] == {"kseg.b"}
    assert graph["kseg.b"] == {"kseg.sub.c"}
    assert graph["kseg.sub.c"] == {"kseg.a"}
    assert graph["kseg.d"] == {"kseg.sub.c"}
    assert graph["kseg.e"] == {"kseg.sub", "kseg.sub.c"}
    assert find_cycles(graph) == [["kseg.a", "kseg.b", "kseg.sub.c", "kseg.a"]]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package):
    graph = import_graph()
    found = [c for c in components(graph) if c[0].split(".")[0] == package]
    messages = [
        f"{' -> '.join(_cycle_path(graph, c))} (modules on a circle: {', '.join(c)})" for c in found
    ]
    assert not found, "import cycles: " + "; ".join(messages)
