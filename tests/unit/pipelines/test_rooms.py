"""What imports what, read from the source with ast (imports inside functions included).

pipelines/ is in rooms: a module imports only its own room and the rooms before it (spec, then
acceleration, then runners; tiny needs only spec and the processor shim), and the API only spec/;
the loader alone may import them all. And neither bench/ nor the product imports tests/: the
tests may import bench/ (bench/processes.py), never the reverse.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# The packages of Darkroom's own each room may import besides itself.
MAY_IMPORT = {
    "pipelines.spec": (),
    "pipelines.acceleration": ("pipelines.spec",),
    "pipelines.runners": ("pipelines.spec", "pipelines.acceleration"),
    "pipelines.tiny": ("pipelines.spec", "pipelines.processor_compat"),
    "pipelines.processor_compat": (),
    "api": ("pipelines.spec",),
}


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every absolute module `path` imports, `from package import module` as `package.module`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def sources(*packages: str) -> list[Path]:
    return sorted(path for package in packages for path in (ROOT / package).rglob("*.py"))


def test_each_room_imports_only_the_rooms_before_it():
    wrong = []
    for path in sources("pipelines", "api"):
        room = next((room for room in MAY_IMPORT if within(module_of(path), room)), None)
        if room is None:
            continue  # the loader and the package itself
        allowed = (room, *MAY_IMPORT[room])
        for imported in imports_of(path):
            if within(imported, "pipelines") and imported != "pipelines":
                if not any(within(imported, package) for package in allowed):
                    wrong.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert wrong == []


def test_neither_bench_nor_the_product_imports_tests():
    wrong = [
        f"{path.relative_to(ROOT)} imports {imported}"
        for path in sources("api", "bench", "darkroom", "pipelines", "storage", "worker")
        for imported in imports_of(path)
        if within(imported, "tests")
    ]
    assert wrong == []
