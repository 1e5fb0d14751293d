"""Alembic environment, driven by xds.store.db.upgrade / downgrade.

The caller passes an open connection, already inside the transaction the migrations run in
(config.attributes["connection"]); there is no URL in any file and no offline (--sql) mode.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from xds.store.tables import metadata

#: Key of the PostgreSQL advisory lock held while migrating ("XDS" in ASCII).
MIGRATION_LOCK = 0x584453

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("run migrations through xds.store.db.upgrade(url)")

if connection.dialect.name == "postgresql":
    # Several hosts may start against one database at once: the others wait here, then find
    # the revision already current. Released when the transaction ends.
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
