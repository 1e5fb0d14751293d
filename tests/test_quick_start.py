"""The README's quick start, as written, and the example it sends (examples/submission.xml).

The commands are read from the README itself, so the README cannot drift from what works: the
server is this project's WSGI app, in process on a free port (what `make run` serves), and
each `.venv/bin/xds ...` line runs as `xds.cli.main` on the same settings."""

from __future__ import annotations

import re
import shlex
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from xds import cli, config
from xds.app import create_app
from xds.client import request_body
from xds.store import db, patients

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "submission.xml"
PATIENT = "P1001^^^&1.2.392.200119.6.102.11&ISO"
MAKE_RUN_URL = "http://127.0.0.1:8080"


def quick_start() -> list[list[str]]:
    """The `xds` commands of the README's first section (its first sh block that runs xds)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_section = readme.split("\n## ", 2)[1]
    for block in re.findall(r"```sh\n(.*?)```", first_section, re.S):
        commands = [shlex.split(line)[1:] for line in block.splitlines() if line.startswith(".venv/bin/xds ")]
        if commands:
            return commands
    raise AssertionError("the README's first section has no .venv/bin/xds command")


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(database_url, tmp_path, monkeypatch):
    """This project's app on a free port, on a new database; the environment `xds` reads
    points at the same settings. Yields the base URL."""
    monkeypatch.setenv("XDS_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("XDS_DATABASE_URL", database_url)
    monkeypatch.delenv("XDS_CONFIG", raising=False)
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the checkout
    assert cli.main(["db", "upgrade"]) == 0  # what `make run` does before it serves
    app = create_app(config.load())
    httpd = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()
    app.engine.dispose()


def test_the_readme_quick_start_works_as_written(server, capsys):
    commands = quick_start()
    assert [c[0] for c in commands] == ["patients", "register", "query"]
    outputs = []
    for command in commands:
        argv = [arg.replace(MAKE_RUN_URL, server) for arg in command]
        status = cli.main(argv)
        out = capsys.readouterr()
        assert status == 0, (command, out.out, out.err)
        outputs.append(out.out)
    register = [arg.replace(MAKE_RUN_URL, server) for arg in commands[1]]
    added, registered, found = outputs
    assert added == "1 patient id(s) added, 0 already known\n"
    assert registered == "status: Success\n"
    lines = found.splitlines()
    assert lines[0] == "status: Success" and lines[-1] == "1 object(s)"
    # The DocumentEntry as the README says it is printed: its uniqueId, its time as people read it.
    row = lines[2]
    assert row.startswith("DocumentEntry") and "2.999.1001.1" in row and "2024-11-02 09:15:00" in row
    assert "Referral letter" in row and "Approved" in row

    # Sent again, as the README warns: the uniqueIds are taken.
    assert cli.main(register) == 1
    assert "XDSDuplicateUniqueIdInRegistry" in capsys.readouterr().out


def test_the_example_is_a_valid_submission(engine):
    """examples/submission.xml registers with Success once its patient is known, and stands for
    the referral letter beside it."""
    import hashlib

    from xds.registry.register import DocumentRegistry

    sessions = db.make_sessionmaker(engine, write=True)
    with sessions.begin() as session:
        patients.add(session, [PATIENT])
    problems = DocumentRegistry(sessions=sessions).register(request_body(EXAMPLE))
    assert problems == []

    letter = (EXAMPLE.parent / "referral-letter.txt").read_bytes()
    text = EXAMPLE.read_text(encoding="utf-8")
    assert f"<rim:Value>{hashlib.sha1(letter).hexdigest()}</rim:Value>" in text
    assert f"<rim:Value>{len(letter)}</rim:Value>" in text
