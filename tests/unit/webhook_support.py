"""What the webhook tests share: secrets and a key, an HTTP receiver on a local port that answers
as told, a fake DNS, and a job run to completion with its webhook event."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
from sqlalchemy import select, update

from darkroom.keys import owner_of_key
from darkroom.settings import Settings
from storage import jobs
from storage.models import JobKind, WebhookDelivery, WebhookEvent


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


SECRET = new_secret()
KEY = "sk-unit-a"
OWNER = owner_of_key(KEY)
SDK = openai.OpenAI(api_key="unused")


@dataclass
class Receiver:
    """Answers each POST with the next of `statuses` (the last one repeats), after `delay_s`; with
    `drip_s`, one byte of its answer every `drip_s`, as a hostile receiver holds a sender."""

    statuses: list[int]
    delay_s: float = 0.0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    tls: ssl.SSLContext | None = None
    server_names: list[str | None] = field(default_factory=list)
    drip_s: float = 0.0

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses[min(len(receiver.requests), len(receiver.statuses)) - 1]
                time.sleep(receiver.delay_s)
                if receiver.drip_s:
                    self._drip(f"HTTP/1.1 {status} OK\r\ncontent-length: 0\r\n\r\n".encode())
                    return
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("location", f"http://127.0.0.1:{receiver.port}/elsewhere")
                self.send_header("content-length", "0")
                self.end_headers()

            def _drip(self, answer: bytes) -> None:
                self.close_connection = True
                for index in range(len(answer)):
                    try:
                        self.wfile.write(answer[index : index + 1])
                        self.wfile.flush()
                    except OSError:  # the sender gave up
                        return
                    time.sleep(receiver.drip_s)

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


def fake_dns(monkeypatch, answers: dict[str, list[str]]) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
            for address in answers[host]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def webhook_settings(**overrides) -> Settings:
    values = {
        "webhook_secret": SECRET,
        "webhook_allow_http": True,
        "webhook_allowed_hosts": ("127.0.0.1",),
        "webhook_timeout_s": 1.0,
        "webhook_backoff_base_s": 5.0,
        "webhook_backoff_max_s": 60.0,
    }
    return Settings(**(values | overrides))


def completed_job_event(sessions, url: str, owner: str = OWNER) -> str:
    """A video job with a webhook URL, run to completion: its terminal event, as the worker leaves it."""
    with sessions() as session:
        job_id = jobs.new_job_id(JobKind.VIDEO)
        jobs.create(
            session, job_id=job_id, kind=JobKind.VIDEO, model="tiny-wan", owner=owner, params={}, webhook_url=url
        )
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


def event_state(sessions, event_id: str) -> tuple[WebhookEvent, list[WebhookDelivery]]:
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


def make_due(sessions, event_id: str) -> None:
    with sessions() as session:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == event_id)
            .values(next_attempt_at=jobs.now())
        )
        session.commit()
