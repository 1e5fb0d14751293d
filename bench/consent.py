"""What access control costs FindDocuments (issue 12, Speed): the throughput FindDocuments keeps
with access_control = consent against access_control = off, measured in the same run.

    python -m bench.consent [--queries 1000] [--rounds 6] [--warmup 300] [--workers 2]
                            [--concurrency 1,8] [--users 20] [--patients 500] [--no-http]

Target: with consent on, FindDocuments keeps at least 85% of its throughput without it.

The registry: the corpus's first --patients patients of bench/corpus.py (10 DocumentEntries
each), registered through the registry's own register() into var/bench/consent (bench/xua.py's
loader; reused by the next run), each patient also a person of the PIX Manager (a feed of its
id) with a consent that allows facility F, the models taken in turn: blanket, per facility
(F and another), per person (the users of the run), implied, blanket with another facility
excluded. Every patient has one to three consent records (the latest is read).

Both sides require XUA and carry the same assertions (one of --users users of facility F, its
organization-id, in turn): the facility of a request comes from its assertion, so the only
difference between them is consent, whose cost is measured, not XUA's (bench/xua.py measures
that):

1. In process, the WSGI app: FindDocuments (LeafClass, 10 entries) for random patients, access
   control off and consent, one call of each in turn; CPU time of this thread per query (the
   server's own cost, without HTTP or a client on the same cores).
2. Over HTTP (skip with --no-http): two `xds serve` over the registry, --workers gunicorn
   workers each, audit off: A with access_control = off, B with access_control = consent. Rounds
   of exactly --queries requests per side, the order reversing every round, after the floor
   POST /null on A (the same query without its wsse:Security header, which /null does not
   read), with bench/xua.py's client and accounting (one process per concurrent
   client, a new connection per request; the servers' CPU per request from /proc). Before
   measuring: A and B answer each sampled patient's 10 entries; B answers none to the same
   query from facility G (another organization-id), which A answers with 10; a measured answer
   that is not a Success fails the run.

Results: tables on stdout and var/bench/consent/results.json (RESULTS.md has them). Everything
goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from statistics import median

from lxml import etree

from bench import audit, corpus, run, xua
from tests import saml
from xds import config
from xds.soap import build_envelope

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench" / "consent"
STORED_QUERY = run.STORED_QUERY
TARGET_RATIO = 0.85
FACILITY = saml.ATTRIBUTES["urn:oasis:names:tc:xspa:1.0:subject:organization-id"].removeprefix("urn:oid:")
OTHER_FACILITY = "1.2.392.200119.6.102.88"
NEIGHBOUR = "1.2.392.200119.6.102.89"
#: The same audience on both servers (xua_audiences): one set of assertions for both.
AUDIENCE = "urn:xds-affinity:bench:consent"
INPROCESS_URL = "http://127.0.0.1:8080/registry"


def assertion(idp: saml.IdentityProvider, user: str, facility: str = FACILITY):
    start = saml.now()
    attributes = dict(saml.ATTRIBUTES, **{"urn:oasis:names:tc:xspa:1.0:subject:organization-id": f"urn:oid:{facility}"})
    return idp.signed(audience=AUDIENCE, user=user, attributes=attributes, not_before=start - dt.timedelta(minutes=1),
                      not_on_or_after=start + xua.VALIDITY)


def envelope(to: str, signed) -> str:
    body = etree.fromstring(corpus.query_template("find_documents").encode())
    return build_envelope(body, STORED_QUERY, to=to, message_id=run.MESSAGE_ID,
                          header_blocks=[saml.security(signed)]).decode()


def settings_env(url: str, data_dir: Path, idp: saml.IdentityProvider, access_control: str) -> dict:
    return {"XDS_DATABASE_URL": url, "XDS_DATA_DIR": str(data_dir), "XDS_AUDIT_DESTINATIONS": "",
            "XDS_ACCESS_CONTROL": access_control, "XDS_XUA_POLICY": "required",
            "XDS_XUA_TRUSTED_CERTIFICATES": str(idp.certificate), "XDS_XUA_AUDIENCES": AUDIENCE}


def users(n: int) -> list[str]:
    return [f"user{u}@bench.example" for u in range(n)]


def give_consents(url: str, patients: int, people: list[str]) -> None:
    """Each patient a person of the PIX Manager and a consent allowing FACILITY (the models in
    turn); done once: a registry whose patients all have consent records is reused."""
    from sqlalchemy import func, select

    from xds.config import Settings
    from xds.consent import store
    from xds.consent.policy import ConsentPolicy
    from xds.identity import feed
    from xds.identity.directory import parse_cx
    from xds.identity.policy import IdentityPolicy
    from xds.model.person import PatientRecord
    from xds.store import db
    from xds.store.tables import ConsentRecordRow

    engine = db.make_engine(url)
    try:
        with db.make_sessionmaker(engine)() as session:
            done = session.scalar(select(func.count(func.distinct(ConsentRecordRow.person_id))))
        if done == patients:
            print(f"  {patients} patients with consent already", flush=True)
            return
        identity = IdentityPolicy.from_settings(Settings(pix_linking_rules=""))
        policy = ConsentPolicy.from_settings(Settings(access_control="consent"))
        now = dt.datetime.now(dt.UTC)
        # Each allows FACILITY and none OTHER_FACILITY (nor its user), so that the check can tell.
        changes = [
            [("grant", dict(model="blanket", excluded=[OTHER_FACILITY]))],
            [("grant", dict(model="facility", facilities=[NEIGHBOUR])),
             ("grant", dict(model="facility", facilities=[FACILITY]))],
            [("grant", dict(model="person", individuals=people))],
            [("grant", dict(model="implied", excluded=[OTHER_FACILITY])), ("hold", {}), ("release", {})],
            [("grant", dict(model="blanket", excluded=[NEIGHBOUR, OTHER_FACILITY]))],
        ]
        start = time.monotonic()
        with db.write_session(engine) as session:
            for p in range(patients):
                patient = corpus.patient_id(p)
                feed.add(session, PatientRecord(ids=[parse_cx(patient)]), identity)
                for action, values in changes[p % len(changes)]:
                    store.change(session, patient, action, policy, at=now, recorded_by="bench", reason="",
                                 source="bench", **values)
        print(f"  {patients} persons and their consents in {time.monotonic() - start:.1f} s", flush=True)
    finally:
        engine.dispose()


# --- 1. in process ------------------------------------------------------------------------------------


def inprocess(url: str, folder: Path, idp: saml.IdentityProvider, args, calls: int = 2000) -> dict:
    from xds.app import create_app

    print(f"== 1. the WSGI app in process: {calls} FindDocuments with access control off and as many with consent, "
          "interleaved", flush=True)
    apps = {}
    for mode in ("off", "consent"):
        (folder / f"app-{mode}").mkdir(parents=True, exist_ok=True)
        apps[mode] = create_app(config.load(env=settings_env(url, folder / f"app-{mode}", idp, mode)))
    templates = [envelope(INPROCESS_URL, assertion(idp, user)) for user in users(args.users)]
    rng = random.Random(7)
    bodies = [corpus.fill(templates[i % len(templates)], rng.randrange(args.patients)).encode() for i in range(calls)]

    def call(app, body: bytes) -> bytes:
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/registry", "CONTENT_LENGTH": str(len(body)),
                   "CONTENT_TYPE": run.content_type(STORED_QUERY), "wsgi.input": io.BytesIO(body),
                   "wsgi.input_terminated": True, "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
                   "HTTP_HOST": "127.0.0.1:8080", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080"}
        return b"".join(app(environ, lambda *a, **k: None))

    for mode, app in apps.items():
        answer = call(app, bodies[0])
        if run.SUCCESS.encode() not in answer or answer.count(b"<rim:ExtrinsicObject") != corpus.DOCUMENTS_PER_PATIENT:
            raise SystemExit(f"in process, access control {mode}: not the patient's 10 entries: {answer[:1500]!r}")
        for body in bodies[:200]:
            call(app, body)
    cpu: dict[str, list[float]] = {mode: [] for mode in apps}
    for i in range(calls):
        for mode in (("off", "consent") if i % 2 == 0 else ("consent", "off")):
            start = time.thread_time_ns()
            call(apps[mode], bodies[i])
            cpu[mode].append((time.thread_time_ns() - start) / 1e6)
    for app in apps.values():
        app.engine.dispose()
    result = {"calls": calls, "cpu_median_ms": {m: median(v) for m, v in cpu.items()},
              "cpu_mean_ms": {m: sum(v) / len(v) for m, v in cpu.items()}}
    result["cpu_ratio"] = result["cpu_mean_ms"]["off"] / result["cpu_mean_ms"]["consent"]
    m = result["cpu_mean_ms"]
    print(f"  CPU per query, mean: off {m['off']:.3f} ms, consent {m['consent']:.3f} ms "
          f"(+{m['consent'] - m['off']:.3f}); off/consent {result['cpu_ratio']:.3f}", flush=True)
    return result


# --- 2. over HTTP --------------------------------------------------------------------------------------


def check_servers(servers: dict, templates: list[str], other: str, patients: int) -> None:
    rng = random.Random(13)
    for _ in range(10):
        p = rng.randrange(patients)
        for name, expected in (("A", corpus.DOCUMENTS_PER_PATIENT), ("B", corpus.DOCUMENTS_PER_PATIENT)):
            status, message = xua._post(servers[name].base, corpus.fill(templates[p % len(templates)], p).encode())
            found = len(message.body.findall(f".//{{{corpus.RIM}}}ExtrinsicObject"))
            if status != 200 or message.body.get("status") != run.SUCCESS or found != expected:
                raise SystemExit(f"{name}: FindDocuments for patient {p}: HTTP {status}, {found} entries")
        for name, expected in (("A", corpus.DOCUMENTS_PER_PATIENT), ("B", 0)):
            status, message = xua._post(servers[name].base, corpus.fill(other, p).encode())
            found = len(message.body.findall(f".//{{{corpus.RIM}}}ExtrinsicObject"))
            if status != 200 or message.body.get("status") != run.SUCCESS or found != expected:
                raise SystemExit(f"{name}: FindDocuments from facility {OTHER_FACILITY} for patient {p}: "
                                 f"HTTP {status}, {found} entries, {expected} expected")
    print(f"  checked: A and B answer each patient's 10 entries to facility {FACILITY}; to facility "
          f"{OTHER_FACILITY}, which no consent allows, A answers 10 and B none", flush=True)


def http(url: str, folder: Path, idp: saml.IdentityProvider, args) -> dict:
    print(f"== 2. over HTTP: {args.workers} workers per server, {args.queries} FindDocuments per round and side",
          flush=True)
    servers = {}
    for name, mode in (("A", "off"), ("B", "consent")):
        data_dir = folder / f"server-{mode}"
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        server = run.Server(url, args.workers, data_dir)
        server.env.update(settings_env(url, data_dir, idp, mode), XDS_MAX_REQUESTS="10000000")
        servers[name] = server
    running, rounds = [], []
    sides = ["A", "B"]
    try:
        for server in servers.values():
            server.__enter__()
            running.append(server)
        templates = [envelope("http://127.0.0.1/registry", assertion(idp, user)) for user in users(args.users)]
        other = envelope("http://127.0.0.1/registry", assertion(idp, "intruder@bench.example", OTHER_FACILITY))
        floor = [xua.envelope("/null")]
        check_servers(servers, templates, other, args.patients)

        def measure(side: str | None, clients: int, n: int) -> dict:
            server = servers[side or "A"]
            requests = xua.raw_requests(server.port, floor if side is None else templates, n, args.patients,
                                        random.randrange(1 << 30))
            if side is None:  # the floor: POST /null on A (which reads no wsse:Security: the query alone)
                requests = [r.replace(b"POST /registry ", b"POST /null ", 1) for r in requests]
            cpu_before, workers_before = xua.server_cpu(server.process.pid)
            r = xua.drive(server.port, requests, clients)
            cpu_after, workers_after = xua.server_cpu(server.process.pid)
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
                      f"  B/A {row['B']['per_second'] / row['A']['per_second']:.3f}"
                      f"  load {row['load'][0]:.1f}-{row['load'][1]:.1f}", flush=True)
    finally:
        for server in running:
            server.__exit__()
    return {"sides": sides, "rounds": rounds, "summary": xua.summarize(rounds, sides)}


SIDE_NAMES = {"floor": "null (floor, on A)", "A": "A: access_control off (XUA required)",
              "B": "B: access_control consent (XUA required)"}


def markdown(report: dict) -> str:
    lines = [f"Code {report['code']}, {report['started']}; {report['host_cpus']} CPUs; load average at the start "
             f"{report['load_start']:.1f}; {report['patients']} patients, {report['users']} users' assertions in turn.",
             ""]
    p = report["inprocess"]
    m, md = p["cpu_mean_ms"], p["cpu_median_ms"]
    lines += [f"The WSGI app in process, FindDocuments (LeafClass, 10 entries), {p['calls']} calls each, interleaved: "
              f"CPU per query (mean) {m['off']:.3f} ms off, {m['consent']:.3f} ms consent (medians {md['off']:.3f} / "
              f"{md['consent']:.3f}); **off/consent {p['cpu_ratio']:.3f}**."]
    if "http" in report:
        h = report["http"]
        lines += ["", f"Over HTTP: {report['workers']} workers per `xds serve`, {report['queries']} FindDocuments per "
                  "round and side:", ""]
        lines += xua.http_table(h, SIDE_NAMES)
        lines.append("")
        for s in h["summary"]:
            b, c = s["B"]["ratio"], s["B"].get("cpu_ratio", float("nan"))
            lines.append(f"- {s['clients']} clients, {s['rounds']} rounds: consent keeps {b:.3f} of the throughput "
                         f"without it (target >= {TARGET_RATIO}: {'met' if b >= TARGET_RATIO else 'NOT met'}); by the "
                         f"servers' CPU per request {c:.3f}; load average {s['load'][0]:.1f}-{s['load'][1]:.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.consent", description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=1000, help="requests per round and side (default 1000)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per concurrency (default 6)")
    parser.add_argument("--warmup", type=int, default=300, help="requests per side before measuring")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of each xds serve (default 2)")
    parser.add_argument("--concurrency", default="1,8", help="concurrent clients, comma-separated (default 1,8)")
    parser.add_argument("--users", type=int, default=20, help="users whose assertions the requests carry (default 20)")
    parser.add_argument("--patients", type=int, default=500, help="corpus patients in the registry (default 500)")
    parser.add_argument("--no-http", dest="http", action="store_false", help="in process only")
    parser.add_argument("--dir", default=str(VAR), help="registry, servers' data and results")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    root = Path(args.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    report = {"started": time.strftime("%Y-%m-%d %H:%M"), "code": audit._git_state(), "host_cpus": os.cpu_count(),
              "load_start": os.getloadavg()[0], "workers": args.workers, "queries": args.queries,
              "users": args.users, "patients": args.patients}
    url = f"sqlite:///{root / 'registry.sqlite3'}"
    print(f"== registry: {args.patients} patients, {args.patients * corpus.DOCUMENTS_PER_PATIENT} DocumentEntries, "
          f"their persons and consents ({url})", flush=True)
    xua.load_registry(url, root, args.patients)
    give_consents(url, args.patients, users(args.users))
    idp = saml.IdentityProvider(root / "idp", "bench-consent-idp")
    report["inprocess"] = inprocess(url, root, idp, args)
    if args.http:
        report["http"] = http(url, root, idp, args)
    report["load_end"] = os.getloadavg()[0]
    (root / "results.json").write_text(json.dumps(report, indent=2))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
