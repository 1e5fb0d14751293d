"""The registry's administration commands: `xds delete` (ITI-62 Delete Document Set) and
`xds update` (ITI-57 Update Document Set).

    xds delete ENTRYUUID... [--from FILE] [--url URL] [--xml]
    xds update FILE [--url URL] [--xml]

Removes DocumentEntries, SubmissionSets, Folders and Associations by entryUUID, all of them or
none: from a remote registry with --url (the Document Administrator's ITI-62 over SOAP), else
from this server's database (`database_url`) in process, with the same checks and answer
(xds.registry.remove). Removed in process, the removal is audited as the server would audit it
(when `audit_destinations` is set: the record waits in the audit spool for the server to send
it). A document's objects are removed together: its DocumentEntry, the HasMember that puts it
in its SubmissionSet, and the SubmissionSet when nothing else stays in it; the answer names
what still refers to an object, so that the request can be completed.

`xds update` sends the Update Document Set request in FILE (a SOAP envelope or a bare
lcm:SubmitObjectsRequest: new versions with their lid and the SubmissionSet's HasMember with
PreviousVersion, UpdateAvailabilityStatus associations, new associations; xds.registry.update),
to the registry at --url or, without it, to this server's database in process, audited as the
server audits an ITI-57. On Success it says what changed: each new version with its number.

Both print the status, then each error with its code, the id it is about and what to do; exit
status 0 on Success, 1 on Failure, 2 on a usage error or when the registry cannot be reached.
"""

from __future__ import annotations

import socket
import sys
import urllib.error
from pathlib import Path

from xds import config
from xds.security import tls


def add_parser(subparsers) -> None:
    """Add `xds delete` to the `xds` command's subparsers."""
    delete = subparsers.add_parser(
        "delete", help="remove metadata from a Document Registry (ITI-62 Delete Document Set)",
        description="Remove registry objects (DocumentEntry, SubmissionSet, Folder, Association) by entryUUID, "
                    "all or none: from the registry at --url, else from the database of the settings. An "
                    "object still referred to by an association that is not removed with it is refused "
                    "(ReferencesExistException), and so is the removal of the last association that refers to "
                    "an object that stays (XDSUnreferencedObjectException).")
    delete.add_argument("ids", nargs="*", metavar="ENTRYUUID", help="urn:uuid:... of each object to remove")
    delete.add_argument("--from", dest="from_file", type=Path, metavar="FILE",
                        help="a file with one entryUUID a line (# starts a comment)")
    delete.add_argument("--url", help="a registry endpoint, e.g. http://host:8080/registry (default: the local "
                                      "database)")
    delete.add_argument("--xml", action="store_true", help="print the RegistryResponse as XML")
    delete.set_defaults(run=_delete)

    update = subparsers.add_parser(
        "update", help="change metadata in a Document Registry (ITI-57 Update Document Set)",
        description="Send an Update Document Set request: new versions of DocumentEntries and Folders (each with "
                    "lid = the logicalID it updates, and the SubmissionSet's HasMember of it with a PreviousVersion "
                    "slot), UpdateAvailabilityStatus associations, new associations between registered objects. "
                    "All of it is done, or none.")
    update.add_argument("file", type=Path, metavar="FILE", help="a SOAP envelope or a bare lcm:SubmitObjectsRequest")
    update.add_argument("--url", help="a registry endpoint, e.g. http://host:8080/registry (default: the local "
                                      "database)")
    update.add_argument("--xml", action="store_true", help="print the RegistryResponse as XML")
    update.set_defaults(run=_update)


def _delete(args, settings: config.Settings) -> int:
    from xds.ebrim.remove import read_remove_objects

    try:
        ids = _ids(args)
    except OSError as exc:
        print(f"xds delete: {args.from_file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if not ids:
        print("xds delete: no entryUUID given; name the objects to remove, or --from a file of them",
              file=sys.stderr)
        return 2
    request = remove_objects_request(ids)
    response = _exchange("delete", lambda: _send(request, args.url, settings) if args.url
                         else _in_process(request, settings), settings)
    if response is None:
        return 2
    return _report(response, args.xml, [f"{len(read_remove_objects(request).ids)} object(s) removed"])


def _ids(args) -> list[str]:
    ids = [value.strip() for value in args.ids if value.strip()]
    if args.from_file:
        with open(args.from_file, encoding="utf-8") as lines:
            ids += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return ids


def remove_objects_request(ids: list[str]):
    """The lcm:RemoveObjectsRequest naming `ids` (ITI TF-2b 3.62.4.1.2)."""
    from lxml import etree

    from xds.ebrim import ns

    request = etree.Element(f"{{{ns.LCM}}}RemoveObjectsRequest", nsmap={"lcm": ns.LCM, "rim": ns.RIM})
    refs = etree.SubElement(request, ns.rim("ObjectRefList"))
    for object_id in ids:
        etree.SubElement(refs, ns.rim("ObjectRef"), id=object_id)
    return request


def _send(request, url: str, settings: config.Settings):
    from xds.client import post_soap
    from xds.transactions import ITI_62

    return post_soap(url, request, ITI_62.action, context=tls.context_for(url, settings))


def _in_process(request, settings: config.Settings):
    """The RegistryResponse of this server's registry, its database opened here; the removal
    is audited as the server audits an ITI-62 (the caller: this host)."""
    from xds.audit import actors
    from xds.audit.trail import AuditTrail
    from xds.registry.register import DocumentRegistry
    from xds.consent import bppc
    from xds.registry.remove import DeleteDocumentSet
    from xds.security.caller import Caller
    from xds.soap import SoapRequest
    from xds.store import db
    from xds.transactions import ITI_62

    engine = db.make_engine(settings.database, busy_timeout=settings.busy_timeout)
    try:
        registry = DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True),
                                    max_submission_objects=settings.max_submission_objects,
                                    after_store=bppc.hook(settings))  # a deleted consent document's consent ends
        result = DeleteDocumentSet.of(registry).delete(request)
    finally:
        engine.dispose()
    trail = AuditTrail.from_settings(settings)
    if trail.enabled:
        soap = SoapRequest(action=ITI_62.action, message_id=None, header=None, body=request)
        actors.record(trail, ITI_62, soap, Caller(address=socket.gethostname()), result)
        trail.close()
    body, _ = ITI_62.respond(result)
    return body


# --- xds update ------------------------------------------------------------------------------


def _update(args, settings: config.Settings) -> int:
    import copy

    from xds.client import request_body
    from xds.ebrim import ns
    from xds.soap import SoapFault

    try:
        request = request_body(args.file)
    except (OSError, SoapFault, ValueError) as exc:
        print(f"xds update: {args.file}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 2
    if request.tag != f"{{{ns.LCM}}}SubmitObjectsRequest":
        print(f"xds update: {args.file}: expected an lcm:SubmitObjectsRequest, found {request.tag}", file=sys.stderr)
        return 2
    what = _changes(copy.deepcopy(request))  # the in-process update takes the request's elements apart
    response = _exchange("update", lambda: _send_update(request, args.url, settings) if args.url
                         else _update_in_process(request, settings), settings)
    if response is None:
        return 2
    return _report(response, args.xml, [f"  {line}" for line in what])


def _exchange(command: str, send, settings):
    """The registry's answer to `send()`, or None (said on stderr) when the registry or its
    database cannot be reached."""
    from sqlalchemy.exc import SQLAlchemyError

    from xds.store import db

    try:
        return send()
    except (OSError, urllib.error.URLError, ValueError) as exc:
        print(f"xds {command}: {exc}", file=sys.stderr)
    except SQLAlchemyError as exc:
        print(f"xds {command}: cannot use the registry database {db.redacted(settings.database)} "
              f"({type(exc).__name__}); is it created (`xds db upgrade`)?", file=sys.stderr)
    return None


def _report(response, xml: bool, done: list[str]) -> int:
    """Print a RegistryResponse (its XML, or its status and errors, and `done` on Success);
    exit status 0 on Success, else 1."""
    from lxml import etree

    from xds.ebrim.response import read_registry_response

    status, errors = read_registry_response(response)
    if xml:
        sys.stdout.write(etree.tostring(response, pretty_print=True, encoding="unicode"))
    else:
        print(f"status: {status.rsplit(':', 1)[-1]}")
        for e in errors:
            where = f" [{e.location}]" if e.location else ""
            print(f"  {e.code}{where}: {e.context}")
        if status.endswith(":Success"):
            for line in done:
                print(line)
    return 0 if status.endswith(":Success") else 1


def _changes(request) -> list[str]:
    """What the request asks for, one line per operation, as a person reads it."""
    from xds.ebrim.submission import read_submission
    from xds.ebrim.versions import NEW_STATUS, slot_values
    from xds.registry.update import operations

    sub = read_submission(request).submission
    ops, _ = operations(sub)
    lines = []
    for v in ops.versions:
        previous = v.previous
        following = str(int(previous) + 1) if previous.isdigit() else "the next"
        lines.append(f"{v.kind} {v.logical_id}: version {following} replaces version {previous}")
    for a in ops.statuses:
        new = (slot_values(a, NEW_STATUS) or ["?"])[0].rsplit(":", 1)[-1]
        lines.append(f"{a.target}: now {new}")
    for a, _ in ops.associations:
        lines.append(f"new {a.type.rsplit(':', 1)[-1]}: {a.source} -> {a.target}")
    return lines


def _send_update(request, url: str, settings: config.Settings):
    from xds.client import post_soap
    from xds.transactions import ITI_57

    return post_soap(url, request, ITI_57.action, context=tls.context_for(url, settings))


def _update_in_process(request, settings: config.Settings):
    """The RegistryResponse of this server's registry, its database opened here; audited as the
    server audits an ITI-57 (the caller: this host)."""
    from xds.audit import actors
    from xds.audit.trail import AuditTrail
    from xds.identity.directory import IdentityDirectory
    from xds.registry.codes import CodeSet
    from xds.registry.register import DocumentRegistry
    from xds.consent import bppc
    from xds.registry.update import UpdateDocumentSet
    from xds.security.caller import Caller
    from xds.soap import SoapRequest
    from xds.store import db
    from xds.transactions import ITI_57

    engine = db.make_engine(settings.database, busy_timeout=settings.busy_timeout)
    try:
        registry = DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True),
                                    codes=CodeSet.from_nist_xml(settings.codes_file) if settings.codes_file else None,
                                    patients=IdentityDirectory(), check_patient_ids=settings.check_patient_ids,
                                    max_submission_objects=settings.max_submission_objects,
                                    max_submission_values=settings.max_submission_values,
                                    after_store=bppc.hook(settings))  # so does a deprecated one's
        soap = SoapRequest(action=ITI_57.action, message_id=None, header=None, body=request)
        result = UpdateDocumentSet.of(registry).update(request)
    finally:
        engine.dispose()
    trail = AuditTrail.from_settings(settings)
    if trail.enabled:
        actors.record(trail, ITI_57, soap, Caller(address=socket.gethostname()), result)
        trail.close()
    body, _ = ITI_57.respond(result)
    return body

