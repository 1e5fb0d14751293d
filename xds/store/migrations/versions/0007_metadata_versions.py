"""Metadata Update (ITI-57): versions of DocumentEntries and Folders.

document_entry already had logical_id and version (0001); it gains `latest`, and the database
holds (logical_id, version) unique. folder gains logical_id, version and latest; its uniqueId
is shared by a Folder's versions, so it is unique per version instead of alone.

Existing rows carry over: every DocumentEntry and Folder registered before becomes version 1 of
itself (lid = its entryUUID, the latest version), in its columns and in its stored ebRIM XML
(the lid attribute and rim:VersionInfo versionName="1", which LeafClass answers serve as
stored).

Written by hand to match xds/store/tables.py; tests/test_store_migrations.py checks that the two
agree on SQLite and PostgreSQL, and tests/test_registry_update.py upgrades a registry filled by
the schema of 0006.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from lxml import etree

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Copied from tables.py, not imported (see 0001).
UUID = 64
OID = 128
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
#: ebRIM 3.0 RegistryObjectType: Slot*, Name?, Description?, VersionInfo?, then the rest.
BEFORE_VERSION_INFO = frozenset(f"{{{RIM}}}{name}" for name in ("Slot", "Name", "Description"))
#: Rows read and rewritten at a time.
BATCH = 500
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def upgrade() -> None:
    bind = op.get_bind()
    # Every existing DocumentEntry is the first version of itself: no version was ever made
    # before this revision, whatever lid or VersionInfo its submitter sent.
    op.execute("UPDATE document_entry SET logical_id = entry_uuid, version = '1'")
    with op.batch_alter_table("document_entry") as batch:
        batch.add_column(sa.Column("latest", sa.Boolean(), server_default=sa.true(), nullable=False))
        # The unique constraint's index leads with logical_id: it serves the lookups this one did.
        batch.drop_index("ix_document_entry_logical_id")
        batch.create_unique_constraint("uq_document_entry_logical_id_version", ["logical_id", "version"])

    with op.batch_alter_table("folder") as batch:
        batch.add_column(sa.Column("logical_id", sa.String(UUID), nullable=True))
        batch.add_column(sa.Column("version", sa.String(32), nullable=True))
        batch.add_column(sa.Column("latest", sa.Boolean(), server_default=sa.true(), nullable=False))
    op.execute("UPDATE folder SET logical_id = entry_uuid, version = '1'")
    with op.batch_alter_table("folder") as batch:
        batch.alter_column("logical_id", existing_type=sa.String(UUID), nullable=False)
        batch.alter_column("version", existing_type=sa.String(32), nullable=False)
        batch.drop_constraint("uq_folder_unique_id", type_="unique")
        batch.create_unique_constraint("uq_folder_unique_id_version", ["unique_id", "version"])
        batch.create_unique_constraint("uq_folder_logical_id_version", ["logical_id", "version"])

    for table in ("document_entry", "folder"):
        _first_versions_in_xml(bind, table)


def downgrade() -> None:
    # The older schema holds a Folder uniqueId once: only the latest version of each Folder stays
    # (with its codes); DocumentEntry versions stay as rows of their own, as before.
    bind = op.get_bind()
    folder = sa.table("folder", sa.column("entry_uuid", sa.String), sa.column("latest", sa.Boolean))
    code = sa.table("object_code", sa.column("object_uuid", sa.String))
    older = sa.select(folder.c.entry_uuid).where(folder.c.latest == sa.false())
    bind.execute(sa.delete(code).where(code.c.object_uuid.in_(older)))
    bind.execute(sa.delete(folder).where(folder.c.latest == sa.false()))
    with op.batch_alter_table("folder") as batch:
        batch.drop_constraint("uq_folder_logical_id_version", type_="unique")
        batch.drop_constraint("uq_folder_unique_id_version", type_="unique")
        batch.create_unique_constraint("uq_folder_unique_id", ["unique_id"])
        batch.drop_column("latest")
        batch.drop_column("version")
        batch.drop_column("logical_id")
    with op.batch_alter_table("document_entry") as batch:
        batch.drop_constraint("uq_document_entry_logical_id_version", type_="unique")
        batch.create_index("ix_document_entry_logical_id", ["logical_id"])
        batch.drop_column("latest")


def _first_versions_in_xml(bind, name: str) -> None:
    """Write lid = entryUUID and VersionInfo versionName="1" into the stored XML of every row of
    `name` (all version 1 here), a batch of rows at a time in entryUUID order."""
    table = sa.table(name, sa.column("entry_uuid", sa.String), sa.column("xml", sa.Text))
    last = ""
    while True:
        rows = bind.execute(sa.select(table.c.entry_uuid, table.c.xml).where(table.c.entry_uuid > last)
                            .order_by(table.c.entry_uuid).limit(BATCH)).all()
        if not rows:
            return
        changed = [{"key": uuid, "xml": xml} for uuid, xml in
                   ((uuid, _as_first_version(uuid, xml)) for uuid, xml in rows) if xml is not None]
        if changed:
            bind.execute(sa.update(table).where(table.c.entry_uuid == sa.bindparam("key"))
                         .values(xml=sa.bindparam("xml")), changed)
        last = rows[-1].entry_uuid


def _as_first_version(entry_uuid: str, xml: str) -> str | None:
    """The stored XML with lid and VersionInfo of a first version; None when it has them."""
    start_tag = xml[: xml.find(">") + 1]
    if f'lid="{entry_uuid}"' in start_tag and 'versionName="1"' in xml:
        return None
    element = etree.fromstring(xml, _PARSER)
    element.set("lid", entry_uuid)
    info = element.find(f"{{{RIM}}}VersionInfo")
    if info is None:
        info = etree.Element(f"{{{RIM}}}VersionInfo")
        position = 0
        for index, child in enumerate(element):
            if child.tag in BEFORE_VERSION_INFO:
                position = index + 1
        element.insert(position, info)
    info.attrib.clear()
    info.set("versionName", "1")
    return etree.tostring(element, encoding="unicode")
