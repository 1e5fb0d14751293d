"""The repository's commands: `xds submit`, `xds retrieve`, `xds documents verify`,
`xds documents remove`.

    xds submit FILE... --patient ID --url URL [--class C] [--type C] [--format C]
               [--confidentiality C]... [--facility C] [--practice C] [--title T] [--mime-type M]
    xds retrieve UNIQUEID --url URL -o FILE [--repository OID] [--home URN]
    xds documents verify
    xds documents remove UNIQUEID... [--url URL] [--repository OID] [--home URN]

Codes are written code^scheme^display (display optional). Exit status: 0 on Success, 1 on
Failure (or, for verify, when any document does not match), 2 on a usage error or when the
server cannot be reached.
"""

from __future__ import annotations

import sys
from pathlib import Path

from xds import config
from xds.security import tls


def add_parser(subparsers) -> None:
    """Add the repository's commands to the `xds` command's subparsers."""
    submit = subparsers.add_parser(
        "submit", help="send files to a Document Repository (ITI-41 Provide and Register, MTOM)",
        description="Build a Provide and Register Document Set-b request from files, one stable DocumentEntry "
                    "each in one SubmissionSet, with default metadata that the options change, and send it "
                    "as MTOM (streamed from the files). Codes are code^scheme^display.")
    submit.add_argument("files", nargs="+", type=Path, metavar="FILE")
    submit.add_argument("--patient", required=True, metavar="ID", help="the patient id, ID^^^&OID&ISO")
    submit.add_argument("--url", required=True, help="the repository endpoint, e.g. http://host:8080/repository")
    submit.add_argument("--class", dest="class_code", metavar="CODE", help="classCode (default 34133-9 LOINC)")
    submit.add_argument("--type", dest="type_code", metavar="CODE", help="typeCode (default 34133-9 LOINC)")
    submit.add_argument("--format", dest="format_code", metavar="CODE",
                        help="formatCode (default urn:ihe:iti:xds:2017:mimeTypeSufficient)")
    submit.add_argument("--confidentiality", action="append", metavar="CODE",
                        help="confidentialityCode, repeatable (default N^2.16.840.1.113883.5.25^Normal)")
    submit.add_argument("--facility", metavar="CODE", help="healthcareFacilityTypeCode (default 22232009 SNOMED CT)")
    submit.add_argument("--practice", metavar="CODE", help="practiceSettingCode (default 394802001 SNOMED CT)")
    submit.add_argument("--content-type", metavar="CODE", help="the SubmissionSet's contentTypeCode (default: --class)")
    submit.add_argument("--title", help="the documents' title (default: each file's name)")
    submit.add_argument("--mime-type", help="the documents' mimeType (default: guessed from each file's name)")
    submit.add_argument("--language", default="en-US", help="languageCode (default en-US)")
    submit.add_argument("--author", metavar="XCN", help="authorPerson, e.g. ^Takamatsu^Hanako^^^Dr")
    submit.add_argument("--source-id", metavar="OID", help="the SubmissionSet's sourceId (default: from the host name)")
    submit.add_argument("--quiet", "-q", action="store_true", help="no progress")
    submit.set_defaults(run=_submit)

    retrieve = subparsers.add_parser(
        "retrieve", help="fetch a document from a Document Repository (ITI-43 Retrieve Document Set)")
    retrieve.add_argument("unique_id", metavar="UNIQUEID", help="the document's uniqueId")
    retrieve.add_argument("--url", required=True, help="the repository endpoint, e.g. http://host:8080/repository")
    retrieve.add_argument("-o", "--output", required=True, type=Path, metavar="FILE", help="where to write it")
    retrieve.add_argument("--repository", metavar="OID",
                          help="the repository's uniqueId (default: the repository_unique_id setting)")
    retrieve.add_argument("--home", metavar="URN", help="a homeCommunityId to pass (XCA)")
    retrieve.add_argument("--quiet", "-q", action="store_true", help="no progress")
    retrieve.set_defaults(run=_retrieve)

    documents = subparsers.add_parser("documents", help="the repository's stored documents")
    document_commands = documents.add_subparsers(dest="documents_command", required=True)
    verify = document_commands.add_parser(
        "verify", help="re-hash every stored document against the registry; report mismatches and missing files",
        description="Reads every document in data_dir/documents and every DocumentEntry of this repository "
                    "(repositoryUniqueId) in the registry database (database_url), and reports a document "
                    "whose SHA-1 or size differs from the registry's, a registered document without its file, "
                    "and a stored file the registry does not know. First finishes what a crash left half done.")
    verify.set_defaults(run=_verify)
    remove = document_commands.add_parser(
        "remove", help="remove documents from a Document Repository (ITI-86 Remove Documents)",
        description="Remove documents by uniqueId from the repository at --url (ITI-86 over SOAP), else from "
                    "this server's documents (data_dir/documents) in process. Their bytes are deleted; their "
                    "metadata stays in the registry until it is removed there (`xds delete`, ITI-62). Answers "
                    "Success, PartialSuccess (some removed) or Failure, with an error for each document not "
                    "removed.")
    remove.add_argument("unique_ids", nargs="+", metavar="UNIQUEID", help="the documents' uniqueIds")
    remove.add_argument("--url", help="the repository endpoint, e.g. http://host:8080/repository (default: in "
                                      "process)")
    remove.add_argument("--repository", metavar="OID",
                        help="the repository's uniqueId (default: the repository_unique_id setting)")
    remove.add_argument("--home", metavar="URN", help="a homeCommunityId to pass (XCA)")
    remove.set_defaults(run=_remove)


def _code(text: str | None, default):
    from xds.repository.client import parse_code

    return parse_code(text) if text else default


def _submit(args, settings: config.Settings) -> int:
    from xds.repository import client

    missing = [str(path) for path in args.files if not path.is_file()]
    if missing:
        print(f"xds submit: not a file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        defaults = client.Metadata(patient_id=args.patient)
        metadata = client.Metadata(
            patient_id=args.patient,
            class_code=_code(args.class_code, defaults.class_code),
            type_code=_code(args.type_code, defaults.type_code),
            format_code=_code(args.format_code, defaults.format_code),
            confidentiality_codes=[client.parse_code(c) for c in args.confidentiality] if args.confidentiality
            else defaults.confidentiality_codes,
            healthcare_facility_type_code=_code(args.facility, defaults.healthcare_facility_type_code),
            practice_setting_code=_code(args.practice, defaults.practice_setting_code),
            content_type_code=_code(args.content_type, None),
            title=args.title, mime_type=args.mime_type, language=args.language, author=args.author,
            source_id=args.source_id or defaults.source_id,
        )
    except ValueError as exc:
        print(f"xds submit: {exc}", file=sys.stderr)
        return 2
    request, documents = client.submission(args.files, metadata)
    try:
        status, errors = client.provide_and_register(args.url, request, documents, progress=not args.quiet,
                                                     context=tls.context_for(args.url, settings))
    except (OSError, ValueError) as exc:
        print(f"xds submit: {exc}", file=sys.stderr)
        return 2
    _print_outcome(status, errors)
    if status.endswith(":Success"):
        for document in documents:
            print(f"{document.unique_id}  {document.mime_type}  {document.path}")
        return 0
    return 1


def _retrieve(args, settings: config.Settings) -> int:
    from xds.repository import client

    repository = args.repository or settings.repository_unique_id
    try:
        status, errors, mime_type = client.retrieve(args.url, repository, args.unique_id, args.output,
                                                    home_community_id=args.home, progress=not args.quiet,
                                                    context=tls.context_for(args.url, settings))
    except (OSError, ValueError) as exc:
        print(f"xds retrieve: {exc}", file=sys.stderr)
        return 2
    _print_outcome(status, errors)
    if mime_type is not None:
        print(f"{args.output}  {mime_type}  {args.output.stat().st_size} bytes")
        return 0
    return 1


def _print_outcome(status: str, errors) -> None:
    """The response's status, then each of its errors on a line."""
    print(f"status: {status.rsplit(':', 1)[-1]}")
    for problem in errors:
        print(f"  {problem}")


def _verify(args, settings: config.Settings) -> int:
    from xds.registry.register import DocumentRegistry
    from xds.repository.verify import verify
    from xds.store import db

    engine = db.make_engine(settings.database)
    try:
        report = verify(settings, DocumentRegistry(sessions=db.make_sessionmaker(engine)))
    finally:
        engine.dispose()
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def _remove(args, settings: config.Settings) -> int:
    """ITI-86: exit status 0 on Success, 1 on PartialSuccess or Failure, 2 when the repository
    cannot be reached."""
    from xds.ebrim.remove import remove_documents_request
    from xds.ebrim.response import read_registry_response

    request = remove_documents_request(args.unique_ids, args.repository or settings.repository_unique_id, args.home)
    try:
        response = _send_removal(request, args.url, settings) if args.url else _remove_in_process(request, settings)
    except (OSError, ValueError) as exc:
        print(f"xds documents remove: {exc}", file=sys.stderr)
        return 2
    status, errors = read_registry_response(response)
    _print_outcome(status, errors)
    failed = {e.location for e in errors}
    for unique_id in dict.fromkeys(args.unique_ids):
        if unique_id not in failed:
            print(f"{unique_id}  removed")
    return 0 if status.endswith(":Success") else 1


def _send_removal(request, url: str, settings: config.Settings):
    from xds.client import post_soap
    from xds.transactions import ITI_86

    return post_soap(url, request, ITI_86.action, context=tls.context_for(url, settings))


def _remove_in_process(request, settings: config.Settings):
    """The RegistryResponse of this server's repository, on its documents folder; audited as the
    server audits an ITI-86 (the caller: this host), when audit_destinations is set."""
    import socket

    from xds.audit import actors
    from xds.audit.trail import AuditTrail
    from xds.repository.blobs import FileBlobStore
    from xds.repository.remove import RemoveDocuments
    from xds.security.caller import Caller
    from xds.soap import SoapRequest
    from xds.transactions import ITI_86

    remover = RemoveDocuments(settings.repository_unique_id, FileBlobStore(settings.documents_dir),
                              settings.home_community_id or "")
    result = remover.remove(request)
    trail = AuditTrail.from_settings(settings)
    if trail.enabled:
        soap = SoapRequest(action=ITI_86.action, message_id=None, header=None, body=request)
        actors.record(trail, ITI_86, soap, Caller(address=socket.gethostname()), result)
        trail.close()
    body, _ = ITI_86.respond(result)
    return body
