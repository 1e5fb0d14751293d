"""DSG, Document Digital Signature (ITI TF-3 5.5): signature documents made here with signxml
(XAdES, enveloping a ds:Manifest of the signed documents) by signers whose keys and certificates
cryptography makes (a CA, an RSA and an ECDSA signer, an expired one, one of a CA nobody trusts),
verified by xds.security.dsg alone, against xmlsec1 (an independent verifier), and through the
repository's ITI-41 and the registry's ITI-42 in-process under both policies. Over HTTP:
tests/test_dsg_cli.py.

The helpers at the top (Authority, Signer, signature_document) are the signature documents'
source for tests/test_dsg_cli.py too."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureConstructionMethod, SignatureMethod
from signxml.xades import XAdESSigner

from tests import submissions as s
from tests.test_repository_support import RIM, pnr_request
from xds.ebrim import ns
from xds.ebrim.submission import read_submission
from xds.repository.blobs import FileBlobStore
from xds.repository.provide import ProvideAndRegister
from xds.repository.registration import LocalRegistry
from xds.rules import RULES
from xds.security.dsg import (
    FAILED,
    NOT_CHECKED,
    RECORD,
    REJECT,
    SignatureVerifier,
    SignedDocument,
    SubmissionSignatures,
    Verdict,
    entry_problems,
    stored_in,
    uri_unique_id,
)
from xds.soap import MemoryAttachment

DS = "http://www.w3.org/2000/09/xmldsig#"
XADES = "http://uri.etsi.org/01903/v1.3.2#"
AUTHOR_PURPOSE = ("urn:oid:1.2.840.10065.1.12.1.1", "Author's Signature")
DSG_FORMAT = ("urn:ihe:iti:dsg:detached:2014", "1.3.6.1.4.1.19376.1.2.3", "Digital Signature")
REPOSITORY = "1.2.392.200119.6.102.1"


# -- signers and signature documents ---------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xds-affinity tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class Authority:
    """A CA of the network (or one nobody trusts): its certificate in `pem`."""

    def __init__(self, folder: Path, name: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        start = _now() - dt.timedelta(days=30)
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256()))
        folder.mkdir(parents=True, exist_ok=True)
        self.pem = folder / f"{name}.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def signer(self, name: str, *, kind: str = "rsa", valid: tuple[dt.datetime, dt.datetime] | None = None) -> "Signer":
        key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
        start, end = valid or (_now() - dt.timedelta(days=1), _now() + dt.timedelta(days=365))
        cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256()))
        return Signer(key, cert, kind)


class Signer:
    def __init__(self, key, cert: x509.Certificate, kind: str):
        self.key, self.cert, self.kind = key, cert, kind


class _XAdESSigner(XAdESSigner):
    def check_deprecated_methods(self):
        """SHA-1 too, so that the tests can send what the server must refuse."""


def signature_document(signer: Signer, documents: list[tuple[str, bytes]], *, digest=DigestAlgorithm.SHA256,
                       signature_method: SignatureMethod | None = None, purpose=AUTHOR_PURPOSE,
                       signing_time: dt.datetime | None = None,
                       c14n=CanonicalizationMethod.CANONICAL_XML_1_1_WITH_COMMENTS) -> bytes:
    """A DSG detached signature (ITI TF-3 5.5.2, 5.5.3) over `documents` ((uniqueId, bytes)):
    XAdES enveloping a ds:Manifest with one Reference per document, URI urn:oid:uniqueId, the
    signer's certificate in KeyInfo, SigningTime and a CommitmentTypeIndication (`purpose`, or
    none) among the signed properties."""
    manifest = etree.Element(f"{{{DS}}}Manifest", nsmap={"ds": DS}, Id="IHEManifest")
    for unique_id, data in documents:
        reference = etree.SubElement(manifest, f"{{{DS}}}Reference", URI=f"urn:oid:{unique_id}")
        etree.SubElement(reference, f"{{{DS}}}DigestMethod", Algorithm=digest.value)
        etree.SubElement(reference, f"{{{DS}}}DigestValue").text = base64.b64encode(
            hashlib.new(digest.name.lower(), data).digest()).decode()
    method = signature_method or (SignatureMethod.RSA_SHA256 if signer.kind == "rsa" else SignatureMethod.ECDSA_SHA256)
    xades = _XAdESSigner(method=SignatureConstructionMethod.enveloping, signature_algorithm=method,
                         digest_algorithm=digest, c14n_algorithm=c14n)

    def commitment(properties, sig_root, signing_settings):
        if purpose is None:
            return
        indication = etree.SubElement(properties, f"{{{XADES}}}CommitmentTypeIndication")
        type_id = etree.SubElement(indication, f"{{{XADES}}}CommitmentTypeId")
        etree.SubElement(type_id, f"{{{XADES}}}Identifier").text = purpose[0]
        etree.SubElement(type_id, f"{{{XADES}}}Description").text = purpose[1]
        etree.SubElement(indication, f"{{{XADES}}}AllSignedDataObjects")

    def time(properties, sig_root, signing_settings):
        moment = signing_time or _now()
        etree.SubElement(properties, f"{{{XADES}}}SigningTime").text = moment.isoformat(timespec="seconds")

    xades.signed_signature_properties_annotators[0] = time
    xades.signed_data_object_properties_annotators.append(commitment)
    return etree.tostring(xades.sign(manifest, key=signer.key, cert=[signer.cert]))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dsg-pki")
    network, rogue = Authority(folder, "network-ca"), Authority(folder, "rogue-ca")
    now = _now()
    return {
        "ca": network,
        "rsa": network.signer("Dr Sato (RSA)"),
        "ecdsa": network.signer("Dr Ito (ECDSA)", kind="ec"),
        "expired": network.signer("Dr Old", valid=(now - dt.timedelta(days=20), now - dt.timedelta(days=2))),
        "untrusted": rogue.signer("Dr Rogue"),
        "rogue_ca": rogue,
    }


@pytest.fixture
def verifier(pki):
    return SignatureVerifier([pki["ca"].cert])


LETTER = "紹介状 referral letter\n".encode() + os.urandom(2000)
LAB = os.urandom(5000)


def _outcomes(verdict: Verdict) -> dict[str, str]:
    return {check.name: check.outcome for check in verdict.checks}


def _reason(verdict: Verdict, name: str) -> str:
    return verdict.check(name).reason


def _signed(*documents: tuple[str, bytes]) -> list[SignedDocument]:
    return [SignedDocument(unique_id, MemoryAttachment(data)) for unique_id, data in documents]


# -- one signature document, alone --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_a_valid_signature_holds_every_check(pki, verifier, kind):
    documents = [("1.2.3.4.1", LETTER), ("1.2.3.4.2^x1", LAB)]
    signed = signature_document(pki[kind], documents)
    verdict = verifier.verify(signed, "1.2.3.4.9", _signed(*documents))
    assert verdict.holds, verdict.lines()
    assert list(_outcomes(verdict)) == ["structure", "algorithms", "signature", "certificate", "purpose", "signs",
                                        "digest:1.2.3.4.1", "digest:1.2.3.4.2^x1"]
    assert verdict.signer == pki[kind].cert.subject.rfc4514_string()
    assert verdict.purposes == ("urn:oid:1.2.840.10065.1.12.1.1 (Author's Signature)",)
    assert "network-ca" in _reason(verdict, "certificate")
    assert f"of the {len(LETTER):,} bytes" in _reason(verdict, "digest:1.2.3.4.1")
    # what is stored in meta.json reads back as it was
    assert Verdict.from_json(json.loads(json.dumps(verdict.as_json()))) == verdict


def test_a_changed_document_fails_its_digest_only(pki, verifier):
    signed = signature_document(pki["rsa"], [("1.2.3.4.1", LETTER), ("1.2.3.4.2", LAB)])
    verdict = verifier.verify(signed, "1.2.3.4.9", _signed(("1.2.3.4.1", LETTER[:-1] + b"!"), ("1.2.3.4.2", LAB)))
    assert not verdict.holds
    assert [c.name for c in verdict.failed] == ["digest:1.2.3.4.1"]
    assert "are not what was signed" in _reason(verdict, "digest:1.2.3.4.1")
    assert verdict.check("digest:1.2.3.4.2").held


def test_a_changed_manifest_breaks_the_signature_and_is_not_trusted(pki, verifier):
    signed = etree.fromstring(signature_document(pki["rsa"], [("1.2.3.4.1", LETTER)]))
    forged = b"a letter the signer never saw"
    signed.find(f".//{{{DS}}}Manifest/{{{DS}}}Reference/{{{DS}}}DigestValue").text = base64.b64encode(
        hashlib.sha256(forged).digest()).decode()
    verdict = verifier.verify(etree.tostring(signed), "1.2.3.4.9", _signed(("1.2.3.4.1", forged)))
    outcomes = _outcomes(verdict)
    assert outcomes["signature"] == FAILED and "changed after it was signed" in _reason(verdict, "signature")
    # nothing the broken signature says is believed: the forged digest is never compared
    assert outcomes["signs"] == NOT_CHECKED and "digest:1.2.3.4.1" not in outcomes
    assert outcomes["certificate"] == NOT_CHECKED


def test_an_unsigned_manifest_beside_the_signed_one_is_not_read(pki, verifier):
    """Signature wrapping: a second ds:Object with a manifest of other digests changes nothing;
    only what signxml returns as signed is read."""
    signed = etree.fromstring(signature_document(pki["rsa"], [("1.2.3.4.1", LETTER)]))
    wrapper = etree.SubElement(signed, f"{{{DS}}}Object")
    evil = etree.SubElement(wrapper, f"{{{DS}}}Manifest")
    reference = etree.SubElement(evil, f"{{{DS}}}Reference", URI="urn:oid:1.2.3.4.1")
    etree.SubElement(reference, f"{{{DS}}}DigestMethod", Algorithm=DigestAlgorithm.SHA256.value)
    etree.SubElement(reference, f"{{{DS}}}DigestValue").text = base64.b64encode(
        hashlib.sha256(b"evil").digest()).decode()
    signed.insert(signed.index(signed.find(f"{{{DS}}}Object")), wrapper)  # before the signed one
    genuine = verifier.verify(etree.tostring(signed), "1.2.3.4.9", _signed(("1.2.3.4.1", LETTER)))
    assert genuine.holds, genuine.lines()
    swapped = verifier.verify(etree.tostring(signed), "1.2.3.4.9", _signed(("1.2.3.4.1", b"evil")))
    assert [c.name for c in swapped.failed] == ["digest:1.2.3.4.1"]


def test_an_untrusted_signer_fails_the_certificate(pki, verifier):
    verdict = verifier.verify(signature_document(pki["untrusted"], [("1.2.3.4.1", LETTER)]), "1.2.3.4.9",
                              _signed(("1.2.3.4.1", LETTER)))
    assert [c.name for c in verdict.failed] == ["certificate"]
    assert "does not chain to a trust anchor of dsg_trust_anchors" in _reason(verdict, "certificate")
    assert "rogue-ca" in _reason(verdict, "certificate")
    assert verdict.check("signature").held  # intact, only not trusted


def test_an_expired_signer_fails_the_certificate(pki, verifier):
    verdict = verifier.verify(signature_document(pki["expired"], [("1.2.3.4.1", LETTER)]), "1.2.3.4.9",
                              _signed(("1.2.3.4.1", LETTER)))
    assert [c.name for c in verdict.failed] == ["certificate"]
    assert "was not valid when it signed" in _reason(verdict, "certificate")


def test_validity_is_judged_at_the_signing_time(pki, verifier):
    """A signature made while the certificate was valid still holds after it expired."""
    expired = pki["expired"]
    made = expired.cert.not_valid_before_utc + dt.timedelta(days=3)
    verdict = verifier.verify(signature_document(expired, [("1.2.3.4.1", LETTER)], signing_time=made), "1.2.3.4.9",
                              _signed(("1.2.3.4.1", LETTER)))
    assert verdict.holds, verdict.lines()
    assert verdict.signing_time == made.isoformat().replace("+00:00", "Z")


def test_a_signing_time_in_the_future_fails(pki, verifier):
    verdict = verifier.verify(
        signature_document(pki["rsa"], [("1.2.3.4.1", LETTER)], signing_time=_now() + dt.timedelta(days=2)),
        "1.2.3.4.9", _signed(("1.2.3.4.1", LETTER)))
    assert [c.name for c in verdict.failed] == ["certificate"] and "in the future" in _reason(verdict, "certificate")


def test_no_trust_anchors_means_no_certificate_holds(pki):
    verdict = SignatureVerifier([]).verify(signature_document(pki["rsa"], [("1.2.3.4.1", LETTER)]), "1.2.3.4.9",
                                           _signed(("1.2.3.4.1", LETTER)))
    assert [c.name for c in verdict.failed] == ["certificate"] and "set dsg_trust_anchors" in _reason(verdict,
                                                                                                      "certificate")


@pytest.mark.parametrize("signature_method, digest", [
    (SignatureMethod.RSA_SHA1, DigestAlgorithm.SHA256),
    (SignatureMethod.RSA_SHA256, DigestAlgorithm.SHA1),
])
def test_sha1_is_refused(pki, verifier, signature_method, digest):
    signed = signature_document(pki["rsa"], [("1.2.3.4.1", LETTER)], signature_method=signature_method, digest=digest)
    verdict = verifier.verify(signed, "1.2.3.4.9", _signed(("1.2.3.4.1", LETTER)))
    assert _outcomes(verdict)["algorithms"] == FAILED and "SHA-1, which is refused" in _reason(verdict, "algorithms")
    assert _outcomes(verdict)["signature"] == NOT_CHECKED


def test_canonical_xml_without_comments_is_accepted(pki, verifier):
    signed = signature_document(pki["ecdsa"], [("1.2.3.4.1", LETTER)], c14n=CanonicalizationMethod.CANONICAL_XML_1_1)
    assert verifier.verify(signed, "1.2.3.4.9", _signed(("1.2.3.4.1", LETTER))).holds


def test_a_signature_without_purpose_fails_the_purpose(pki, verifier):
    verdict = verifier.verify(signature_document(pki["rsa"], [("1.2.3.4.1", LETTER)], purpose=None), "1.2.3.4.9",
                              _signed(("1.2.3.4.1", LETTER)))
    assert [c.name for c in verdict.failed] == ["purpose"] and "CommitmentTypeIndication" in _reason(verdict, "purpose")


def test_the_manifest_and_the_signs_associations_must_agree(pki, verifier):
    """A signature over a document that is not in the submission (nor registered), and a signs
    association to a document the manifest does not list."""
    signed = signature_document(pki["rsa"], [("1.2.3.4.1", LETTER), ("1.2.3.4.7", b"elsewhere")])
    verdict = verifier.verify(signed, "1.2.3.4.9", _signed(("1.2.3.4.1", LETTER), ("1.2.3.4.2", LAB)),
                              unresolved=["urn:uuid:00000000-0000-4000-8000-000000000001"])
    reason = _reason(verdict, "signs")
    assert _outcomes(verdict)["signs"] == FAILED
    assert "the manifest lists 1.2.3.4.7, which no signs association of this signature names" in reason
    assert "names 1.2.3.4.2, which the signature's manifest does not list" in reason
    assert "targets urn:uuid:00000000-0000-4000-8000-000000000001, which is neither in the submission" in reason
    assert _outcomes(verdict)["digest:1.2.3.4.7"] == NOT_CHECKED
    assert verdict.check("digest:1.2.3.4.1").held


def test_a_registered_document_without_its_bytes_is_not_checked(pki, verifier):
    signed = signature_document(pki["rsa"], [("1.2.3.4.1", LETTER)])
    verdict = verifier.verify(signed, "1.2.3.4.9", [SignedDocument("1.2.3.4.1", None, "registered")])
    assert _outcomes(verdict)["digest:1.2.3.4.1"] == NOT_CHECKED and not verdict.holds and not verdict.failed
    assert "registered hash is SHA-1" in _reason(verdict, "digest:1.2.3.4.1")


@pytest.mark.parametrize("data, expected", [
    (b"not xml at all", "not XML that can be read"),
    (b'<!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>', "not XML that can be read"),
    (b"<letter/>", "not ds:Signature"),
    (f'<ds:Signature xmlns:ds="{DS}"><ds:SignedInfo/></ds:Signature>'.encode(), "no an X.509 certificate"),
])
def test_what_is_no_signature_document_fails_the_structure(verifier, data, expected):
    verdict = verifier.verify(data, "1.2.3.4.9", [])
    assert _outcomes(verdict)["structure"] == FAILED and expected in _reason(verdict, "structure")
    assert all(c.outcome == NOT_CHECKED for c in verdict.checks[1:])


def test_manifest_uris_name_uniqueids():
    assert uri_unique_id("urn:oid:1.2.3") == uri_unique_id("URN:OID:1.2.3") == uri_unique_id("1.2.3") == "1.2.3"


# -- an independent opinion: xmlsec1 --------------------------------------------------------------------------

XMLSEC1 = shutil.which("xmlsec1")


def _xmlsec1(signed: bytes, trusted: Path, documents: dict[str, bytes], folder: Path) -> bool:
    """xmlsec1's verdict: the signature verifies with a certificate chaining to `trusted`, and
    every Manifest reference (resolved to the documents' bytes with --url-map) digests right.
    xmlsec1 answers 0 whatever the manifest's references give (XML Signature 5.1: their
    validation is the application's), so its count line is read too."""
    path = folder / "signature.xml"
    path.write_bytes(signed)
    maps = []
    for number, (unique_id, data) in enumerate(documents.items()):
        (folder / f"doc{number}").write_bytes(data)
        maps += [f"--url-map:urn:oid:{unique_id}", str(folder / f"doc{number}")]
    # --enabled-key-data x509: the key of the certificate, verified to `trusted`, never the bare
    # KeyValue signxml writes beside it (with which xmlsec1 would trust any signer).
    done = subprocess.run([XMLSEC1, "--verify", "--enabled-key-data", "x509", "--trusted-pem", str(trusted), *maps,
                           "--id-attr:Id", f"{XADES}:SignedProperties", "--id-attr:Id", "KeyInfo",
                           "--id-attr:Id", "Object", str(path)], capture_output=True, text=True, timeout=30)
    counts = re.search(r"Manifests References \(ok/all\): (\d+)/(\d+)", done.stdout + done.stderr)
    return done.returncode == 0 and counts is not None and counts.group(1) == counts.group(2)


@pytest.mark.skipif(XMLSEC1 is None, reason="xmlsec1 is not installed (Debian: apt-get install xmlsec1; .ci/run "
                                            "installs it)")
def test_xmlsec1_agrees_with_our_verdicts(pki, verifier, tmp_path):
    documents = {"1.2.3.4.1": LETTER, "1.2.3.4.2": LAB}
    tampered_manifest = etree.fromstring(signature_document(pki["rsa"], list(documents.items())))
    tampered_manifest.find(f".//{{{DS}}}Manifest/{{{DS}}}Reference/{{{DS}}}DigestValue").text = base64.b64encode(
        hashlib.sha256(b"forged").digest()).decode()
    cases = [
        ("RSA", signature_document(pki["rsa"], list(documents.items())), documents, True),
        ("ECDSA", signature_document(pki["ecdsa"], list(documents.items())), documents, True),
        ("a document changed", signature_document(pki["rsa"], list(documents.items())),
         {**documents, "1.2.3.4.2": LAB + b"!"}, False),
        ("the manifest changed", etree.tostring(tampered_manifest), documents, False),
        ("an untrusted signer", signature_document(pki["untrusted"], list(documents.items())), documents, False),
        ("an expired signer", signature_document(pki["expired"], list(documents.items())), documents, False),
    ]
    for name, signed, contents, good in cases:
        ours = verifier.verify(signed, "1.2.3.4.9", _signed(*contents.items()))
        assert ours.holds is good, f"ours on {name}: {ours.lines()}"
        assert _xmlsec1(signed, pki["ca"].pem, contents, tmp_path) is good, f"xmlsec1 on {name}"


# -- submissions: ITI-41 at the repository, ITI-42 at the registry, both policies -----------------------------


def _signed_request(pki, signer="rsa", *, signed_over=None, extra_manifest=(), extra_targets=(),
                    mime_type="text/xml", format_code=DSG_FORMAT):
    """An ITI-41 request: a letter, a lab report and a signature document over them (linked by
    signs associations). `signed_over` replaces the bytes that are signed (a document changed
    after signing); `extra_manifest` adds documents to the manifest."""
    letter_uid, lab_uid, signature_uid = s.new_oid(), s.new_oid(), s.new_oid()
    signed_over = signed_over or {}
    listed = [(letter_uid, signed_over.get("letter", LETTER)), (lab_uid, signed_over.get("lab", LAB)),
              *extra_manifest]
    signature = signature_document(pki[signer], listed) if isinstance(signer, str) else signer
    request, ids = pnr_request([("Letter", LETTER, "application/pdf"), ("Lab", LAB, "application/pdf"),
                                ("Signature", signature, mime_type)], inline=True,
                               unique_ids=[letter_uid, lab_uid, signature_uid])
    entry = next(e for e in request.iter(f"{{{RIM}}}ExtrinsicObject") if e.get("id") == "Signature")
    format_ = next(c for c in entry.iter(f"{{{RIM}}}Classification")
                   if c.get("classificationScheme") == ns.DE_FORMAT_CODE)
    format_.set("nodeRepresentation", format_code[0])
    object_list = request.find(f".//{{{RIM}}}RegistryObjectList")
    for number, target in enumerate(["Letter", "Lab", *extra_targets]):
        object_list.append(s.element(s.association(f"signs{number}", "signs", "Signature", target)))
    contents = {"Letter": LETTER, "Lab": LAB, "Signature": signature}
    return request, contents, ids


def _content_of(contents):
    return lambda element: MemoryAttachment(contents[element.get("id")])


def _repository(registry, blobs, policy, pki):
    signatures = SubmissionSignatures(policy, SignatureVerifier([pki["ca"].cert]), stored=stored_in(blobs))
    registry.signatures = SubmissionSignatures(policy).check_register
    return ProvideAndRegister(REPOSITORY, blobs, LocalRegistry(registry).register, signatures=signatures)


def _meta(blobs, unique_id) -> dict:
    return json.loads((blobs.get(unique_id).path.parent / "meta.json").read_bytes())


def test_provide_records_a_holding_verdict_with_the_signature_document(registry, tmp_path, pki):
    blobs = FileBlobStore(tmp_path / "documents")
    request, contents, ids = _signed_request(pki)
    errors = _repository(registry, blobs, RECORD, pki).provide(request, _content_of(contents))
    assert errors == []
    verdict = Verdict.from_json(_meta(blobs, ids["Signature"])["dsg"])
    assert verdict.holds and verdict.signature == ids["Signature"], verdict.lines()
    assert {c.name for c in verdict.checks} >= {f"digest:{ids['Letter']}", f"digest:{ids['Lab']}"}
    assert "dsg" not in _meta(blobs, ids["Letter"])  # only the signature document carries one


@pytest.mark.parametrize("case, check", [
    ("tampered document", "digest"),
    ("tampered manifest", "signature"),
    ("untrusted", "certificate"),
    ("expired", "certificate"),
    ("not in the submission", "signs"),
    ("sha1", "algorithms"),
])
def test_a_signature_that_fails(registry, tmp_path, pki, case, check):
    """Under record the submission is stored with the failed verdict; under reject it is refused
    with XDSRepositoryMetadataError naming the check and the signature document."""
    def request():
        if case == "tampered document":
            return _signed_request(pki, signed_over={"lab": LAB + b" (before the change)"})
        if case == "tampered manifest":
            signature = etree.fromstring(signature_document(pki["rsa"], [("1.2.3", LETTER)]))
            signature.find(f".//{{{DS}}}Manifest/{{{DS}}}Reference").set("URI", "urn:oid:1.2.4")
            return _signed_request(pki, signer=etree.tostring(signature))
        if case == "not in the submission":
            return _signed_request(pki, extra_manifest=[("1.2.999.1", b"a document sent elsewhere")])
        if case == "sha1":
            return _signed_request(pki, signer=signature_document(pki["rsa"], [("1.2.3", LETTER)],
                                                                  digest=DigestAlgorithm.SHA1))
        return _signed_request(pki, signer=case)

    recorded = FileBlobStore(tmp_path / "record")
    req, contents, ids = request()
    assert _repository(registry, recorded, RECORD, pki).provide(req, _content_of(contents)) == []
    verdict = Verdict.from_json(_meta(recorded, ids["Signature"])["dsg"])
    assert not verdict.holds and any(c.name.startswith(check) for c in verdict.failed), verdict.lines()

    refused = FileBlobStore(tmp_path / "reject")
    req, contents, ids = request()
    errors = _repository(registry, refused, REJECT, pki).provide(req, _content_of(contents))
    (failure,) = errors
    assert failure.code == RULES["dsg.not-verified"].code == "XDSRepositoryMetadataError"
    assert failure.location == "Signature"
    assert failure.context.startswith(f"signature DocumentEntry 'Signature' (uniqueId {ids['Signature']}): the DSG "
                                      f"check '{check}")
    assert failure.context.endswith("this repository refuses signatures that do not verify (dsg_policy reject)")
    assert all(refused.get(unique_id) is None for unique_id in ids.values())  # nothing stored


def test_a_signature_over_a_document_registered_before(registry, tmp_path, pki):
    """The signs association targets a DocumentEntry registered earlier: its bytes are in this
    repository, so its digest is checked there."""
    blobs = FileBlobStore(tmp_path / "documents")
    repository = _repository(registry, blobs, REJECT, pki)
    first, ids = pnr_request([("Letter", LETTER, "application/pdf")], inline=True)
    assert repository.provide(first, _content_of({"Letter": LETTER})) == []
    letter_uuid = _entry_uuid(registry, ids["Letter"])
    signature = signature_document(pki["rsa"], [(ids["Letter"], LETTER)])
    later, later_ids = pnr_request([("Signature", signature, "text/xml")], inline=True)
    entry = next(later.iter(f"{{{RIM}}}ExtrinsicObject"))
    next(c for c in entry.iter(f"{{{RIM}}}Classification")
         if c.get("classificationScheme") == ns.DE_FORMAT_CODE).set("nodeRepresentation", DSG_FORMAT[0])
    later.find(f".//{{{RIM}}}RegistryObjectList").append(
        s.element(s.association("signs0", "signs", "Signature", letter_uuid)))
    repository.signatures.registered = _lookup(registry)
    assert repository.provide(later, _content_of({"Signature": signature})) == []
    verdict = Verdict.from_json(_meta(blobs, later_ids["Signature"])["dsg"])
    assert verdict.holds, verdict.lines()
    assert "stored in this repository" in verdict.check(f"digest:{ids['Letter']}").reason


def _entry_uuid(registry, unique_id: str) -> str:
    """The entryUUID the registry gave a document (GetDocuments by uniqueId, in-process)."""
    from xds.config import Settings
    from xds.ebrim.query_request import adhoc_query_request, quote_list
    from xds.registry.query import RegistryStoredQuery
    from xds.security.dsg import registered_documents

    request = adhoc_query_request("urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4",
                                  [("$XDSDocumentEntryUniqueId", [quote_list([unique_id])])], "LeafClass")
    response = RegistryStoredQuery.configured(registry.sessions, Settings()).query(request)
    ((document, _),) = registered_documents(response)
    return document.entry_uuid


def _lookup(registry):
    from xds.config import Settings
    from xds.security.dsg import registry_lookup

    return registry_lookup(Settings(), registry)


@pytest.mark.parametrize("change, rule", [
    ({"mime_type": "application/pdf"}, "dsg.mime-type"),
    ({"format_code": ("urn:ihe:iti:xds-sd:text:2008", "1.3.6.1.4.1.19376.1.2.3", "")}, "dsg.format-code"),
])
def test_the_registry_checks_the_signature_entry(registry, pki, change, rule):
    """ITI-42 carries no bytes: the registry checks the signature DocumentEntry's metadata, and
    refuses it under reject only."""
    request, _, _ = _signed_request(pki, **change)
    submit = request.find(f"{{{ns.LCM}}}SubmitObjectsRequest")
    parsed = read_submission(submit)
    problems = entry_problems(parsed.submission)
    assert [p.code for p in problems] == ["XDSRegistryMetadataError"] and problems[0].location == "Signature"
    assert problems[0].context == RULES[rule].error(
        "Signature", id="Signature", value=change.get("mime_type") or change["format_code"][0]).context
    assert SubmissionSignatures(RECORD).check_register(parsed.submission) == []
    assert SubmissionSignatures(REJECT).check_register(parsed.submission) == problems


def test_a_signs_association_to_something_else_than_a_document(pki):
    request, _, _ = _signed_request(pki, extra_targets=["SubmissionSet01"])
    parsed = read_submission(request.find(f"{{{ns.LCM}}}SubmitObjectsRequest"))
    (problem,) = entry_problems(parsed.submission)
    assert problem.context == RULES["dsg.signs-target"].error("Signature", id="Signature",
                                                              target="SubmissionSet01").context


def test_dsg_policy_must_be_known():
    with pytest.raises(ValueError, match="dsg_policy: 'strict' is not one of record, reject"):
        SubmissionSignatures("strict")
