"""The Audit Record Repository's tables: audit records, their search keys, the chain's head.

Written by hand to match the audit tables of xds/store/tables.py; tests/test_store_migrations.py
checks that the two agree on SQLite and PostgreSQL.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Copied from tables.py, not imported (see 0001).
TEXT_KEY = 512


def upgrade() -> None:
    op.create_table(
        "audit_record",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False,
                  nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("transport", sa.String(8), nullable=False),
        sa.Column("sender_address", sa.String(64), nullable=True),
        sa.Column("sender_port", sa.Integer(), nullable=True),
        sa.Column("tls_peer", sa.String(1024), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("malformed", sa.String(1024), nullable=True),
        sa.Column("facility", sa.SmallInteger(), nullable=True),
        sa.Column("severity", sa.SmallInteger(), nullable=True),
        sa.Column("syslog_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("hostname", sa.String(255), nullable=True),
        sa.Column("app_name", sa.String(48), nullable=True),
        sa.Column("procid", sa.String(128), nullable=True),
        sa.Column("msgid", sa.String(32), nullable=True),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("event_id", sa.String(64), nullable=True),
        sa.Column("event_name", sa.String(256), nullable=True),
        sa.Column("event_action", sa.String(8), nullable=True),
        sa.Column("outcome", sa.SmallInteger(), nullable=True),
        sa.Column("user_id", sa.String(TEXT_KEY), nullable=True),
        sa.Column("user_name", sa.String(TEXT_KEY), nullable=True),
        sa.Column("source_system", sa.String(TEXT_KEY), nullable=True),
        sa.Column("source_address", sa.String(256), nullable=True),
        sa.Column("audit_source_id", sa.String(256), nullable=True),
        sa.Column("audit_enterprise_site_id", sa.String(256), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_record"),
    )
    op.create_index("ix_audit_record_event_time", "audit_record", ["event_time"])
    op.create_index("ix_audit_record_event_id", "audit_record", ["event_id"])
    op.create_index("ix_audit_record_user_id", "audit_record", ["user_id"])
    op.create_index("ix_audit_record_user_name", "audit_record", ["user_name"])

    op.create_table(
        "audit_record_key",
        sa.Column("record_seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.String(TEXT_KEY), nullable=False),
        sa.PrimaryKeyConstraint("record_seq", "kind", "value", name="pk_audit_record_key"),
    )
    op.create_index("ix_audit_record_key_value", "audit_record_key", ["kind", "value", "record_seq"])

    op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_chain"),
    )


def downgrade() -> None:
    op.drop_table("audit_chain")
    op.drop_index("ix_audit_record_key_value", table_name="audit_record_key")
    op.drop_table("audit_record_key")
    op.drop_index("ix_audit_record_user_name", table_name="audit_record")
    op.drop_index("ix_audit_record_user_id", table_name="audit_record")
    op.drop_index("ix_audit_record_event_id", table_name="audit_record")
    op.drop_index("ix_audit_record_event_time", table_name="audit_record")
    op.drop_table("audit_record")
