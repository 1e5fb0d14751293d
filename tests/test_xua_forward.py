"""The repository's own ITI-42 carries its client's X-User Assertion (xds.repository.registration):
a Document Repository that registers with a remote registry (registry_url) conveys the assertion
it verified on the ITI-41 to that registry, byte for byte, in a wsse:Security header marked
mustUnderstand; without one it adds none.

The registry is a real `xds serve` with xua_policy = required and the test identity provider's
certificate (tests/saml.py), auditing to a UDP socket as an Audit Record Repository would. The
repository is the whole server in-process (xds.app, called as WSGI), xua_policy optional, its
registry_url a tap in front of the registry: an HTTP relay that keeps each request's bytes and
passes it on unchanged, so the test sees what the repository sent and the registry answers it."""

from __future__ import annotations

import datetime as dt
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from lxml import etree

from tests import saml
from tests.soap_helpers import call, environ
from tests.test_repository_support import RS, pnr_request, start_server, stop_server
from tests.test_xua_http import AuditReceiver
from xds.app import Server
from xds.config import Settings
from xds.repository.blobs import INCOMING, FileBlobStore
from xds.soap import build_envelope, parse_response
from xds.store import db
from xds.transactions import ITI_41

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSSE = saml.WSSE
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
SUBMISSION_SET_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
REPOSITORY = "1.2.392.200119.6.102.9"
#: The host the in-process repository is called by, so its endpoint URL (an audience).
HOST = "xds.test"
REPOSITORY_URL = f"http://{HOST}/repository"


class Tap(ThreadingHTTPServer):
    """An HTTP relay to `target`: keeps each POST's body, forwards it with its Content-Type, and
    answers with what the target answered."""

    daemon_threads = True

    def __init__(self, target: str):
        super().__init__(("127.0.0.1", 0), _Relay)
        self.target = target
        self.bodies: list[bytes] = []
        self.url = f"http://127.0.0.1:{self.server_port}"


class _Relay(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append(body)
        request = urllib.request.Request(self.server.target + self.path, data=body,
                                         headers={"Content-Type": self.headers["Content-Type"]})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                status, content_type, data = answer.status, answer.headers["Content-Type"], answer.read()
        except urllib.error.HTTPError as exc:
            status, content_type, data = exc.code, exc.headers["Content-Type"], exc.read()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    return saml.IdentityProvider(tmp_path_factory.mktemp("idp"), "forward-idp")


@pytest.fixture(scope="module")
def registry(tmp_path_factory, idp):
    """`xds serve`, XUA required everywhere, its audit records received here; and the tap in
    front of its /registry."""
    audit = AuditReceiver()
    running = start_server("sqlite", tmp_path_factory.mktemp("registry"), extra_env={
        "XDS_XUA_POLICY": "required", "XDS_XUA_TRUSTED_CERTIFICATES": str(idp.certificate),
        "XDS_AUDIT_DESTINATIONS": audit.url})
    tap = Tap(running.base)
    thread = threading.Thread(target=tap.serve_forever, daemon=True)
    thread.start()
    yield running, tap, audit
    tap.shutdown()
    tap.server_close()
    stop_server(running)
    audit.socket.close()


def repository(folder, tap: Tap, idp, **values):
    """The whole server in-process, registering with the registry through the tap."""
    settings = Settings(data_dir=folder, repository_unique_id=REPOSITORY, registry_url=f"{tap.url}/registry",
                        xua_policy="optional", xua_trusted_certificates=str(idp.certificate), **values)
    db.upgrade(settings.database)
    return Server(settings)


def close(server: Server) -> None:
    server.audit.close()
    server.engine.dispose()


def provide(server: Server, request: etree._Element, *header_blocks):
    """ITI-41 to the in-process repository: the envelope sent, and the answer's RegistryResponse."""
    data = build_envelope(request, ITI_41.action, to=REPOSITORY_URL, header_blocks=header_blocks)
    answer = call(server, environ(data, f'application/soap+xml; charset=UTF-8; action="{ITI_41.action}"',
                                  PATH_INFO="/repository", HTTP_HOST=HOST, REMOTE_ADDR="127.0.0.1"))
    return data, parse_response(answer.content_type, answer.body).body


def submission(content: bytes) -> tuple[etree._Element, str, str]:
    """An ITI-41 request of one document: it, its uniqueId and its submission set's uniqueId."""
    request, ids = pnr_request([("Document01", content, "text/plain")], inline=True)
    ss_unique_id = request.xpath("//rim:ExternalIdentifier[@identificationScheme=$scheme]/@value",
                                 namespaces={"rim": RIM}, scheme=SUBMISSION_SET_UNIQUE_ID)[0]
    return request, ids["Document01"], ss_unique_id


def errors(response: etree._Element) -> list[tuple[str, str]]:
    return [(e.get("errorCode"), e.get("codeContext")) for e in response.iter(f"{{{RS}}}RegistryError")]


def kept(server: Server, unique_id: str) -> bool:
    """Whether the repository holds the document, or anything of it in its staging folder."""
    documents = server.settings.documents_dir
    staging = documents / INCOMING
    return FileBlobStore(documents).get(unique_id) is not None or (staging.exists() and any(staging.iterdir()))


def _iti_42_record(ss_unique_id: str):
    """The audit record of the ITI-42 of this submission set."""
    def matches(message: etree._Element) -> bool:
        return (any(code.get("csd-code") == "ITI-42" for code in message.iterfind("EventIdentification/EventTypeCode"))
                and message.find(f"ParticipantObjectIdentification[@ParticipantObjectID='{ss_unique_id}']") is not None)
    return matches


def test_the_users_assertion_goes_with_the_registration_as_it_was_verified(registry, idp, tmp_path):
    running, tap, registry_audit = registry
    repository_audit = AuditReceiver()
    server = repository(tmp_path / "repository", tap, idp, audit_destinations=repository_audit.url)
    try:
        # One assertion names both endpoints it will reach: the repository the user calls, and
        # the registry the repository registers with on the user's behalf.
        assertion = idp.signed(audiences=(REPOSITORY_URL, f"{running.base}/registry"), alias="taro")
        # Beside it a block for another node, with another user's assertion: not the
        # repository's to read (SOAP 1.2 role), so not one it may pass on either.
        other = idp.signed(audience=REPOSITORY_URL, user="someone.else@kagawa-hp.example")
        request, unique_id, ss_unique_id = submission(b"referral letter, forwarded")
        sent, response = provide(server, request, saml.security(assertion),
                                 saml.security(other, role="urn:example:another-node"))
        assert response.get("status").endswith(":Success"), etree.tostring(response)
        assert FileBlobStore(server.settings.documents_dir).get(unique_id) is not None
        assert running.entry(unique_id).repository_unique_id == REPOSITORY

        # What went to the registry: one wsse:Security block, for the next node, mustUnderstand,
        # holding the assertion the repository verified, as the bytes that element serializes
        # to on its own in the request received (namespace declarations it inherits there and
        # all): a copy rebuilt in another tree would not be these bytes.
        (forwarded,) = tap.bodies[-1:]
        received = etree.fromstring(sent).find(f"{{{SOAP12}}}Header/{{{WSSE}}}Security/{{{saml.SAML2}}}Assertion")
        verified = etree.tostring(received, with_tail=False)
        assert verified in forwarded
        header = etree.fromstring(forwarded).find(f"{{{SOAP12}}}Header")
        (block,) = header.findall(f"{{{WSSE}}}Security")
        assert block.get(f"{{{SOAP12}}}mustUnderstand") == "true" and block.get(f"{{{SOAP12}}}role") is None
        (conveyed,) = block
        assert conveyed.get("ID") == assertion.get("ID")
        assert b"someone.else" not in forwarded

        # The registry verified it and names the user as the human requestor of its ITI-42
        # record; the repository's record of the ITI-42 it sent names the same user.
        for audit in (registry_audit, repository_audit):
            record = audit.wait_for(_iti_42_record(ss_unique_id))
            person = record.find(f"ActiveParticipant[@UserID='{saml.USER}']")
            assert person is not None and person.get("UserIsRequestor") == "true"
            assert person.get("UserName") == f"taro<{saml.USER}@{saml.ISSUER}>"
            assert record.find("EventIdentification/PurposeOfUse").get("csd-code") == "NORM"
    finally:
        close(server)
        repository_audit.socket.close()


def test_without_an_assertion_none_is_sent_and_the_registry_refuses(registry, idp, tmp_path):
    """xua_policy optional at the repository: a request without an assertion is taken, and its
    ITI-42 carries none. The registry requires one: its WS-Security fault is the ITI-41's
    XDSRegistryError, and the repository keeps nothing."""
    running, tap, _ = registry
    server = repository(tmp_path / "repository", tap, idp)
    try:
        request, unique_id, _ = submission(b"referral letter, no user")
        count = len(tap.bodies)
        _, response = provide(server, request)
        assert response.get("status").endswith(":Failure")
        ((code, context),) = errors(response)
        assert code == "XDSRegistryError"
        assert "requires an X-User Assertion" in context and "wsse:Security" in context
        assert len(tap.bodies) == count + 1 and b"Security" not in tap.bodies[-1]
        assert not kept(server, unique_id)
        assert running.entry(unique_id) is None
    finally:
        close(server)


def test_an_assertion_that_expires_between_the_two_hops_is_the_registrys_refusal(registry, idp, tmp_path):
    """The registry verifies the assertion again, with its own clock: one the repository still
    took (here by a clock skew of an hour) and the registry holds expired fails the ITI-41 with
    the registry's reason, nothing stored."""
    running, tap, _ = registry
    server = repository(tmp_path / "repository", tap, idp, xua_clock_skew=3600)
    try:
        now = dt.datetime.now(dt.UTC)
        assertion = idp.signed(audiences=(REPOSITORY_URL, f"{running.base}/registry"),
                               not_before=now - dt.timedelta(minutes=20),
                               not_on_or_after=now - dt.timedelta(minutes=10))
        request, unique_id, _ = submission(b"referral letter, late")
        _, response = provide(server, request, saml.security(assertion))
        ((code, context),) = errors(response)
        assert code == "XDSRegistryError" and "has expired" in context
        assert f'ID="{assertion.get("ID")}"'.encode() in tap.bodies[-1]  # it was conveyed, and refused there
        assert not kept(server, unique_id)
        assert running.entry(unique_id) is None
    finally:
        close(server)
