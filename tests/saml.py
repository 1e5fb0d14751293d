"""X-User Assertions the XUA tests make for themselves: an identity provider with a key and a
certificate made by cryptography (RSA or ECDSA), SAML 2.0 assertions with the attributes ITI TF-2
3.40.4.1.2 names, signed by signxml the way identity providers sign them (enveloped, exclusive
C14N, the certificate in KeyInfo), and the wsse:Security header that carries one.

Values are written as given, valid or not: a test about an expired assertion passes its times."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureMethod, XMLSigner
from signxml.algorithms import SignatureConstructionMethod

SAML2 = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
HL7 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
HOLDER_OF_KEY = "urn:oasis:names:tc:SAML:2.0:cm:holder-of-key"

ISSUER = "https://idp.kagawa-mix.example/sts"
USER = "yamada.taro@kagawa-hp.example"
ROLE = ("HCP", "2.16.756.5.30.1.127.3.10.6", "eHealth Suisse EPR Actors", "Healthcare professional")
PURPOSE = ("NORM", "2.16.756.5.30.1.127.3.10.5", "eHealth Suisse Verwendungszweck", "Normal access")
PATIENT = "P1001^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
ATTRIBUTES = {
    "urn:oasis:names:tc:xspa:1.0:subject:subject-id": "山田 太郎",
    "urn:oasis:names:tc:xspa:1.0:subject:organization": "Kagawa Central Hospital",
    "urn:oasis:names:tc:xspa:1.0:subject:organization-id": "urn:oid:1.2.392.200119.6.102.11",
    "urn:ihe:iti:xca:2010:homeCommunityId": "urn:oid:1.2.392.200119.6.102",
    "urn:oasis:names:tc:xacml:2.0:resource:resource-id": PATIENT,
}

_ids = itertools.count(1)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _q(namespace: str, local: str) -> str:
    return f"{{{namespace}}}{local}"


class _Signer(XMLSigner):
    def check_deprecated_methods(self):
        """SHA-1 too: some identity providers still sign with it, and the server must refuse
        them unless told otherwise (signxml's documented way to allow it)."""


class IdentityProvider:
    """An X-Assertion Provider: its key, its self-signed certificate (`certificate`, a PEM file
    for xua_trusted_certificates) and the assertions it signs."""

    def __init__(self, folder: Path, name: str = "idp", *, kind: str = "rsa", valid_days: int = 30,
                 issuer: str = ISSUER):
        self.issuer = issuer
        self.kind = kind
        self.key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xds-affinity tests"),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
        start = now() - dt.timedelta(days=1)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(start).not_valid_after(start + dt.timedelta(days=valid_days))
                     .sign(self.key, hashes.SHA256()))
        folder.mkdir(parents=True, exist_ok=True)
        self.certificate = folder / f"{name}.pem"
        self.certificate.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.private_key = folder / f"{name}.key"
        self.private_key.write_bytes(self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def assertion(self, **values) -> etree._Element:
        """An unsigned assertion of this provider (see `assertion`)."""
        return assertion(issuer=self.issuer, **values)

    def sign(self, element: etree._Element, *, signature_method: SignatureMethod | None = None,
             digest: DigestAlgorithm = DigestAlgorithm.SHA256,
             c14n: CanonicalizationMethod = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
             key_info: bool = True) -> etree._Element:
        """`element` signed as identity providers sign assertions: an enveloped ds:Signature right
        after saml2:Issuer (SAML Core 5.4.1), referring to the assertion's ID."""
        method = signature_method or (SignatureMethod.RSA_SHA256 if self.kind == "rsa" else SignatureMethod.ECDSA_SHA256)
        placeholder = etree.Element(_q(DS, "Signature"), Id="placeholder", nsmap={"ds": DS})
        element.find(_q(SAML2, "Issuer")).addnext(placeholder)
        signer = _Signer(method=SignatureConstructionMethod.enveloped, signature_algorithm=method,
                           digest_algorithm=digest, c14n_algorithm=c14n)
        signed = signer.sign(element, key=self.key, cert=[self.cert] if key_info else None,
                             reference_uri=f"#{element.get('ID')}", id_attribute="ID")
        if not key_info:
            signed.find(f"{_q(DS, 'Signature')}/{_q(DS, 'KeyInfo')}").getparent().remove(
                signed.find(f"{_q(DS, 'Signature')}/{_q(DS, 'KeyInfo')}"))
        return signed

    def signed(self, **values) -> etree._Element:
        return self.sign(self.assertion(**values))


def assertion(*, issuer: str = ISSUER, user: str = USER, alias: str | None = None, audience: str | None = None,
              audiences: tuple[str, ...] | None = None, issued: dt.datetime | None = None,
              not_before: dt.datetime | None = None, not_on_or_after: dt.datetime | None = None,
              conditions: bool = True, method: str = BEARER, confirmation_key: x509.Certificate | None = None,
              attributes: dict[str, str] | None = None, roles=(ROLE,), purposes=(PURPOSE,),
              assertion_id: str | None = None, version: str = "2.0") -> etree._Element:
    """A SAML 2.0 X-User Assertion (ITI TF-2 3.40.4.1.2), valid for five minutes from now unless
    told otherwise; `audience` (or several `audiences`) is what its AudienceRestriction names."""
    moment = now()
    issued = issued or moment
    root = etree.Element(_q(SAML2, "Assertion"), nsmap={"saml2": SAML2, "xsi": XSI},
                         ID=assertion_id or f"_a{next(_ids)}-{moment.timestamp():.0f}", Version=version,
                         IssueInstant=_time(issued))
    etree.SubElement(root, _q(SAML2, "Issuer")).text = issuer
    subject = etree.SubElement(root, _q(SAML2, "Subject"))
    name_id = etree.SubElement(subject, _q(SAML2, "NameID"),
                               Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress")
    name_id.text = user
    if alias is not None:
        name_id.set("SPProvidedID", alias)
    confirmation = etree.SubElement(subject, _q(SAML2, "SubjectConfirmation"), Method=method)
    if confirmation_key is not None:
        data = etree.SubElement(confirmation, _q(SAML2, "SubjectConfirmationData"))
        data.set(_q(XSI, "type"), "saml2:KeyInfoConfirmationDataType")
        key_info = etree.SubElement(data, _q(DS, "KeyInfo"), nsmap={"ds": DS})
        etree.SubElement(etree.SubElement(key_info, _q(DS, "X509Data")), _q(DS, "X509Certificate")).text = (
            base64.b64encode(confirmation_key.public_bytes(serialization.Encoding.DER)).decode())
    if conditions:
        condition = etree.SubElement(root, _q(SAML2, "Conditions"),
                                     NotBefore=_time(not_before or moment - dt.timedelta(seconds=5)),
                                     NotOnOrAfter=_time(not_on_or_after or moment + dt.timedelta(minutes=5)))
        names = audiences if audiences is not None else ((audience,) if audience else ())
        if names:
            restriction = etree.SubElement(condition, _q(SAML2, "AudienceRestriction"))
            for name in names:
                etree.SubElement(restriction, _q(SAML2, "Audience")).text = name
    statement = etree.SubElement(root, _q(SAML2, "AuthnStatement"), AuthnInstant=_time(issued))
    etree.SubElement(etree.SubElement(statement, _q(SAML2, "AuthnContext")), _q(SAML2, "AuthnContextClassRef")).text = (
        "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport")
    statement = etree.SubElement(root, _q(SAML2, "AttributeStatement"))
    for name, value in (ATTRIBUTES if attributes is None else attributes).items():
        attribute = etree.SubElement(statement, _q(SAML2, "Attribute"), Name=name)
        etree.SubElement(attribute, _q(SAML2, "AttributeValue")).text = value
    for name, element, codes in (("urn:oasis:names:tc:xacml:2.0:subject:role", "Role", roles),
                                 ("urn:oasis:names:tc:xspa:1.0:subject:purposeofuse", "PurposeOfUse", purposes)):
        if not codes:
            continue
        attribute = etree.SubElement(statement, _q(SAML2, "Attribute"), Name=name)
        for code, system, system_name, display in codes:
            value = etree.SubElement(attribute, _q(SAML2, "AttributeValue"))
            coded = etree.SubElement(value, _q(HL7, element), nsmap={"hl7": HL7}, code=code, codeSystem=system,
                                     codeSystemName=system_name, displayName=display)
            coded.set(_q(XSI, "type"), "CE")
    return root


def security(*assertions: etree._Element, must_understand: bool = True, role: str | None = None) -> etree._Element:
    """A wsse:Security header block holding `assertions` (each copied, so a test can send one twice)."""
    block = etree.Element(_q(WSSE, "Security"), nsmap={"wsse": WSSE, "env": SOAP12})
    if must_understand:
        block.set(_q(SOAP12, "mustUnderstand"), "true")
    if role is not None:
        block.set(_q(SOAP12, "role"), role)
    for element in assertions:
        block.append(etree.fromstring(etree.tostring(element)))
    return block
