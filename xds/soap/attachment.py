"""Binary content that travels beside a SOAP envelope: MTOM parts received, and the bodies of
parts sent. Small content lives in memory; large content lives in a file, so that a request or
response of hundreds of megabytes passes through a process with its memory bounded.

Theory of operation.
- An `Attachment` is read-only content of a known size: `open()` gives a binary file object,
  `content()` the whole of it as bytes (for small content only: it is what it says), `chunks()`
  an iterator of pieces. `sha1` is the hex SHA-1 of the content: computed while the content was
  received when the spool was asked to (`Spool(digest=True)`), else on first use.
- `Spool` is where the parts of one incoming message go while it is read: each part starts in
  memory and moves to a file in the spool's directory once it outgrows `memory_limit`. A spool
  file is locked (flock) by the process that writes it for as long as the request lives, so
  `Spool.sweep()` - run when a server starts - removes exactly the files of requests that died
  with their process (killed mid-upload), whatever other live workers are doing.
- A received attachment's spool file belongs to the request: the endpoint discards it when the
  response has been sent, unless a handler moved it elsewhere first (`move_to`, a rename on the
  same file system: a repository keeps a 500 MB document without copying it).

What this module does not know: MIME syntax (mtom.py), XML, or why content is kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

CHUNK = 1024 * 1024  # reads and writes of large content, in bytes
SPOOL_SUFFIX = ".part"
#: A part's file before it is locked and renamed (see _spill); sweep() removes one left by a
#: crash once it is _FRESH_AGE seconds old.
_FRESH_SUFFIX, _FRESH_AGE = ".part-new", 600


@runtime_checkable
class Content(Protocol):
    """What a response part may be besides bytes: anything with a size that opens as a binary
    file (an Attachment, a document of a blob store)."""

    @property
    def size(self) -> int: ...

    def open(self) -> BinaryIO: ...


class Attachment:
    """The content of one MIME part. See the module's docstring."""

    content_id: str | None
    content_type: str
    headers: dict[str, str]

    def __init__(self, *, content_id: str | None = None, content_type: str = "",
                 headers: dict[str, str] | None = None) -> None:
        self.content_id = content_id
        self.content_type = content_type
        self.headers = headers or {}
        self._sha1: str | None = None

    # -- reading --------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        raise NotImplementedError

    @property
    def path(self) -> Path | None:
        """The file that holds the content, or None when it is held in memory."""
        return None

    def open(self) -> BinaryIO:
        raise NotImplementedError

    def content(self) -> bytes:
        with self.open() as stream:
            return stream.read()

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        with self.open() as stream:
            while piece := stream.read(size):
                yield piece

    @property
    def sha1(self) -> str:
        """Lower-case hex SHA-1 of the content."""
        if self._sha1 is None:
            digest = hashlib.sha1()
            for piece in self.chunks():
                digest.update(piece)
            self._sha1 = digest.hexdigest()
        return self._sha1

    # -- keeping or dropping it -----------------------------------------------------------------

    def move_to(self, target: Path) -> None:
        """Put the content at `target` (a new file; its folder must exist): a rename when the
        content is a file on the same file system, else a copy. Not fsynced: the caller that
        needs durability syncs the target. The attachment then reads from `target`."""
        raise NotImplementedError

    def discard(self) -> None:
        """Drop the content (remove a spool file that was not moved away). Idempotent."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.content_id!r} {self.content_type!r} {self.size} bytes>"


class MemoryAttachment(Attachment):
    """Content held in memory: small MTOM parts, inline base64, parts built by a client."""

    def __init__(self, data: bytes, **kwargs) -> None:
        super().__init__(**kwargs)
        self._data = bytes(data)

    @property
    def size(self) -> int:
        return len(self._data)

    def open(self) -> BinaryIO:
        return io.BytesIO(self._data)

    def content(self) -> bytes:
        return self._data

    def move_to(self, target: Path) -> None:
        with open(target, "xb") as out:
            out.write(self._data)


class FileAttachment(Attachment):
    """Content in a file. `owned`: the file is a spool file of this request (discard() removes
    it; `lock` is its open descriptor holding the flock that tells sweep() it is alive)."""

    def __init__(self, path: Path, size: int | None = None, *, sha1: str | None = None,
                 owned: bool = False, lock: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._path = Path(path)
        self._size = self._path.stat().st_size if size is None else size
        self._sha1 = sha1
        self._owned = owned
        self._lock = lock

    @property
    def size(self) -> int:
        return self._size

    @property
    def path(self) -> Path:
        return self._path

    def open(self) -> BinaryIO:
        return open(self._path, "rb")

    def move_to(self, target: Path) -> None:
        target = Path(target)
        if target.exists():
            raise FileExistsError(target)
        try:
            os.rename(self._path, target)
        except OSError:  # another file system (EXDEV), or a store that is not a plain folder
            with self.open() as source, open(target, "xb") as out:
                shutil.copyfileobj(source, out, CHUNK)
            if self._owned:
                _unlink(self._path)
        self._path = target
        self._owned = False  # the content is the caller's now; discard() leaves it alone
        self._release()

    def discard(self) -> None:
        if self._owned:
            _unlink(self._path)
            self._owned = False
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __del__(self) -> None:  # a request dropped without close(): do not leak descriptors
        with contextlib.suppress(Exception):
            self._release()


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# -- the spool ------------------------------------------------------------------------------------


class Spool:
    """Where the parts of incoming messages are written while they are read.

    directory     the folder of spool files (created if missing); None keeps every part in memory
    memory_limit  a part moves from memory to a file once it is larger than this
    digest        compute each part's SHA-1 while it is received (saves reading it again)
    """

    def __init__(self, directory: Path | str | None = None, *, memory_limit: int = CHUNK, digest: bool = False):
        self.directory = Path(directory) if directory is not None else None
        self.memory_limit = memory_limit
        self.digest = digest
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def writer(self, headers: dict[str, str], *, content_id: str | None = None, in_memory: bool = False,
               limit: int | None = None) -> PartWriter:
        """A writer for one part. in_memory: never spill to a file (the SOAP envelope); limit: the
        most bytes the part may hold (PartTooLarge beyond)."""
        return PartWriter(self, headers, content_id=content_id,
                          in_memory=in_memory or self.directory is None, limit=limit)

    def sweep(self) -> int:
        """Remove the spool files that no live request holds (left by a killed process).
        Returns how many were removed."""
        if self.directory is None:
            return 0
        removed = 0
        for path in self.directory.glob("*" + SPOOL_SUFFIX):
            if remove_if_unlocked(path):
                removed += 1
        for path in self.directory.glob("*" + _FRESH_SUFFIX):
            # A crash between making a part's file and naming it; only old ones (a young one
            # may be about to be locked by its writer).
            try:
                if time.time() - path.stat().st_mtime > _FRESH_AGE and remove_if_unlocked(path):
                    removed += 1
            except FileNotFoundError:
                pass
        return removed


def remove_if_unlocked(path: Path) -> bool:
    """Remove `path` if no process holds a flock on it (then nobody is writing it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        _unlink(path)
        return True
    finally:
        os.close(fd)


class PartTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"part larger than {limit} bytes")
        self.limit = limit


class PartWriter:
    """Receives one part's content piece by piece; `finish()` gives its Attachment."""

    def __init__(self, spool: Spool, headers: dict[str, str], *, content_id: str | None, in_memory: bool,
                 limit: int | None) -> None:
        self.spool = spool
        self.headers = headers
        self.content_id = content_id
        self.in_memory = in_memory
        self.limit = limit
        self.size = 0
        self._pieces: list[bytes] = []
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._hash = hashlib.sha1() if spool.digest else None

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            raise PartTooLarge(self.limit)
        if self._hash is not None:
            self._hash.update(data)
        if self._file is not None:
            self._file.write(data)
            return
        self._pieces.append(data)
        if not self.in_memory and self.size > self.spool.memory_limit:
            self._spill()

    def _spill(self) -> None:
        assert self.spool.directory is not None
        # Made under a name sweep() does not look at, locked, then renamed: a worker starting
        # meanwhile must never find the file unlocked and remove it. The lock says "alive" to
        # sweep(); it goes with the descriptor, kept open until the request ends
        # (FileAttachment.discard / move_to).
        fd, fresh = tempfile.mkstemp(suffix=_FRESH_SUFFIX, prefix="part-", dir=self.spool.directory)
        fcntl.flock(fd, fcntl.LOCK_EX)
        name = fresh[: -len(_FRESH_SUFFIX)] + SPOOL_SUFFIX
        os.rename(fresh, name)
        self._path = Path(name)
        self._file = os.fdopen(os.dup(fd), "wb", buffering=CHUNK)
        self._lock = fd
        for piece in self._pieces:
            self._file.write(piece)
        self._pieces = []

    def finish(self, content_type: str = "") -> Attachment:
        sha1 = self._hash.hexdigest() if self._hash is not None else None
        if self._file is not None:
            self._file.close()
            self._file = None
            attachment: Attachment = FileAttachment(self._path, self.size, sha1=sha1, owned=True, lock=self._lock,
                                                    content_id=self.content_id, content_type=content_type,
                                                    headers=self.headers)
        else:
            data = self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces)
            self._pieces = []
            attachment = MemoryAttachment(data, content_id=self.content_id, content_type=content_type,
                                          headers=self.headers)
            attachment._sha1 = sha1
        return attachment

    def abort(self) -> None:
        """Drop what was written (the message was refused or cut short)."""
        self._pieces = []
        if self._file is not None:
            self._file.close()
            self._file = None
            _unlink(self._path)
            os.close(self._lock)
