"""The way in (xds.dispatch) and the table of transactions (xds.transactions): every
transaction is served from its row, the Caller is made once, the checks run before the actor and
the hooks after it, each reading the actor's Result; an unexpected failure is answered with the
row's XDS error, never a stack trace."""

from __future__ import annotations

import pathlib
import re
from dataclasses import replace

import pytest
from lxml import etree

from xds import config
from xds.app import create_app
from xds.dispatch import Dispatcher
from xds.ebrim import ns
from xds.result import Result
from xds.rules import error
from xds.security.caller import Caller, XUser
from xds.soap import SoapEndpoint, SoapFault, build_envelope
from xds.transactions import BY_ACTION, ENDPOINTS, ITI_18, ITI_42, ITI_43, ITI_62, ITI_86, TRANSACTIONS, served_at

try:
    from tests.soap_helpers import call, environ
except ImportError:  # tests/ is not a package: pytest put the folder itself on sys.path
    from soap_helpers import call, environ

XDS = pathlib.Path(__file__).resolve().parent.parent / "xds"
MESSAGE_ID = "urn:uuid:0f4b7a52-0000-4000-8000-0000000d15ba"


class Registry:
    """A Document Registry service that answers ITI-42 as it is told."""

    def __init__(self, answer):
        self.answer = answer
        self.callers: list[Caller] = []

    def register_document_set(self, request, caller):
        self.callers.append(caller)
        return self.answer(request)


def _serve(dispatcher: Dispatcher, transaction=ITI_42, **env):
    endpoint = SoapEndpoint(dispatcher.actions([transaction]))
    body = build_envelope(etree.Element("{urn:x}Request"), transaction.action, message_id=MESSAGE_ID)
    return call(endpoint, environ(body, f'application/soap+xml; charset=UTF-8; action="{transaction.action}"',
                                  REMOTE_ADDR="192.0.2.10", **env))


def test_the_result_is_answered_and_given_to_the_hooks_after():
    refusal = error("patient.unknown", "SubmissionSet01", patient="P1^^^&1.2&ISO")
    seen = []
    registry = Registry(lambda request: Result([refusal], patient_id="P1^^^&1.2&ISO"))
    dispatcher = Dispatcher({"DocumentRegistry": registry},
                            after=[lambda t, request, caller, result: seen.append((t, caller, result))])
    answer = _serve(dispatcher)
    assert answer.status == 200 and answer.message.action == ITI_42.response_action
    assert answer.message.body.get("status") == ns.FAILURE
    assert [e.get("errorCode") for e in answer.message.body.iter(f"{{{ns.RS}}}RegistryError")] == ["XDSUnknownPatientId"]
    ((transaction, caller, result),) = seen
    assert transaction is ITI_42 and result.patient_id == "P1^^^&1.2&ISO" and result.status == ns.FAILURE
    assert caller == Caller(address="192.0.2.10") and registry.callers == [caller]


def test_an_unexpected_failure_is_the_rows_xds_error_and_no_stack_trace(caplog):
    def broken(request):
        raise RuntimeError("secret internals")

    seen = []
    dispatcher = Dispatcher({"DocumentRegistry": Registry(broken)}, after=[lambda *done: seen.append(done[-1])])
    answer = _serve(dispatcher)
    assert answer.status == 200
    (registry_error,) = answer.message.body.iter(f"{{{ns.RS}}}RegistryError")
    assert registry_error.get("errorCode") == "XDSRegistryError" and MESSAGE_ID in registry_error.get("codeContext")
    assert b"secret internals" not in answer.body and "secret internals" in caplog.text
    assert seen[0].status == ns.FAILURE  # a failure is audited like any answer


def test_without_an_internal_error_rule_a_failure_is_a_receiver_fault():
    class Repository:
        def retrieve_document_set(self, request, caller):
            raise RuntimeError("secret internals")

    answer = _serve(Dispatcher({"DocumentRepository": Repository()}), ITI_43)
    assert answer.status == 500 and answer.fault_code()[0].endswith("Receiver")
    assert b"secret internals" not in answer.body


def test_a_soap_fault_of_the_actor_goes_to_the_client_as_it_is():
    def fault(request):
        raise SoapFault("Sender", "xop:Include refers to 'cid:x', which is not a part of the message")

    answer = _serve(Dispatcher({"DocumentRegistry": Registry(fault)}))
    assert answer.status == 400 and "cid:x" in answer.fault_reason()


def test_a_check_before_can_refuse_and_the_actor_is_not_asked():
    def refuse(transaction, request, caller):
        raise SoapFault("Sender", f"{caller.address} may not {transaction.title}")

    registry = Registry(lambda request: Result())
    answer = _serve(Dispatcher({"DocumentRegistry": registry}, checks=[refuse]))
    assert answer.status == 400 and "192.0.2.10 may not Register Document Set-b" in answer.fault_reason()
    assert registry.callers == []


def test_a_check_may_say_who_the_caller_is_and_everyone_after_it_is_told():
    """XUA's check returns the Caller with its user; the checks after it, the actor and the
    hooks after the actor all get that Caller. A check returning None leaves it as it was."""
    user = XUser(name_id="yamada@kagawa-hp.example", issuer="https://idp.example")
    seen_by_check, after = [], []
    registry = Registry(lambda request: Result())
    dispatcher = Dispatcher({"DocumentRegistry": registry},
                            checks=[lambda t, request, caller: replace(caller, user=user),
                                    lambda t, request, caller: seen_by_check.append(caller)],
                            after=[lambda t, request, caller, result: after.append(caller)])
    assert _serve(dispatcher).status == 200
    expected = Caller(address="192.0.2.10", user=user)
    assert seen_by_check == [expected] and registry.callers == [expected] and after == [expected]


def test_header_blocks_a_check_reads_are_understood_for_its_transactions_only():
    """A check that processes a header block (XUA: wsse:Security) makes it understood when it is
    marked mustUnderstand, for the transactions it says; elsewhere it is a MustUnderstand fault."""
    security = "{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd}Security"

    class ReadsSecurity:
        def understood_headers(self, transaction):
            return (security,) if transaction.endpoint == "/registry" else ()

        def __call__(self, transaction, request, caller):
            return None

    dispatcher = Dispatcher({"DocumentRegistry": Registry(lambda request: Result()), "DocumentRepository": object()},
                            checks=[ReadsSecurity()])
    assert dispatcher.handler(ITI_42).understood_headers == {security}
    assert Dispatcher({"DocumentRegistry": Registry(lambda request: Result())}).handler(
        ITI_42).understood_headers == frozenset()
    block = etree.Element(security, nsmap={"wsse": security[1:].split("}")[0]})
    block.set("{http://www.w3.org/2003/05/soap-envelope}mustUnderstand", "true")
    endpoint = SoapEndpoint(dispatcher.actions([ITI_42]))
    body = build_envelope(etree.Element("{urn:x}Request"), ITI_42.action, header_blocks=[block])
    assert call(endpoint, environ(body, f'application/soap+xml; action="{ITI_42.action}"')).status == 200
    endpoint = SoapEndpoint(Dispatcher({"DocumentRegistry": Registry(lambda request: Result())}).actions([ITI_42]))
    refused = call(endpoint, environ(body, f'application/soap+xml; action="{ITI_42.action}"'))
    assert refused.status == 500 and refused.fault_code() == ["env:MustUnderstand"]


def test_an_actor_without_the_handler_of_its_row_fails_at_start():
    with pytest.raises(AttributeError):
        Dispatcher({"DocumentRegistry": object()}).actions([ITI_42])
    with pytest.raises(KeyError):
        Dispatcher({}).actions([replace(ITI_42, actor="Nobody")])


def test_the_server_serves_every_row_of_the_table_at_its_endpoint(tmp_path):
    app = create_app(config.load(env={"XDS_DATA_DIR": str(tmp_path / "var")}))
    for endpoint in ENDPOINTS.values():
        assert set(app.routes[endpoint.path].actions) == {t.action for t in served_at(endpoint.path)}
    assert {t.action for t in TRANSACTIONS} == set(BY_ACTION)
    assert served_at("/registry")[:2] == [ITI_42, ITI_18]
    assert ITI_62 in served_at("/registry") and ITI_86 in served_at("/repository")


def test_action_uris_are_written_once():
    """Every action URI of the table stands in xds/transactions.py and in no other module."""
    uris = {uri for t in TRANSACTIONS for uri in (t.action, t.response_action)}
    for path in XDS.rglob("*.py"):
        if path.name == "transactions.py":
            continue
        written = set(re.findall(r"urn:ihe:iti:\d{4}:[A-Za-z-]+", path.read_text())) & uris
        assert not written, f"{path.relative_to(XDS)} spells out {sorted(written)}"
