"""`/health`: liveness, readiness (each dependency checked, with its latency) and the workers as
their heartbeats describe them. Unauthenticated, like `/metrics`: orchestrators and dashboards
call them without a key, so they say nothing about any job beyond its id."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import Services, ServicesDep
from storage import workers
from storage.jobs import now
from storage.models import Worker

router = APIRouter(prefix="/health", tags=["health"])

CHECK_TIMEOUT_S = 5.0


@router.get("")
def liveness() -> dict:
    """The process serves HTTP. Says nothing of its dependencies: see `/health/ready`."""
    return {"status": "ok"}


@router.get("/ready")
async def readiness(services: ServicesDep) -> JSONResponse:
    """200 when Postgres, the broker and the blob store all answer, else 503; either way each
    check with its latency, so a slow dependency shows before it fails."""
    checks = {
        "database": lambda: _ping_database(services),
        "broker": lambda: _ping_broker(services),
        "blob_store": services.blobs.check,
    }
    results = await asyncio.gather(*(_timed(check) for check in checks.values()))
    body = dict(zip(checks, results, strict=True))
    healthy = all(result["status"] == "ok" for result in results)
    return JSONResponse(
        {"status": "ok" if healthy else "unavailable", "checks": body},
        status_code=200 if healthy else 503,
    )


async def _timed(check: Callable[[], object]) -> dict:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(run_in_threadpool(check), timeout=CHECK_TIMEOUT_S)
    except TimeoutError:
        error = f"no answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as failure:  # noqa: BLE001 - any failure of a dependency is the answer
        error = f"{type(failure).__name__}: {failure}"
    else:
        error = None
    result = {"status": "ok" if error is None else "error"}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    if error is not None:
        result["error"] = error[:500]
    return result


def _ping_database(services: Services) -> None:
    with services.sessions() as session:
        session.execute(text("SELECT 1"))


def _ping_broker(services: Services) -> None:
    with services.celery.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT_S)


@router.get("/workers")
def list_workers(services: ServicesDep) -> dict:
    """Every worker seen in the last `DARKROOM_WORKER_FORGET_AFTER_S`: online, lost (silent for
    three of its heartbeat intervals) or stopped (shut down cleanly)."""
    with services.sessions() as session:
        rows = workers.all_workers(session)
    at = now()
    data = [_describe(row, at) for row in rows]
    summary = {state: sum(item["state"] == state for item in data) for state in workers.WorkerState}
    return {"object": "list", "data": data, "summary": summary}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def _describe(row: Worker, at: datetime) -> dict:
    return {
        "id": row.id,
        "role": row.role,
        "state": workers.state_of(row, at),
        "host": row.host,
        "pid": row.pid,
        "devices": row.devices,
        "models": row.models,
        "queues": row.queues,
        "current_job_id": row.current_job_id,
        "jobs_completed": row.jobs_completed,
        "jobs_failed": row.jobs_failed,
        "last_error": {"message": row.last_error, "at": _iso(row.last_error_at)} if row.last_error else None,
        "memory": row.memory,
        "started_at": _iso(row.started_at),
        "last_heartbeat_at": _iso(row.heartbeat_at),
        "seconds_since_heartbeat": round((at - row.heartbeat_at).total_seconds(), 1),
        "heartbeat_interval_s": row.heartbeat_interval_s,
    }
