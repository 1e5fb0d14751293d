"""The way in: how every transaction is served, whatever the actor.

    SOAP request (xds.soap) -> its row in xds.transactions (by wsa:Action)
      -> the Caller (who is asking; xds.security.caller)
      -> the checks before (each may refuse with a SOAP fault, or say more of the Caller: XUA
         gives the user its assertion names; xds.consent.facility the requesting facility)
      -> the actor's handler -> a Result
      -> the hooks after (the audit record; each reads the Result, none may fail the request)
      -> the response, written from the Result by the row's writer

An unexpected failure of a handler is logged with the request's MessageID and answered with the
row's `internal_error` rule (an XDS error code the client can act on), or a SOAP Receiver fault
when the row has none; a SoapFault from a handler (a broken xop:Include, say) goes to the client
as it is. No stack trace reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from xds.result import Result
from xds.rules import error
from xds.security.caller import Caller
from xds.soap import Handler, SoapFault, SoapRequest, SoapResponse
from xds.transactions import Transaction

log = logging.getLogger("xds")

#: An actor's handler of one transaction.
Answer = Callable[[SoapRequest, Caller], Result]
#: A check before the handler: raises a SoapFault to refuse the request; returns None, or the
#: Caller with what the check learnt of it (XUA: the user of a verified assertion), which the
#: checks after it, the handler and the hooks then get.
#:
#: A check that processes SOAP header blocks itself (XUA reads wsse:Security) says which with a
#: method ``understood_headers(transaction) -> Iterable[str]`` (QNames): a block marked
#: mustUnderstand is then understood for that transaction's requests, and only then (SOAP 1.2
#: Part 1 5.2.3; xds.soap.app).
Check = Callable[[Transaction, SoapRequest, Caller], "Caller | None"]
#: A hook after the handler (the audit trail): must not raise.
After = Callable[[Transaction, SoapRequest, Caller, Result], None]


@dataclass
class Dispatcher:
    #: IHE actor name (Transaction.actor) -> the object whose methods answer its transactions
    services: Mapping[str, object]
    checks: Sequence[Check] = ()
    after: Sequence[After] = field(default_factory=list)

    def actions(self, transactions: Sequence[Transaction]) -> dict[str, Handler]:
        """wsa:Action -> SOAP handler, for a SoapEndpoint serving `transactions`. Fails at
        start-up, not at the first request, when an actor lacks a handler."""
        return {t.action: self.handler(t) for t in transactions}

    def handler(self, transaction: Transaction) -> Handler:
        answer: Answer = getattr(self.services[transaction.actor], transaction.handler)

        def serve(request: SoapRequest) -> SoapResponse:
            caller = Caller.from_environ(request.environ)
            for check in self.checks:
                caller = check(transaction, request, caller) or caller
            result = self._answer(transaction, answer, request, caller)
            for hook in self.after:
                hook(transaction, request, caller, result)
            body, attachments = transaction.respond(result)
            return SoapResponse(body=body, action=transaction.response_action, mtom=transaction.mtom,
                                attachments=attachments)

        serve.understood_headers = frozenset(  # type: ignore[attr-defined]  (see Check)
            qname for check in self.checks
            for qname in getattr(check, "understood_headers", lambda _: ())(transaction))
        return serve

    @staticmethod
    def _answer(transaction: Transaction, answer: Answer, request: SoapRequest, caller: Caller) -> Result:
        if transaction.internal_error is None:
            return answer(request, caller)  # a failure becomes the SOAP layer's Receiver fault
        try:
            return answer(request, caller)
        except SoapFault:
            raise  # the message itself is broken: the sender's fault, as the SOAP layer says
        except Exception:
            # The client gets an XDS answer it can act on; the traceback stays in our log.
            log.exception("%s failed (MessageID %s)", transaction.name, request.message_id)
            return Result([error(transaction.internal_error,
                                 reason=f"unexpected failure, logged with MessageID {request.message_id}")])
