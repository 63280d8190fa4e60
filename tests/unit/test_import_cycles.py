"""No import circle among the modules of api/, darkroom/, pipelines/, storage/ and worker/: the graph of who
imports whom, read from the source (every import statement, at module level or inside a function),
has no cycle. A circle means two modules are one concern split badly, or a third one is missing."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "darkroom", "pipelines", "storage", "worker")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_names(path: Path, module: str) -> set[str]:
    """Every dotted name an import statement of the file names, candidate submodules included."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _within(name: str, modules: set[str]) -> str | None:
    """The module of ours a dotted name refers to: the longest prefix that is one."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if (candidate := ".".join(parts[:end])) in modules:
            return candidate
    return None


def import_graph(packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    paths = {_module_name(path): path for package in packages for path in (ROOT / package).rglob("*.py")}
    modules = set(paths)
    graph = {}
    for module, path in paths.items():
        targets = {_within(name, modules) for name in _imported_names(path, module)}
        graph[module] = {target for target in targets if target is not None and target != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan), as a path that ends
    where it starts."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = set()
            while (member := stack.pop()) != module:
                on_stack.discard(member)
                group.add(member)
            on_stack.discard(module)
            if group:
                found.append(_path_through(graph, module, group | {module}))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def _path_through(graph: dict[str, set[str]], start: str, group: set[str]) -> list[str]:
    """The shortest way from `start` back to itself inside its group."""
    paths = {target: [start, target] for target in sorted(graph[start] & group)}
    while start not in paths:
        paths |= {
            target: [*path, target]
            for module, path in list(paths.items())
            for target in sorted(graph[module] & group)
            if target not in paths
        }
    return paths[start]


def test_the_modules_import_each_other_without_a_circle():
    graph = import_graph()
    assert {"worker.main", "worker.rank_group", "storage.jobs", "api.submission"} <= set(graph)
    assert [" -> ".join(cycle) for cycle in cycles(graph)] == []


def test_a_circle_is_found_and_named():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": {"e"}}
    assert sorted(" -> ".join(cycle) for cycle in cycles(graph)) == ["a -> b -> c -> a", "e -> e2 -> e"]
