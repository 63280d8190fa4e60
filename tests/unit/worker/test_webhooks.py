"""Webhooks: signatures the official SDK verifies, the backoff schedule, the outbound URL guard,
and what one delivery attempt does to the event's row, against a real receiver on a local port,
on SQLite and on the machine's Postgres (schema built by the migrations)."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import random
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine, event, select, update

from darkroom.outbound import UnsafeURL, check_url
from darkroom.settings import KeyWebhook, Settings, owner_of_key
from storage import jobs
from storage.db import make_engine, make_session_factory, upgrade_schema
from storage.models import EventStatus, Job, JobKind, WebhookDelivery, WebhookEvent
from worker.webhook_signing import USER_AGENT, event_body, signed_headers
from worker.webhooks import deliver, retry_delay_s


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


SECRET = new_secret()
KEY = "sk-unit-a"
OWNER = owner_of_key(KEY)
SDK = openai.OpenAI(api_key="unused")


# --- Signatures ------------------------------------------------------------------------------


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


def test_backoff_doubles_to_its_cap_with_half_to_full_jitter():
    rng = random.Random(7)
    for failed in range(1, 40):
        nominal = min(3600.0, 5.0 * 2 ** (failed - 1))
        delays = [retry_delay_s(failed, base_s=5, max_s=3600, rng=rng) for _ in range(200)]
        assert all(nominal / 2 <= delay <= nominal for delay in delays)
        assert max(delays) - min(delays) > nominal / 4  # really jittered
    assert retry_delay_s(10_000, base_s=5, max_s=3600) <= 3600


# --- Settings and secrets ------------------------------------------------------------------


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


# --- The outbound URL guard ----------------------------------------------------------------


def _check(url: str, *, allow_http: bool = False, allowed: tuple[str, ...] = ()):
    return check_url(url, allow_http=allow_http, allowed_hosts=allowed)


@pytest.mark.parametrize(
    ("url", "allow_http", "reason"),
    [
        ("http://93.184.216.34/hook", False, "DARKROOM_WEBHOOK_ALLOW_HTTP"),
        ("ftp://93.184.216.34/hook", True, "https://"),
        ("https://127.0.0.1/hook", False, "loopback"),
        ("http://localhost:8080/hook", True, "loopback"),
        ("https://10.1.2.3/hook", False, "private"),
        ("https://169.254.169.254/latest/meta-data", False, "link-local"),
        ("https://[::1]/hook", False, "loopback"),
        ("https://[::ffff:127.0.0.1]/hook", False, "loopback"),
        ("https://[::ffff:169.254.169.254]/hook", False, "link-local"),
        ("https://0.0.0.0/hook", False, "unspecified"),
        ("https://100.64.0.1/hook", False, "non-public"),
        ("https://224.0.0.1/hook", False, "multicast"),
        ("https://user:pw@93.184.216.34/hook", False, "credentials"),
        ("https:///hook", False, "no host"),
        ("https://nowhere.invalid/hook", False, "does not resolve"),
        ("https://93.184.216.34:99999/hook", False, "port"),
    ],
)
def test_unsafe_urls_are_refused_with_the_reason(url, allow_http, reason):
    with pytest.raises(UnsafeURL, match=reason):
        _check(url, allow_http=allow_http)


def test_a_refusal_names_the_setting_that_would_allow_it():
    with pytest.raises(UnsafeURL, match="DARKROOM_WEBHOOK_ALLOWED_HOSTS"):
        _check("https://10.1.2.3/hook")


def test_allow_listed_hosts_and_cidrs_pass():
    assert _check("https://93.184.216.34/hook").addresses == (
        ipaddress.ip_address("93.184.216.34"),
    )
    assert (
        _check("http://localhost:8080/hook", allow_http=True, allowed=("localhost",)).port == 8080
    )
    assert _check("https://10.1.2.3/hook", allowed=("10.0.0.0/8",)).hostname == "10.1.2.3"
    assert _check("https://[::ffff:127.0.0.1]/hook", allowed=("127.0.0.1",))
    with pytest.raises(UnsafeURL):
        _check("https://10.1.2.3/hook", allowed=("10.9.0.0/16", "other.local"))


def test_a_host_with_any_internal_address_is_refused(monkeypatch):
    answers = {"mixed.example": ["93.184.216.34", "10.0.0.7"], "public.example": ["93.184.216.34"]}
    _fake_dns(monkeypatch, answers)
    with pytest.raises(UnsafeURL, match="The host 'mixed.example' resolves to a private address"):
        _check("https://mixed.example/hook")
    assert _check("https://public.example/hook").hostname == "public.example"


def test_a_checked_url_pins_the_vetted_address_and_keeps_the_host(monkeypatch):
    _fake_dns(monkeypatch, {"hooks.example.test": ["2001:db8::5"]})
    checked = _check(
        "https://hooks.example.test:8443/a/b?c=1#frag", allowed=("hooks.example.test",)
    )
    pinned = checked.pinned(checked.addresses[0])
    assert (pinned.url, pinned.host_header, pinned.sni_hostname) == (
        "https://[2001:db8::5]:8443/a/b?c=1",
        "hooks.example.test:8443",
        "hooks.example.test",
    )


def _fake_dns(monkeypatch, answers: dict[str, list[str]]) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
            for address in answers[host]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


# --- A receiver on a local port ------------------------------------------------------------


@dataclass
class Receiver:
    """Answers each POST with the next of `statuses` (the last one repeats), after `delay_s`."""

    statuses: list[int]
    delay_s: float = 0.0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    tls: ssl.SSLContext | None = None
    server_names: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses[min(len(receiver.requests), len(receiver.statuses)) - 1]
                time.sleep(receiver.delay_s)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("location", f"http://127.0.0.1:{receiver.port}/elsewhere")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if self.tls is not None:
            self.tls.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hook?tenant=a"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(*statuses: int, delay_s: float = 0.0, tls: ssl.SSLContext | None = None) -> Receiver:
        started.append(Receiver(list(statuses), delay_s, tls=tls))
        return started[-1]

    yield start
    for one in started:
        one.close()


# --- One delivery attempt, and what it leaves in the database ------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def sessions(request, tmp_path):
    url = (
        f"sqlite:///{tmp_path / 'webhooks.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    upgrade_schema(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


def _settings(**overrides) -> Settings:
    values = {
        "webhook_secret": SECRET,
        "webhook_allow_http": True,
        "webhook_allowed_hosts": ("127.0.0.1",),
        "webhook_timeout_s": 1.0,
        "webhook_backoff_base_s": 5.0,
        "webhook_backoff_max_s": 60.0,
    }
    return Settings(**(values | overrides))


def _completed_job_event(sessions, url: str, owner: str = OWNER) -> str:
    """A video job with a webhook URL, run to completion: its terminal event, as the worker leaves it."""
    with sessions() as session:
        job_id = jobs.new_job_id(JobKind.VIDEO)
        jobs.create(
            session, job_id=job_id, kind=JobKind.VIDEO, model="tiny-wan", owner=owner, params={}
        )
        session.commit()
        session.execute(update(Job).where(Job.id == job_id).values(webhook_url=url))
        session.commit()
        jobs.claim(session, job_id, "w1")
        jobs.complete(
            session,
            job_id,
            output_keys=["k"],
            output_meta={},
            timings={},
            retention=dt.timedelta(days=1),
        )
        return session.scalars(select(WebhookEvent.id).where(WebhookEvent.job_id == job_id)).one()


def _state(sessions, event_id: str) -> tuple[WebhookEvent, list[WebhookDelivery]]:
    with sessions() as session:
        found = session.get(WebhookEvent, event_id)
        history = list(
            session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.event_id == event_id)
                .order_by(WebhookDelivery.attempt)
            )
        )
        return found, history


def _make_due(sessions, event_id: str) -> None:
    with sessions() as session:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == event_id)
            .values(next_attempt_at=jobs.now())
        )
        session.commit()


def test_a_2xx_delivers_a_signed_event_once(sessions, receiver):
    hook = receiver(204)
    event_id = _completed_job_event(sessions, hook.url)
    deliver(_settings(), sessions, event_id)

    found, history = _state(sessions, event_id)
    assert (found.status, found.attempts, found.next_attempt_at) == (EventStatus.DELIVERED, 1, None)
    assert found.finished_at is not None
    assert [(row.attempt, row.status_code, row.error) for row in history] == [(1, 204, None)]
    assert history[0].latency_ms >= 0
    [(headers, body)] = hook.requests
    unwrapped = SDK.webhooks.unwrap(body, headers, secret=SECRET)
    assert (unwrapped.id, unwrapped.type, unwrapped.data.id) == (
        event_id,
        "video.completed",
        found.job_id,
    )
    assert (headers["webhook-id"], headers["user-agent"], headers["content-type"]) == (
        event_id,
        USER_AGENT,
        "application/json",
    )
    assert headers["host"] == f"127.0.0.1:{hook.port}"

    deliver(_settings(), sessions, event_id)  # a duplicate message: nothing is sent
    assert len(hook.requests) == 1


def test_a_5xx_schedules_a_jittered_retry_and_the_retries_carry_the_same_id(sessions, receiver):
    hook = receiver(500, 503, 200)
    event_id = _completed_job_event(sessions, hook.url)
    before = jobs.now()
    deliver(_settings(), sessions, event_id)

    found, _ = _state(sessions, event_id)
    assert (found.status, found.attempts, found.dispatched_at, found.finished_at) == (
        EventStatus.PENDING,
        1,
        None,
        None,
    )
    assert (
        before + dt.timedelta(seconds=2.5)
        <= found.next_attempt_at
        <= jobs.now() + dt.timedelta(seconds=5)
    )

    deliver(_settings(), sessions, event_id)  # not due yet: nothing is sent
    assert len(hook.requests) == 1
    for _ in range(2):
        _make_due(sessions, event_id)
        deliver(_settings(), sessions, event_id)

    found, history = _state(sessions, event_id)
    assert (found.status, found.attempts) == (EventStatus.DELIVERED, 3)
    assert [(row.attempt, row.status_code) for row in history] == [(1, 500), (2, 503), (3, 200)]
    assert {headers["webhook-id"] for headers, _ in hook.requests} == {event_id}
    for headers, body in hook.requests:
        SDK.webhooks.verify_signature(body, headers, secret=SECRET)


def test_410_gone_ends_the_event_without_retries(sessions, receiver):
    hook = receiver(410)
    event_id = _completed_job_event(sessions, hook.url)
    deliver(_settings(), sessions, event_id)
    found, history = _state(sessions, event_id)
    assert (found.status, found.next_attempt_at, [row.status_code for row in history]) == (
        EventStatus.GONE,
        None,
        [410],
    )


def test_a_failure_past_the_retry_window_fails_the_event(sessions, receiver):
    hook = receiver(500)
    event_id = _completed_job_event(sessions, hook.url)
    deliver(_settings(webhook_retry_window_s=1.0), sessions, event_id)
    found, _ = _state(sessions, event_id)
    assert (found.status, found.attempts, found.next_attempt_at) == (EventStatus.FAILED, 1, None)
    assert found.finished_at is not None


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ("slow", "Timed out after 0.3 s waiting for the response."),
        ("redirect", "not followed"),
        ("closed", "ConnectError"),
    ],
)
def test_no_answer_or_a_redirect_is_a_failed_attempt_with_its_error(
    sessions, receiver, answer, error
):
    if answer == "closed":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
        hook = None
    else:
        hook = receiver(
            302 if answer == "redirect" else 200, delay_s=1.0 if answer == "slow" else 0.0
        )
        url = hook.url
    event_id = _completed_job_event(sessions, url)
    deliver(_settings(webhook_timeout_s=0.3), sessions, event_id)

    found, [row] = _state(sessions, event_id)
    assert (found.status, found.attempts) == (EventStatus.PENDING, 1)
    assert error in row.error
    assert row.status_code == (302 if answer == "redirect" else None)
    if hook is not None:
        assert len(hook.requests) == 1  # the redirect's target was never asked


def test_a_url_refused_at_delivery_is_retried_and_never_sent(sessions, receiver):
    hook = receiver(200)
    event_id = _completed_job_event(sessions, hook.url)
    deliver(_settings(webhook_allowed_hosts=()), sessions, event_id)
    found, [row] = _state(sessions, event_id)
    assert (found.status, row.status_code, hook.requests) == (EventStatus.PENDING, None, [])
    assert row.error.startswith("Refused before sending: '127.0.0.1' is a loopback address")


def test_without_a_signing_secret_the_event_fails_unsent(sessions, receiver):
    hook = receiver(200)
    event_id = _completed_job_event(sessions, hook.url)
    deliver(_settings(webhook_secret=None), sessions, event_id)
    found, [row] = _state(sessions, event_id)
    assert (found.status, hook.requests) == (EventStatus.FAILED, [])
    assert "No signing secret" in row.error


def test_a_key_with_its_own_secret_signs_with_it(sessions, receiver):
    hook = receiver(200)
    own = new_secret()
    event_id = _completed_job_event(sessions, hook.url)
    deliver(_settings(webhook_keys={KEY: KeyWebhook(secret=own)}), sessions, event_id)
    [(headers, body)] = hook.requests
    SDK.webhooks.verify_signature(body, headers, secret=own)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        SDK.webhooks.verify_signature(body, headers, secret=SECRET)


def test_two_copies_of_one_message_send_one_request(sessions, receiver):
    hook = receiver(200, delay_s=0.5)
    event_id = _completed_job_event(sessions, hook.url)
    copies = [
        threading.Thread(target=deliver, args=(_settings(), sessions, event_id)) for _ in range(2)
    ]
    for copy in copies:
        copy.start()
    for copy in copies:
        copy.join()
    found, history = _state(sessions, event_id)
    assert (len(hook.requests), found.status, len(history)) == (1, EventStatus.DELIVERED, 1)


def test_an_unreachable_address_falls_through_to_the_next_vetted_one(
    sessions, receiver, monkeypatch
):
    hook = receiver(200)  # listens on 127.0.0.1 only; nothing answers on 127.0.0.2
    _fake_dns(monkeypatch, {"two.example.test": ["127.0.0.2", "127.0.0.1"]})
    event_id = _completed_job_event(sessions, f"http://two.example.test:{hook.port}/hook")
    deliver(_settings(webhook_allowed_hosts=("127.0.0.0/8",)), sessions, event_id)
    found, [row] = _state(sessions, event_id)
    assert (found.status, row.status_code) == (EventStatus.DELIVERED, 200)
    assert hook.requests[0][0]["host"] == f"two.example.test:{hook.port}"


def test_https_delivery_goes_to_the_vetted_address_with_the_hostname_for_tls(
    sessions, receiver, monkeypatch, tmp_path
):
    server_tls, client_tls = _tls_pair("hooks.example.test", tmp_path)
    hook = receiver(200, tls=server_tls)
    _fake_dns(monkeypatch, {"hooks.example.test": ["127.0.0.1"]})
    event_id = _completed_job_event(sessions, f"https://hooks.example.test:{hook.port}/hook")
    deliver(
        _settings(webhook_allowed_hosts=("127.0.0.0/8",)),
        sessions,
        event_id,
        tls_context=client_tls,
    )

    found, [row] = _state(sessions, event_id)
    assert (found.status, row.status_code, row.error) == (EventStatus.DELIVERED, 200, None)
    assert hook.server_names == ["hooks.example.test"]
    assert hook.requests[0][0]["host"] == f"hooks.example.test:{hook.port}"


def _tls_pair(hostname: str, directory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for `hostname`: the server's context, and a client's that trusts it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    today = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(today - dt.timedelta(days=1))
        .not_valid_after(today + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    return server, ssl.create_default_context(cafile=str(cert_path))


# --- The events endpoint -------------------------------------------------------------------


def test_the_events_endpoint_shows_each_attempt_in_three_queries(tmp_path, receiver):
    from api.app import create_app

    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade_schema(url)
    settings = _settings(data_dir=tmp_path, database_url=url, api_keys=(KEY, "sk-unit-b"))
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    hook = receiver(500, 200)
    event_id = _completed_job_event(sessions, hook.url)
    deliver(settings, sessions, event_id)
    _make_due(sessions, event_id)
    deliver(settings, sessions, event_id)
    job_id = _state(sessions, event_id)[0].job_id

    statements: list[str] = []

    def count(_connection, _cursor, statement, *_args) -> None:
        statements.append(statement)

    with TestClient(create_app(settings)) as api:
        event.listen(Engine, "before_cursor_execute", count)
        try:
            answer = api.get(
                f"/v1/videos/{job_id}/events", headers={"authorization": f"Bearer {KEY}"}
            )
        finally:
            event.remove(Engine, "before_cursor_execute", count)
        other = api.get(
            f"/v1/videos/{job_id}/events", headers={"authorization": "Bearer sk-unit-b"}
        )
        as_image = api.get(
            f"/v1/images/{job_id}/events", headers={"authorization": f"Bearer {KEY}"}
        )

    engine.dispose()
    assert answer.status_code == 200, answer.text
    assert len(statements) == 3  # the job, its events, their deliveries
    [listed] = answer.json()["data"]
    delivery = listed["delivery"]
    assert (listed["id"], listed["object"], listed["type"], listed["data"]) == (
        event_id,
        "event",
        "video.completed",
        {"id": job_id},
    )
    assert (
        delivery["url"],
        delivery["status"],
        delivery["attempts"],
        delivery["next_attempt_at"],
    ) == (hook.url, "delivered", 2, None)
    assert [(h["attempt"], h["status_code"], h["error"]) for h in delivery["history"]] == [
        (1, 500, None),
        (2, 200, None),
    ]
    assert delivery["finished_at"] >= listed["created_at"]
    assert (other.status_code, other.json()["error"]["code"]) == (404, "not_found")
    assert as_image.status_code == 404
