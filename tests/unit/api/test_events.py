"""`GET /v1/videos/{id}/events`: each delivery attempt of a job's webhook event, in three queries,
to the job's owner only."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from storage.db import make_engine, make_session_factory, upgrade_schema
from tests.unit.webhook_support import KEY, completed_job_event, event_state, make_due, webhook_settings
from worker.webhooks import deliver


def test_the_events_endpoint_shows_each_attempt_in_three_queries(tmp_path, receiver):
    from api.app import create_app

    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade_schema(url)
    settings = webhook_settings(data_dir=tmp_path, database_url=url, api_keys=(KEY, "sk-unit-b"))
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    hook = receiver(500, 200)
    event_id = completed_job_event(sessions, hook.url)
    deliver(settings, sessions, event_id)
    make_due(sessions, event_id)
    deliver(settings, sessions, event_id)
    job_id = event_state(sessions, event_id)[0].job_id

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
