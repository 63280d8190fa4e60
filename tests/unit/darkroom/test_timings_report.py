"""`darkroom bench timings`: the stage timings completed jobs stored, per model, from the database."""

from __future__ import annotations

from datetime import timedelta

from darkroom.cli import main
from darkroom.timings_report import stage_report
from storage import jobs
from storage.models import JobKind


def _completed(session, model: str, timings: dict[str, float]) -> None:
    job_id = jobs.new_job_id(JobKind.VIDEO)
    jobs.create(session, job_id=job_id, kind=JobKind.VIDEO, model=model, owner="o", params={})
    session.commit()
    jobs.claim(session, job_id, "w1")
    jobs.complete(session, job_id, output_keys=["k"], output_meta={}, timings=timings, retention=timedelta(days=1))


def test_report_per_model_and_stage(sessions):
    with sessions() as session:
        for wait in (0.010, 0.020, 0.030, 0.040, 1.000):
            _completed(session, "tiny-wan", {"queue_wait": wait, "model.denoise_per_step": 0.005, "upload": 0.002})
        _completed(session, "tiny-flux", {"queue_wait": 0.5})
        failed = jobs.new_job_id(JobKind.VIDEO)
        jobs.create(session, job_id=failed, kind=JobKind.VIDEO, model="tiny-flux", owner="o", params={})
        session.commit()
        jobs.fail(session, failed, code="x", message="y")

        report = stage_report(session, since=timedelta(hours=1)).splitlines()
        assert report[0] == "tiny-flux: 1 completed jobs in the last 1 h"  # the failed one is not counted
        wan = report[report.index("tiny-wan: 5 completed jobs in the last 1 h") :]
        rows = {line.split()[0]: line.split()[1:] for line in wan[2:]}
        assert list(rows) == ["queue_wait", "model.denoise_per_step", "upload"]  # the order stages happen
        assert rows["queue_wait"] == ["5", "30.0", "808.0", "1000.0"]  # jobs, p50, p95, max in ms
        assert rows["model.denoise_per_step"][1] == "5.0"

        assert stage_report(session, since=timedelta(hours=1), model="tiny-qwen-image") == (
            "no completed jobs in the last 1 h for tiny-qwen-image"
        )


def test_the_cli_reads_the_deployments_database(sessions, tmp_path, monkeypatch, capsys):
    url = str(sessions.kw["bind"].url)
    with sessions() as session:
        _completed(session, "tiny-wan", {"queue_wait": 0.25})
    monkeypatch.setenv("DARKROOM_DATABASE_URL", url)
    main(["bench", "timings", "--hours", "2", "--model", "tiny-wan"])
    output = capsys.readouterr().out
    assert "tiny-wan: 1 completed jobs in the last 2 h" in output and "queue_wait" in output
