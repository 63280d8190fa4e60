"""What one webhook delivery attempt does, against a real receiver on a local port, and what it
leaves in the event's row, on SQLite and on the machine's Postgres (schema built by the
migrations); and the backoff schedule of its retries."""

from __future__ import annotations

import datetime as dt
import random
import socket
import ssl
import threading

import openai
import pytest

from darkroom.keys import KeyWebhook
from storage import jobs
from storage.models import EventStatus
from tests.unit.webhook_support import (
    KEY,
    SDK,
    SECRET,
    completed_job_event,
    event_state,
    fake_dns,
    make_due,
    new_secret,
    webhook_settings,
)
from worker.webhook_signing import USER_AGENT
from worker.webhooks import deliver, retry_delay_s


@pytest.fixture(params=["sqlite", "postgres"])
def database(request) -> str:
    return request.param


def test_backoff_doubles_to_its_cap_with_half_to_full_jitter():
    rng = random.Random(7)
    for failed in range(1, 40):
        nominal = min(3600.0, 5.0 * 2 ** (failed - 1))
        delays = [retry_delay_s(failed, base_s=5, max_s=3600, rng=rng) for _ in range(200)]
        assert all(nominal / 2 <= delay <= nominal for delay in delays)
        assert max(delays) - min(delays) > nominal / 4  # really jittered
    assert retry_delay_s(10_000, base_s=5, max_s=3600) <= 3600



def test_a_2xx_delivers_a_signed_event_once(sessions, receiver):
    hook = receiver(204)
    event_id = completed_job_event(sessions, hook.url)
    deliver(webhook_settings(), sessions, event_id)

    found, history = event_state(sessions, event_id)
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

    deliver(webhook_settings(), sessions, event_id)  # a duplicate message: nothing is sent
    assert len(hook.requests) == 1


def test_a_5xx_schedules_a_jittered_retry_and_the_retries_carry_the_same_id(sessions, receiver):
    hook = receiver(500, 503, 200)
    event_id = completed_job_event(sessions, hook.url)
    before = jobs.now()
    deliver(webhook_settings(), sessions, event_id)

    found, _ = event_state(sessions, event_id)
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

    deliver(webhook_settings(), sessions, event_id)  # not due yet: nothing is sent
    assert len(hook.requests) == 1
    for _ in range(2):
        make_due(sessions, event_id)
        deliver(webhook_settings(), sessions, event_id)

    found, history = event_state(sessions, event_id)
    assert (found.status, found.attempts) == (EventStatus.DELIVERED, 3)
    assert [(row.attempt, row.status_code) for row in history] == [(1, 500), (2, 503), (3, 200)]
    assert {headers["webhook-id"] for headers, _ in hook.requests} == {event_id}
    for headers, body in hook.requests:
        SDK.webhooks.verify_signature(body, headers, secret=SECRET)


def test_410_gone_ends_the_event_without_retries(sessions, receiver):
    hook = receiver(410)
    event_id = completed_job_event(sessions, hook.url)
    deliver(webhook_settings(), sessions, event_id)
    found, history = event_state(sessions, event_id)
    assert (found.status, found.next_attempt_at, [row.status_code for row in history]) == (
        EventStatus.GONE,
        None,
        [410],
    )


def test_a_failure_past_the_retry_window_fails_the_event(sessions, receiver):
    hook = receiver(500)
    event_id = completed_job_event(sessions, hook.url)
    deliver(webhook_settings(webhook_retry_window_s=1.0), sessions, event_id)
    found, _ = event_state(sessions, event_id)
    assert (found.status, found.attempts, found.next_attempt_at) == (EventStatus.FAILED, 1, None)
    assert found.finished_at is not None


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ("slow", "Timed out after 0.3 s"),
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
    event_id = completed_job_event(sessions, url)
    deliver(webhook_settings(webhook_timeout_s=0.3), sessions, event_id)

    found, [row] = event_state(sessions, event_id)
    assert (found.status, found.attempts) == (EventStatus.PENDING, 1)
    assert error in row.error
    assert row.status_code == (302 if answer == "redirect" else None)
    if hook is not None:
        assert len(hook.requests) == 1  # the redirect's target was never asked


def test_a_receiver_that_drips_its_answer_is_cut_off_at_the_deadline(sessions, receiver):
    # Each byte comes well within the limit, the whole answer (38 bytes) long after it: only one
    # deadline over the whole attempt stops it, where a timeout per read would wait it out.
    hook = receiver(200, drip_s=0.1)
    event_id = completed_job_event(sessions, hook.url)
    deliver(webhook_settings(webhook_timeout_s=0.5), sessions, event_id)
    found, [row] = event_state(sessions, event_id)
    assert (found.status, row.status_code) == (EventStatus.PENDING, None)
    assert row.error.startswith("Timed out after 0.5 s")


def test_a_url_refused_at_delivery_is_retried_and_never_sent(sessions, receiver):
    hook = receiver(200)
    event_id = completed_job_event(sessions, hook.url)
    deliver(webhook_settings(webhook_allowed_hosts=()), sessions, event_id)
    found, [row] = event_state(sessions, event_id)
    assert (found.status, row.status_code, hook.requests) == (EventStatus.PENDING, None, [])
    assert row.error.startswith("Refused before sending: '127.0.0.1' is a loopback address")


def test_without_a_signing_secret_the_event_fails_unsent(sessions, receiver):
    hook = receiver(200)
    event_id = completed_job_event(sessions, hook.url)
    deliver(webhook_settings(webhook_secret=None), sessions, event_id)
    found, [row] = event_state(sessions, event_id)
    assert (found.status, hook.requests) == (EventStatus.FAILED, [])
    assert "No signing secret" in row.error


def test_a_key_with_its_own_secret_signs_with_it(sessions, receiver):
    hook = receiver(200)
    own = new_secret()
    event_id = completed_job_event(sessions, hook.url)
    deliver(webhook_settings(webhook_keys={KEY: KeyWebhook(secret=own)}), sessions, event_id)
    [(headers, body)] = hook.requests
    SDK.webhooks.verify_signature(body, headers, secret=own)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        SDK.webhooks.verify_signature(body, headers, secret=SECRET)


def test_two_copies_of_one_message_send_one_request(sessions, receiver):
    hook = receiver(200, delay_s=0.5)
    event_id = completed_job_event(sessions, hook.url)
    copies = [
        threading.Thread(target=deliver, args=(webhook_settings(), sessions, event_id)) for _ in range(2)
    ]
    for copy in copies:
        copy.start()
    for copy in copies:
        copy.join()
    found, history = event_state(sessions, event_id)
    assert (len(hook.requests), found.status, len(history)) == (1, EventStatus.DELIVERED, 1)


def test_an_unreachable_address_falls_through_to_the_next_vetted_one(
    sessions, receiver, monkeypatch
):
    hook = receiver(200)  # listens on 127.0.0.1 only; nothing answers on 127.0.0.2
    fake_dns(monkeypatch, {"two.example.test": ["127.0.0.2", "127.0.0.1"]})
    event_id = completed_job_event(sessions, f"http://two.example.test:{hook.port}/hook")
    deliver(webhook_settings(webhook_allowed_hosts=("127.0.0.0/8",)), sessions, event_id)
    found, [row] = event_state(sessions, event_id)
    assert (found.status, row.status_code) == (EventStatus.DELIVERED, 200)
    assert hook.requests[0][0]["host"] == f"two.example.test:{hook.port}"


def test_https_delivery_goes_to_the_vetted_address_with_the_hostname_for_tls(
    sessions, receiver, monkeypatch, tmp_path
):
    server_tls, client_tls = _tls_pair("hooks.example.test", tmp_path)
    hook = receiver(200, tls=server_tls)
    fake_dns(monkeypatch, {"hooks.example.test": ["127.0.0.1"]})
    event_id = completed_job_event(sessions, f"https://hooks.example.test:{hook.port}/hook")
    deliver(
        webhook_settings(webhook_allowed_hosts=("127.0.0.0/8",)),
        sessions,
        event_id,
        tls_context=client_tls,
    )

    found, [row] = event_state(sessions, event_id)
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
