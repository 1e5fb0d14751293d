"""The PDQ Supplier's open queries: the continuation state of ITI-47 (pdq_query).

Written by hand to match PdqQueryRow in xds/store/tables.py; tests/test_store_migrations.py
checks that the two agree on SQLite and PostgreSQL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Copied from tables.py, not imported (see 0001).
TEXT_KEY = 512


def upgrade() -> None:
    op.create_table(
        "pdq_query",
        sa.Column("query_id", sa.String(TEXT_KEY), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("last_response_id", sa.String(TEXT_KEY), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("query_id", name="pk_pdq_query"),
    )
    op.create_index("ix_pdq_query_expires_at", "pdq_query", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_pdq_query_expires_at", table_name="pdq_query")
    op.drop_table("pdq_query")
