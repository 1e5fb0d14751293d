"""`python -m bench` (what `make bench` runs): load, then measure, on SQLite and on PostgreSQL.

    python -m bench [--dir var/bench] [--databases sqlite,postgresql] [--patients 100000]
                    [--workers 2] [--duration 15] [--parts register,query]

SQLite lives in DIR/sqlite/registry.sqlite3; PostgreSQL in the database named by
--postgres-url (default postgresql+psycopg://postgres@127.0.0.1:5432/xds_bench, created when
missing; PostgreSQL is skipped, and said so, when the server does not answer). Loading is
resumable and is skipped when the corpus is already there, so a second `make bench` only
measures. Results: DIR/results-<database>.json and a table on standard output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from bench import corpus, load, run

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/xds_bench"


def ensure_postgres_database(url: str) -> str | None:
    """Create the benchmark's database if missing; None when PostgreSQL does not answer."""
    import psycopg

    u = make_url(url)
    try:
        psycopg.connect(load.libpq_url(url), connect_timeout=5).close()
        return url
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            print(f"PostgreSQL skipped: {exc}".strip(), flush=True)
            return None
    admin = load.libpq_url(u.set(database="postgres").render_as_string(hide_password=False))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{u.database}"')
    print(f"created database {u.database}", flush=True)
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="var/bench", help="data, server logs and results (not in git)")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES)
    parser.add_argument("--patients", type=int, default=corpus.PATIENTS)
    parser.add_argument("--workers", default="2", help="gunicorn workers of xds serve")
    parser.add_argument("--duration", default="15", help="seconds per scenario")
    parser.add_argument("--parts", default="register,query")
    args = parser.parse_args(argv)
    root = Path(args.dir).resolve()
    status = 0
    for name in args.databases.split(","):
        if name == "sqlite":
            url = f"sqlite:///{root / 'sqlite' / 'registry.sqlite3'}"
        elif name == "postgresql":
            url = ensure_postgres_database(args.postgres_url)
            if url is None:
                continue
        else:
            raise SystemExit(f"unknown database {name!r}: sqlite or postgresql")
        print(f"== {name}: load ({args.patients} patients)", flush=True)
        status |= load.main(["--database", url, "--patients", str(args.patients)])
        print(f"== {name}: measure", flush=True)
        status |= run.main(["--database", url, "--patients", str(args.patients), "--workers", args.workers,
                            "--duration", args.duration, "--parts", args.parts,
                            "--data-dir", str(root / f"server-{name}"), "--out", str(root / f"results-{name}.json")])
    return status


if __name__ == "__main__":
    sys.exit(main())
