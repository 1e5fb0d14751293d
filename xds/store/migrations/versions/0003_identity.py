"""The PIX Manager's and PDQ Supplier's tables: persons, patients (ids with their current
record), search keys, other ids, revisions, link candidates.

Written by hand to match the identity tables of xds/store/tables.py; tests/test_store_migrations.py
checks that the two agree on SQLite and PostgreSQL.

Revision ID: 0003
Revises: 0002
Create Date: 2025-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Copied from tables.py, not imported (see 0001).
OID = 128
PATIENT = 256
TEXT_KEY = 512
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
KEY = sa.String(TEXT_KEY).with_variant(sa.String(TEXT_KEY, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "identity_person",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_identity_person"),
    )

    op.create_table(
        "identity_patient",
        sa.Column("pk", SERIAL, autoincrement=True, nullable=False),
        sa.Column("root", sa.String(OID), nullable=False),
        sa.Column("extension", sa.String(PATIENT), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("merged_into", sa.BigInteger(), nullable=True),
        sa.Column("link", sa.String(16), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("gender", sa.String(8), nullable=True),
        sa.Column("birth_date", sa.String(8), nullable=True),
        sa.Column("sender", sa.String(OID), nullable=True),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name="pk_identity_patient"),
        sa.UniqueConstraint("root", "extension", name="uq_identity_patient_root_extension"),
    )
    op.create_index("ix_identity_patient_person_id", "identity_patient", ["person_id"])
    op.create_index("ix_identity_patient_merged_into", "identity_patient", ["merged_into"])
    op.create_index("ix_identity_patient_birth", "identity_patient", ["birth_date", "gender"])

    op.create_table(
        "identity_key",
        sa.Column("patient_pk", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key", KEY, nullable=False),
        sa.PrimaryKeyConstraint("patient_pk", "seq", "kind", "key", name="pk_identity_key"),
    )
    op.create_index("ix_identity_key_key", "identity_key", ["kind", "key", "patient_pk", "seq"])

    op.create_table(
        "identity_other_id",
        sa.Column("patient_pk", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.String(OID), nullable=False),
        sa.Column("extension", sa.String(PATIENT), nullable=False),
        sa.PrimaryKeyConstraint("patient_pk", "root", "extension", name="pk_identity_other_id"),
    )
    op.create_index("ix_identity_other_id_id", "identity_other_id", ["root", "extension", "patient_pk"])

    op.create_table(
        "identity_revision",
        sa.Column("patient_pk", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("revision", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("sender", sa.String(OID), nullable=True),
        sa.Column("record", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("patient_pk", "revision", name="pk_identity_revision"),
    )

    op.create_table(
        "identity_candidate",
        sa.Column("patient_pk", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("other_pk", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("patient_pk", "other_pk", name="pk_identity_candidate"),
    )
    op.create_index("ix_identity_candidate_other_pk", "identity_candidate", ["other_pk"])


def downgrade() -> None:
    op.drop_index("ix_identity_candidate_other_pk", table_name="identity_candidate")
    op.drop_table("identity_candidate")
    op.drop_table("identity_revision")
    op.drop_index("ix_identity_other_id_id", table_name="identity_other_id")
    op.drop_table("identity_other_id")
    op.drop_index("ix_identity_key_key", table_name="identity_key")
    op.drop_table("identity_key")
    op.drop_index("ix_identity_patient_birth", table_name="identity_patient")
    op.drop_index("ix_identity_patient_merged_into", table_name="identity_patient")
    op.drop_index("ix_identity_patient_person_id", table_name="identity_patient")
    op.drop_table("identity_patient")
    op.drop_table("identity_person")
