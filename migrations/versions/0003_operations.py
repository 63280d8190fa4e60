"""Operations: worker presence rows (what /health/workers and /metrics read) and result expiry.

Revision ID: 0003_operations
Revises: 0002_reliability
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_operations"
down_revision = "0002_reliability"
branch_labels = None
depends_on = None


def upgrade() -> None:
    timestamp = sa.DateTime(timezone=True)
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("expired_at", timestamp, nullable=True))
    op.create_index("ix_jobs_expiry", "jobs", ["expired_at", "expires_at"])

    op.create_table(
        "workers",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("devices", sa.JSON, nullable=False),
        sa.Column("models", sa.JSON, nullable=False),
        sa.Column("queues", sa.JSON, nullable=False),
        sa.Column("heartbeat_interval_s", sa.Float, nullable=False),
        sa.Column("started_at", timestamp, nullable=False),
        sa.Column("heartbeat_at", timestamp, nullable=False),
        sa.Column("stopped_at", timestamp, nullable=True),
        sa.Column("current_job_id", sa.String(64), nullable=True),
        sa.Column("jobs_completed", sa.Integer, nullable=False),
        sa.Column("jobs_failed", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_error_at", timestamp, nullable=True),
        sa.Column("memory", sa.JSON, nullable=False),
        sa.Column("histograms", sa.JSON, nullable=False),
    )
    op.create_index("ix_workers_heartbeat_at", "workers", ["heartbeat_at"])


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_index("ix_jobs_expiry", "jobs")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("expired_at")
