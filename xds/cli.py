"""The `xds` command: serve, database, patients (xds.identity.command), sending requests to a registry,
stored queries."""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from pathlib import Path

from xds import config
from xds.security import tls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xds", description="IHE XDS.b affinity domain server")
    parser.add_argument("--config", help="TOML settings file (also XDS_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the registry over HTTP under gunicorn")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.set_defaults(run=_serve)

    database = commands.add_parser("db", help="database administration")
    db_commands = database.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", help="create the database or bring it to the current schema").set_defaults(run=_db_upgrade)

    from xds.identity.command import add_parser as add_patients

    add_patients(commands)  # xds patients: the registry's ids, the PIX Manager's patients and links

    register = commands.add_parser("register", help="send an ITI-42 Register Document Set-b request")
    register.add_argument("file", help="a SOAP envelope or a bare lcm:SubmitObjectsRequest")
    register.add_argument("--url", required=True, help="the registry endpoint, e.g. http://host:8080/registry")
    register.set_defaults(run=_register)

    query = commands.add_parser(
        "query", help="run a Registry Stored Query (ITI-18) on this registry's database or, with --url, a remote one",
        description="Run a stored query by name (FindDocuments, GetAll, ...) or id (urn:uuid:...). Parameter "
                    "values are written as ITI TF-2 3.18.4.1.2.3 has them: strings in single quotes, lists "
                    "as ('a','b'), codes as 'code^^^scheme', times as numbers. A required status parameter "
                    "that is not given is ('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved').")
    query.add_argument("query", metavar="QUERY", help="the stored query's name or id")
    query.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE",
                       help="a parameter, e.g. \"$XDSDocumentEntryClassCode=('34133-9^^^2.16.840.1.113883.6.1')\"; "
                            "repeat it for several parameters, or the same one twice for two slots")
    query.add_argument("--patient", metavar="ID", help="the patient id (ID^^^&OID&ISO) for the query's patient parameter")
    query.add_argument("--return", dest="return_type", choices=("LeafClass", "ObjectRef"), default="LeafClass")
    query.add_argument("--xml", action="store_true", help="print the AdhocQueryResponse as XML instead of a table")
    query.add_argument("--url", help="a registry endpoint, e.g. http://host:8080/registry (default: the local database)")
    query.set_defaults(run=_query)

    # Commands whose modules own their arguments.
    from xds.arr.command import add_parser as add_audit
    from xds.conformance.command import add_parser as add_conformance
    from xds.registry.command import add_parser as add_registry
    from xds.repository.command import add_parser as add_repository

    add_registry(commands)
    add_repository(commands)
    add_conformance(commands)
    add_audit(commands)
    from xds.consent.command import add_parser as add_consent

    add_consent(commands)
    from xds.security.dsg_command import add_parser as add_verify

    add_verify(commands)  # xds verify: a DSG signature document and what it signs

    args = parser.parse_args(argv)
    try:
        settings = config.load(args.config)
    except (OSError, ValueError) as exc:
        print(f"xds: cannot read the settings: {exc}", file=sys.stderr)
        return 2
    return args.run(args, settings)


def _serve(args, settings: config.Settings) -> int:
    from xds.serve import serve

    serve(settings, host=args.host, port=args.port, workers=args.workers)
    return 0


def _db_upgrade(args, settings: config.Settings) -> int:
    from xds.store import db

    db.upgrade(settings.database)
    print(f"database is at the current schema: {db.redacted(settings.database)}")
    return 0


def _sessions(settings: config.Settings, write: bool = False):
    from xds.store import db

    return db.make_sessionmaker(db.make_engine(settings.database), write=write)


def _register(args, settings: config.Settings) -> int:
    from xds.client import send_register
    from xds.soap import SoapFault

    try:
        status, errors = send_register(Path(args.file), args.url, context=tls.context_for(args.url, settings))
    except SoapFault as exc:  # the file is not XML that can be read (or, rarely, the answer)
        print(f"xds: {args.file}: {exc}", file=sys.stderr)
        return 2
    except (OSError, urllib.error.URLError, ValueError) as exc:
        print(f"xds: {exc}", file=sys.stderr)
        return 2
    _print_outcome(status, errors)
    return 0 if status.endswith(":Success") else 1


def _print_outcome(status: str, errors) -> None:
    """A RegistryResponse's status, then each of its errors and warnings on a line."""
    print(f"status: {status.rsplit(':', 1)[-1]}")
    for e in errors:
        severity = e.severity.rsplit(":", 1)[-1]
        where = f" at {e.location}" if e.location else ""
        print(f"  {severity} {e.code}{where}: {e.context}")


def _query(args, settings: config.Settings) -> int:
    from lxml import etree

    from xds.ebrim.query_request import adhoc_query_request, quote
    from xds.ebrim.query_response import read_query_response
    from xds.registry import stored_query
    from xds.registry.stored_query import ValueKind

    known = stored_query.lookup(args.query)
    if known is None and not args.query.startswith("urn:uuid:"):
        names = ", ".join(q.name for q in stored_query.QUERIES)
        print(f"xds: no stored query {args.query!r}; use one of {names}, or an id urn:uuid:...", file=sys.stderr)
        return 2
    slots: list[tuple[str, list[str]]] = []
    for param in args.param:
        name, equals, value = param.partition("=")
        if not equals or not name.strip():
            print(f"xds: --param {param!r} is not NAME=VALUE", file=sys.stderr)
            return 2
        slots.append((name.strip(), [value]))
    if args.patient:
        if known is None or known.patient_parameter is None:
            print(f"xds: {args.query} takes no patient id; give its parameters with --param", file=sys.stderr)
            return 2
        slots.append((known.patient_parameter, [quote(args.patient)]))
    if known is not None:
        given = {name for name, _ in slots}
        for parameter in known.parameters:
            if parameter.required and parameter.kind is ValueKind.STATUS and parameter.name not in given:
                slots.append((parameter.name, ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"]))
    request = adhoc_query_request(known.id if known else args.query, slots, args.return_type)

    from sqlalchemy.exc import SQLAlchemyError

    from xds.store import db

    try:
        response = _run_query(request, args.url, settings)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        print(f"xds: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        print(f"xds: cannot read the registry database {db.redacted(settings.database)} ({type(exc).__name__}); "
              "is it created (`xds db upgrade`)?", file=sys.stderr)
        return 2
    status, errors, objects = read_query_response(response)
    if args.xml:
        sys.stdout.write(etree.tostring(response, pretty_print=True, encoding="unicode"))
    else:
        _print_outcome(status, errors)
        if objects:
            print(_table(objects))
        print(f"{len(objects)} object(s)")
    return 0 if status.endswith(":Success") else 1


def _run_query(request, url: str | None, settings: config.Settings):
    """The AdhocQueryResponse of a remote registry (url), or of the local database."""
    if url:
        from xds.client import post_soap
        from xds.transactions import ITI_18

        return post_soap(url, request, ITI_18.action, context=tls.context_for(url, settings))
    from xds.identity.directory import IdentityDirectory
    from xds.registry.query import RegistryStoredQuery

    # the directory the server's registry asks: merged ids followed as ITI-18 follows them
    return RegistryStoredQuery.configured(_sessions(settings), settings, IdentityDirectory()).query(request)


def _table(objects) -> str:
    """Objects as an aligned text table: ObjectRefs by id, the others by what a person reads
    (times as 2026-12-07 03:26:19, in UTC as every DTM is)."""
    from xds.dtm import readable

    if all(o.kind == "ObjectRef" for o in objects):
        header, rows = ("id",), [(o.id,) for o in objects]
    else:
        header = ("object", "patient", "uniqueId", "class", "type", "time", "status", "title")
        rows = [(o.kind, o.patient_id, o.unique_id, o.class_code, o.type_code, readable(o.creation_time), o.status,
                 o.title) for o in objects]
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(str(value).ljust(width) for value, width in zip(row, widths)).rstrip()
             for row in (header, *rows)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
