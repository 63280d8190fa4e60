"""What an operator watches, on a live stack: `/metrics` counters and histograms move by exactly
what ran, `/health/ready` names the dependency that is down, `/health/workers` shows each worker
with its current job and shows a killed one as lost, and results expire on schedule."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from bench.processes import make_bucket, wait_until
from tests.stack import create_database, drop_database, private_redis_db, start_stack

RETENTION_S = 6



def _root(stack) -> str:
    return stack.base_url.removesuffix("/v1")


def _scrape(stack) -> dict[tuple[str, frozenset], float]:
    response = httpx.get(f"{_root(stack)}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _idle(stack, **labels) -> dict:
    """A scrape taken once no job with these labels is queued or running, so that the deltas
    after it belong to this test alone."""
    wanted = set(labels.items())
    samples: dict = {}

    def scrape_if_idle():
        nonlocal samples
        samples = _scrape(stack)
        active = [
            (dict(key), value)
            for (name, key), value in samples.items()
            if name == "darkroom_jobs_active" and wanted <= key and value
        ]
        return samples if not active else None

    try:
        return wait_until(scrape_if_idle, timeout_s=60)
    except TimeoutError:
        raise AssertionError(f"jobs still active: {[s for s in samples.items() if s[0][0] == 'darkroom_jobs_active']}")


def _workers(stack) -> list[dict]:
    response = httpx.get(f"{_root(stack)}/health/workers", timeout=10)
    assert response.status_code == 200
    return response.json()["data"]


def test_metrics_move_by_exactly_the_jobs_that_ran(client, stack):
    before = _idle(stack, model="tiny-wan", kind="video")
    video = client.videos.create_and_poll(model="tiny-wan", prompt="m", size="16x16", poll_interval_ms=50)
    assert video.status == "completed"
    second = client.videos.create_and_poll(
        model="tiny-wan", prompt="m", size="16x16", poll_interval_ms=50, extra_body={"num_inference_steps": 1}
    )
    assert second.status == "completed"

    wan = {"model": "tiny-wan"}
    # Histograms come from the worker's heartbeat row (every 0.2 s in the test stack).
    after = wait_until(
        lambda: (s := _scrape(stack))
        and _value(s, "darkroom_job_run_seconds_count", **wan) - _value(before, "darkroom_job_run_seconds_count", **wan) >= 2
        and s
    )

    def delta(name: str, **labels) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("darkroom_jobs_created_total", model="tiny-wan", kind="video") == 2
    assert delta("darkroom_jobs_finished_total", model="tiny-wan", kind="video", status="completed") == 2
    assert delta("darkroom_jobs_finished_total", model="tiny-wan", kind="video", status="failed") == 0
    assert delta("darkroom_job_run_seconds_count", **wan) == 2
    assert delta("darkroom_job_queue_wait_seconds_count", **wan) == 2
    assert delta("darkroom_job_stage_seconds_count", model="tiny-wan", stage="model.denoise") == 2
    assert delta("darkroom_job_stage_seconds_count", model="tiny-wan", stage="upload") == 2
    # Buckets reach 30 minutes, and every run fell inside them.
    assert delta("darkroom_job_run_seconds_bucket", model="tiny-wan", le="1800") == 2
    assert delta("darkroom_job_run_seconds_bucket", model="tiny-wan", le="+Inf") == 2
    assert delta("darkroom_job_run_seconds_sum", **wan) > 0

    generation = [w for w in _workers(stack) if w["role"] == "generation" and w["state"] == "online"]
    assert generation
    assert all(_value(after, "darkroom_worker_memory_bytes", worker=w["id"], device="cpu") > 0 for w in generation)
    assert _value(after, "darkroom_workers", role="generation", state="online") == len(generation)
    assert ("darkroom_queue_depth", frozenset({"queue": "darkroom.generate.tiny-wan"}.items())) in after


def test_ready_names_the_dependency_that_is_down(stack, spawn_api):
    ready = httpx.get(f"{_root(stack)}/health/ready", timeout=10)
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert set(checks) == {"database", "broker", "blob_store"}
    assert all(check["status"] == "ok" and check["latency_ms"] >= 0 for check in checks.values())

    # An API process whose broker is unreachable is alive but not ready, and says why.
    broken = spawn_api({"DARKROOM_BROKER_URL": "redis://127.0.0.1:1/0"}).removesuffix("/v1")
    assert httpx.get(f"{broken}/health", timeout=10).json() == {"status": "ok"}
    not_ready = httpx.get(f"{broken}/health/ready", timeout=30)
    assert not_ready.status_code == 503
    body = not_ready.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"]["status"] == "error" and body["checks"]["broker"]["error"]
    assert body["checks"]["database"]["status"] == "ok"


def test_workers_show_their_current_job(client, stack):
    video = client.videos.create(
        model="tiny-wan", prompt="long", size="32x32", seconds="1", extra_body={"num_inference_steps": 200}
    )
    try:
        running = wait_until(
            lambda: [w for w in _workers(stack) if w["current_job_id"] == video.id], timeout_s=60
        )[0]
        assert running["role"] == "generation" and running["state"] == "online"
        assert "tiny-wan" in running["models"] and "darkroom.generate.tiny-wan" in running["queues"]
        assert running["devices"] == ["cpu"] and running["memory"]["cpu"]["peak"] > 0
        roles = {(w["role"], w["state"]) for w in _workers(stack)}
        assert {("sweeper", "online"), ("webhooks", "online")} <= roles
    finally:
        client.videos.delete(video.id)
    wait_until(lambda: not [w for w in _workers(stack) if w["current_job_id"] == video.id])


@pytest.fixture(scope="module")
def expiring_stack(tmp_path_factory, models_dir, s3_endpoint):
    """Its own database, broker db and bucket, keeping results for a few seconds."""
    database_url = create_database()
    bucket = make_bucket(s3_endpoint)
    with private_redis_db() as broker_url:
        live = start_stack(
            tmp_path_factory.mktemp("expiring"),
            database_url=database_url,
            broker_url=broker_url,
            s3_endpoint=s3_endpoint,
            bucket=bucket,
            models_dir=models_dir,
            overrides={"DARKROOM_RESULT_RETENTION_S": str(RETENTION_S), "DARKROOM_MODELS": "tiny-qwen-image-edit"},
        )
        yield live
        live.close()
    drop_database(database_url)


def test_inputs_go_when_the_job_ends_and_results_when_retention_ends(expiring_stack):
    client = expiring_stack.client()
    png = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(png, "PNG")
    result = client.images.edit(
        model="tiny-qwen-image-edit", image=("a.png", png.getvalue(), "image/png"), prompt="x", response_format="url"
    )
    job_id = result.data[0].url.rsplit("/", 2)[-2]
    assert expiring_stack.stored_keys(f"outputs/{job_id}/")
    wait_until(lambda: not expiring_stack.stored_keys(f"inputs/{job_id}/"))

    def expired():
        response = httpx.get(
            f"{expiring_stack.base_url}/images/{job_id}/content",
            headers={"authorization": f"Bearer {client.api_key}"},
        )
        return response if response.status_code == 404 else None

    response = wait_until(expired, timeout_s=RETENTION_S + 30)
    error = response.json()["error"]
    assert error["code"] == "content_expired" and "expired at" in error["message"]
    assert not expiring_stack.stored_keys(f"outputs/{job_id}/")
    # The job itself is still there, as the record of what ran.
    job = httpx.get(f"{expiring_stack.base_url}/images/{job_id}", headers={"authorization": f"Bearer {client.api_key}"})
    assert job.status_code == 200 and job.json()["status"] == "completed"


def test_a_killed_worker_shows_as_lost(expiring_stack):
    before = {w["id"] for w in _workers(expiring_stack)}
    expiring_stack.start_worker("doomed")
    doomed = wait_until(
        lambda: [w for w in _workers(expiring_stack) if w["id"] not in before and w["role"] == "generation"]
    )[0]
    assert doomed["state"] == "online"
    expiring_stack.kill("doomed")
    lost = wait_until(lambda: [w for w in _workers(expiring_stack) if w["id"] == doomed["id"] and w["state"] == "lost"])
    assert lost[0]["seconds_since_heartbeat"] > 2 * lost[0]["heartbeat_interval_s"]
