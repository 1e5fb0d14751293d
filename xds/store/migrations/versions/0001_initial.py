"""The initial schema: registry objects, their query side tables, known patients.

Written by hand to match xds/store/tables.py; tests/test_store_migrations.py checks that
the two agree on SQLite and PostgreSQL.

Revision ID: 0001
Revises:
Create Date: 2025-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Copied from tables.py, not imported: a migration keeps describing the schema of its time
# when tables.py moves on.
UUID = 64
OID = 128
URN = 128
PATIENT = 256
TEXT_KEY = 512
DTM = 14


def upgrade() -> None:
    op.create_table(
        "document_entry",
        sa.Column("entry_uuid", sa.String(UUID), nullable=False),
        sa.Column("logical_id", sa.String(UUID), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("unique_id", sa.String(OID), nullable=False),
        sa.Column("patient_id", sa.String(PATIENT), nullable=False),
        sa.Column("status", sa.String(URN), nullable=False),
        sa.Column("object_type", sa.String(URN), nullable=False),
        sa.Column("creation_time", sa.String(DTM), nullable=True),
        sa.Column("service_start_time", sa.String(DTM), nullable=True),
        sa.Column("service_stop_time", sa.String(DTM), nullable=True),
        sa.Column("hash", sa.String(128), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("repository_unique_id", sa.String(OID), nullable=True),
        sa.Column("mime_type", sa.String(OID), nullable=True),
        sa.Column("home_community_id", sa.String(OID), nullable=True),
        sa.Column("submission_set", sa.String(UUID), nullable=True),
        sa.Column("xml", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("entry_uuid", name="pk_document_entry"),
    )
    op.create_index("ix_document_entry_logical_id", "document_entry", ["logical_id"])
    op.create_index("ix_document_entry_unique_id", "document_entry", ["unique_id"])
    op.create_index(
        "ix_document_entry_patient",
        "document_entry",
        ["patient_id", "status", "object_type", "creation_time", "entry_uuid"],
    )

    op.create_table(
        "submission_set",
        sa.Column("entry_uuid", sa.String(UUID), nullable=False),
        sa.Column("unique_id", sa.String(OID), nullable=False),
        sa.Column("source_id", sa.String(OID), nullable=True),
        sa.Column("patient_id", sa.String(PATIENT), nullable=False),
        sa.Column("submission_time", sa.String(DTM), nullable=True),
        sa.Column("status", sa.String(URN), nullable=False),
        sa.Column("home_community_id", sa.String(OID), nullable=True),
        sa.Column("xml", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("entry_uuid", name="pk_submission_set"),
        sa.UniqueConstraint("unique_id", name="uq_submission_set_unique_id"),
    )
    op.create_index("ix_submission_set_patient", "submission_set", ["patient_id", "status"])

    op.create_table(
        "folder",
        sa.Column("entry_uuid", sa.String(UUID), nullable=False),
        sa.Column("unique_id", sa.String(OID), nullable=False),
        sa.Column("patient_id", sa.String(PATIENT), nullable=False),
        sa.Column("last_update_time", sa.String(DTM), nullable=True),
        sa.Column("status", sa.String(URN), nullable=False),
        sa.Column("home_community_id", sa.String(OID), nullable=True),
        sa.Column("xml", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("entry_uuid", name="pk_folder"),
        sa.UniqueConstraint("unique_id", name="uq_folder_unique_id"),
    )
    op.create_index("ix_folder_patient", "folder", ["patient_id", "status"])

    op.create_table(
        "association",
        sa.Column("entry_uuid", sa.String(UUID), nullable=False),
        sa.Column("type", sa.String(URN), nullable=False),
        sa.Column("source", sa.String(UUID), nullable=False),
        sa.Column("target", sa.String(UUID), nullable=False),
        sa.Column("submission_set_status", sa.String(32), nullable=True),
        sa.Column("status", sa.String(URN), nullable=False),
        sa.Column("xml", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("entry_uuid", name="pk_association"),
    )
    op.create_index("ix_association_source", "association", ["source"])
    op.create_index("ix_association_target", "association", ["target"])

    op.create_table(
        "object_code",
        sa.Column("object_uuid", sa.String(UUID), nullable=False),
        sa.Column("attribute", sa.String(64), nullable=False),
        sa.Column("code", sa.String(TEXT_KEY), nullable=False),
        sa.PrimaryKeyConstraint("object_uuid", "attribute", "code", name="pk_object_code"),
    )
    op.create_index("ix_object_code_code", "object_code", ["attribute", "code", "object_uuid"])

    op.create_table(
        "author",
        sa.Column("object_uuid", sa.String(UUID), nullable=False),
        sa.Column("person", sa.String(TEXT_KEY), nullable=False),
        sa.PrimaryKeyConstraint("object_uuid", "person", name="pk_author"),
    )
    op.create_index("ix_author_person", "author", ["person"])

    op.create_table(
        "reference_id",
        sa.Column("object_uuid", sa.String(UUID), nullable=False),
        sa.Column("value", sa.String(TEXT_KEY), nullable=False),
        sa.PrimaryKeyConstraint("object_uuid", "value", name="pk_reference_id"),
    )
    op.create_index("ix_reference_id_value", "reference_id", ["value"])

    op.create_table(
        "patient",
        sa.Column("patient_id", sa.String(PATIENT), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("patient_id", name="pk_patient"),
    )


def downgrade() -> None:
    # Dropping a table drops its indexes with it.
    for table in (
        "patient",
        "reference_id",
        "author",
        "object_code",
        "association",
        "folder",
        "submission_set",
        "document_entry",
    ):
        op.drop_table(table)
