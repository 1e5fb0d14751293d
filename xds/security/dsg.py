"""DSG, Document Digital Signature (ITI TF-1 37, ITI TF-3 5.5): is a signature document what a
trusted signer made, and are the documents it signs the ones it was made over?

What belongs here: the verification of one signature document against the documents it signs
(SignatureVerifier: no I/O; the documents' content, the trust anchors and the clock are passed
in), its outcome (Verdict: a list of named checks, each held, failed or not checked, with a reason
a person can act on), and what a submission's signature documents are (signs associations) with
the policy that turns a verdict into errors (dsg_policy: SubmissionSignatures). What does not:
where the bytes come from (the repository's request or store, or ITI-43 for `xds verify`), the
registry's tables, SOAP.

The signature document (ITI TF-3 5.5.2, 5.5.3): a ds:Signature, XAdES, whose ds:Object holds a
ds:Manifest with one ds:Reference per signed document: URI the document's uniqueId (an OID
uniqueId written as is or as urn:oid:OID), DigestValue over the document's bytes. Its
DocumentEntry has mimeType text/xml and formatCode urn:ihe:iti:dsg:detached:2014 (the current
TF; http://www.w3.org/2000/09/xmldsig# in the first DSG supplement, still sent), and is the
sourceObject of a signs association to each DocumentEntry it signs (5.5.6.4).

Theory of operation. A signature document is only data until its signature is verified, so the
checks run in this order, and a check that needs what an earlier one failed to establish is
"not checked" rather than judged on unverified data:

  structure   the bytes are XML (no DTD, no entities), a ds:Signature with SignedInfo, an
              X.509 certificate in KeyInfo/X509Data, a ds:Manifest in a ds:Object and XAdES
              QualifyingProperties;
  algorithms  RSA or ECDSA with SHA-2 (SHA-256 or longer) for the SignatureValue, SHA-2 or SHA-3
              (256 bits or more) for every digest, SignedInfo's and the Manifest's, and a W3C
              canonicalization (inclusive 1.0 or 1.1, exclusive 1.0, with or without comments:
              DSG names C14N 1.1 with comments, others sign exclusively). SHA-1 is refused: DSG
              itself signs with SHA-256 (5.5.2);
  signature   signxml verifies SignedInfo with the key of the signer's certificate (the one
              X509Certificate of KeyInfo that issued no other there), and every SignedInfo
              Reference (same-document only: nothing is fetched); one of them must cover the
              ds:Manifest and one the XAdES SignedProperties, whose SigningCertificate digest
              must be the signer's certificate (signxml's XAdES check). From here on only what
              signxml returns as signed is read (VerifyResult.signed_xml: re-parsed from the
              canonical bytes that were digested), so a Manifest or SigningTime moved, copied
              or wrapped around the signed ones changes nothing;
  certificate the signer's certificate chains to a trust anchor of dsg_trust_anchors
              (cryptography's X.509 path validation: signatures, validity periods, CA basic
              constraints and key usage of the issuers) at the XAdES SigningTime, which must not
              lie in the future; its key usage, when it has one, allows digitalSignature or
              nonRepudiation. SigningTime is the signer's claim (a XAdES-T time stamp, which
              would prove it, is not verified here);
  purpose     a CommitmentTypeIndication names the purpose of signature (5.5.2 "Shall
              include"; the codes of ASTM E1762, 1.2.840.10065.1.12.1.x, are expected, others
              are shown as they are);
  signs       every Manifest Reference is a document a signs association of this signature
              names, and every document those associations name is in the Manifest and is in
              the submission or already registered (a Reference to the SubmissionSet's uniqueId
              with the digest "0" is a SubmissionSet signature's, 5.5.3.1, and is not a document);
  digest:UID  one per Manifest Reference: its DigestValue against the document's bytes, where
              they are known (the repository's ITI-41 request or store, what ITI-43 returned);
              a document of which only the registered hash is known is not checked: XDS's hash
              is SHA-1 and the Manifest's digest is not.

A verdict holds when every check held. dsg_policy decides what a failed check does to a
submission: "record" (the default) accepts it and keeps the verdict with the repository's copy
of the signature document (its meta.json), "reject" refuses it with XDSRepositoryMetadataError
(ITI-41) naming the check and the document. The registry (ITI-42) sees no bytes: under "reject"
it refuses a signature DocumentEntry that is not text/xml with a DSG formatCode and a signs
association to anything but a DocumentEntry; the rest it cannot check (README, DSG).
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidSignature, SignXMLException
from signxml.xades import XAdESSignatureConfiguration, XAdESVerifier

from xds.errors import XdsError
from xds.model import AssociationType, DocumentEntry, Submission
from xds.rules import error
from xds.soap import SoapFault
from xds.soap.envelope import parse_xml

log = logging.getLogger("xds.security")

DS = "http://www.w3.org/2000/09/xmldsig#"
XADES = "http://uri.etsi.org/01903/v1.3.2#"
XADES_141 = "http://uri.etsi.org/01903/v1.4.1#"

#: ITI TF-3 5.5.6.1.1 (detached signature), and the first DSG supplement's formatCode.
FORMAT_CODES = ("urn:ihe:iti:dsg:detached:2014", "http://www.w3.org/2000/09/xmldsig#")
MIME_TYPE = "text/xml"
SIGNS = AssociationType.SIGNS.value

REJECT, RECORD = "reject", "record"
POLICIES = (RECORD, REJECT)

HELD, FAILED, NOT_CHECKED = "held", "failed", "not checked"

#: A signature document is a few KB (a manifest of a large bundle some hundred); more is no
#: signature document and is not parsed.
MAX_SIGNATURE_BYTES = 16 * 1024 * 1024
#: Clock difference allowed with the signer when its SigningTime is compared with now.
CLOCK_SKEW = _dt.timedelta(minutes=5)

_C14N = frozenset(method.value for method in CanonicalizationMethod)
_SIGNATURE_METHODS = frozenset({
    SignatureMethod.RSA_SHA256, SignatureMethod.RSA_SHA384, SignatureMethod.RSA_SHA512,
    SignatureMethod.SHA256_RSA_MGF1, SignatureMethod.SHA384_RSA_MGF1, SignatureMethod.SHA512_RSA_MGF1,
    SignatureMethod.ECDSA_SHA256, SignatureMethod.ECDSA_SHA384, SignatureMethod.ECDSA_SHA512,
})
_DIGESTS = frozenset({DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512,
                      DigestAlgorithm.SHA3_256, DigestAlgorithm.SHA3_384, DigestAlgorithm.SHA3_512})
_HASHLIB = {DigestAlgorithm.SHA256: "sha256", DigestAlgorithm.SHA384: "sha384", DigestAlgorithm.SHA512: "sha512",
            DigestAlgorithm.SHA3_256: "sha3_256", DigestAlgorithm.SHA3_384: "sha3_384",
            DigestAlgorithm.SHA3_512: "sha3_512"}


def _ds(local: str) -> str:
    return f"{{{DS}}}{local}"


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _shown(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _algorithm_name(uri: str) -> str:
    return uri.rsplit("#", 1)[-1] if "#" in uri else uri


# -- the verdict ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One named check of a verdict: held, failed or not checked, and why."""

    name: str
    outcome: str
    reason: str

    @property
    def held(self) -> bool:
        return self.outcome == HELD

    def line(self) -> str:
        return f"{self.name}: {self.outcome} - {self.reason}"


@dataclass(frozen=True)
class Verdict:
    """What was found of one signature document (uniqueId `signature`)."""

    signature: str
    checks: tuple[Check, ...]
    signer: str = ""          # the signing certificate's subject (RFC 4514), once read
    signing_time: str = ""    # XAdES SigningTime as verified
    purposes: tuple[str, ...] = ()
    verified_at: str = ""

    @property
    def holds(self) -> bool:
        return bool(self.checks) and all(check.held for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if check.outcome == FAILED]

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def as_json(self) -> dict:
        return {**asdict(self), "checks": [asdict(c) for c in self.checks], "purposes": list(self.purposes)}

    @classmethod
    def from_json(cls, data: Mapping) -> "Verdict":
        return cls(data.get("signature", ""), tuple(Check(**c) for c in data.get("checks", ())),
                   data.get("signer", ""), data.get("signing_time", ""), tuple(data.get("purposes", ())),
                   data.get("verified_at", ""))

    def lines(self) -> list[str]:
        head = [f"signature document {self.signature}"]
        if self.signer:
            head.append(f"  signer: {self.signer}")
        if self.signing_time:
            head.append(f"  signed at: {self.signing_time}")
        if self.purposes:
            head.append(f"  purpose: {', '.join(self.purposes)}")
        return head + [f"  {check.line()}" for check in self.checks] + [
            f"verdict: {'all checks held' if self.holds else 'NOT VERIFIED'} "
            f"({sum(c.held for c in self.checks)} of {len(self.checks)} held)"]


class Content(Protocol):
    """Bytes of a known size that open as a binary file (an Attachment, a stored document)."""

    @property
    def size(self) -> int: ...

    def open(self): ...


@dataclass(frozen=True)
class SignedDocument:
    """A document a signs association names, as far as it is known where the check runs."""

    unique_id: str
    content: Content | None = None   # its bytes, where they are here
    where: str = "in the submission"  # or "registered"


# -- verifying one signature document -----------------------------------------------------------------


class _Failed(Exception):
    def __init__(self, reason: str):
        self.reason = reason


def load_trust_anchors(path: str | Path) -> list[x509.Certificate]:
    """The certificates of dsg_trust_anchors (PEM); its errors name the setting."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise OSError(f"dsg_trust_anchors {path}: {exc.strerror or exc}") from None
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ValueError(f"dsg_trust_anchors {path}: not PEM certificates ({exc})") from None


def uri_unique_id(uri: str) -> str:
    """The uniqueId a Manifest Reference's URI names: an OID written as urn:oid:OID is the OID
    (ITI TF-3 5.5.3 leaves the URI form of a uniqueId that is no URI to the affinity domain)."""
    uri = uri.strip()
    return uri[8:] if uri[:8].lower() == "urn:oid:" else uri


def _certificate(text: str | None) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(base64.b64decode("".join((text or "").split()), validate=True))
    except (ValueError, binascii.Error):
        return None


def _signer_of(certificates: list[x509.Certificate]) -> x509.Certificate:
    """The end of the chain KeyInfo carries: the certificate that issued none of the others
    (signers list theirs first, but XML Signature does not say so)."""
    issuers = {c.issuer for c in certificates}
    leaves = [c for c in certificates if c.subject not in issuers or len(certificates) == 1]
    return leaves[0] if leaves else certificates[0]


class SignatureVerifier:
    """Verifies signature documents against trust anchors (dsg_trust_anchors); see the module's
    docstring for the checks. Holds no state between verifications."""

    def __init__(self, anchors: Sequence[x509.Certificate] = (), *, clock: Callable[[], _dt.datetime] = _now):
        self.anchors = tuple(anchors)
        self.clock = clock

    def verify(self, signature: bytes, unique_id: str, signed: Sequence[SignedDocument] = (), *,
               unresolved: Sequence[str] = (), submission_set: str | None = None) -> Verdict:
        """The verdict on the signature document `signature` (its bytes; uniqueId `unique_id`)
        over `signed`, the documents its signs associations name; `unresolved`: targets of those
        associations that are neither in the submission nor registered; `submission_set`: the
        uniqueId of the SubmissionSet it came in (a SubmissionSet signature refers to it)."""
        checks: list[Check] = []
        now = self.clock()
        info: dict = {}

        def add(name: str, outcome: str, reason: str) -> None:
            checks.append(Check(name, outcome, reason))

        root = self._structure(signature, add)
        if root is None:
            for name in ("algorithms", "signature", "certificate", "purpose", "signs"):
                add(name, NOT_CHECKED, "the signature document could not be read (see structure)")
            return Verdict(unique_id, tuple(checks), verified_at=_shown(now))
        certificates = [c for c in map(_certificate, (e.text for e in root.iterfind(
            f"{_ds('KeyInfo')}/{_ds('X509Data')}/{_ds('X509Certificate')}"))) if c is not None]
        signer = _signer_of(certificates)
        info["signer"] = signer.subject.rfc4514_string()

        algorithms_hold = self._algorithms(root, add)
        manifest = signed_properties = None
        if not algorithms_hold:
            add("signature", NOT_CHECKED, "an algorithm of the signature is refused (see algorithms)")
        else:
            try:
                manifest, signed_properties = self._signature(root, signer)
                add("signature", HELD, f"the XML signature verifies with the key of {info['signer']!r} and covers "
                                       "the ds:Manifest and the XAdES SignedProperties")
            except _Failed as failure:
                add("signature", FAILED, failure.reason)
        if signed_properties is None:
            add("certificate", NOT_CHECKED, "the signing time is not known: the signature does not hold")
            add("purpose", NOT_CHECKED, "the signature does not hold")
        else:
            signing_time = self._certificate(signed_properties, signer, certificates, now, add)
            if signing_time is not None:
                info["signing_time"] = _shown(signing_time)
            info["purposes"] = self._purpose(signed_properties, add)
        if manifest is None:
            add("signs", NOT_CHECKED, "the manifest is not trusted: the signature does not hold")
        else:
            references = self._references(manifest)
            self._signs(references, signed, unresolved, submission_set, add)
            by_unique_id = {d.unique_id: d for d in signed}
            for uri, (reference, unique_id_) in references.items():
                self._digest(reference, unique_id_, by_unique_id.get(unique_id_), submission_set, add)
        return Verdict(unique_id, tuple(checks), info.get("signer", ""), info.get("signing_time", ""),
                       tuple(info.get("purposes", ())), _shown(now))

    # -- the checks ----------------------------------------------------------------------------

    @staticmethod
    def _structure(signature: bytes, add) -> etree._Element | None:
        if len(signature) > MAX_SIGNATURE_BYTES:
            add("structure", FAILED, f"the signature document has {len(signature):,} bytes, more than a DSG "
                                     f"signature document's {MAX_SIGNATURE_BYTES:,}")
            return None
        try:
            root = parse_xml(signature)
        except SoapFault as fault:
            add("structure", FAILED, f"the signature document is not XML that can be read: {fault.reason}")
            return None
        if root.tag != _ds("Signature"):
            add("structure", FAILED, f"the document's root is {etree.QName(root).localname}, not ds:Signature "
                                     f"({DS}): it is no DSG signature document (ITI TF-3 5.5)")
            return None
        missing = [what for what, found in (
            ("ds:SignedInfo", root.find(_ds("SignedInfo")) is not None),
            ("an X.509 certificate in ds:KeyInfo/ds:X509Data", any(
                _certificate(e.text) is not None
                for e in root.iterfind(f"{_ds('KeyInfo')}/{_ds('X509Data')}/{_ds('X509Certificate')}"))),
            ("a ds:Manifest in a ds:Object", root.find(f"{_ds('Object')}/{_ds('Manifest')}") is not None),
            ("XAdES QualifyingProperties in a ds:Object", any(
                root.find(f"{_ds('Object')}/{{{ns}}}QualifyingProperties") is not None for ns in (XADES, XADES_141))),
        ) if not found]
        if missing:
            add("structure", FAILED, f"the ds:Signature has no {', no '.join(missing)}: a DSG detached signature "
                                     "is XAdES with a ds:Manifest of the signed documents (ITI TF-3 5.5.2, 5.5.3)")
            return None
        add("structure", HELD, "a XAdES ds:Signature with a ds:Manifest")
        return root

    @staticmethod
    def _algorithms(root: etree._Element, add) -> bool:
        problems = []
        signed_info = root.find(_ds("SignedInfo"))
        c14n = signed_info.find(_ds("CanonicalizationMethod"))
        if c14n is None or c14n.get("Algorithm") not in _C14N:
            problems.append(f"canonicalization {c14n.get('Algorithm') if c14n is not None else '(none)'!r} is not "
                            "a W3C canonicalization")
        method = signed_info.find(_ds("SignatureMethod"))
        method_uri = method.get("Algorithm", "") if method is not None else ""
        if method_uri not in {m.value for m in _SIGNATURE_METHODS}:
            problems.append(f"signature method {_algorithm_name(method_uri) or '(none)'} "
                            + ("uses SHA-1, which is refused" if "sha1" in method_uri.lower()
                               else "is not RSA or ECDSA with SHA-256 or longer"))
        digests = [*signed_info.iterfind(f"{_ds('Reference')}/{_ds('DigestMethod')}"),
                   *root.iterfind(f"{_ds('Object')}/{_ds('Manifest')}/{_ds('Reference')}/{_ds('DigestMethod')}")]
        refused = sorted({d.get("Algorithm", "") for d in digests} - {d.value for d in _DIGESTS})
        for uri in refused:
            problems.append(f"digest {_algorithm_name(uri) or '(none)'} "
                            + ("is SHA-1, which is refused" if "sha1" in uri.lower() else "is not SHA-256 or longer"))
        if problems:
            add("algorithms", FAILED, "; ".join(problems) + ": sign with RSA or ECDSA and SHA-256 (ITI TF-3 5.5.2)")
            return False
        add("algorithms", HELD, f"{_algorithm_name(method_uri)}, digests "
                                f"{', '.join(sorted({_algorithm_name(d.get('Algorithm', '')) for d in digests}))}")
        return True

    @staticmethod
    def _signature(root: etree._Element, signer: x509.Certificate) -> tuple[etree._Element, etree._Element]:
        """The signed ds:Manifest and xades:SignedProperties, as signxml returns them."""
        config = XAdESSignatureConfiguration(
            expect_references=True, signature_methods=_SIGNATURE_METHODS, digest_algorithms=_DIGESTS,
            # signxml checks the certificate's validity at this time: the certificate's own start,
            # so that validity is judged once, by the certificate check, at the signing time.
            verification_time=signer.not_valid_before_utc)
        try:
            results = XAdESVerifier().verify(etree.tostring(root), x509_cert=signer, expect_config=config)
        except InvalidDigest as exc:
            raise _Failed(f"the signature document was changed after it was signed ({exc})") from None
        except InvalidSignature as exc:
            raise _Failed(f"the SignatureValue does not verify with the key of "
                          f"{signer.subject.rfc4514_string()!r} ({exc})") from None
        except (InvalidCertificate, SignXMLException, etree.DocumentInvalid, ValueError) as exc:
            raise _Failed(f"the XML signature cannot be verified: {exc or type(exc).__name__}") from None
        manifests, properties = [], []
        for result in results:
            signed = result.signed_xml
            if signed is None:
                continue
            if signed.tag == _ds("Manifest"):
                manifests.append(signed)
            elif signed.tag == _ds("Object"):
                manifests += signed.findall(_ds("Manifest"))
            elif signed.tag in (f"{{{XADES}}}SignedProperties", f"{{{XADES_141}}}SignedProperties"):
                properties.append(signed)
        if len(manifests) != 1:
            raise _Failed(f"the signature covers {len(manifests)} ds:Manifest elements; it must sign exactly one, "
                          "the list of the signed documents (ITI TF-3 5.5.3)")
        if len(properties) != 1:
            raise _Failed("the signature does not cover exactly one XAdES SignedProperties")
        return manifests[0], properties[0]

    def _certificate(self, properties: etree._Element, signer: x509.Certificate, certificates, now, add
                     ) -> _dt.datetime | None:
        namespace = etree.QName(properties).namespace
        path = f"{{{namespace}}}SignedSignatureProperties/{{{namespace}}}SigningTime"
        text = (properties.findtext(path) or "").strip()
        subject = signer.subject.rfc4514_string()
        try:
            signing_time = _dt.datetime.fromisoformat(text) if text else None
        except ValueError:
            add("certificate", FAILED, f"xades:SigningTime {text!r} is not an xs:dateTime")
            return None
        if signing_time is None:
            add("certificate", FAILED, "the signature has no xades:SigningTime: the certificate's validity when it "
                                       "signed cannot be judged")
            return None
        if signing_time.tzinfo is None:
            signing_time = signing_time.replace(tzinfo=_dt.UTC)
        try:
            if signing_time > now + CLOCK_SKEW:
                raise _Failed(f"the signing time {_shown(signing_time)} is in the future (now {_shown(now)})")
            if not signer.not_valid_before_utc <= signing_time <= signer.not_valid_after_utc:
                raise _Failed(f"the certificate {subject!r} was not valid when it signed ({_shown(signing_time)}): it "
                              f"is valid from {_shown(signer.not_valid_before_utc)} to "
                              f"{_shown(signer.not_valid_after_utc)}")
            self._key_usage(signer, subject)
            chain = self._chain(signer, certificates, signing_time, subject)
        except _Failed as failure:
            add("certificate", FAILED, failure.reason)
            return signing_time
        add("certificate", HELD, f"{subject!r} chains to the trust anchor {chain[-1].subject.rfc4514_string()!r} and "
                                 f"was valid when it signed ({_shown(signing_time)})")
        return signing_time

    @staticmethod
    def _key_usage(signer: x509.Certificate, subject: str) -> None:
        try:
            usage = signer.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            return
        if not (usage.digital_signature or usage.content_commitment):
            raise _Failed(f"the certificate {subject!r} may not sign: its key usage has neither digitalSignature "
                          "nor nonRepudiation")

    def _chain(self, signer, certificates, signing_time, subject) -> list[x509.Certificate]:
        if not self.anchors:
            raise _Failed("no trust anchors are configured: set dsg_trust_anchors to the PEM file of the CAs whose "
                          "signers this network trusts")
        # The signer's own extensions are the affinity domain's business (no subjectAltName or
        # extendedKeyUsage is asked of a person's signing certificate); the CAs' are checked.
        builder = (PolicyBuilder().store(Store(list(self.anchors))).time(signing_time)
                   .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                                       ee_policy=ExtensionPolicy.permit_all()))
        try:
            verified = builder.build_client_verifier().verify(signer, [c for c in certificates if c is not signer])
        except VerificationError as exc:
            raise _Failed(f"the certificate {subject!r} (issuer {signer.issuer.rfc4514_string()!r}) does not chain to "
                          f"a trust anchor of dsg_trust_anchors at the signing time: {exc}") from None
        return list(verified.chain)

    @staticmethod
    def _purpose(properties: etree._Element, add) -> list[str]:
        namespace = etree.QName(properties).namespace
        purposes = []
        for indication in properties.iterfind(
                f"{{{namespace}}}SignedDataObjectProperties/{{{namespace}}}CommitmentTypeIndication"):
            type_id = f"{{{namespace}}}CommitmentTypeId/{{{namespace}}}"
            identifier = (indication.findtext(type_id + "Identifier") or "").strip()
            description = (indication.findtext(type_id + "Description") or "").strip()
            if identifier:
                purposes.append(f"{identifier} ({description})" if description else identifier)
        if purposes:
            add("purpose", HELD, ", ".join(purposes))
        else:
            add("purpose", FAILED, "the signature names no purpose: a signed xades:CommitmentTypeIndication is "
                                   "required (ITI TF-3 5.5.2; ASTM E1762 codes 1.2.840.10065.1.12.1.x)")
        return purposes

    @staticmethod
    def _references(manifest: etree._Element) -> dict[str, tuple[etree._Element, str]]:
        return {reference.get("URI", ""): (reference, uri_unique_id(reference.get("URI", "")))
                for reference in manifest.iterfind(_ds("Reference"))}

    @staticmethod
    def _signs(references, signed: Sequence[SignedDocument], unresolved: Sequence[str],
               submission_set: str | None, add) -> None:
        listed = {unique_id for _, unique_id in references.values() if unique_id != submission_set}
        named = {d.unique_id for d in signed}
        problems = []
        if not references:
            problems.append("the ds:Manifest lists no document")
        for unique_id in sorted(listed - named):
            problems.append(f"the manifest lists {unique_id}, which no signs association of this signature names "
                            "(a document neither in the submission nor registered under that uniqueId)")
        for unique_id in sorted(named - listed):
            problems.append(f"a signs association names {unique_id}, which the signature's manifest does not list")
        for target in unresolved:
            problems.append(f"a signs association targets {target}, which is neither in the submission nor registered")
        if problems:
            add("signs", FAILED, "; ".join(problems))
        else:
            add("signs", HELD, f"the manifest lists exactly the {len(listed)} document(s) the signs associations name")

    @staticmethod
    def _digest(reference: etree._Element, unique_id: str, document: SignedDocument | None,
                submission_set: str | None, add) -> None:
        name = f"digest:{unique_id}"
        value = (reference.findtext(_ds("DigestValue")) or "").strip()
        if unique_id == submission_set and value == "0":
            add(name, HELD, "the SubmissionSet of this submission, listed with the digest 0 (ITI TF-3 5.5.3.1)")
            return
        if reference.find(_ds("Transforms")) is not None:
            add(name, FAILED, "the manifest's reference has ds:Transforms; a signed document is digested as its bytes")
            return
        if document is None:
            add(name, NOT_CHECKED, "the document is not among those the signs associations name (see signs)")
            return
        if document.content is None:
            add(name, NOT_CHECKED, f"the document is {document.where} and its bytes are not here; its registered hash "
                                   "is SHA-1, which the manifest's digest is not: retrieve it (xds verify) to check")
            return
        algorithm = DigestAlgorithm((reference.find(_ds("DigestMethod")).get("Algorithm")))
        digest = hashlib.new(_HASHLIB[algorithm])
        with document.content.open() as stream:
            while chunk := stream.read(1024 * 1024):
                digest.update(chunk)
        try:
            expected = base64.b64decode("".join(value.split()), validate=True)
        except (ValueError, binascii.Error):
            add(name, FAILED, f"the manifest's DigestValue {value[:60]!r} is not base64")
            return
        size = document.content.size
        if digest.digest() == expected:
            add(name, HELD, f"{_algorithm_name(algorithm.value)} of the {size:,} bytes {document.where} is the "
                            "signed one")
        else:
            add(name, FAILED, f"the {size:,} bytes {document.where} are not what was signed: their "
                              f"{_algorithm_name(algorithm.value)} is {base64.b64encode(digest.digest()).decode()}, "
                              f"the manifest's {value}")


# -- a submission's signature documents, and the policy ----------------------------------------------


@dataclass(frozen=True)
class RegisteredDocument:
    """A DocumentEntry the registry holds, as far as a signs check needs it."""

    entry_uuid: str
    unique_id: str
    repository_unique_id: str = ""


#: entryUUIDs -> the DocumentEntries of them the registry holds.
RegisteredLookup = Callable[[list[str]], Mapping[str, RegisteredDocument]]
#: A document of this repository by uniqueId, or None.
StoredLookup = Callable[[str], Content | None]


def signature_entries(submission: Submission) -> dict[str, list[str]]:
    """The DocumentEntries of `submission` that sign (the sourceObject of a signs association, or
    a DSG formatCode), by id, each with the targets of its signs associations."""
    entries: dict[str, list[str]] = {d.id: [] for d in submission.documents
                                     if d.format_code is not None and d.format_code.code in FORMAT_CODES}
    for a in submission.associations:
        if a.type == SIGNS and a.source:
            entries.setdefault(a.source, []).append(a.target or "")
    return entries


def entry_problems(submission: Submission) -> list[XdsError]:
    """What ITI TF-3 5.5.6 asks of the metadata, the only part the registry can check: a signature
    DocumentEntry is text/xml with a DSG formatCode, and signs associations within the submission
    go from it to DocumentEntries."""
    documents = {d.id: d for d in submission.documents}
    own = {o.id for o in submission.objects()}
    problems = []
    for entry_id, targets in signature_entries(submission).items():
        entry = documents.get(entry_id)
        if entry is None:
            continue  # a signs association from something else: the validator's association.bad-source
        if (entry.mime_type or "").split(";")[0].strip().lower() != MIME_TYPE:
            problems.append(error("dsg.mime-type", entry_id, id=entry_id, value=entry.mime_type or "(none)"))
        if entry.format_code is None or entry.format_code.code not in FORMAT_CODES:
            problems.append(error("dsg.format-code", entry_id, id=entry_id,
                                  value=entry.format_code.code if entry.format_code else "(none)"))
        for target in targets:
            if target in own and target not in documents:
                problems.append(error("dsg.signs-target", entry_id, id=entry_id, target=target))
    return problems


@dataclass
class SubmissionSignatures:
    """dsg_policy applied to submissions: the repository's full check (ITI-41, with the bytes)
    and the registry's check of the metadata (ITI-42)."""

    policy: str = RECORD
    verifier: SignatureVerifier = field(default_factory=SignatureVerifier)
    #: The registry's DocumentEntries by entryUUID (signed documents registered before).
    registered: RegisteredLookup | None = None
    #: This repository's stored documents (the bytes of signed documents registered before).
    stored: StoredLookup | None = None

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"dsg_policy: {self.policy!r} is not one of {', '.join(POLICIES)}")

    @classmethod
    def from_settings(cls, settings, *, registered: RegisteredLookup | None = None,
                      stored: StoredLookup | None = None) -> "SubmissionSignatures":
        anchors = load_trust_anchors(settings.dsg_trust_anchors) if settings.dsg_trust_anchors else ()
        return cls(settings.dsg_policy.strip().lower() or RECORD, SignatureVerifier(anchors), registered, stored)

    def check_register(self, submission: Submission) -> list[XdsError]:
        """ITI-42: the signature entries' metadata; errors under "reject", else logged."""
        problems = entry_problems(submission)
        if problems and self.policy != REJECT:
            for problem in problems:
                log.info("DSG (dsg_policy record, accepted): %s", problem)
            return []
        return problems

    def check_provide(self, submission: Submission, contents: Mapping[str, Content]
                      ) -> tuple[dict[str, Verdict], list[XdsError]]:
        """ITI-41: each signature document of `submission` verified against the documents it
        signs (`contents`: the request's documents by DocumentEntry id). The verdicts by the
        signature's DocumentEntry id, and, under "reject", an error per failed signature."""
        entries = signature_entries(submission)
        if not entries:
            return {}, []
        documents = {d.id: d for d in submission.documents}
        outside = sorted({t for targets in entries.values() for t in targets if t not in documents})
        registered = self._registered(outside)
        ss = submission.submission_set
        verdicts, problems = {}, []
        for entry_id, targets in entries.items():
            entry = documents.get(entry_id)
            content = contents.get(entry_id)
            if entry is None or content is None:
                continue  # not a document of this request: the registry answers for the association
            signed, unresolved = [], []
            for target in targets:
                if target in documents:
                    signed.append(SignedDocument(documents[target].unique_id or "", contents.get(target)))
                elif target in registered:
                    found = registered[target]
                    stored = self.stored(found.unique_id) if self.stored is not None else None
                    signed.append(SignedDocument(found.unique_id, stored,
                                                 "stored in this repository" if stored is not None else "registered"))
                else:
                    unresolved.append(target)
            with content.open() as stream:
                data = stream.read(MAX_SIGNATURE_BYTES + 1)
            verdict = self.verifier.verify(data, entry.unique_id or "", signed, unresolved=unresolved,
                                           submission_set=ss.unique_id if ss else None)
            verdicts[entry_id] = verdict
            failed = verdict.failed
            if failed:
                log.info("DSG signature %s (%s) did not verify: %s", entry.unique_id, entry_id,
                         "; ".join(c.line() for c in failed))
            if failed and self.policy == REJECT:
                others = f" (also failed: {', '.join(c.name for c in failed[1:])})" if len(failed) > 1 else ""
                problems.append(error("dsg.not-verified", entry_id, id=entry_id, unique_id=entry.unique_id or "",
                                      check=failed[0].name, reason=failed[0].reason, others=others))
        return verdicts, problems

    def _registered(self, entry_uuids: list[str]) -> Mapping[str, RegisteredDocument]:
        if not entry_uuids or self.registered is None:
            return {}
        try:
            return self.registered([u for u in entry_uuids if u.startswith("urn:uuid:")])
        except Exception:  # the registry will answer for the association itself
            log.exception("could not look up the registered documents %s signs", entry_uuids)
            return {}


# -- registered documents, read from an ITI-18 answer -------------------------------------------------


def registered_documents(response: etree._Element) -> list[tuple[RegisteredDocument, DocumentEntry]]:
    """The DocumentEntries of a LeafClass AdhocQueryResponse, with what a signs check reads of
    them (entryUUID, uniqueId, repositoryUniqueId, mimeType, formatCode)."""
    from xds import model
    from xds.ebrim import ns
    from xds.ebrim.slots import SLOT, slot_values

    found = []
    for element in response.iter(ns.rim("ExtrinsicObject")):
        entry = DocumentEntry(id=element.get("id", ""), mime_type=element.get("mimeType"))
        for child in element:
            if child.tag == ns.rim("ExternalIdentifier") and child.get("identificationScheme") == ns.DE_UNIQUE_ID:
                entry.unique_id = child.get("value", "")
            elif child.tag == SLOT:
                values = slot_values(child)
                if child.get("name") == "repositoryUniqueId" and values:
                    entry.repository_unique_id = values[0]
                elif child.get("name") == "hash" and values:
                    entry.hash = values[0]
            elif child.tag == ns.rim("Classification") and child.get("classificationScheme") == ns.DE_FORMAT_CODE:
                scheme = next((v for s in child.iter(SLOT) if s.get("name") == "codingScheme"
                               for v in slot_values(s)), "")
                entry.format_code = model.Code(child.get("nodeRepresentation", ""), scheme, "")
        found.append((RegisteredDocument(entry.id, entry.unique_id or "", entry.repository_unique_id or ""), entry))
    return found


def signs_targets(response: etree._Element, source: str) -> list[str]:
    """The targets of the signs associations from `source` in an AdhocQueryResponse."""
    from xds.ebrim import ns

    return [a.get("targetObject", "") for a in response.iter(ns.rim("Association"))
            if a.get("associationType") == SIGNS and a.get("sourceObject") == source]


def query_lookup(run_query: Callable[[etree._Element], etree._Element]) -> RegisteredLookup:
    """A RegisteredLookup that asks a registry with GetDocuments (ITI-18) by entryUUID: `run_query`
    takes the AdhocQueryRequest and gives the AdhocQueryResponse (in-process or over SOAP)."""
    from xds.ebrim.query_request import adhoc_query_request, quote_list
    from xds.registry import stored_query

    def lookup(entry_uuids: list[str]) -> dict[str, RegisteredDocument]:
        if not entry_uuids:
            return {}
        request = adhoc_query_request(stored_query.lookup("GetDocuments").id,
                                      [("$XDSDocumentEntryEntryUUID", [quote_list(entry_uuids)])], "LeafClass")
        return {document.entry_uuid: document for document, _ in registered_documents(run_query(request))}

    return lookup


def registry_lookup(settings, registry=None) -> RegisteredLookup | None:
    """The repository's RegisteredLookup: ITI-18 to registry_url, else to this server's
    registry in-process (`registry`, a DocumentRegistry)."""
    if settings.registry_url:
        from xds import client
        from xds.security import tls
        from xds.transactions import ITI_18

        url, context = settings.registry_url, tls.context_for(settings.registry_url, settings)
        return query_lookup(lambda request: client.post_soap(url, request, ITI_18.action, context=context))
    if getattr(registry, "sessions", None) is None:
        return None
    from xds.registry.query import RegistryStoredQuery

    return query_lookup(RegistryStoredQuery.configured(registry.sessions, settings).query)


def stored_in(blobs) -> StoredLookup:
    """The documents of a blob store, for the bytes of signed documents registered before."""
    return lambda unique_id: blobs.get(unique_id)

