"""The webhook settings: secrets are checked at start-up, and each key's endpoint and secret are
looked up by the fingerprint that jobs record."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from darkroom.keys import KeyWebhook, owner_of_key
from darkroom.settings import Settings
from tests.unit.webhook_support import KEY, OWNER, SECRET, new_secret


@pytest.mark.parametrize(
    "bad", ["plain-text", "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()]
)
def test_a_malformed_webhook_secret_is_refused_at_start_up(bad):
    with pytest.raises(ValidationError, match="whsec_"):
        Settings(webhook_secret=bad)
    with pytest.raises(ValidationError, match="whsec_"):
        Settings(webhook_keys={KEY: {"secret": bad}})


def test_blank_secret_means_none_and_allowed_hosts_must_parse():
    assert Settings(webhook_secret="  ").webhook_secret is None
    assert Settings(
        webhook_allowed_hosts="127.0.0.1, 10.0.0.0/8,hooks.local"
    ).webhook_allowed_hosts == ("127.0.0.1", "10.0.0.0/8", "hooks.local")
    with pytest.raises(ValidationError, match="10.0.0.0/33"):
        Settings(webhook_allowed_hosts="10.0.0.0/33")


def test_a_key_signs_with_its_own_secret_else_the_default():
    own = new_secret()
    settings = Settings(
        webhook_secret=SECRET, webhook_keys={KEY: KeyWebhook(url="https://a.example/h", secret=own)}
    )
    assert (settings.signing_secret_for(OWNER), settings.default_webhook_url_for(OWNER)) == (
        own,
        "https://a.example/h",
    )
    assert (
        settings.signing_secret_for(owner_of_key("sk-other")),
        settings.default_webhook_url_for("x"),
    ) == (SECRET, None)
    assert (
        Settings(webhook_keys={KEY: KeyWebhook(url="https://a.example/h")}).signing_secret_for(OWNER)
        is None
    )
