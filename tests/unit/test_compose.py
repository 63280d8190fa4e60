"""docker-compose.yml, .env.example and the Dockerfile, checked against the Compose schema and
against the code they start: no Docker engine is needed.

The schema, data/compose-spec.json, is the Compose Specification's own (compose-spec/compose-spec,
schema/compose-spec.json, JSON Schema draft 2020-12, Apache-2.0: data/LICENSE.compose-spec). It
is the copy that check-jsonschema 0.39.0 (PyPI, 2026-10) vendors as
check_jsonschema/builtin_schemas/vendor/compose-spec.json, sha256 d549057e...3ed10e64. To update
it, take that file from a newer check-jsonschema wheel.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest

from darkroom import cli
from darkroom.settings import Settings
from pipelines.spec.registry import REGISTRY, TINY_MODELS
from tests.unit.compose_support import (
    COMPOSE_FILE,
    DOCKERFILE,
    DOCKERIGNORE,
    ROOT,
    MissingVariable,
    command_of,
    compose_command,
    dockerfile_cmd,
    interpolate,
    load_compose,
    parse_darkroom,
    read_env_example,
    references,
    service_environment,
)

SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
# Secrets the stack must never run with a default for: .env.example leaves them blank and the
# compose file refuses to start without them.
SECRETS = {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "DARKROOM_FLOWER_BASIC_AUTH"}
FILLED_SECRETS = {name: "0123456789abcdef" for name in SECRETS} | {
    "DARKROOM_FLOWER_BASIC_AUTH": "admin:0123456789"
}

COMPOSE = load_compose()
SERVICES = COMPOSE["services"]
ENV_ENTRIES = read_env_example()
# What a filled-in copy of .env.example holds: the uncommented lines, secrets set.
DOTENV = {entry.name: entry.value for entry in ENV_ENTRIES if not entry.commented} | FILLED_SECRETS
DARKROOM_SERVICES = sorted(
    name
    for name, service in SERVICES.items()
    if str(service.get("image", "")).startswith("darkroom:")
)
# The darkroom subcommands a plain `docker compose up` must run for a working deployment.
PROCESSES = {"migrate", "build-tiny-models", "api", "worker", "webhook-worker", "sweeper", "flower"}
DEFAULT_SERVICES = {name for name, service in SERVICES.items() if not service.get("profiles")}


def is_gpu(service: dict) -> bool:
    reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return (
        bool(reservations.get("devices") or service.get("devices"))
        or service_environment(service).get("DARKROOM_DEVICE", "cpu") != "cpu"
    )


@pytest.mark.parametrize("form", ["as written", "interpolated from .env.example"])
def test_the_compose_file_is_valid_per_the_compose_spec_schema(form):
    schema = json.loads(SCHEMA.read_text())
    document = COMPOSE if form == "as written" else interpolate(COMPOSE, DOTENV)
    validator = jsonschema.Draft202012Validator(schema)
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("name", [*DARKROOM_SERVICES, "Dockerfile CMD"])
def test_every_darkroom_process_runs_a_real_darkroom_subcommand(name, monkeypatch):
    command = dockerfile_cmd() if name == "Dockerfile CMD" else command_of(SERVICES[name])
    assert command[:1] == ["darkroom"], f"{name} runs {command!r}, not a darkroom command"
    parsed = parse_darkroom(command[1:], monkeypatch)
    assert parsed.func.__module__ == cli.__name__ and parsed.func.__name__.startswith("cmd_")


def test_the_default_stack_runs_every_part_of_darkroom():
    running = {command_of(SERVICES[name])[1] for name in DEFAULT_SERVICES & set(DARKROOM_SERVICES)}
    missing = PROCESSES - running
    assert not missing, f"`docker compose up` would run no {sorted(missing)}"


def test_every_darkroom_variable_is_a_setting():
    named = {ref.name for ref in references(COMPOSE)} | {entry.name for entry in ENV_ENTRIES}
    for service in SERVICES.values():
        named |= set(service_environment(service))
    darkroom = {name for name in named if name.upper().startswith("DARKROOM_")}
    assert "DARKROOM_DATABASE_URL" in darkroom  # the collection itself works
    unknown = sorted(
        name
        for name in darkroom
        if name != name.upper()
        or name.removeprefix("DARKROOM_").lower() not in Settings.model_fields
    )
    assert not unknown, f"not fields of darkroom.settings.Settings: {unknown}"


@pytest.mark.parametrize("name", DARKROOM_SERVICES)
def test_each_darkroom_service_gets_settings_for_the_real_services(name, monkeypatch):
    """What env_file (.env) and `environment` hand the process parses, and points at Postgres,
    Redis and MinIO rather than the embedded defaults."""
    for key in list(os.environ):
        if key.upper().startswith("DARKROOM_"):
            monkeypatch.delenv(key)
    assert SERVICES[name].get("env_file") == ".env", f"{name} does not read .env"
    environment = DOTENV | interpolate(service_environment(SERVICES[name]), DOTENV)
    for key, value in environment.items():
        if key.startswith("DARKROOM_"):
            monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.resolved_database_url.startswith(
        "postgresql+psycopg://darkroom:0123456789abcdef@postgres:5432/"
    )
    assert settings.resolved_broker_url == "redis://redis:6379/0"
    assert (settings.s3_bucket, settings.s3_endpoint_url) == ("darkroom", "http://minio:9000")
    assert settings.s3_access_key_id and settings.s3_secret_access_key == "0123456789abcdef"
    assert set(settings.models) <= set(REGISTRY)


def test_published_ports_listen_on_localhost_unless_configured():
    published = 0
    for name, service in SERVICES.items():
        for port in interpolate(service.get("ports", []), {}):
            if isinstance(port, dict):
                host_ip = port.get("host_ip", "")
            else:
                parts = str(port).rsplit("/", 1)[0].rsplit(":", 2)
                host_ip = parts[0].strip("[]") if len(parts) == 3 else ""
            assert host_ip and ipaddress.ip_address(host_ip).is_loopback, (
                f"{name} publishes {port!r} beyond localhost"
            )
            published += 1
    assert published >= 3  # the API, Flower and the MinIO console


def test_gpu_workers_need_a_profile_and_their_devices():
    gpu = {name: service for name, service in SERVICES.items() if is_gpu(service)}
    assert {"cuda", "rocm"} <= {
        profile for service in gpu.values() for profile in service.get("profiles", [])
    }
    for name, service in gpu.items():
        assert service.get("profiles"), (
            f"{name} uses a GPU but starts with a plain `docker compose up`"
        )
        assert command_of(service)[:2] == ["darkroom", "worker"]
        if "cuda" in service["profiles"]:
            devices = service["deploy"]["resources"]["reservations"]["devices"]
            assert any(
                d.get("driver") == "nvidia" and "gpu" in d["capabilities"] for d in devices
            ), name
        if "rocm" in service["profiles"]:
            assert {"/dev/kfd", "/dev/dri"} <= set(service.get("devices", [])), name
            assert "video" in service.get("group_add", []), name
    for name in DEFAULT_SERVICES:
        needs = set(SERVICES[name].get("depends_on", {})) - DEFAULT_SERVICES
        assert not needs, f"{name} starts by default but depends on profiled {sorted(needs)}"


def test_the_api_waits_for_healthy_services_and_finished_one_shots():
    assert {
        dependency: condition["condition"]
        for dependency, condition in SERVICES["api"]["depends_on"].items()
    } == {
        "postgres": "service_healthy",
        "redis": "service_healthy",
        "minio": "service_healthy",
        "minio-init": "service_completed_successfully",
        "migrate": "service_completed_successfully",
    }
    for name, service in SERVICES.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), (
            f"{name}: depends_on without conditions waits for nothing"
        )
        for dependency, condition in depends_on.items():
            target = SERVICES[dependency]
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in target, (
                    f"{name} waits for {dependency} to be healthy, which has no healthcheck"
                )
            if condition["condition"] == "service_completed_successfully":
                assert target.get("restart", "no") == "no", (
                    f"{dependency} is a one-shot but restarts"
                )
    one_shots = {
        dependency
        for service in SERVICES.values()
        for dependency, condition in service.get("depends_on", {}).items()
        if condition["condition"] == "service_completed_successfully"
    }
    assert one_shots == {"minio-init", "migrate", "tiny-models"}
    for name in set(SERVICES) - one_shots:
        restart = SERVICES[name].get("restart")
        assert restart in ("always", "unless-stopped"), (
            f"{name} stays down once it exits (restart: {restart})"
        )


def test_env_example_documents_every_variable_and_defaults_no_secret():
    documented = {entry.name: entry for entry in ENV_ENTRIES}
    undocumented = sorted({ref.name for ref in references(COMPOSE)} - set(documented))
    assert not undocumented, (
        f"docker-compose.yml reads {undocumented}, which .env.example does not mention"
    )
    assert all(entry.comment for entry in ENV_ENTRIES), [
        entry.name for entry in ENV_ENTRIES if not entry.comment
    ]
    for name in SECRETS:
        assert documented[name].value == "" and not documented[name].commented, (
            f".env.example gives {name} a value"
        )
        uses = [ref for ref in references(COMPOSE) if ref.name == name]
        assert uses and all(ref.op == ":?" for ref in uses), (
            f"{name} must be required (${{{name}:?...}}) everywhere"
        )
    with pytest.raises(MissingVariable):
        interpolate(
            COMPOSE, {entry.name: entry.value for entry in ENV_ENTRIES if not entry.commented}
        )
    # A setting that compose hard-wires in every Darkroom service would be silently ignored in .env.
    for entry in ENV_ENTRIES:
        wired = [
            name
            for name in DARKROOM_SERVICES
            if entry.name in (environment := service_environment(SERVICES[name]))
            and entry.name not in {ref.name for ref in references(environment[entry.name])}
        ]
        assert len(wired) < len(DARKROOM_SERVICES), (
            f"every Darkroom service sets {entry.name} itself; .env can't"
        )


def test_workers_default_to_the_tiny_models_and_name_only_known_models():
    for name in ("worker-cpu", "api"):
        served = interpolate(service_environment(SERVICES[name])["DARKROOM_MODELS"], {})
        assert tuple(served.split(",")) == TINY_MODELS, name
    for entry in ENV_ENTRIES:
        if entry.name.endswith("MODELS"):
            assert set(entry.value.split(",")) <= set(REGISTRY), f"{entry.name}={entry.value}"


def test_the_dockerfile_builds_what_compose_asks_and_installs_only_the_project():
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)(?:=(.*))?$", text, re.MULTILINE))
    assert args.get("TORCH_PACKAGES") == "torch", (
        "the default image must carry pyproject.toml's dependencies only"
    )
    for name, service in SERVICES.items():
        build = service.get("build")
        if isinstance(build, dict):
            assert (
                ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
            ).is_file(), name
            assert set(build.get("args", {})) <= set(args), (
                f"{name} passes build args the Dockerfile lacks"
            )
    joined = "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")
    ).replace("\\\n", " ")
    installs = re.findall(r"pip install ([^&\n]*)", joined)
    assert installs, "the Dockerfile installs nothing with pip"
    for install in installs:
        packages = [
            word
            for word in shlex.split(install)
            if not word.startswith("-") and "INDEX_URL" not in word
        ]
        # flash-attn is the one exception: a CUDA-only wheel that cannot install on a CPU host.
        assert set(packages) <= {".", "$TORCH_PACKAGES", "$FLASH_ATTN_WHEEL"}, (
            f"pip installs {packages} beyond the project, torch and the CUDA image's flash-attn"
        )
    ignored = DOCKERIGNORE.read_text().split()
    assert ".env" in ignored and ".venv" in ignored


@pytest.mark.parametrize("profile", [None, "cuda", "rocm"])
def test_docker_compose_accepts_the_file_where_it_is_installed(profile, tmp_path):
    """Optional: Compose's own loader, where one is installed. It runs on a copy, because
    `config` wants the .env that services read and the repository has none."""
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` here; the schema test stands in")
    for name in (COMPOSE_FILE.name, DOCKERFILE.name):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".env").write_text("".join(f"{key}={value}\n" for key, value in DOTENV.items()))
    profiles = ["--profile", profile] if profile else []
    result = subprocess.run(
        [*command, *profiles, "config", "-q"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
