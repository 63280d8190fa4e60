"""What a webhook delivery carries: the event body and its Standard Webhooks signature
(`webhook-id`, `webhook-timestamp`, `webhook-signature`), the scheme the official openai SDK's
`client.webhooks.unwrap` verifies. Pure functions. Which endpoint and secret a key's events use
is a settings look-up: `Settings.default_webhook_url_for` and `Settings.signing_secret_for`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime

USER_AGENT = "Darkroom-Webhooks/0.1"


def event_body(event_id: str, event_type: str, created_at: datetime, job_id: str) -> bytes:
    """The payload, compact, as bytes: exactly what is signed is what is sent."""
    event = {
        "id": event_id,
        "object": "event",
        "created_at": int(created_at.timestamp()),
        "type": event_type,
        "data": {"id": job_id},
    }
    return json.dumps(event, separators=(",", ":")).encode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed by the secret's decoded bytes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secret: str, webhook_id: str, body: bytes, *, timestamp: int) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
