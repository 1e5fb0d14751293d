"""XUA, Cross-Enterprise User Assertion: this server as the X-Service Provider of ITI-40
Provide X-User Assertion (IHE ITI TF-1 39, ITI TF-2 3.40). A SOAP request may carry, in its
wsse:Security header, a SAML 2.0 assertion signed by an identity provider that names the user
on whose behalf it is sent; this module decides whether that assertion is good and, when it is,
who the user is (xds.security.caller.XUser).

What belongs here: the policy per endpoint (xua_policy), the verification of one assertion
(AssertionVerifier: no I/O, the clock and the TLS peer's certificate are passed in) and the
cache of the assertions it verified (VerifiedAssertions), and the dispatcher's check that joins
them (XuaCheck: it reads the request, refuses with the WS-Security fault and audits the
refusal). What does not: finding the header block and the faults' words
(xds.security.wssecurity), writing audit messages (xds.audit).

Theory of operation. An assertion is only data until its signature is verified, so the order
matters:

  1. The request's endpoint has a policy: "off" reads nothing (and the SOAP layer then does not
     understand a wsse:Security header marked mustUnderstand: a MustUnderstand fault, so that no
     client believes its assertion was checked); "optional" verifies an assertion when there is
     one; "required" refuses a request without one.
  2. The assertion is the one saml2:Assertion child of the one wsse:Security block for this node.
  3. Its signature is checked before anything in it is believed: a ds:Signature child of the
     assertion (SAML Core 5.4.1) with one Reference to the assertion's own ID, which no other
     element of it carries; exclusive C14N (SAML Core 5.4.3) and only the enveloped-signature
     and exclusive C14N transforms (5.4.4); RSA or ECDSA with SHA-2 (SHA-1 only with
     xua_allow_sha1); the key of one of xua_trusted_certificates, whatever certificate the
     signature's KeyInfo offers (KeyInfo is not signed: it only picks which trusted key to try).
     signxml does the cryptography, on the assertion serialized alone: nothing around it in
     the envelope can be referenced.
  4. From then on only what the verifier returns as signed (signxml's VerifyResult.signed_xml,
     re-parsed from the canonical bytes that were digested, so without comments and without
     the signature) is read. An assertion moved, duplicated or wrapped around the signed one
     changes nothing: what is read is what the identity provider signed.
  5. The signed assertion's own rules (SAML Core 2.3-2.5, ITI TF-2 3.40.4.1.2): Version 2.0,
     an Issuer, IssueInstant not in the future, a Subject with a NameID, a SubjectConfirmation
     this server can confirm (bearer; holder-of-key whose key is the TLS client certificate's;
     sender-vouches is not supported: it would need a signature over the message by the
     sender), Conditions with NotOnOrAfter (an assertion without an end could be replayed
     forever) and NotBefore within xua_clock_skew, and an AudienceRestriction naming this
     endpoint's URL as requested or one of xua_audiences (every AudienceRestriction must name
     one: SAML Core 2.5.1.4). A condition this server does not know makes the assertion
     Indeterminate (SAML Core 2.5.1.5): refused.
  6. The XUA attributes (ITI TF-2 3.40.4.1.2) are read into the Caller's user: subject-id,
     organization, organization-id, homeCommunityId, roles (Subject-Role option), purposes of
     use (PurposeOfUse option), resource-id (the patient). They inform; none is required.
     The Caller also keeps the bytes that were verified (Caller.assertion): the repository
     conveys them, unchanged, on its ITI-42 to a remote registry (xds.repository.registration).

The cache. A client sends the same assertion with every request of a user's session, and steps
3 to 6 cost about 0.8 ms of CPU (bench/xua.py), most of it signxml's. So what steps 3 to 6 read
of the signed assertion (a SignedAssertion: the user, the times, the audiences, the subject
confirmations; no XML) is kept per worker, by the assertion's ID and the SHA-256 of the exact
bytes that were verified, until the assertion expires or the certificate that verified it
does. Verification is a function of those bytes and of the verifier's fixed configuration
alone, so a changed assertion, however small the change, is another key and is verified on
its own (VerifiedAssertions says why at length). What depends on the request is checked on
every request, from the cache or not: the time window (NotBefore, NotOnOrAfter, IssueInstant,
SubjectConfirmationData), the audience (this endpoint's URL), the holder-of-key's TLS client
certificate.

Faults (WS-Security 1.1 section 12, as SOAP 1.2 env:Sender subcodes): wsse:InvalidSecurity for a
header this server cannot process (two assertions, none where one is required);
wsse:InvalidSecurityToken for an assertion that is malformed, unsigned, expired, not yet valid,
or addressed to another audience; wsse:FailedAuthentication for a signature that does not
verify, is made in a way refused here, or by a key not trusted, and for a holder-of-key
assertion presented by another certificate. Each refusal is also a Security Alert (110113, Use
of Restricted Function) in the audit trail, and, when the request presented an assertion, a
failed User Authentication (110114, Login) of the user it claims: "If this validation fails,
then the grouped Actor's associated transaction shall return with an error code as described
in WS-Security core specification section 12 (...), and the ATNA Audit event for
Authentication Failure shall be recorded according to ATNA rules" (ITI TF-2 3.40.4.1.3).
A user authenticated records no 110114: the TF does not ask it, and every transaction's own
record names the user (3.40.4.2).
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import functools
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from lxml import etree
from signxml import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureConfiguration,
    SignatureMethod,
    XMLVerifier,
)
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidSignature, SignXMLException

from xds.audit import events, node
from xds.audit.actors import endpoint_url
from xds.audit.trail import AuditTrail
from xds.config import Settings
from xds.security.caller import CE, Caller, XUser
from xds.security.tls import peer_certificate
from xds.security.wssecurity import (
    ASSERTION,
    FAILED_AUTHENTICATION,
    INVALID_SECURITY,
    INVALID_SECURITY_TOKEN,
    SAML2,
    SECURITY,
    SecurityFault,
    assertion_in,
    security_header,
)
from xds.soap import SoapRequest
from xds.transactions import ENDPOINTS, Transaction

log = logging.getLogger("xds.security")

DS = "http://www.w3.org/2000/09/xmldsig#"
HL7 = "urn:hl7-org:v3"


def _saml(local: str) -> str:
    return f"{{{SAML2}}}{local}"


def _ds(local: str) -> str:
    return f"{{{DS}}}{local}"


# -- the policy -----------------------------------------------------------------------------------

REQUIRED, OPTIONAL, OFF = "required", "optional", "off"
POLICIES = (REQUIRED, OPTIONAL, OFF)


@dataclass(frozen=True)
class XuaPolicy:
    """xua_policy: one policy for every endpoint, or one per endpoint, named as its path is
    ("registry" for /registry)."""

    default: str = OFF
    endpoints: Mapping[str, str] = field(default_factory=dict)

    def of(self, endpoint_path: str) -> str:
        return self.endpoints.get(endpoint_path.strip("/"), self.default)

    @property
    def reads_assertions(self) -> bool:
        return any(policy != OFF for policy in (self.default, *self.endpoints.values()))

    @classmethod
    def parse(cls, value: str, *, trusted: bool, endpoints: Collection[str]) -> "XuaPolicy":
        """`value` as xua_policy is written: "required", or "registry=required,pdq=optional", a
        bare value among the pairs being the others'. Empty: optional with trusted certificates,
        off without. An endpoint this server does not serve, or a value that is no policy, is an
        error at start-up, not at the first request."""
        default, per_endpoint = (OPTIONAL if trusted else OFF), {}
        for item in (value or "").split(","):
            name, assigned, policy = (part.strip() for part in item.partition("="))
            if not assigned:
                name, policy = "", name
                if not policy:
                    continue
            if policy not in POLICIES:
                raise ValueError(f"xua_policy: {policy!r} is not one of {', '.join(POLICIES)}")
            if not assigned:
                default = policy
            elif name not in endpoints:
                raise ValueError(f"xua_policy: this server serves no endpoint {name!r} (it serves "
                                 f"{', '.join(sorted(endpoints))})")
            else:
                per_endpoint[name] = policy
        return cls(default, per_endpoint)


# -- verifying one assertion ------------------------------------------------------------------------

# SAML Core 5.4.3 / 5.4.4: exclusive canonicalization, and no transforms but these.
_EXC_C14N = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0.value
_ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
_ALLOWED_TRANSFORMS = ((_ENVELOPED,), (_ENVELOPED, _EXC_C14N))
_SIGNATURE_METHODS = frozenset({
    SignatureMethod.RSA_SHA256, SignatureMethod.RSA_SHA384, SignatureMethod.RSA_SHA512,
    SignatureMethod.SHA256_RSA_MGF1, SignatureMethod.SHA384_RSA_MGF1, SignatureMethod.SHA512_RSA_MGF1,
    SignatureMethod.ECDSA_SHA256, SignatureMethod.ECDSA_SHA384, SignatureMethod.ECDSA_SHA512,
})
_SHA1_SIGNATURE_METHODS = frozenset({SignatureMethod.RSA_SHA1, SignatureMethod.ECDSA_SHA1})
_DIGESTS = frozenset({DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512})

BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
HOLDER_OF_KEY = "urn:oasis:names:tc:SAML:2.0:cm:holder-of-key"
SENDER_VOUCHES = "urn:oasis:names:tc:SAML:2.0:cm:sender-vouches"

# ITI TF-2 3.40.4.1.2: the attributes XUA names.
SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
ORGANIZATION = "urn:oasis:names:tc:xspa:1.0:subject:organization"
ORGANIZATION_ID = "urn:oasis:names:tc:xspa:1.0:subject:organization-id"
HOME_COMMUNITY_ID = "urn:ihe:iti:xca:2010:homeCommunityId"
ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
PURPOSE_OF_USE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"

_KNOWN_CONDITIONS = {_saml("AudienceRestriction"), _saml("OneTimeUse"), _saml("ProxyRestriction")}
# The parser for an assertion serialized on its own: the SOAP layer's hardening (no entities,
# no DTD, no network); one per verification, since signxml keeps the parser it is given.
_PARSER_OPTIONS = dict(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def _token(why: str) -> SecurityFault:
    return SecurityFault(INVALID_SECURITY_TOKEN, why)


def _authentication(why: str) -> SecurityFault:
    return SecurityFault(FAILED_AUTHENTICATION, why)


def _public_key(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _certificate(base64_text: str | None) -> x509.Certificate | None:
    """A ds:X509Certificate's content (base64 DER, whitespace allowed), or None if it is none."""
    try:
        return x509.load_der_x509_certificate(base64.b64decode("".join((base64_text or "").split()), validate=True))
    except (ValueError, binascii.Error):
        return None


def load_trusted_certificates(path: str | Path) -> list[x509.Certificate]:
    """The identity providers' certificates of a PEM file (xua_trusted_certificates); its errors
    name the setting, as tls.py's do."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise OSError(f"xua_trusted_certificates {path}: {exc.strerror or exc}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ValueError(f"xua_trusted_certificates {path}: not PEM certificates ({exc})") from None
    return certificates


def _verification_error(exc: Exception, certificate: x509.Certificate) -> str:
    """What signxml found, in words a person sending the assertion can act on."""
    signer = certificate.subject.rfc4514_string()
    if isinstance(exc, InvalidDigest):
        return "the assertion was changed after it was signed (its digest does not match the signature's)"
    if isinstance(exc, InvalidCertificate):
        return f"the identity provider's certificate {signer!r} is not valid now: {exc}"
    if isinstance(exc, InvalidSignature):
        return f"the signature value does not verify with the key of {signer!r}"
    if isinstance(exc, etree.DocumentInvalid):
        return f"the ds:Signature is not a valid XML Signature: {exc}"
    return f"the signature cannot be verified: {exc or type(exc).__name__}"


def _time(value: str | None, what: str) -> _dt.datetime | None:
    """An xs:dateTime of the assertion (SAML Core 1.3.3: UTC; a value without zone is taken as
    UTC too)."""
    if value is None:
        return None
    try:
        parsed = _dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise _token(f"{what} {value!r} is not an xs:dateTime") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.UTC)


def _shown(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@functools.lru_cache(maxsize=256)  # this node's endpoints, and the audiences its providers name
def _normal_audience(audience: str) -> str:
    """Audiences compared as URLs where they are http(s) URLs (scheme and host in any case, a
    default port written or not, a trailing slash or not), as they are otherwise."""
    audience = audience.strip()
    parts = urlsplit(audience)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return audience
    scheme = parts.scheme.lower()
    port = parts.port
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != (443 if scheme == "https" else 80):
        host += f":{port}"
    return f"{scheme}://{host}{parts.path.rstrip('/')}" + (f"?{parts.query}" if parts.query else "")


def _text(element: etree._Element | None) -> str:
    """An element's string value (XPath string(): its text nodes, never a comment's)."""
    return "" if element is None else str(element.xpath("string()")).strip()


# -- what is kept of a verified assertion -------------------------------------------------------------


@dataclass(frozen=True)
class _Confirmation:
    """One saml2:SubjectConfirmation as signed: its method, its SubjectConfirmationData window,
    the keys (SubjectPublicKeyInfo, DER) a holder-of-key confirmation names, and `malformed`,
    why its window cannot be read (a confirmation that can never hold, said when none does)."""

    method: str
    not_before: _dt.datetime | None = None
    not_on_or_after: _dt.datetime | None = None
    keys: frozenset[bytes] = frozenset()
    malformed: str = ""


@dataclass(frozen=True)
class SignedAssertion:
    """What the identity provider signed of one assertion, read once (steps 4 to 6 without the
    request): the user it names and what every request still checks against it: the times,
    the audiences of each AudienceRestriction, the subject confirmations. Nothing in it depends
    on the request, so it is what the cache keeps; no XML is kept."""

    user: XUser
    issued: _dt.datetime
    not_before: _dt.datetime | None
    not_on_or_after: _dt.datetime
    #: each AudienceRestriction's audiences: as written (for the fault's words), and compared
    audiences: tuple[tuple[str, ...], ...]
    compared_audiences: tuple[frozenset[str], ...]
    confirmations: tuple[_Confirmation, ...]
    #: the end of validity of the trusted certificate whose key verified the signature
    signer_not_after: _dt.datetime


# Per worker and per verifier: how many verified assertions the cache keeps. An entry is the
# SignedAssertion above, about 3 KB with the XUA attributes of tests/saml.py (measured with
# tracemalloc), so 4,096 entries hold at most about 13 MB per worker. That is more users than a
# regional network's node sees within an assertion's lifetime (K-MIX+: about 150 facilities),
# so in practice only expired entries leave; a flood of distinct assertions evicts the least
# recently used and costs a verification each, as without a cache.
CACHE_SIZE = 4096


class VerifiedAssertions:
    """The verified-assertion cache of one verifier: (assertion ID, SHA-256 of the exact bytes
    that were verified) -> SignedAssertion, least recently used out first, bounded by `size`.

    Why it can never let a changed assertion through: verification (AssertionVerifier._signed
    and _read) is a function of those bytes alone and of the verifier's configuration, which
    is fixed (the cache belongs to one verifier and cannot be handed to another). Any change to
    the assertion as serialized (an attribute, the signature, a namespace declaration, a
    comment) is another digest, so another key: a miss, and a verification of its own. What
    depends on the request or on time (the validity window, the audience, the TLS client
    certificate of holder-of-key) is not cached: it is checked on every request. An entry
    also leaves once the signing certificate's validity ends (signxml checks that validity only
    while verifying) or the assertion has expired (it could no longer be accepted).

    Thread-safe: one lock around the dictionary (gthread workers answer 16 requests at once).
    Two threads that miss the same assertion at once both verify it; the second stores the
    same entry again, which is harmless and avoids holding the lock while verifying."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, bytes], tuple[SignedAssertion, _dt.datetime]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, bytes], now: _dt.datetime) -> SignedAssertion | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and now < entry[1]:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[0]
            if entry is not None:  # expired, or its signing certificate is: verified again
                del self._entries[key]
            self.misses += 1
            return None

    def put(self, key: tuple[str, bytes], signed: SignedAssertion, keep_until: _dt.datetime) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._entries[key] = (signed, keep_until)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


# -- the verifier: steps 3 to 6 --------------------------------------------------------------------


def serialize(assertion: etree._Element) -> bytes:
    """The assertion serialized alone, as it is verified: its in-scope namespace declarations
    included (lxml writes those it inherits), its tail not. These bytes are the whole document
    signxml sees, so no element around the assertion in the envelope can be the target of the
    Reference; they are the cache's key; and they are what the Caller keeps to convey onwards
    (Caller.assertion): a well-formed element on its own, embeddable anywhere."""
    return etree.tostring(assertion, with_tail=False)


@dataclass(frozen=True)
class AssertionVerifier:
    """Verifies one X-User Assertion (the module's steps 3 to 6) and says who its user is.
    Holds configuration, and the cache of the assertions it verified (`cache_size` entries at
    most; 0: none); safe to share between threads."""

    trusted: tuple[x509.Certificate, ...]
    clock_skew: _dt.timedelta = _dt.timedelta(seconds=60)
    allow_sha1: bool = False
    cache_size: int = CACHE_SIZE
    cache: VerifiedAssertions = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Made here and never passed in: an entry is only as good as the configuration
        # (trusted keys, SHA-1 or not) of the verifier that made it.
        object.__setattr__(self, "cache", VerifiedAssertions(self.cache_size))

    def verify(self, assertion: etree._Element, *, now: _dt.datetime, audiences: Iterable[str],
               peer_certificate: bytes | None = None, serialized: bytes | None = None) -> XUser:
        """The user `assertion` names, or a SecurityFault saying what is wrong with it.
        `audiences`: those this endpoint answers to; `peer_certificate`: the TLS client
        certificate (DER) for holder-of-key confirmation; `serialized`: serialize(assertion),
        when the caller made it already (it keeps the bytes it had verified)."""
        return self._check(self.signed(assertion, now, serialized), now=now, audiences=audiences,
                           peer_certificate=peer_certificate)

    def signed(self, assertion: etree._Element, now: _dt.datetime, serialized: bytes | None = None) -> SignedAssertion:
        """What the identity provider signed of `assertion`: from the cache when these exact
        bytes were verified before, else verified and read now (and kept)."""
        data = serialize(assertion) if serialized is None else serialized
        key = (assertion.get("ID") or "", hashlib.sha256(data).digest())
        found = self.cache.get(key, now)
        if found is None:
            found = self._read(*self._signed(data))
            keep_until = min(found.not_on_or_after + self.clock_skew, found.signer_not_after)
            if now < keep_until:  # not an assertion that could never be accepted again
                self.cache.put(key, found, keep_until)
        return found

    # -- step 3: the signature -------------------------------------------------------------------

    def _signed(self, data: bytes) -> tuple[etree._Element, x509.Certificate]:
        """What the identity provider signed of the assertion serialized as `data`, as signxml
        returns it, and the trusted certificate whose key verified it."""
        try:
            document = etree.fromstring(data, etree.XMLParser(**_PARSER_OPTIONS))
        except etree.XMLSyntaxError as exc:
            raise _token(f"the saml2:Assertion cannot be read on its own: {exc}") from None
        assertion_id = document.get("ID")
        if not assertion_id:
            raise _token("the saml2:Assertion has no ID (SAML Core 2.3.3)")
        signatures = document.findall(_ds("Signature"))
        if not signatures:
            raise _token("the saml2:Assertion is not signed: XUA requires the identity provider's "
                         "enveloped ds:Signature (ITI TF-2 3.40.4.1.2)")
        if len(signatures) > 1:
            raise _authentication(f"the saml2:Assertion holds {len(signatures)} ds:Signature elements; one is expected")
        (signature,) = signatures
        self._check_signed_info(signature, assertion_id)
        carriers = document.xpath("//*[@*[local-name()='ID' or local-name()='Id' or local-name()='id'] = $id]",
                                  id=assertion_id)
        if len(carriers) != 1:
            raise _authentication(f"the ID {assertion_id!r} the signature refers to is carried by "
                                  f"{len(carriers)} elements of the assertion; it must name the assertion alone")
        methods = _SIGNATURE_METHODS | (_SHA1_SIGNATURE_METHODS if self.allow_sha1 else frozenset())
        digests = _DIGESTS | ({DigestAlgorithm.SHA1} if self.allow_sha1 else frozenset())
        config = SignatureConfiguration(require_x509=True, location="./", expect_references=1,
                                        signature_methods=methods, digest_algorithms=digests,
                                        default_reference_c14n_method=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0)
        errors = []
        for certificate in self._candidates(signature):
            try:
                result = XMLVerifier().verify(document, x509_cert=certificate, expect_config=config, id_attribute="ID",
                                              parser=etree.XMLParser(**_PARSER_OPTIONS))
            except (SignXMLException, etree.LxmlError, ValueError, TypeError) as exc:
                errors.append(_verification_error(exc, certificate))
                continue
            signed = result.signed_xml
            if signed is None or signed.tag != ASSERTION or signed.get("ID") != assertion_id:
                raise _authentication("the signature does not cover the saml2:Assertion it is in")
            return signed, certificate
        raise _authentication("; ".join(dict.fromkeys(errors)))

    def _check_signed_info(self, signature: etree._Element, assertion_id: str) -> None:
        """SAML Core 5.4: what this server accepts of a SignedInfo, checked before the
        cryptography (signxml applies a transform it does not know by skipping it)."""
        signed_info = signature.find(_ds("SignedInfo"))
        if signed_info is None:
            raise _authentication("the ds:Signature has no ds:SignedInfo")
        c14n = signed_info.find(_ds("CanonicalizationMethod"))
        if c14n is None or c14n.get("Algorithm") != _EXC_C14N:
            raise _authentication(f"the signature must use exclusive canonicalization ({_EXC_C14N}, SAML Core "
                                  f"5.4.3), not {c14n.get('Algorithm') if c14n is not None else 'none'}")
        references = signed_info.findall(_ds("Reference"))
        if len(references) != 1:
            raise _authentication(f"the signature has {len(references)} ds:Reference elements; SAML Core 5.4.2 "
                                  "asks for one, to the assertion")
        (reference,) = references
        if reference.get("URI") != f"#{assertion_id}":
            raise _authentication(f"the signature's Reference URI is {reference.get('URI')!r}, not the assertion's "
                                  f"own ID '#{assertion_id}' (SAML Core 5.4.2)")
        transforms = tuple(t.get("Algorithm") for t in reference.iterfind(f"{_ds('Transforms')}/{_ds('Transform')}"))
        if transforms not in _ALLOWED_TRANSFORMS:
            raise _authentication("the signature's transforms must be the enveloped signature, optionally followed "
                                  f"by exclusive canonicalization (SAML Core 5.4.4), not {list(transforms)}")
        method = signed_info.find(_ds("SignatureMethod"))
        digest = reference.find(_ds("DigestMethod"))
        for element, what in ((method, "signature method"), (digest, "digest method")):
            algorithm = element.get("Algorithm", "") if element is not None else ""
            if algorithm.endswith("sha1") and not self.allow_sha1:
                raise _authentication(f"the {what} is {algorithm}: SHA-1 is refused for signatures (an identity "
                                      "provider that still signs so can be accepted with xua_allow_sha1)")

    def _candidates(self, signature: etree._Element) -> list[x509.Certificate]:
        """The trusted certificates to verify with: the one whose key the KeyInfo's certificate
        has, or, when KeyInfo names no certificate, each in turn. A KeyInfo certificate that is
        not trusted is refused at once, by name."""
        offered = [_certificate(element.text) for element in
                   signature.iterfind(f"{_ds('KeyInfo')}/{_ds('X509Data')}/{_ds('X509Certificate')}")]
        offered = [certificate for certificate in offered if certificate is not None]
        if not offered:
            return list(self.trusted)
        keys = {_public_key(certificate) for certificate in offered}
        matching = [certificate for certificate in self.trusted if _public_key(certificate) in keys]
        if not matching:
            raise _authentication(f"the assertion is signed by {offered[0].subject.rfc4514_string()!r}, whose key is "
                                  "not among the identity providers this server trusts (xua_trusted_certificates)")
        return matching

    # -- steps 5 and 6: the signed assertion, read once -------------------------------------------

    def _read(self, signed: etree._Element, signer: x509.Certificate) -> SignedAssertion:
        """The signed assertion's own rules that do not depend on the request, and what it says
        (its user, times, audiences, confirmations), as a SignedAssertion."""
        if signed.get("Version") != "2.0":
            raise _token(f"the assertion's Version is {signed.get('Version')!r}, not 2.0")
        issuer = _text(signed.find(_saml("Issuer")))
        if not issuer:
            raise _token("the assertion has no saml2:Issuer (SAML Core 2.3.3)")
        issued = _time(signed.get("IssueInstant"), "IssueInstant")
        if issued is None:
            raise _token("the assertion has no IssueInstant (SAML Core 2.3.3)")
        conditions = signed.find(_saml("Conditions"))
        if conditions is None or conditions.get("NotOnOrAfter") is None:
            raise _token("the assertion has no saml2:Conditions NotOnOrAfter: an assertion without an end of "
                         "validity is not accepted")
        not_before = _time(conditions.get("NotBefore"), "Conditions NotBefore")
        not_on_or_after = _time(conditions.get("NotOnOrAfter"), "Conditions NotOnOrAfter")
        restrictions = conditions.findall(_saml("AudienceRestriction"))
        if not restrictions:
            raise _token("the assertion names no audience (saml2:AudienceRestriction); name this endpoint's URL")
        audiences = tuple(tuple(_text(a) for a in restriction.findall(_saml("Audience")))
                          for restriction in restrictions)
        for condition in conditions.iterchildren(etree.Element):
            if condition.tag not in _KNOWN_CONDITIONS:
                raise _token(f"the assertion's condition {etree.QName(condition).localname} is not one this server "
                             "evaluates, so it cannot be held valid (SAML Core 2.5.1.5)")
        subject = signed.find(_saml("Subject"))
        name_id = subject.find(_saml("NameID")) if subject is not None else None
        if name_id is None or not _text(name_id):
            raise _token("the assertion's saml2:Subject has no saml2:NameID naming the user (ITI TF-2 3.40.4.1.2)")
        confirmations = tuple(map(_confirmation, subject.findall(_saml("SubjectConfirmation"))))
        if not confirmations:
            raise _token("the assertion's saml2:Subject has no saml2:SubjectConfirmation")
        attributes = _attributes(signed)
        user = XUser(
            name_id=_text(name_id), issuer=issuer, alias=name_id.get("SPProvidedID", ""),
            assertion_id=signed.get("ID", ""),
            subject_id=_first(attributes.get(SUBJECT_ID)), organization=_first(attributes.get(ORGANIZATION)),
            organization_id=_first(attributes.get(ORGANIZATION_ID)),
            home_community_id=_first(attributes.get(HOME_COMMUNITY_ID)),
            roles=_codes(attributes.get(ROLE), "Role"),
            purposes_of_use=_codes(attributes.get(PURPOSE_OF_USE), "PurposeOfUse"),
            resource_id=_first(attributes.get(RESOURCE_ID)))
        return SignedAssertion(
            user=user, issued=issued, not_before=not_before, not_on_or_after=not_on_or_after, audiences=audiences,
            compared_audiences=tuple(frozenset(map(_normal_audience, named)) for named in audiences),
            confirmations=confirmations, signer_not_after=signer.not_valid_after_utc)

    # -- what is checked on every request ----------------------------------------------------------

    def _check(self, signed: SignedAssertion, *, now: _dt.datetime, audiences: Iterable[str],
               peer_certificate: bytes | None) -> XUser:
        """The rules that depend on the request or on the time (SAML Core 2.5.1, 2.4.1.1), for
        an assertion verified now or earlier; its user when they hold."""
        if signed.issued > now + self.clock_skew:
            raise _token(f"the assertion was issued in the future ({_shown(signed.issued)}; this server's time is "
                         f"{_shown(now)}, clock skew allowed {self.clock_skew.total_seconds():g} s)")
        self._check_window(signed.not_before, signed.not_on_or_after, now, "the assertion")
        ours = frozenset(map(_normal_audience, audiences))
        for named, compared in zip(signed.audiences, signed.compared_audiences):
            if compared.isdisjoint(ours):  # each restriction must be met (SAML Core 2.5.1.4)
                raise _token(f"the assertion is addressed to {', '.join(map(repr, named)) or 'no audience'}, not to "
                             f"this endpoint ({', '.join(sorted(ours))})")
        self._confirm(signed.confirmations, now, peer_certificate)
        return signed.user

    def _check_window(self, not_before: _dt.datetime | None, not_on_or_after: _dt.datetime | None,
                      now: _dt.datetime, what: str) -> None:
        if not_before is not None and now + self.clock_skew < not_before:
            raise _token(f"{what} is not valid yet: NotBefore {_shown(not_before)}, this server's time "
                         f"{_shown(now)} (clock skew allowed {self.clock_skew.total_seconds():g} s)")
        if not_on_or_after is not None and now - self.clock_skew >= not_on_or_after:
            raise _token(f"{what} has expired: NotOnOrAfter {_shown(not_on_or_after)}, this server's time "
                         f"{_shown(now)} (clock skew allowed {self.clock_skew.total_seconds():g} s)")

    def _confirm(self, confirmations: tuple[_Confirmation, ...], now: _dt.datetime,
                 peer_certificate: bytes | None) -> None:
        """One SubjectConfirmation this server can confirm is enough (SAML Core 2.4.1.1)."""
        failures: list[SecurityFault] = []
        for confirmation in confirmations:
            try:
                self._confirm_one(confirmation, now, peer_certificate)
                return
            except SecurityFault as fault:
                failures.append(fault)
        # A holder-of-key mismatch is an authentication failure; otherwise the token is invalid.
        raise next((f for f in failures if f.subcode == FAILED_AUTHENTICATION), failures[0])

    def _confirm_one(self, confirmation: _Confirmation, now: _dt.datetime, peer_certificate: bytes | None) -> None:
        if confirmation.malformed:
            raise _token(confirmation.malformed)
        self._check_window(confirmation.not_before, confirmation.not_on_or_after, now,
                           "the assertion's subject confirmation")
        if confirmation.method == BEARER:
            return
        if confirmation.method == HOLDER_OF_KEY:
            if peer_certificate is None:
                raise _authentication("the assertion is holder-of-key, and the request came without a TLS client "
                                      "certificate to confirm it")
            if _peer_key(peer_certificate) in confirmation.keys:
                return
            raise _authentication("the assertion is holder-of-key, and its key (ds:X509Certificate of the "
                                  "SubjectConfirmationData) is not the key of the TLS client certificate")
        if confirmation.method == SENDER_VOUCHES:
            raise _token("sender-vouches subject confirmation is not supported; use bearer, or holder-of-key "
                         "with the TLS client certificate")
        raise _token(f"unknown subject confirmation method {confirmation.method!r}")


def _confirmation(element: etree._Element) -> _Confirmation:
    """A signed saml2:SubjectConfirmation, read (its keys as SubjectPublicKeyInfo DER)."""
    method = (element.get("Method") or "").strip()
    data = element.find(_saml("SubjectConfirmationData"))
    if data is None:
        return _Confirmation(method)
    keys = frozenset(_public_key(k) for k in map(_certificate, (
        e.text for e in data.iterfind(f"{_ds('KeyInfo')}/{_ds('X509Data')}/{_ds('X509Certificate')}")))
        if k is not None)
    try:
        return _Confirmation(method, _time(data.get("NotBefore"), "SubjectConfirmationData NotBefore"),
                             _time(data.get("NotOnOrAfter"), "SubjectConfirmationData NotOnOrAfter"), keys)
    except SecurityFault as fault:
        return _Confirmation(method, keys=keys, malformed=fault.why)


@functools.lru_cache(maxsize=256)  # a node's clients are few, and each sends its certificate every time
def _peer_key(certificate: bytes) -> bytes:
    """The SubjectPublicKeyInfo (DER) of a TLS client certificate (DER)."""
    return _public_key(x509.load_der_x509_certificate(certificate))


def _attributes(signed: etree._Element) -> dict[str, list[etree._Element]]:
    """The AttributeValues of the assertion's AttributeStatements, by attribute Name."""
    found: dict[str, list[etree._Element]] = {}
    for attribute in signed.iterfind(f"{_saml('AttributeStatement')}/{_saml('Attribute')}"):
        found.setdefault(attribute.get("Name", ""), []).extend(attribute.findall(_saml("AttributeValue")))
    return found


def _first(values: list[etree._Element] | None) -> str:
    return next((text for text in map(_text, values or ()) if text), "")


def _codes(values: list[etree._Element] | None, element: str) -> tuple[CE, ...]:
    """Roles or purposes of use: each AttributeValue holds an hl7:Role or hl7:PurposeOfUse
    (an HL7 v3 CE, ITI TF-2 3.40.4.1.2); a plain text value is taken as a bare code."""
    codes = []
    for value in values or ():
        coded = value.find(f"{{{HL7}}}{element}")
        if coded is not None and coded.get("code"):
            codes.append(CE(coded.get("code", ""), coded.get("codeSystem", ""), coded.get("codeSystemName", ""),
                            coded.get("displayName", "")))
        elif _text(value):
            codes.append(CE(_text(value)))
    return tuple(codes)


# -- the dispatcher's check --------------------------------------------------------------------------


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


# A refused assertion's claimed user goes into the audit record as written by whoever sent it;
# cut to this many characters, so that a request cannot make its audit record as large as itself.
_CLAIM_LENGTH = 256


def _claimed(assertion: etree._Element | None) -> events.HumanRequestor | None:
    """Who a refused assertion says its user is, as it says it (none of it was verified): the
    person "authenticated or claimed" of DICOM's User Authentication, with the UserName XUA
    gives a user (ITI TF-2 3.40.4.2); None when it names nobody."""
    if assertion is None:
        return None
    name_id = assertion.find(f"{_saml('Subject')}/{_saml('NameID')}")
    user = _text(name_id)[:_CLAIM_LENGTH]
    if not user:
        return None
    claimed = XUser(user, _text(assertion.find(_saml("Issuer")))[:_CLAIM_LENGTH],
                    (name_id.get("SPProvidedID") or "")[:_CLAIM_LENGTH])
    return events.HumanRequestor(user, claimed.audit_name)


class XuaCheck:
    """The check before every transaction (xds.dispatch): the request's assertion, verified as
    its endpoint's policy asks; the Caller with its user when there is one. A refusal is the
    WS-Security fault, logged and audited: a Security Alert, and, when an assertion was
    presented, the User Authentication that failed."""

    def __init__(self, policy: XuaPolicy, verifier: AssertionVerifier, *, audiences: Collection[str] = (),
                 trail: AuditTrail | None = None, clock: Callable[[], _dt.datetime] = _now) -> None:
        self.policy = policy
        self.verifier = verifier
        self.audiences = tuple(audiences)
        self.trail = trail
        self.clock = clock

    def understood_headers(self, transaction: Transaction) -> tuple[str, ...]:
        """wsse:Security is understood (mustUnderstand) where this check reads it, only."""
        return (SECURITY,) if self.policy.of(transaction.endpoint) != OFF else ()

    def __call__(self, transaction: Transaction, request: SoapRequest, caller: Caller) -> Caller | None:
        policy = self.policy.of(transaction.endpoint)
        if policy == OFF:
            return None
        assertion = None
        try:
            security = security_header(request.header)
            assertion = assertion_in(security) if security is not None else None
            if assertion is not None:
                url = endpoint_url(request.environ)
                verified = serialize(assertion)
                user = self.verifier.verify(assertion, now=self.clock(), audiences=self.audiences or (url,),
                                            peer_certificate=peer_certificate(request.environ), serialized=verified)
        except SecurityFault as fault:
            self._refused(transaction, request, caller, fault, presented=True, assertion=assertion)
            raise
        if assertion is None:
            if policy != REQUIRED:
                return None
            fault = SecurityFault(INVALID_SECURITY, f"{transaction.endpoint} requires an X-User Assertion (ITI-40): "
                                                    "a signed saml2:Assertion in a wsse:Security header")
            self._refused(transaction, request, caller, fault, presented=False)
            raise fault
        return replace(caller, user=user, assertion=verified)

    def _refused(self, transaction: Transaction, request: SoapRequest, caller: Caller, fault: SecurityFault, *,
                 presented: bool, assertion: etree._Element | None = None) -> None:
        """Log and audit a refusal. A Security Alert (DICOM PS3.15 A.5.3.11), Use of Restricted
        Function: a service that asks who the user is was asked without a good answer. When the
        request presented a user's credential (an assertion, or a wsse:Security header this
        server could not take one from), also the User Authentication that failed (110114,
        ITI TF-2 3.40.4.1.3: "the ATNA Audit event for Authentication Failure shall be
        recorded"), naming the user the assertion claims. Outcome 4, minor failure, as for a
        refused TLS peer (xds.serve): this request is refused, nothing is locked."""
        log.info("X-User Assertion refused (%s, MessageID %s, from %s): %s", transaction.name,
                 request.message_id, caller.address or "?", fault.why)
        if self.trail is None or not self.trail.enabled:
            return
        try:
            reason = f"X-User Assertion refused: {fault.why}"
            ctx = events.TransactionContext(
                action=request.action or "", message_id=request.message_id, client_address=caller.address,
                client_certificate=caller.certificate_subject, endpoint_url=endpoint_url(request.environ),
                outcome=events.EventOutcome.MINOR_FAILURE, outcome_description=reason)
            self.trail.record(events.security_alert(ctx, self.trail.source, reason=reason,
                                                    type_code=events.USE_OF_RESTRICTED_FUNCTION), ctx.outcome)
            if presented:
                node.user_authentication(self.trail, replace(ctx, human_requestor=_claimed(assertion)))
        except Exception:  # auditing must not change the answer: the refusal stands
            log.exception("could not audit the refused X-User Assertion (MessageID %s)", request.message_id)


def checks(settings: Settings, trail: AuditTrail | None = None, *, endpoints: Collection[str] | None = None) -> list[XuaCheck]:
    """The XUA check of a server with `settings`, as a list for Dispatcher(checks=...): empty
    when no endpoint reads assertions. Errors in the settings are raised here, at start-up."""
    if endpoints is None:
        endpoints = [endpoint.path.strip("/") for endpoint in ENDPOINTS.values()]
    policy = XuaPolicy.parse(settings.xua_policy, trusted=bool(settings.xua_trusted_certificates),
                             endpoints=endpoints)
    if not policy.reads_assertions:
        return []
    if not settings.xua_trusted_certificates:
        raise ValueError(f"xua_policy {settings.xua_policy!r} reads X-User Assertions: set xua_trusted_certificates "
                         "to the identity providers' signing certificates")
    trusted = tuple(load_trusted_certificates(settings.xua_trusted_certificates))
    if settings.xua_clock_skew < 0:
        raise ValueError("xua_clock_skew must not be negative")
    verifier = AssertionVerifier(trusted, _dt.timedelta(seconds=settings.xua_clock_skew), settings.xua_allow_sha1)
    audiences = [a.strip() for a in settings.xua_audiences.split(",") if a.strip()]
    return [XuaCheck(policy, verifier, audiences=audiences, trail=trail)]
