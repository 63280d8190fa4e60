"""Where a job's terminal event is POSTed: the request's own `webhook_url`, else its key's default
endpoint, else nowhere. Checked when the job is accepted, so no job carries a URL it cannot sign
for or may not call."""

from __future__ import annotations

from api.errors import bad_request
from darkroom.outbound import UnsafeURL, check_url
from darkroom.settings import Settings


def webhook_url_for(settings: Settings, owner: str, requested: str | None) -> str | None:
    url = requested or settings.default_webhook_url_for(owner)
    if url is None:
        return None
    if settings.signing_secret_for(owner) is None:
        raise bad_request(
            "Webhooks are not configured on this deployment: there is no signing secret for this key "
            "(DARKROOM_WEBHOOK_SECRET or DARKROOM_WEBHOOK_KEYS).",
            param="webhook_url",
            code="webhooks_not_configured",
        )
    try:
        check_url(url, allow_http=settings.webhook_allow_http, allowed_hosts=settings.webhook_allowed_hosts)
    except UnsafeURL as error:
        raise bad_request(f"Invalid webhook_url: {error}", param="webhook_url", code="invalid_webhook_url") from None
    return url
