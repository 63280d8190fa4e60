"""Job duration histograms: kept per worker, merged across workers, shaped for Prometheus."""

from __future__ import annotations

from darkroom import telemetry
from darkroom.telemetry import DURATION_BUCKETS_S, JobHistograms


def test_a_job_is_counted_in_its_bucket_and_every_bucket_above():
    histograms = JobHistograms()
    histograms.observe_job("tiny-wan", {"queue_wait": 0.3, "model.denoise": 2.5}, run_s=4000.0)
    snapshot = histograms.snapshot()

    denoise = telemetry.cumulative_buckets(snapshot[telemetry.series_key(telemetry.STAGE, "tiny-wan", "model.denoise")])
    assert dict(denoise)["1"] == 0 and dict(denoise)["2.5"] == 1 and dict(denoise)["+Inf"] == 1  # le is inclusive
    run = snapshot[telemetry.series_key(telemetry.RUN, "tiny-wan")]
    assert dict(telemetry.cumulative_buckets(run))["1800"] == 0 and run["count"] == 1 and run["sum"] == 4000.0
    assert snapshot[telemetry.series_key(telemetry.QUEUE_WAIT, "tiny-wan")]["count"] == 1
    assert len(denoise) == len(DURATION_BUCKETS_S) + 1


def test_workers_snapshots_add_up_and_foreign_shapes_are_skipped():
    first, second = JobHistograms(), JobHistograms()
    first.observe_job("m", {}, run_s=1.0)
    second.observe_job("m", {}, run_s=100.0)
    second.observe_job("other", {}, run_s=1.0)
    foreign = {telemetry.series_key(telemetry.RUN, "m"): {"counts": [1, 2], "sum": 9.0, "count": 3}}

    merged = telemetry.merge([first.snapshot(), second.snapshot(), foreign])

    run = merged[telemetry.series_key(telemetry.RUN, "m")]
    assert run["count"] == 2 and run["sum"] == 101.0
    assert dict(telemetry.cumulative_buckets(run))["1"] == 1 and dict(telemetry.cumulative_buckets(run))["120"] == 2
    assert merged[telemetry.series_key(telemetry.RUN, "other")]["count"] == 1


def test_a_series_key_round_trips_a_stage_with_dots():
    key = telemetry.series_key(telemetry.STAGE, "Qwen/Qwen-Image", "model.denoise")
    assert telemetry.parse_series_key(key) == (telemetry.STAGE, "Qwen/Qwen-Image", "model.denoise")
