"""Every rule a submission or a stored query is checked against, in one table.

Each rule has an id, the XDS error code it answers with (ITI TF-3 Table 4.2.4.1-2 and
ITI TF-2 3.42.4.1.3), and a message template that becomes the codeContext. The template names
what is wrong, where, and what the submitter should send instead; a person reading the
RegistryErrorList must be able to act on it without opening the standard.

Who checks what:
- `xds.ebrim.submission` (reading the XML): the structure of ebRIM itself - which
  RegistryPackage is the SubmissionSet, slot and external identifier cardinality,
  classifications without nodeRepresentation or codingScheme.
- `xds.registry.validate` (the model, no database): required attributes per object type,
  value formats, codes of the affinity domain, patient ids and associations within the
  submission.
- `xds.registry.register` (against what the registry holds): duplicates in the registry,
  targets of relationships, deprecated documents, unknown patients.
- `xds.repository.provide` (Provide and Register, ITI-41) and `xds.repository.retrieve`
  (Retrieve Document Set, ITI-43): documents against their DocumentEntries (one each, hash,
  size, repositoryUniqueId), uniqueIds within the request, the registry's reachability, the
  documents and repository a retrieve names. Their location is the DocumentEntry's id or the
  document's uniqueId.
- `xds.registry.query_params` and `xds.registry.query` (Registry Stored Query, ITI-18): the
  request, the stored query id, the parameters and their values, and how many values and terms
  a query may carry; the answer's limits (one patient, the most LeafClass objects and bytes).
  Their location is the parameter's name.
- `xds.ebrim.remove` with `xds.registry.remove` (Delete Document Set, ITI-62) and
  `xds.repository.remove` (Remove Documents, ITI-86): the request, the objects it names
  against what the registry holds and what would be left referring to them, the documents
  against the repository's store.
- `xds.security.dsg` (Document Digital Signature, ITI TF-3 5.5, when dsg_policy is reject): a
  signature document that does not verify (ITI-41, XDSRepositoryMetadataError), a signature
  DocumentEntry's metadata (ITI-42 and ITI-41, XDSRegistryMetadataError). Location: the
  signature's DocumentEntry id.
- `xds.registry.update` (Update Document Set, ITI-57, the Metadata Update option): what each
  operation of the request is (a new version, a status change, a new association), and each
  against what the registry holds: the version it replaces, its uniqueId, objectType and
  patient, the statuses it names. Its location is the id the submitter gave the object. The
  rules `version.*` are those of first versions, which Register Document Set-b (ITI-42) checks.

Every rule has a test in tests/test_rules_*.py; tests/test_rules_table.py checks that none is
left without one.
"""

from __future__ import annotations

from dataclasses import dataclass

from xds.errors import ERROR, XdsError

METADATA = "XDSRegistryMetadataError"
DUPLICATE_IN_MESSAGE = "XDSRegistryDuplicateUniqueIdInMessage"
DUPLICATE_IN_REGISTRY = "XDSDuplicateUniqueIdInRegistry"
NON_IDENTICAL_HASH = "XDSNonIdenticalHash"
NON_IDENTICAL_SIZE = "XDSNonIdenticalSize"
PATIENT_MISMATCH = "XDSPatientIdDoesNotMatch"
UNKNOWN_PATIENT = "XDSUnknownPatientId"
DEPRECATED = "XDSRegistryDeprecatedDocumentError"
REGISTRY_ERROR = "XDSRegistryError"
REGISTRY_BUSY = "XDSRegistryBusy"
UNKNOWN_STORED_QUERY = "XDSUnknownStoredQuery"
MISSING_PARAM = "XDSStoredQueryMissingParam"
PARAM_NUMBER = "XDSStoredQueryParamNumber"
NOT_SINGLE_PATIENT = "XDSResultNotSinglePatient"
TOO_MANY_RESULTS = "XDSTooManyResults"
# Document Repository (ITI TF-3 Table 4.2.4.1-2)
REPOSITORY_ERROR = "XDSRepositoryError"
REPOSITORY_METADATA = "XDSRepositoryMetadataError"
REPOSITORY_DUPLICATE_IN_MESSAGE = "XDSRepositoryDuplicateUniqueIdInMessage"
MISSING_DOCUMENT = "XDSMissingDocument"
MISSING_DOCUMENT_METADATA = "XDSMissingDocumentMetadata"
REGISTRY_NOT_AVAILABLE = "XDSRegistryNotAvailable"
DOCUMENT_UNIQUE_ID = "XDSDocumentUniqueIdError"
UNKNOWN_REPOSITORY = "XDSUnknownRepositoryId"
# Delete Document Set (ITI-62; ebRS 3.0 exceptions, and the NIST toolkit's metadata model check)
UNRESOLVED_REFERENCE = "UnresolvedReferenceException"
REFERENCES_EXIST = "ReferencesExistException"
UNREFERENCED_OBJECT = "XDSUnreferencedObjectException"
# Update Document Set (ITI-57, ITI TF-2b 3.57.4.1.3.5, the Metadata Update option)
METADATA_UPDATE = "XDSMetadataUpdateError"
METADATA_VERSION = "XDSMetadataVersionError"
PATIENT_RECONCILIATION = "XDSPatientIDReconciliationError"
METADATA_UPDATE_OPERATION = "XDSMetadataUpdateOperationError"


@dataclass(frozen=True)
class Rule:
    id: str
    code: str
    message: str
    severity: str = ERROR

    def error(self, location: str = "", **values: object) -> XdsError:
        return XdsError(self.code, self.message.format(**values), location, self.severity)


_RULES = [
    # --- the request as a whole -------------------------------------------------------------
    Rule("request.not-submit-objects", METADATA,
         "the SOAP body must hold an lcm:SubmitObjectsRequest, found {found}"),
    Rule("request.no-object-list", METADATA,
         "the SubmitObjectsRequest has no rim:RegistryObjectList"),
    Rule("request.unknown-object", METADATA,
         "rim:{tag} (id '{id}') is not an XDS registry object; send ExtrinsicObject, "
         "RegistryPackage, Association, Classification or ExternalIdentifier"),
    Rule("submission.no-submission-set", METADATA,
         "the submission has no SubmissionSet: one RegistryPackage must be classified by "
         "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"),
    Rule("submission.many-submission-sets", METADATA,
         "the submission has {count} SubmissionSets ({ids}); exactly one is allowed"),
    Rule("object.missing-id", METADATA, "rim:{tag} has no id attribute"),
    Rule("object.duplicate-id", METADATA,
         "the id '{id}' is used by more than one object in the submission"),
    Rule("object.bad-uuid", METADATA,
         "the id '{id}' starts with urn:uuid: but is not a UUID (urn:uuid:xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"),
    Rule("object.uuid-exists", METADATA,
         "the entryUUID '{id}' already identifies an object in the registry; new objects "
         "need new entryUUIDs"),
    Rule("object.bad-reference", METADATA,
         "{what} of '{id}' is '{ref}', which is neither an object of this submission nor "
         "an object in the registry"),
    Rule("object.bad-status", METADATA,
         "{what} '{id}' has status '{value}'; a submitted object may only carry "
         "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved or none"),

    # --- ebRIM structure: slots, classifications, external identifiers ---------------------
    Rule("slot.duplicate", METADATA, "{what} '{id}' has the slot '{slot}' more than once"),
    Rule("slot.single-value", METADATA,
         "{what} '{id}' has {count} values in the slot '{slot}', which takes exactly one"),
    Rule("slot.empty", METADATA, "{what} '{id}' has the slot '{slot}' with no value"),
    Rule("classification.no-node", METADATA,
         "{what} '{id}': the {attribute} classification '{cid}' has no nodeRepresentation (the code)"),
    Rule("classification.no-scheme", METADATA,
         "{what} '{id}': the {attribute} classification '{cid}' has no codingScheme slot "
         "with exactly one value"),
    Rule("classification.no-name", METADATA,
         "{what} '{id}': the {attribute} classification '{cid}' has no Name (the code's display name)"),
    Rule("classification.wrong-object", METADATA,
         "the classification '{cid}' is inside '{id}' but classifies '{target}'"),
    Rule("classification.author-empty", METADATA,
         "{what} '{id}': the author classification '{cid}' names no authorPerson, "
         "authorInstitution, authorRole, authorSpecialty or authorTelecommunication"),
    Rule("external-id.duplicate", METADATA,
         "{what} '{id}' has the external identifier {attribute} more than once"),
    Rule("external-id.wrong-object", METADATA,
         "the external identifier '{eid}' ({attribute}) is inside '{id}' but names "
         "registryObject '{target}'"),
    Rule("external-id.no-value", METADATA,
         "{what} '{id}': the external identifier {attribute} has no value"),
    Rule("package.unclassified", METADATA,
         "RegistryPackage '{id}' is neither a SubmissionSet nor a Folder: classify it with "
         "classificationNode urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd (SubmissionSet) or "
         "urn:uuid:d9d542f3-6cc4-48b6-8870-ea235fbc94c2 (Folder)"),
    Rule("package.ambiguous", METADATA,
         "RegistryPackage '{id}' is classified both as a SubmissionSet and as a Folder; "
         "a package is one or the other"),

    # --- required attributes (ITI TF-3 Table 4.3.1-3, Register Document Set-b) --------------
    Rule("document.missing", METADATA,
         "DocumentEntry '{id}' has no {attribute}; it is required ({how})"),
    Rule("document.on-demand-forbidden", METADATA,
         "On-Demand DocumentEntry '{id}' carries {attribute}, which an On-Demand entry "
         "must not have"),
    Rule("document.bad-object-type", METADATA,
         "DocumentEntry '{id}' has objectType '{value}'; use "
         "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1 (stable) or "
         "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248 (On-Demand)"),
    Rule("submission-set.missing", METADATA,
         "SubmissionSet '{id}' has no {attribute}; it is required ({how})"),
    Rule("folder.missing", METADATA, "Folder '{id}' has no {attribute}; it is required ({how})"),
    Rule("association.missing", METADATA,
         "Association '{id}' has no {attribute}; it is required"),

    # --- value formats ---------------------------------------------------------------------
    Rule("format.dtm", METADATA,
         "{what} '{id}': {attribute} '{value}' is not an HL7 DTM in UTC "
         "(YYYY[MM[DD[hh[mm[ss]]]]], e.g. 20241231235959)"),
    Rule("format.oid", METADATA, "{what} '{id}': {attribute} '{value}' is not an OID"),
    Rule("format.unique-id", METADATA,
         "{what} '{id}': uniqueId '{value}' is not an OID or OID^extension of at most "
         "128 characters (ITI TF-3 4.2.3.2.26)"),
    Rule("format.hash", METADATA,
         "DocumentEntry '{id}': hash '{value}' is not a SHA-1 digest (40 hexadecimal characters)"),
    Rule("format.size", METADATA,
         "DocumentEntry '{id}': size '{value}' is not a non-negative whole number of bytes"),
    Rule("format.language", METADATA,
         "DocumentEntry '{id}': languageCode '{value}' is not an RFC 5646 language tag (e.g. en-US, ja-JP)"),
    Rule("format.mime-type", METADATA,
         "DocumentEntry '{id}': mimeType '{value}' is not a MIME type (type/subtype)"),
    Rule("format.patient-id", METADATA, "{what} '{id}': {attribute}: {reason}"),
    Rule("format.source-patient-info", METADATA,
         "DocumentEntry '{id}': sourcePatientInfo value '{value}' is not of the form PID-n|value"),
    Rule("format.xcn", METADATA,
         "{what} '{id}': {attribute} '{value}' is not an HL7 XCN (id^family^given^...^&authority&ISO)"),
    Rule("format.xon", METADATA,
         "{what} '{id}': {attribute} '{value}' is not an HL7 XON (name^^^^^&OID&ISO^^^^id)"),
    Rule("format.home-community-id", METADATA,
         "{what} '{id}': homeCommunityId '{value}' is not a URN of the form urn:oid:OID"),
    Rule("format.uri", METADATA, "DocumentEntry '{id}': URI '{value}' is not a URI"),
    Rule("format.reference-id", METADATA,
         "DocumentEntry '{id}': referenceIdList value '{value}' is not an HL7 CXi "
         "(id^^^&OID&ISO^type)"),
    Rule("format.service-times", METADATA,
         "DocumentEntry '{id}': serviceStartTime {start} is after serviceStopTime {stop}"),

    # --- codes of the affinity domain ------------------------------------------------------
    Rule("code.unknown", METADATA,
         "{what} '{id}': {attribute} '{code}' of coding scheme '{scheme}' is not a code of "
         "this affinity domain"),

    # --- uniqueIds -------------------------------------------------------------------------
    Rule("unique-id.in-message", DUPLICATE_IN_MESSAGE,
         "uniqueId '{value}' is used by {ids} in this submission; each object needs its own"),
    Rule("unique-id.in-registry", DUPLICATE_IN_REGISTRY,
         "{what} uniqueId '{value}' is already in the registry (entryUUID {existing})"),
    Rule("unique-id.hash-differs", NON_IDENTICAL_HASH,
         "DocumentEntry '{id}': uniqueId '{value}' is already registered with hash {existing}; "
         "this submission says {value_hash}"),
    Rule("unique-id.size-differs", NON_IDENTICAL_SIZE,
         "DocumentEntry '{id}': uniqueId '{value}' is already registered with size {existing}; "
         "this submission says {value_size}"),
    Rule("unique-id.resubmitted-other-patient", DUPLICATE_IN_REGISTRY,
         "DocumentEntry '{id}': uniqueId '{value}' is already registered for patient "
         "{existing}; it cannot be registered again for {patient}"),

    # --- patients --------------------------------------------------------------------------
    Rule("patient.mismatch", PATIENT_MISMATCH,
         "{what} '{id}' has patientId {patient}, but the SubmissionSet has {expected}; "
         "every object of a submission must be for the same patient"),
    Rule("patient.target-mismatch", PATIENT_MISMATCH,
         "{type} Association '{id}': the target '{target}' belongs to patient {target_patient}, "
         "the source '{source}' to {patient}"),
    Rule("patient.unknown", UNKNOWN_PATIENT,
         "patientId {patient} is not known to this registry's affinity domain"),

    # --- associations ----------------------------------------------------------------------
    Rule("association.bad-type", METADATA,
         "Association '{id}' has associationType '{value}', which XDS does not define"),
    Rule("association.no-status", METADATA,
         "HasMember Association '{id}' from the SubmissionSet to DocumentEntry '{target}' "
         "needs a SubmissionSetStatus slot (Original or Reference)"),
    Rule("association.bad-status", METADATA,
         "HasMember Association '{id}': SubmissionSetStatus '{value}' must be 'Original' for "
         "an object of this submission and 'Reference' for one already in the registry"),
    Rule("association.bad-member", METADATA,
         "HasMember Association '{id}' links '{source}' to '{target}'; a HasMember goes from "
         "the SubmissionSet to a DocumentEntry, Folder or Association, or from a Folder to a "
         "DocumentEntry"),
    Rule("association.not-in-submission-set", METADATA,
         "{what} '{id}' is not a member of the SubmissionSet: add a HasMember Association "
         "from '{ss}' to it"),
    Rule("association.folder-member-unlinked", METADATA,
         "HasMember Association '{id}' adds '{target}' to Folder '{source}', but the "
         "SubmissionSet does not include it: add a HasMember Association from '{ss}' to '{id}'"),
    Rule("association.bad-source", METADATA,
         "{type} Association '{id}': the source '{source}' must be a DocumentEntry of this "
         "submission"),
    Rule("association.bad-target", METADATA,
         "{type} Association '{id}': the target '{target}' is not a DocumentEntry in the registry"),
    Rule("association.deprecated-target", DEPRECATED,
         "{type} Association '{id}': the target DocumentEntry '{target}' is Deprecated; "
         "relate the new document to the current version instead"),
    Rule("association.target-already-replaced", METADATA,
         "{type} Association '{id}': DocumentEntry '{target}' is replaced twice in this submission"),
    Rule("association.self", METADATA,
         "Association '{id}' has '{source}' as both source and target"),
    Rule("association.target-deprecated-by-replacement", DEPRECATED,
         "{type} Association '{id}': DocumentEntry '{target}' becomes Deprecated with this submission "
         "({reason}); relate the new document to the replacement instead"),

    # --- bounds of a submission: what a network allows, ebRIM 3.0's lengths, what the registry
    # stores (xds.ebrim.submission's census; xds.registry.validate for the stored columns) ----
    Rule("limit.objects", REGISTRY_ERROR,
         "the submission holds more than {limit} registry objects (DocumentEntries, SubmissionSets, "
         "Folders, Associations, their Classifications and ExternalIdentifiers, ObjectRefs), the "
         "most this registry takes in one submission (max_submission_objects); send the documents "
         "in several submissions"),
    Rule("limit.values", REGISTRY_ERROR,
         "the submission's slots hold more than {limit} values, the most this registry takes in one "
         "submission (max_submission_values); send the documents in several submissions"),
    Rule("limit.length", METADATA,
         "{what} '{id}': {part} is {length} characters long, and ebRIM 3.0 allows at most {limit} "
         "({type} in rim.xsd); it begins '{start}'"),
    Rule("limit.stored-length", METADATA,
         "{what} '{id}': {attribute} is {length} characters long, more than the {limit} this "
         "registry stores; it begins '{start}'"),
    Rule("limit.size", METADATA,
         "DocumentEntry '{id}': size {value} is more than {limit}, the largest size this registry "
         "stores (a signed 64-bit integer of bytes)"),
    Rule("object.bad-lid", METADATA,
         "DocumentEntry '{id}' has lid '{value}', which begins with urn:uuid but is not a UUID "
         "(urn:uuid:xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx); the lid of a DocumentEntry is the "
         "entryUUID of its first version"),

    # --- the Document Repository (ITI-41 ITI TF-2b 3.41.4.1.3; ITI-43 3.43.4.2.3) -----------
    Rule("repository.not-provide-and-register", REPOSITORY_ERROR,
         "the SOAP body must hold an xdsb:ProvideAndRegisterDocumentSetRequest with an "
         "lcm:SubmitObjectsRequest, found {found}"),
    Rule("repository.missing-document", MISSING_DOCUMENT,
         "DocumentEntry '{id}' (uniqueId {unique_id}) has no document: add an xdsb:Document "
         "with id=\"{id}\" holding its content"),
    Rule("repository.missing-metadata", MISSING_DOCUMENT_METADATA,
         "xdsb:Document id=\"{id}\" belongs to no DocumentEntry of the submission: its id must "
         "be the id of an ExtrinsicObject in the SubmitObjectsRequest"),
    Rule("repository.duplicate-document", REPOSITORY_METADATA,
         "more than one xdsb:Document has id=\"{id}\"; send each DocumentEntry's document once"),
    Rule("repository.duplicate-unique-id", REPOSITORY_DUPLICATE_IN_MESSAGE,
         "uniqueId '{value}' is used by DocumentEntries {ids} in this request; each document "
         "needs its own uniqueId"),
    Rule("repository.hash-mismatch", REPOSITORY_METADATA,
         "DocumentEntry '{id}': hash {value} is not the SHA-1 of the document received ({actual}); "
         "send the right hash, or none: the repository computes it"),
    Rule("repository.size-mismatch", REPOSITORY_METADATA,
         "DocumentEntry '{id}': size {value} is not the size of the document received ({actual} "
         "bytes); send the right size, or none: the repository computes it"),
    Rule("repository.other-repository", REPOSITORY_METADATA,
         "DocumentEntry '{id}': repositoryUniqueId {value} is not this repository's ({expected}); "
         "send no repositoryUniqueId, or this one"),
    Rule("repository.registry-unavailable", REGISTRY_NOT_AVAILABLE,
         "the Document Registry at {url} could not be reached ({reason}); nothing was stored, "
         "send the submission again later"),
    Rule("repository.registry-failed", REGISTRY_ERROR,
         "the Document Registry at {url} did not answer with a RegistryResponse ({reason}); "
         "nothing was stored"),
    Rule("repository.internal", REPOSITORY_ERROR,
         "the repository could not store the documents ({reason}); nothing was stored"),
    # --- DSG, Document Digital Signature (ITI TF-3 5.5), with dsg_policy reject ----------------
    Rule("dsg.not-verified", REPOSITORY_METADATA,
         "signature DocumentEntry '{id}' (uniqueId {unique_id}): the DSG check '{check}' failed: "
         "{reason}{others}; this repository refuses signatures that do not verify (dsg_policy reject)"),
    Rule("dsg.mime-type", METADATA,
         "signature DocumentEntry '{id}' has mimeType '{value}'; a DSG signature document is text/xml "
         "(ITI TF-3 5.5.6.1.6)"),
    Rule("dsg.format-code", METADATA,
         "signature DocumentEntry '{id}' (the source of a signs association) has formatCode '{value}'; a DSG "
         "detached signature has urn:ihe:iti:dsg:detached:2014 (codingScheme 1.3.6.1.4.1.19376.1.2.3; ITI TF-3 "
         "5.5.6.1.1) or the first DSG supplement's http://www.w3.org/2000/09/xmldsig#"),
    Rule("dsg.signs-target", METADATA,
         "signature DocumentEntry '{id}' signs '{target}', which is not a DocumentEntry; a signs association "
         "goes from the signature to each document it signs (ITI TF-3 5.5.6.4)"),
    Rule("retrieve.not-retrieve-request", REPOSITORY_ERROR,
         "the SOAP body must hold an xdsb:RetrieveDocumentSetRequest with at least one "
         "DocumentRequest, found {found}"),
    Rule("retrieve.unknown-document", DOCUMENT_UNIQUE_ID,
         "document uniqueId '{value}' is not in this repository ({repository})"),
    Rule("retrieve.unknown-repository", UNKNOWN_REPOSITORY,
         "RepositoryUniqueId '{value}' is not this repository's ({expected}); ask the repository "
         "named in the DocumentEntry's repositoryUniqueId for document {document}"),
    Rule("retrieve.internal", REPOSITORY_ERROR,
         "the repository could not read document {document} ({reason})"),

    # --- Delete Document Set (ITI-62, ITI TF-2b 3.62.4.1.3 in the RMD supplement) ------------
    # xds.ebrim.remove reads the request; xds.registry.remove checks it against the registry.
    # The location is the entryUUID named.
    Rule("remove.not-remove-objects", REGISTRY_ERROR,
         "the SOAP body must hold an lcm:RemoveObjectsRequest, found {found}"),
    Rule("remove.adhoc-query", REGISTRY_ERROR,
         "the RemoveObjectsRequest selects objects with an rim:AdhocQuery; Delete Document Set names "
         "each object to remove by an rim:ObjectRef in an rim:ObjectRefList"),
    Rule("remove.deletion-scope", REGISTRY_ERROR,
         "deletionScope '{value}' is not allowed in Delete Document Set; leave the attribute out (its "
         "default, urn:oasis:names:tc:ebxml-regrep:DeletionScopeType:DeleteAll, is the only scope)"),
    Rule("remove.no-objects", REGISTRY_ERROR,
         "the RemoveObjectsRequest names no object: put an rim:ObjectRef id=\"urn:uuid:...\" in its "
         "rim:ObjectRefList for each DocumentEntry, SubmissionSet, Folder and Association to remove"),
    Rule("remove.object-ref-without-id", REGISTRY_ERROR,
         "an rim:ObjectRef of the ObjectRefList has no id; give it the entryUUID of the object to remove"),
    Rule("remove.too-many-objects", REGISTRY_ERROR,
         "the request names more than {limit} objects, the most this registry removes in one request "
         "(max_submission_objects); remove them in several requests"),
    Rule("remove.unresolved", UNRESOLVED_REFERENCE,
         "'{id}' is not the entryUUID of a DocumentEntry, SubmissionSet, Folder or Association in this "
         "registry; nothing was removed"),
    Rule("remove.references-exist", REFERENCES_EXIST,
         "{what} '{id}' cannot be removed: {count} Association(s) that the request does not remove refer "
         "to it ({associations}); remove them in the same request, or first"),
    Rule("remove.unreferenced", UNREFERENCED_OBJECT,
         "removing Association '{association}' would leave {what} '{id}' with no Association referring "
         "to it; remove '{id}' in the same request too, or keep the association"),
    Rule("remove.busy", REGISTRY_BUSY,
         "the registry is busy ({reason}); nothing was removed, send the request again"),
    Rule("remove.internal", REGISTRY_ERROR,
         "the registry could not remove the objects ({reason}); nothing was removed"),

    # --- Remove Documents (ITI-86, RMD 3.86.4.1.3) at the Document Repository ----------------
    # The location is the document's uniqueId.
    Rule("remove-documents.not-remove-documents", REPOSITORY_ERROR,
         "the SOAP body must hold an rmd:RemoveDocumentsRequest with at least one xdsb:DocumentRequest, "
         "found {found}"),
    Rule("remove-documents.incomplete-request", REPOSITORY_ERROR,
         "DocumentRequest {number} has no {missing}; each names the RepositoryUniqueId and the "
         "DocumentUniqueId of a document to remove"),
    Rule("remove-documents.unknown-repository", UNKNOWN_REPOSITORY,
         "RepositoryUniqueId '{value}' is not this repository's ({expected}); send the removal of "
         "document {document} to the repository its DocumentEntry's repositoryUniqueId names"),
    Rule("remove-documents.unknown-document", DOCUMENT_UNIQUE_ID,
         "document uniqueId '{value}' is not in this repository ({repository}); nothing was removed for it"),
    Rule("remove-documents.not-removed", REPOSITORY_ERROR,
         "the repository could not remove document {document} ({reason}); it is still stored"),
    Rule("remove-documents.internal", REPOSITORY_ERROR,
         "the repository could not process the removal ({reason})"),

    # --- Update Document Set (ITI-57, ITI TF-2b 3.57.4.1.3 of the Metadata Update option) -----
    # xds.registry.update reads the operations of the request and checks each against the
    # registry. The location is the id the submitter gave the object or association.
    Rule("update.first-version", METADATA_UPDATE,
         "{what} '{id}' {how}: Update Document Set carries new versions of objects already registered, "
         "each with lid = the logicalID of the object it updates (ITI TF-2b 3.57.4.1.3.1); register a "
         "first version with Register Document Set-b (ITI-42)"),
    Rule("update.symbolic-lid", METADATA_UPDATE,
         "{what} '{id}' has lid '{value}', which is not a UUID: a new version names the object it updates "
         "by that object's logicalID (urn:uuid:...), never by a symbolic id"),
    Rule("update.no-previous-version", METADATA_UPDATE,
         "{what} '{id}' is a new version but no HasMember from the SubmissionSet to it has a PreviousVersion "
         "slot: add one whose value is the versionName of the version it replaces (ITI TF-2b 3.57.4.1.3.3.1)"),
    Rule("update.bad-previous-version", METADATA_UPDATE,
         "the PreviousVersion slot of Association '{id}' holds {count} values; it holds exactly one, the "
         "versionName of the version being replaced"),
    Rule("update.unknown-logical-id", METADATA_VERSION,
         "{what} '{id}' updates logicalID '{lid}', but no {what} of this registry has that logicalID; "
         "the lid of a new version is the entryUUID of the object's first version"),
    Rule("update.version-mismatch", METADATA_VERSION,
         "{what} '{id}' replaces version {value} (PreviousVersion) of '{lid}', but its latest version is "
         "{latest} (entryUUID {latest_uuid}); read it again (GetDocuments or GetFolders with the logicalID "
         "and $MetadataLevel 2) and update the latest version"),
    Rule("update.concurrent", METADATA_VERSION,
         "{what} '{lid}' was changed by another request while this one was checked; nothing was stored: read "
         "its latest version again and send the update again"),
    Rule("update.unique-id-changed", METADATA_UPDATE,
         "{what} '{id}' has uniqueId '{value}', but the {what} it updates ('{lid}') has uniqueId '{existing}'; "
         "a new version keeps the uniqueId (ITI TF-2b 3.57.4.1.3.3.1)"),
    Rule("update.object-type-changed", METADATA_UPDATE,
         "DocumentEntry '{id}' has objectType '{value}', but the DocumentEntry it updates ('{lid}') has "
         "'{existing}'; a new version keeps the objectType (stable or On-Demand)"),
    Rule("update.patient-linked", PATIENT_RECONCILIATION,
         "{what} '{id}' moves '{lid}' from patient {existing} to {patient}, but its latest version is linked "
         "to other objects ({links}); those links would join two patients' records: remove or deprecate them "
         "first, or send the new version with the slot AssociationPropagation = no on its HasMember"),
    Rule("update.association-patients", PATIENT_RECONCILIATION,
         "Association '{id}' ({type}) links '{source}' of patient {source_patient} to '{target}' of patient "
         "{target_patient}; an association joins objects of one patient"),
    Rule("update.status-slot", METADATA_UPDATE,
         "Association '{id}' (UpdateAvailabilityStatus) needs a slot {slot} with exactly one value, an "
         "availability status (urn:oasis:names:tc:ebxml-regrep:StatusType:Approved or ...:Deprecated)"),
    Rule("update.bad-status", METADATA_UPDATE,
         "Association '{id}' (UpdateAvailabilityStatus): {slot} '{value}' is not a status an object may "
         "have; use urn:oasis:names:tc:ebxml-regrep:StatusType:Approved or ...:Deprecated"),
    Rule("update.original-status", METADATA_UPDATE,
         "Association '{id}' (UpdateAvailabilityStatus) says {what} '{target}' is {value} (OriginalStatus), "
         "but it is {existing}; nothing was changed: read its status again"),
    Rule("update.status-source", METADATA_UPDATE,
         "Association '{id}' (UpdateAvailabilityStatus) has sourceObject '{source}'; its sourceObject is the "
         "SubmissionSet of the request ('{ss}')"),
    Rule("update.status-target-unknown", METADATA_UPDATE,
         "Association '{id}' (UpdateAvailabilityStatus) targets '{target}', which is not the entryUUID of a "
         "DocumentEntry, Folder or Association of this registry"),
    Rule("update.status-not-latest", METADATA_VERSION,
         "Association '{id}' (UpdateAvailabilityStatus) targets version {version} of {what} '{lid}', whose "
         "latest version is {latest} (entryUUID {latest_uuid}); the status of the latest version is changed"),
    Rule("update.status-of-submission-set", METADATA_UPDATE_OPERATION,
         "Association '{id}' (UpdateAvailabilityStatus) targets SubmissionSet '{target}'; a SubmissionSet's "
         "status cannot be changed (ITI TF-2b 3.57.4.1.3.1), only that of a DocumentEntry, Folder or "
         "Association"),
    Rule("update.status-of-association", METADATA_UPDATE,
         "Association '{id}' (UpdateAvailabilityStatus) targets Association '{target}' ({type} from a "
         "{source_kind}); only a document relationship or a Folder's HasMember can change status"),
    Rule("update.association-end-unknown", METADATA_UPDATE,
         "Association '{id}' ({type}): {end} '{ref}' is not an object of this registry; a submitted "
         "association links objects already registered, by entryUUID"),
    Rule("update.association-end-deprecated", METADATA_UPDATE,
         "Association '{id}' ({type}): {end} '{ref}' is Deprecated; a new association links Approved objects"),
    Rule("update.association-kind", METADATA_UPDATE,
         "Association '{id}' ({type}) links {source_kind} '{source}' to {target_kind} '{target}'; a "
         "submitted HasMember links a Folder to a DocumentEntry, a document relationship two DocumentEntries"),
    Rule("update.association-exists", METADATA_UPDATE,
         "Association '{id}' ({type}) would link '{source}' to '{target}', which Approved Association "
         "'{existing}' links already"),
    Rule("update.unknown-operation", METADATA_UPDATE_OPERATION,
         "{what} '{id}' is none of the operations of Update Document Set (ITI TF-2b 3.57.4.1.3.3): a new "
         "version of a DocumentEntry or Folder with its SubmissionSet HasMember, an UpdateAvailabilityStatus "
         "association, or an association between registered objects with the SubmissionSet's HasMember of it"),
    Rule("update.no-operation", METADATA_UPDATE_OPERATION,
         "the request holds a SubmissionSet and no operation: send a new version, an UpdateAvailabilityStatus "
         "association or a new association with it"),
    Rule("update.same-object-twice", METADATA_UPDATE_OPERATION,
         "{first} and {second} both change '{lid}'; one request changes an object once "
         "(ITI TF-2b 3.57.4.1.3.1): send them in two requests"),
    Rule("update.busy", REGISTRY_BUSY,
         "the registry is busy ({reason}); nothing was changed, send the request again"),
    Rule("update.internal", REGISTRY_ERROR,
         "the registry could not process the update ({reason}); nothing was changed"),
    # First versions (ITI-42): the forms Update Document Set alone may send.
    Rule("version.lid-in-register", METADATA,
         "{what} '{id}' has lid '{value}', not its own id: a registered object's first version is its own "
         "logicalID; a new version of '{value}' is sent with Update Document Set (ITI-57)"),
    Rule("version.deprecated-folder", METADATA,
         "HasMember Association '{id}': the Folder '{source}' is Deprecated (an older version of it, or one "
         "deprecated by Update Document Set); add the document to the Folder's latest version"),
    Rule("version.update-in-register", METADATA,
         "Association '{id}' {how}, which only Update Document Set (ITI-57) sends; Register Document Set-b "
         "registers first versions"),

    # --- the registry itself ---------------------------------------------------------------
    Rule("registry.internal", REGISTRY_ERROR,
         "the registry could not process the request ({reason}); the submission was not stored"),
    Rule("registry.busy", REGISTRY_BUSY,
         "the registry is busy ({reason}); nothing was stored, send the submission again"),

    # --- stored queries (ITI-18; ITI TF-2 3.18.4.1.2.3 and 3.18.4.1.3) ----------------------
    Rule("query.not-adhoc-query", REGISTRY_ERROR,
         "the SOAP body must hold a query:AdhocQueryRequest, found {found}"),
    Rule("query.no-adhoc-query", REGISTRY_ERROR,
         "the AdhocQueryRequest has no rim:AdhocQuery naming the stored query to run"),
    Rule("query.unknown", UNKNOWN_STORED_QUERY,
         "'{id}' is not a stored query of this registry; use the id of one of the fourteen of "
         "ITI TF-2 3.18.4.1.2.3.7 (FindDocuments is urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d)"),
    Rule("query.unknown-multi-patient", UNKNOWN_STORED_QUERY,
         "'{id}' is not a stored query of Multi-Patient Stored Query (ITI-51); use "
         "FindDocumentsForMultiplePatients (urn:uuid:3d1bdb10-39a2-11de-89c2-2f44d94eaa9f) or "
         "FindFoldersForMultiplePatients (urn:uuid:50d3f5ac-39a2-11de-a1ca-b366239e58df), ITI TF-2b 3.51.4.1.2"),
    Rule("query.wrong-transaction", UNKNOWN_STORED_QUERY,
         "'{id}' ({name}) is a stored query of {other}, not of {transaction}; send it as {other}"),
    Rule("query.missing-at-least-one", MISSING_PARAM,
         "{query} requires at least one of {params}: a query over several patients must name the "
         "patients or what it selects on"),
    Rule("query.multi-patient-refused", REGISTRY_ERROR,
         "this registry answers Multi-Patient Stored Query (ITI-51) only for the callers its setting "
         "multi_patient_query_callers lists, and {caller} is not one of them; ask the registry's "
         "administrator to list it, or query one patient at a time (Registry Stored Query, ITI-18)"),
    Rule("query.bad-return-type", REGISTRY_ERROR,
         "ResponseOption returnType '{value}' is not supported; use LeafClass or ObjectRef"),
    Rule("query.missing-param", MISSING_PARAM, "{query} requires the parameter {param}"),
    Rule("query.missing-one-of", MISSING_PARAM, "{query} requires one of {params}"),
    Rule("query.exclusive-params", PARAM_NUMBER,
         "{query} was given {params}; give exactly one of {choices}"),
    Rule("query.param-number", PARAM_NUMBER,
         "{query}: {param} takes a single value, but was given {found}: {value}"),
    Rule("query.bad-value", REGISTRY_ERROR,
         "{param}: {value!r} cannot be read ({reason}); strings are quoted ('a'), numbers are "
         "not (20241231), and several values are a list ('a','b')"),
    Rule("query.bad-code", REGISTRY_ERROR,
         "{param}: '{value}' is not a code of the form code^^^scheme (e.g. 34133-9^^^2.16.840.1.113883.6.1)"),
    Rule("query.bad-time", REGISTRY_ERROR,
         "{param}: '{value}' is not an HL7 DTM in UTC ({reason}); write YYYY[MM[DD[hh[mm[ss]]]]] "
         "as a number, e.g. 20241231235959"),
    Rule("query.bad-status", REGISTRY_ERROR,
         "{param}: '{value}' is not an availability status; use "
         "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved or ...:Deprecated"),
    Rule("query.bad-document-type", REGISTRY_ERROR,
         "{param}: '{value}' is not a DocumentEntry type; use "
         "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1 (stable) or "
         "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248 (On-Demand)"),
    Rule("query.bad-association-type", REGISTRY_ERROR,
         "{param}: '{value}' is not an association type of XDS (e.g. "
         "urn:ihe:iti:2007:AssociationType:RPLC, urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember)"),
    Rule("query.metadata-level", REGISTRY_ERROR,
         "$MetadataLevel {value} is not a metadata level: send 1 (the latest version of each object, the "
         "default) or 2 (every version, with the Metadata Update option's associations)"),
    Rule("query.not-single-patient", NOT_SINGLE_PATIENT,
         "the LeafClass answer would hold the metadata of {count} patients ({patients}); ask "
         "for ObjectRef, or for the objects of one patient at a time"),
    Rule("query.too-many-results", TOO_MANY_RESULTS,
         "the query matches more than {limit} objects, the most this registry returns as "
         "LeafClass; narrow the query, or ask for ObjectRef and get the objects in smaller sets "
         "(GetDocuments)"),
    Rule("query.bad-return-composed-objects", REGISTRY_ERROR,
         "ResponseOption returnComposedObjects '{value}' is not an xs:boolean; use true or false"),
    Rule("query.slot-value-lists", REGISTRY_ERROR,
         "the slot {name} holds {count} rim:ValueList elements; a Slot holds exactly one (put "
         "every value in it, as a list ('a','b'))"),
    Rule("query.repeated-param", PARAM_NUMBER,
         "{query}: {param} is given in {count} slots; only the AND/OR parameters "
         "($XDSDocumentEntryEventCodeList, $XDSDocumentEntryConfidentialityCode, $XDSFolderCodeList) "
         "may be repeated, to AND their lists: send its values as one list ('a','b')"),
    Rule("query.too-many-values", PARAM_NUMBER,
         "{param} carries more than {limit} values, the most this registry takes in one parameter "
         "(max_query_parameter_values); split the query"),
    Rule("query.too-many-values-in-query", PARAM_NUMBER,
         "{query} carries {count} values in all ({params}), more than the {limit} this registry "
         "takes in one query (max_query_values); split the query"),
    Rule("query.too-many-terms", PARAM_NUMBER,
         "{query} asks for {count} terms (slots of code parameters and authorPerson patterns, "
         "each a test of every entry), more than the {limit} this registry takes in one query "
         "(max_query_terms); put codes that may be OR'ed in one list"),
    Rule("query.answer-too-large", TOO_MANY_RESULTS,
         "the objects the query matches hold more than {limit} bytes of metadata, the largest "
         "LeafClass answer this registry returns (max_leaf_class_bytes); narrow the query, or ask "
         "for ObjectRef and get the objects in smaller sets (GetDocuments)"),
    Rule("query.internal", REGISTRY_ERROR,
         "the registry could not run the query ({reason})"),
]

RULES: dict[str, Rule] = {rule.id: rule for rule in _RULES}
assert len(RULES) == len(_RULES), "rule ids must be unique"


def error(rule_id: str, location: str = "", **values: object) -> XdsError:
    """The error of rule `rule_id`, its message filled with `values`."""
    return RULES[rule_id].error(location, **values)
