"""What ATNA auditing costs the ITI-18 query path: the same FindDocuments requests against
`xds serve` over one SQLite registry with auditing off (A) and on (B: every query's audit record
spooled and sent to a syslog receiver that runs here), in rounds of exactly --queries requests
per server whose order reverses every round (A B C, C B A, ...), each round also measuring the
floor (POST /null, on A). C, a diagnosis: audit on with delivery paused (this process holds the
spool's delivery lock, so records are only spooled; they are all sent, and checked, at the end).

    python -m bench.audit [--queries 1000] [--rounds 6] [--workers 2] [--concurrency 1,8]
                          [--destination tcp|udp] [--patients 500] [--no-paused] [--no-breakdown]

The registry: --patients corpus patients of bench/corpus.py (10 DocumentEntries each) in
var/bench/audit/registry.sqlite3, loaded by bench/load.py (what ITI-42 stores; loaded once,
reused). The requests: FindDocuments for a random patient, LeafClass and ObjectRef
alternating (corpus.query_template), 10 entries in each answer. The servers are bench/run.py's
Server (gunicorn sync workers, XDS_NULL_ENDPOINT=1), each with a fresh data directory (B's and
C's spool, audit-spool/, as the settings make it, starts empty) and its own receiver
(tcp: octet counting, read with xds.audit.syslog.OctetCountingReader; udp: one datagram each).

Client: one Python process per concurrent client, each sending exactly its share of the round's
requests over raw sockets, a new connection per request (each asks the server to close it);
the requests are built before the round starts. Not wrk: wrk cannot stop after exactly N
requests against sync workers (see drive()). Latencies are the client's, from the first byte
written to the last byte read (the connect not included, as in bench/run.py); throughput is
requests / wall time of the round. Before measuring, answers are checked (10 ExtrinsicObjects
or 10 ObjectRefs per FindDocuments) on every server.

After each round of B the benchmark waits until B's receiver has every record (the lag is
reported), so B's background sending never runs during another server's turn. At the end it
fails unless each receiver got exactly one ITI-18 record (EventOutcomeIndicator 0) per query
its server answered, with as many LeafClass and ObjectRef queries in them as were sent, and
the spools are empty.

The breakdown (skip with --no-breakdown): the same queries through the WSGI app in this
process, audit off / on with delivery paused / the same with an fsync in every request / on
and delivered, wall and CPU time per query, each audit step timed (request re-serialized,
message built, lxml serialization, syslog header, the spool's transaction: lock wait, COMMIT
with its fsync; the background sender's reads, sends and cursor updates), the spool's append
alone with and without its own fsync, the disk's write+fsync, and a cProfile listing
(var/bench/audit/profile.txt).

Results: tables on stdout and var/bench/audit/results.json. Everything goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from statistics import median

from lxml import etree

from bench import corpus, load, run
from xds.audit import syslog

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench" / "audit"
STORED_QUERY = run.STORED_QUERY
RIM = corpus.RIM
KINDS = ("LeafClass", "ObjectRef")
ROUND_TIMEOUT = 600  # seconds a round may take at most


def templates(path: str) -> list[str]:
    """The two FindDocuments envelopes (LeafClass, ObjectRef), with bench/corpus placeholders."""
    leaf = corpus.query_template("find_documents")
    objref = leaf.replace('returnType="LeafClass"', 'returnType="ObjectRef"')
    assert objref != leaf, "corpus.query_template no longer names returnType LeafClass"
    return [run.envelope_template(t, STORED_QUERY, path).decode() for t in (leaf, objref)]


# --- the audit record receiver ----------------------------------------------------------------


class Receiver:
    """A syslog collector on 127.0.0.1: keeps every SYSLOG-MSG it gets, unparsed (the parsing
    is done after the run, so that it takes no CPU from the servers being measured)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.messages: list[bytes] = []
        self.iti18 = 0  # a cheap running count, for waiting; verify_records() is the check
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        if kind == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            self.sock.bind(("127.0.0.1", 0))
            target = self._read_udp
        elif kind == "tcp":
            self.sock = socket.create_server(("127.0.0.1", 0))
            target = self._accept
        else:
            raise ValueError(f"destination {kind!r}: udp or tcp")
        self.sock.settimeout(0.2)
        self.url = f"{kind}://127.0.0.1:{self.sock.getsockname()[1]}"
        self._start(target)

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=f"receiver-{len(self._threads)}")
        thread.start()
        self._threads.append(thread)

    def _keep(self, messages: list[bytes]) -> None:
        self.messages.extend(messages)
        self.iti18 += sum(1 for m in messages if b'csd-code="ITI-18"' in m)

    def _read_udp(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self._keep([data])

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._start(self._read_stream, connection)

    def _read_stream(self, connection: socket.socket) -> None:
        reader = syslog.OctetCountingReader(max_length=4 * 1024 * 1024)
        connection.settimeout(0.2)
        with connection:
            while not self._stop.is_set():
                try:
                    data = connection.recv(256 * 1024)
                except TimeoutError:
                    continue
                except OSError as exc:
                    self.errors.append(f"connection: {exc}")
                    return
                if not data:
                    break
                try:
                    self._keep(reader.feed(data))
                except syslog.FrameError as exc:
                    self.errors.append(str(exc))
                    return
            if reader.unread:
                self.errors.append(f"{len(reader.unread)} octets of an incomplete frame at the connection's end")

    def wait_for(self, iti18: int, timeout: float = 120) -> float:
        """Seconds until `iti18` ITI-18 records are in; SystemExit when they are not in time."""
        start = time.monotonic()
        while self.iti18 < iti18:
            if time.monotonic() - start > timeout or self.errors:
                raise SystemExit(f"the receiver has {self.iti18} ITI-18 records, expected {iti18} "
                                 f"(after {timeout:.0f} s); receiver errors: {self.errors}")
            time.sleep(0.005)
        return time.monotonic() - start

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        self.sock.close()


def verify_records(messages: list[bytes], expected: Counter) -> dict:
    """Every message parsed: ITI-18 records by returnType of the query they carry, all with
    outcome 0; the other records by their EventID/EventTypeCode. SystemExit unless the ITI-18
    records are exactly `expected` (returnType -> count)."""
    iti18: Counter = Counter()
    others: Counter = Counter()
    problems = []
    for raw in messages:
        try:
            message = syslog.parse(raw)
            root = etree.fromstring(message.msg)
        except (ValueError, etree.XMLSyntaxError) as exc:
            problems.append(f"unparseable record: {exc}: {raw[:200]!r}")
            continue
        event = root.find("EventIdentification")
        types = [t.get("csd-code") for t in event.findall("EventTypeCode")]
        if "ITI-18" not in types:
            others[f"{event.find('EventID').get('originalText')} / {', '.join(t or '' for t in types)}"] += 1
            continue
        if event.get("EventOutcomeIndicator") != "0":
            problems.append(f"ITI-18 record with outcome {event.get('EventOutcomeIndicator')}")
        query = root.findtext("ParticipantObjectIdentification/ParticipantObjectQuery")
        request = etree.fromstring(base64.b64decode(query or ""))
        option = request.find("{urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0}ResponseOption")
        iti18[option.get("returnType") if option is not None else "?"] += 1
    if problems or iti18 != expected:
        raise SystemExit(f"AUDIT RECORDS WRONG: ITI-18 records {dict(iti18)}, expected {dict(expected)}; "
                         f"{len(problems)} problems: {problems[:5]}")
    return {"iti18": dict(iti18), "other": dict(others), "total": len(messages)}


def spool_state(data_dir: Path, destination: str) -> dict:
    """Bytes waiting in the server's spool for its one destination, and records refused."""
    from xds.audit.spool import AuditSpool

    state = AuditSpool(data_dir / "audit-spool", [destination], 1 << 40).state()
    return {"waiting": state["bytes"], "refused": state["refused"]}


# --- load generation: an exact number of requests -------------------------------------------------
#
# Not wrk: wrk cannot stop after exactly N requests against gunicorn's sync workers. Its
# threads run until -d ends; a thread stopped from Lua (wrk.thread:stop) has already reconnected
# the connection of its last answer, and a connection held back by delay() is connected too,
# and a sync worker that accepts such an idle connection blocks reading it, so the other
# threads' last requests wait for a free worker (seen with -t2 -c8: the round did not end).
# Here each client process opens a connection only when it has a request to send, and sends
# exactly its share.


def http_requests(path: str, bodies: list[str], n: int, patients: int, port: int, seed: int) -> list[bytes]:
    """n whole HTTP requests, bodies[0] and bodies[1] alternating, random corpus patients."""
    rng = random.Random(seed)
    # Connection: close: the client reads each answer to the end of its connection (gthread
    # workers keep a connection open unless asked not to).
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
            f"Content-Type: {run.content_type(STORED_QUERY)}\r\n").encode()
    out = []
    for i in range(n):
        body = corpus.fill(bodies[i % 2], rng.randrange(patients)).encode()
        out.append(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return out


def _client(port: int, requests: list[bytes], barrier, results) -> None:
    """One client: each request on a new connection (closed after the answer: Connection:
    close), read to the end; the latency from the first byte written to the last byte read."""
    marker = run.SUCCESS.encode()
    latencies, failures = [], 0
    barrier.wait()
    first = time.monotonic()
    for raw in requests:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(60)
        sock.connect(("127.0.0.1", port))
        start = time.perf_counter()
        sock.sendall(raw)
        chunks = []
        while data := sock.recv(262144):
            chunks.append(data)
        latencies.append(time.perf_counter() - start)
        sock.close()
        answer = b"".join(chunks)
        if not answer.startswith(b"HTTP/1.1 200 ") or marker not in answer:
            failures += 1
    results.put((first, time.monotonic(), latencies, failures))


def drive(base: str, path: str, bodies: list[str], clients: int, n: int, patients: int) -> dict:
    """n requests from `clients` processes at once (shares differ by at most one); requests /
    (last client's end - first client's start), p50 and p99 of all latencies."""
    port = int(base.rsplit(":", 1)[1])
    shares = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
    requests = http_requests(path, bodies, n, patients, port, random.randrange(1 << 30))
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(clients), context.Queue()
    processes, offset = [], 0
    for share in shares:
        share_of = requests[offset:offset + share]
        processes.append(context.Process(target=_client, args=(port, share_of, barrier, results)))
        offset += share
    for process in processes:
        process.start()
    done = [results.get(timeout=ROUND_TIMEOUT) for _ in processes]
    for process in processes:
        process.join()
    latencies = sorted(x for _, _, lat, _ in done for x in lat)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3

    # The requests alternate bodies[0], bodies[1] over the whole list: ceil(n/2) of the first.
    return {"requests": len(latencies), "seconds": max(d[1] for d in done) - min(d[0] for d in done),
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "failures": sum(d[3] for d in done),
            "kinds": [(n + 1) // 2, n // 2]}


# --- checks before measuring -------------------------------------------------------------------------


def check_answers(base: str, patients: int, samples: int) -> Counter:
    """FindDocuments answers, LeafClass and ObjectRef, for random patients: Success and the
    patient's 10 entries. Returns the queries sent (by returnType)."""
    rng = random.Random(7)
    sent: Counter = Counter()
    for kind, template in zip(KINDS, templates("/registry")):
        tag = f"{{{RIM}}}ExtrinsicObject" if kind == "LeafClass" else f"{{{RIM}}}ObjectRef"
        for _ in range(samples):
            p = rng.randrange(patients)
            status, message = run.post(base + "/registry", corpus.fill(template, p).encode(), STORED_QUERY)
            sent[kind] += 1
            found = len(message.body.findall(f".//{tag}"))
            if status != 200 or message.body.get("status") != run.SUCCESS or found != corpus.DOCUMENTS_PER_PATIENT:
                raise SystemExit(f"FindDocuments {kind} for patient {p} at {base}: HTTP {status}, "
                                 f"{found} entries: {etree.tostring(message.body)[:1500]!r}")
    return sent


# --- the run ---------------------------------------------------------------------------------------


class Side:
    """One `xds serve` of the comparison: A (audit off), B (audit on) or C (audit on, delivery
    paused: this process holds the spool's delivery lock, so records only go into the spool)."""

    def __init__(self, name: str, what: str, url: str, workers: int, data_dir: Path, destination: str | None):
        self.name, self.what, self.data_dir = name, what, data_dir
        shutil.rmtree(data_dir, ignore_errors=True)  # an empty spool: the receiver gets this run's records
        data_dir.mkdir(parents=True)
        self.receiver = Receiver(destination) if destination else None
        self.server = run.Server(url, workers, data_dir)
        self.server.env["XDS_AUDIT_DESTINATIONS"] = self.receiver.url if self.receiver else ""
        self.expected: Counter = Counter()  # ITI-18 queries answered, by returnType
        self._lock = None

    def pause_delivery(self) -> None:
        """Take the spool's delivery lock (xds.audit.trail: the deliverer waits for it)."""
        import fcntl

        (self.data_dir / "audit-spool").mkdir(exist_ok=True)
        self._lock = open(self.data_dir / "audit-spool" / "deliver.lock", "a+b")
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def resume_delivery(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def answered(self, kinds) -> None:
        if self.receiver:
            self.expected.update(dict(zip(KINDS, kinds)))


def _git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "xds"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.split("\n")
        changed = [line[3:] for line in dirty if line.strip()]
        return head + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=1000, help="requests per round and server (default 1000)")
    parser.add_argument("--rounds", type=int, default=6,
                        help="rounds per concurrency; the order of the servers reverses every round (default 6)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of each xds serve (default 2)")
    parser.add_argument("--concurrency", default="1,8", help="concurrent clients, comma-separated (default 1,8)")
    parser.add_argument("--destination", choices=("tcp", "udp"), default="tcp",
                        help="how the audited servers send records to the receiver (default tcp, lossless)")
    parser.add_argument("--patients", type=int, default=500, help="corpus patients in the registry (default 500)")
    parser.add_argument("--warmup", type=int, default=300, help="requests per server before measuring")
    parser.add_argument("--no-paused", dest="paused", action="store_false",
                        help="leave out C, the audited server whose delivery is paused")
    parser.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                        help="skip the in-process timing of the audit steps")
    parser.add_argument("--dir", default=str(VAR), help="registry, server data and results")
    args = parser.parse_args(argv)
    root = Path(args.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{root / 'registry.sqlite3'}"
    concurrency = [int(c) for c in args.concurrency.split(",")]
    client = "Python, one process per client, raw sockets, a new connection per request"
    started, code = time.strftime("%Y-%m-%d %H:%M"), _git_state()

    print(f"== registry: {args.patients} patients, {args.patients * corpus.DOCUMENTS_PER_PATIENT} "
          f"DocumentEntries ({url})", flush=True)
    load.load(url, args.patients, workers=2)

    sides = [Side("A", "audit off", url, args.workers, root / "server-off", None),
             Side("B", "audit on", url, args.workers, root / "server-on", args.destination)]
    if args.paused:
        sides.append(Side("C", "audit on, delivery paused", url, args.workers, root / "server-paused",
                          args.destination))
        sides[2].pause_delivery()
    by_name = {side.name: side for side in sides}
    floor_server = by_name["A"].server
    rounds: list[dict] = []
    print(f"== code {code}; gunicorn sync workers: {args.workers} per server; client: {client}; "
          f"{args.queries} queries per round; load average {os.getloadavg()[0]:.2f}", flush=True)
    for side in sides:
        to = f", records to {side.receiver.url}" if side.receiver else ""
        print(f"  {side.name}: {side.what}{to}", flush=True)
    leaf_obj, null_bodies = templates("/registry"), templates("/null")

    def measure(side: Side | None, path: str, c: int, n: int) -> dict:
        server = side.server if side else floor_server
        r = drive(server.base, path, null_bodies if side is None else leaf_obj, c, n, args.patients)
        if r["failures"] or r["requests"] != n:
            raise SystemExit(f"{server.base}{path}, {c} clients: {r['requests']} answers to {n} "
                             f"requests, {r['failures']} failed")
        r["per_second"] = n / r["seconds"]
        if side is not None:
            side.answered(r["kinds"])
            if side.name == "B":  # its records must all be in before anything else is measured
                r["drain_s"] = side.receiver.wait_for(sum(side.expected.values()))
        return r

    running: list[Side] = []
    try:
        for side in sides:
            side.server.__enter__()
            running.append(side)
        for side in sides:
            sent = check_answers(side.server.base, args.patients, 20)
            side.answered([sent[k] for k in KINDS])
        print("  checked: FindDocuments LeafClass and ObjectRef answer each patient's 10 entries on every server",
              flush=True)
        for c in concurrency:
            measure(None, "/null", c, args.warmup)
            for side in sides:
                measure(side, "/registry", c, args.warmup)
            for i in range(args.rounds):
                load_before = os.getloadavg()[0]
                order = "".join(s.name for s in (sides if i % 2 == 0 else reversed(sides)))
                row = {"clients": c, "round": i + 1, "order": order, "floor": measure(None, "/null", c, args.queries)}
                for name in order:
                    row[name] = measure(by_name[name], "/registry", c, args.queries)
                row["load"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
                rounds.append(row)
                print(f"  {c} clients, round {i + 1} ({order}): floor {row['floor']['per_second']:6.0f} req/s  " +
                      "  ".join(f"{n} {row[n]['per_second']:6.1f} req/s p50 {row[n]['p50_ms']:5.2f} "
                                f"p99 {row[n]['p99_ms']:6.2f}" for n in sorted(by_name)) +
                      "  " + "  ".join(f"{n}/A {row[n]['per_second'] / row['A']['per_second']:.3f}"
                                       for n in sorted(by_name) if n != "A") +
                      f"  load {row['load'][0]:.2f}-{row['load'][1]:.2f}", flush=True)
        # C's records have waited in its spool: let its deliverer take over and send them all.
        for side in sides:
            side.resume_delivery()
        spools, records = {}, {}
        for side in sides:
            if side.receiver is None:
                continue
            side.receiver.wait_for(sum(side.expected.values()), timeout=300)
            deadline = time.monotonic() + 60
            while (spool := spool_state(side.data_dir, side.receiver.url))["waiting"] and time.monotonic() < deadline:
                time.sleep(0.1)
            spools[side.name] = spool
        time.sleep(0.5)  # anything sent late would arrive by now
    finally:
        for side in running:
            side.server.__exit__()
        for side in sides:
            side.resume_delivery()
            if side.receiver:
                side.receiver.close()
    for side in sides:
        if side.receiver is None:
            continue
        if spools[side.name]["waiting"] or spools[side.name]["refused"]:
            raise SystemExit(f"{side.name}'s spool did not drain: {spools[side.name]}")
        records[side.name] = verify_records(side.receiver.messages, side.expected)
        print(f"  verified {side.name}: the receiver got {records[side.name]['iti18']} ITI-18 records for the "
              f"{dict(side.expected)} queries {side.name} answered (one each, outcome 0), other records "
              f"{records[side.name]['other']}; spool after: {spools[side.name]}", flush=True)

    report = {"started": started, "code": code, "host_cpus": os.cpu_count(), "client": client,
              "workers": args.workers, "queries": args.queries, "destination": args.destination,
              "patients": args.patients, "sides": {s.name: s.what for s in sides}, "rounds": rounds,
              "summary": summarize(rounds, sorted(by_name)), "records": records, "spools": spools,
              "loadavg_end": os.getloadavg()}
    if args.breakdown:
        report["breakdown"] = breakdown(url, root / "inprocess", args.patients)
    (root / "results.json").write_text(json.dumps(report, indent=2))
    print(markdown(report))
    return 0


def summarize(rounds: list[dict], names: list[str]) -> list[dict]:
    """Per concurrency: each server's throughput over all its rounds (requests / seconds), the
    medians of the rounds' p50 and p99, and each audited server's ratio to A (pooled, and its
    range over the rounds)."""
    out = []
    for c in sorted({r["clients"] for r in rounds}):
        rs = [r for r in rounds if r["clients"] == c]
        row = {"clients": c, "rounds": len(rs)}
        for side in ["floor", *names]:
            row[side] = {"per_second": sum(r[side]["requests"] for r in rs) / sum(r[side]["seconds"] for r in rs),
                         "p50_ms": median(r[side]["p50_ms"] for r in rs),
                         "p99_ms": median(r[side]["p99_ms"] for r in rs),
                         "requests": sum(r[side]["requests"] for r in rs)}
            if side not in ("floor", "A"):
                per_round = [r[side]["per_second"] / r["A"]["per_second"] for r in rs]
                row[side]["ratio"] = row[side]["per_second"] / row["A"]["per_second"]
                row[side]["ratio_rounds"] = [min(per_round), median(per_round), max(per_round)]
        row["drain_ms_max"] = max(r["B"]["drain_s"] for r in rs) * 1000
        row["load"] = [min(r["load"][0] for r in rs), max(r["load"][1] for r in rs)]
        out.append(row)
    return out


def markdown(report: dict) -> str:
    lines = [f"Code {report['code']}, {report['started']}. {report['workers']} sync workers per server; "
             f"{report['queries']} FindDocuments per round and server (LeafClass/ObjectRef alternating); "
             f"audit records over {report['destination']}; client: {report['client']}.",
             "",
             "| clients | server | req/s | ratio to floor | p50 ms | p99 ms | audited / unaudited (rounds: min-max) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for s in report["summary"]:
        floor = s["floor"]["per_second"]
        for side in ["floor", *sorted(report["sides"])]:
            v = s[side]
            name = "null (floor, on A)" if side == "floor" else f"{side}: {report['sides'][side]}"
            b_a = ""
            if "ratio" in v:
                lo, _, hi = v["ratio_rounds"]
                b_a = f"**{v['ratio']:.3f}** ({lo:.3f}-{hi:.3f})"
            to_floor = "" if side == "floor" else f"{v['per_second'] / floor:.3f}"
            lines.append(f"| {s['clients']} | {name} | {v['per_second']:.0f} | {to_floor} | "
                         f"{v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {b_a} |")
    lines.append("")
    for s in report["summary"]:
        b = s["B"]["ratio"]
        lines.append(f"- {s['clients']} clients, {s['rounds']} rounds: audited throughput {b:.3f} of unaudited, a "
                     f"cost of {(1 - b) * 100:.1f}% (target <= 10%: {'met' if b >= 0.9 else 'NOT met'}); "
                     f"B's records all at the receiver at most {s['drain_ms_max']:.0f} ms after a round; "
                     f"load average {s['load'][0]:.2f}-{s['load'][1]:.2f}")
    for name, r in report["records"].items():
        lines.append(f"- {name}'s receiver: ITI-18 records {r['iti18']} = the queries {name} answered; "
                     f"other records {r['other']}")
    if "breakdown" in report:
        lines += ["", breakdown_markdown(report["breakdown"])]
    return "\n".join(lines)


# --- in process: what each step of the audit costs ------------------------------------------------------


class _Timers:
    """Wraps functions to add up the wall time spent in them, by phase and label."""

    def __init__(self) -> None:
        self.phase = ""
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, owner, name: str, label: str, by_thread: bool = False) -> None:
        original = getattr(owner, name)

        def timed(*a, **k):
            key = label
            if by_thread:
                key += " [sender]" if threading.current_thread().name.startswith("audit-") else " [request]"
            start = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                self.seconds[self.phase, key] += time.perf_counter() - start
                self.calls[self.phase, key] += 1

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))

    def undo(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


PHASES = ("off", "paused", "paused-fsync-each", "delivered")
PHASE_NAMES = {"off": "off", "paused": "on, delivery paused (records only spooled; group commit)",
               "paused-fsync-each": "the same, audit_spool_fsync_interval=0 (an fsync in every request)",
               "delivered": "on, delivered (the sender thread in this process)"}


def breakdown(url: str, data_dir: Path, patients: int, calls: int = 400, blocks: int = 5) -> dict:
    """FindDocuments (LeafClass/ObjectRef alternating) through the WSGI app in this process, in
    alternating blocks: audit off; audit on with delivery paused (records only spooled); the
    same with audit_spool_fsync_interval=0 (every record fsynced in its request);
    audit on and delivered (to a receiver here; each block waits until it has all). Wall and CPU
    time per query (CPU: all threads of this process, kernel time included), each audit step
    timed (wall time; the sender thread's steps overlap the requests'); then the spool's append
    alone with and without its own fsync, the disk's write+fsync, and a cProfile listing of
    the delivered case (data_dir/../profile.txt)."""
    import cProfile
    import fcntl
    import io
    import pstats
    from wsgiref.util import setup_testing_defaults

    from xds import config
    from xds.app import create_app
    from xds.audit import actors, spool, trail, transport

    print("== in process: the audit steps timed one by one", flush=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    receiver = Receiver("tcp")
    apps = {}
    locks = []
    timers = _Timers()
    # Each app takes actors.record as it is made (an after-hook): wrapped before, or never timed.
    # Until the timed blocks timers.phase is "", which no step of the results counts.
    timers.wrap(actors, "record", "audit, all of it (actors.record)")
    for phase in PHASES:
        (data_dir / phase).mkdir(parents=True)
        env = {"XDS_DATABASE_URL": url, "XDS_DATA_DIR": str(data_dir / phase)}
        if phase != "off":
            env["XDS_AUDIT_DESTINATIONS"] = receiver.url
        if phase == "paused-fsync-each":
            env["XDS_AUDIT_SPOOL_FSYNC_INTERVAL"] = "0"
        if phase.startswith("paused"):
            (data_dir / phase / "audit-spool").mkdir()
            locks.append(open(data_dir / phase / "audit-spool" / "deliver.lock", "a+b"))
            fcntl.flock(locks[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)
        apps[phase] = create_app(config.load(env=env))
    bodies = [corpus.fill(t, p).encode() for p in range(patients) for t in templates("/registry")]
    random.Random(3).shuffle(bodies)

    def call(app, body: bytes) -> bytes:
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/registry", "CONTENT_LENGTH": str(len(body)),
                   "CONTENT_TYPE": run.content_type(STORED_QUERY), "wsgi.input": io.BytesIO(body),
                   "wsgi.input_terminated": True, "REMOTE_ADDR": "127.0.0.1"}
        setup_testing_defaults(environ)
        return b"".join(app(environ, lambda *a, **k: None))

    delivered = 0

    def block(phase: str, n: int) -> tuple[float, float]:
        """Wall and CPU ms per query; a delivered block ends when the receiver has it all."""
        nonlocal delivered
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            call(apps[phase], bodies[i % len(bodies)])
        if phase == "delivered":
            delivered += n
            receiver.wait_for(delivered)
        return (time.perf_counter() - start) / n * 1000, (time.process_time() - cpu) / n * 1000

    ms: dict[str, list[float]] = defaultdict(list)
    cpu_ms: dict[str, list[float]] = defaultdict(list)
    try:
        for phase in apps:
            assert run.SUCCESS.encode() in call(apps[phase], bodies[0])
            delivered += phase == "delivered"
            block(phase, 100)
        timers.wrap(actors, "_values", "the transaction's values, the query's request bytes (actors._values)")
        timers.wrap(trail.AuditTrail, "record_transaction", "the values kept (record_transaction: JSON, append)")
        timers.wrap(spool.AuditSpool, "append", "spool.append (into the mapped segment; + fdatasync when fsync_interval is 0)")
        timers.wrap(trail.AuditTrail, "_message", "sender: message and syslog header written from the values")
        timers.wrap(spool.Cursor, "read", "sender: Cursor.read (reads a batch)")
        timers.wrap(spool.Cursor, "advance", "sender: Cursor.advance (cursor file, purge)")
        timers.wrap(transport.StreamDestination, "send", "sender: socket send")
        for _ in range(blocks):
            for phase in apps:
                timers.phase = phase
                wall, cpu = block(phase, calls)
                ms[phase].append(wall)
                cpu_ms[phase].append(cpu)
        timers.undo()
        steps = {phase: {label: {"ms_per_query": timers.seconds[phase, label] / (calls * blocks) * 1000,
                                 "calls": timers.calls[phase, label]}
                         for (p, label) in timers.seconds if p == phase}
                 for phase in PHASES[1:]}
        profile = cProfile.Profile()
        profile.enable()
        block("delivered", calls)
        profile.disable()
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(25)
        (data_dir.parent / "profile.txt").write_text(out.getvalue())
    finally:
        for phase in PHASES[1:]:
            apps[phase].audit.close()
        for lock in locks:
            lock.close()
        receiver.close()

    # The spool's append alone, fdatasynced in the call (fsync_interval 0) and not (group
    # commit: the trail syncs later), with a real record, alternating; then the disk's raw
    # write+fsync of the same bytes.
    frame = receiver.messages[-1]
    spools = {mode: spool.AuditSpool(data_dir / f"spool-{mode}", ["tcp://127.0.0.1:9"], 1 << 40, interval)
              for mode, interval in (("each", 0.0), ("group", 0.05))}
    append_ms: dict[str, list[float]] = defaultdict(list)
    for _ in range(5):
        for mode, s in spools.items():
            start = time.perf_counter()
            for _ in range(400):
                s.append(frame)
            append_ms[mode].append((time.perf_counter() - start) / 400 * 1000)
    fd = os.open(data_dir / "fsync-probe", os.O_WRONLY | os.O_CREAT)
    start = time.perf_counter()
    for _ in range(400):
        os.write(fd, frame)
        os.fsync(fd)
    fsync_ms = (time.perf_counter() - start) / 400 * 1000
    os.close(fd)
    result = {"ms": {phase: median(v) for phase, v in ms.items()}, "blocks_ms": ms, "calls_per_block": calls,
              "cpu_ms": {phase: median(v) for phase, v in cpu_ms.items()},
              "steps": steps, "append_ms": {mode: median(v) for mode, v in append_ms.items()},
              "write_fsync_ms": fsync_ms, "record_bytes": len(frame), "profile": str(data_dir.parent / "profile.txt")}
    return result


def breakdown_markdown(b: dict) -> str:
    off, off_cpu = b["ms"]["off"], b["cpu_ms"]["off"]
    lines = [f"In process (the WSGI app, no HTTP, one request at a time; median of {len(b['blocks_ms']['off'])} "
             f"alternating blocks of {b['calls_per_block']} FindDocuments):", "",
             "| audit | wall ms per query | added | CPU ms per query | added | CPU ratio to off |",
             "| --- | --- | --- | --- | --- | --- |"]
    for phase in PHASES:
        wall, cpu = b["ms"][phase], b["cpu_ms"][phase]
        # CPU, not wall: a delivered block ends when the receiver has all, which waits for the
        # sender's next batch (up to trail.BATCH_WAIT), idle time that is not the audit's cost.
        added = ("", "", "") if phase == "off" else (f"{wall - off:+.3f}", f"{cpu - off_cpu:+.3f}", f"{off_cpu / cpu:.3f}")
        lines.append(f"| {PHASE_NAMES[phase]} | {wall:.3f} | {added[0]} | {cpu:.3f} | {added[1]} | {added[2]} |")
    lines += ["", "| audit step, per query (wall time) | paused: ms | calls | delivered: ms | calls |",
              "| --- | --- | --- | --- | --- |"]
    labels = sorted(set(b["steps"]["paused"]) | set(b["steps"]["delivered"]),
                    key=lambda label: -b["steps"]["delivered"].get(label, {"ms_per_query": 0})["ms_per_query"])
    for label in labels:
        p = b["steps"]["paused"].get(label, {"ms_per_query": 0, "calls": 0})
        d = b["steps"]["delivered"].get(label, {"ms_per_query": 0, "calls": 0})
        lines.append(f"| {label} | {p['ms_per_query']:.3f} | {p['calls']} | {d['ms_per_query']:.3f} | {d['calls']} |")
    a = b["append_ms"]
    lines += ["", f"spool.append alone, one thread, no other writer ({b['record_bytes']}-byte record): "
              f"fdatasync in each {a['each']:.3f} ms, group commit {a['group']:.3f} ms; the disk's write+fsync of the "
              f"same bytes {b['write_fsync_ms']:.3f} ms. cProfile of the delivered case: {b['profile']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
