"""API keys as Darkroom records them, and what each key may configure for its webhooks: a job
names its owner by a fingerprint of the key (`owner_of_key`), and a key may have its own default
endpoint and signing secret (`KeyWebhook`, in `DARKROOM_WEBHOOK_KEYS`)."""

from __future__ import annotations

import base64
import binascii
import hashlib

from pydantic import BaseModel, field_validator

# Standard Webhooks: a secret is "whsec_" + base64 of 24 to 64 random bytes.
_MIN_SECRET_BYTES = 24
_MAKE_A_SECRET = (
    "make one with: python -c \"import base64, secrets; "
    "print('whsec_' + base64.b64encode(secrets.token_bytes(32)).decode())\""
)


def webhook_secret(value: str | None) -> str | None:
    """A `whsec_` secret as receivers' SDKs decode it; an empty value means none is set."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not value.startswith("whsec_"):
        raise ValueError(f"a webhook secret must be 'whsec_' followed by base64; {_MAKE_A_SECRET}")
    try:
        key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise ValueError(f"the part of a webhook secret after 'whsec_' is not base64; {_MAKE_A_SECRET}") from None
    if len(key) < _MIN_SECRET_BYTES:
        raise ValueError(
            f"a webhook secret must encode at least {_MIN_SECRET_BYTES} random bytes (this one has "
            f"{len(key)}); {_MAKE_A_SECRET}"
        )
    return value


def owner_of_key(api_key: str) -> str:
    """A job records a fingerprint of the key that made it, never the key itself."""
    return "key_" + hashlib.sha256(api_key.encode()).hexdigest()[:24]


class KeyWebhook(BaseModel):
    """An API key's default webhook endpoint and the secret its deliveries are signed with."""

    url: str | None = None
    secret: str | None = None

    @field_validator("url")
    @classmethod
    def _blank_url_is_none(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return value.strip()

    @field_validator("secret")
    @classmethod
    def _secret_format(cls, value: str | None) -> str | None:
        return webhook_secret(value)
