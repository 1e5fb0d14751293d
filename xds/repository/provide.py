"""Provide and Register Document Set-b (ITI-41) at the Document Repository (ITI TF-2b 3.41).

What belongs here: the repository's checks of a request (every stable DocumentEntry has its
document and every document its DocumentEntry; hash, size and repositoryUniqueId when the
source sent them; a uniqueId once per request), the metadata the repository sets (hash, size,
repositoryUniqueId), and the order of storing and registering that keeps a submission all or
nothing. What does not: SOAP (the service module hands over the body and a way to get each
document's content), the registry's own checks (it answers for itself, and its errors go back
to the client unchanged), files (the blob store).

The way of one request, top-down, with one reading of its metadata:
1. read the SubmitObjectsRequest into the model (xds.ebrim.submission): the same
   ParsedSubmission goes on to the registry, which does not read the XML again;
2. pair the DocumentEntries with the xdsb:Document elements by id; check every pair, collecting
   every error;
3. set hash, size and repositoryUniqueId on each DocumentEntry, in the model and in its XML
   (ITI TF-2b 3.41.4.1.3);
4. stage the documents in the blob store (written and fsynced under temporary names);
5. register the metadata (ITI-42): the parsed submission in-process, or its XML over SOAP to a
   remote registry;
6. on Success commit the staged documents (visible from then on), else drop them.
Any error before 5 means the registry is never asked. Errors of ebRIM structure found in 1 are
the registry's to answer (it lists them with its own), as they would be from a remote registry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from lxml import etree

from xds.ebrim import ns
from xds.ebrim.slots import set_slot
from xds.ebrim.submission import ParsedSubmission, SubmissionLimits, read_submission
from xds.errors import XdsError
from xds.model import DocumentEntryType
from xds.repository.blobs import BlobStore, NewDocument
from xds.result import Result
from xds.rules import error
from xds.security.dsg import SubmissionSignatures
from xds.soap.attachment import Attachment

log = logging.getLogger("xds.repository")

PROVIDE_AND_REGISTER_REQUEST = f"{{{ns.XDSB}}}ProvideAndRegisterDocumentSetRequest"
SUBMIT_OBJECTS_REQUEST = f"{{{ns.LCM}}}SubmitObjectsRequest"
DOCUMENT = f"{{{ns.XDSB}}}Document"

#: Registers a submission (ITI-42); returns the registry's errors and warnings.
Register = Callable[[ParsedSubmission], list[XdsError]]


@dataclass
class ProvideAndRegister:
    repository_unique_id: str
    blobs: BlobStore
    register: Register
    #: How many objects and values a submission may hold (the registry's, in-process).
    limits: SubmissionLimits = field(default_factory=SubmissionLimits)
    #: DSG (xds.security.dsg): signature documents verified against what they sign, per dsg_policy.
    signatures: SubmissionSignatures | None = None

    def provide(self, request: etree._Element, content_of: Callable[[etree._Element], Attachment]
                ) -> list[XdsError]:
        """The errors and warnings of provide_and_register()."""
        return self.provide_and_register(request, content_of).errors

    def provide_and_register(self, request: etree._Element, content_of: Callable[[etree._Element], Attachment]
                             ) -> Result:
        """Store and register one ProvideAndRegisterDocumentSetRequest. The Result holds the
        errors and warnings for its RegistryResponse (the documents were stored if and only if
        none of them is an error) and the patient and submission set it names.
        content_of(xdsb:Document) gives a document's content (a SoapFault from it, for an
        xop:Include to a part that is not there, goes to the client as is)."""
        submit = request.find(SUBMIT_OBJECTS_REQUEST) if request.tag == PROVIDE_AND_REGISTER_REQUEST else None
        if submit is None:
            found = etree.QName(request).localname if request.tag != PROVIDE_AND_REGISTER_REQUEST else \
                "a ProvideAndRegisterDocumentSetRequest without lcm:SubmitObjectsRequest"
            return Result([error("repository.not-provide-and-register", found=found)])
        parsed = read_submission(submit, self.limits)
        ss = parsed.submission.submission_set
        if parsed.over_limits:  # refused as it was read: no document is worth looking at
            return Result(parsed.errors, patient_id=(ss.patient_id or "") if ss else "",
                          submission_set_unique_id=(ss.unique_id or "") if ss else "")
        return Result(self._provide(request, parsed, content_of), patient_id=(ss.patient_id or "") if ss else "",
                      submission_set_unique_id=(ss.unique_id or "") if ss else "")

    def _provide(self, request: etree._Element, parsed: ParsedSubmission,
                 content_of: Callable[[etree._Element], Attachment]) -> list[XdsError]:
        documents, problems = _documents_by_id(request)
        entries = parsed.submission.documents
        problems += _check_unique_ids(entries)
        paired: list[tuple] = []
        for entry in entries:
            element = documents.pop(entry.id, None)
            if element is None:
                if entry.object_type != DocumentEntryType.ON_DEMAND.value:
                    problems.append(error("repository.missing-document", entry.id, id=entry.id,
                                          unique_id=entry.unique_id or "(none)"))
                continue
            content = content_of(element)
            problems += self._check_document(entry, content)
            paired.append((entry, content))
        for document_id in documents:
            problems.append(error("repository.missing-metadata", document_id, id=document_id))
        if any(p.is_error for p in problems):
            return problems
        verdicts = {}
        if self.signatures is not None:
            verdicts, refused = self.signatures.check_provide(parsed.submission, {e.id: c for e, c in paired})
            problems += refused
            if any(p.is_error for p in problems):
                return problems

        new = []
        for entry, content in paired:
            entry.hash, entry.size, entry.repository_unique_id = (content.sha1, str(content.size),
                                                                  self.repository_unique_id)
            element = parsed.elements.get(entry.id)
            if element is not None:
                set_slot(element, "hash", entry.hash)
                set_slot(element, "size", entry.size)
                set_slot(element, "repositoryUniqueId", entry.repository_unique_id)
            new.append(NewDocument(entry.unique_id or "", entry.mime_type or "application/octet-stream",
                                   content, content.sha1, content.size, entry.patient_id or "",
                                   {"dsg": verdicts[entry.id].as_json()} if entry.id in verdicts else {}))
        try:
            staged = self.blobs.stage(new)
        except OSError as exc:
            log.exception("staging %d document(s) failed", len(new))
            return problems + [error("repository.internal", reason=f"the documents could not be written: "
                                                                   f"{exc.strerror or exc}")]
        try:
            problems += self.register(parsed)
        except BaseException:
            self.blobs.abort(staged)
            raise
        if any(p.is_error for p in problems):
            self.blobs.abort(staged)
            return problems
        try:
            self.blobs.commit(staged)
        except OSError as exc:
            # Registered but not made visible: recovery at the next start finishes the commit
            # (the registry holds the metadata, which is what recovery asks).
            log.exception("committing %d registered document(s) failed; recovery will finish it", len(new))
            return problems + [error("repository.internal", reason=f"the documents were registered but could not "
                                                                   f"be made final: {exc.strerror or exc}")]
        return problems

    def _check_document(self, entry, content: Attachment) -> list[XdsError]:
        """ITI TF-2b 3.41.4.1.3: a hash, size or repositoryUniqueId the source sent must be the
        repository's own value."""
        problems = []
        if entry.hash is not None and entry.hash.strip().lower() != content.sha1:
            problems.append(error("repository.hash-mismatch", entry.id, id=entry.id, value=entry.hash,
                                  actual=content.sha1))
        if entry.size is not None and entry.size.strip() != str(content.size):
            problems.append(error("repository.size-mismatch", entry.id, id=entry.id, value=entry.size,
                                  actual=content.size))
        if entry.repository_unique_id is not None and entry.repository_unique_id.strip() != self.repository_unique_id:
            problems.append(error("repository.other-repository", entry.id, id=entry.id,
                                  value=entry.repository_unique_id, expected=self.repository_unique_id))
        return problems


def _documents_by_id(request: etree._Element) -> tuple[dict[str, etree._Element], list[XdsError]]:
    documents: dict[str, etree._Element] = {}
    problems = []
    for element in request.iterchildren(DOCUMENT):
        document_id = (element.get("id") or "").strip()
        if document_id in documents:
            problems.append(error("repository.duplicate-document", document_id, id=document_id))
            continue
        documents[document_id] = element
    return documents, problems


def _check_unique_ids(entries) -> list[XdsError]:
    by_unique_id: dict[str, list[str]] = {}
    for entry in entries:
        if entry.unique_id:
            by_unique_id.setdefault(entry.unique_id, []).append(entry.id)
    return [error("repository.duplicate-unique-id", ids[0], value=unique_id, ids=", ".join(ids))
            for unique_id, ids in by_unique_id.items() if len(ids) > 1]
