"""`/metrics` in the Prometheus text format. Every figure is read at scrape time from where it is
true: job counters from the jobs table (exact, and the same from every API replica), queue depths
from the broker, job duration histograms and device memory from the workers' heartbeat rows
(each worker keeps its own histograms and publishes them there; see `darkroom.telemetry`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from api.deps import Services
from darkroom import telemetry
from storage import workers
from storage.jobs import now
from storage.models import Job, JobStatus, WebhookDelivery
from worker.celery_app import WEBHOOK_QUEUE, queue_for, queue_length

log = logging.getLogger("darkroom.metrics")

router = APIRouter(tags=["metrics"])

TERMINAL = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)

HISTOGRAM_HELP = {
    telemetry.QUEUE_WAIT: ("Seconds from submission to a worker starting the job.", ["model"]),
    telemetry.RUN: ("Seconds a worker spent on a job, claim to final write.", ["model"]),
    telemetry.STAGE: ("Seconds per stage of a job (model.denoise, upload, ...).", ["model", "stage"]),
}

_DELIVERY_OUTCOME = case(
    (WebhookDelivery.status_code.between(200, 299), "delivered"),
    (WebhookDelivery.status_code == 410, "gone"),
    (WebhookDelivery.status_code.is_not(None), "http_error"),
    else_="network_error",
)


class DarkroomCollector(Collector):
    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        with self.services.sessions() as session:
            job_counts = session.execute(
                select(Job.model, Job.kind, Job.status, func.count()).group_by(Job.model, Job.kind, Job.status)
            ).all()
            deliveries = session.execute(
                select(_DELIVERY_OUTCOME, func.count()).group_by(_DELIVERY_OUTCOME)
            ).all()
            fleet = workers.all_workers(session)
        yield from _job_metrics(job_counts)
        yield _queue_depths(self.services)
        yield from _histograms(fleet)
        yield from _worker_metrics(fleet)
        webhooks = CounterMetricFamily(
            "darkroom_webhook_deliveries", "Webhook delivery attempts by outcome.", labels=["outcome"]
        )
        for outcome, count in deliveries:
            webhooks.add_metric([outcome], count)
        yield webhooks


def _job_metrics(job_counts) -> Iterator[Metric]:
    created = CounterMetricFamily("darkroom_jobs_created", "Jobs accepted.", labels=["model", "kind"])
    finished = CounterMetricFamily(
        "darkroom_jobs_finished", "Jobs that ended, by how they ended.", labels=["model", "kind", "status"]
    )
    active = GaugeMetricFamily("darkroom_jobs_active", "Jobs queued or running now.", labels=["model", "kind", "status"])
    totals: dict[tuple[str, str], int] = {}
    for model, kind, status, count in job_counts:
        totals[(model, kind)] = totals.get((model, kind), 0) + count
        (finished if status in TERMINAL else active).add_metric([model, kind, status], count)
    for (model, kind), count in totals.items():
        created.add_metric([model, kind], count)
    yield from (created, finished, active)


def _queue_depths(services: Services) -> Metric:
    depth = GaugeMetricFamily("darkroom_queue_depth", "Messages waiting in a broker queue.", labels=["queue"])
    queues = [queue_for(model) for model in services.settings.models] + [WEBHOOK_QUEUE]
    try:
        for queue in queues:
            depth.add_metric([queue], queue_length(services.celery, queue))
    except Exception as error:  # noqa: BLE001 - a scrape without queue depths beats a failed scrape
        log.warning("queue depths left out of /metrics: %s", error)
    return depth


def _histograms(fleet) -> Iterator[Metric]:
    merged = telemetry.merge(worker.histograms for worker in fleet)
    families = {
        name: HistogramMetricFamily(f"darkroom_{name}", help_text, labels=labels)
        for name, (help_text, labels) in HISTOGRAM_HELP.items()
    }
    for key, series in sorted(merged.items()):
        name, model, stage = telemetry.parse_series_key(key)
        if name in families:
            labels = [model, stage] if name == telemetry.STAGE else [model]
            families[name].add_metric(labels, telemetry.cumulative_buckets(series), series["sum"])
    yield from families.values()


def _worker_metrics(fleet) -> Iterator[Metric]:
    at = now()
    states = GaugeMetricFamily("darkroom_workers", "Worker processes by role and state.", labels=["role", "state"])
    counts: dict[tuple[str, str], int] = {}
    in_use = GaugeMetricFamily(
        "darkroom_worker_memory_bytes", "Device memory in use, from the last heartbeat.", labels=["worker", "device"]
    )
    peak = GaugeMetricFamily(
        "darkroom_worker_memory_peak_bytes", "Peak device memory since the worker started.", labels=["worker", "device"]
    )
    for worker in fleet:
        state = workers.state_of(worker, at)
        counts[(worker.role, state)] = counts.get((worker.role, state), 0) + 1
        if state != workers.WorkerState.ONLINE:
            continue
        for device, memory in worker.memory.items():
            in_use.add_metric([worker.id, device], memory["in_use"])
            peak.add_metric([worker.id, device], memory["peak"])
    for (role, state), count in counts.items():
        states.add_metric([role, state], count)
    yield from (states, in_use, peak)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def make_registry(services: Services) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DarkroomCollector(services))
    return registry
