"""Streamed images: the previews (partial images) a running job has stored so far.

Revision ID: 0005_partial_images
Revises: 0004_remix
Create Date: 2026-11-28

House rules: migrations stay backward-compatible with the code one release back (add columns
nullable or with a server default; drop in a later release), and never rewrite a large table
under a lock in one step.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_partial_images"
down_revision = "0004_remix"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A constant server default: Postgres (11+) adds it without rewriting the table, existing
    # rows read as having no previews, and code one release back can still insert rows.
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("partial_keys", sa.JSON, nullable=False, server_default=sa.text("'[]'")))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("partial_keys")
