"""Reading docker-compose.yml and .env.example the way Compose does, and `darkroom` command
lines the way its parser does, for tests/unit/test_compose.py.

Compose interpolates `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
`${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}` and `$VAR` in values (never in keys), and `$$` is a
literal `$`. Nested defaults are not handled here, so the compose file doesn't use them.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from darkroom import cli

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_REFERENCE = re.compile(
    rf"\$(?:(?P<escaped>\$)|\{{(?P<braced>{_NAME})(?:(?P<op>:?[-?+])(?P<arg>[^}}]*))?\}}|(?P<bare>{_NAME}))"
)
_ENV_LINE = re.compile(rf"^(?P<commented>#\s*)?(?P<name>{_NAME})=(?P<value>.*)$")


class MissingVariable(LookupError):
    """A `${VAR:?message}` whose variable is unset or empty: Compose refuses to start."""


@dataclass(frozen=True)
class Reference:
    name: str
    op: str | None  # None, "-", ":-", "?", ":?", "+", ":+"
    arg: str


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def references(value: Any) -> list[Reference]:
    """Every variable a value (and everything under it) refers to."""
    found = []
    for text in _strings(value):
        for match in _REFERENCE.finditer(text):
            if not match["escaped"]:
                found.append(
                    Reference(match["braced"] or match["bare"], match["op"], match["arg"] or "")
                )
    return found


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """`value` with every string interpolated against `env`, as `docker compose config` shows it."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if isinstance(value, str):
        return _REFERENCE.sub(lambda match: _substitute(match, env), value)
    return value


def _substitute(match: re.Match, env: dict[str, str]) -> str:
    if match["escaped"]:
        return "$"
    name, op, arg = match["braced"] or match["bare"], match["op"], match["arg"] or ""
    value = env.get(name)
    if op is None:
        return value or ""
    present = bool(value) if op.startswith(":") else value is not None
    if op.endswith("-"):
        return value if present else arg
    if op.endswith("+"):
        return arg if present else ""
    if not present:
        raise MissingVariable(f"{name}: {arg}")
    return value


def _strings(value: Any):
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


@dataclass(frozen=True)
class EnvEntry:
    name: str
    value: str
    commented: bool  # documented, but left unset: the default applies
    comment: str  # the prose comment lines above it (shared by a group of entries)


def read_env_example() -> list[EnvEntry]:
    """Entries in file order. A run of prose comment lines documents the entries right below it."""
    entries: list[EnvEntry] = []
    block: list[str] = []
    after_entry = False
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        match = _ENV_LINE.match(line)
        if match:
            entries.append(
                EnvEntry(match["name"], match["value"], bool(match["commented"]), " ".join(block))
            )
            after_entry = True
        elif line.startswith("#"):
            if after_entry:
                block, after_entry = [], False
            block.append(line.lstrip("#").strip())
        else:
            block, after_entry = [], False
    return entries


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment`, as a mapping whichever of Compose's two forms it is written in."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def command_of(service: dict) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


class _Parsed(Exception):
    """Raised right after `darkroom`'s own parser accepted a command line, so nothing runs."""


def parse_darkroom(argv: list[str], monkeypatch) -> argparse.Namespace:
    """`darkroom ARGV` through the real parser that `darkroom.cli.main` builds, stopped before
    it dispatches (subparsers use parse_known_args, so only the top-level call is caught)."""
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(parse_args(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    try:
        cli.main(argv)
    except _Parsed as parsed:
        return parsed.args[0]
    except SystemExit as exit_:
        pytest.fail(
            f"`darkroom {shlex.join(argv)}` is not a valid darkroom command line (exit {exit_.code})"
        )
    pytest.fail("darkroom.cli.main returned without parsing its arguments")


def dockerfile_cmd() -> list[str]:
    match = re.search(r"^CMD\s+(\[.*\])\s*$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "the Dockerfile has no exec-form CMD"
    return json.loads(match[1])


def compose_command() -> list[str] | None:
    """`docker compose` (v2) where its plugin is installed, else Debian's `docker-compose` (v1)."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None
