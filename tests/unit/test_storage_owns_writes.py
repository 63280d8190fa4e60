"""Every write to the tables storage/ owns (`jobs`, `webhook_events`, `webhook_deliveries`,
`workers`, `files`) is made in storage/, where each is a named compare-and-set: no module of api/, worker/
or darkroom/ builds an UPDATE, INSERT or DELETE, nor adds, merges or deletes one of those rows
through its session. Read from the source (ast); nothing is imported.

A session write of another model (an Idempotency-Key) passes when the test can tell its model:
the object is built there (`IdempotencyKey(...)`), or came from `session.get(Model, ...)` in the
same function. Anything it cannot tell fails: write it in storage/, or make its model plain."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ("api", "darkroom", "worker")
OWNED_MODELS = frozenset({"Job", "WebhookEvent", "WebhookDelivery", "Worker", "StoredFile"})
SQL_WRITES = frozenset({"update", "insert", "delete"})
SESSION_WRITES = frozenset({"add", "add_all", "merge", "delete"})


def _sqlalchemy_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """The local names of sqlalchemy's update/insert/delete, and of sqlalchemy modules."""
    functions, modules = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlalchemy":
            functions.update(alias.asname or alias.name for alias in node.names if alias.name in SQL_WRITES)
        elif isinstance(node, ast.Import):
            modules.update(
                alias.asname or alias.name for alias in node.names if alias.name.split(".")[0] == "sqlalchemy"
            )
    return functions, modules


def _scope_of_each_node(tree: ast.Module) -> dict[ast.AST, ast.AST]:
    """Each node's innermost enclosing function, or the module."""
    scope_of: dict[ast.AST, ast.AST] = {}

    def visit(node: ast.AST, scope: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            scope_of[child] = scope
            visit(child, child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else scope)

    visit(tree, tree)
    return scope_of


def _is_session(node: ast.AST) -> bool:
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name.endswith("session")


def _model_built_or_got(value: ast.AST) -> str | None:
    """`Model(...)` or `<session>.get(Model, ...)`: the model's name."""
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id[:1].isupper():
        return value.func.id
    if (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and value.func.attr == "get"
        and _is_session(value.func.value)
        and value.args
        and isinstance(value.args[0], ast.Name)
    ):
        return value.args[0].id
    return None


def _values_assigned(name: str, scope: ast.AST) -> Iterator[ast.AST]:
    """What `name = ...` (or `name := ...`) assigns it, anywhere in the scope."""
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            yield node.value
        elif isinstance(node, ast.NamedExpr | ast.AnnAssign) and getattr(node.target, "id", None) == name:
            if node.value is not None:
                yield node.value


def _models_written(argument: ast.AST, scope: ast.AST) -> list[str | None]:
    """The model of each object a session write is given; None where the source does not say."""
    if isinstance(argument, ast.List | ast.Tuple):
        return [model for element in argument.elts for model in _models_written(element, scope)]
    if isinstance(argument, ast.Name):
        models = {_model_built_or_got(value) for value in _values_assigned(argument.id, scope)}
        return [models.pop() if len(models) == 1 else None]
    return [_model_built_or_got(argument)]


def _write_made_by(call: ast.Call, scope: ast.AST, sql_functions: set[str], sql_modules: set[str]) -> str | None:
    """What write to a storage-owned table this call makes, if it makes one."""
    func = call.func
    if isinstance(func, ast.Name) and func.id in sql_functions:
        return f"sqlalchemy {func.id}()"
    if not isinstance(func, ast.Attribute):
        return "raw SQL" if isinstance(func, ast.Name) and func.id == "text" and _changes_rows(call) else None
    if func.attr in SQL_WRITES and (
        (isinstance(func.value, ast.Name) and func.value.id in sql_modules)
        or (isinstance(func.value, ast.Attribute) and func.value.attr == "__table__")
    ):
        return f"{ast.unparse(func)}()"
    if func.attr == "values" and (call.args or call.keywords):
        return ".values(...) of an INSERT or UPDATE"  # a dict's .values() takes no arguments
    if func.attr == "text" and _changes_rows(call):
        return "raw SQL"
    if func.attr in SESSION_WRITES and _is_session(func.value):
        models = [model for argument in call.args for model in _models_written(argument, scope)]
        written = [model or "a model it cannot tell" for model in models if model is None or model in OWNED_MODELS]
        return f"session.{func.attr}() of {', '.join(written)}" if written else None
    return None


def _changes_rows(text_call: ast.Call) -> bool:
    """`text("UPDATE ...")`, `text("INSERT ...")`, `text("DELETE ...")`."""
    sql = text_call.args[0] if text_call.args else None
    if not (isinstance(sql, ast.Constant) and isinstance(sql.value, str)):
        return False
    return [word.upper() for word in sql.value.split()[:1]] in (["UPDATE"], ["INSERT"], ["DELETE"])


def writes_outside_storage(path: Path, root: Path = ROOT) -> list[str]:
    """Each write to a storage-owned table that the file makes, as `path:line: what`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    sql_functions, sql_modules = _sqlalchemy_names(tree)
    scope_of = _scope_of_each_node(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (what := _write_made_by(node, scope_of[node], sql_functions, sql_modules)):
            found.append((node.lineno, what))
    return [f"{path.relative_to(root)}:{line}: {what}" for line, what in sorted(found)]


@pytest.mark.parametrize("package", CHECKED)
def test_writes_to_storage_tables_are_made_in_storage(package):
    found = [write for path in sorted((ROOT / package).rglob("*.py")) for write in writes_outside_storage(path)]
    assert found == [], "write these through a named function of storage/ (jobs, webhook_events, workers, files)"


WRITES = """
from sqlalchemy import update as sa_update, select
import sqlalchemy

def repair(session, job_id):
    session.execute(sa_update(Job).where(Job.id == job_id))
    session.execute(sqlalchemy.delete(WebhookEvent))
    session.execute(Job.__table__.insert())
    session.execute(select(Job)).values(progress=1)
    session.execute(text("DELETE FROM jobs"))
    session.add(WebhookDelivery(event_id="e"))
    event = session.get(WebhookEvent, "e")
    session.delete(event)
    session.add(thing)
"""

READS = """
from sqlalchemy import select, text

def look(session, counts):
    session.execute(select(Job).where(Job.id == "x"))
    session.execute(text("SELECT 1"))
    total = sum(counts.values())
    seen = set()
    seen.add("x")
    session.add(IdempotencyKey(owner="o", key="k"))
    earlier = session.get(IdempotencyKey, ("o", "k"))
    session.delete(earlier)
"""


def test_the_scan_finds_each_kind_of_write_and_passes_reads(tmp_path):
    writes, reads = tmp_path / "writes.py", tmp_path / "reads.py"
    writes.write_text(WRITES)
    reads.write_text(READS)
    assert writes_outside_storage(writes, tmp_path) == [
        "writes.py:6: sqlalchemy sa_update()",
        "writes.py:7: sqlalchemy.delete()",
        "writes.py:8: Job.__table__.insert()",
        "writes.py:9: .values(...) of an INSERT or UPDATE",
        "writes.py:10: raw SQL",
        "writes.py:11: session.add() of WebhookDelivery",
        "writes.py:13: session.delete() of WebhookEvent",
        "writes.py:14: session.add() of a model it cannot tell",
    ]
    assert writes_outside_storage(reads, tmp_path) == []
