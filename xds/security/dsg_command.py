"""`xds verify UNIQUEID --url URL`: a DSG signature document and the documents it signs, fetched
from a Document Registry and Repository and verified check by check (xds.security.dsg).

    xds verify UNIQUEID --url REGISTRY [--repository URL] [--trust-anchors PEM]

The way of it: ITI-18 GetDocuments by uniqueId finds the signature's DocumentEntry; GetAssociations
its signs associations; GetDocuments by entryUUID the DocumentEntries they name; ITI-43 retrieves
the signature document and each signed document (into a temporary folder, streamed) from the
repository at --repository (default: the registry URL's server, path /repository); the verifier
judges them with the trust anchors of dsg_trust_anchors (or --trust-anchors). When this machine's
repository store (data_dir/documents) holds the signature document with the verdict recorded when
it was submitted (dsg_policy record), that verdict is printed too.

Exit status: 0 when every check held, 1 when one failed or could not be made (the signature or a
signed document not found, not retrieved), 2 for a usage error or a registry or repository that
cannot be reached.
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.error
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from xds import config
from xds.security import tls

_GET_DOCUMENTS, _GET_ASSOCIATIONS = "GetDocuments", "GetAssociations"


def add_parser(subparsers) -> None:
    verify = subparsers.add_parser(
        "verify", help="verify a DSG signature document and the documents it signs (ITI-18, ITI-43)",
        description="Find the signature document UNIQUEID in the registry at --url, retrieve it and every "
                    "document its signs associations name from the repository, and print each check of ITI TF-3 "
                    "5.5 with its verdict: the XML signature, the algorithms, the signer's certificate chain to "
                    "dsg_trust_anchors at the signing time, the purpose, the manifest against the signs "
                    "associations, and each signed document's digest. Exit 0 only when every check holds.")
    verify.add_argument("unique_id", metavar="UNIQUEID", help="the signature document's uniqueId")
    verify.add_argument("--url", required=True, help="the registry endpoint, e.g. http://host:8080/registry")
    verify.add_argument("--repository", metavar="URL",
                        help="the repository endpoint (default: /repository on the registry's server)")
    verify.add_argument("--trust-anchors", metavar="PEM", help="CA certificates (default: dsg_trust_anchors)")
    verify.set_defaults(run=run)


def repository_url(registry_url: str) -> str:
    """The same server's /repository endpoint (xds serve has both)."""
    parts = urlsplit(registry_url)
    path = parts.path.rsplit("/", 1)[0] + "/repository"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class _Unreachable(Exception):
    pass


def run(args, settings: config.Settings) -> int:
    from xds.security import dsg

    anchors_file = args.trust_anchors or settings.dsg_trust_anchors
    try:
        anchors = dsg.load_trust_anchors(anchors_file) if anchors_file else []
    except (OSError, ValueError) as exc:
        print(f"xds: {exc}", file=sys.stderr)
        return 2
    try:
        verdict, problem = _verify(args, settings, dsg.SignatureVerifier(anchors))
    except _Unreachable as exc:
        print(f"xds: {exc}", file=sys.stderr)
        return 2
    if problem:
        print(f"xds verify {args.unique_id}: {problem}")
        return 1
    if not anchors_file:
        print("(no trust anchors: set dsg_trust_anchors or --trust-anchors)")
    print("\n".join(verdict.lines()))
    recorded = _recorded(settings, args.unique_id)
    if recorded is not None:
        print(f"recorded when it was submitted ({recorded.verified_at}):")
        print("\n".join(f"  {line}" for line in recorded.lines()[1:]))
    return 0 if verdict.holds else 1


def _verify(args, settings, verifier):
    """(the verdict, None), or (None, why there is nothing to verify)."""
    from xds.client import post_soap
    from xds.ebrim.query_request import adhoc_query_request, quote_list
    from xds.ebrim.query_response import read_query_response
    from xds.registry import stored_query
    from xds.repository.client import retrieve
    from xds.security import dsg
    from xds.soap.attachment import FileAttachment
    from xds.transactions import ITI_18

    context = tls.context_for(args.url, settings)

    def query(name: str, parameter: str, values: list[str]):
        request = adhoc_query_request(stored_query.lookup(name).id, [(parameter, [quote_list(values)])], "LeafClass")
        try:
            response = post_soap(args.url, request, ITI_18.action, context=context)
        except (OSError, urllib.error.URLError, ValueError) as exc:
            raise _Unreachable(f"the registry at {args.url}: {exc}") from None
        status, errors, _ = read_query_response(response)
        if not status.endswith(":Success"):
            raise _Unreachable(f"the registry at {args.url} answered {status.rsplit(':', 1)[-1]}: "
                               + "; ".join(f"{e.code}: {e.context}" for e in errors))
        return response

    found = dsg.registered_documents(query(_GET_DOCUMENTS, "$XDSDocumentEntryUniqueId", [args.unique_id]))
    if not found:
        return None, "the registry holds no DocumentEntry with this uniqueId"
    signature, signature_entry = found[0]
    targets = dsg.signs_targets(query(_GET_ASSOCIATIONS, "$uuid", [signature.entry_uuid]), signature.entry_uuid)
    signed_entries = {document.entry_uuid: document for document, _ in dsg.registered_documents(
        query(_GET_DOCUMENTS, "$XDSDocumentEntryEntryUUID", targets))} if targets else {}
    repository = args.repository or repository_url(args.url)
    repository_context = tls.context_for(repository, settings)

    with tempfile.TemporaryDirectory(prefix="xds-verify-") as folder:
        def fetch(document: dsg.RegisteredDocument, name: str) -> Path | None:
            output = Path(folder) / name
            try:
                status, errors, _ = retrieve(repository, document.repository_unique_id, document.unique_id, output,
                                             progress=False, context=repository_context)
            except (OSError, ValueError) as exc:
                raise _Unreachable(f"the repository at {repository}: {exc}") from None
            return output if status.endswith(":Success") and output.exists() else None

        signature_file = fetch(signature, "signature.xml")
        if signature_file is None:
            return None, (f"the signature document could not be retrieved from {repository} (repositoryUniqueId "
                          f"{signature.repository_unique_id})")
        signed, unresolved = [], []
        for number, target in enumerate(targets):
            document = signed_entries.get(target)
            if document is None:
                unresolved.append(target)
                continue
            path = fetch(document, f"signed-{number}")
            signed.append(dsg.SignedDocument(document.unique_id, FileAttachment(path) if path else None,
                                             "retrieved" if path else "registered (not retrieved)"))
        if signature_entry.format_code is not None and signature_entry.format_code.code not in dsg.FORMAT_CODES:
            print(f"note: the DocumentEntry's formatCode is {signature_entry.format_code.code}, not DSG's")
        return verifier.verify(signature_file.read_bytes()[:dsg.MAX_SIGNATURE_BYTES + 1], args.unique_id, signed,
                               unresolved=unresolved), None


def _recorded(settings: config.Settings, unique_id: str):
    """The verdict recorded with this machine's copy of the signature document, if it has one."""
    from xds.repository.blobs import META, FileBlobStore
    from xds.security.dsg import Verdict

    root = settings.documents_dir
    if not root.is_dir():
        return None
    stored = FileBlobStore(root).get(unique_id)
    if stored is None:
        return None
    try:
        data = json.loads((stored.path.parent / META).read_bytes()).get("dsg")
    except (OSError, ValueError):
        return None
    return Verdict.from_json(data) if data else None
