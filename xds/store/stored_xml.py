"""The stored ebRIM XML of registry objects, compressed.

A DocumentEntry's XML is about 7 KB, mostly the same element names, namespaces and
classification scheme UUIDs in every entry; it was half of SQLite's bytes (15.4 KB per entry)
and most of PostgreSQL's document_entry table. Stored here as a Zstandard frame made with a
fixed dictionary of those standard strings (`ebrim-dictionary-1.xml`: placeholder objects of
each kind, written by the project's own writer): about 1 KB per DocumentEntry, 0.1 KB per
Association, read back in about 10 microseconds.

Format of a stored value: one version byte, then the frame. Version 1 is the dictionary file of
that number, which therefore never changes: a new dictionary would be a new file and byte, and
values of every version stay readable. Written and read only through `StoredXml`, the column
type, so the rest of the code sees text.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import NamedTuple

import zstandard
from sqlalchemy import LargeBinary
from sqlalchemy.types import TypeDecorator

#: The dictionary of each format version.
_DICTIONARIES = {1: Path(__file__).with_name("ebrim-dictionary-1.xml")}
CURRENT = 1
#: Zstandard level: 3 compresses a DocumentEntry in some 40 microseconds; 9 saves 10% more
#: bytes at ten times the time, on the register path.
LEVEL = 3

_local = threading.local()
_shared: dict[int, zstandard.ZstdCompressionDict] = {}


def _dictionary(version: int) -> zstandard.ZstdCompressionDict:
    cache = _shared.get(version)
    if cache is None:
        data = _DICTIONARIES[version].read_bytes()
        cache = _shared[version] = zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return cache


def _coders() -> tuple[zstandard.ZstdCompressor, dict[int, zstandard.ZstdDecompressor]]:
    # A compressor or decompressor must not be used by two threads at once: one of each per thread.
    coders = getattr(_local, "coders", None)
    if coders is None:
        compressor = zstandard.ZstdCompressor(level=LEVEL, dict_data=_dictionary(CURRENT), write_checksum=False,
                                              write_content_size=True, write_dict_id=False)
        coders = _local.coders = (compressor, {})
    return coders


class Packed(NamedTuple):
    """XML compressed before the transaction that stores it (`pack`): the register path packs
    outside SQLite's write lock what the column type would otherwise compress inside it."""

    data: bytes  # as stored: the version byte and the frame
    size: int  # the text's bytes in UTF-8


def utf8_size(text: str | Packed | None) -> int:
    """The bytes of `text` in UTF-8 (its length when ASCII, which CPython knows without a look):
    an object's `xml_size`, what LeafClass answer limits count."""
    if not text:
        return 0
    if isinstance(text, Packed):
        return text.size
    return len(text) if text.isascii() else len(text.encode())


def compress(text: str) -> bytes:
    """`text` as it is stored: the version byte and the frame."""
    return bytes((CURRENT,)) + _coders()[0].compress(text.encode())


def pack(text: str) -> Packed:
    return Packed(compress(text), utf8_size(text))


def stored(value: str | Packed) -> bytes:
    """What a column of this type holds for `value`, text or packed already."""
    return value.data if isinstance(value, Packed) else compress(value)


def decompress(value: bytes) -> str:
    """The text of a stored value."""
    version = value[0]
    decompressors = _coders()[1]
    decompressor = decompressors.get(version)
    if decompressor is None:
        if version not in _DICTIONARIES:
            raise ValueError(f"stored XML of an unknown format version {version}")
        decompressor = decompressors[version] = zstandard.ZstdDecompressor(dict_data=_dictionary(version))
    return decompressor.decompress(value[1:]).decode()


class StoredXml(TypeDecorator):
    """A column of XML text stored compressed (BLOB on SQLite, bytea on PostgreSQL)."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: str | Packed | None, dialect) -> bytes | None:
        return None if value is None else stored(value)

    def process_result_value(self, value: bytes | None, dialect) -> str | None:
        return None if value is None else decompress(bytes(value))
