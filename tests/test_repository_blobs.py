"""The file blob store: a submission's documents visible all at once or not at all, and
recovery of what a crash left half done (xds/repository/blobs.py, "Theory of operation")."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from xds.repository.blobs import COMMITTED, FileBlobStore, NewDocument, key_of
from xds.soap import FileAttachment, MemoryAttachment


def _document(unique_id: str, data: bytes, path: Path | None = None) -> NewDocument:
    import hashlib

    content = FileAttachment(path) if path is not None else MemoryAttachment(data)
    return NewDocument(unique_id, "text/plain", content, hashlib.sha1(data).hexdigest(), len(data))


def test_stage_is_invisible_until_commit(tmp_path):
    store = FileBlobStore(tmp_path)
    staged = store.stage([_document("1.2.1", b"one"), _document("1.2.2", b"two")])
    assert store.get("1.2.1") is None and list(store) == []
    store.commit(staged)
    assert store.get("1.2.1").path.read_bytes() == b"one"
    assert sorted(d.unique_id for d in store) == ["1.2.1", "1.2.2"]
    assert store.get("1.2.2").path == tmp_path / key_of("1.2.2")[:2] / key_of("1.2.2")[2:4] / key_of("1.2.2") / "content"
    assert list(store.incoming.iterdir()) == []


def test_abort_leaves_nothing(tmp_path):
    store = FileBlobStore(tmp_path)
    store.abort(store.stage([_document("1.2.1", b"one")]))
    assert store.get("1.2.1") is None and list(store.incoming.iterdir()) == []


def test_a_spooled_file_is_staged_by_a_rename(tmp_path):
    store = FileBlobStore(tmp_path)
    spooled = store.incoming / "part-x.part"
    spooled.write_bytes(b"big")
    inode = spooled.stat().st_ino
    store.commit(store.stage([_document("1.2.1", b"big", spooled)]))
    assert store.get("1.2.1").path.stat().st_ino == inode and not spooled.exists()


def test_a_stored_document_is_kept_when_stored_again(tmp_path):
    store = FileBlobStore(tmp_path)
    store.commit(store.stage([_document("1.2.1", b"first")]))
    store.commit(store.stage([_document("1.2.1", b"first")]))
    assert store.get("1.2.1").path.read_bytes() == b"first"
    assert list(store.incoming.iterdir()) == []


def _crash(store: FileBlobStore, staged, *, committed: bool) -> None:
    """What a process killed after staging leaves: the staged folders, their locks released."""
    for item in staged.documents:
        if committed:
            (item.path / COMMITTED).write_bytes(b"")
        os.close(item.lock)
        item.lock = None


def test_recovery_rolls_back_what_was_never_registered(tmp_path):
    store = FileBlobStore(tmp_path)
    _crash(store, store.stage([_document("1.2.1", b"one"), _document("1.2.2", b"two")]), committed=False)
    half = store.incoming / "doc-died-while-staging"
    half.mkdir()
    (half / "content").write_bytes(b"par")
    asked = []
    recovery = store.recover(lambda uid, sha1: asked.append(uid) or False)
    assert sorted(asked) == ["1.2.1", "1.2.2"] and sorted(recovery.rolled_back) == ["1.2.1", "1.2.2"]
    assert store.get("1.2.1") is None and list(store.incoming.iterdir()) == []


def test_a_crash_between_two_renames_is_finished_by_recovery(tmp_path):
    store = FileBlobStore(tmp_path)
    staged = store.stage([_document("1.2.1", b"one"), _document("1.2.2", b"two")])
    for item in staged.documents:
        (item.path / COMMITTED).write_bytes(b"")
    store._roll_forward([(staged.documents[0].path, staged.documents[0].key)])  # then the crash
    _crash(store, type(staged)(staged.documents[1:]), committed=False)
    assert store.recover(lambda uid, sha1: False).rolled_forward == ["1.2.2"]
    assert store.get("1.2.1") is not None and store.get("1.2.2") is not None


def test_recovery_rolls_forward_what_the_registry_holds(tmp_path):
    """Killed after the registry committed, before the repository wrote its marker."""
    store = FileBlobStore(tmp_path)
    _crash(store, store.stage([_document("1.2.1", b"one")]), committed=False)
    recovery = store.recover(lambda uid, sha1: True)
    assert recovery.rolled_forward == ["1.2.1"] and store.get("1.2.1").path.read_bytes() == b"one"


def test_recovery_rolls_forward_a_committed_document_without_asking(tmp_path):
    store = FileBlobStore(tmp_path)
    _crash(store, store.stage([_document("1.2.1", b"one")]), committed=True)
    recovery = store.recover(lambda uid, sha1: 1 / 0)
    assert recovery.rolled_forward == ["1.2.1"] and store.get("1.2.1") is not None


def test_recovery_leaves_what_it_cannot_decide(tmp_path):
    store = FileBlobStore(tmp_path)
    staged = store.stage([_document("1.2.1", b"one")])
    _crash(store, staged, committed=False)
    assert store.recover(lambda uid, sha1: None).pending == ["1.2.1"]
    assert staged.documents[0].path.is_dir() and store.get("1.2.1") is None


def test_recovery_leaves_live_submissions_and_uploads_alone(tmp_path):
    store = FileBlobStore(tmp_path)
    live = store.stage([_document("1.2.1", b"one")])  # its lock is held
    spool = store.spool()
    writer = spool.writer({}, content_id="x")
    writer.write(b"y" * (spool.memory_limit + 1))  # spilled to a locked spool file
    dead = store.incoming / "part-dead.part"
    dead.write_bytes(b"from a killed process")
    recovery = store.recover(lambda uid, sha1: False)
    assert recovery.spool_files_removed == 1 and not dead.exists()
    assert live.documents[0].path.is_dir() and len(list(store.incoming.glob("*.part"))) == 1
    writer.abort()
    store.abort(live)


def test_flock_is_what_tells_live_from_dead(tmp_path):
    path = tmp_path / "x.part"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    from xds.soap.attachment import remove_if_unlocked

    assert remove_if_unlocked(path) is False
    os.close(fd)
    assert remove_if_unlocked(path) is True and not path.exists()
