"""The Files API through the official SDK on the live stack: upload, retrieve, download, list and
delete; the purposes and forms it refuses; each purpose's caps as a 413 before the rest of the body
is read, with nothing kept; `vision` files checked as image uploads are; another key finding
nothing; and the sweeper deleting a file past its expiry. Rows and blobs are looked at in the
stack's own Postgres and S3 server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import boto3
import httpx
import openai
import pytest
from sqlalchemy import create_engine, func, select, update

from bench.processes import wait_until
from storage import files
from storage.jobs import now
from storage.models import StoredFile
from tests.image_server import png_bytes
from tests.integration.conftest import KEY_A

LINES = b'{"custom_id": "a", "method": "POST", "url": "/v1/images/generations", "body": {"prompt": "x"}}\n' * 3


@dataclass
class Stored:
    """What the stack has stored: the files table and the blobs under files/."""

    engine: object
    s3: object
    bucket: str

    def row(self, file_id: str) -> StoredFile | None:
        with self.engine.connect() as connection:
            return connection.execute(select(StoredFile.__table__).where(StoredFile.id == file_id)).one_or_none()

    def blob(self, file_id: str) -> dict | None:
        try:
            return self.s3.head_object(Bucket=self.bucket, Key=files.blob_key(file_id))
        except self.s3.exceptions.ClientError:
            return None

    def snapshot(self) -> tuple[int, set[str]]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(func.count()).select_from(StoredFile)).scalar_one()
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix="files/").get("Contents", [])
        keys = {item["Key"] for item in listed}
        return rows, keys

    def backdate_expiry(self, file_id: str) -> None:
        # The one way for a test to be an hour later: expires_after is an hour at least.
        with self.engine.begin() as connection:
            connection.execute(
                update(StoredFile).where(StoredFile.id == file_id).values(expires_at=now() - timedelta(seconds=1))
            )


@pytest.fixture
def stored(stack) -> Iterator[Stored]:
    engine = create_engine(stack.env["DARKROOM_DATABASE_URL"])
    s3 = boto3.client(
        "s3", endpoint_url=stack.env["DARKROOM_S3_ENDPOINT_URL"], region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )
    yield Stored(engine, s3, stack.env["DARKROOM_S3_BUCKET"])
    engine.dispose()


@pytest.fixture
def nothing_stored(stored) -> Iterator[None]:
    """Asserts, after the test, that no file row and no file blob was added during it."""
    before = stored.snapshot()
    yield
    assert stored.snapshot() == before


def test_a_batch_file_round_trip(stack, client, stored):
    created = client.files.create(file=("requests.jsonl", LINES), purpose="batch")
    assert created.id.startswith("file-") and (created.object, created.status) == ("file", "processed")
    assert (created.bytes, created.filename, created.purpose) == (len(LINES), "requests.jsonl", "batch")
    assert created.expires_at - created.created_at == 30 * 24 * 3600  # a batch file's default
    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).read() == LINES
    assert created.id in [listed.id for listed in client.files.list(purpose="batch")]
    # /content serves ranges as every /content does.
    ranged = httpx.get(
        f"{stack.base_url}/files/{created.id}/content",
        headers={"authorization": f"Bearer {KEY_A}", "range": "bytes=2-10"},
    )
    assert (ranged.status_code, ranged.content) == (206, LINES[2:11])
    assert stored.row(created.id).line_count == 3
    assert stored.blob(created.id)["ContentType"] == "application/jsonl"

    assert client.files.delete(created.id).model_dump() == {"id": created.id, "object": "file", "deleted": True}
    for call in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(created.id)
    assert stored.blob(created.id) is None and stored.row(created.id).deleted_at is not None


def test_vision_and_user_data_files_and_expires_after(client, stored):
    image = png_bytes((32, 16))
    vision = client.files.create(
        file=("photo.png", image, "image/png"), purpose="vision", expires_after={"anchor": "created_at", "seconds": 3600}
    )
    assert (vision.purpose, vision.bytes, vision.expires_at - vision.created_at) == ("vision", len(image), 3600)
    assert client.files.content(vision.id).read() == image
    assert stored.blob(vision.id)["ContentType"] == "image/png"
    anything = client.files.create(file=("notes.bin", b"\x00\x01\x02"), purpose="user_data")
    assert (anything.purpose, anything.expires_at) == ("user_data", None)  # kept until deleted
    assert stored.row(vision.id).line_count is None and stored.row(anything.id).line_count is None


def test_lines_are_counted_as_jsonl_counts_them(client, stored):
    for data, lines in [(b"", 0), (b"{}", 1), (b"{}\n", 1), (b"{}\n{}", 2), (b"{}\n\n{}\n", 3)]:
        created = client.files.create(file=("r.jsonl", data), purpose="batch")
        assert stored.row(created.id).line_count == lines, data


def test_the_listing_pages_through_every_file(spawn_api):
    # A key of its own, so no other test's files are listed.
    key = "sk-test-lister"
    client = openai.OpenAI(base_url=spawn_api({"DARKROOM_API_KEYS": key}), api_key=key, max_retries=0)
    made = [client.files.create(file=(f"{index}.jsonl", b"{}\n"), purpose="batch").id for index in range(5)]
    vision = client.files.create(file=("a.png", png_bytes(), "image/png"), purpose="vision").id
    newest_first = [vision, *made[::-1]]
    assert [listed.id for listed in client.files.list(limit=2)] == newest_first  # the SDK follows the pages
    first_page = client.files.list(limit=2, order="asc")
    assert ([f.id for f in first_page.data], first_page.has_more) == (made[:2], True)
    assert [listed.id for listed in client.files.list(limit=2, order="asc", purpose="batch")] == made
    assert [listed.id for listed in client.files.list(purpose="vision")] == [vision]
    client.files.delete(made[2])
    assert [listed.id for listed in client.files.list(limit=2, order="asc", after=made[2])] == made[3:] + [vision]
    with pytest.raises(openai.BadRequestError) as error:
        client.files.list(after="file-unknown")
    assert error.value.param == "after"


@pytest.mark.parametrize("purpose", ["fine-tune", "assistants", "evals", "batch_output", "Batch"])
def test_other_purposes_are_refused(client, nothing_stored, purpose):
    with pytest.raises(openai.BadRequestError) as error:
        client.files.create(file=("a.jsonl", LINES), purpose=purpose)
    assert (error.value.param, error.value.code) == ("purpose", "invalid_value")


@pytest.mark.parametrize(
    "kwargs,param,code",
    [
        ({"expires_after": {"anchor": "created_at", "seconds": 3599}}, "expires_after.seconds", "invalid_value"),
        ({"expires_after": {"anchor": "created_at", "seconds": 2592001}}, "expires_after.seconds", "invalid_value"),
        ({"expires_after": {"anchor": "last_used", "seconds": 3600}}, "expires_after.anchor", "invalid_value"),
        ({"expires_after": {"seconds": 3600}}, "expires_after.anchor", "missing_required_parameter"),
        ({"extra_body": {"name": "x"}}, "name", "unknown_parameter"),
    ],
)
def test_bad_forms_name_the_field(client, nothing_stored, kwargs, param, code):
    with pytest.raises(openai.BadRequestError) as error:
        client.files.create(file=("a.jsonl", LINES), purpose="batch", **kwargs)
    assert (error.value.param, error.value.code) == (param, code)


def _post_form(stack, parts: list[tuple[str, bytes, str | None]]) -> httpx.Response:
    """A multipart body with its parts in this order (the SDK always sends text fields first)."""
    boundary = "darkroom-test-boundary"
    body = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return httpx.post(
        f"{stack.base_url}/files",
        content=body,
        headers={"authorization": f"Bearer {KEY_A}", "content-type": f"multipart/form-data; boundary={boundary}"},
    )


@pytest.mark.parametrize(
    "parts,param,code",
    [
        ([("file", LINES, "a.jsonl"), ("purpose", b"batch", None)], "purpose", "missing_required_parameter"),
        ([("purpose", b"batch", None)], "file", "missing_required_parameter"),
        ([("purpose", b"batch", None), ("file", LINES, "a.jsonl"), ("file", LINES, "b.jsonl")], "file", "invalid_value"),
        ([("purpose", b"batch", None), ("upload", LINES, "a.jsonl")], "upload", "unknown_parameter"),
        ([("purpose", b"batch", None), ("purpose", b"batch", None)], "purpose", "invalid_value"),
    ],
)
def test_forms_the_sdk_never_sends_are_refused(stack, nothing_stored, parts, param, code):
    response = _post_form(stack, parts)
    assert response.status_code == 400
    assert (response.json()["error"]["param"], response.json()["error"]["code"]) == (param, code)


@pytest.mark.parametrize(
    "data,name,status,code",
    [
        (b"not an image", "a.png", 400, "invalid_image"),
        (b"GIF89a" + b"\0" * 64, "a.gif", 400, "invalid_image"),
        (png_bytes((1025, 1024)), "wide.png", 400, "image_too_large"),  # the stack allows 1024*1024 pixels
        (b"\0" * (2 * 1024 * 1024 + 1), "huge.png", 413, "file_too_large"),  # ... and 2 MiB
    ],
)
def test_vision_files_are_checked_as_image_uploads(client, nothing_stored, data, name, status, code):
    with pytest.raises(openai.APIStatusError) as error:
        client.files.create(file=(name, data, "image/png"), purpose="vision")
    assert (error.value.status_code, error.value.param, error.value.code) == (status, "file", code)


@pytest.fixture
def capped(spawn_api) -> openai.OpenAI:
    base_url = spawn_api(
        {
            "DARKROOM_MAX_FILE_BYTES": "300000",
            "DARKROOM_MAX_BATCH_FILE_BYTES": "200000",
            "DARKROOM_MAX_BATCH_FILE_LINES": "10",
        }
    )
    return openai.OpenAI(base_url=base_url, api_key=KEY_A, max_retries=0)


def test_caps_are_a_413_and_nothing_is_kept(capped, stored):
    before = stored.snapshot()
    for data, purpose, code, setting in [
        (b"x" * 199_999 + b"\n" * 2, "batch", "file_too_large", "DARKROOM_MAX_BATCH_FILE_BYTES"),
        (b"{}\n" * 11, "batch", "too_many_lines", "DARKROOM_MAX_BATCH_FILE_LINES"),
        (b"{}\n" * 10 + b"{}", "batch", "too_many_lines", "DARKROOM_MAX_BATCH_FILE_LINES"),
        (b"x" * 300_001, "user_data", "file_too_large", "DARKROOM_MAX_FILE_BYTES"),
    ]:
        with pytest.raises(openai.APIStatusError) as error:
            capped.files.create(file=("big.jsonl", data), purpose=purpose)
        assert (error.value.status_code, error.value.param, error.value.code) == (413, "file", code)
        assert setting in error.value.message
    assert stored.snapshot() == before
    # At the caps, not past them: taken.
    assert capped.files.create(file=("ok.jsonl", b"{}\n" * 10), purpose="batch").bytes == 30
    assert capped.files.create(file=("ok.jsonl", b"x" * 199_999 + b"\n"), purpose="batch").bytes == 200_000
    assert capped.files.create(file=("ok.bin", b"x" * 300_000), purpose="user_data").bytes == 300_000


def test_the_413_comes_before_the_rest_of_the_body_is_sent(capped, stored):
    """A client that announces 100 MB and sends 512 KB gets its 413 while it still holds the rest."""
    before = stored.snapshot()
    host, port = capped.base_url.host, capped.base_url.port
    boundary = "cap-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
    ).encode()
    with socket.create_connection((host, port), timeout=30) as connection:
        connection.sendall(
            f"POST /v1/files HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY_A}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {100 * 1024 * 1024}\r\n\r\n".encode()
            + head
            + b"x" * 512 * 1024
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            answer += connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 ") and b'"code":"file_too_large"' in answer
    assert stored.snapshot() == before


def test_another_key_finds_nothing(client, other_client):
    mine = client.files.create(file=("mine.jsonl", LINES), purpose="batch")
    for call in (other_client.files.retrieve, other_client.files.content, other_client.files.delete):
        with pytest.raises(openai.NotFoundError) as error:
            call(mine.id)
        assert error.value.param == "file_id"
    assert mine.id not in [listed.id for listed in other_client.files.list()]
    with pytest.raises(openai.BadRequestError):
        other_client.files.list(after=mine.id)
    assert client.files.content(mine.id).read() == LINES  # untouched


def test_the_sweeper_deletes_a_file_past_its_expiry(client, stored):
    created = client.files.create(
        file=("soon.bin", b"gone soon"), purpose="user_data", expires_after={"anchor": "created_at", "seconds": 3600}
    )
    kept = client.files.create(file=("kept.bin", b"kept"), purpose="user_data")
    stored.backdate_expiry(created.id)
    with pytest.raises(openai.NotFoundError):  # expired: gone for callers at once, before any sweep
        client.files.retrieve(created.id)
    wait_until(lambda: stored.row(created.id).deleted_at is not None, what="the sweeper to delete the file")
    assert stored.blob(created.id) is None
    assert stored.blob(kept.id) is not None and stored.row(kept.id).deleted_at is None
