"""The Document Repository's throughput: Provide and Register (ITI-41, MTOM) and Retrieve
(ITI-43) of 10 KB, 1 MB and 100 MB documents, in requests/s and MB/s, each next to its floor
measured in the same run on the same server: `POST /null/repository` (XDS_NULL_ENDPOINT=1),
which takes the same bytes through the same SOAP layer (MTOM parsed as it streams, parts
spooled to disk) and answers without XDS processing - no hashing, no metadata, no registry, no
fsync for ITI-41; the document's file streamed back without its metadata for ITI-43.

    python -m bench.repository [--database URL] [--workers 2] [--clients 2] [--duration 8]

`xds serve` (gunicorn, sync workers) on 127.0.0.1 with its data in var/bench/repository/ (a
fresh SQLite database unless --database), and a Python client: `--clients` threads, each
sending one request at a time over a new connection (sync workers close it after each
answer); every ITI-41 request carries new uniqueIds, its document is the same bytes. Each
scenario runs for --duration seconds and at most --max-requests requests; the real endpoint
and its floor alternate, floor first. Every answer is checked (Success and, for ITI-43, the
document's length). Results: a table on stdout, appended to var/bench/repository/results.md.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench" / "repository"
XDS = [sys.executable, "-m", "xds.cli"]
PATIENT = "BENCH1^^^&1.2.392.200119.6.102.11&ISO"
REPOSITORY = "1.2.392.200119.6.102.99"
PNR = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
RETRIEVE = "urn:ihe:iti:2007:RetrieveDocumentSet"
SIZES = {"10 KB": 10 * 1024, "1 MB": 1024 * 1024, "100 MB": 100 * 1024 * 1024}
MAX_REQUESTS = {"10 KB": 20000, "1 MB": 5000, "100 MB": 60}

# One submission: SubmissionSet + one DocumentEntry (the metadata of a real referral letter),
# uniqueIds filled per request.
METADATA = """<xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="urn:ihe:iti:xds-b:2007"><lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0" xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><rim:RegistryObjectList>
<rim:RegistryPackage id="SS"><rim:Slot name="submissionTime"><rim:ValueList><rim:Value>20250601120000</rim:Value></rim:ValueList></rim:Slot><rim:Name><rim:LocalizedString value="Referral"/></rim:Name>
<rim:Classification id="SS-ct" classificationScheme="urn:uuid:aa543740-bdda-424e-8c96-df4873be8500" classifiedObject="SS" nodeRepresentation="57133-1"><rim:Slot name="codingScheme"><rim:ValueList><rim:Value>2.16.840.1.113883.6.1</rim:Value></rim:ValueList></rim:Slot><rim:Name><rim:LocalizedString value="Referral note"/></rim:Name></rim:Classification>
<rim:ExternalIdentifier id="SS-uid" identificationScheme="urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8" registryObject="SS" value="@SSUID@"><rim:Name><rim:LocalizedString value="XDSSubmissionSet.uniqueId"/></rim:Name></rim:ExternalIdentifier>
<rim:ExternalIdentifier id="SS-src" identificationScheme="urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832" registryObject="SS" value="1.2.392.200119.6.102.11"><rim:Name><rim:LocalizedString value="XDSSubmissionSet.sourceId"/></rim:Name></rim:ExternalIdentifier>
<rim:ExternalIdentifier id="SS-pid" identificationScheme="urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446" registryObject="SS" value="@PATIENT@"><rim:Name><rim:LocalizedString value="XDSSubmissionSet.patientId"/></rim:Name></rim:ExternalIdentifier></rim:RegistryPackage>
<rim:Classification id="SS-node" classifiedObject="SS" classificationNode="urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"/>
<rim:ExtrinsicObject id="Doc" mimeType="application/pdf" objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"><rim:Slot name="creationTime"><rim:ValueList><rim:Value>20250601115900</rim:Value></rim:ValueList></rim:Slot><rim:Slot name="languageCode"><rim:ValueList><rim:Value>ja-JP</rim:Value></rim:ValueList></rim:Slot><rim:Slot name="sourcePatientId"><rim:ValueList><rim:Value>12345^^^&amp;1.2.392.200119.6.102.11&amp;ISO</rim:Value></rim:ValueList></rim:Slot><rim:Name><rim:LocalizedString value="Referral letter"/></rim:Name>
<rim:Classification id="Doc-class" classificationScheme="urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a" classifiedObject="Doc" nodeRepresentation="57133-1"><rim:Slot name="codingScheme"><rim:ValueList><rim:Value>2.16.840.1.113883.6.1</rim:Value></rim:ValueList></rim:Slot><rim:Name><rim:LocalizedString value="Referral note"/></rim:Name></rim:Classification>
<rim:Classification id="Doc-conf" classificationScheme="urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f" classifiedObject="Doc" nodeRepresentation="N"><rim:Slot name="codingScheme"><rim:ValueList><rim:Value>2.16.840.1.113883.5.25</rim:Value></rim:ValueList></rim:Slot><rim:Name><rim:LocalizedString value="Normal"/></rim:Name></rim:Classification>
<rim:Classification id="Doc-format" classificationScheme="urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d" classifiedObject="Doc" nodeRepresentation="urn:ihe:iti:xds:2017:mimeTypeSufficient"><rim:Slot name="codingScheme"><rim:ValueList><rim:Value>1.3.6.1.4.1.19376.1.2.3</rim:Value></rim:ValueList></rim:Slot><rim:Name><rim:LocalizedString value="mimeType Sufficient"/></rim:Name></rim:Classification>
<rim:Classification id="Doc-hcft" classificationScheme="urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1" classifiedObject="Doc" nodeRepresentation="22232009"><rim:Slot name="codingScheme"><rim:ValueList><rim:Value>2.16.840.1.113883.6.96</rim:Value></rim:ValueList></rim:Slot><rim:Name><rim:LocalizedString value="Hospital"/></rim:Name></rim:Classification>
<rim:Classification id="Doc-practice" classificationScheme="urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead" classifiedObject="Doc" nodeRepresentation="394802001"><rim:Slot name="codingScheme"><rim:ValueList><rim:Value>2.16.840.1.113883.6.96</rim:Value></rim:ValueList></rim:Slot><rim:Name><rim:LocalizedString value="General medicine"/></rim:Name></rim:Classification>
<rim:Classification id="Doc-type" classificationScheme="urn:uuid:f0306f51-975f-434e-a61c-c59651d33983" classifiedObject="Doc" nodeRepresentation="57133-1"><rim:Slot name="codingScheme"><rim:ValueList><rim:Value>2.16.840.1.113883.6.1</rim:Value></rim:ValueList></rim:Slot><rim:Name><rim:LocalizedString value="Referral note"/></rim:Name></rim:Classification>
<rim:ExternalIdentifier id="Doc-pid" identificationScheme="urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427" registryObject="Doc" value="@PATIENT@"><rim:Name><rim:LocalizedString value="XDSDocumentEntry.patientId"/></rim:Name></rim:ExternalIdentifier>
<rim:ExternalIdentifier id="Doc-uid" identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab" registryObject="Doc" value="@DOCUID@"><rim:Name><rim:LocalizedString value="XDSDocumentEntry.uniqueId"/></rim:Name></rim:ExternalIdentifier></rim:ExtrinsicObject>
<rim:Association id="as1" associationType="urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember" sourceObject="SS" targetObject="Doc"><rim:Slot name="SubmissionSetStatus"><rim:ValueList><rim:Value>Original</rim:Value></rim:ValueList></rim:Slot></rim:Association>
</rim:RegistryObjectList></lcm:SubmitObjectsRequest><xdsb:Document id="Doc"><xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:doc@bench"/></xdsb:Document></xdsb:ProvideAndRegisterDocumentSetRequest>"""

ENVELOPE = ('<?xml version="1.0" encoding="UTF-8"?><env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" '
            'xmlns:wsa="http://www.w3.org/2005/08/addressing"><env:Header><wsa:Action>@ACTION@</wsa:Action>'
            '<wsa:MessageID>urn:uuid:@MID@</wsa:MessageID></env:Header><env:Body>@BODY@</env:Body></env:Envelope>')
RETRIEVE_BODY = ('<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="urn:ihe:iti:xds-b:2007"><xdsb:DocumentRequest>'
                 f'<xdsb:RepositoryUniqueId>{REPOSITORY}</xdsb:RepositoryUniqueId>'
                 '<xdsb:DocumentUniqueId>@DOCUID@</xdsb:DocumentUniqueId></xdsb:DocumentRequest>'
                 '</xdsb:RetrieveDocumentSetRequest>')
BOUNDARY = "MIMEBoundary_bench_repository"
PNR_TYPE = (f'multipart/related; boundary="{BOUNDARY}"; type="application/xop+xml"; start="<root@bench>"; '
            f'start-info="application/soap+xml"; action="{PNR}"')
RETRIEVE_TYPE = f'application/soap+xml; charset=UTF-8; action="{RETRIEVE}"'


def _oid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def pnr_parts(document_uid: str) -> tuple[bytes, bytes]:
    """The bytes before and after the document in an ITI-41 MTOM body."""
    body = METADATA.replace("@SSUID@", _oid()).replace("@DOCUID@", document_uid).replace(
        "@PATIENT@", PATIENT.replace("&", "&amp;"))
    envelope = ENVELOPE.replace("@ACTION@", PNR).replace("@MID@", str(uuid.uuid4())).replace("@BODY@", body)
    head = (f"--{BOUNDARY}\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml\"\r\n"
            f"Content-Transfer-Encoding: binary\r\nContent-ID: <root@bench>\r\n\r\n{envelope}\r\n--{BOUNDARY}\r\n"
            "Content-Type: application/pdf\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <doc@bench>\r\n\r\n")
    return head.encode(), f"\r\n--{BOUNDARY}--\r\n".encode()


def register_body(document_uid: str, size: int) -> bytes:
    """The same submission as an ITI-42 request, as the repository sends it to the registry."""
    submit = METADATA[METADATA.index("<lcm:SubmitObjectsRequest"):METADATA.index("<xdsb:Document ")]
    slots = "".join(f'<rim:Slot name="{name}"><rim:ValueList><rim:Value>{value}</rim:Value></rim:ValueList></rim:Slot>'
                    for name, value in (("hash", "da39a3ee5e6b4b0d3255bfef95601890afd80709"), ("size", size),
                                        ("repositoryUniqueId", REPOSITORY)))
    submit = submit.replace('<rim:Slot name="creationTime">', slots + '<rim:Slot name="creationTime">', 1)
    submit = submit.replace("@SSUID@", _oid()).replace("@DOCUID@", document_uid).replace(
        "@PATIENT@", PATIENT.replace("&", "&amp;"))
    register = "urn:ihe:iti:2007:RegisterDocumentSet-b"
    return ENVELOPE.replace("@ACTION@", register).replace("@MID@", str(uuid.uuid4())).replace("@BODY@", submit).encode()


def retrieve_body(document_uid: str) -> bytes:
    return ENVELOPE.replace("@ACTION@", RETRIEVE).replace("@MID@", str(uuid.uuid4())).replace(
        "@BODY@", RETRIEVE_BODY.replace("@DOCUID@", document_uid)).encode()


@dataclass
class Measure:
    requests: int
    seconds: float
    document_bytes: int

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def mb_per_second(self) -> float:
        return self.document_bytes / self.seconds / 1e6


def _post(port: int, path: str, content_type: str, pieces: list[bytes]) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.putrequest("POST", path)
        connection.putheader("Content-Type", content_type)
        connection.putheader("Content-Length", str(sum(map(len, pieces))))
        connection.endheaders()
        for piece in pieces:
            connection.send(piece)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def run_clients(clients: int, duration: float, max_requests: int, one) -> Measure:
    """`clients` threads calling one(index) -> document bytes moved, until `duration` or
    `max_requests`; every call checks its own answer and raises on a wrong one."""
    lock = threading.Lock()
    state = {"next": 0, "bytes": 0, "error": None}
    deadline = time.monotonic() + duration

    def worker():
        while time.monotonic() < deadline and state["error"] is None:
            with lock:
                index = state["next"]
                if index >= max_requests:
                    return
                state["next"] += 1
            try:
                moved = one(index)
            except BaseException as exc:  # stop everyone, report the first
                state["error"] = exc
                return
            with lock:
                state["bytes"] += moved
    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    if state["error"] is not None:
        raise state["error"]
    return Measure(min(state["next"], max_requests), elapsed, state["bytes"])


def _null(port: int) -> int:
    status, answer = _post(port, "/null", 'application/soap+xml; charset=UTF-8; '
                           'action="urn:ihe:iti:2007:RegisterDocumentSet-b"', [register_body(_oid(), 10240)])
    if status != 200:
        raise RuntimeError(f"/null: HTTP {status}")
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(database: str | None, workers: int) -> tuple[subprocess.Popen, int, dict]:
    shutil.rmtree(VAR / "data", ignore_errors=True)
    (VAR / "data").mkdir(parents=True)
    env = dict(os.environ, XDS_DATA_DIR=str(VAR / "data"),
               XDS_DATABASE_URL=database or f"sqlite:///{VAR / 'data' / 'registry.sqlite3'}",
               XDS_REPOSITORY_UNIQUE_ID=REPOSITORY, XDS_NULL_ENDPOINT="1")
    subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run([*XDS, "patients", "add", PATIENT], env=env, check=True, capture_output=True)
    port = _free_port()
    log = open(VAR / "server.log", "wb")
    process = subprocess.Popen([*XDS, "serve", "--port", str(port), "--workers", str(workers)], env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return process, port, env
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError((VAR / "server.log").read_text()) from None
            time.sleep(0.1)


def measure(port: int, clients: int, duration: float) -> list[tuple[str, str, Measure, Measure]]:
    rows = []

    def register(index: int) -> int:
        status, answer = _post(port, "/registry", 'application/soap+xml; charset=UTF-8; '
                               'action="urn:ihe:iti:2007:RegisterDocumentSet-b"', [register_body(_oid(), 10240)])
        if status != 200 or b"ResponseStatusType:Success" not in answer:
            raise RuntimeError(f"ITI-42: HTTP {status}: {answer[:500]!r}")
        return 0

    floor = run_clients(clients, duration, 20000, lambda index: _null(port))
    rows.append(("ITI-42 Register alone (the same metadata, no document)", "-",
                 run_clients(clients, duration, 20000, register), floor))
    for label, size in SIZES.items():
        document = os.urandom(size)
        limit = MAX_REQUESTS[label]
        stored: list[str] = []
        stored_lock = threading.Lock()

        def provide(path: str):
            def one(index: int) -> int:
                uid = _oid()
                head, tail = pnr_parts(uid)
                status, answer = _post(port, path, PNR_TYPE, [head, document, tail])
                if status != 200 or b"ResponseStatusType:Success" not in answer:
                    raise RuntimeError(f"ITI-41 to {path}: HTTP {status}: {answer[:500]!r}")
                if path == "/repository":
                    with stored_lock:
                        stored.append(uid)
                return size
            return one

        floor = run_clients(clients, duration, limit, provide("/null/repository"))
        real = run_clients(clients, duration, limit, provide("/repository"))
        rows.append(("ITI-41 Provide and Register", label, real, floor))

        def retrieve(path: str):
            def one(index: int) -> int:
                uid = stored[index % len(stored)]
                status, answer = _post(port, path, RETRIEVE_TYPE, [retrieve_body(uid)])
                if status != 200 or answer.count(b"ResponseStatusType:Success") != 1 or len(answer) < size:
                    raise RuntimeError(f"ITI-43 to {path}: HTTP {status}: {answer[:500]!r}")
                return size
            return one

        floor = run_clients(clients, duration, limit, retrieve("/null/repository"))
        real = run_clients(clients, duration, limit, retrieve("/repository"))
        rows.append(("ITI-43 Retrieve Document Set", label, real, floor))
        print(f"  {label}: done", file=sys.stderr)
    return rows


def table(rows, workers: int, clients: int, database: str) -> str:
    lines = [f"Workers: {workers} (gunicorn sync), client threads: {clients}, database: {database}, "
             f"{os.cpu_count()} cores, one machine (server and client share it).", "",
             "| transaction | document | requests | req/s | MB/s | floor req/s | floor MB/s | of the floor |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, label, real, floor in rows:
        mb = f"{real.mb_per_second:,.1f}" if real.document_bytes else "-"
        floor_mb = f"{floor.mb_per_second:,.1f}" if floor.document_bytes else "-"
        lines.append(f"| {name} | {label} | {real.requests} | {real.per_second:,.1f} | {mb} | "
                     f"{floor.per_second:,.1f} | {floor_mb} | {real.per_second / floor.per_second:.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.repository", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", help="an SQLAlchemy URL (default: a fresh SQLite file in var/bench/repository)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per scenario")
    args = parser.parse_args(argv)
    VAR.mkdir(parents=True, exist_ok=True)
    process, port, env = start_server(args.database, args.workers)
    try:
        rows = measure(port, args.clients, args.duration)
    finally:
        process.terminate()
        process.wait(30)
    database = "PostgreSQL" if args.database and args.database.startswith("postgresql") else "SQLite"
    result = table(rows, args.workers, args.clients, database)
    print(result)
    with open(VAR / "results.md", "a") as out:
        out.write(f"\n## {time.strftime('%Y-%m-%d %H:%M')}\n\n{result}\n")
    shutil.rmtree(VAR / "data", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
