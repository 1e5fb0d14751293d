"""A stored query through the whole WSGI app, in process: the server's own cost of it, without
HTTP and without a load generator competing for the cores.

    .venv/bin/python -m bench.inprocess [--calls 500]
        FindDocuments (10 LeafClass entries) over a fresh SQLite registry of one patient
    .venv/bin/python -m bench.inprocess --database URL [--query get_submission_set_and_contents]
        one of bench.corpus.QUERIES over a registry bench.load filled, each call for a random
        corpus patient (and document, submission), as `make bench` asks them over HTTP
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import tempfile
import time
from collections.abc import Callable

from lxml import etree

from bench import corpus
from tests import submissions as s
from xds import config
from xds.app import create_app
from xds.ebrim.query_request import adhoc_query_request, quote, quote_list
from xds.soap import build_envelope
from xds.store import db, patients

STORED_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"


def fresh_registry() -> tuple[Callable, list[bytes]]:
    """A new SQLite registry holding one patient's 10 documents, and FindDocuments for them."""
    settings = config.load(env={"XDS_DATA_DIR": tempfile.mkdtemp(prefix="xds-inprocess-")})
    db.upgrade(settings.database)
    app = create_app(settings)
    with db.write_session(app.engine) as session:
        patients.add(session, [s.PATIENT])
    for _ in range(10):
        assert app.registry.register(s.element(s.submission()[0])) == []
    request = adhoc_query_request(FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", [quote(s.PATIENT)]),
                                                   ("$XDSDocumentEntryStatus", [quote_list([APPROVED])])], "LeafClass")
    return app, [build_envelope(request, STORED_QUERY)]


def loaded_registry(database: str, query: str, calls: int) -> tuple[Callable, list[bytes]]:
    """The registry at `database` (bench.load's corpus) and `calls` requests of `query`."""
    settings = config.load(env={"XDS_DATA_DIR": tempfile.mkdtemp(prefix="xds-inprocess-"),
                                "XDS_DATABASE_URL": database})
    app = create_app(settings)
    template = corpus.query_template(query)
    draw = random.Random(1)
    bodies = [build_envelope(etree.fromstring(corpus.fill(
                  template, draw.randint(1, corpus.PATIENTS), d=draw.randint(1, corpus.DOCUMENTS_PER_PATIENT),
                  s=draw.randint(1, 4))), STORED_QUERY)
              for _ in range(calls)]
    return app, bodies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--database", help="a registry bench.load filled (default: a fresh SQLite one)")
    parser.add_argument("--query", default="find_documents", choices=corpus.QUERIES)
    args = parser.parse_args()
    app, bodies = (loaded_registry(args.database, args.query, args.calls) if args.database
                   else fresh_registry())

    def call(body: bytes) -> bytes:
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/registry", "CONTENT_LENGTH": str(len(body)),
                   "CONTENT_TYPE": "application/soap+xml; charset=UTF-8", "wsgi.input": io.BytesIO(body),
                   "wsgi.input_terminated": True}
        return b"".join(app(environ, lambda *a, **k: None))

    answer = call(bodies[0])
    assert b"ResponseStatusType:Success" in answer and b"<rim:ExtrinsicObject" in answer, answer[:2000]
    for body in bodies[:50]:
        call(body)
    walls = []
    cpu = time.process_time()
    for index in range(args.calls):
        body = bodies[index % len(bodies)]
        start = time.perf_counter()
        call(body)
        walls.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    what = args.query if args.database else "FindDocuments (10 LeafClass entries, fresh SQLite)"
    print(f"{what}: p50 {statistics.median(walls) * 1000:.2f} ms, mean {statistics.mean(walls) * 1000:.2f} ms "
          f"per request in process; {cpu / args.calls * 1000:.2f} ms of CPU (the figure to compare on a busy "
          f"machine)")


if __name__ == "__main__":
    main()
