"""The Files API: one row per uploaded (or batch-written) file, its bytes in the blob store.

Revision ID: 0006_files
Revises: 0005_partial_images
Create Date: 2026-12-02

House rules: migrations stay backward-compatible with the code one release back (add columns
nullable or with a server default; drop in a later release), and never rewrite a large table
under a lock in one step.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_files"
down_revision = "0005_partial_images"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A new table: code one release back never reads it.
    timestamp = sa.DateTime(timezone=True)
    op.create_table(
        "files",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("line_count", sa.Integer, nullable=True),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("expires_at", timestamp, nullable=True),
        sa.Column("deleted_at", timestamp, nullable=True),
    )
    # The owner's listing pages on (created_at, id); the sweeper looks for live rows past expiry.
    op.create_index("ix_files_owner_created", "files", ["owner", "created_at", "id"])
    op.create_index("ix_files_expiry", "files", ["deleted_at", "expires_at"])


def downgrade() -> None:
    op.drop_table("files")
