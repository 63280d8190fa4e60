"""LoRA adapters per request (`extra_body={"lora": [...]}`) through the live stack: names checked
at submit, adapters found, checked and activated by the worker for their job only."""

from __future__ import annotations

import base64
import io

import openai
import pytest
from PIL import Image

from pipelines.tiny.lora import build_tiny_lora
from tests.integration.conftest import KEY_A

# Generation on the tiny models takes well under a second; a job waits for the worker anyway.
SEED = {"seed": 5, "num_inference_steps": 3}


@pytest.fixture(scope="module")
def adapters(stack, models_dir) -> None:
    """Adapters where the worker looks by default: `<data dir>/loras` (no DARKROOM_LORA_DIR set).
    The worker resolves names per job, so adapters written after it started are found."""
    loras = stack.data_dir / "loras"
    build_tiny_lora(models_dir / "tiny-qwen-image", loras / "qwen" / "ink", seed=1)
    build_tiny_lora(models_dir / "tiny-wan", loras / "wan" / "waves", seed=2)
    build_tiny_lora(models_dir / "tiny-flux", loras / "flux" / "gold", seed=3)
    build_tiny_lora(models_dir / "tiny-qwen-image-edit", loras / "edit" / "paint", seed=4)


def _png(client, **extra) -> bytes:
    result = client.images.generate(
        model="tiny-qwen-image", prompt="a lighthouse", size="64x64", extra_body={**SEED, **extra}
    )
    return result.data[0].b64_json.encode()


def test_a_lora_job_differs_and_the_next_job_gets_the_base_output(client, adapters):
    base = _png(client)
    with_lora = _png(client, lora=[{"path_or_id": "qwen/ink", "scale": 0.8}])
    after = _png(client)
    assert with_lora != base
    assert after == base  # byte-identical PNG: the adapter was turned off after its job
    assert _png(client, lora=[{"path_or_id": "qwen/ink", "scale": 0.8}]) == with_lora


def test_a_video_with_a_lora_sent_as_multipart_completes(client, adapters):
    """`videos.create` always sends multipart: the list arrives as `lora[][path_or_id]` fields."""

    def video(**extra) -> bytes:
        made = client.videos.create_and_poll(
            model="tiny-wan", prompt="waves", size="32x32", seconds="1", extra_body={**SEED, **extra}
        )
        assert made.status == "completed", made.error
        return client.videos.download_content(made.id).read()

    base = video()
    assert video(lora=[{"path_or_id": "wan/waves", "scale": 1.5}]) != base
    assert video() == base


def test_an_edit_takes_a_lora(client, adapters):
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "teal").save(buffer, "PNG")
    image = ("in.png", buffer.getvalue(), "image/png")
    edit = client.images.edit(
        model="tiny-qwen-image-edit", image=image, prompt="paint it", size="32x32",
        extra_body={**SEED, "lora": [{"path_or_id": "edit/paint", "scale": 0.5}]},
    )  # fmt: skip
    assert Image.open(io.BytesIO(base64.b64decode(edit.data[0].b64_json))).size == (32, 32)


def test_a_missing_adapter_fails_the_job_with_lora_not_found(client, adapters):
    with pytest.raises(openai.BadRequestError) as error:
        _png(client, lora=[{"path_or_id": "qwen/no-such-style"}])
    assert (error.value.code, error.value.param) == ("lora_not_found", "lora")
    assert "qwen/no-such-style" in error.value.body["message"]
    video = client.videos.create_and_poll(
        model="tiny-wan", prompt="x", size="32x32", seconds="1",
        extra_body={"lora": [{"path_or_id": "someone/not-in-the-cache"}]},
    )  # fmt: skip
    assert (video.status, video.error.code) == ("failed", "lora_not_found")


def test_an_adapter_for_another_model_fails_the_job_not_the_worker(client, adapters):
    base = _png(client)
    with pytest.raises(openai.BadRequestError) as error:
        _png(client, lora=[{"path_or_id": "flux/gold"}])
    assert error.value.code == "lora_incompatible"
    assert "QwenImageTransformer2DModel" in error.value.body["message"]
    assert _png(client) == base  # same worker, same base weights


@pytest.mark.parametrize(
    "lora,param,code",
    [
        ([{"path_or_id": "../qwen/ink"}], "lora[0].path_or_id", "invalid_value"),
        ([{"path_or_id": "/etc/passwd"}], "lora[0].path_or_id", "invalid_value"),
        ([{"path_or_id": "qwen/ink"}, {"path_or_id": "a\\b"}], "lora[1].path_or_id", "invalid_value"),
        ([{"path_or_id": "qwen/ink", "scale": 9}], "lora[0].scale", "invalid_value"),
        ([{"path_or_id": "qwen/ink", "weight": 1}], "lora[0].weight", "unknown_parameter"),
        ([{"scale": 1}], "lora[0].path_or_id", "missing_required_parameter"),
        ([{"path_or_id": "qwen/ink"}, {"path_or_id": "qwen/ink"}], "lora[1].path_or_id", "invalid_value"),
        ([{"path_or_id": f"style-{i}"} for i in range(5)], "lora", "invalid_value"),
        ({"path_or_id": "qwen/ink"}, "lora", "invalid_value"),
    ],
)
def test_bad_lora_requests_are_refused_with_the_field_named(client, lora, param, code):
    with pytest.raises(openai.BadRequestError) as error:
        client.images.generate(model="tiny-qwen-image", prompt="x", size="32x32", extra_body={"lora": lora})
    assert (error.value.status_code, error.value.param, error.value.code) == (400, param, code)
    assert error.value.body["message"]


def test_multipart_requests_name_the_bad_item_too(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.videos.create(
            model="tiny-wan", prompt="x", size="32x32", seconds="1",
            extra_body={"lora": [{"path_or_id": "wan/waves"}, {"path_or_id": "wan/waves2", "scale": -7}]},
        )  # fmt: skip
    assert (error.value.param, error.value.code) == ("lora[1].scale", "invalid_value")


def test_a_compiling_deployment_refuses_lora(stack, spawn_api):
    client = openai.OpenAI(base_url=spawn_api({"DARKROOM_COMPILE_TRANSFORMER": "true"}), api_key=KEY_A)
    with pytest.raises(openai.BadRequestError) as error:
        client.images.generate(model="tiny-qwen-image", prompt="x", extra_body={"lora": [{"path_or_id": "qwen/ink"}]})
    assert (error.value.param, error.value.code) == ("lora", "unsupported_parameter")
