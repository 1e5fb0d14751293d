"""Measure the registry over HTTP against `xds serve` (gunicorn, as users run it), each figure
beside the floor of the same server: POST /null (XDS_NULL_ENDPOINT=1), which parses the SOAP
envelope of the same request body and writes a constant RegistryResponse.

    python -m bench.run --database URL [--workers 2] [--duration 15] [--parts register,query]

Scenarios, each for --duration seconds (and at most --max-requests requests):
  register      ITI-42, a one-document submission for a random known patient (new uniqueIds
                every request), 1 client and 8 concurrent clients
  query         ITI-18 stored queries, LeafClass, random patients of the corpus:
                  find_documents                   the patient's 10 DocumentEntries
                  get_documents                    one DocumentEntry by uniqueId
                  find_documents_filtered          + classCode + creationTime From/To
                  get_submission_set_and_contents  one SubmissionSet by uniqueId
                1 client and 8 concurrent clients
Every real scenario is measured right after the null endpoint with the same kind of body and
the same number of clients, so each ratio compares two figures taken a few seconds apart.

Clients: wrk (C, epoll; request bodies built per request by a generated Lua script from the
templates of bench/corpus.py; it checks every response for a Success status) when it is on
the PATH, otherwise a Python client (processes, http.client). Latencies are the client's own
(wrk: from the first byte written to the last byte read; the connect is not in it).

Before measuring, Python checks answers: register and null answer Success, and each query
answers exactly the ExtrinsicObjects the corpus says (10 for FindDocuments...). Queries are
skipped, and said so, while the registry answers the stored query action with a fault.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from lxml import etree
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench import corpus
from xds.soap import build_envelope, parse_response
from xds.store import db

REGISTER = "urn:ihe:iti:2007:RegisterDocumentSet-b"
STORED_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
MESSAGE_ID = "urn:uuid:0b5e7c1a-0000-4000-8000-00000000be4c"
XDS = [sys.executable, "-m", "xds.cli"]


@dataclass
class Result:
    scenario: str
    path: str
    clients: int
    requests: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    failures: int
    client: str


# --- request bodies ---------------------------------------------------------------------------


def envelope_template(body_template: str, action: str, path: str) -> bytes:
    """A SOAP 1.2 envelope around a template; the placeholders survive serialization."""
    element = etree.fromstring(body_template.encode())
    return build_envelope(element, action, to=f"http://127.0.0.1{path}", message_id=MESSAGE_ID)


def content_type(action: str) -> str:
    return f'application/soap+xml; charset=UTF-8; action="{action}"'


# --- the server -------------------------------------------------------------------------------


class Server:
    def __init__(self, database: str, workers: int, data_dir: Path):
        self.env = dict(os.environ, XDS_DATABASE_URL=database, XDS_DATA_DIR=str(data_dir),
                        XDS_NULL_ENDPOINT="1")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        self.workers = workers

    def __enter__(self) -> Server:
        subprocess.run([*XDS, "db", "upgrade"], env=self.env, check=True, capture_output=True)
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen([*XDS, "serve", "--port", str(self.port), "--workers", str(self.workers)],
                                        env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.base + "/health", timeout=2).read()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"the server did not start; see {self.log_path}")
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def post(url: str, body: bytes, action: str):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type(action)})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, parse_response(response.headers["Content-Type"], response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, parse_response(exc.headers["Content-Type"], exc.read())


# --- checks before measuring ------------------------------------------------------------------


def add_register_patients(database: str) -> None:
    from xds.store import patients

    engine = db.make_engine(database)
    with db.write_session(engine) as session:
        patients.add(session, [corpus.register_patient_id(p) for p in range(corpus.REGISTER_PATIENTS)])
    engine.dispose()


def check_register(base: str, nonce: str) -> None:
    template = envelope_template(corpus.register_template(), REGISTER, "/registry").decode()
    for path in ("/null", "/registry"):
        body = corpus.fill(template, random.randrange(corpus.REGISTER_PATIENTS),
                           n=f"{nonce}.0.{path == '/null':d}").encode()
        status, message = post(base + path, body, REGISTER)
        if status != 200 or message.body.get("status") != SUCCESS:
            raise SystemExit(f"{path} did not accept a register request: {status} "
                             f"{etree.tostring(message.body)[:2000]!r}")


def queries_available(base: str) -> tuple[bool, str]:
    template = envelope_template(corpus.query_template("find_documents"), STORED_QUERY, "/registry").decode()
    status, message = post(base + "/registry", corpus.fill(template, 1).encode(), STORED_QUERY)
    if status == 200:
        return True, ""
    reason = message.body.findtext(".//{http://www.w3.org/2003/05/soap-envelope}Text") or ""
    return False, f"HTTP {status}: {reason[:200]}"


def check_queries(base: str, patients: int, samples: int = 25) -> None:
    """Each query, for random patients, answers Success with exactly the ExtrinsicObjects the
    corpus predicts (and GetSubmissionSetAndContents its RegistryPackage)."""
    rng = random.Random(42)
    for name in corpus.QUERIES:
        template = envelope_template(corpus.query_template(name), STORED_QUERY, "/registry").decode()
        for _ in range(samples):
            p, d, s = rng.randrange(patients), rng.randint(1, 10), rng.randint(1, 4)
            status, message = post(base + "/registry", corpus.fill(template, p, d, s).encode(), STORED_QUERY)
            found = len(message.body.findall(f".//{{{RIM}}}ExtrinsicObject"))
            expected = corpus.expected_count(name, p, d, s)
            if status != 200 or message.body.get("status") != SUCCESS or found != expected:
                raise SystemExit(f"{name} for patient {p} (d={d}, s={s}): HTTP {status}, status "
                                 f"{message.body.get('status')}, {found} ExtrinsicObjects, expected {expected}: "
                                 f"{etree.tostring(message.body)[:1500]!r}")
            if name == "get_submission_set_and_contents" and not message.body.findall(f".//{{{RIM}}}RegistryPackage"):
                raise SystemExit(f"{name}: no RegistryPackage in the answer")
        print(f"  checked {name}: {samples} answers as the corpus predicts", flush=True)


# --- load generation: wrk -----------------------------------------------------------------------

_LUA = r"""
-- generated by bench/run.py: POST bodies built per request from a template
local template = [==[@TEMPLATE@]==]
local path = "@PATH@"
local patients = @PATIENTS@
local nonce = "@NONCE@"
local limit = @LIMIT@
local marker = "@MARKER@"

local parts = {}
local position = 1
while true do
  local a, b, name = string.find(template, "{{(%w+)}}", position)
  if not a then break end
  table.insert(parts, string.sub(template, position, a - 1))
  table.insert(parts, name)
  position = b + 1
end
table.insert(parts, string.sub(template, position))

local threads = {}
local next_id = 0
function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
  table.insert(threads, thread)
end

-- globals: done() reads each thread's failures with thread:get
counter, responses, failures = 0, 0, 0
function init(args)
  math.randomseed(tid * 7919 + os.time())
  wrk.method = "POST"
  wrk.headers["Content-Type"] = '@CONTENT_TYPE@'
end

function request()
  counter = counter + 1
  local p = math.random(0, patients - 1)
  local values = {P6 = string.format("%06d", p), PN = tostring(p), D = tostring(math.random(1, 10)),
                  S = tostring(math.random(1, 4)), N = nonce .. "." .. tid .. "." .. counter}
  local buffer = {}
  for i, part in ipairs(parts) do
    if i % 2 == 0 then buffer[i] = values[part] else buffer[i] = part end
  end
  return wrk.format(nil, path, nil, table.concat(buffer))
end

function response(status, headers, body)
  responses = responses + 1
  if status ~= 200 or not string.find(body, marker, 1, true) then failures = failures + 1 end
  if responses >= limit then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local failed = 0
  for _, thread in ipairs(threads) do failed = failed + thread:get("failures") end
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"failures": %d, "socket_errors": %d}\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), failed, e.connect + e.read + e.write + e.timeout + e.status))
end
"""


def run_wrk(base: str, path: str, template: str, action: str, clients: int, duration: float,
            max_requests: int, patients: int, nonce: str) -> dict:
    threads = 1 if clients == 1 else 2
    script = (_LUA.replace("@TEMPLATE@", template).replace("@PATH@", path).replace("@PATIENTS@", str(patients))
              .replace("@NONCE@", nonce).replace("@LIMIT@", str(max(1, max_requests // threads)))
              .replace("@MARKER@", SUCCESS).replace("@CONTENT_TYPE@", content_type(action)))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        done = subprocess.run(["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{duration:.0f}s",
                               "--timeout", "30s", "-s", f.name, base + path],
                              capture_output=True, text=True, timeout=duration + 120)
    finally:
        os.unlink(f.name)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {done.stdout}\n{done.stderr}")
    r = json.loads(line.removeprefix("RESULT "))
    return {"requests": r["requests"], "seconds": r["duration_us"] / 1e6, "p50_ms": r["p50_us"] / 1e3,
            "p99_ms": r["p99_us"] / 1e3, "failures": r["failures"] + r["socket_errors"]}


# --- load generation: Python (when wrk is missing) ----------------------------------------------


def _python_client(args) -> tuple[list[float], int]:
    import http.client

    port, path, template, action, deadline, limit, patients, nonce, index = args
    rng = random.Random(index * 7919 + int(time.time()))
    headers = {"Content-Type": content_type(action)}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies: list[float] = []
    failures = 0
    marker = SUCCESS.encode()
    n = 0
    while time.monotonic() < deadline and n < limit:
        n += 1
        body = corpus.fill(template, rng.randrange(patients), rng.randint(1, 10), rng.randint(1, 4),
                           f"{nonce}.{index}.{n}").encode()
        start = time.perf_counter()
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        data = response.read()
        latencies.append(time.perf_counter() - start)
        if response.status != 200 or marker not in data:
            failures += 1
        if response.will_close:
            connection.close()
    return latencies, failures


def run_python(base: str, path: str, template: str, action: str, clients: int, duration: float,
               max_requests: int, patients: int, nonce: str) -> dict:
    import multiprocessing

    port = int(base.rsplit(":", 1)[1])
    start = time.monotonic()
    deadline = start + duration
    jobs = [(port, path, template, action, deadline, max(1, max_requests // clients), patients, nonce, i + 1)
            for i in range(clients)]
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        results = pool.map(_python_client, jobs)
    seconds = time.monotonic() - start
    latencies = sorted(x for lat, _ in results for x in lat)
    failures = sum(f for _, f in results)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3 if latencies else float("nan")

    return {"requests": len(latencies), "seconds": seconds, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "failures": failures}


# --- the run ----------------------------------------------------------------------------------


_scenarios: list[str] = []


def measure(base: str, scenario: str, path: str, body_template: str, action: str, clients: int,
            args, nonce: str) -> Result:
    template = envelope_template(body_template, action, path).decode()
    nonce = f"{nonce}{len(_scenarios)}"  # new uniqueIds in every scenario: N = nonce.thread.counter
    _scenarios.append(scenario)
    client = "wrk" if shutil.which("wrk") and not args.python_client else "python"
    run = run_wrk if client == "wrk" else run_python
    patients = corpus.REGISTER_PATIENTS if action == REGISTER else args.patients
    r = run(base, path, template, action, clients, args.duration, args.max_requests, patients, nonce)
    result = Result(scenario=scenario, path=path, clients=clients, requests=r["requests"],
                    seconds=round(r["seconds"], 2), per_second=round(r["requests"] / r["seconds"], 1),
                    p50_ms=round(r["p50_ms"], 2), p99_ms=round(r["p99_ms"], 2), failures=r["failures"],
                    client=client)
    print(f"  {scenario:<34} {path:<9} c={clients}  {result.per_second:8.1f}/s  p50 {result.p50_ms:7.2f} ms  "
          f"p99 {result.p99_ms:7.2f} ms  n={result.requests}  failed={result.failures}", flush=True)
    return result


def warm(database: str) -> str:
    """The database's files read once into the operating system's cache, as a server's are after
    it has run a while: measured cold, a random patient's query waits for the disk (FindDocuments
    in process at 1,000,000 on SQLite: p50 4.1 ms with most of the file uncached, 0.9 ms after one
    read of it; this machine's cache had kept 4 of the 14 GB its loads wrote). SQLite: its file
    and WAL, read through. PostgreSQL: every table, index and TOAST table of the schema through
    pg_prewarm's 'read' mode (the contrib extension, created when missing; without it, cold)."""
    u = make_url(database)
    start = time.monotonic()
    if u.get_backend_name() == "sqlite":
        read = 0
        for path in (Path(u.database), Path(u.database + "-wal")):
            if path.exists():
                with open(path, "rb", buffering=0) as f:
                    while chunk := f.read(1 << 20):
                        read += len(chunk)
        return f"{read / 1e9:.2f} GB of SQLite files read into the cache in {time.monotonic() - start:.0f} s"
    engine = db.make_engine(database)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_prewarm"))
            read = connection.execute(text(
                "WITH own AS (SELECT c.oid, c.relkind, c.reltoastrelid FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'i')), "
                "relations AS (SELECT oid FROM own UNION ALL "
                "SELECT reltoastrelid FROM own WHERE relkind = 'r' AND reltoastrelid <> 0) "
                "SELECT coalesce(sum(pg_prewarm(oid, 'read')), 0)::bigint * current_setting('block_size')::bigint "
                "FROM relations")).scalar_one()
    except Exception as e:  # noqa: BLE001 - a server without the contrib modules: measured cold
        return f"not warmed ({str(e).splitlines()[0]})"
    finally:
        engine.dispose()
    return f"{read / 1e9:.2f} GB of PostgreSQL relations read into the cache in {time.monotonic() - start:.0f} s"


def disk_use(database: str) -> dict:
    u = make_url(database)
    engine = db.make_engine(database)
    with engine.connect() as connection:
        documents = connection.execute(text("SELECT count(*) FROM document_entry")).scalar_one()
        if u.get_backend_name() == "sqlite":
            # The pages in use: a file keeps the pages its tables freed (after a migration, the
            # old tables') for later growth until a VACUUM gives them back.
            pages, free, page_size = (connection.exec_driver_sql(f"PRAGMA {pragma}").scalar_one()
                                      for pragma in ("page_count", "freelist_count", "page_size"))
            files = [Path(u.database), Path(u.database + "-wal")]
            on_disk = sum(f.stat().st_size for f in files if f.exists())
            size = (pages - free) * page_size
            what = f"SQLite pages in use (file + WAL on disk: {on_disk / 1e9:.2f} GB)"
        else:
            size = connection.execute(text(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'r' AND n.nspname = current_schema()")).scalar_one()
            what = "pg_total_relation_size of the registry's tables (indexes and TOAST included)"
    engine.dispose()
    return {"documents": documents, "bytes": int(size), "bytes_per_document": round(size / max(documents, 1)),
            "measured": what}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="SQLAlchemy URL of the loaded registry database")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of xds serve (default 2)")
    parser.add_argument("--duration", type=float, default=15, help="seconds per scenario")
    parser.add_argument("--max-requests", type=int, default=200_000, help="requests per scenario at most")
    parser.add_argument("--patients", type=int, default=corpus.PATIENTS, help="patients loaded by bench.load")
    parser.add_argument("--parts", default="register,query")
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--python-client", action="store_true", help="use the Python client even if wrk is there")
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--data-dir", default=None, help="server's data dir and log (default: a temp dir)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    clients = [int(c) for c in args.clients.split(",")]
    nonce = str(int(time.time()))
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="xds-bench-"))
    data_dir.mkdir(parents=True, exist_ok=True)

    backend = make_url(args.database).get_backend_name()
    results: list[Result] = []
    notes: list[str] = []
    print(f"database {backend}, gunicorn workers: {args.workers}, {args.duration:.0f} s per scenario", flush=True)
    add_register_patients(args.database)
    warmed = warm(args.database)
    print(f"  {warmed}", flush=True)
    notes.append(warmed)
    with Server(args.database, args.workers, data_dir) as server:
        base = server.base
        check_register(base, nonce)
        if "register" in parts:
            for c in clients:
                results.append(measure(base, "null (register body)", "/null", corpus.register_template(),
                                       REGISTER, c, args, nonce))
                results.append(measure(base, "register (ITI-42, 1 document)", "/registry",
                                       corpus.register_template(), REGISTER, c, args, nonce))
        if "query" in parts:
            available, why = queries_available(base)
            if not available:
                note = f"stored queries not measured: the registry answers RegistryStoredQuery with {why}"
                print("  " + note, flush=True)
                notes.append(note)
            else:
                check_queries(base, args.patients)
                for c in clients:
                    results.append(measure(base, "null (FindDocuments body)", "/null",
                                           corpus.query_template("find_documents"), STORED_QUERY, c, args, nonce))
                    for name in corpus.QUERIES:
                        results.append(measure(base, name, "/registry", corpus.query_template(name),
                                               STORED_QUERY, c, args, nonce))
    disk = disk_use(args.database)
    print(f"  disk: {disk['bytes'] / 1e9:.2f} GB for {disk['documents']} documents = "
          f"{disk['bytes_per_document']} bytes per DocumentEntry ({disk['measured']})", flush=True)
    report = {"database": backend, "workers": args.workers, "duration": args.duration,
              "results": [asdict(r) for r in results], "disk": disk, "notes": notes,
              "started": nonce, "host_cpus": os.cpu_count()}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    """The results as a table, each real figure beside the floor measured just before it."""
    lines = [f"{report['database']}, {report['workers']} workers:", "",
             "| scenario | clients | req/s | floor req/s | ratio | p50 ms | p99 ms | failed |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    floor = None
    for r in report["results"]:
        if r["path"] == "/null":
            floor = r
            lines.append(f"| {r['scenario']} | {r['clients']} | {r['per_second']} | | | {r['p50_ms']} | "
                         f"{r['p99_ms']} | {r['failures']} |")
            continue
        ratio = r["per_second"] / floor["per_second"] if floor and floor["clients"] == r["clients"] else float("nan")
        lines.append(f"| {r['scenario']} | {r['clients']} | {r['per_second']} | {floor['per_second'] if floor else ''} | "
                     f"{ratio:.2f} | {r['p50_ms']} | {r['p99_ms']} | {r['failures']} |")
    d = report["disk"]
    lines += ["", f"disk: {d['bytes_per_document']} bytes per DocumentEntry ({d['documents']} entries; {d['measured']})"]
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
