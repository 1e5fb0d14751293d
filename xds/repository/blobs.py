"""The blob store: where the Document Repository keeps documents, and how a submission's
documents become visible all at once or not at all.

What belongs here: files, names, durability, recovery after a crash. What does not: XDS
metadata (the store keeps a document's uniqueId, mimeType, SHA-1 and size beside its bytes,
and nothing else), SOAP, the registry (recovery is told whether a document was registered by a
function it is given).

The interface (`BlobStore`) is small so that a deployment can put documents elsewhere:
`FileBlobStore` works on any POSIX file system, a local disk or storage that several hosts
mount (renames within one file system are atomic; flock, used to tell live submissions from
dead ones, works on local disks and NFSv4).

Layout of `FileBlobStore(root)` (root is `data_dir/documents` by default):

    root/ab/cd/abcd...ef/content      a document's bytes as received
    root/ab/cd/abcd...ef/meta.json    {"uniqueId", "mimeType", "hash", "size", "patientId", "stored"}
    root/.incoming/                   staging, on the same file system as the documents
        part-*.part                   MTOM parts being received (xds.soap's Spool)
        doc-<uuid>/content, meta.json one staged document; the folder is flocked while the
                                      submission it belongs to lives
        doc-<uuid>/committed          written once the registry has said Success (see below)
        removed-<uuid>/               a removed document (ITI-86) whose files are being deleted

The folder of a document is named by the SHA-256 of its uniqueId (uniqueIds may hold any
character; the hash also spreads them evenly over 65,536 folders).

Theory of operation: one submission.
1. stage(): each document's content moves (a rename: the SOAP layer spooled it to
   .incoming) into doc-<uuid>/content, its meta.json beside it; both are fsynced, then the
   folders. Nothing is visible yet: retrieve() looks only at root/ab/cd/<key>.
2. The repository registers the metadata (ITI-42). On Failure: abort() removes the folders.
3. On Success: commit() writes `committed` into each (fsynced: from now on recovery rolls
   forward), then renames each doc-<uuid> to root/ab/cd/<key> (one atomic rename per
   document). The renames are not fsynced before the repository answers Success: a crash that
   loses some leaves their staged folders, which recovery finishes, as it finishes those of a
   crash between two renames. The marker is left out
   (`mark_commits=False`) when recovery can ask the registry itself, as with this server's own
   registry: its database then is the record of the decision, and a file and an fsync per
   submission are saved.
A document already stored under its uniqueId (a resubmission the registry accepted: same hash
and size) is kept as it is.

Recovery (`recover()`, run when a server starts and by `xds documents verify`): every staged
document that no live process holds (its folder's lock is free: the process died) is
finished. With a `committed` marker, roll forward. Without one, the crash happened between
staging and the registry's answer: ask `is_registered(uniqueId, hash)`; True (the registry
committed, we died before the marker) rolls forward, False rolls back, None (cannot tell: a
remote registry) leaves it for a later recovery. A folder without meta.json died while being
staged, before any registration: rolled back. Spool files of dead requests are removed.

Costs, per document: one folder made and renamed, two files written and fdatasynced, two
folder fsyncs (the staged folder, .incoming). Recovery fsyncs the parent folders of what it
rolls forward.

Removal (`remove()`, ITI-86 Remove Documents). The decision is one atomic rename: the
document's folder root/ab/cd/<key> becomes .incoming/removed-<uuid>, and both folders are
fsynced. From then on get() does not find it, whatever happens next: a crash cannot bring it
back. Then its files are deleted (unlinked: the bytes are freed by the file system, not merely
hidden; a retrieval already streaming the file keeps reading it until it closes it). A crash
between the rename and the deletion leaves a removed-* folder, which recovery deletes; it is
never mistaken for a staged document (recovery rolls doc-* folders forward or back).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Protocol

from xds.fsync import fsync_directory
from xds.soap.attachment import Attachment, Spool

log = logging.getLogger("xds.repository")

INCOMING = ".incoming"
CONTENT = "content"
META = "meta.json"
COMMITTED = "committed"
REMOVED = "removed-"  # a removed document's folder in .incoming, its files being deleted


@dataclass(frozen=True)
class NewDocument:
    """A document to stage: its content (any Attachment) and what the store keeps beside it."""

    unique_id: str
    mime_type: str
    content: Attachment
    hash: str   # lower-case hex SHA-1 of the content
    size: int
    patient_id: str = ""  # kept so that a retrieval's audit record names whose document it was
    extra: dict = field(default_factory=dict)  # more of meta.json (a signature's DSG verdict)


@dataclass(frozen=True)
class StoredDocument:
    """A document in the store; it is Content (size, open()) for xds.soap responses."""

    unique_id: str
    mime_type: str
    hash: str
    size: int
    path: Path
    patient_id: str = ""  # empty for documents stored before it was kept

    @classmethod
    def from_meta(cls, meta: dict, path: Path) -> "StoredDocument":
        return cls(meta.get("uniqueId", ""), meta.get("mimeType", ""), meta.get("hash", ""),
                   int(meta.get("size", 0)), path, meta.get("patientId", ""))

    def open(self) -> BinaryIO:
        return open(self.path, "rb")


@dataclass
class StagedDocument:
    path: Path      # .incoming/doc-<uuid>
    key: str
    unique_id: str
    lock: int | None = None  # the folder's descriptor, holding its flock


@dataclass
class Staged:
    """The documents of one submission, written under temporary names."""

    documents: list[StagedDocument] = field(default_factory=list)


@dataclass
class Recovery:
    rolled_forward: list[str] = field(default_factory=list)  # uniqueIds made visible
    rolled_back: list[str] = field(default_factory=list)     # uniqueIds dropped
    pending: list[str] = field(default_factory=list)         # uniqueIds left for later
    spool_files_removed: int = 0
    removals_finished: int = 0                               # removed documents' files deleted


class BlobStore(Protocol):
    """What the repository needs of a store of documents."""

    def spool(self) -> Spool: ...

    def stage(self, documents: Sequence[NewDocument]) -> Staged: ...

    def commit(self, staged: Staged) -> None: ...

    def abort(self, staged: Staged) -> None: ...

    def get(self, unique_id: str) -> StoredDocument | None: ...

    def remove(self, unique_id: str) -> StoredDocument | None: ...

    def __iter__(self) -> Iterator[StoredDocument]: ...

    def recover(self, is_registered: Callable[[str, str], bool | None]) -> Recovery: ...


#: Staging folders are made under this prefix, then locked and renamed (see stage()); recovery
#: removes one left by a crash once it is _FRESH_AGE seconds old.
_FRESH, _FRESH_AGE = ".new-", 600


def key_of(unique_id: str) -> str:
    return hashlib.sha256(unique_id.encode("utf-8")).hexdigest()


class FileBlobStore:
    """Documents as files under `root`; see the module's docstring."""

    def __init__(self, root: Path | str, *, fsync: bool = True, mark_commits: bool = True):
        self.root = Path(root)
        self.incoming = self.root / INCOMING
        self.fsync = fsync
        self.mark_commits = mark_commits
        self.incoming.mkdir(parents=True, exist_ok=True)

    def spool(self) -> Spool:
        """The SOAP layer's spool for this store: MTOM parts land beside the staging folders,
        so that staging a document is a rename, and each part's SHA-1 is computed on the way."""
        return Spool(self.incoming, digest=True)

    def path_of(self, unique_id: str) -> Path:
        key = key_of(unique_id)
        return self.root / key[:2] / key[2:4] / key

    # -- reading ----------------------------------------------------------------------------------

    def get(self, unique_id: str) -> StoredDocument | None:
        folder = self.path_of(unique_id)
        try:
            meta = json.loads((folder / META).read_bytes())
        except FileNotFoundError:
            return None
        if meta.get("uniqueId") != unique_id:  # a SHA-256 collision: not in this life
            return None
        return StoredDocument.from_meta(meta, folder / CONTENT)

    def __iter__(self) -> Iterator[StoredDocument]:
        for meta_path in self.root.glob(f"??/??/*/{META}"):
            try:
                meta = json.loads(meta_path.read_bytes())
            except (OSError, ValueError):
                log.warning("unreadable %s", meta_path)
                continue
            yield StoredDocument.from_meta(meta, meta_path.parent / CONTENT)

    # -- one submission ---------------------------------------------------------------------------

    def stage(self, documents: Sequence[NewDocument]) -> Staged:
        staged = Staged()
        try:
            for document in documents:
                # Made under a name recovery does not look at, locked, then renamed: a worker
                # starting meanwhile must never find the folder unlocked and drop it.
                name = f"doc-{uuid.uuid4().hex}"
                fresh = self.incoming / f"{_FRESH}{name}"
                fresh.mkdir()
                lock = os.open(fresh, os.O_RDONLY | os.O_DIRECTORY)
                fcntl.flock(lock, fcntl.LOCK_EX)
                folder = self.incoming / name
                os.rename(fresh, folder)
                item = StagedDocument(folder, key_of(document.unique_id), document.unique_id)
                item.lock = lock
                staged.documents.append(item)
                content = folder / CONTENT
                document.content.move_to(content)
                meta = {**document.extra, "uniqueId": document.unique_id, "mimeType": document.mime_type, "hash": document.hash,
                        "size": document.size, "patientId": document.patient_id, "stored": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                _write(folder / META, json.dumps(meta).encode(), self.fsync)
                if self.fsync:
                    _fsync_file(content)
                    os.fsync(item.lock)  # the folder's entries
            if self.fsync:
                fsync_directory(self.incoming)
        except BaseException:
            self.abort(staged)
            raise
        return staged

    def commit(self, staged: Staged) -> None:
        """Make the staged documents visible (after the registry said Success)."""
        if self.mark_commits:
            for item in staged.documents:
                _write(item.path / COMMITTED, b"", self.fsync)
                if self.fsync:
                    os.fsync(item.lock)
        # The renames need not reach the disk before the answer: a crash that loses one leaves
        # the staged folder, which recovery finishes (its marker, or the registry, says it was
        # committed) before the server serves again. A folder fsync per document saved.
        self._roll_forward([(item.path, item.key) for item in staged.documents], durable=False)
        self._release(staged)

    def abort(self, staged: Staged) -> None:
        """Drop the staged documents (the registry refused them, or staging failed)."""
        for item in staged.documents:
            shutil.rmtree(item.path, ignore_errors=True)
        self._release(staged)

    def _release(self, staged: Staged) -> None:
        for item in staged.documents:
            if item.lock is not None:
                os.close(item.lock)
                item.lock = None

    def _roll_forward(self, items: Sequence[tuple[Path, str]], durable: bool = True) -> None:
        parents = set()
        for source, key in items:
            target = self.root / key[:2] / key[2:4] / key
            if not target.parent.is_dir():
                target.parent.mkdir(parents=True, exist_ok=True)
                parents.add(target.parent.parent)  # a new folder: its own entry must be durable too
            try:
                os.rename(source, target)
            except OSError as exc:
                if not target.is_dir():
                    raise
                # Stored already (a resubmission with the same hash and size): keep the first.
                log.info("document %s already stored (%s); keeping the stored copy", key, exc.strerror)
                shutil.rmtree(source, ignore_errors=True)
            parents.add(target.parent)
        if self.fsync and durable:
            for parent in parents:
                fsync_directory(parent)

    # -- removal ----------------------------------------------------------------------------------

    def remove(self, unique_id: str) -> StoredDocument | None:
        """Remove a stored document (see the module's docstring): gone for get() once this
        returns, its files deleted. Returns what was removed, or None when no document of that
        uniqueId was stored (also when a concurrent removal took it first). An OSError before
        the rename leaves the document stored; after it, the document is removed and recovery
        deletes what is left of its files."""
        document = self.get(unique_id)
        if document is None:
            return None
        folder = self.path_of(unique_id)
        trash = self.incoming / f"{REMOVED}{uuid.uuid4().hex}"
        try:
            os.rename(folder, trash)
        except FileNotFoundError:
            return None  # removed by another request between our get() and our rename
        if self.fsync:
            fsync_directory(folder.parent)  # the document's entry is gone...
            fsync_directory(self.incoming)  # ...and the trash folder's is there, both durable
        try:
            shutil.rmtree(trash)
        except OSError:
            log.warning("removed document %s: its files in %s are left for recovery to delete", unique_id, trash,
                        exc_info=True)
        return document

    # -- recovery ---------------------------------------------------------------------------------

    def recover(self, is_registered: Callable[[str, str], bool | None]) -> Recovery:
        recovery = Recovery(spool_files_removed=self.spool().sweep())
        for trash in self.incoming.glob(f"{REMOVED}*"):
            # A crash between removing a document (the rename) and deleting its files.
            shutil.rmtree(trash, ignore_errors=True)
            recovery.removals_finished += 1
        for fresh in self.incoming.glob(f"{_FRESH}doc-*"):
            # A crash between making a staging folder and naming it: nothing was in it yet.
            # Only old ones: a young one may be about to be locked by its stager.
            try:
                if time.time() - fresh.stat().st_mtime > _FRESH_AGE:
                    shutil.rmtree(fresh, ignore_errors=True)
            except FileNotFoundError:
                pass
        for folder in sorted(self.incoming.glob("doc-*")):
            try:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue  # finished by its owner meanwhile
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live submission
                if folder.exists():  # not committed by its owner between our glob and our lock
                    self._recover_document(folder, is_registered, recovery)
            finally:
                os.close(fd)
        return recovery

    def _recover_document(self, folder: Path, is_registered: Callable[[str, str], bool | None],
                          recovery: Recovery) -> None:
        try:
            meta = json.loads((folder / META).read_bytes())
        except (OSError, ValueError):
            # Staging died while writing this one: it was never registered.
            shutil.rmtree(folder, ignore_errors=True)
            return
        unique_id, digest = meta.get("uniqueId", ""), meta.get("hash", "")
        decision = True if (folder / COMMITTED).exists() else is_registered(unique_id, digest)
        if decision is None:
            recovery.pending.append(unique_id)
            log.warning("recovery: cannot tell whether %s was registered; left in %s", unique_id, folder)
        elif decision:
            self._roll_forward([(folder, key_of(unique_id))])
            recovery.rolled_forward.append(unique_id)
            log.warning("recovery: %s was registered before a crash; now stored", unique_id)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            recovery.rolled_back.append(unique_id)
            log.warning("recovery: %s was never registered; dropped", unique_id)


# -- durability -----------------------------------------------------------------------------------


def _write(path: Path, data: bytes, fsync: bool) -> None:
    with open(path, "wb") as out:
        out.write(data)
        if fsync:
            out.flush()
            os.fdatasync(out.fileno())


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)
