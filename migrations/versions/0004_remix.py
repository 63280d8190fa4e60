"""Remix: a job made by remixing another records the video it was remixed from.

Revision ID: 0004_remix
Revises: 0003_operations
Create Date: 2026-11-29

House rules: migrations stay backward-compatible with the code one release back (add columns
nullable or with a server default; drop in a later release), and never rewrite a large table
under a lock in one step.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_remix"
down_revision = "0003_operations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable and without a default: adding it touches no existing row, and every earlier job
    # is, correctly, not a remix.
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("remixed_from_video_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("remixed_from_video_id")
