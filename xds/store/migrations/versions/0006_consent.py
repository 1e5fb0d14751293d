"""Consent and access control (xds.consent): consent_record, consent_break_glass.

Written by hand to match ConsentRecordRow and ConsentBreakGlassRow in xds/store/tables.py;
tests/test_store_migrations.py checks that the two agree on SQLite and PostgreSQL.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Copied from tables.py, not imported (see 0001).
PATIENT = 256
TEXT_KEY = 512
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "consent_record",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("patient_id", sa.String(PATIENT), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("model", sa.String(16), nullable=False),
        sa.Column("facilities", sa.Text(), nullable=False),
        sa.Column("excluded", sa.Text(), nullable=False),
        sa.Column("individuals", sa.Text(), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("on_hold", sa.Boolean(), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(TEXT_KEY), nullable=False),
        sa.Column("reason", sa.String(1024), nullable=False),
        sa.Column("source", sa.String(TEXT_KEY), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_consent_record"),
    )
    op.create_index("ix_consent_record_person", "consent_record", ["person_id", "id"])
    op.create_table(
        "consent_break_glass",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=True),
        sa.Column("patient_id", sa.String(PATIENT), nullable=False),
        sa.Column("transaction", sa.String(16), nullable=False),
        sa.Column("facility", sa.String(TEXT_KEY), nullable=False),
        sa.Column("user_id", sa.String(TEXT_KEY), nullable=False),
        sa.Column("user_name", sa.String(TEXT_KEY), nullable=False),
        sa.Column("purposes", sa.String(TEXT_KEY), nullable=False),
        sa.Column("reason", sa.String(1024), nullable=False),
        sa.Column("message_id", sa.String(TEXT_KEY), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_consent_break_glass"),
    )
    op.create_index("ix_consent_break_glass_at", "consent_break_glass", ["at"])
    op.create_index("ix_consent_break_glass_person", "consent_break_glass", ["person_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_consent_break_glass_person", table_name="consent_break_glass")
    op.drop_index("ix_consent_break_glass_at", table_name="consent_break_glass")
    op.drop_table("consent_break_glass")
    op.drop_index("ix_consent_record_person", table_name="consent_record")
    op.drop_table("consent_record")
