"""The embedded default: `darkroom run` with nothing configured serves the API and a worker on a
SQLite file, a local blob directory and a filesystem broker, all under the data dir."""

from __future__ import annotations

import base64
import io
import os

import openai
import pytest
from PIL import Image

from bench.processes import WORKER_READY, free_port, spawn, stop, wait_for_log, wait_for_port


@pytest.fixture
def embedded(tmp_path, models_dir):
    env = {key: value for key, value in os.environ.items() if not key.startswith("DARKROOM_")}
    env |= {"DARKROOM_DATA_DIR": str(tmp_path / "data"), "DARKROOM_MODELS_DIR": str(models_dir)}
    port = free_port()
    log = tmp_path / "run.log"
    process = spawn(["run", "--port", str(port)], env, log)
    try:
        wait_for_port(port, process)
        wait_for_log(log, WORKER_READY, process)
        yield f"http://127.0.0.1:{port}/v1", tmp_path / "data", log
    finally:
        stop(process)


def test_core_flow_on_the_embedded_default(embedded):
    base_url, data_dir, log = embedded
    assert "API is open" in log.read_text()
    client = openai.OpenAI(base_url=base_url, api_key="anything", max_retries=0)

    video = client.videos.create_and_poll(model="tiny-wan", prompt="embedded", seconds="1", poll_interval_ms=50)
    assert (video.status, video.progress) == ("completed", 100)
    assert client.videos.download_content(video.id).read()[4:8] == b"ftyp"

    image = client.images.generate(model="tiny-qwen-image", prompt="embedded", size="32x32")
    assert Image.open(io.BytesIO(base64.b64decode(image.data[0].b64_json))).size == (32, 32)

    assert (data_dir / "darkroom.db").is_file()
    assert (data_dir / "blobs" / "outputs" / video.id / "1" / "video.mp4").is_file()
    assert [v.id for v in client.videos.list()] == [video.id]
