"""Fetching an image URL a request names (`input_reference[image_url]`) while the client waits.

It goes through darkroom/outbound.py exactly as a webhook does: public addresses only (unless
allow-listed), no redirects, no proxy, the connection pinned to the vetted address. Two things keep
a hostile host from holding the API:

- One wall-clock deadline, `DARKROOM_IMAGE_URL_TIMEOUT_S`, over all of it: the DNS look-up,
  connecting, the headers and the body. The download runs on the event loop, where the deadline
  cancels it wherever it waits; the look-up, which blocks, runs on threads of its own and is
  abandoned at the deadline.
- `FetchSlots`: at most `DARKROOM_IMAGE_URL_MAX_FETCHES` fetches at once, and
  `DARKROOM_IMAGE_URL_MAX_FETCHES_PER_KEY` for one key; past either the request is refused at
  once (503, 429) rather than queued. A fetch waits on no thread of the pool the other routes
  need, so `/health` and every other route keep answering while fetches hang.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import anyio

from api.errors import APIError, bad_request
from darkroom.outbound import CheckedURL, UnsafeURL, check_url, safe_client, send_pinned
from darkroom.settings import Settings

URL_PARAM = "input_reference.image_url"
# Far longer than any real image URL (signed CDN URLs run to a few kilobytes); a data: URL is
# not fetched and has its own limit.
MAX_URL_CHARS = 8192
_HEADERS = {"accept": "image/png, image/jpeg, image/webp", "user-agent": "Darkroom"}


class FetchSlots:
    """The fetches in flight, overall and per key. Taken and given back on the event loop only,
    so the counts need no lock."""

    def __init__(self, settings: Settings) -> None:
        self.total = settings.image_url_max_fetches
        self.per_key = settings.image_url_max_fetches_per_key
        # A slot frees within one fetch's deadline.
        self.retry_after_s = min(120, math.ceil(settings.image_url_timeout_s))
        self.in_flight: Counter[str] = Counter()
        # The DNS look-ups' own threads, one per slot at most.
        self.resolvers = anyio.CapacityLimiter(self.total)

    @contextmanager
    def taken(self, owner: str) -> Iterator[None]:
        retry = {"Retry-After": str(self.retry_after_s)}
        if self.in_flight[owner] >= self.per_key:
            raise APIError(
                429,
                f"This key has {self.in_flight[owner]} image URLs being fetched, the most allowed at "
                f"once. Retry after {self.retry_after_s} s.",
                param=URL_PARAM,
                code="too_many_image_url_fetches",
                type="requests",
                headers=retry,
            )
        if self.in_flight.total() >= self.total:
            raise APIError(
                503,
                f"The server is fetching {self.in_flight.total()} image URLs, the most it fetches at "
                f"once. Retry after {self.retry_after_s} s.",
                param=URL_PARAM,
                code="image_url_fetches_busy",
                type="server_error",
                headers=retry,
            )
        self.in_flight[owner] += 1
        try:
            yield
        finally:
            self.in_flight[owner] -= 1
            if not self.in_flight[owner]:
                del self.in_flight[owner]


async def fetch_image(url: str, settings: Settings, slots: FetchSlots, owner: str, *, param: str = URL_PARAM) -> bytes:
    """GET `url` within the byte limit and the deadline, or an APIError saying what went wrong."""
    import httpx  # here, as in darkroom/outbound.py: only a request with a URL needs it

    if len(url) > MAX_URL_CHARS:
        raise bad_request(
            f"{param} is {len(url)} characters long; an image URL is at most {MAX_URL_CHARS}.",
            param=param,
            code="invalid_image_url",
        )
    limit_s = settings.image_url_timeout_s
    timed_out = bad_request(f"Fetching {param} took longer than {limit_s:g} s.", param=param, code="image_url_timeout")
    with slots.taken(owner):
        try:
            async with asyncio.timeout(limit_s):
                checked = await anyio.to_thread.run_sync(
                    partial(_checked, url, settings, param), abandon_on_cancel=True, limiter=slots.resolvers
                )
                return await _download(checked, settings, param)
        except TimeoutError:
            raise timed_out from None
        except httpx.InvalidURL as error:
            raise bad_request(f"Invalid {param}: {error}.", param=param, code="invalid_image_url") from None
        except httpx.HTTPError as error:
            raise bad_request(
                f"Could not fetch {param}: {error or type(error).__name__}.", param=param, code="image_url_unreachable"
            ) from None


def _checked(url: str, settings: Settings, param: str) -> CheckedURL:
    try:
        return check_url(
            url,
            allow_http=settings.image_url_allow_http,
            allowed_hosts=settings.image_url_allowed_hosts,
            allow_http_setting="DARKROOM_IMAGE_URL_ALLOW_HTTP",
            allowed_hosts_setting="DARKROOM_IMAGE_URL_ALLOWED_HOSTS",
        )
    except UnsafeURL as error:
        raise bad_request(f"Invalid {param}: {error}", param=param, code="invalid_image_url") from None


async def _download(checked: CheckedURL, settings: Settings, param: str) -> bytes:
    max_bytes = settings.max_upload_bytes
    too_large = APIError(
        413, f"The image at {param} is over the {max_bytes} byte limit.", param=param, code="file_too_large"
    )
    async with (
        safe_client() as client,
        send_pinned(client, "GET", checked, headers=_HEADERS) as response,
    ):
        _refuse_unless_ok(response, param)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise too_large
        data = bytearray()
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) > max_bytes:
                raise too_large
        return bytes(data)


def _refuse_unless_ok(response, param: str) -> None:
    if response.is_redirect:
        # Not followed: the place it points to was never checked (see darkroom/outbound.py).
        raise bad_request(
            f"{param} answered with a redirect (HTTP {response.status_code}) to "
            f"'{response.headers.get('location', '')}'; redirects are not followed. Give the final URL.",
            param=param,
            code="image_url_unreachable",
        )
    if response.status_code != 200:
        raise bad_request(
            f"{param} answered HTTP {response.status_code}, not 200 with an image.",
            param=param,
            code="image_url_unreachable",
        )
