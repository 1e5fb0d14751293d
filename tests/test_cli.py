"""What the `xds` command prints for people: times as people read them, problems without a
stack trace. (The commands against a server: test_query_http.py, test_quick_start.py.)"""

from __future__ import annotations

from xds import cli
from xds.ebrim.query_response import ObjectSummary


def test_query_table_shows_times_as_people_read_them():
    objects = [
        ObjectSummary("DocumentEntry", "urn:uuid:1", "P1^^^&1.2.3&ISO", "2.25.1", creation_time="20261207032619",
                      status="Approved", title="Referral letter"),
        ObjectSummary("Folder", "urn:uuid:2", "P1^^^&1.2.3&ISO", "2.25.2", creation_time="202612",
                      status="Approved", title="Cardiology"),
        ObjectSummary("Association", "urn:uuid:3", status="Approved", title="HasMember urn:uuid:2 -> urn:uuid:1"),
    ]
    lines = cli._table(objects).splitlines()
    assert lines[0].split() == ["object", "patient", "uniqueId", "class", "type", "time", "status", "title"]
    assert "2026-12-07 03:26:19" in lines[1] and "20261207032619" not in lines[1]
    assert "2026-12 " in lines[2] and "202612 " not in lines[2]  # at the precision the value has
    # The columns stay aligned: the status column starts at the same place on every line.
    assert len({line.index("status") if i == 0 else line.index("Approved") for i, line in enumerate(lines)}) == 1


def test_register_names_a_file_that_is_not_xml(tmp_path, capsys):
    broken = tmp_path / "broken.xml"
    broken.write_text("<!-- -- -->\n<lcm:SubmitObjectsRequest/>")
    assert cli.main(["register", str(broken), "--url", "http://127.0.0.1:9/registry"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"xds: {broken}: ") and "not well-formed XML" in err and "Traceback" not in err
