"""The verified-assertion cache of XUA (xds.security.xua.VerifiedAssertions): an assertion is
verified once per worker, kept by its ID and the SHA-256 of the exact bytes verified, and the
cache never lets a changed assertion through, never outlives the assertion or the certificate
that verified it, and leaves every check that depends on the request to the request.

The proof of "never a changed assertion": each change below is made to an assertion the cache
already holds, and the cached verifier must answer exactly what a verifier without a cache
answers (the same user, or the same fault), by verifying it afresh (a miss). Changes that keep
the signature valid (an attribute order, a comment, a namespace declaration) are accepted by
both, as what was signed did not change; the others are refused by both.

Assertions are made and signed by tests/saml.py's identity providers, and reach the verifier
as the server hands them over: inside a wsse:Security header of a parsed SOAP envelope."""

from __future__ import annotations

import copy
import datetime as dt
import threading
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from tests import saml
from tests.certs import CertificateAuthority
from xds.security.caller import XUser
from xds.security.wssecurity import (
    FAILED_AUTHENTICATION,
    INVALID_SECURITY_TOKEN,
    SecurityFault,
    assertion_in,
    security_header,
)
from xds.security.xua import CACHE_SIZE, AssertionVerifier, VerifiedAssertions
from xds.soap import build_envelope, parse_message

URL = "http://127.0.0.1:8080/registry"
OTHER_URL = "http://127.0.0.1:8080/repository"
SAML2, DS = saml.SAML2, saml.DS
SKEW = dt.timedelta(seconds=60)


@pytest.fixture(scope="module")
def idp(tmp_path_factory) -> saml.IdentityProvider:
    return saml.IdentityProvider(tmp_path_factory.mktemp("idp"), "kagawa-idp")


@pytest.fixture(scope="module")
def rogue(tmp_path_factory) -> saml.IdentityProvider:
    return saml.IdentityProvider(tmp_path_factory.mktemp("rogue"), "rogue-idp")


def received(assertion: etree._Element) -> etree._Element:
    """`assertion` as the server finds it: in the wsse:Security header of a parsed envelope."""
    request = parse_message("application/soap+xml", build_envelope(
        etree.Element("{urn:x}Query"), "urn:x:Query", header_blocks=[saml.security(assertion)]))
    return assertion_in(security_header(request.header))


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Verdict:
    """What a verifier said: the user, or the fault's subcode and reason."""

    user: XUser | None = None
    fault: tuple[str, str] | None = None


def verdict(verifier: AssertionVerifier, assertion: etree._Element, *, at: dt.datetime | None = None,
            audiences=(URL,), peer_certificate: bytes | None = None) -> Verdict:
    try:
        return Verdict(user=verifier.verify(received(assertion), now=at or now(), audiences=audiences,
                                            peer_certificate=peer_certificate))
    except SecurityFault as fault:
        return Verdict(fault=(fault.subcode, fault.why))


def counts(verifier: AssertionVerifier) -> tuple[int, int]:
    return verifier.cache.hits, verifier.cache.misses


# -- once verified, served from the cache ------------------------------------------------------------


def test_an_assertion_is_verified_once_and_then_served_from_the_cache(idp):
    verifier = AssertionVerifier((idp.cert,))
    signed = idp.signed(audience=URL)
    first = verdict(verifier, signed)
    assert first.user is not None and first.user.name_id == saml.USER
    assert counts(verifier) == (0, 1) and len(verifier.cache) == 1
    for _ in range(3):
        assert verdict(verifier, signed) == first  # the same user, from the cache
    assert counts(verifier) == (3, 1)


def test_a_refused_assertion_is_not_kept(idp, rogue):
    verifier = AssertionVerifier((idp.cert,))
    for _ in range(2):
        assert verdict(verifier, rogue.signed(audience=URL)).fault[0] == FAILED_AUTHENTICATION
    assert len(verifier.cache) == 0 and counts(verifier) == (0, 2)


# -- a changed assertion is never served from the cache ---------------------------------------------


def _name_id(a):
    a.find(f"{{{SAML2}}}Subject/{{{SAML2}}}NameID").text = "director@kagawa-hp.example"


def _subject_id(a):
    """One XUA attribute's value changed (subject-id)."""
    value = a.find(f"{{{SAML2}}}AttributeStatement/{{{SAML2}}}Attribute/{{{SAML2}}}AttributeValue")
    value.text = "院長"


def _role_code(a):
    """One XML attribute changed: the hl7:Role's code."""
    a.find(f".//{{{saml.HL7}}}Role").set("code", "ADMIN")


def _audience(a):
    a.find(f".//{{{SAML2}}}Audience").text = OTHER_URL


def _not_on_or_after(a):
    a.find(f"{{{SAML2}}}Conditions").set("NotOnOrAfter", "2099-01-01T00:00:00.000Z")


def _signature_value(a):
    """One character of the signature value changed (still base64)."""
    value = a.find(f"{{{DS}}}Signature/{{{DS}}}SignatureValue")
    text = value.text.strip()
    value.text = ("B" if text[0] == "A" else "A") + text[1:]


def _digest_value(a):
    value = a.find(f".//{{{DS}}}DigestValue")
    text = value.text.strip()
    value.text = ("B" if text[0] == "A" else "A") + text[1:]


def _signature_removed(a):
    a.remove(a.find(f"{{{DS}}}Signature"))


def _id_changed(a):
    a.set("ID", a.get("ID") + "-2")


def _attribute_added(a):
    statement = a.find(f"{{{SAML2}}}AttributeStatement")
    statement.append(copy.deepcopy(statement[-1]))


def _attributes_reordered(a):
    """The assertion's XML attributes in another order: another serialization, the same
    canonical form (C14N sorts attributes), so the signature still holds."""
    values = list(a.attrib.items())
    a.attrib.clear()
    for name, value in reversed(values):
        a.set(name, value)
    assert list(a.attrib) != [name for name, _ in values]


def _comment_in_name_id(a):
    """A comment inside the NameID: exclusive C14N without comments ignores it."""
    name_id = a.find(f"{{{SAML2}}}Subject/{{{SAML2}}}NameID")
    text = name_id.text
    name_id.text = text[:6]
    comment = etree.Comment("x")
    comment.tail = text[6:]
    name_id.append(comment)


def _namespace_declared(a):
    """An unused namespace declaration more: exclusive C14N leaves it out."""
    wrapper = etree.Element(a.tag, nsmap={**a.nsmap, "unused": "urn:x:unused"})
    wrapper.attrib.update(a.attrib)
    wrapper.text = a.text
    wrapper.extend(list(a))
    return wrapper


# (change, refused with, or None: what was signed is unchanged and both accept it)
CHANGES = [
    (_name_id, FAILED_AUTHENTICATION),
    (_subject_id, FAILED_AUTHENTICATION),
    (_role_code, FAILED_AUTHENTICATION),
    (_audience, FAILED_AUTHENTICATION),
    (_not_on_or_after, FAILED_AUTHENTICATION),
    (_attribute_added, FAILED_AUTHENTICATION),
    (_signature_value, FAILED_AUTHENTICATION),
    (_digest_value, FAILED_AUTHENTICATION),
    (_id_changed, FAILED_AUTHENTICATION),
    (_signature_removed, INVALID_SECURITY_TOKEN),
    (_attributes_reordered, None),
    (_comment_in_name_id, None),
    (_namespace_declared, None),
]


@pytest.mark.parametrize("change, refused_with", CHANGES, ids=[c.__name__.strip("_") for c, _ in CHANGES])
def test_a_changed_assertion_misses_the_cache_and_gets_the_verdict_of_no_cache(idp, change, refused_with):
    verifier = AssertionVerifier((idp.cert,))
    genuine = idp.signed(audience=URL)
    assert verdict(verifier, genuine).user is not None  # now in the cache
    changed = copy.deepcopy(genuine)
    replaced = change(changed)
    changed = changed if replaced is None else replaced
    assert etree.tostring(changed) != etree.tostring(genuine)

    hits, misses = counts(verifier)
    cached = verdict(verifier, changed)
    assert counts(verifier) == (hits, misses + 1), "a changed assertion was served from the cache"
    assert cached == verdict(AssertionVerifier((idp.cert,), cache_size=0), changed)
    if refused_with is None:
        assert cached.user == verdict(verifier, genuine).user  # what was signed, whole
    else:
        assert cached.fault[0] == refused_with, cached
    # the genuine assertion is still served from the cache, and still the same
    assert verdict(verifier, genuine).user.name_id == saml.USER


def test_the_key_is_the_exact_bytes_verified(idp):
    """Two copies of one signed assertion received in envelopes that differ around it are the
    same bytes once serialized alone (the envelope's declarations in scope are written in):
    one entry. The same ID with other bytes is another entry."""
    verifier = AssertionVerifier((idp.cert,))
    genuine = idp.signed(audience=URL)
    assert verdict(verifier, genuine).user
    assert verdict(verifier, copy.deepcopy(genuine)).user
    assert counts(verifier) == (1, 1)
    reordered = copy.deepcopy(genuine)
    _attributes_reordered(reordered)
    assert verdict(verifier, reordered).user
    assert counts(verifier) == (1, 2) and len(verifier.cache) == 2


# -- what depends on the request or the time is checked on every request ------------------------------


def test_an_assertion_past_not_on_or_after_is_refused_though_it_is_in_the_cache(idp):
    verifier = AssertionVerifier((idp.cert,))
    start = now().replace(microsecond=0)
    end = start + dt.timedelta(minutes=5)
    signed = idp.signed(audience=URL, not_before=start - dt.timedelta(seconds=5), not_on_or_after=end)
    assert verdict(verifier, signed, at=start).user
    # within the clock skew after its end: still accepted, from the cache
    assert verdict(verifier, signed, at=end + SKEW - dt.timedelta(seconds=1)).user
    assert counts(verifier) == (1, 1)
    # past it: refused; the entry has expired and leaves, and the verification again refuses
    late = verdict(verifier, signed, at=end + SKEW)
    assert late.fault[0] == INVALID_SECURITY_TOKEN and "has expired" in late.fault[1]
    assert counts(verifier) == (1, 2) and len(verifier.cache) == 0


def test_the_validity_window_of_a_cached_assertion_is_checked_against_each_request_time(idp):
    verifier = AssertionVerifier((idp.cert,))
    start = now()
    signed = idp.signed(audience=URL, issued=start - dt.timedelta(minutes=10), not_before=start,
                        not_on_or_after=start + dt.timedelta(hours=1))
    assert verdict(verifier, signed, at=start).user
    early = verdict(verifier, signed, at=start - dt.timedelta(minutes=2))
    assert early.fault[0] == INVALID_SECURITY_TOKEN and "not valid yet" in early.fault[1]
    assert counts(verifier) == (1, 1)  # the cached assertion, judged at this request's time
    assert verdict(verifier, signed, at=start + dt.timedelta(minutes=30)).user


def test_the_audience_of_a_cached_assertion_is_checked_against_each_endpoint(idp):
    verifier = AssertionVerifier((idp.cert,))
    signed = idp.signed(audience=URL)
    assert verdict(verifier, signed).user
    elsewhere = verdict(verifier, signed, audiences=(OTHER_URL,))
    assert elsewhere.fault[0] == INVALID_SECURITY_TOKEN and OTHER_URL in elsewhere.fault[1]
    assert counts(verifier) == (1, 1)
    assert verdict(verifier, signed, audiences=("HTTP://127.0.0.1:8080/registry/",)).user  # compared as URLs


def test_holder_of_key_of_a_cached_assertion_is_checked_against_each_tls_client(idp, tmp_path):
    ca = CertificateAuthority(tmp_path / "pki")
    a, b = ca.issue("hospital-a"), ca.issue("hospital-b")

    def der(node) -> bytes:
        return x509.load_pem_x509_certificate(node.certificate.read_bytes()).public_bytes(serialization.Encoding.DER)

    verifier = AssertionVerifier((idp.cert,))
    signed = idp.signed(audience=URL, method=saml.HOLDER_OF_KEY,
                        confirmation_key=x509.load_pem_x509_certificate(a.certificate.read_bytes()))
    assert verdict(verifier, signed, peer_certificate=der(a)).user
    for peer, why in ((der(b), "not the key of the TLS client certificate"), (None, "without a TLS client")):
        refused = verdict(verifier, signed, peer_certificate=peer)
        assert refused.fault[0] == FAILED_AUTHENTICATION and why in refused.fault[1]
    assert verdict(verifier, signed, peer_certificate=der(a)).user
    assert counts(verifier) == (3, 1)


def test_an_entry_does_not_outlive_the_certificate_that_verified_it(idp):
    """signxml checks the identity provider's certificate while verifying; after the
    certificate's end the assertion is verified again rather than served."""
    verifier = AssertionVerifier((idp.cert,))
    start = now()
    end = idp.cert.not_valid_after_utc
    signed = idp.signed(audience=URL, not_on_or_after=end + dt.timedelta(days=10))
    assert verdict(verifier, signed, at=start).user
    assert verdict(verifier, signed, at=end - dt.timedelta(seconds=1)).user
    assert counts(verifier) == (1, 1)
    verdict(verifier, signed, at=end)  # signxml judges the certificate at the real time
    assert counts(verifier) == (1, 2)


def test_each_verifier_has_its_own_cache(idp, rogue):
    """An entry is only as good as its verifier's trusted certificates: a verifier that trusts
    other providers does not see it (and the cache is not a parameter that could be shared)."""
    trusting, distrusting = AssertionVerifier((idp.cert,)), AssertionVerifier((rogue.cert,))
    signed = idp.signed(audience=URL)
    assert verdict(trusting, signed).user
    assert verdict(distrusting, signed).fault[0] == FAILED_AUTHENTICATION
    assert trusting.cache is not distrusting.cache
    with pytest.raises(TypeError):
        AssertionVerifier((idp.cert,), cache=trusting.cache)


# -- bounded, least recently used out ----------------------------------------------------------------


def test_the_cache_is_bounded_and_the_least_recently_used_leaves_first(idp):
    verifier = AssertionVerifier((idp.cert,), cache_size=3)
    assertions = [idp.signed(audience=URL, user=f"user{i}@kagawa-hp.example") for i in range(5)]
    for assertion in assertions[:3]:
        verdict(verifier, assertion)
    verdict(verifier, assertions[0])  # used again: now the most recent
    for assertion in assertions[3:]:
        verdict(verifier, assertion)  # evicts 1, then 2
    assert len(verifier.cache) == 3 and counts(verifier) == (1, 5)
    for kept in (assertions[0], assertions[3], assertions[4]):
        verdict(verifier, kept)
    assert counts(verifier) == (4, 5)
    assert verdict(verifier, assertions[1]).user.name_id == "user1@kagawa-hp.example"
    assert counts(verifier) == (4, 6)


def test_a_cache_of_size_zero_keeps_nothing(idp):
    verifier = AssertionVerifier((idp.cert,), cache_size=0)
    signed = idp.signed(audience=URL)
    for _ in range(3):
        assert verdict(verifier, signed).user
    assert len(verifier.cache) == 0 and counts(verifier) == (0, 3)


def test_the_default_bound():
    assert VerifiedAssertions().size == CACHE_SIZE == AssertionVerifier(()).cache.size


# -- threads: gthread workers verify in 16 threads at once ------------------------------------------------


@pytest.mark.parametrize("size", [CACHE_SIZE, 2])
def test_sixteen_threads_get_the_right_verdicts_and_the_bound_holds(idp, size):
    """16 threads at once, each verifying good assertions of four users and changed copies of
    them, through one verifier (with room for all, and with room for two: evictions under
    contention): every good one gives its own user, every changed one is refused."""
    verifier = AssertionVerifier((idp.cert,), cache_size=size)
    users = [f"user{i}@kagawa-hp.example" for i in range(4)]
    good = [received(idp.signed(audience=URL, user=user)) for user in users]
    changed = []
    for user in users:
        assertion = idp.signed(audience=URL, user=user)
        _role_code(assertion)
        changed.append(received(assertion))
    rounds, threads = 12, 16
    start = threading.Barrier(threads)
    problems: list[str] = []

    def work(index: int) -> None:
        start.wait()
        for round_ in range(rounds):
            k = (index + round_) % len(users)
            try:
                user = verifier.verify(good[k], now=now(), audiences=(URL,))
                if user.name_id != users[k]:
                    problems.append(f"{users[k]} answered as {user.name_id}")
            except SecurityFault as fault:
                problems.append(f"{users[k]} refused: {fault.why}")
            try:
                verifier.verify(changed[k], now=now(), audiences=(URL,))
                problems.append(f"a changed assertion of {users[k]} was accepted")
            except SecurityFault as fault:
                if fault.subcode != FAILED_AUTHENTICATION:
                    problems.append(f"a changed assertion refused with {fault.subcode}")

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert not any(worker.is_alive() for worker in workers)
    assert problems == []
    hits, misses = counts(verifier)
    assert hits + misses == threads * rounds * 2
    assert len(verifier.cache) <= min(size, len(users))
    assert hits > 0  # the good assertions were served from the cache
