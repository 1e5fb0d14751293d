"""User Authentication (DICOM 110114) at the X-Service Provider: when the validation of an X-User
Assertion fails, "the ATNA Audit event for Authentication Failure shall be recorded according
to ATNA rules" (ITI TF-2 3.40.4.1.3), ATNA's event for a user's attempt to log on, successful or
not, being DICOM PS3.15 A.5.3.12 User Authentication. Checked against the DICOM audit schema of
the shared conformance data: the writer (xds.audit.events.user_authentication), the check that
records it (xds.security.xua.XuaCheck, through a real audit trail to a UDP socket), and a real
`xds serve` sending it to an Audit Record Repository's socket."""

from __future__ import annotations

import os
import subprocess

import pytest
from lxml import etree

from tests import saml
from tests import submissions as s
from tests.server import XDS, serve
from tests.test_xua import CALLER, URL, Spool, _check, _request, _valid_dicom
from tests.test_xua_http import AuditReceiver, fault_codes, find_documents
from xds.audit import events
from xds.audit.events import AuditSource, HumanRequestor, TransactionContext
from xds.security.wssecurity import SecurityFault
from xds.transactions import ITI_18

SOURCE = AuditSource("KMIX-XDS-1", enterprise_site_id="KMIX")


@pytest.fixture(scope="module")
def idp(tmp_path_factory) -> saml.IdentityProvider:
    return saml.IdentityProvider(tmp_path_factory.mktemp("idp"), "kagawa-idp")


@pytest.fixture
def spool(tmp_path):
    spool = Spool(tmp_path)
    yield spool
    spool.close()


def _event_id(message: etree._Element) -> str:
    return message.find("EventIdentification/EventID").get("csd-code")


def _tampered(idp: saml.IdentityProvider, audience: str = URL, **values) -> etree._Element:
    signed = idp.signed(audience=audience, alias="taro", **values)
    signed.find(f"{{{saml.SAML2}}}Subject/{{{saml.SAML2}}}NameID").text = "director@kagawa-hp.example"
    return signed


# -- the message ------------------------------------------------------------------------------------


def test_a_refused_user_authentication_is_a_valid_dicom_user_authentication_message():
    ctx = TransactionContext(
        client_address="192.0.2.10", endpoint_url=URL, outcome=4, process_id="4242",
        outcome_description="X-User Assertion refused: the signature value does not verify",
        human_requestor=HumanRequestor("yamada.taro@kagawa-hp.example",
                                       "taro<yamada.taro@kagawa-hp.example@https://idp.example/sts>"))
    message = etree.fromstring(events.user_authentication(ctx, SOURCE))
    _valid_dicom(message)
    event = message.find("EventIdentification")
    assert event.attrib["EventActionCode"] == "E" and event.attrib["EventOutcomeIndicator"] == "4"
    assert event.find("EventID").attrib == {"csd-code": "110114", "codeSystemName": "DCM",
                                            "originalText": "User Authentication"}
    assert [t.attrib for t in event.findall("EventTypeCode")] == [
        {"csd-code": "110122", "codeSystemName": "DCM", "originalText": "Login"}]
    assert "does not verify" in event.findtext("EventOutcomeDescription")
    person, node = message.findall("ActiveParticipant")
    assert person.attrib == {"UserID": "yamada.taro@kagawa-hp.example",
                             "UserName": "taro<yamada.taro@kagawa-hp.example@https://idp.example/sts>",
                             "UserIsRequestor": "true", "NetworkAccessPointID": "192.0.2.10",
                             "NetworkAccessPointTypeCode": "2"}
    assert node.attrib == {"UserID": URL, "AlternativeUserID": "4242", "UserIsRequestor": "false",
                           "NetworkAccessPointID": "127.0.0.1", "NetworkAccessPointTypeCode": "2"}
    assert message.find("AuditSourceIdentification").get("AuditSourceID") == "KMIX-XDS-1"
    assert message.find("ParticipantObjectIdentification") is None  # none (A.5.3.12)


def test_without_a_claimed_user_the_person_is_unknown():
    message = etree.fromstring(events.user_authentication(
        TransactionContext(client_address="192.0.2.10", endpoint_url=URL, outcome=4), SOURCE))
    _valid_dicom(message)
    assert message.find("ActiveParticipant[@UserIsRequestor='true']").get("UserID") == "unknown"


def test_whatever_a_client_claims_the_message_stays_well_formed():
    hostile = '"/><EventID csd-code="0"/>\x00\ud800&amp;'
    message = events.user_authentication(TransactionContext(
        client_address=hostile, endpoint_url=hostile, outcome=4, outcome_description=hostile,
        human_requestor=HumanRequestor(hostile, hostile)), SOURCE)
    parsed = etree.fromstring(message)
    _valid_dicom(parsed)
    assert parsed.find("EventIdentification/EventID").get("csd-code") == "110114"
    assert b'EventOutcomeIndicator="0"' not in message


# -- the X-Service Provider records it -----------------------------------------------------------------


def test_a_refused_assertion_is_recorded_as_a_failed_user_authentication_of_its_claimed_user(idp, spool):
    check = _check(idp, "required", trail=spool.trail)
    with pytest.raises(SecurityFault):
        check(ITI_18, _request(saml.security(_tampered(idp))), CALLER)
    alert, authentication = spool.messages(2)
    assert (_event_id(alert), _event_id(authentication)) == ("110113", "110114")
    _valid_dicom(authentication)
    event = authentication.find("EventIdentification")
    assert event.get("EventOutcomeIndicator") == "4"
    assert "changed after it was signed" in event.findtext("EventOutcomeDescription")
    person = authentication.find("ActiveParticipant[@UserIsRequestor='true']")
    # the user the assertion claims, as it claims it (nothing of it was verified)
    assert person.get("UserID") == "director@kagawa-hp.example"
    assert person.get("UserName") == f"taro<director@kagawa-hp.example@{saml.ISSUER}>"
    assert person.get("NetworkAccessPointID") == "192.0.2.10"
    assert person.find("RoleIDCode") is None  # claimed roles are not recorded
    assert authentication.find("ActiveParticipant[@UserIsRequestor='false']").get("UserID") == URL


def test_a_claimed_user_is_cut_to_a_bounded_length(idp, spool):
    check = _check(idp, "required", trail=spool.trail)
    unsigned = idp.assertion(audience=URL, user="y" * 10_000, alias="a" * 10_000)  # refused, its claim recorded
    with pytest.raises(SecurityFault):
        check(ITI_18, _request(saml.security(unsigned)), CALLER)
    _, authentication = spool.messages(2)
    person = authentication.find("ActiveParticipant[@UserIsRequestor='true']")
    assert person.get("UserID") == "y" * 256
    assert person.get("UserName") == f"{'a' * 256}<{'y' * 256}@{saml.ISSUER}>"


def test_a_header_that_holds_no_readable_assertion_is_an_authentication_of_nobody_known(idp, spool):
    check = _check(idp, "required", trail=spool.trail)
    with pytest.raises(SecurityFault):  # two assertions: which one speaks for the user is unknown
        check(ITI_18, _request(saml.security(idp.signed(audience=URL), idp.signed(audience=URL))), CALLER)
    alert, authentication = spool.messages(2)
    assert _event_id(authentication) == "110114"
    assert authentication.find("ActiveParticipant[@UserIsRequestor='true']").get("UserID") == "unknown"


def test_no_assertion_where_one_is_required_is_no_authentication_attempt(idp, spool):
    """Nobody presented a credential: the refusal is the Security Alert alone. A good
    assertion records no User Authentication (the transaction's own record names the user)."""
    check = _check(idp, "required", trail=spool.trail)
    with pytest.raises(SecurityFault):
        check(ITI_18, _request(), CALLER)
    assert check(ITI_18, _request(saml.security(idp.signed(audience=URL))), CALLER).user.name_id == saml.USER
    with pytest.raises(SecurityFault):
        check(ITI_18, _request(saml.security(_tampered(idp))), CALLER)
    assert [_event_id(m) for m in spool.messages(3)] == ["110113", "110113", "110114"]


# -- over HTTP ------------------------------------------------------------------------------------------


def test_xds_serve_sends_the_failed_user_authentication_to_the_audit_record_repository(database_url, tmp_path):
    idp = saml.IdentityProvider(tmp_path / "idp")
    audit = AuditReceiver()
    env = dict(os.environ, XDS_DATA_DIR=str(tmp_path / "var"), XDS_DATABASE_URL=database_url,
               XDS_XUA_POLICY="registry=required", XDS_XUA_TRUSTED_CERTIFICATES=str(idp.certificate),
               XDS_AUDIT_DESTINATIONS=audit.url)
    subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run([*XDS, "patients", "add", s.PATIENT], env=env, check=True, capture_output=True)
    process, base = serve(env, tmp_path / "server.log")
    try:
        url = base + "/registry"
        genuine = idp.signed(audience=url)
        for _ in range(2):  # the second from the worker's cache, if the same worker answers
            status, response = find_documents(url, saml.security(genuine))
            assert status == 200 and response.body.get("status").endswith(":Success")
        status, response = find_documents(url, saml.security(_tampered(idp, audience=url)))
        assert status == 400 and fault_codes(response) == ["env:Sender", "wsse:FailedAuthentication"]
        record = audit.wait_for(lambda m: _event_id(m) == "110114")
        _valid_dicom(record)
        assert record.find("EventIdentification").get("EventOutcomeIndicator") == "4"
        assert record.find("ActiveParticipant[@UserIsRequestor='true']").get("UserID") == "director@kagawa-hp.example"
        assert record.find("ActiveParticipant[@UserIsRequestor='false']").get("UserID") == url
    finally:
        process.terminate()
        process.wait(10)
        audit.socket.close()
