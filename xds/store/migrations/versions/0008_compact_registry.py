"""A compact registry (issue 14): integer object ids, a code dictionary, compressed XML.

- document_entry, submission_set and folder get an integer `id` (their primary key; on SQLite
  the rowid) and keep entry_uuid unique. The side tables object_code, author and reference_id
  are keyed by that id instead of the entryUUID (WITHOUT ROWID on SQLite).
- object_code's `attribute, code` text becomes the id of a row of the new dictionary `code`.
- Every object's stored XML is compressed (xds.store.stored_xml) and its size kept beside it
  (`xml_size`, what LeafClass answer limits count).

Existing rows carry over. The object tables are renamed aside, created anew and copied in
batches (the XML compressed on the way), then the side tables are filled by joins, and the old
tables dropped. Ids are given in copying order, DocumentEntries first; PostgreSQL's sequence
registry_object_id continues after the largest.

Written by hand to match xds/store/tables.py; tests/test_store_migrations.py checks that the two
agree on SQLite and PostgreSQL, and tests/test_store_compact.py upgrades a registry filled by the
schema of 0007 and compares every query answer before and after.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

from xds.store import stored_xml

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Copied from tables.py, not imported (see 0001).
UUID = 64
OID = 128
URN = 128
PATIENT = 256
TEXT_KEY = 512
DTM = 14
#: Rows copied at a time.
BATCH = 2000
OBJECT_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")

#: The object tables and the named indexes and constraints each had before this revision.
OLD_INDEXES = {
    "document_entry": ["ix_document_entry_patient", "ix_document_entry_unique_id"],
    "submission_set": ["ix_submission_set_patient"],
    "folder": ["ix_folder_patient"],
    "association": ["ix_association_source", "ix_association_target"],
}
OLD_CONSTRAINTS = {  # PostgreSQL only: SQLite's go with the table
    "document_entry": ["pk_document_entry", "uq_document_entry_logical_id_version"],
    "submission_set": ["pk_submission_set", "uq_submission_set_unique_id"],
    "folder": ["pk_folder", "uq_folder_unique_id_version", "uq_folder_logical_id_version"],
    "association": ["pk_association"],
}
SIDE_INDEXES = {"object_code": ["ix_object_code_code"], "author": ["ix_author_person"],
                "reference_id": ["ix_reference_id_value"]}


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _new_object_tables() -> None:
    def xml() -> list[sa.Column]:
        return [sa.Column("xml", sa.LargeBinary(), nullable=False), sa.Column("xml_size", sa.Integer(), nullable=False)]
    op.create_table(
        "document_entry",
        sa.Column("id", OBJECT_ID, autoincrement=False, nullable=False),
        sa.Column("entry_uuid", sa.String(UUID), nullable=False),
        sa.Column("logical_id", sa.String(UUID), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("latest", sa.Boolean(), server_default=sa.true(), nullable=False),
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
        *xml(),
        sa.PrimaryKeyConstraint("id", name="pk_document_entry"),
        sa.UniqueConstraint("entry_uuid", name="uq_document_entry_entry_uuid"),
        sa.UniqueConstraint("logical_id", "version", name="uq_document_entry_logical_id_version"),
    )
    op.create_table(
        "submission_set",
        sa.Column("id", OBJECT_ID, autoincrement=False, nullable=False),
        sa.Column("entry_uuid", sa.String(UUID), nullable=False),
        sa.Column("unique_id", sa.String(OID), nullable=False),
        sa.Column("source_id", sa.String(OID), nullable=True),
        sa.Column("patient_id", sa.String(PATIENT), nullable=False),
        sa.Column("submission_time", sa.String(DTM), nullable=True),
        sa.Column("status", sa.String(URN), nullable=False),
        sa.Column("home_community_id", sa.String(OID), nullable=True),
        *xml(),
        sa.PrimaryKeyConstraint("id", name="pk_submission_set"),
        sa.UniqueConstraint("entry_uuid", name="uq_submission_set_entry_uuid"),
        sa.UniqueConstraint("unique_id", name="uq_submission_set_unique_id"),
    )
    op.create_table(
        "folder",
        sa.Column("id", OBJECT_ID, autoincrement=False, nullable=False),
        sa.Column("entry_uuid", sa.String(UUID), nullable=False),
        sa.Column("unique_id", sa.String(OID), nullable=False),
        sa.Column("logical_id", sa.String(UUID), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("latest", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("patient_id", sa.String(PATIENT), nullable=False),
        sa.Column("last_update_time", sa.String(DTM), nullable=True),
        sa.Column("status", sa.String(URN), nullable=False),
        sa.Column("home_community_id", sa.String(OID), nullable=True),
        *xml(),
        sa.PrimaryKeyConstraint("id", name="pk_folder"),
        sa.UniqueConstraint("entry_uuid", name="uq_folder_entry_uuid"),
        sa.UniqueConstraint("unique_id", "version", name="uq_folder_unique_id_version"),
        sa.UniqueConstraint("logical_id", "version", name="uq_folder_logical_id_version"),
    )
    op.create_table(
        "association",
        sa.Column("entry_uuid", sa.String(UUID), nullable=False),
        sa.Column("type", sa.String(URN), nullable=False),
        sa.Column("source", sa.String(UUID), nullable=False),
        sa.Column("target", sa.String(UUID), nullable=False),
        sa.Column("submission_set_status", sa.String(32), nullable=True),
        sa.Column("status", sa.String(URN), nullable=False),
        *xml(),
        sa.PrimaryKeyConstraint("entry_uuid", name="pk_association"),
    )


def _new_object_indexes() -> None:
    op.create_index("ix_document_entry_patient", "document_entry",
                    ["patient_id", "status", "object_type", "creation_time"], postgresql_include=["id"])
    op.create_index("ix_document_entry_unique_id", "document_entry", ["unique_id"])
    op.create_index("ix_submission_set_patient", "submission_set", ["patient_id", "status"])
    op.create_index("ix_folder_patient", "folder", ["patient_id", "status"])
    op.create_index("ix_association_source", "association", ["source"])
    op.create_index("ix_association_target", "association", ["target"])


def _new_side_tables() -> None:
    op.create_table(
        "code",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("attribute", sa.String(64), nullable=False),
        sa.Column("value", sa.String(TEXT_KEY), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_code"),
        sa.UniqueConstraint("attribute", "value", name="uq_code_attribute_value"),
    )
    op.create_table(
        "object_code",
        sa.Column("object_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("code_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("object_id", "code_id", name="pk_object_code"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "author",
        sa.Column("object_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("person", sa.String(TEXT_KEY), nullable=False),
        sa.PrimaryKeyConstraint("object_id", "person", name="pk_author"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "reference_id",
        sa.Column("object_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("value", sa.String(TEXT_KEY), nullable=False),
        sa.PrimaryKeyConstraint("object_id", "value", name="pk_reference_id"),
        sqlite_with_rowid=False,
    )


def _new_side_indexes() -> None:
    op.create_index("ix_object_code_code_id", "object_code", ["code_id", "object_id"])
    op.create_index("ix_author_person", "author", ["person"])
    op.create_index("ix_reference_id_value", "reference_id", ["value"])


def _set_aside(table: str, indexes: list[str], constraints: list[str], suffix: str = "_0007") -> str:
    """Rename `table` to table_0007 (its revision) with its indexes and constraints out of the way
    of the names of the table made in its place."""
    old = f"{table}{suffix}"
    for index in indexes:
        op.drop_index(index, table_name=table)
    if _postgresql():
        for constraint in constraints:
            op.execute(f'ALTER TABLE "{table}" RENAME CONSTRAINT "{constraint}" TO "{constraint}{suffix}"')
    op.rename_table(table, old)
    return old


def _copy(source: str, target: str, transform: Callable[[dict], dict]) -> int:
    """Copy every row of `source` into `target` through `transform`: read in the table's own
    order as one streamed statement (a key-ordered read of a table larger than memory jumps
    around the disk), written in batches of BATCH rows, so memory stays flat whatever the size.
    Both databases let one connection write to a table while it reads another."""
    bind = op.get_bind()
    source_table = sa.Table(source, sa.MetaData(), autoload_with=bind)
    target_table = sa.Table(target, sa.MetaData(), autoload_with=bind)
    copied = 0
    rows = bind.execute(sa.select(source_table).execution_options(yield_per=BATCH))
    for batch in rows.partitions():
        bind.execute(sa.insert(target_table), [transform(dict(row._mapping)) for row in batch])
        copied += len(batch)
    return copied


def _compressed(row: dict) -> dict:
    text = row["xml"]
    row["xml"] = stored_xml.compress(text)
    row["xml_size"] = stored_xml.utf8_size(text)
    return row


def upgrade() -> None:
    if not _postgresql():
        # One transaction rewrites every table: with the server's 32 MB page cache, SQLite spills
        # changed pages to the write-ahead log again and again (seen at 1,000,000 entries: the log
        # at 12 GB and growing, the side rows then inserted in the old tables' order). 1 GB for
        # this connection, which ends with the migration.
        op.execute("PRAGMA cache_size = -1048576")
    old = {table: _set_aside(table, OLD_INDEXES[table], OLD_CONSTRAINTS[table]) for table in OLD_INDEXES}
    side = {table: _set_aside(table, SIDE_INDEXES[table], [f"pk_{table}"]) for table in SIDE_INDEXES}
    _new_object_tables()
    _new_side_tables()

    next_id = 1
    for table in ("document_entry", "submission_set", "folder"):
        def with_id(row: dict, counter=iter(range(next_id, 2**62))) -> dict:
            row["id"] = next(counter)
            return _compressed(row)
        next_id += _copy(old[table], table, with_id)
    _copy(old["association"], "association", _compressed)

    # Side rows in the order of their new keys: appended, not inserted at random places (which,
    # in one transaction larger than the page cache, SQLite pays for in log frames).
    objects = ("(SELECT id, entry_uuid FROM document_entry UNION ALL SELECT id, entry_uuid FROM submission_set"
               " UNION ALL SELECT id, entry_uuid FROM folder)")
    op.execute(f"INSERT INTO code (attribute, value) SELECT DISTINCT attribute, code FROM {side['object_code']}"
               " ORDER BY attribute, code")
    op.execute(f"INSERT INTO object_code (object_id, code_id) SELECT o.id, c.id FROM {side['object_code']} x"
               f" JOIN code c ON c.attribute = x.attribute AND c.value = x.code JOIN {objects} o"
               " ON o.entry_uuid = x.object_uuid ORDER BY o.id, c.id")
    op.execute(f"INSERT INTO author (object_id, person) SELECT o.id, x.person FROM {side['author']} x"
               f" JOIN {objects} o ON o.entry_uuid = x.object_uuid ORDER BY o.id, x.person")
    op.execute(f"INSERT INTO reference_id (object_id, value) SELECT o.id, x.value FROM {side['reference_id']} x"
               f" JOIN {objects} o ON o.entry_uuid = x.object_uuid ORDER BY o.id, x.value")
    for table in (*old.values(), *side.values()):
        op.drop_table(table)
    _new_object_indexes()
    _new_side_indexes()
    if _postgresql():
        op.execute(f"CREATE SEQUENCE registry_object_id START WITH {next_id}")


def downgrade() -> None:
    bind = op.get_bind()
    if _postgresql():
        op.execute("DROP SEQUENCE registry_object_id")
    new_indexes = {
        "document_entry": ["ix_document_entry_patient", "ix_document_entry_unique_id"],
        "submission_set": ["ix_submission_set_patient"], "folder": ["ix_folder_patient"],
        "association": ["ix_association_source", "ix_association_target"],
    }
    constraints = {
        "document_entry": ["pk_document_entry", "uq_document_entry_entry_uuid", "uq_document_entry_logical_id_version"],
        "submission_set": ["pk_submission_set", "uq_submission_set_entry_uuid", "uq_submission_set_unique_id"],
        "folder": ["pk_folder", "uq_folder_entry_uuid", "uq_folder_unique_id_version", "uq_folder_logical_id_version"],
        "association": ["pk_association"],
    }
    new = {table: _set_aside(table, new_indexes[table], constraints[table], "_0008") for table in new_indexes}
    side_indexes = {"object_code": ["ix_object_code_code_id"], "author": ["ix_author_person"],
                    "reference_id": ["ix_reference_id_value"]}
    side = {table: _set_aside(table, side_indexes[table], [f"pk_{table}"], "_0008") for table in side_indexes}
    _old_tables()

    def plain(row: dict) -> dict:
        row["xml"] = stored_xml.decompress(bytes(row["xml"]))
        row.pop("xml_size")
        row.pop("id", None)
        return row
    for table in new:
        _copy(new[table], table, plain)
    objects = ("(SELECT id, entry_uuid FROM document_entry_0008 UNION ALL SELECT id, entry_uuid FROM submission_set_0008"
               " UNION ALL SELECT id, entry_uuid FROM folder_0008)")
    bind.execute(sa.text(
        f"INSERT INTO object_code (object_uuid, attribute, code) SELECT o.entry_uuid, c.attribute, c.value"
        f" FROM {side['object_code']} x JOIN code c ON c.id = x.code_id"
        f" JOIN {objects} o ON o.id = x.object_id"))
    bind.execute(sa.text(f"INSERT INTO author (object_uuid, person) SELECT o.entry_uuid, x.person"
                         f" FROM {side['author']} x JOIN {objects} o ON o.id = x.object_id"))
    bind.execute(sa.text(f"INSERT INTO reference_id (object_uuid, value) SELECT o.entry_uuid, x.value"
                         f" FROM {side['reference_id']} x JOIN {objects} o ON o.id = x.object_id"))
    for table in (*new.values(), *side.values(), "code"):
        op.drop_table(table)
    _old_indexes()


def _old_tables() -> None:
    """The object and side tables as 0007 left them, without their secondary indexes."""
    op.create_table(
        "document_entry",
        sa.Column("entry_uuid", sa.String(UUID), nullable=False),
        sa.Column("logical_id", sa.String(UUID), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("latest", sa.Boolean(), server_default=sa.true(), nullable=False),
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
        sa.UniqueConstraint("logical_id", "version", name="uq_document_entry_logical_id_version"),
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
    op.create_table(
        "folder",
        sa.Column("entry_uuid", sa.String(UUID), nullable=False),
        sa.Column("unique_id", sa.String(OID), nullable=False),
        sa.Column("patient_id", sa.String(PATIENT), nullable=False),
        sa.Column("last_update_time", sa.String(DTM), nullable=True),
        sa.Column("status", sa.String(URN), nullable=False),
        sa.Column("home_community_id", sa.String(OID), nullable=True),
        sa.Column("xml", sa.Text(), nullable=False),
        sa.Column("logical_id", sa.String(UUID), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("latest", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.PrimaryKeyConstraint("entry_uuid", name="pk_folder"),
        sa.UniqueConstraint("unique_id", "version", name="uq_folder_unique_id_version"),
        sa.UniqueConstraint("logical_id", "version", name="uq_folder_logical_id_version"),
    )
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
    op.create_table(
        "object_code",
        sa.Column("object_uuid", sa.String(UUID), nullable=False),
        sa.Column("attribute", sa.String(64), nullable=False),
        sa.Column("code", sa.String(TEXT_KEY), nullable=False),
        sa.PrimaryKeyConstraint("object_uuid", "attribute", "code", name="pk_object_code"),
    )
    op.create_table(
        "author",
        sa.Column("object_uuid", sa.String(UUID), nullable=False),
        sa.Column("person", sa.String(TEXT_KEY), nullable=False),
        sa.PrimaryKeyConstraint("object_uuid", "person", name="pk_author"),
    )
    op.create_table(
        "reference_id",
        sa.Column("object_uuid", sa.String(UUID), nullable=False),
        sa.Column("value", sa.String(TEXT_KEY), nullable=False),
        sa.PrimaryKeyConstraint("object_uuid", "value", name="pk_reference_id"),
    )


def _old_indexes() -> None:
    for table, indexes in OLD_INDEXES.items():
        for index in indexes:
            column = index.removeprefix(f"ix_{table}_")
            columns = ["patient_id", "status", "object_type", "creation_time", "entry_uuid"] \
                if index == "ix_document_entry_patient" else ["patient_id", "status"] if column == "patient" \
                else [column]
            op.create_index(index, table, columns)
    op.create_index("ix_object_code_code", "object_code", ["attribute", "code", "object_uuid"])
    op.create_index("ix_author_person", "author", ["person"])
    op.create_index("ix_reference_id_value", "reference_id", ["value"])
