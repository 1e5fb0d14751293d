"""XUA, the X-Service Provider of ITI-40 (xds.security.xua): assertions made and signed here by
identity providers with cryptography keys (tests/saml.py), checked by the verifier alone, by the
dispatcher's check (policy, faults, the Caller, the Security Alert), against xmlsec1 for an
independent opinion of the signatures, and by a real `xds serve` (test_xua_http.py).

Organised as the verifier's steps: the signature (and the wrapping attacks, which it must defeat
by reading only what was signed), the conditions, the subject confirmation, the attributes;
then the policy and the check."""

from __future__ import annotations

import copy
import datetime as dt
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureMethod

from tests import saml
from tests.certs import CertificateAuthority
from xds.audit import events, syslog
from xds.audit.actors import human_requestor
from xds.audit.trail import AuditTrail
from xds.config import Settings
from xds.security.caller import CE, Caller, XUser
from xds.security.wssecurity import (
    FAILED_AUTHENTICATION,
    INVALID_SECURITY,
    INVALID_SECURITY_TOKEN,
    SecurityFault,
    assertion_in,
    security_header,
)
from xds.security.xua import AssertionVerifier, XuaCheck, XuaPolicy, checks, load_trusted_certificates
from xds.soap import build_envelope, parse_message
from xds.transactions import ITI_18, ITI_43

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance-data"
AUDIT_SCHEMA = CONFORMANCE / "schemas" / "audit" / "dicom2017c.xsd"
EHEALTHSUISSE = CONFORMANCE / "iti-41" / "ehealthsuisse" / "ITI-41_request_raw.xml"
URL = "http://127.0.0.1:8080/registry"
SAML2 = saml.SAML2
DS = saml.DS


@pytest.fixture(scope="module")
def idp(tmp_path_factory) -> saml.IdentityProvider:
    return saml.IdentityProvider(tmp_path_factory.mktemp("idp"), "kagawa-idp")


@pytest.fixture(scope="module")
def ec_idp(tmp_path_factory) -> saml.IdentityProvider:
    return saml.IdentityProvider(tmp_path_factory.mktemp("ec-idp"), "kagawa-ec-idp", kind="ec")


@pytest.fixture(scope="module")
def rogue(tmp_path_factory) -> saml.IdentityProvider:
    """An identity provider nobody trusts, issuing as the trusted one's entity id."""
    return saml.IdentityProvider(tmp_path_factory.mktemp("rogue"), "rogue-idp")


def _verifier(*idps, **settings) -> AssertionVerifier:
    return AssertionVerifier(tuple(i.cert for i in idps), **settings)


def verify(assertion: etree._Element, *idps, now: dt.datetime | None = None, audiences=(URL,),
           peer_certificate: bytes | None = None, **settings) -> XUser:
    """The assertion as the SOAP layer hands it over: inside a wsse:Security header of a parsed
    envelope, found there by the same code the server uses."""
    found = _found(saml.security(assertion))
    return _verifier(*idps, **settings).verify(found, now=now or dt.datetime.now(dt.UTC), audiences=audiences,
                                               peer_certificate=peer_certificate)


def _found(security: etree._Element) -> etree._Element | None:
    request = parse_message("application/soap+xml",
                            build_envelope(etree.Element("{urn:x}Query"), "urn:x:Query", header_blocks=[security]))
    return assertion_in(security_header(request.header))


def refused(code: str, assertion: etree._Element, *idps, **kwargs) -> str:
    with pytest.raises(SecurityFault) as caught:
        verify(assertion, *idps, **kwargs)
    assert caught.value.subcode == code, caught.value.reason
    assert caught.value.code == "Sender"
    return caught.value.why


# -- a good assertion ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["idp", "ec_idp"])
def test_a_signed_assertion_gives_its_user_and_every_xua_attribute(kind, request):
    provider = request.getfixturevalue(kind)  # RSA-SHA256 and ECDSA-SHA256
    user = verify(provider.signed(audience=URL, alias="taro"), provider)
    assert user == XUser(
        name_id=saml.USER, issuer=saml.ISSUER, alias="taro", assertion_id=user.assertion_id,
        subject_id="山田 太郎", organization="Kagawa Central Hospital",
        organization_id="urn:oid:1.2.392.200119.6.102.11", home_community_id="urn:oid:1.2.392.200119.6.102",
        roles=(CE(*saml.ROLE),), purposes_of_use=(CE(*saml.PURPOSE),), resource_id=saml.PATIENT)
    assert user.assertion_id.startswith("_a")
    assert user.audit_name == f"taro<{saml.USER}@{saml.ISSUER}>"  # ITI TF-2 3.40.4.2


def test_audiences_compare_as_urls_and_one_restriction_may_name_several(idp):
    signed = idp.signed(audiences=("urn:kagawa-mix:all-communities", "HTTP://127.0.0.1:8080/registry/"))
    assert verify(signed, idp).name_id == saml.USER
    assert verify(idp.signed(audience="urn:kagawa-mix:all-communities"), idp,
                  audiences=("urn:kagawa-mix:all-communities",)).name_id == saml.USER


def test_any_trusted_key_verifies_even_without_key_info(idp, ec_idp):
    assert verify(idp.sign(idp.assertion(audience=URL), key_info=False), ec_idp, idp).name_id == saml.USER


# -- the signature ------------------------------------------------------------------------------------


def test_an_unsigned_assertion_is_an_invalid_token(idp):
    assert "not signed" in refused(INVALID_SECURITY_TOKEN, idp.assertion(audience=URL), idp)


def test_an_assertion_changed_after_signing_fails_authentication(idp):
    signed = idp.signed(audience=URL)
    signed.find(f"{{{SAML2}}}Subject/{{{SAML2}}}NameID").text = "director@kagawa-hp.example"
    assert "changed after it was signed" in refused(FAILED_AUTHENTICATION, signed, idp)


def test_an_attribute_added_after_signing_fails_authentication(idp):
    signed = idp.signed(audience=URL)
    statement = signed.find(f"{{{SAML2}}}AttributeStatement")
    role = copy.deepcopy(statement[-2])  # the role attribute, a second time
    statement.append(role)
    refused(FAILED_AUTHENTICATION, signed, idp)


def test_a_provider_not_trusted_is_named(idp, rogue):
    why = refused(FAILED_AUTHENTICATION, rogue.signed(audience=URL), idp)
    assert "rogue-idp" in why and "xua_trusted_certificates" in why
    # without KeyInfo to name it, the trusted key is tried and does not verify
    assert "does not verify" in refused(FAILED_AUTHENTICATION, rogue.sign(rogue.assertion(audience=URL),
                                                                          key_info=False), idp)


def test_the_key_info_certificate_is_not_what_verifies(idp, rogue):
    """KeyInfo is not signed: a rogue signature carrying the trusted certificate is verified with
    the trusted key, and fails."""
    signed = rogue.signed(audience=URL)
    certificate = signed.find(f".//{{{DS}}}X509Certificate")
    certificate.text = saml.base64.b64encode(idp.cert.public_bytes(serialization.Encoding.DER)).decode()
    assert "does not verify" in refused(FAILED_AUTHENTICATION, signed, idp)


def test_sha1_is_refused_unless_allowed(idp):
    signed = idp.sign(idp.assertion(audience=URL), signature_method=SignatureMethod.RSA_SHA1,
                      digest=DigestAlgorithm.SHA1)
    assert "xua_allow_sha1" in refused(FAILED_AUTHENTICATION, signed, idp)
    assert verify(signed, idp, allow_sha1=True).name_id == saml.USER


def test_inclusive_canonicalization_is_refused(idp):
    """SAML Core 5.4.3: exclusive C14N, which survives the assertion's move into a header."""
    signed = idp.sign(idp.assertion(audience=URL), c14n=CanonicalizationMethod.CANONICAL_XML_1_1)
    assert "exclusive canonicalization" in refused(FAILED_AUTHENTICATION, signed, idp)


def test_a_transform_list_that_is_not_the_allowed_one_is_refused(idp):
    signed = idp.signed(audience=URL)
    transforms = signed.find(f".//{{{DS}}}Transforms")
    etree.SubElement(transforms, f"{{{DS}}}Transform", Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116")
    assert "transforms" in refused(FAILED_AUTHENTICATION, signed, idp)


def test_a_reference_to_anything_but_the_assertion_itself_is_refused(idp):
    signed = idp.signed(audience=URL)
    signed.find(f".//{{{DS}}}Reference").set("URI", "")
    assert "Reference URI" in refused(FAILED_AUTHENTICATION, signed, idp)


def test_a_reference_to_an_id_that_appears_twice_is_refused(idp):
    signed = idp.signed(audience=URL)
    statement = signed.find(f"{{{SAML2}}}AttributeStatement")
    etree.SubElement(statement, "{urn:evil}Decoy", ID=signed.get("ID"))
    assert "carried by 2 elements" in refused(FAILED_AUTHENTICATION, signed, idp)


def test_two_signatures_are_refused(idp):
    signed = idp.signed(audience=URL)
    signed.append(copy.deepcopy(signed.find(f"{{{DS}}}Signature")))
    refused(FAILED_AUTHENTICATION, signed, idp)


# -- wrapping attacks: what is read is what was signed ---------------------------------------------------


def _evil(genuine: etree._Element, user: str = "director@kagawa-hp.example") -> etree._Element:
    evil = copy.deepcopy(genuine)
    evil.find(f"{{{SAML2}}}Subject/{{{SAML2}}}NameID").text = user
    return evil


def test_an_unsigned_assertion_beside_a_signed_one_is_refused(idp):
    genuine = idp.signed(audience=URL)
    unsigned = _evil(idp.assertion(audience=URL))
    for order in ((genuine, unsigned), (unsigned, genuine), (genuine, genuine)):
        with pytest.raises(SecurityFault) as caught:
            _found(saml.security(*order))
        assert caught.value.subcode == INVALID_SECURITY and "2 saml2:Assertion" in caught.value.why


def test_the_signed_assertion_hidden_elsewhere_in_the_header_is_not_read(idp):
    """The evil assertion is the header's one assertion; the genuine one sits inside another
    element of the header. Only the evil one is read, and it is not signed."""
    genuine = idp.signed(audience=URL)
    evil = _evil(idp.assertion(audience=URL))
    security = saml.security(evil)
    etree.SubElement(security, "{urn:evil}Wrapper").append(copy.deepcopy(genuine))
    found = _found(security)
    assert found.find(f"{{{SAML2}}}Subject/{{{SAML2}}}NameID").text == "director@kagawa-hp.example"
    with pytest.raises(SecurityFault) as caught:
        _verifier(idp).verify(found, now=dt.datetime.now(dt.UTC), audiences=(URL,))
    assert caught.value.subcode == INVALID_SECURITY_TOKEN and "not signed" in caught.value.why


def test_signature_moved_to_an_evil_assertion_wrapping_the_genuine_one(idp):
    """XSW: the evil assertion (its own ID) carries the genuine signature, the genuine assertion
    travels inside it. The signature refers to the genuine ID, not the evil root's."""
    genuine = idp.signed(audience=URL)
    evil = _evil(genuine)
    evil.set("ID", "_evil")
    advice = etree.Element(f"{{{SAML2}}}Advice")
    evil.find(f"{{{SAML2}}}Conditions").addnext(advice)
    inner = copy.deepcopy(genuine)
    inner.remove(inner.find(f"{{{DS}}}Signature"))
    advice.append(inner)
    assert "Reference URI" in refused(FAILED_AUTHENTICATION, evil, idp)


def test_signature_moved_with_the_genuine_id_copied_to_the_evil_assertion(idp):
    """The same, the evil root taking the genuine ID as well: the ID then names two elements."""
    genuine = idp.signed(audience=URL)
    evil = _evil(genuine)
    advice = etree.Element(f"{{{SAML2}}}Advice")
    evil.find(f"{{{SAML2}}}Conditions").addnext(advice)
    inner = copy.deepcopy(genuine)
    inner.remove(inner.find(f"{{{DS}}}Signature"))
    advice.append(inner)
    assert "carried by 2 elements" in refused(FAILED_AUTHENTICATION, evil, idp)


def test_a_comment_injected_in_the_name_id_does_not_shorten_it(idp):
    """Exclusive C14N without comments ignores a comment, so the signature still verifies; a
    reader of the first text node would see only the part before it. What is read is the
    signed value, whole."""
    signed = idp.signed(audience=URL, user="yamada.taro@kagawa-hp.example.evil.example")
    name_id = signed.find(f"{{{SAML2}}}Subject/{{{SAML2}}}NameID")
    name_id.text = "yamada.taro@kagawa-hp.example"
    comment = etree.Comment("")
    comment.tail = ".evil.example"
    name_id.append(comment)
    assert verify(signed, idp).name_id == "yamada.taro@kagawa-hp.example.evil.example"


# -- conditions -------------------------------------------------------------------------------------------


def test_an_expired_assertion_is_an_invalid_token(idp):
    now = dt.datetime.now(dt.UTC)
    signed = idp.signed(audience=URL, issued=now - dt.timedelta(minutes=10),
                        not_before=now - dt.timedelta(minutes=10), not_on_or_after=now - dt.timedelta(minutes=2))
    why = refused(INVALID_SECURITY_TOKEN, signed, idp)
    assert "expired" in why and "NotOnOrAfter" in why and "clock skew allowed 60 s" in why


def test_a_not_yet_valid_assertion_is_an_invalid_token(idp):
    now = dt.datetime.now(dt.UTC)
    signed = idp.signed(audience=URL, not_before=now + dt.timedelta(minutes=5),
                        not_on_or_after=now + dt.timedelta(minutes=10))
    assert "not valid yet" in refused(INVALID_SECURITY_TOKEN, signed, idp)


def test_clock_skew_is_allowed_both_ways_and_no_more(idp):
    now = dt.datetime.now(dt.UTC)
    late = idp.signed(audience=URL, not_before=now - dt.timedelta(minutes=5), not_on_or_after=now)
    early = idp.signed(audience=URL, issued=now + dt.timedelta(seconds=30), not_before=now + dt.timedelta(seconds=30))
    for signed in (late, early):
        assert verify(signed, idp, now=now + dt.timedelta(seconds=30) if signed is late else now).name_id == saml.USER
    refused(INVALID_SECURITY_TOKEN, late, idp, now=now + dt.timedelta(seconds=61))
    refused(INVALID_SECURITY_TOKEN, early, idp, now=now, clock_skew=dt.timedelta(seconds=10))


def test_an_assertion_issued_in_the_future_is_refused(idp):
    now = dt.datetime.now(dt.UTC)
    assert "issued in the future" in refused(INVALID_SECURITY_TOKEN, idp.signed(
        audience=URL, issued=now + dt.timedelta(minutes=5)), idp)


def test_an_assertion_for_another_audience_is_refused(idp):
    why = refused(INVALID_SECURITY_TOKEN, idp.signed(audience="https://registry.other-region.example/registry"), idp)
    assert "other-region" in why and URL in why
    # the same URL on another port is another service
    refused(INVALID_SECURITY_TOKEN, idp.signed(audience="http://127.0.0.1:9090/registry"), idp)


def test_every_audience_restriction_must_name_this_endpoint(idp):
    signed = idp.assertion(audience=URL)
    conditions = signed.find(f"{{{SAML2}}}Conditions")
    etree.SubElement(etree.SubElement(conditions, f"{{{SAML2}}}AudienceRestriction"),
                     f"{{{SAML2}}}Audience").text = "https://elsewhere.example/"
    refused(INVALID_SECURITY_TOKEN, idp.sign(signed), idp)


def test_an_assertion_without_audience_or_end_is_refused(idp):
    assert "names no audience" in refused(INVALID_SECURITY_TOKEN, idp.signed(), idp)
    assert "NotOnOrAfter" in refused(INVALID_SECURITY_TOKEN, idp.signed(conditions=False), idp)


def test_an_unknown_condition_makes_the_assertion_indeterminate(idp):
    signed = idp.assertion(audience=URL)
    etree.SubElement(signed.find(f"{{{SAML2}}}Conditions"), f"{{{SAML2}}}Condition")
    assert "SAML Core 2.5.1.5" in refused(INVALID_SECURITY_TOKEN, idp.sign(signed), idp)


def test_saml_version_and_malformed_times_are_invalid_tokens(idp):
    assert "Version" in refused(INVALID_SECURITY_TOKEN, idp.signed(audience=URL, version="1.1"), idp)
    signed = idp.assertion(audience=URL)
    signed.find(f"{{{SAML2}}}Conditions").set("NotOnOrAfter", "tomorrow")
    assert "xs:dateTime" in refused(INVALID_SECURITY_TOKEN, idp.sign(signed), idp)


# -- subject confirmation ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hospital(tmp_path_factory):
    ca = CertificateAuthority(tmp_path_factory.mktemp("pki"))
    return ca, ca.issue("hospital-a"), ca.issue("hospital-b")


def _der(node) -> bytes:
    return x509.load_pem_x509_certificate(node.certificate.read_bytes()).public_bytes(serialization.Encoding.DER)


def test_holder_of_key_is_confirmed_by_the_tls_client_certificate(idp, hospital):
    _, a, b = hospital
    key = x509.load_pem_x509_certificate(a.certificate.read_bytes())
    signed = idp.signed(audience=URL, method=saml.HOLDER_OF_KEY, confirmation_key=key)
    assert verify(signed, idp, peer_certificate=_der(a)).name_id == saml.USER
    assert "not the key of the TLS client certificate" in refused(FAILED_AUTHENTICATION, signed, idp,
                                                                  peer_certificate=_der(b))
    assert "without a TLS client certificate" in refused(FAILED_AUTHENTICATION, signed, idp)


def test_sender_vouches_is_not_supported(idp):
    signed = idp.signed(audience=URL, method="urn:oasis:names:tc:SAML:2.0:cm:sender-vouches")
    assert "sender-vouches" in refused(INVALID_SECURITY_TOKEN, signed, idp)


# -- real assertions: the shapes a national network's identity provider writes --------------------------------

needs_conformance = pytest.mark.skipif(not EHEALTHSUISSE.exists(), reason=f"{EHEALTHSUISSE} is not there")


def _captured_assertion() -> etree._Element:
    data = EHEALTHSUISSE.read_bytes()
    start = data.index(b"<saml2:Assertion")
    end = data.index(b"</saml2:Assertion>") + len(b"</saml2:Assertion>")
    return etree.fromstring(data[start:end])


@needs_conformance
def test_the_swiss_epr_capture_is_refused_for_its_sha1_and_its_untrusted_signer(idp):
    """A real assertion of the Swiss EPR test network (2020, rsa-sha1, ITH icoserve's STS)."""
    captured = _captured_assertion()
    assert "SHA-1" in refused(FAILED_AUTHENTICATION, captured, idp)
    assert "ITH icoserve" in refused(FAILED_AUTHENTICATION, captured, idp, allow_sha1=True)


@needs_conformance
def test_the_swiss_epr_attributes_are_read_as_xua_names_them(idp):
    """The captured assertion's statements (hl7:PurposeOfUse with a prefix, hl7 Role in the
    default namespace, xsi:typed values, the CX resource-id), signed again by our provider at
    the time it was issued: every XUA attribute is read."""
    captured = _captured_assertion()
    captured.remove(captured.find(f"{{{DS}}}Signature"))
    user = verify(idp.sign(captured), idp, now=dt.datetime(2020, 9, 22, 11, 20, tzinfo=dt.UTC),
                  audiences=("urn:e-health-suisse:token-audience:all-communities",))
    assert (user.name_id, user.issuer) == ("9801003538489", "http://ith-icoserve.com/eHealthSolutionsSTS")
    assert (user.subject_id, user.organization, user.organization_id) == (
        "Sarah Stone", "Post CH AG", "urn:oid:1.3.6.1.4.1.21367.2017.2.6.19.100.2")
    assert user.home_community_id == "urn:oid:1.3.6.1.4.1.21367.2017.2.6.19"
    assert user.roles == (CE("HCP", "2.16.756.5.30.1.127.3.10.6", "eHealth Suisse EPR Actors", "Healthcare professional"),)
    assert user.purposes_of_use == (CE("EMER", "2.16.756.5.30.1.127.3.10.5", "eHealth Suisse Verwendungszweck",
                                       "Notfallzugriff"),)
    assert user.resource_id == "761337610410098484^^^SPID&2.16.756.5.30.1.127.3.10.3&ISO"


# -- an independent opinion: xmlsec1 --------------------------------------------------------------------------

XMLSEC1 = shutil.which("xmlsec1")


def _xmlsec1(assertion: etree._Element, trusted: Path, folder: Path) -> bool:
    path = folder / "assertion.xml"
    path.write_bytes(etree.tostring(assertion))
    done = subprocess.run([XMLSEC1, "--verify", "--id-attr:ID", f"{SAML2}:Assertion", "--trusted-pem", str(trusted),
                           str(path)], capture_output=True, text=True, timeout=30)
    return done.returncode == 0


def _ours(assertion: etree._Element, idp) -> bool:
    try:
        verify(assertion, idp)
        return True
    except SecurityFault:
        return False


@pytest.mark.skipif(XMLSEC1 is None, reason="xmlsec1 is not installed (Debian: apt-get install xmlsec1; .ci/run "
                                            "installs it)")
def test_xmlsec1_agrees_with_our_verdicts_on_the_signatures(idp, ec_idp, rogue, tmp_path):
    """The same assertions, checked by xmlsec1 (libxmlsec1, OpenSSL) against the same trusted
    certificate: it accepts what we accept and refuses what we refuse for its signature."""
    tampered = idp.signed(audience=URL)
    tampered.find(f"{{{SAML2}}}Subject/{{{SAML2}}}NameID").text = "director@kagawa-hp.example"
    moved = _evil(idp.signed(audience=URL))
    moved.set("ID", "_evil")  # the genuine signature on an assertion it does not refer to
    cases = [
        ("RSA-SHA256", idp.signed(audience=URL), idp, True),
        ("ECDSA-SHA256", ec_idp.signed(audience=URL), ec_idp, True),
        ("changed after signing", tampered, idp, False),
        ("signed by an untrusted provider", rogue.signed(audience=URL), idp, False),
        ("signature moved", moved, idp, False),
    ]
    for name, assertion, trusted, good in cases:
        assert _xmlsec1(assertion, trusted.certificate, tmp_path) is good, f"xmlsec1 on {name}"
        assert _ours(assertion, trusted) is good, f"ours on {name}"


# -- the policy ------------------------------------------------------------------------------------------------

ENDPOINTS = ("registry", "repository", "pix", "pdq")


@pytest.mark.parametrize("value, trusted, expected", [
    ("", False, XuaPolicy("off", {})),
    ("", True, XuaPolicy("optional", {})),
    ("required", True, XuaPolicy("required", {})),
    ("registry=required,repository=optional,pix=off,pdq=optional", True,
     XuaPolicy("optional", {"registry": "required", "repository": "optional", "pix": "off", "pdq": "optional"})),
    ("off, registry = required", True, XuaPolicy("off", {"registry": "required"})),
])
def test_the_policy_setting(value, trusted, expected):
    assert XuaPolicy.parse(value, trusted=trusted, endpoints=ENDPOINTS) == expected


def test_a_policy_per_endpoint():
    policy = XuaPolicy.parse("registry=required,repository=optional", trusted=False, endpoints=ENDPOINTS)
    assert [policy.of(path) for path in ("/registry", "/repository", "/pix")] == ["required", "optional", "off"]


@pytest.mark.parametrize("value, message", [
    ("mandatory", "'mandatory' is not one of required, optional, off"),
    ("registry=yes", "'yes' is not one of"),
    ("xca=required", "serves no endpoint 'xca'"),
])
def test_a_policy_that_means_nothing_fails_at_start(value, message):
    with pytest.raises(ValueError, match=message):
        XuaPolicy.parse(value, trusted=True, endpoints=ENDPOINTS)


def test_settings_make_the_check_or_none(idp, tmp_path):
    assert checks(Settings()) == []
    assert checks(Settings(xua_policy="off", xua_trusted_certificates=str(idp.certificate))) == []
    with pytest.raises(ValueError, match="set xua_trusted_certificates"):
        checks(Settings(xua_policy="required"))
    with pytest.raises(OSError, match="xua_trusted_certificates"):
        checks(Settings(xua_trusted_certificates=str(tmp_path / "missing.pem")))
    (check,) = checks(Settings(xua_trusted_certificates=str(idp.certificate), xua_clock_skew=5,
                               xua_audiences="urn:a, https://b.example/registry"))
    assert check.policy.of("/registry") == "optional" and check.audiences == ("urn:a", "https://b.example/registry")
    assert check.verifier.clock_skew == dt.timedelta(seconds=5)


def test_trusted_certificates_may_be_several_in_one_file(idp, ec_idp, tmp_path):
    both = tmp_path / "idps.pem"
    both.write_bytes(idp.certificate.read_bytes() + ec_idp.certificate.read_bytes())
    assert [c.subject for c in load_trusted_certificates(both)] == [idp.cert.subject, ec_idp.cert.subject]


# -- the dispatcher's check ---------------------------------------------------------------------------------------


class Spool:
    """A real audit trail delivering to a UDP socket of the test: what the Audit Record
    Repository would receive."""

    def __init__(self, folder: Path):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.trail = AuditTrail.from_settings(Settings(
            data_dir=folder, audit_destinations=f"udp://127.0.0.1:{self.socket.getsockname()[1]}")).start()

    def messages(self, count: int) -> list[etree._Element]:
        assert self.trail.flush(10)
        found, deadline = [], time.monotonic() + 10
        while len(found) < count:
            self.socket.settimeout(max(0.01, deadline - time.monotonic()))
            found.append(etree.fromstring(syslog.parse(self.socket.recv(65536)).msg))
        return found

    def close(self):
        self.trail.close()
        self.socket.close()


@pytest.fixture
def spool(tmp_path):
    spool = Spool(tmp_path)
    yield spool
    spool.close()


def _valid_dicom(message: etree._Element) -> None:
    """The DICOM PS3.15 audit message schema (the public copy beside the checkout) holds."""
    if not AUDIT_SCHEMA.exists():
        pytest.skip(f"{AUDIT_SCHEMA} is not there")
    schema = etree.XMLSchema(etree.parse(str(AUDIT_SCHEMA)))
    assert schema.validate(message), schema.error_log


def _request(*header_blocks, path: str = "/registry"):
    body = build_envelope(etree.Element("{urn:x}Query"), ITI_18.action, message_id="urn:uuid:0f0e",
                          header_blocks=header_blocks)
    return parse_message("application/soap+xml", body, environ={
        "REMOTE_ADDR": "192.0.2.10", "wsgi.url_scheme": "http", "HTTP_HOST": "127.0.0.1:8080",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "PATH_INFO": path})


def _check(idp, policy: str, trail=None) -> XuaCheck:
    return XuaCheck(XuaPolicy.parse(policy, trusted=True, endpoints=ENDPOINTS), _verifier(idp), trail=trail)


CALLER = Caller(address="192.0.2.10")


def test_a_good_assertion_makes_the_caller_its_user(idp):
    caller = _check(idp, "required")(ITI_18, _request(saml.security(idp.signed(audience=URL))), CALLER)
    assert caller.address == "192.0.2.10" and caller.user.name_id == saml.USER
    assert caller.user.roles[0].code == "HCP"


def test_required_refuses_a_request_without_an_assertion_and_audits_it(idp, spool):
    check = _check(idp, "registry=required,repository=optional", trail=spool.trail)
    with pytest.raises(SecurityFault) as caught:
        check(ITI_18, _request(), CALLER)
    assert caught.value.subcode == INVALID_SECURITY and "/registry requires an X-User Assertion" in caught.value.reason
    assert check(ITI_43, _request(path="/repository"), CALLER) is None  # optional: none is fine
    (alert,) = spool.messages(1)
    assert alert.find("EventIdentification/EventID").get("csd-code") == "110113"
    assert alert.find("EventIdentification/EventTypeCode").get("csd-code") == "110132"
    assert alert.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    assert alert.find("ActiveParticipant[@UserIsRequestor='true']").get("UserID") == "192.0.2.10"
    assert alert.find("ActiveParticipant[@UserIsRequestor='false']").get("UserID") == URL
    detail = alert.find("ParticipantObjectIdentification/ParticipantObjectDetail")
    assert b"requires an X-User Assertion" in saml.base64.b64decode(detail.get("value"))
    _valid_dicom(alert)


def test_optional_still_refuses_a_bad_assertion_and_audits_each_refusal(idp, rogue, spool):
    check = _check(idp, "optional", trail=spool.trail)
    now = dt.datetime.now(dt.UTC)
    for bad, code in ((rogue.signed(audience=URL), FAILED_AUTHENTICATION),
                      (idp.signed(audience=URL, not_before=now - dt.timedelta(hours=1),
                                  not_on_or_after=now - dt.timedelta(minutes=30)), INVALID_SECURITY_TOKEN),
                      (idp.signed(audience="https://elsewhere.example/registry"), INVALID_SECURITY_TOKEN)):
        with pytest.raises(SecurityFault) as caught:
            check(ITI_18, _request(saml.security(bad)), CALLER)
        assert caught.value.subcode == code
    # each refusal: a Security Alert, and the User Authentication that failed (test_xua_audit.py)
    reasons = [saml.base64.b64decode(m.find(".//ParticipantObjectDetail").get("value")).decode()
               for m in spool.messages(6) if m.find("EventIdentification/EventID").get("csd-code") == "110113"]
    assert "rogue-idp" in reasons[0] and "expired" in reasons[1] and "elsewhere" in reasons[2]


def test_off_reads_nothing_and_leaves_wsse_security_not_understood(idp, rogue):
    check = _check(idp, "registry=off,repository=required")
    request = _request(saml.security(rogue.signed(audience=URL)))
    assert check(ITI_18, request, CALLER) is None
    assert check.understood_headers(ITI_18) == ()
    assert check.understood_headers(ITI_43) == ("{%s}Security" % saml.WSSE,)


def test_a_security_header_for_another_role_is_not_ours(idp):
    role = saml.security(idp.signed(audience=URL), role="urn:some:intermediary")
    with pytest.raises(SecurityFault) as caught:
        _check(idp, "required")(ITI_18, _request(role), CALLER)
    assert caught.value.subcode == INVALID_SECURITY  # as if there were none


def test_two_security_headers_for_this_node_are_refused(idp):
    good = saml.security(idp.signed(audience=URL))
    with pytest.raises(SecurityFault) as caught:
        _check(idp, "required")(ITI_18, _request(good, copy.deepcopy(good)), CALLER)
    assert caught.value.subcode == INVALID_SECURITY and "2 wsse:Security" in caught.value.why


def test_the_fault_is_ws_security_11_in_soap_12(idp):
    fault = SecurityFault(INVALID_SECURITY_TOKEN, "the assertion has expired").to_element()
    values = [v.text for v in fault.iter("{http://www.w3.org/2003/05/soap-envelope}Value")]
    assert values == ["env:Sender", "wsse:InvalidSecurityToken"]
    text = fault.findtext(".//{http://www.w3.org/2003/05/soap-envelope}Text")
    assert text == "An invalid security token was provided: the assertion has expired"


# -- the user in the audit records ----------------------------------------------------------------------------------


def test_the_user_is_the_human_requestor_of_every_record(idp):
    """ITI TF-2 3.40.4.2: UserName alias<user@issuer>, UserIsRequestor true, the roles as
    RoleIDCode, the purposes of use in EventIdentification; valid DICOM, and kept through the
    audit spool's values."""
    user = verify(idp.signed(audience=URL, alias="taro"), idp)
    ctx = events.TransactionContext(action=ITI_18.action, client_address="192.0.2.10", endpoint_url=URL,
                                    query_id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d", query_request=b"<q/>",
                                    human_requestor=human_requestor(user))
    again = events.context_from_values(events.context_values(ctx))
    assert again == ctx
    message = etree.fromstring(events.build("ITI-18", "DocumentRegistry", again,
                                            events.AuditSource("KMIX-XDS-1")))
    person = message.find(f"ActiveParticipant[@UserID='{saml.USER}']")
    assert person.get("UserName") == f"taro<{saml.USER}@{saml.ISSUER}>"
    assert person.get("UserIsRequestor") == "true" and person.get("NetworkAccessPointID") is None
    assert person.find("RoleIDCode").attrib == {"csd-code": "HCP", "codeSystemName": "2.16.756.5.30.1.127.3.10.6",
                                                "originalText": "Healthcare professional"}
    assert message.find("EventIdentification/PurposeOfUse").get("csd-code") == "NORM"
    _valid_dicom(message)


def test_a_record_kept_before_purposes_of_use_is_still_written():
    """A spooled person of the earlier layout ([id, name, roles]) is read as it was."""
    values = events.context_values(events.TransactionContext(
        human_requestor=events.HumanRequestor("alice", "Alice", (events.CodedValue("HCP", "2.16.756", "HCP"),))))
    person_at = events.CONTEXT_FIELDS.index("human_requestor")
    values[person_at] = values[person_at][:3]
    assert events.context_from_values(values).human_requestor == events.HumanRequestor(
        "alice", "Alice", (events.CodedValue("HCP", "2.16.756", "HCP"),))
