"""`/v1/files` in an embedded app (SQLite, the local blob directory) when the blob store fails: an
upload that cannot be stored leaves no row and no partial file; a delete while the store is away
is a delete for the caller, and the blob is left for the sweeper. The happy paths run on the real
stack (tests/integration/test_files.py)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from darkroom.settings import Settings
from storage import files
from storage.blobs import LocalBlobStore
from storage.db import upgrade_schema
from storage.models import StoredFile

KEY = "sk-unit"
AUTH = {"authorization": f"Bearer {KEY}"}


class FailingStore(LocalBlobStore):
    """A local store whose writes fail after the first chunk, and whose deletes fail, as S3 going
    away mid-request would."""

    fail_deletes = False

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str) -> int:
        def first_then_fail():
            yield next(iter(chunks))
            raise OSError("the store went away")

        return super().put_stream(key, first_then_fail(), content_type)

    def delete(self, key: str) -> None:
        if self.fail_deletes:
            raise OSError("the store went away")
        super().delete(key)


@pytest.fixture
def app(tmp_path):
    settings = Settings(data_dir=tmp_path, api_keys=(KEY,))
    upgrade_schema(settings.resolved_database_url)
    app = create_app(settings)
    app.state.services.blobs = FailingStore(tmp_path / "blobs")
    return app


def _rows(app) -> int:
    with app.state.services.sessions() as session:
        return session.scalar(select(func.count()).select_from(StoredFile))


def _blob_files(app) -> list[str]:
    root = app.state.services.blobs.root
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_an_upload_the_store_fails_leaves_no_row_and_no_partial_file(app):
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post(
            "/v1/files", headers=AUTH, data={"purpose": "user_data"}, files={"file": ("a.bin", b"x" * 300_000)}
        )
    assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"
    assert _rows(app) == 0 and _blob_files(app) == []


def test_a_delete_while_the_store_is_away_is_finished_by_the_sweeper(app):
    store = app.state.services.blobs
    with TestClient(app) as client:
        created = client.post("/v1/files", headers=AUTH, data={"purpose": "vision"}, files={"file": ("a.png", _png())})
        assert created.status_code == 200, created.text
        file_id = created.json()["id"]
        store.fail_deletes = True
        deleted = client.delete(f"/v1/files/{file_id}", headers=AUTH)
        assert deleted.json() == {"id": file_id, "object": "file", "deleted": True}
        assert client.get(f"/v1/files/{file_id}", headers=AUTH).status_code == 404
    assert _blob_files(app) == [files.blob_key(file_id), files.blob_key(file_id) + ".content-type"]
    with app.state.services.sessions() as session:
        assert session.get(StoredFile, file_id).deleted_at is None
        assert files.past_expiry(session, limit=10) == [file_id]  # the sweeper's next tick


def _png() -> bytes:
    from tests.image_server import png_bytes

    return png_bytes((8, 8))
