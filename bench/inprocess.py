"""FindDocuments (10 LeafClass entries) through the whole WSGI app, in process: the server's
own cost of a stored query, without HTTP and without a load generator competing for the cores.

    .venv/bin/python -m bench.inprocess [--calls 500]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time

from tests import submissions as s
from xds import config
from xds.app import create_app
from xds.ebrim.query_request import adhoc_query_request, quote, quote_list
from xds.soap import build_envelope
from xds.store import db, patients

FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    settings = config.load(env={"XDS_DATA_DIR": tempfile.mkdtemp(prefix="xds-inprocess-")})
    db.upgrade(settings.database)
    app = create_app(settings)
    with db.write_session(app.engine) as session:
        patients.add(session, [s.PATIENT])
    for _ in range(10):
        assert app.registry.register(s.element(s.submission()[0])) == []
    request = adhoc_query_request(FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", [quote(s.PATIENT)]),
                                                   ("$XDSDocumentEntryStatus", [quote_list([APPROVED])])], "LeafClass")
    body = build_envelope(request, "urn:ihe:iti:2007:RegistryStoredQuery")

    def call() -> bytes:
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/registry", "CONTENT_LENGTH": str(len(body)),
                   "CONTENT_TYPE": "application/soap+xml; charset=UTF-8", "wsgi.input": io.BytesIO(body),
                   "wsgi.input_terminated": True}
        return b"".join(app(environ, lambda *a, **k: None))

    assert call().count(b"<rim:ExtrinsicObject") == 10, "the answer must hold the patient's 10 documents"
    for _ in range(50):
        call()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.calls):
        call()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"{wall / args.calls * 1000:.3f} ms per FindDocuments (10 LeafClass entries), in process; "
          f"{cpu / args.calls * 1000:.3f} ms of CPU (the figure to compare on a busy machine)")


if __name__ == "__main__":
    main()
