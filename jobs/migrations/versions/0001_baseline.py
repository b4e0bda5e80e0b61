"""Baseline: the job table exactly as ``create_all`` made it before migrations existed.

A database made by that release is stamped at this revision (jobs/schema.py) instead of running it.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tuneserve_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_tuneserve_jobs_dataset_state", "tuneserve_jobs", ["dataset_id", "state"])
    op.create_index("ix_tuneserve_jobs_model", "tuneserve_jobs", ["model"])
    op.create_index("ix_tuneserve_jobs_state_lease", "tuneserve_jobs", ["state", "lease_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_tuneserve_jobs_state_lease", table_name="tuneserve_jobs")
    op.drop_index("ix_tuneserve_jobs_model", table_name="tuneserve_jobs")
    op.drop_index("ix_tuneserve_jobs_dataset_state", table_name="tuneserve_jobs")
    op.drop_table("tuneserve_jobs")
