"""Signatures the official SDK verifies: every event type unwraps, and any tampering is caught."""

from __future__ import annotations

import datetime as dt
import json
import time

import openai
import pytest

from tests.unit.webhook_support import SDK, SECRET, new_secret
from worker.webhook_signing import event_body, signed_headers


def _signed(
    event_type: str = "video.completed", secret: str = SECRET
) -> tuple[bytes, dict[str, str]]:
    body = event_body("evt_1", event_type, dt.datetime.now(dt.UTC), "video_1")
    return body, signed_headers(secret, "evt_1", body, timestamp=int(time.time()))


@pytest.mark.parametrize(
    "event_type",
    ["video.completed", "video.failed", "video.cancelled", "image.completed", "image.failed"],
)
def test_the_sdk_verifies_and_unwraps_every_darkroom_event_type(event_type):
    body, headers = _signed(event_type)
    unwrapped = SDK.webhooks.unwrap(body, headers, secret=SECRET)
    # Not in the SDK's union of event classes, so it comes back loosely built: read it by `type`.
    assert (unwrapped.id, unwrapped.type, unwrapped.data.id, unwrapped.object) == (
        "evt_1",
        event_type,
        "video_1",
        "event",
    )
    assert json.loads(body) == {
        "id": "evt_1",
        "object": "event",
        "created_at": unwrapped.created_at,
        "type": event_type,
        "data": {"id": "video_1"},
    }


@pytest.mark.parametrize(
    "tamper",
    [
        lambda body, headers, secret: (body.replace(b"video_1", b"video_2"), headers, secret),
        lambda body, headers, secret: (body, {**headers, "webhook-id": "evt_2"}, secret),
        lambda body, headers, secret: (
            body,
            {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)},
            secret,
        ),
        lambda body, headers, secret: (body, headers, new_secret()),
    ],
    ids=["body", "id", "timestamp", "secret"],
)
def test_the_sdk_rejects_a_tampered_delivery(tamper):
    body, headers, secret = tamper(*_signed(), SECRET)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        SDK.webhooks.unwrap(body, headers, secret=secret)
