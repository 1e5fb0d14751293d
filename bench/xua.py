"""What XUA costs (issue 11, Speed): the CPU of verifying one X-User Assertion, and the
throughput FindDocuments keeps over HTTP when every request must carry one.

    python -m bench.xua [--verifications 2000] [--queries 1000] [--rounds 6] [--workers 2]
                        [--concurrency 1,8] [--users 20] [--patients 500] [--no-fresh] [--no-http]

Targets: verifying an assertion costs at most 1 ms of CPU at the median; with xua_policy =
required, FindDocuments keeps at least 85% of its throughput with XUA off, measured in the same
run.

1. Verification, in this process (xds.security.xua.AssertionVerifier, the server's own code),
   for assertions signed by tests/saml.py's identity providers with RSA-2048/SHA-256 and with
   ECDSA P-256/SHA-256, each as the server receives it (a saml2:Assertion in the wsse:Security
   header of a parsed SOAP envelope). CPU time of the calling thread (time.thread_time_ns)
   around each call; median and 90th percentile of --verifications calls after a warm-up:
     uncached  a verifier without a cache: serialization, digest, signxml's verification, the
               signed assertion read, the per-request checks;
     cached    the same assertion again: serialization and SHA-256 (the cache's key), the
               lookup, the per-request checks (time window, audience, subject confirmation);
   and, for context, the whole check the dispatcher runs per request (XuaCheck: the header
   found, the cached assertion checked, the Caller made), and what parsing the envelope costs
   with the assertion in it and without.

2. The WSGI app in this process, FindDocuments (LeafClass, 10 entries) for random patients,
   one request at a time: CPU per query (this thread's) with XUA off and required (the
   --users assertions reused), one call of each in turn. No HTTP, no client competing for the
   cores: the server's own cost.

3. Over HTTP (skip with --no-http): two `xds serve` over one SQLite registry (--patients corpus
   patients of bench/corpus.py, 10 DocumentEntries each, registered through the registry's own
   register() once into var/bench/xua and reused), bench/run.py's Server, --workers gunicorn workers each, audit off on both:
     A  xua_policy = off; FindDocuments without a wsse:Security header;
     B  xua_policy = required (the identity provider's certificate trusted; the audience is the
        endpoint URL as requested); FindDocuments each carrying the assertion of one of --users
        users, in turn (a client keeps its user's assertion for the session, as an X-Service
        User does: each worker verifies each assertion once, then finds it in its cache);
     B' (the same server, --no-fresh leaves it out) a new assertion in every request, none
        ever seen before: every request verified, the cache's worst case; informative.
   Rounds of exactly --queries requests per side, the order of the sides reversing every
   round, after the floor POST /null on A; throughput = requests / wall time of the round.
   Also the server's CPU per request in each round: user + system time of `xds serve` and its
   workers (/proc/PID/stat) over the round / requests (no worker is replaced during the run:
   max_requests is set out of reach). On a machine other work shares, wall-clock throughput
   moves with that work from one round to the next; the CPU a request costs the server moves
   far less, and a saturated server's throughput is its inverse.
   Client: bench/audit.py's (one Python process per concurrent client, raw sockets, a new
   connection per request, requests built before the round). Before measuring: A and B answer
   each patient's 10 entries, B refuses a request without an assertion (wsse:InvalidSecurity)
   and a changed one (wsse:FailedAuthentication); every measured answer must be a Success.

Results: tables on stdout and var/bench/xua/results.json. Everything goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import multiprocessing
import os
import random
import shutil
import sys
import time
from pathlib import Path
from statistics import median

from lxml import etree

from bench import audit, corpus, load, run
from tests import saml
from xds import config
from xds.security.caller import Caller
from xds.security.wssecurity import assertion_in, security_header
from xds.security.xua import AssertionVerifier, XuaCheck, XuaPolicy
from xds.soap import build_envelope, parse_message
from xds.transactions import ITI_18

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench" / "xua"
STORED_QUERY = run.STORED_QUERY
TARGET_CPU_MS = 1.0
TARGET_RATIO = 0.85
INPROCESS_URL = "http://127.0.0.1:8080/registry"
VALIDITY = dt.timedelta(hours=4)  # longer than any run: no assertion expires while measured


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def signed_assertion(idp: saml.IdentityProvider, audience: str, user: str = saml.USER):
    start = saml.now()
    return idp.signed(audience=audience, user=user, not_before=start - dt.timedelta(minutes=1),
                      not_on_or_after=start + VALIDITY)


def envelope(path_or_url: str, assertion=None) -> str:
    """A FindDocuments (LeafClass) envelope with bench/corpus placeholders, with `assertion` in a
    wsse:Security header (marked mustUnderstand, as IHE clients send it) or without one."""
    body = etree.fromstring(corpus.query_template("find_documents").encode())
    to = path_or_url if path_or_url.startswith("http") else f"http://127.0.0.1{path_or_url}"
    headers = [saml.security(assertion)] if assertion is not None else []
    return build_envelope(body, STORED_QUERY, to=to, message_id=run.MESSAGE_ID, header_blocks=headers).decode()


# --- 1. verification, in process --------------------------------------------------------------------


def _received(assertion):
    request = parse_message("application/soap+xml", build_envelope(
        etree.Element("{urn:x}Query"), "urn:x:Query", header_blocks=[saml.security(assertion)]))
    return assertion_in(security_header(request.header))


def _cpu_ms(call, n: int, warmup: int = 50) -> dict:
    for _ in range(warmup):
        call()
    cpu, wall = [], []
    for _ in range(n):
        start_wall, start = time.perf_counter_ns(), time.thread_time_ns()
        call()
        cpu.append((time.thread_time_ns() - start) / 1e6)
        wall.append((time.perf_counter_ns() - start_wall) / 1e6)
    return {"median_ms": median(cpu), "p90_ms": _percentile(cpu, 0.9), "wall_median_ms": median(wall), "calls": n}


def verification(folder: Path, n: int) -> dict:
    print(f"== 1. verification CPU, in process ({n} calls each)", flush=True)
    out: dict = {}
    for kind in ("rsa", "ec"):
        idp = saml.IdentityProvider(folder / f"idp-{kind}", f"bench-{kind}", kind=kind)
        assertion = _received(signed_assertion(idp, INPROCESS_URL))
        uncached = AssertionVerifier((idp.cert,), cache_size=0)
        cached = AssertionVerifier((idp.cert,))
        now = dt.datetime.now(dt.UTC)

        def verify(verifier=None, assertion=assertion, now=now):
            return verifier.verify(assertion, now=now, audiences=(INPROCESS_URL,))

        assert verify(uncached).name_id == saml.USER and verify(cached).name_id == saml.USER
        name = "RSA-2048, RSA-SHA256" if kind == "rsa" else "ECDSA P-256, ECDSA-SHA256"
        out[name] = {"uncached": _cpu_ms(lambda v=uncached: verify(v), n),
                     "cached": _cpu_ms(lambda v=cached: verify(v), n)}
        assert cached.cache.misses == 1, "the cached verifier verified more than once"
        out[name]["cache"] = {"hits": cached.cache.hits, "misses": cached.cache.misses}
        for mode in ("uncached", "cached"):
            r = out[name][mode]
            print(f"  {name:<26} {mode:<9} CPU median {r['median_ms']:.3f} ms  p90 {r['p90_ms']:.3f} ms  "
                  f"(wall median {r['wall_median_ms']:.3f} ms)", flush=True)

    # The dispatcher's whole check on a parsed request, and the parse with and without the header.
    idp = saml.IdentityProvider(folder / "idp-rsa", "bench-rsa")
    data_with = corpus.fill(envelope(INPROCESS_URL, signed_assertion(idp, INPROCESS_URL)), 1).encode()
    data_without = corpus.fill(envelope(INPROCESS_URL), 1).encode()
    environ = {"REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "HTTP_HOST": "127.0.0.1:8080",
               "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "PATH_INFO": "/registry"}
    request = parse_message(run.content_type(STORED_QUERY), data_with, environ=environ)
    check = XuaCheck(XuaPolicy("required"), AssertionVerifier((idp.cert,)))
    caller = Caller(address="127.0.0.1")
    assert check(ITI_18, request, caller).user.name_id == saml.USER
    out["XuaCheck, per request (cached)"] = _cpu_ms(lambda: check(ITI_18, request, caller), n)
    out["parse: envelope with the assertion"] = _cpu_ms(
        lambda: parse_message(run.content_type(STORED_QUERY), data_with, environ=environ), n)
    out["parse: envelope without"] = _cpu_ms(
        lambda: parse_message(run.content_type(STORED_QUERY), data_without, environ=environ), n)
    out["bytes"] = {"with": len(data_with), "without": len(data_without)}
    for name in ("XuaCheck, per request (cached)", "parse: envelope with the assertion", "parse: envelope without"):
        print(f"  {name:<38} CPU median {out[name]['median_ms']:.3f} ms", flush=True)
    return out


# --- the registry ---------------------------------------------------------------------------------------


def load_registry(url: str, folder: Path, patients: int) -> None:
    """The corpus's first `patients` patients, each submission registered through the registry's
    own register() (ITI-42 as the server stores it; a few seconds for 500 patients). Reused
    when it holds exactly them; made again otherwise."""
    from xds.app import create_app
    from xds.store import db
    from xds.store import patients as patient_ids

    path = Path(url.removeprefix("sqlite:///"))
    if path.exists():
        engine = db.make_engine(url)
        loaded = load.loaded_patients(engine)
        engine.dispose()
        if loaded == patients:
            print(f"  {patients} patients already registered", flush=True)
            return
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()
    db.upgrade(url)
    (folder / "loader").mkdir(parents=True, exist_ok=True)
    app = create_app(config.load(env={"XDS_DATABASE_URL": url, "XDS_DATA_DIR": str(folder / "loader"),
                                      "XDS_AUDIT_DESTINATIONS": ""}))
    with db.write_session(app.engine) as session:
        patient_ids.add(session, [corpus.patient_id(p) for p in range(patients)])
    start = time.monotonic()
    for p in range(patients):
        for xml in corpus.submissions(p):
            errors = [e for e in app.registry.register(etree.fromstring(xml.encode())) if e.is_error]
            if errors:
                raise SystemExit(f"the registry refused a corpus submission of patient {p}: {errors}")
    app.engine.dispose()
    print(f"  registered {patients * corpus.DOCUMENTS_PER_PATIENT} DocumentEntries in "
          f"{time.monotonic() - start:.0f} s", flush=True)


# --- 2. the WSGI app, in process -----------------------------------------------------------------------


def inprocess(url: str, folder: Path, idp: saml.IdentityProvider, patients: int, users: int,
              calls: int = 2000) -> dict:
    """FindDocuments through the whole WSGI app, XUA off and required, one call of each in
    turn (the order swapped every pair, so that a slow moment of this shared machine falls on
    both); CPU time of this thread per call (the request is answered in it; with audit off no
    other thread works for it)."""
    from xds.app import create_app

    print(f"== 2. the WSGI app in process: {calls} FindDocuments with XUA off and as many required, "
          "interleaved", flush=True)
    apps = {}
    for policy in ("off", "required"):
        env = {"XDS_DATABASE_URL": url, "XDS_DATA_DIR": str(folder / f"app-{policy}"), "XDS_XUA_POLICY": policy,
               "XDS_AUDIT_DESTINATIONS": ""}
        if policy == "required":
            env["XDS_XUA_TRUSTED_CERTIFICATES"] = str(idp.certificate)
        (folder / f"app-{policy}").mkdir(parents=True, exist_ok=True)
        apps[policy] = create_app(config.load(env=env))
    rng = random.Random(5)
    templates = {"off": [envelope(INPROCESS_URL)],
                 "required": [envelope(INPROCESS_URL, signed_assertion(idp, INPROCESS_URL, f"user{u}@bench.example"))
                              for u in range(users)]}
    patient_of = [rng.randrange(patients) for _ in range(calls)]  # the same patients for both
    bodies = {policy: [corpus.fill(t[i % len(t)], patient_of[i]).encode() for i in range(calls)]
              for policy, t in templates.items()}

    def call(app, body: bytes) -> bytes:
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/registry", "CONTENT_LENGTH": str(len(body)),
                   "CONTENT_TYPE": run.content_type(STORED_QUERY), "wsgi.input": io.BytesIO(body),
                   "wsgi.input_terminated": True, "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
                   "HTTP_HOST": "127.0.0.1:8080", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080"}
        return b"".join(app(environ, lambda *a, **k: None))

    for policy, app in apps.items():
        answer = call(app, bodies[policy][0])
        if run.SUCCESS.encode() not in answer or answer.count(b"<rim:ExtrinsicObject") != corpus.DOCUMENTS_PER_PATIENT:
            raise SystemExit(f"in process, XUA {policy}: not the patient's 10 entries: {answer[:1500]!r}")
        for body in bodies[policy][:200]:
            call(app, body)
    cpu: dict[str, list[float]] = {p: [] for p in apps}
    for i in range(calls):
        for policy in (("off", "required") if i % 2 == 0 else ("required", "off")):
            start = time.thread_time_ns()
            call(apps[policy], bodies[policy][i])
            cpu[policy].append((time.thread_time_ns() - start) / 1e6)
    result = {"calls": calls, "cpu_median_ms": {p: median(v) for p, v in cpu.items()},
              "cpu_mean_ms": {p: sum(v) / len(v) for p, v in cpu.items()}}
    result["cpu_ratio"] = result["cpu_mean_ms"]["off"] / result["cpu_mean_ms"]["required"]
    m = result["cpu_mean_ms"]
    print(f"  CPU per query, mean: off {m['off']:.3f} ms, required {m['required']:.3f} ms "
          f"(+{m['required'] - m['off']:.3f}); off/required {result['cpu_ratio']:.3f}; medians "
          f"{result['cpu_median_ms']['off']:.3f} / {result['cpu_median_ms']['required']:.3f} ms", flush=True)
    return result


# --- 3. over HTTP ----------------------------------------------------------------------------------------


def raw_requests(port: int, templates: list[str], n: int, patients: int, seed: int) -> list[bytes]:
    """n whole HTTP requests: templates taken in turn, random corpus patients. Each asks the
    server to close the connection after its answer (gthread workers keep it open otherwise,
    and the client reads each answer to the connection's end)."""
    rng = random.Random(seed)
    head = (f"POST /registry HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
            f"Content-Type: {run.content_type(STORED_QUERY)}\r\n").encode()
    out = []
    for i in range(n):
        body = corpus.fill(templates[i % len(templates)], rng.randrange(patients)).encode()
        out.append(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return out


def drive(port: int, requests: list[bytes], clients: int) -> dict:
    """`requests` sent by `clients` processes at once (bench/audit.py's client): requests / wall
    time from the first client's start to the last one's end, p50 and p99 latencies."""
    shares = [len(requests) // clients + (1 if i < len(requests) % clients else 0) for i in range(clients)]
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(clients), context.Queue()
    processes, offset = [], 0
    for share in shares:
        processes.append(context.Process(target=audit._client,
                                         args=(port, requests[offset:offset + share], barrier, results)))
        offset += share
    for process in processes:
        process.start()
    done = [results.get(timeout=audit.ROUND_TIMEOUT) for _ in processes]
    for process in processes:
        process.join()
    latencies = sorted(x for _, _, lat, _ in done for x in lat)
    seconds = max(d[1] for d in done) - min(d[0] for d in done)
    return {"requests": len(latencies), "seconds": seconds, "per_second": len(latencies) / seconds,
            "p50_ms": _percentile(latencies, 0.5) * 1e3, "p99_ms": _percentile(latencies, 0.99) * 1e3,
            "failures": sum(d[3] for d in done)}


def server_cpu(pid: int) -> tuple[float, frozenset[int]]:
    """CPU seconds (user + system) used so far by `xds serve` at `pid` and its children (the
    gunicorn workers), and the children's pids (a round during which a worker was replaced
    cannot be counted: the CPU of the one that left is gone with it)."""
    try:
        children = frozenset(int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        children = frozenset()
    ticks = 0
    for process in (pid, *children):
        try:  # utime and stime: fields 14 and 15 of /proc/PID/stat, counted after the command's ")"
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK"), children


def _post(base: str, body: bytes):
    return run.post(base + "/registry", body, STORED_QUERY)


def check_servers(off: run.Server, required: run.Server, templates: dict, idp, patients: int) -> None:
    """A and B answer each patient's 10 entries; B refuses a request without an assertion and
    one with a changed assertion."""
    rng = random.Random(11)
    for name, server, template in (("A", off, templates["A"][0]), ("B", required, templates["B"][0])):
        for _ in range(10):
            p = rng.randrange(patients)
            status, message = _post(server.base, corpus.fill(template, p).encode())
            found = len(message.body.findall(f".//{{{corpus.RIM}}}ExtrinsicObject"))
            if status != 200 or message.body.get("status") != run.SUCCESS or found != corpus.DOCUMENTS_PER_PATIENT:
                raise SystemExit(f"{name}: FindDocuments for patient {p}: HTTP {status}, {found} entries: "
                                 f"{etree.tostring(message.body)[:1500]!r}")
    status, message = _post(required.base, corpus.fill(envelope("/registry"), 1).encode())
    codes = [v.text for v in message.body.iter("{http://www.w3.org/2003/05/soap-envelope}Value")]
    if status != 400 or codes != ["env:Sender", "wsse:InvalidSecurity"]:
        raise SystemExit(f"B answered a request without an assertion with HTTP {status} {codes}: XUA is not required")
    changed = signed_assertion(idp, required.base + "/registry")
    changed.find(f"{{{saml.SAML2}}}Subject/{{{saml.SAML2}}}NameID").text = "someone.else@bench.example"
    status, message = _post(required.base, corpus.fill(envelope("/registry", changed), 1).encode())
    codes = [v.text for v in message.body.iter("{http://www.w3.org/2003/05/soap-envelope}Value")]
    if status != 400 or codes != ["env:Sender", "wsse:FailedAuthentication"]:
        raise SystemExit(f"B answered a changed assertion with HTTP {status} {codes}")
    print("  checked: A and B answer each patient's 10 entries; B refuses no assertion (wsse:InvalidSecurity) "
          "and a changed one (wsse:FailedAuthentication)", flush=True)


def http(url: str, folder: Path, idp: saml.IdentityProvider, args) -> dict:
    print(f"== 3. over HTTP: {args.workers} workers per server, {args.queries} FindDocuments per round and side",
          flush=True)
    servers = {}
    for name, policy in (("A", "off"), ("B", "required")):
        data_dir = folder / f"server-{policy}"
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        server = run.Server(url, args.workers, data_dir)
        # Audit off on both; no worker replaced during the run (max_requests), so that the
        # servers' CPU per request can be counted round by round.
        server.env.update(XDS_XUA_POLICY=policy, XDS_AUDIT_DESTINATIONS="", XDS_MAX_REQUESTS="10000000")
        if policy == "required":
            server.env["XDS_XUA_TRUSTED_CERTIFICATES"] = str(idp.certificate)
        servers[name] = server
    running = []
    rounds = []
    try:
        for server in servers.values():
            server.__enter__()
            running.append(server)
        b_url = servers["B"].base + "/registry"
        templates = {"A": [envelope("/registry")],
                     "B": [envelope("/registry", signed_assertion(idp, b_url, f"user{u}@bench.example"))
                           for u in range(args.users)]}
        check_servers(servers["A"], servers["B"], templates, idp, args.patients)
        sides = ["A", "B"] + (["B'"] if args.fresh else [])
        ports = {"A": servers["A"].port, "B": servers["B"].port, "B'": servers["B"].port}

        def requests_for(side: str, n: int) -> list[bytes]:
            seed = random.randrange(1 << 30)
            if side == "B'":  # a new assertion for every request, none seen before
                fresh = [envelope("/registry", signed_assertion(idp, b_url, f"fresh{i}@bench.example"))
                         for i in range(n)]
                return raw_requests(ports[side], fresh, n, args.patients, seed)
            return raw_requests(ports[side], templates[side], n, args.patients, seed)

        def measure(side: str | None, clients: int, n: int) -> dict:
            if side is None:  # the floor: POST /null on A, the same body as A's
                port = servers["A"].port
                requests = [r.replace(b"POST /registry ", b"POST /null ", 1)
                            for r in raw_requests(port, templates["A"], n, args.patients, 1)]
            else:
                port, requests = ports[side], requests_for(side, n)
            pid = servers["B" if side in ("B", "B'") else "A"].process.pid
            cpu_before, workers_before = server_cpu(pid)
            r = drive(port, requests, clients)
            cpu_after, workers_after = server_cpu(pid)
            r["server_cpu_ms"] = ((cpu_after - cpu_before) / n * 1000
                                  if workers_before == workers_after and workers_after else None)
            if r["failures"] or r["requests"] != n:
                raise SystemExit(f"{side or 'floor'}, {clients} clients: {r['requests']} answers to {n} requests, "
                                 f"{r['failures']} not a Success")
            return r

        for c in args.concurrency:
            measure(None, c, args.warmup)
            for side in sides:
                measure(side, c, args.warmup)
            for i in range(args.rounds):
                order = sides if i % 2 == 0 else list(reversed(sides))
                load_before = os.getloadavg()[0]
                row = {"clients": c, "round": i + 1, "order": " ".join(order), "floor": measure(None, c, args.queries)}
                for side in order:
                    row[side] = measure(side, c, args.queries)
                row["load"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
                rounds.append(row)
                print(f"  {c} clients, round {i + 1} ({row['order']}): floor {row['floor']['per_second']:6.0f}/s  " +
                      "  ".join(f"{s} {row[s]['per_second']:6.1f}/s p50 {row[s]['p50_ms']:5.2f} "
                                f"cpu {row[s]['server_cpu_ms'] or float('nan'):.2f}" for s in sides) +
                      "  " + "  ".join(f"{s}/A {row[s]['per_second'] / row['A']['per_second']:.3f}"
                                       for s in sides if s != "A") +
                      f"  load {row['load'][0]:.1f}-{row['load'][1]:.1f}", flush=True)
    finally:
        for server in running:
            server.__exit__()
    return {"sides": sides, "rounds": rounds, "summary": summarize(rounds, sides)}


def summarize(rounds: list[dict], sides: list[str]) -> list[dict]:
    """Per concurrency: each side's throughput over all its rounds (requests / seconds), the
    medians of the rounds' p50 and p99, and each XUA side's ratio to A (pooled, and the
    rounds' min, median, max)."""
    out = []
    for c in sorted({r["clients"] for r in rounds}):
        rs = [r for r in rounds if r["clients"] == c]
        row: dict = {"clients": c, "rounds": len(rs), "load": [min(r["load"][0] for r in rs), max(r["load"][1] for r in rs)]}
        for side in ["floor", *sides]:
            counted = [r[side]["server_cpu_ms"] for r in rs if r[side]["server_cpu_ms"] is not None]
            row[side] = {"per_second": sum(r[side]["requests"] for r in rs) / sum(r[side]["seconds"] for r in rs),
                         "p50_ms": median(r[side]["p50_ms"] for r in rs), "p99_ms": median(r[side]["p99_ms"] for r in rs),
                         "server_cpu_ms": sum(counted) / len(counted) if counted else None,
                         "cpu_rounds": len(counted)}
            if side not in ("floor", "A"):
                per_round = [r[side]["per_second"] / r["A"]["per_second"] for r in rs]
                row[side]["ratio"] = row[side]["per_second"] / row["A"]["per_second"]
                row[side]["ratio_rounds"] = [min(per_round), median(per_round), max(per_round)]
                if row[side]["server_cpu_ms"] and row["A"]["server_cpu_ms"]:
                    row[side]["cpu_ratio"] = row["A"]["server_cpu_ms"] / row[side]["server_cpu_ms"]
        out.append(row)
    return out


SIDE_NAMES = {"floor": "null (floor, on A)", "A": "A: xua_policy off",
              "B": "B: xua_policy required, each user's assertion reused",
              "B'": "B': required, a new assertion in every request"}


def http_table(h: dict, side_names: dict[str, str]) -> list[str]:
    """The rows of the over-HTTP table (floor and each side, per concurrency), with its header;
    bench/consent.py writes the same table."""
    lines = ["| clients | server | req/s | p50 ms | p99 ms | throughput ratio to A (rounds: min-median-max) "
             "| server CPU ms per request | A's CPU / this CPU |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in h["summary"]:
        for side in ["floor", *h["sides"]]:
            r = s[side]
            ratio = ""
            if "ratio" in r:
                lo, mid, hi = r["ratio_rounds"]
                ratio = f"**{r['ratio']:.3f}** ({lo:.3f}-{mid:.3f}-{hi:.3f})"
            cpu = f"{r['server_cpu_ms']:.3f}" if r["server_cpu_ms"] else ""
            cpu_ratio = f"**{r['cpu_ratio']:.3f}**" if "cpu_ratio" in r else ""
            lines.append(f"| {s['clients']} | {side_names[side]} | {r['per_second']:.0f} | {r['p50_ms']:.2f} | "
                         f"{r['p99_ms']:.2f} | {ratio} | {cpu} | {cpu_ratio} |")
    return lines


def markdown(report: dict) -> str:
    lines = [f"Code {report['code']}, {report['started']}; {report['host_cpus']} CPUs; load average at the start "
             f"{report['load_start']:.1f}.", ""]
    v = report["verification"]
    lines += ["CPU per verification (thread CPU time; median and 90th percentile of "
              f"{v['RSA-2048, RSA-SHA256']['uncached']['calls']} calls):", "",
              "| assertion signed with | uncached: median | p90 | cached: median | p90 |", "| --- | --- | --- | --- | --- |"]
    for name in ("RSA-2048, RSA-SHA256", "ECDSA P-256, ECDSA-SHA256"):
        u, c = v[name]["uncached"], v[name]["cached"]
        lines.append(f"| {name} | **{u['median_ms']:.3f} ms** | {u['p90_ms']:.3f} | **{c['median_ms']:.3f} ms** | "
                     f"{c['p90_ms']:.3f} |")
    worst = max(v[name]["uncached"]["median_ms"] for name in ("RSA-2048, RSA-SHA256", "ECDSA P-256, ECDSA-SHA256"))
    lines += ["", f"- target <= {TARGET_CPU_MS:g} ms at the median, uncached: {'met' if worst <= TARGET_CPU_MS else 'NOT met'} "
              f"({worst:.3f} ms)",
              f"- the dispatcher's whole check per request (cached): {v['XuaCheck, per request (cached)']['median_ms']:.3f} ms; "
              f"parsing the envelope: {v['parse: envelope with the assertion']['median_ms']:.3f} ms with the assertion "
              f"({v['bytes']['with']} bytes), {v['parse: envelope without']['median_ms']:.3f} ms without "
              f"({v['bytes']['without']} bytes)"]
    if "inprocess" in report:
        p = report["inprocess"]
        m, md = p["cpu_mean_ms"], p["cpu_median_ms"]
        lines += ["", f"The WSGI app in process, FindDocuments (LeafClass, 10 entries), {p['calls']} calls each, "
                  f"interleaved: CPU per query (mean) {m['off']:.3f} ms off, {m['required']:.3f} ms required "
                  f"(medians {md['off']:.3f} / {md['required']:.3f}); **off/required {p['cpu_ratio']:.3f}**."]
    if "http" in report:
        h = report["http"]
        lines += ["", f"Over HTTP: {report['workers']} workers per `xds serve`, {report['queries']} FindDocuments per round "
                  f"and side, {report['users']} users' assertions in turn on B:", ""]
        lines += http_table(h, SIDE_NAMES)
        lines.append("")
        for s in h["summary"]:
            b, c = s["B"]["ratio"], s["B"].get("cpu_ratio", float("nan"))
            lines.append(f"- {s['clients']} clients, {s['rounds']} rounds: required keeps {b:.3f} of the throughput "
                         f"with XUA off (target >= {TARGET_RATIO}: {'met' if b >= TARGET_RATIO else 'NOT met'}); by the "
                         f"servers' CPU per request {c:.3f} ({'met' if c >= TARGET_RATIO else 'NOT met'}); "
                         f"load average {s['load'][0]:.1f}-{s['load'][1]:.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.xua", description=__doc__.split("\n\n")[0])
    parser.add_argument("--verifications", type=int, default=2000, help="timed calls per case (default 2000)")
    parser.add_argument("--queries", type=int, default=1000, help="requests per round and side (default 1000)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per concurrency (default 6)")
    parser.add_argument("--warmup", type=int, default=300, help="requests per side before measuring")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of each xds serve (default 2)")
    parser.add_argument("--concurrency", default="1,8", help="concurrent clients, comma-separated (default 1,8)")
    parser.add_argument("--users", type=int, default=20, help="users whose assertions B's requests carry (default 20)")
    parser.add_argument("--patients", type=int, default=500, help="corpus patients in the registry (default 500)")
    parser.add_argument("--no-fresh", dest="fresh", action="store_false",
                        help="leave out B', a new assertion in every request")
    parser.add_argument("--no-http", dest="http", action="store_false", help="in process only")
    parser.add_argument("--dir", default=str(VAR), help="registry, servers' data and results")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    root = Path(args.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    report = {"started": time.strftime("%Y-%m-%d %H:%M"), "code": audit._git_state(), "host_cpus": os.cpu_count(),
              "load_start": os.getloadavg()[0], "workers": args.workers, "queries": args.queries,
              "users": args.users, "patients": args.patients}
    report["verification"] = verification(root, args.verifications)
    url = f"sqlite:///{root / 'registry.sqlite3'}"
    print(f"== registry: {args.patients} patients, {args.patients * corpus.DOCUMENTS_PER_PATIENT} DocumentEntries "
          f"({url})", flush=True)
    load_registry(url, root, args.patients)
    idp = saml.IdentityProvider(root / "idp", "bench-idp")
    report["inprocess"] = inprocess(url, root, idp, args.patients, args.users)
    if args.http:
        report["http"] = http(url, root, idp, args)
    report["load_end"] = os.getloadavg()[0]
    (root / "results.json").write_text(json.dumps(report, indent=2))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
