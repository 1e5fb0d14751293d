"""The durable spool audit records wait in until every destination has them.

A record is written here, in the transaction's own request, before the client has its answer;
sending happens later, in the background (xds.audit.trail). The spool is a folder of its own
under the data directory, whatever database the registry uses: it must work when that database
is down, and it is written by every worker process of the server. It costs a request one
memory copy: an audit record must not slow the transaction it records (the ITI-18 query it
records takes well under a millisecond).

Layout. Each process writes a segment of its own, ``<time>-<pid>.log``: its first 8 bytes say
where its records end (``_END``), then the records one after the other, each framed as length,
CRC-32 and time of writing (``_FRAME``). The segment is mapped into the writer's memory, its
space reserved when it is made (fallocate: a full disk fails there, not as a SIGBUS in a
write); a record is copied in, then the end mark moved past it, so a reader never sees half a
record. While a process writes a segment it holds an exclusive flock on it; it starts a new one
when a record does not fit (``segment_bytes``, or one record's size). A segment whose lock is
free is sealed: nobody will write to it again. A new segment is made as ``.new``, locked, then
renamed, so no reader sees it unlocked before its writer has it.

Each destination keeps a cursor, ``cursor-<destination>``: how far it has read each
segment. A sealed segment is deleted once every configured destination has all of it. Records
go to a destination in the order they were written, across segments (merged by their time of
writing; within a segment always in file order). A destination that is down keeps its records
while the others go on, and gets them in order when it returns; a destination added later gets
what is still here.

The bound. ``max_bytes`` bounds the records some destination does not have yet. A writer
measures that (the segments' end marks against the cursors) at most every RESCAN seconds, and
whenever its running estimate says a record would not fit; between measurements it counts only
its own records, so other processes can pass the bound by what they write in RESCAN seconds.
A record that does not fit is refused and counted (``refused``: one byte per refusal, shared by
the processes), and once per episode a record of the caller's choosing (a security alert) is let
in above the bound (the ``full`` marker, created exclusively), so the Audit Record Repository
learns that records were lost. The episode ends when the waiting records fall to half the bound,
as measured by a writer (its measurements above) or by the sender (when it deletes the delivered
segments, purge()); waiting() and state() only read, so looking (``GET /health``) changes nothing.

Durability. A record is in the operating system's cache when append() returns, so it survives
the process being killed. It is on the disk once its segment is fdatasynced: by append() itself
when the spool is made with fsync_interval 0, else by sync(), which the trail calls every
fsync_interval seconds from a background thread. That is group commit: one fsync for the
records of the interval instead of one in every request, at the price that a machine crash or
power loss can take the last interval's records with it. A record whose end mark reached the
disk but whose bytes did not fails its CRC and is skipped, with an error in the log. Cursors
are written without fsync (``_CursorFile``): losing a cursor's last move sends its records
again, which is better than waiting for the disk on every batch.
"""

from __future__ import annotations

import fcntl
import hashlib
import heapq
import json
import logging
import mmap
import os
import re
import struct
import threading
import time
import zlib
from pathlib import Path

from xds.fsync import fsync_directory

log = logging.getLogger("xds.audit")

_END = struct.Struct(">Q")  # a segment's first 8 bytes: where its records end
_FRAME = struct.Struct(">IIQ")  # message length, CRC-32 of the message, time_ns of writing
SEGMENT_BYTES = 16 * 1024 * 1024
RESCAN = 1.0  # seconds between a writer's measurements of the waiting records
PURGE_INTERVAL = 1.0  # seconds between a cursor's looks for segments to delete
READ_BYTES = 256 * 1024  # what a cursor reads of a segment at once (a longer record: all of it)


class AuditSpool:
    """The folder of audit records waiting for their destinations (the module's text says how).
    Not xds.soap's Spool, where the MTOM parts of one request wait while it is read."""

    def __init__(self, directory: str | Path, destinations: list[str], max_bytes: int,
                 fsync_interval: float = 0.0):
        self.directory = Path(directory)
        self.destinations = list(destinations)
        self.max_bytes = max_bytes
        self.fsync_interval = fsync_interval
        # Whole segments are deleted, so a small bound needs small segments to free room.
        self.segment_bytes = max(4096, min(SEGMENT_BYTES, max_bytes // 8))
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # a process's threads share its segment
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._pid = 0
        self._end = self._capacity = 0
        self._unsynced = False
        self._estimate = 0      # waiting bytes as last measured, plus this process's since
        self._measured_at = float("-inf")

    # -- writing ------------------------------------------------------------------------------------

    def append(self, message: bytes) -> bool:
        """Keep one record; False when the spool is full (the record is refused and counted)."""
        record = _FRAME.pack(len(message), zlib.crc32(message), time.time_ns()) + message
        with self._lock:
            if not self._fits(len(record)):
                _add_byte(self.directory / "refused")
                return False
            self._write(record)
            return True

    def append_alert(self, message: bytes) -> bool:
        """Keep `message` above the bound, once per episode of fullness: True the first time
        after the spool filled, False while that episode lasts (the alert is in already)."""
        try:
            os.close(os.open(self.directory / "full", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False
        record = _FRAME.pack(len(message), zlib.crc32(message), time.time_ns()) + message
        with self._lock:
            self._write(record)
        return True

    def _fits(self, size: int) -> bool:
        now = time.monotonic()
        if now - self._measured_at > RESCAN or self._estimate + size > self.max_bytes:
            self._estimate, self._measured_at = self.waiting(), now
            self._measured(self._estimate)
        if self._estimate + size > self.max_bytes:
            return False
        self._estimate += size
        return True

    def _write(self, record: bytes) -> None:
        if self._map is None or self._pid != os.getpid() or self._end + len(record) > self._capacity:
            self._new_segment(len(record))
        end = self._end + len(record)
        self._map[self._end:end] = record
        _END.pack_into(self._map, 0, end)  # after the record: a reader never sees half of one
        self._end = end
        if self.fsync_interval:
            self._unsynced = True
        else:
            os.fdatasync(self._fd)

    def _new_segment(self, record_bytes: int) -> None:
        name = f"{time.time_ns():020d}-{os.getpid()}"
        new = self.directory / f"{name}.new"
        capacity = max(self.segment_bytes, _END.size + record_bytes)
        fd = os.open(new, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Reserved now, so a full disk is an error here rather than a SIGBUS in a write.
            os.posix_fallocate(fd, 0, capacity)
            segment = mmap.mmap(fd, capacity)
            _END.pack_into(segment, 0, _END.size)
            os.rename(new, self.directory / f"{name}.log")
        except BaseException:
            os.close(fd)
            _remove(new)
            raise
        fsync_directory(self.directory)  # the segment's name survives a crash too
        old_fd, old_map, inherited = self._fd, self._map, self._pid != os.getpid()
        self._fd, self._map, self._pid = fd, segment, os.getpid()
        self._end, self._capacity = _END.size, capacity
        if old_fd is not None:
            if self._unsynced and not inherited:
                os.fdatasync(old_fd)
            old_map.close()
            os.close(old_fd)  # seals it (a forked child's copy: the parent still holds it)
        self._unsynced = False

    def sync(self) -> None:
        """fdatasync this process's segment if it has unsynced records (see Durability)."""
        with self._lock:
            if not self._unsynced or self._fd is None or self._pid != os.getpid():
                return
            self._unsynced = False
            fd = os.dup(self._fd)  # a rotation may close the original meanwhile
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    # -- reading ------------------------------------------------------------------------------------

    def cursor(self, destination: str) -> "Cursor":
        return Cursor(self, destination)

    def segments(self) -> list[str]:
        """The segments' names, oldest first."""
        return sorted(entry.name for entry in os.scandir(self.directory) if entry.name.endswith(".log"))

    def positions(self, destination: str) -> dict[str, int]:
        """How far `destination` has each segment (a missing segment: not at all)."""
        path = self.directory / _cursor_name(destination)
        if not path.exists():
            return {}
        with _CursorFile(path) as file:
            return file.load()

    def _ends(self) -> dict[str, int]:
        """Where each segment's records end (the first 8 bytes of each)."""
        ends = {}
        for name in self.segments():
            try:
                fd = os.open(self.directory / name, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # deleted meanwhile
            try:
                ends[name] = _segment_end(fd)
            finally:
                os.close(fd)
        return ends

    def waiting(self) -> int:
        """Bytes of records some destination does not have yet (only reads the spool)."""
        return _waiting([self.positions(destination) for destination in self.destinations], self._ends())

    def _measured(self, waiting: int) -> None:
        """A writer or the sender measured `waiting`: a full episode ends at half the bound.
        Here and not in waiting(), which whoever looks calls (state(), /health, flush())."""
        if waiting <= self.max_bytes // 2:
            _remove(self.directory / "full")

    def unsent(self, destination: str) -> list[bytes]:
        """The records `destination` does not have yet, in order (for looking, not sending)."""
        reader = Cursor(self, destination)
        try:
            return reader.read(limit=1 << 62, max_bytes=1 << 62)
        finally:
            reader.close()

    def purge(self) -> None:
        """Delete the sealed segments every destination has whole, and dead processes' .new
        files; end a full episode if the records have fallen to half the bound (the sender
        calls this after a batch: the measure is at hand)."""
        marks = [self.positions(destination) for destination in self.destinations]
        ends = self._ends()
        self._measured(_waiting(marks, ends))  # a segment deleted below has no waiting record
        for name, end in ends.items():
            if all(mark.get(name, _END.size) >= end for mark in marks) and _sealed(self.directory / name):
                _remove(self.directory / name)
        for entry in os.scandir(self.directory):
            # A .new file is unlocked for an instant while it is made: only old ones are dead.
            if entry.name.endswith(".new") and time.time() - entry.stat().st_mtime > 60 and _sealed(Path(entry.path)):
                _remove(Path(entry.path))

    def state(self) -> dict[str, int]:
        """bytes waiting, records refused so far (all processes), and whether a full episode
        lasts. Only reads: a health check calls it."""
        waiting = self.waiting()
        try:
            refused = os.stat(self.directory / "refused").st_size
        except FileNotFoundError:
            refused = 0
        return {"bytes": waiting, "refused": refused, "full": int((self.directory / "full").exists())}

    def close(self) -> None:
        self.sync()
        with self._lock:
            if self._fd is not None:
                self._map.close()
                os.close(self._fd)  # seals the segment (a forked child's copy: once the parent's goes too)
            self._fd = self._map = None


class Cursor:
    """One destination's place in the spool: read() the next records, then say how many of
    them the destination took with advance(); until then read() gives the same ones again."""

    def __init__(self, spool: AuditSpool, destination: str):
        self.spool = spool
        self._file = _CursorFile(spool.directory / _cursor_name(destination))
        self.positions = self._file.load()
        self._purged_at = float("-inf")
        self._files: dict[str, int] = {}
        self._read: list[tuple[str, int]] = []  # (segment, end offset) of each record read()

    def read(self, limit: int = 100, max_bytes: int = READ_BYTES) -> list[bytes]:
        """Up to `limit` records after the cursor, oldest first."""
        runs = []
        for name in self.spool.segments():
            run = self._records(name, self.positions.get(name, _END.size), limit, max_bytes)
            if run:
                runs.append(run)
        # Each run stays in file order (heapq.merge never reorders an input); between runs the
        # time of writing decides, and equal times compare segment names, never messages.
        merged = list(heapq.merge(*runs))[:limit]
        self._read = [(name, end) for _, name, end, _ in merged]
        return [message for *_, message in merged]

    def advance(self, count: int) -> None:
        """The first `count` records of the last read() are delivered."""
        for name, end in self._read[:count]:
            self.positions[name] = end
        self._read = []
        self._save()
        if time.monotonic() - self._purged_at > PURGE_INTERVAL:
            self.spool.purge()
            self._purged_at = time.monotonic()

    def _save(self) -> None:
        present = set(self.spool.segments())
        self.positions = {name: end for name, end in self.positions.items() if name in present}
        self._file.save(self.positions)

    def _records(self, name: str, offset: int, limit: int, max_bytes: int) -> list[tuple]:
        """(time, segment, end offset, message) of the whole records from `offset` on."""
        fd = self._files.get(name)
        if fd is None:
            try:
                fd = self._files[name] = os.open(self.spool.directory / name, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return []
        end = _segment_end(fd)
        if offset >= end:
            return []
        data = os.pread(fd, min(max_bytes, end - offset), offset)
        records, at, latest, bad = [], 0, 0, False
        while len(records) < limit and at < len(data):
            length, crc, written = _FRAME.unpack_from(data, at) if at + _FRAME.size <= len(data) else (0, 0, 0)
            stop = at + _FRAME.size + length
            if stop > len(data) and at == 0 and stop <= end - offset:  # one record longer than max_bytes
                data = os.pread(fd, stop, offset)
                continue
            if stop > len(data):
                bad = stop > end - offset  # else: the rest is for the next read
                break
            message = data[at + _FRAME.size:stop]
            if not length or zlib.crc32(message) != crc:
                bad = True
                break
            latest = max(latest, written)  # a clock set back must not reorder the run
            records.append((latest, name, offset + stop, message))
            at = stop
        if bad and not records:
            # Records are complete before the segment's end says so: this is a record the
            # machine lost in a crash (its end mark reached the disk, its bytes did not).
            log.error("audit spool %s: the %d bytes from offset %d of %s are not a whole record "
                      "(lost in a crash?); skipped", self.spool.directory, end - offset, offset, name)
            self.positions[name] = end
            self._save()
        return records

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files = {}
        self._file.close()


class _CursorFile:
    """A cursor's positions on disk, in two slots written in turn, each with its sequence
    number and CRC: a write torn by a crash leaves the other slot, one batch behind (its records
    are sent again). One pwrite per batch, no rename, no fsync (see Durability)."""

    SLOT = 1024 * 1024  # room for ~20,000 segments; the file is sparse
    _HEAD = struct.Struct(">QII")  # sequence, length, CRC-32 of the JSON that follows

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.sequence = 0

    def load(self) -> dict[str, int]:
        newest, positions = -1, {}
        for slot in (0, 1):
            head = os.pread(self.fd, self._HEAD.size, slot * self.SLOT)
            if len(head) < self._HEAD.size:
                continue
            sequence, length, crc = self._HEAD.unpack(head)
            body = os.pread(self.fd, min(length, self.SLOT), slot * self.SLOT + self._HEAD.size)
            if length and len(body) == length and zlib.crc32(body) == crc and sequence > newest:
                newest, positions = sequence, json.loads(body)
        self.sequence = max(newest, 0)
        return positions

    def save(self, positions: dict[str, int]) -> None:
        body = json.dumps(positions, separators=(",", ":")).encode()
        if self._HEAD.size + len(body) > self.SLOT:
            raise OSError(f"audit spool cursor: {len(positions)} segments do not fit in its file")
        self.sequence += 1
        os.pwrite(self.fd, self._HEAD.pack(self.sequence, len(body), zlib.crc32(body)) + body,
                  self.sequence % 2 * self.SLOT)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> "_CursorFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _waiting(marks: list[dict[str, int]], ends: dict[str, int]) -> int:
    """Bytes after the furthest-behind destination's position (`marks`) in each segment."""
    return sum(end - min((mark.get(name, _END.size) for mark in marks), default=end)
               for name, end in ends.items())


def _segment_end(fd: int) -> int:
    head = os.pread(fd, _END.size, 0)
    return _END.unpack(head)[0] if len(head) == _END.size else _END.size


def _cursor_name(destination: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", destination)
    return f"cursor-{slug}-{hashlib.sha1(destination.encode()).hexdigest()[:8]}"


def _sealed(path: Path) -> bool:
    """Nobody writes `path` any more: its writer's lock is free (taken and let go at once)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _add_byte(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
