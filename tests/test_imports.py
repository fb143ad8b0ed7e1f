"""No import cycle between the modules of hf_hybrid, counting imports inside functions too.

Every import statement of every module is read with `ast` (module level, function level, relative forms) and
resolved to the hf_hybrid module it names: `from hf_hybrid.x import y` names hf_hybrid.x.y if that is a module
and hf_hybrid.x otherwise; a package stands for its `__init__`. A cycle in that graph fails the test."""

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "hf_hybrid"


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module and package under `root` (a package's name is its folder's)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_modules(module: str, path: Path, modules: set[str]) -> list[tuple[str, int]]:
    """(module of `modules`, line) for every import anywhere in one file; relative imports made absolute."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                known = [".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules]
                found += [(known[0], node.lineno)] if known else []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:  # `from p import m` imports the module p.m if there is one, else a name of p
                target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                found += [(target, node.lineno)] if target in modules else []
    return found


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """module -> {module it imports: line of the first such import}, within the package at `root`."""
    modules = module_files(root)
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for module, path in modules.items():
        for target, line in sorted(imported_modules(module, path, set(modules)), key=lambda t: t[1]):
            if target != module:
                graph[module].setdefault(target, line)
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle per group of modules that import each other (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, within the component."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node]):
            if nxt == start:
                return paths[node] + [start]
            if nxt in component and nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start}")


def describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    steps = [f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False)]
    return " -> ".join(steps + [cycle[-1]])


def test_no_import_cycle_in_hf_hybrid():
    graph = import_graph(PACKAGE_ROOT)
    assert "hf_hybrid.models.encoder" in graph and graph["hf_hybrid.models.encoder"]  # the walk saw the package
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(describe(graph, c) for c in cycles)


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "pkg"


def test_a_cycle_through_a_function_level_relative_import_is_found(tmp_path):
    package = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.sub import b\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": "def f():\n    from .. import a\n",
        "pkg/c.py": "import pkg.a\n",
    })
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.sub.b": 1}
    assert graph["pkg.sub.b"] == {"pkg.a": 2}
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.a"]]
    assert describe(graph, find_cycles(graph)[0]) == "pkg.a (line 1) -> pkg.sub.b (line 2) -> pkg.a"


def test_an_import_of_a_package_counts_as_its_init(tmp_path):
    package = write_package(tmp_path, {
        "pkg/__init__.py": "from .cards.model import render\n",
        "pkg/cards/__init__.py": "from . import model\n",
        "pkg/cards/model.py": "def f():\n    from pkg.cards import helper\n",
        "pkg/cards/helper.py": "from ..cards import VALUE\n",
    })
    graph = import_graph(package)
    assert graph["pkg"] == {"pkg.cards.model": 1}
    assert graph["pkg.cards"] == {"pkg.cards.model": 1}
    assert graph["pkg.cards.model"] == {"pkg.cards.helper": 2}
    assert graph["pkg.cards.helper"] == {"pkg.cards": 1}
    assert find_cycles(graph) == [["pkg.cards", "pkg.cards.model", "pkg.cards.helper", "pkg.cards"]]
