"""The PDQ Supplier at 1,000,000 patients (issue 10): Patient Demographics Query (ITI-47) by
family name in kanji, in half-width kana and in romaji, by family and given name, by name and
birth date, by a birth month and gender, by id, and by a kana prefix (SRCH), on SQLite and on
PostgreSQL. Target (the issue): p50 <= 20 ms at 1,000,000 patients, one client.

    python -m bench.pdq                                   # both databases (make bench-pdq)
    python -m bench.pdq --database sqlite:///var/bench/pdq/identity.sqlite3 --duration 5
    python -m bench.pdq --explain family_kanji            # the plans of one kind's statements

For each database: the corpus (bench/pdq_corpus.py) is loaded when it is not there yet
(bench/pdq_load.py: the rows feed.add stores, in bulk), then reused; every query kind is
checked on sample patients against what the corpus predicts (total, the first page's ids in
order, scores, the other ids of the person); then each kind is measured in process - the
library's own `xds.identity.pdq.search` in a fresh read session per query, as a service calls
it, a page of --page matches (the PDQ Consumer's initialQuantity) - with 1 and 8 concurrent
clients (processes), each for --duration seconds or --max-queries queries. When this checkout
serves ITI-47 (/pdq), the same kinds go over HTTP to `xds serve` too, each beside the floor
POST /null of the same bodies (bench/pdq_http.py; --http off to skip).

Databases: SQLite in var/bench/pdq/identity.sqlite3; PostgreSQL in the database `bench_pdq`
of the server at 127.0.0.1:5432 (created when missing), apart from the tests' database.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.engine import make_url

from bench.pdq_corpus import KINDS, Corpus, expected, query_for
from bench.pdq_http import FEED_DOMAIN
from bench.pdq_load import POLICY, load
from bench.run import warm
from xds.identity import pdq, records
from xds.store import db
from xds.store.tables import IdentityPatientRow

ROOT = Path(__file__).resolve().parent.parent
SQLITE_URL = f"sqlite:///{ROOT / 'var' / 'bench' / 'pdq' / 'identity.sqlite3'}"
POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
POSTGRES_DATABASE = "bench_pdq"
PAGE = 100
TARGET_P50_MS = 20.0
#: The issue's target is on these: a family name alone, however typed.
FAMILY_NAME_KINDS = ("family_kanji", "family_kana_halfwidth", "family_alphabetic")


# --- the database, loaded once ---------------------------------------------------------------------

def postgres_url(server: str = POSTGRES_SERVER, database: str = POSTGRES_DATABASE) -> str:
    """The benchmark's own database on `server`, created when missing."""
    admin = db.make_engine(server)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if not connection.scalar(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database}):
            connection.execute(text(f'CREATE DATABASE "{database}"'))
    admin.dispose()
    return make_url(server).set(database=database).render_as_string(hide_password=False)


def is_loaded(url: str, corpus: Corpus) -> bool:
    """The database holds this corpus: as many patients, and the last one's record is the one
    the corpus makes (another size, seed or generator version shows there). The patients the
    HTTP feed measurement added (FEED_DOMAIN) are not the corpus's, and change no answer."""
    engine = db.make_engine(url)
    try:
        with engine.connect() as connection:
            P = IdentityPatientRow
            count = connection.scalar(select(func.count()).select_from(P).where(P.root != FEED_DOMAIN))
            last = connection.scalar(select(P.record).where(P.pk == corpus.patients))
    except Exception:  # noqa: BLE001 - no tables yet
        return False
    finally:
        engine.dispose()
    return count == corpus.patients and last == records.to_json(corpus.record(corpus.patients - 1))


def reset(url: str) -> None:
    """An empty, migrated database at `url`. Only the bench's own databases (SQLITE_URL, the
    PostgreSQL database bench_pdq) are dropped and made anew; any other is loaded only when its
    identity tables are empty (it may be someone's registry)."""
    u = make_url(url)
    own = url == SQLITE_URL if u.get_backend_name() == "sqlite" else u.database == POSTGRES_DATABASE
    if not own:
        db.upgrade(url)
        engine = db.make_engine(url)
        with engine.connect() as connection:
            held = connection.scalar(select(func.count()).select_from(IdentityPatientRow))
        engine.dispose()
        if held:
            raise SystemExit(f"{u.render_as_string(hide_password=True)} holds {held:,} other patients: give an "
                             f"empty database, or use the bench's own ({SQLITE_URL}, {POSTGRES_DATABASE})")
        return
    if u.get_backend_name() == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(u.database + suffix).unlink(missing_ok=True)
    else:
        engine = db.make_engine(url)
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    db.upgrade(url)


def ensure_loaded(url: str, corpus: Corpus, workers: int) -> dict:
    if is_loaded(url, corpus):
        print(f"  corpus of {corpus.patients:,} patients already loaded: reused", flush=True)
        return {"loaded": "reused"}
    print(f"  loading {corpus.patients:,} patients ...", flush=True)
    reset(url)
    seconds = load(url, corpus, workers=workers)
    print(f"  loaded in {seconds:.0f} s ({corpus.patients / seconds:,.0f} patients/s)", flush=True)
    return {"loaded": "now", "load_seconds": round(seconds, 1)}


def disk_use(url: str) -> int:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return sum(Path(u.database + s).stat().st_size for s in ("", "-wal") if Path(u.database + s).exists())
    engine = db.make_engine(url)
    with engine.connect() as connection:
        size = connection.scalar(text(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname = current_schema() AND c.relname LIKE 'identity_%'"))
    engine.dispose()
    return int(size or 0)


# --- answers checked before measuring ------------------------------------------------------------

_expected: dict[tuple, tuple[list[int], list[int]]] = {}


def check_answers(engine: Engine, corpus: Corpus, samples: int = 10, seed: int = 7, page: int = PAGE) -> int:
    """Each kind, for `samples` random patients: the total, the first page (ids in order,
    roots, scores) and, by id, the person's other ids are those the corpus predicts. Raises
    AssertionError on the first difference; returns how many queries were checked."""
    rng = random.Random(seed)
    sessions = db.make_sessionmaker(engine)
    checked = 0
    table = corpus.table
    for kind in KINDS:
        for _ in range(samples):
            n = rng.randrange(corpus.patients)
            query = query_for(kind, n, corpus)
            key = (corpus.patients, corpus.seed, corpus.birth_dates, kind, n)
            if key not in _expected:
                _expected[key] = expected(kind, n, corpus)
            exact, prefix = _expected[key]
            with sessions() as session:
                result = pdq.search(session, query, POLICY, 0, page)
            want = (exact + prefix)[:page]
            got = [int(m.patient.extension) for m in result.matches]
            where = f"{kind} for patient {n} ({query})"
            assert result.total == len(exact) + len(prefix), f"{where}: total {result.total}, expected " \
                                                              f"{len(exact)} + {len(prefix)}"
            assert got == want, f"{where}: first page {got[:10]}..., expected {want[:10]}..."
            assert [m.patient.root for m in result.matches] == [table[m][4] for m in want], f"{where}: roots"
            scores = [pdq.EXACT_SCORE if i < len(exact) else pdq.PREFIX_SCORE for i in range(len(want))]
            assert [m.score for m in result.matches] == scores, f"{where}: scores"
            if kind == "id":
                person = corpus.patient(n).person
                first = corpus.first_patient(person.number)
                ids = [corpus.patient(m).identifier for m in range(first, min(first + len(person.sources),
                                                                               corpus.patients))]
                assert result.matches[0].other_ids == [i for i in ids if i != corpus.patient(n).identifier], \
                    f"{where}: other ids {result.matches[0].other_ids}"
            checked += 1
    return checked


# --- measuring ------------------------------------------------------------------------------------

@dataclass
class Figure:
    kind: str
    clients: int
    queries: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    mean_total: float  # matches per query (resultTotalQuantity), averaged
    #: The client process's own CPU time per query, median: in process on SQLite that is the
    #: whole work (the database runs in the client), so it shows through a noisy machine.
    cpu_p50_ms: float = float("nan")


def _client(args) -> tuple[list[float], list[int], list[float], float]:
    url, queries, duration, limit, page = args
    engine = db.make_engine(url)
    sessions = db.make_sessionmaker(engine)
    latencies, totals, cpu = [], [], []
    i = 0
    began = time.monotonic()
    deadline = began + duration  # from the client's own start (a fork can be slow)
    while time.monotonic() < deadline and i < limit:
        query = queries[i % len(queries)]
        i += 1
        start, start_cpu = time.perf_counter(), time.process_time()
        with sessions() as session:
            result = pdq.search(session, query, POLICY, 0, page)
        latencies.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        totals.append(result.total)
    elapsed = time.monotonic() - began
    engine.dispose()
    return latencies, totals, cpu, elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def measure(url: str, corpus: Corpus, kind: str, clients: int, duration: float, max_queries: int,
            page: int, seed: int) -> Figure:
    rng = random.Random(seed)
    queries = [query_for(kind, rng.randrange(corpus.patients), corpus) for _ in range(2_000)]
    _client((url, queries[:20], 5, 20, page))  # warm the caches a little
    context = multiprocessing.get_context("fork")
    jobs = [(url, queries[i::clients] or queries, duration, max(1, max_queries // clients), page)
            for i in range(clients)]
    with context.Pool(clients) as pool:
        results = pool.map(_client, jobs)
    seconds = max(elapsed for *_, elapsed in results)  # the clients ran side by side
    latencies = [x for lat, _, _, _ in results for x in lat]
    totals = [t for _, tot, _, _ in results for t in tot]
    cpu = [c for _, _, cpus, _ in results for c in cpus]
    figure = Figure(kind, clients, len(latencies), round(seconds, 2), round(len(latencies) / seconds, 1),
                    round(percentile(latencies, 0.50) * 1e3, 2), round(percentile(latencies, 0.99) * 1e3, 2),
                    round(statistics.mean(totals), 1) if totals else 0, round(percentile(cpu, 0.50) * 1e3, 2))
    print(f"  {kind:<22} c={clients}  {figure.per_second:8.1f}/s  p50 {figure.p50_ms:7.2f} ms  "
          f"p99 {figure.p99_ms:7.2f} ms  cpu p50 {figure.cpu_p50_ms:6.2f} ms  n={figure.queries}  "
          f"matches~{figure.mean_total:,.0f}  load {os.getloadavg()[0]:.1f}", flush=True)
    return figure


# --- why a query is slow ------------------------------------------------------------------------------

def explain(url: str, corpus: Corpus, kind: str, n: int, page: int = PAGE) -> str:
    """The statements one search of `kind` (built from patient n) runs, each with its time and
    the database's plan (EXPLAIN QUERY PLAN on SQLite, EXPLAIN ANALYZE on PostgreSQL)."""
    engine = db.make_engine(url)
    seen: list[tuple[str, object, float]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn, cursor, statement, parameters, context, executemany):
        conn.info["t"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("SELECT", "WITH", "(")):
            seen.append((statement, parameters, (time.perf_counter() - conn.info["t"]) * 1e3))

    query = query_for(kind, n, corpus)
    with db.make_sessionmaker(engine)() as session:
        pdq.search(session, query, POLICY, 0, page)  # warm
        seen.clear()
        start = time.perf_counter()
        result = pdq.search(session, query, POLICY, 0, page)
        total_ms = (time.perf_counter() - start) * 1e3
    out = [f"{kind} (patient {n}): {query}", f"total {result.total}, {total_ms:.1f} ms in search()"]
    postgres = engine.dialect.name == "postgresql"
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        for statement, parameters, ms in seen:
            out += ["", f"-- {ms:.2f} ms", statement, f"-- parameters {parameters}"]
            cursor = raw.cursor()
            if postgres:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
                out += [row[0] for row in cursor.fetchall()]
            else:
                cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
                out += [f"  {row[3]}" for row in cursor.fetchall()]
            cursor.close()
    engine.dispose()
    return "\n".join(out)


# --- the run -------------------------------------------------------------------------------------------

def run_database(url: str, corpus: Corpus, args) -> dict:
    backend = make_url(url).get_backend_name()
    print(f"{backend}: {make_url(url).render_as_string(hide_password=True)}", flush=True)
    report: dict = {"database": backend, "patients": corpus.patients, "page": args.page}
    report |= ensure_loaded(url, corpus, args.workers)
    report["disk_bytes"] = disk_use(url)
    report["warmed"] = warm(url)
    print(f"  {report['warmed']}", flush=True)
    engine = db.make_engine(url)
    start = time.monotonic()
    checked = check_answers(engine, corpus, samples=args.samples, page=args.page)
    engine.dispose()
    print(f"  checked: {checked} queries ({args.samples} per kind) answered as the corpus predicts "
          f"({time.monotonic() - start:.0f} s)", flush=True)
    report["checked"] = checked
    figures = []
    for clients in args.clients:
        for kind in args.kinds:
            figures.append(measure(url, corpus, kind, clients, args.duration, args.max_queries, args.page,
                                   seed=hash((kind, clients)) & 0xFFFF))
    report["figures"] = [asdict(f) for f in figures]
    report["load_average"] = os.getloadavg()
    from bench import pdq_http

    if args.http == "off":
        report["http"] = None
    elif not pdq_http.served():
        print("  HTTP: not measured: this checkout serves no ITI-47 (no ITI-47 row in xds.transactions)", flush=True)
        report["http"] = None
    else:
        data_dir = Path(args.out).parent / f"serve-{backend}"
        report["http"] = pdq_http.run(url, corpus, args.kinds, args.clients, args.http_duration, args.max_queries,
                                      args.http_workers, data_dir)
    return report


def markdown(report: dict) -> str:
    lines = [f"{report['database']}, {report['patients']:,} patients, page of {report['page']} "
             f"(load average at the end {report['load_average'][0]:.1f}):", "",
             "| query | clients | queries/s | p50 ms | p99 ms | client CPU p50 ms | matches (mean) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for f in report["figures"]:
        lines.append(f"| {f['kind']} | {f['clients']} | {f['per_second']} | {f['p50_ms']} | {f['p99_ms']} | "
                     f"{f.get('cpu_p50_ms', '')} | {f['mean_total']:,.0f} |")
    http = report.get("http")
    if http:
        lines += ["", f"over HTTP, xds serve with {http['workers']} gunicorn workers, client "
                      f"{http['figures'][0]['client'] if http['figures'] else '-'}:", "",
                  "| query | clients | req/s | floor req/s | ratio | p50 ms | p99 ms | floor p50 ms | failed |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        floor = None
        for f in http["figures"]:
            if f["path"] == "/null":
                floor = f
                continue
            lines.append(f"| {f['kind']} | {f['clients']} | {f['per_second']} | {f['floor_per_second']} | "
                         f"{f['ratio']} | {f['p50_ms']} | {f['p99_ms']} | {floor['p50_ms'] if floor else ''} | "
                         f"{f['failures']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pdq", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", action="append",
                        help=f"SQLAlchemy URL (repeatable; default: {SQLITE_URL} and the database "
                             f"{POSTGRES_DATABASE} of {POSTGRES_SERVER})")
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--duration", type=float, default=10, help="seconds per kind and client count")
    parser.add_argument("--max-queries", type=int, default=20_000, help="queries per kind and client count at most")
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--page", type=int, default=PAGE, help="matches per answer (initialQuantity)")
    parser.add_argument("--samples", type=int, default=10, help="queries checked per kind before measuring")
    parser.add_argument("--workers", type=int, default=2, help="loader processes")
    parser.add_argument("--http", choices=("auto", "off"), default="auto",
                        help="also over HTTP against xds serve, beside the floor, when /pdq is served (auto)")
    parser.add_argument("--http-duration", type=float, default=10, help="seconds per HTTP scenario")
    parser.add_argument("--http-workers", type=int, default=2, help="gunicorn workers of xds serve")
    parser.add_argument("--explain", metavar="KIND", help="print the plans of one search of KIND and stop")
    parser.add_argument("--out", default=str(ROOT / "var" / "bench" / "pdq" / "results.json"))
    args = parser.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",")]
    args.kinds = [k for k in args.kinds.split(",") if k]
    for kind in args.kinds + ([args.explain] if args.explain else []):
        if kind not in KINDS:
            parser.error(f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    urls = args.database or [SQLITE_URL, postgres_url()]
    corpus = Corpus(args.patients)
    if args.explain:
        rng = random.Random(1)
        for url in urls:
            if not is_loaded(url, corpus):
                print(f"{url}: not loaded; run without --explain first", file=sys.stderr)
                continue
            print(explain(url, corpus, args.explain, rng.randrange(corpus.patients), args.page))
        return 0
    reports = [run_database(url, corpus, args) for url in urls]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(),
                                          "reports": reports}, indent=2, ensure_ascii=False))
    for report in reports:
        print()
        print(markdown(report))
    family = [f for r in reports for f in r["figures"] if f["clients"] == 1 and f["kind"] in FAMILY_NAME_KINDS]
    if family:
        worst = max(f["p50_ms"] for f in family)
        print(f"\ntarget p50 <= {TARGET_P50_MS:.0f} ms by family name at 1 client: worst p50 {worst} ms: "
              + ("MET" if worst <= TARGET_P50_MS else "MISSED"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
