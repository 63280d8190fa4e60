"""The files table: who sees a file and until when, the listing's order and cursor, deleting as
a compare-and-set, and the sweeper's look-up of expired files. On SQLite and on the machine's
Postgres (tests/unit/storage/conftest.py); the Postgres database is shared by the session's tests,
so each test makes its own owner and looks only at its own files."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
from sqlalchemy import update

from storage import files
from storage.jobs import now
from storage.models import FilePurpose, StoredFile


@pytest.fixture
def owner() -> str:
    return "owner-" + secrets.token_hex(4)


def _file(
    session, owner: str, *, purpose: str = FilePurpose.BATCH, expires_in: timedelta | None = None, **values
) -> str:
    file_id = files.new_file_id()
    files.create(
        session,
        file_id=file_id,
        owner=owner,
        purpose=purpose,
        filename="lines.jsonl",
        size=12,
        content_type="application/jsonl",
        expires_at=now() + expires_in if expires_in is not None else None,
        line_count=3 if purpose == FilePurpose.BATCH else None,
    )
    session.commit()
    if values:
        session.execute(update(StoredFile).where(StoredFile.id == file_id).values(**values))
        session.commit()
    return file_id


def test_ids_and_blob_keys():
    file_id = files.new_file_id()
    assert file_id.startswith("file-") and len(file_id) == 29 and int(file_id[5:], 16) >= 0
    assert files.blob_key(file_id) == f"files/{file_id}"
    assert files.new_file_id() != file_id


def test_a_created_file_is_visible_to_its_owner_only(sessions, owner):
    with sessions() as session:
        file_id = _file(session, owner, expires_in=timedelta(days=30))
        stored = files.get_visible(session, file_id, owner=owner)
        assert (stored.purpose, stored.bytes, stored.line_count, stored.filename) == ("batch", 12, 3, "lines.jsonl")
        assert stored.created_at.tzinfo is not None and stored.deleted_at is None
        assert files.get_visible(session, file_id, owner="someone-else") is None
        assert files.get_visible(session, "file-missing", owner=owner) is None


def test_an_expired_or_deleted_file_is_invisible_but_still_owned(sessions, owner):
    with sessions() as session:
        expired = _file(session, owner, expires_at=now() - timedelta(seconds=1))
        deleted = _file(session, owner, deleted_at=now())
        for file_id in (expired, deleted):
            assert files.get_visible(session, file_id, owner=owner) is None
            assert files.get_owned(session, file_id, owner=owner).id == file_id
            assert files.get_owned(session, file_id, owner="someone-else") is None


def test_the_listing_pages_in_creation_order_from_a_cursor(sessions, owner):
    with sessions() as session:
        created = [_file(session, owner, created_at=now() - timedelta(minutes=10 - index)) for index in range(5)]
        _file(session, owner, deleted_at=now())  # never listed
        _file(session, owner, expires_at=now() - timedelta(seconds=1))  # never listed
        _file(session, "someone-else")  # never listed

        def page(**kwargs) -> list[str]:
            return [stored.id for stored in files.list_visible(session, owner=owner, **kwargs)]

        assert page(limit=100) == created[::-1]  # newest first by default
        assert page(limit=100, order="asc") == created
        assert page(limit=2, order="asc") == created[:2]
        cursor = files.get_owned(session, created[1], owner=owner)
        assert page(limit=2, order="asc", after=cursor) == created[2:4]
        assert page(limit=10, order="desc", after=cursor) == [created[0]]
        # A cursor deleted between two pages still marks where the next one starts.
        files.expire_now(session, created[2])
        assert page(limit=10, order="asc", after=files.get_owned(session, created[2], owner=owner)) == created[3:]


def test_the_listing_filters_by_purpose_and_breaks_creation_time_ties_by_id(sessions, owner):
    moment = now()
    with sessions() as session:
        tied = sorted(_file(session, owner, purpose=FilePurpose.VISION, created_at=moment) for _ in range(3))
        batch = _file(session, owner, created_at=moment)
        assert [f.id for f in files.list_visible(session, owner=owner, limit=10, purpose="vision", order="asc")] == tied
        after_first = files.get_owned(session, tied[0], owner=owner)
        listed = files.list_visible(session, owner=owner, limit=10, purpose="vision", order="asc", after=after_first)
        assert [f.id for f in listed] == tied[1:]
        assert [f.id for f in files.list_visible(session, owner=owner, limit=10, purpose="batch")] == [batch]


def test_expire_now_and_mark_deleted_take_effect_once(sessions, owner):
    with sessions() as session:
        file_id = _file(session, owner)
        assert files.expire_now(session, file_id) is True
        assert files.get_visible(session, file_id, owner=owner) is None
        assert files.expire_now(session, file_id) is False  # a second DELETE finds nothing to delete
        assert files.mark_deleted(session, file_id) is True
        assert files.mark_deleted(session, file_id) is False
        session.expire_all()
        assert session.get(StoredFile, file_id).deleted_at is not None


def test_the_sweeper_finds_expired_files_not_yet_deleted_the_longest_expired_first(sessions, owner):
    with sessions() as session:
        longer = _file(session, owner, expires_at=now() - timedelta(days=2))
        shorter = _file(session, owner, expires_at=now() - timedelta(days=1))
        _file(session, owner, expires_at=now() - timedelta(days=3), deleted_at=now())  # done already
        _file(session, owner, expires_in=timedelta(hours=1))  # not yet
        _file(session, owner)  # never expires
        mine = {longer, shorter}
        found = [file_id for file_id in files.past_expiry(session, limit=100_000) if file_id in mine]
        assert found == [longer, shorter]
