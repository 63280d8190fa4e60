"""Videos through the official SDK: create and poll, download a real MP4, retrieve, list with
auto-pagination, delete, and tenant isolation."""

from __future__ import annotations

import io
import time

import av
import httpx
import openai
import pytest
from PIL import Image
from sqlalchemy import create_engine, select

from storage.models import Job
from tests.integration.conftest import KEY_A


def _probe(mp4: bytes) -> tuple[str, int, float, int, int]:
    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return stream.codec_context.name, frames, float(stream.average_rate), stream.width, stream.height


def test_create_and_poll_then_download_a_playable_mp4(client):
    video = client.videos.create_and_poll(model="tiny-wan", prompt="a red fox in snow", size="64x32", seconds="2")
    assert (video.status, video.progress, video.error) == ("completed", 100, None)
    assert (video.model, video.size, video.seconds, video.prompt) == ("tiny-wan", "64x32", "2", "a red fox in snow")
    assert video.completed_at >= video.created_at and video.expires_at > video.completed_at
    assert video.id.startswith("video_")

    mp4 = client.videos.download_content(video.id).read()
    # tiny-wan runs at 8 fps; 2 s is 16 frames, rounded up to Wan's 4k+1 rule: 17.
    assert _probe(mp4) == ("h264", 17, 8.0, 64, 32)
    assert client.videos.retrieve(video.id).model_dump() == video.model_dump()


def test_a_completed_job_records_its_stage_timings_and_media_facts(client, stack):
    video = client.videos.create_and_poll(model="tiny-wan", prompt="timed", size="32x32", seconds="1")
    engine = create_engine(stack.env["DARKROOM_DATABASE_URL"])
    with engine.connect() as connection:
        job = connection.execute(select(Job).where(Job.id == video.id)).one()
    engine.dispose()
    assert set(job.timings) == {
        "queue_wait", "load_inputs", "pipeline", "model.encode", "model.denoise", "model.denoise_per_step", "model.decode",
        "encode_output", "upload",
    }
    assert all(value >= 0 for value in job.timings.values())
    prefix = f"outputs/{video.id}/1"
    assert job.output_meta == {
        "fps": 8, "frames": 9, "width": 32, "height": 32,
        "thumbnail": {"key": f"{prefix}/thumbnail.webp", "frame": 4, "width": 32, "height": 32},
        "spritesheet": {
            "key": f"{prefix}/spritesheet.jpg", "columns": 3, "rows": 3, "tile_width": 32, "tile_height": 32,
            "frames": list(range(9)),
        },
    }
    # The MP4 first: it is the default variant.
    assert (job.attempts, job.output_keys) == (
        1, [f"{prefix}/video.mp4", f"{prefix}/thumbnail.webp", f"{prefix}/spritesheet.jpg"]
    )


def test_defaults_apply_when_size_and_seconds_are_omitted(client):
    video = client.videos.create_and_poll(model="tiny-wan", prompt="waves")
    assert (video.status, video.size, video.seconds) == ("completed", "64x64", "1")


def test_model_defaults_to_the_first_served_video_model(stack):
    response = httpx.post(
        f"{stack.base_url}/videos", json={"prompt": "clouds", "seconds": 1},
        headers={"authorization": f"Bearer {KEY_A}"},
    )
    assert response.status_code == 200, response.text
    assert (response.json()["model"], response.json()["seconds"]) == ("tiny-wan", "1")


def test_a_running_video_read_carries_poll_after_and_delete_cancels_it(client):
    # A job big enough to still be running when we look at it.
    slow = client.videos.create(
        model="tiny-wan", prompt="slow", size="256x256", seconds="8", extra_body={"num_inference_steps": 200}
    )
    raw = client.videos.with_raw_response.retrieve(slow.id)
    assert raw.parse().status in ("queued", "in_progress")
    # Progress is written from the step callback while it runs.
    deadline = time.monotonic() + 60
    while (running := client.videos.retrieve(slow.id)).progress == 0:
        assert running.status in ("queued", "in_progress") and time.monotonic() < deadline
        time.sleep(0.05)
    assert running.status == "in_progress" and 0 < running.progress < 100
    assert 50 <= int(raw.headers["openai-poll-after-ms"]) <= 2000
    with pytest.raises(openai.NotFoundError) as not_ready:
        client.videos.download_content(slow.id)
    assert not_ready.value.code == "content_not_ready"

    deleted = client.videos.delete(slow.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (slow.id, "video.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(slow.id)
    # The worker stops the cancelled job and is free: the next job completes.
    after = client.videos.create_and_poll(model="tiny-wan", prompt="next", seconds="1")
    assert after.status == "completed"


def test_list_pages_through_last_id_in_both_orders(stack):
    client = stack.client("sk-test-tenant-b")
    created = [client.videos.create(model="tiny-wan", prompt=f"list {i}", seconds="1").id for i in range(5)]
    newest_first = [video.id for video in client.videos.list(limit=2)]
    assert newest_first[:5] == created[::-1]
    oldest_first = [video.id for video in client.videos.list(limit=2, order="asc")]
    assert oldest_first[-5:] == created
    first_page = client.videos.list(limit=2)
    assert first_page.has_more and first_page.last_id == first_page.data[-1].id
    for video_id in created:
        client.videos.poll(video_id, poll_interval_ms=50)


def test_delete_removes_the_video_and_its_content(client):
    video = client.videos.create_and_poll(model="tiny-wan", prompt="to delete", seconds="1")
    assert client.videos.delete(video.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(video.id)
    assert video.id not in [v.id for v in client.videos.list(limit=100)]
    with pytest.raises(openai.NotFoundError):
        client.videos.delete(video.id)


def test_delete_removes_the_videos_stored_input_and_outputs(stack, client):
    first_frame = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(first_frame, "PNG")
    video = client.videos.create_and_poll(
        model="tiny-wan-i2v", prompt="to delete", seconds="1", input_reference=("f.png", first_frame.getvalue(), "image/png")
    )
    assert video.status == "completed"
    assert stack.stored_keys(f"inputs/{video.id}/") and stack.stored_keys(f"outputs/{video.id}/")
    client.videos.delete(video.id)
    assert stack.stored_keys(f"inputs/{video.id}/") == stack.stored_keys(f"outputs/{video.id}/") == []


def test_another_key_cannot_see_touch_or_list_a_video(client, other_client):
    video = client.videos.create_and_poll(model="tiny-wan", prompt="private", seconds="1")
    for call in (other_client.videos.retrieve, other_client.videos.download_content, other_client.videos.delete):
        with pytest.raises(openai.NotFoundError):
            call(video.id)
    assert video.id not in [v.id for v in other_client.videos.list(limit=100)]
    assert client.videos.retrieve(video.id).status == "completed"


def test_a_requests_guidance_scale_is_what_the_job_runs_with(client, stack):
    common = {"model": "tiny-wan", "prompt": "guided", "size": "16x16", "seconds": "1", "poll_interval_ms": 50}
    default = client.videos.create_and_poll(**common, extra_body={"seed": 7})
    unguided = client.videos.create_and_poll(**common, extra_body={"seed": 7, "guidance_scale": 1.0})
    assert (default.status, unguided.status) == ("completed", "completed")
    engine = create_engine(stack.env["DARKROOM_DATABASE_URL"])
    with engine.connect() as connection:
        params = dict(connection.execute(select(Job.id, Job.params).where(Job.id.in_([default.id, unguided.id]))).all())
    engine.dispose()
    assert (params[default.id]["guidance_scale"], params[unguided.id]["guidance_scale"]) == (5.0, 1.0)
