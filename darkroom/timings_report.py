"""`darkroom bench timings`: the stage timings every completed job stores, summed up per model,
like SGLang's perf dump, plus the queue wait it lacks. Read from the deployment's database, so it
reports what real traffic took, not a synthetic run."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import jobs
from storage.models import Job, JobStatus

# A job's stages in the order they happen (worker/execute.py, pipelines/runners/base.py).
STAGES = (
    "queue_wait",
    "load_inputs",
    "model.encode",
    "model.denoise",
    "model.denoise_per_step",
    "model.decode",
    "encode_output",
    "upload",
)


def stage_report(session: Session, *, since: timedelta, model: str | None = None) -> str:
    """One table per model: for each stage, how many jobs, and the p50 / p95 / max in ms."""
    query = select(Job.model, Job.timings).where(
        Job.status == JobStatus.COMPLETED, Job.completed_at >= jobs.now() - since
    )
    if model is not None:
        query = query.where(Job.model == model)
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for job_model, timings in session.execute(query):
        for stage, seconds in (timings or {}).items():
            samples[job_model][stage].append(seconds * 1000)
    if not samples:
        return f"no completed jobs in the last {_duration(since)}" + (f" for {model}" if model else "")
    lines = []
    for job_model in sorted(samples):
        by_stage = samples[job_model]
        jobs_seen = max(len(values) for values in by_stage.values())
        lines.append(f"{job_model}: {jobs_seen} completed jobs in the last {_duration(since)}")
        lines.append(f"  {'stage':<24}{'jobs':>6}{'p50 ms':>11}{'p95 ms':>11}{'max ms':>11}")
        for stage in [*STAGES, *sorted(set(by_stage) - set(STAGES) - {"pipeline"})]:
            values = sorted(by_stage.get(stage, ()))
            if values:
                lines.append(
                    f"  {stage:<24}{len(values):>6}{_percentile(values, 50):>11.1f}"
                    f"{_percentile(values, 95):>11.1f}{values[-1]:>11.1f}"
                )
    return "\n".join(lines)


def _percentile(values: list[float], percent: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def _duration(since: timedelta) -> str:
    hours = since.total_seconds() / 3600
    return f"{hours:g} h"
