"""Job duration histograms, kept in memory by the worker that ran the jobs and published through
its heartbeat row, so that `/metrics` on any API process sees every worker's numbers without a
write per job and without scraping workers one by one.

A series is stored as Prometheus does it, minus the cumulation: one count per bucket plus the
overflow, a sum and a count. Merging two workers' series is adding them.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable
from typing import Any

# GPU jobs run from seconds to tens of minutes; the last finite bucket is 30 minutes.
DURATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800)

QUEUE_WAIT = "job_queue_wait_seconds"
RUN = "job_run_seconds"
STAGE = "job_stage_seconds"


def series_key(name: str, model: str, stage: str = "") -> str:
    return f"{name}|{model}|{stage}"


def parse_series_key(key: str) -> tuple[str, str, str]:
    name, model, stage = key.split("|", 2)
    return name, model, stage


def _empty() -> dict[str, Any]:
    return {"counts": [0] * (len(DURATION_BUCKETS_S) + 1), "sum": 0.0, "count": 0}


class JobHistograms:
    """Thread-safe: the job thread observes, the heartbeat thread takes snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[str, dict[str, Any]] = {}

    def observe_job(self, model: str, timings: dict[str, float], run_s: float) -> None:
        """One finished job: its queue wait, its run time, and each stage it timed."""
        with self._lock:
            for stage, seconds in timings.items():
                if stage == "queue_wait":
                    self._observe(series_key(QUEUE_WAIT, model), seconds)
                else:
                    self._observe(series_key(STAGE, model, stage), seconds)
            self._observe(series_key(RUN, model), run_s)

    def _observe(self, key: str, seconds: float) -> None:
        series = self._series.setdefault(key, _empty())
        series["counts"][bisect.bisect_left(DURATION_BUCKETS_S, seconds)] += 1
        series["sum"] += seconds
        series["count"] += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                key: {"counts": list(s["counts"]), "sum": s["sum"], "count": s["count"]}
                for key, s in self._series.items()
            }


def merge(snapshots: Iterable[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for snapshot in snapshots:
        for key, series in snapshot.items():
            total = merged.setdefault(key, _empty())
            # A row written with other buckets (an older release) is skipped, not misread.
            if len(series.get("counts", ())) != len(total["counts"]):
                continue
            total["counts"] = [a + b for a, b in zip(total["counts"], series["counts"], strict=True)]
            total["sum"] += series["sum"]
            total["count"] += series["count"]
    return merged


def cumulative_buckets(series: dict[str, Any]) -> list[tuple[str, int]]:
    """The `(le, cumulative count)` pairs Prometheus expects, ending with `+Inf`."""
    bounds = [*(f"{bound:g}" for bound in DURATION_BUCKETS_S), "+Inf"]
    running, pairs = 0, []
    for bound, count in zip(bounds, series["counts"], strict=True):
        running += count
        pairs.append((bound, running))
    return pairs
