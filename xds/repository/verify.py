"""`xds documents verify`: every stored document re-hashed and held against the registry.

For each DocumentEntry the registry database holds with this repository's uniqueId: the
document's file must exist, and its SHA-1 and size must be the registry's hash and size (and
the store's own meta.json). A stored document the registry does not know is reported too (a
document whose registration was lost). The registry is read from `database_url`, the database
this server's registry writes; a repository registering with a remote registry points
database_url at that registry's database (read only) to verify.

Before checking, recovery finishes what a crash left half done (xds.repository.blobs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from xds.config import Settings
from xds.repository.blobs import FileBlobStore
from xds.repository.registration import Registry


@dataclass
class VerifyReport:
    checked: int = 0
    mismatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unregistered: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.mismatched or self.missing or self.unregistered)

    def lines(self) -> list[str]:
        out = [f"recovered after a crash: {uid}" for uid in self.recovered]
        out += [f"MISMATCH {line}" for line in self.mismatched]
        out += [f"MISSING  {line}" for line in self.missing]
        out += [f"UNREGISTERED {line}" for line in self.unregistered]
        out.append(f"{self.checked} document(s) checked: {len(self.mismatched)} mismatched, {len(self.missing)} "
                   f"missing, {len(self.unregistered)} not in the registry")
        return out


def sha1_of(path) -> tuple[str, int]:
    digest = hashlib.sha1()
    size = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def verify(settings: Settings, registry: Registry) -> VerifyReport:
    """Every document of this repository (settings.documents_dir, settings.repository_unique_id)
    against what `registry` holds of it, after finishing what a crash left half done."""
    blobs = FileBlobStore(settings.documents_dir)
    report = VerifyReport()
    recovery = blobs.recover(registry.holds_document)
    report.recovered = recovery.rolled_forward
    registered = {unique_id: ((digest or "").lower(), size) for unique_id, digest, size
                  in registry.documents_in(settings.repository_unique_id)}
    for unique_id, (digest, size) in sorted(registered.items()):
        report.checked += 1
        document = blobs.get(unique_id)
        if document is None or not document.path.is_file():
            report.missing.append(f"{unique_id}: registered (hash {digest}, size {size}), no file")
            continue
        actual, actual_size = sha1_of(document.path)
        problems = []
        if actual != digest:
            problems.append(f"SHA-1 {actual}, registry {digest}")
        if size is not None and actual_size != size:
            problems.append(f"size {actual_size}, registry {size}")
        if document.hash and document.hash != actual:
            problems.append(f"stored meta.json hash {document.hash}")
        if problems:
            report.mismatched.append(f"{unique_id} ({document.path}): " + "; ".join(problems))
    for document in blobs:
        if document.unique_id not in registered:
            report.unregistered.append(f"{document.unique_id} ({document.path})")
    return report
