"""Consent records keep what each change asked (xds.consent.store): consent_record.arguments.

A record held only the consent a change left. When a BPPC consent document stops granting (or
grants again), the person's record is replayed without (or with) its grants, and a change known
only by what it left can be made again only as the difference it made: a later grant naming
again a facility the revoked document had granted did not grant it any more. `arguments` holds
the change's arguments as JSON text (action, model, facilities, individuals, excluded, validity
period; for a revocation how the document ended), so the replay makes each change again as it
was asked.

Existing rows carry over with NULL: they are replayed by the difference each made, as before
(xds.consent.store._again). Nothing else changes, so the upgrade adds a nullable column and
rewrites no row.

Written by hand to match ConsentRecordRow in xds/store/tables.py; tests/test_store_migrations.py
checks that the two agree on SQLite and PostgreSQL, and tests/test_consent_replay.py upgrades a
database holding consent records written at 0008.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column without a default: a metadata change on both databases (SQLite's ADD
    # COLUMN, PostgreSQL's too), whatever the number of records.
    op.add_column("consent_record", sa.Column("arguments", sa.Text(), nullable=True))


def downgrade() -> None:
    # SQLite has dropped columns in place since 3.35; the column has no index or constraint.
    op.drop_column("consent_record", "arguments")
