"""The PIX Manager's queue of ITI-46 Update Notifications (pix_notification).

Written by hand to match PixNotificationRow in xds/store/tables.py; tests/test_store_migrations.py
checks that the two agree on SQLite and PostgreSQL.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Copied from tables.py, not imported (see 0001).
UUID = 64
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "pix_notification",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("consumer", sa.String(1024), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("ids", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(UUID), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(2048), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_pix_notification"),
    )
    op.create_index("ix_pix_notification_person", "pix_notification", ["consumer", "person_id", "id"])
    op.create_index("ix_pix_notification_due", "pix_notification", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_pix_notification_due", table_name="pix_notification")
    op.drop_index("ix_pix_notification_person", table_name="pix_notification")
    op.drop_table("pix_notification")
