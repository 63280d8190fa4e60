"""`darkroom flower`: Flower on Darkroom's own Celery app, in this process.

Flower only knows what the broker tells it. Workers send task events (`worker_send_task_events`),
whoever publishes sends `task-sent` (`task_send_sent_event`), and every message is a job or event
id, so Flower's task list says which job ran where, and for how long, without showing a prompt.

Two of Flower's defaults don't fit Darkroom:
- Its task runtime histogram stops at 10 s. A GPU job takes seconds to half an hour, so the
  buckets here reach 1800 s; past 10 s every job would otherwise land in `+Inf`.
- With no auth configured, its HTTP API answers 401 unless `FLOWER_UNAUTHENTICATED_API` is set,
  while its pages stay open. Without basic auth, Darkroom opens the API only when Flower listens
  on loopback, so only this host's own users and processes can reach either. On any other
  address it leaves the API closed and warns that the pages are open to anyone who can reach them.

Flower is run through Celery's own command line (`celery flower`) on the app `make_celery`
builds, so Flower parses its options the way it documents; passing them in-process keeps the
basic-auth passwords out of the process list.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from darkroom.settings import Settings

log = logging.getLogger("darkroom.flower")

RUNTIME_BUCKETS_S = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800)
UNAUTHENTICATED_API_ENV = "FLOWER_UNAUTHENTICATED_API"
_FLOWER_TRUE = ("y", "yes", "t", "true", "on", "1")  # what flower.utils.strtobool reads as true


@dataclass(frozen=True)
class FlowerLaunch:
    argv: list[str]  # for `celery flower`; holds the basic-auth passwords, so never log it
    users: tuple[str, ...]  # basic-auth user names; empty means no auth
    open_api: bool  # set FLOWER_UNAUTHENTICATED_API: no auth, and only reachable from this host
    notice: str  # what the operator is told about access, logged at start
    warn: bool


def parse_basic_auth(value: str) -> list[str]:
    """Entries of "user:password[,user2:password2]", as Flower's `--basic_auth` takes them. An
    error names the entry by position and never echoes it: it holds a password."""
    entries = [entry.strip() for entry in value.split(",")] if value.strip() else []
    for position, entry in enumerate(entries, start=1):
        user, colon, password = entry.partition(":")
        if not (colon and user.strip() and password):
            raise ValueError(
                f"DARKROOM_FLOWER_BASIC_AUTH entry {position} of {len(entries)} is not "
                "'user:password' (entries are separated by commas, so a password cannot "
                "contain one)"
            )
    return entries


def is_loopback(address: str) -> bool:
    """An empty address means every interface, so it is not loopback; nor is a host name other
    than localhost, which could resolve anywhere."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def plan_flower(
    settings: Settings, log_level: str, environ: Mapping[str, str] = os.environ
) -> FlowerLaunch:
    credentials = parse_basic_auth(settings.flower_basic_auth)
    users = tuple(entry.partition(":")[0] for entry in credentials)
    where = f"{settings.flower_address or '0.0.0.0'}:{settings.flower_port}"
    argv = [
        "flower",
        f"--port={settings.flower_port}",
        f"--address={settings.flower_address}",
        "--task_runtime_metric_buckets=" + ",".join(f"{bucket:g}" for bucket in RUNTIME_BUCKETS_S),
        # Tornado would otherwise reset the root logger to INFO whatever --log-level said.
        f"--logging={log_level.lower()}",
    ]
    if credentials:
        argv.append("--basic_auth=" + ",".join(credentials))
        return FlowerLaunch(
            argv,
            users,
            open_api=False,
            warn=False,
            notice=f"Flower on {where}: basic auth for {', '.join(users)}; /metrics needs none",
        )
    if is_loopback(settings.flower_address):
        return FlowerLaunch(
            argv,
            users,
            open_api=True,
            warn=False,
            notice=(
                f"Flower on {where} without auth: loopback only, so its HTTP API is opened too "
                f"({UNAUTHENTICATED_API_ENV}=true). "
                "Set DARKROOM_FLOWER_BASIC_AUTH before listening elsewhere."
            ),
        )
    inherited = environ.get(UNAUTHENTICATED_API_ENV, "").lower() in _FLOWER_TRUE
    api = (
        f"its HTTP API is open too, because {UNAUTHENTICATED_API_ENV} is set in the environment"
        if inherited
        else "its HTTP API answers 401"
    )
    return FlowerLaunch(
        argv,
        users,
        open_api=False,
        warn=True,
        notice=(
            f"Flower on {where} without auth: its pages are open to anyone who can reach that "
            f"port, and {api}. Set DARKROOM_FLOWER_BASIC_AUTH."
        ),
    )


def run_flower(settings: Settings, *, log_level: str = "INFO") -> None:
    from worker.celery_app import make_celery

    launch = plan_flower(settings, log_level)
    if launch.open_api:
        os.environ[UNAUTHENTICATED_API_ENV] = "true"  # Flower reads it per request, from here
    log.log(logging.WARNING if launch.warn else logging.INFO, "%s", launch.notice)
    make_celery(settings).start(launch.argv)
