"""The administrator's patient commands (xds.identity.command), run as a person runs them:
`xds.cli.main([...])` in-process on a database the settings name (SQLite and PostgreSQL), and
the real `xds` command in a subprocess. Japanese names throughout: kanji 山田 太郎, kana
ヤマダ タロウ typed full-width, half-width (ﾔﾏﾀﾞ) or in hiragana."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import select, update

from tests.test_identity_data import CLINIC, DOMAIN, FULL, HOSPITAL_A, HOSPITAL_B, japanese, pid
from tests.test_identity_feed import POLICY, read, write
from xds import cli
from xds.identity import command, feed, pix, records, store
from xds.model.person import Identifier, PatientRecord
from xds.store import patients
from xds.store.tables import PixNotificationRow

D1, D2 = pid("D1"), pid("D2")
A1, B1, C1 = pid("A1", HOSPITAL_A), pid("B1", HOSPITAL_B), pid("C1", CLINIC)


def registry_ids(engine) -> list[str]:
    return read(engine, patients.list_all)


def person(engine, identifier: Identifier) -> set[Identifier]:
    return set(read(engine, pix.query, identifier, [], POLICY).ids)


# --- add, list, remove ------------------------------------------------------------------------

def test_add_is_a_local_feed_and_the_registry_learns_the_domain_ids(xds, engine):
    done = xds("patients", "add", D1.cx, "--family", "山田", "--given", "太郎", "--family", "ﾔﾏﾀﾞ",
               "--given", "ﾀﾛｳ", "--birth", "19710101", "--gender", "M")
    assert (done.code, done.out.splitlines()[0]) == (0, "1 patient id(s) added, 0 already known")
    view = read(engine, store.person_of, D1)
    record = view.patients[0].record
    # Each name is marked legal and with its representation, read from its characters.
    assert [(n.family, n.given, n.uses) for n in record.names] == [
        (("山田",), ("太郎",), ("L", "IDE")), (("ﾔﾏﾀﾞ",), ("ﾀﾛｳ",), ("L", "SYL"))]
    assert (record.birth_time, record.gender, record.sender) == ("19710101", "M", None)
    assert registry_ids(engine) == [D1.cx]

    # A hospital's id with the same person's name in hiragana: linked by the demographics rule,
    # known to the PIX Manager only (not of the affinity domain).
    done = xds("patients", "add", A1.cx, "--family", "山田", "--given", "太郎", "--family", "やまだ",
               "--given", "たろう", "--birth", "1971-01-01", "--gender", "m")
    assert done.code == 0
    assert f"{A1.cx}: linked (demographics) to {D1.cx}" in done.out
    assert f"not of the affinity domain {DOMAIN}" in done.out
    assert person(engine, D1) == {D1, A1}
    assert xds("patients", "list").out.splitlines() == [D1.cx]


def test_add_of_a_known_id_leaves_what_its_source_fed(xds, engine):
    write(engine, feed.add, FULL, POLICY)
    write(engine, feed.add, japanese("D1"), POLICY)
    done = xds("patients", "add", FULL.ids[0].cx, D1.cx)
    assert (done.code, done.out.splitlines()[0]) == (0, "0 patient id(s) added, 2 already known")
    assert read(engine, store.person_of, FULL.ids[0]).patients[0].record == FULL
    assert [h.action for h in read(engine, lambda s: store.history(s, store.get(s, D1).pk))] == ["add"]


def test_add_with_demographics_of_a_known_id_revises_only_what_is_given(xds, engine):
    write(engine, feed.add, japanese("D1", "yamada", kana="halfwidth"), POLICY)
    done = xds("patients", "add", D1.cx, "--birth", "19710102", "--family", "Yamada", "--given", "Taro")
    assert done.code == 0 and "1 revised" in done.out.splitlines()[0]
    record = read(engine, store.person_of, D1).patients[0].record
    # The kanji and kana names stay; the alphabetic name is added; the birth date changes.
    assert [n.family for n in record.names] == [("Yamada",), ("山田",), ("ﾔﾏﾀﾞ",)]
    assert (record.birth_time, record.gender) == ("19710102", "M")
    done = xds("patients", "add", D1.cx, "--family", "佐藤", "--given", "花子")
    record = read(engine, store.person_of, D1).patients[0].record
    assert [n.family for n in record.names] == [("佐藤",), ("Yamada",), ("ﾔﾏﾀﾞ",)]  # the kanji name replaced
    history = read(engine, lambda s: store.history(s, store.get(s, D1).pk))
    assert [h.action for h in history] == ["add", "revise", "revise"]


def test_add_of_a_merged_id_is_refused_with_its_survivor(xds, engine):
    write(engine, feed.add, japanese("D1"), POLICY)
    write(engine, feed.add, japanese("D2", "sato"), POLICY)
    write(engine, feed.merge, PatientRecord(ids=[D1]), D2, POLICY)
    done = xds("patients", "add", D2.cx, "D3^^^&1.2.392.200119.6.102.11&ISO")
    assert done.code == 1
    assert f"{D2.cx}: refused (retired): {D2.cx} was merged into {D1.cx}" in done.err
    assert done.out.startswith("1 patient id(s) added, 0 already known, 1 refused")
    assert registry_ids(engine) == [D1.cx, "D3^^^&1.2.392.200119.6.102.11&ISO"]  # the other id went on


def test_bad_ids_add_nothing(xds, engine):
    done = xds("patients", "add", D1.cx, "K1^^^&not-an-oid&ISO")
    assert done.code == 2 and "not an OID" in done.err and "nothing was added" in done.err
    assert registry_ids(engine) == [] and read(engine, store.get, D1) is None


def test_demographics_describe_one_id(xds, engine):
    done = xds("patients", "add", D1.cx, D2.cx, "--family", "山田")
    assert done.code == 2 and "give one id" in done.err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["patients", "add", D1.cx, "--birth", "19711301"])
    assert exit_.value.code == 2


def test_remove_takes_the_id_off_the_registry_and_add_brings_it_back(xds, engine):
    write(engine, feed.add, japanese("D1"), POLICY)
    done = xds("patients", "remove", D1.cx)
    assert done.out.splitlines()[0] == "1 patient id(s) removed"
    assert "the PIX Manager still knows 1 of them" in done.out
    assert registry_ids(engine) == [] and read(engine, store.get, D1) is not None
    assert "does not accept it" in xds("patients", "show", D1.cx).out
    done = xds("patients", "add", D1.cx)
    assert done.out.splitlines()[0] == "0 patient id(s) added, 1 already known"
    assert "the registry accepts 1 of them again" in done.out
    assert registry_ids(engine) == [D1.cx]


def test_without_an_affinity_domain_add_writes_the_registry_list_as_before(xds, engine, monkeypatch):
    monkeypatch.delenv("XDS_AFFINITY_DOMAIN")
    n1, n2, n3 = (f"N{i}^^^&1.2.3&ISO" for i in (1, 2, 3))
    done = xds("patients", "add", n1, n2, n1)
    assert (done.code, done.out) == (0, "2 patient id(s) added, 0 already known\n")
    assert xds("patients", "add", n1).out == "0 patient id(s) added, 1 already known\n"
    shown = xds("patients", "show", n1)
    assert shown.code == 1 and "never had it fed; the registry accepts it" in shown.err
    # With demographics the id is fed as well, and still goes on the list.
    done = xds("patients", "add", n3, "--family", "山田", "--given", "太郎", "--birth", "19710101")
    assert done.code == 0 and registry_ids(engine) == [n1, n2, n3]
    assert xds("patients", "search", "山田").out.splitlines()[1].startswith(n3)
    assert xds("patients", "remove", n1, n2).out == "2 patient id(s) removed\n"


# --- search -------------------------------------------------------------------------------------

@pytest.fixture
def yamadas(engine):
    """D1 in kanji and katakana, A1 in kanji and half-width kana, B1 in kana only (hiragana),
    and a 佐藤 花子 in the same birth year."""
    write(engine, feed.add, japanese("D1", "yamada"), POLICY)
    write(engine, feed.add, japanese("A1", "yamada", root=HOSPITAL_A, kana="halfwidth"), POLICY)
    b1 = japanese("B1", "yamada", root=HOSPITAL_B, kana="hiragana", birth="19710102")
    b1.names = b1.names[1:]
    write(engine, feed.add, b1, POLICY)
    write(engine, feed.add, japanese("S1", "sato", gender="F", birth="19710301"), POLICY)


@pytest.mark.parametrize("query, found", [
    (["山田"], {D1, A1}),                                   # kanji finds the ideographic names
    (["ヤマダ"], {D1, A1, B1}),                              # kana finds the syllabic names
    (["ﾔﾏﾀﾞ"], {D1, A1, B1}),                               # typed half-width
    (["やまだ"], {D1, A1, B1}),                              # typed in hiragana
    (["ＹＡＭＡＤＡ"], set()),                                 # no alphabetic name fed
    (["--name", "山田 太郎"], {D1, A1}),                      # a whole name
    (["ﾔﾏﾀﾞﾀﾛｳ"], {D1, A1, B1}),
    (["--family", "山田", "--given", "太郎"], {D1, A1}),
    (["--family", "ﾔﾏﾀﾞ", "--given", "ﾀﾛｳ"], {D1, A1, B1}),
    (["--given", "たろう"], {D1, A1, B1}),
    (["--family", "山", "--prefix"], {D1, A1}),
    (["--family", "山"], set()),                              # exact unless --prefix
    (["--birth", "1971"], {D1, A1, B1, pid("S1")}),
    (["--birth", "197101", "--gender", "M"], {D1, A1, B1}),
    (["--birth", "19710102"], {B1}),
    (["--gender", "F"], {pid("S1")}),
    (["--id", A1.cx, "--id", pid("S1").cx], {A1, pid("S1")}),
])
def test_search_finds_kanji_and_kana_however_typed(xds, yamadas, query, found):
    done = xds("patients", "search", *query, "--json")
    assert done.code == 0
    answer = json.loads(done.out)
    assert {command._identifier(m["id"]) for m in answer["matches"]} == found
    assert answer["total"] == len(found)


def test_search_prints_a_table_with_kanji_and_kana(xds, yamadas):
    done = xds("patients", "search", "ﾔﾏﾀﾞ")
    lines = done.out.splitlines()
    assert lines[0].split() == ["id", "kanji", "kana", "birth", "gender", "score", "linked", "ids"]
    assert lines[1].startswith(D1.cx) and "山田 太郎" in lines[1] and "ヤマダ タロウ" in lines[1]
    assert "1971-01-01" in lines[1] and A1.cx in lines[1]  # D1's person has A1 too
    assert "ﾔﾏﾀﾞ ﾀﾛｳ" in lines[2] and "やまだ たろう" in lines[3]
    # Aligned as a terminal shows it (kanji and kana two columns, half-width kana one).
    starts = {command._width(line[:line.index("1971-")]) for line in lines[1:4]}
    assert len(starts) == 1
    assert lines[-1] == "3 of 3 patient(s)"
    limited = xds("patients", "search", "ヤマダ", "--limit", "2").out.splitlines()
    assert limited[-1] == "2 of 3 patient(s) (--limit 2: 1 more)"


def test_search_json_carries_the_records_as_stored(xds, yamadas, engine):
    answer = json.loads(xds("patients", "search", "--id", A1.cx, "--json").out)
    (match,) = answer["matches"]
    assert match["record"] == json.loads(records.to_json(japanese("A1", "yamada", root=HOSPITAL_A,
                                                                  kana="halfwidth")))
    assert match["other_ids"] == [D1.cx] and match["score"] == 100


def test_search_without_a_parameter_is_bad_input(xds, yamadas):
    done = xds("patients", "search")
    assert done.code == 2 and "give a name, --birth, --gender or --id" in done.err
    assert xds("patients", "search", "山田", "--family", "山田").code == 2
    with pytest.raises(SystemExit) as exit_:
        cli.main(["patients", "search", "--gender", "X"])
    assert exit_.value.code == 2


# --- show -----------------------------------------------------------------------------------------

def test_show_prints_the_record_as_fed_with_its_person(xds, engine):
    full = dataclasses.replace(FULL, other_ids=[D1])
    write(engine, feed.add, japanese("D1", "yoshida_bmp2"), POLICY)
    write(engine, feed.add, full, POLICY)  # linked to D1 by the identifier rule
    done = xds("patients", "show", full.ids[0].cx)
    assert done.code == 0
    out = done.out
    assert "𠮷田 𩸽子  [L IDE: legal, kanji]" in out and "ヨシダ ホッケコ  [L SYL: legal, kana]" in out
    for text in ("birth                 1971-01-01", "gender                M (male)",
                 "address               番町１丁目１－１, 高松市, 香川県, 760-0017, JP  [H]",
                 "telecom               tel:087-831-1111  [HP]", "telecom               mailto:yoshida@example.jp",
                 "mother's maiden name  齋藤", "multiple birth        yes (order 2)", "deceased              no",
                 f"other id              {D1.cx}", "source                1.2.392.200119.6.102.99",
                 "registry              does not accept it", "linked by the identifier rule"):
        assert text in out, text
    person_lines = out[out.index("\nperson "):out.index("\nhistory")].splitlines()
    assert any(line.strip().startswith(D1.cx) for line in person_lines)
    assert any(line.strip().startswith(full.ids[0].cx + " *") for line in person_lines)
    shown = json.loads(xds("patients", "show", full.ids[0].cx, "--json").out)
    assert shown["record"] == json.loads(records.to_json(full))
    assert [i["id"] for i in shown["person"]["ids"]] == [D1.cx, full.ids[0].cx]
    assert [h["action"] for h in shown["history"]] == ["add"]


def test_show_tells_the_merges_both_ways(xds, engine):
    write(engine, feed.add, japanese("D1"), POLICY)
    write(engine, feed.add, japanese("D2", "sato", gender="F"), POLICY)
    write(engine, feed.merge, PatientRecord(ids=[D1]), D2, POLICY)
    survivor = xds("patients", "show", D1.cx)
    assert f"merged into it        {D2.cx}" in survivor.out and "registry              accepts it" in survivor.out
    retired = xds("patients", "show", D2.cx)
    assert retired.code == 0 and f"(retired: merged into {D1.cx};" in retired.out
    assert f"refuses it: its documents are found under {D1.cx}" in retired.out
    assert "佐藤 花子" in retired.out  # its record as last fed
    shown = json.loads(xds("patients", "show", D2.cx, "--json").out)
    assert (shown["status"], shown["merged_into"], shown["registry_accepts"]) == ("retired", D1.cx, False)
    assert [h["action"] for h in shown["history"]] == ["add", "retire"]
    assert json.loads(xds("patients", "show", D1.cx, "--json").out)["retired_into_it"] == [D2.cx]


def test_show_of_an_id_never_fed(xds):
    done = xds("patients", "show", D1.cx)
    assert done.code == 1 and f"{D1.cx}: the PIX Manager never had it fed; nor does the registry" in done.err


# --- candidates, link, unlink, dismiss ----------------------------------------------------------

@pytest.fixture
def doubtful(engine):
    """D1 山田 太郎 (M); A1 the same name and birth date but F; C1 山田 次郎 (M): two pairs for
    an administrator."""
    write(engine, feed.add, japanese("D1"), POLICY)
    write(engine, feed.add, japanese("A1", root=HOSPITAL_A, gender="F", kana="halfwidth"), POLICY)
    jiro = japanese("C1", root=CLINIC)
    jiro.names = [type(n)(family=n.family, given=("次郎" if "IDE" in n.uses else "ジロウ",), uses=n.uses)
                  for n in jiro.names]
    write(engine, feed.add, jiro, POLICY)


def test_candidates_say_who_and_why(xds, doubtful):
    done = xds("patients", "candidates")
    assert done.code == 0
    out = done.out
    assert "demographics-partial: the same name and birth date, but another gender" in out
    assert "demographics-partial: the same family name, birth date and gender, but another given name" in out
    assert "山田 太郎" in out and "ﾔﾏﾀﾞ ﾀﾛｳ" in out and "山田 次郎" in out and "ヤマダ ジロウ" in out
    assert "1.2.392.200119.6.102.99" in out  # the source
    assert f"xds patients link '{A1.cx}' '{D1.cx}'" in out and f"xds patients dismiss '{A1.cx}' '{D1.cx}'" in out
    assert out.splitlines()[-1] == "2 candidate pair(s)"
    pairs = json.loads(xds("patients", "candidates", "--json").out)
    assert {(p["patient"]["id"], p["other"]["id"], p["reason"]) for p in pairs} == {
        (A1.cx, D1.cx, "demographics-partial"), (C1.cx, D1.cx, "demographics-partial")}
    assert all(p["patient"]["record"]["names"] for p in pairs)


def test_link_unlink_and_dismiss(xds, engine, doubtful):
    done = xds("patients", "link", A1.cx, D1.cx)
    assert done.code == 0 and done.out.startswith(f"linked: {A1.cx} and {D1.cx} are one person")
    assert person(engine, D1) == {D1, A1}
    remaining = json.loads(xds("patients", "candidates", "--json").out)
    assert [(p["patient"]["id"], p["other"]["id"]) for p in remaining] == [(C1.cx, D1.cx)]

    done = xds("patients", "dismiss", C1.cx, D1.cx)
    assert done.code == 0 and done.out.startswith("dismissed:")
    assert xds("patients", "candidates").out == "no candidates: the linking rules left nothing to decide\n"
    again = xds("patients", "dismiss", C1.cx, D1.cx)
    assert again.code == 1 and "are not a candidate pair" in again.err

    done = xds("patients", "unlink", A1.cx)
    assert done.code == 0 and done.out.startswith(f"unlinked: {A1.cx} is a person of its own")
    assert person(engine, D1) == {D1} and person(engine, A1) == {A1}
    # The administrator's decision holds when the source feeds the patient again.
    write(engine, feed.revise, japanese("A1", root=HOSPITAL_A, gender="M"), POLICY)
    assert person(engine, A1) == {A1}
    assert "linked by an administrator" in xds("patients", "show", A1.cx).out


def test_links_and_local_feeds_queue_update_notifications(xds, engine, monkeypatch, doubtful):
    """ITI-46: a change of a person's ids made here is queued for the PIX Consumers as a feed's
    is (the servers' senders deliver it)."""
    monkeypatch.setenv("XDS_PIX_CONSUMERS", f"http://127.0.0.1:9/pix={DOMAIN},{HOSPITAL_A}")
    monkeypatch.setenv("XDS_HL7V3_DEVICE_ID", "1.2.392.200119.6.102.1")

    def queued() -> list[set[Identifier]]:
        rows = read(engine, lambda s: list(s.scalars(select(PixNotificationRow).order_by(PixNotificationRow.id))))
        return [{Identifier(root, extension) for root, extension in json.loads(r.ids)} for r in rows]

    assert xds("patients", "link", A1.cx, D1.cx).code == 0
    assert queued() == [{D1, A1}]
    assert xds("patients", "unlink", A1.cx).code == 0
    assert queued()[1:] == [{D1}, {A1}] or queued()[1:] == [{A1}, {D1}]
    assert xds("patients", "dismiss", C1.cx, D1.cx).code == 0 and len(queued()) == 3  # no person changed
    done = xds("patients", "add", "A2^^^&1.2.392.200119.6.102.21&ISO", "--family", "山田", "--given", "太郎",
               "--birth", "19710101", "--gender", "M")
    assert done.code == 0 and queued()[-1] == {D1, pid("A2", HOSPITAL_A)}
    monkeypatch.setenv("XDS_PIX_CONSUMERS", "not-a-url=1.2.3")
    refused = xds("patients", "link", A1.cx, D1.cx)
    assert refused.code == 2 and "the settings: pix_consumers" in refused.err and person(engine, A1) == {A1}


def test_a_link_giving_a_person_two_ids_of_one_domain_is_refused_unless_forced(xds, engine):
    write(engine, feed.add, japanese("D1"), POLICY)
    write(engine, feed.add, japanese("D2", "sato"), POLICY)
    done = xds("patients", "link", D2.cx, D1.cx)
    assert done.code == 1 and "xds patients link: refused (same-domain): " in done.err
    assert person(engine, D1) == {D1}
    assert xds("patients", "link", D2.cx, D1.cx, "--force").code == 0
    assert person(engine, D1) == {D1, D2}


def test_link_of_an_unknown_or_malformed_id(xds, engine):
    write(engine, feed.add, japanese("D1"), POLICY)
    done = xds("patients", "link", D1.cx, "Z9^^^&1.2.3&ISO")
    assert (done.code, done.err) == (1, "xds patients link: refused (unknown-id): Z9^^^&1.2.3&ISO was never fed\n")
    assert xds("patients", "unlink", "Z9^^^&1.2.3&ISO").code == 1
    assert xds("patients", "dismiss", D1.cx, "Z9^^^&1.2.3&ISO").code == 1
    with pytest.raises(SystemExit) as exit_:
        cli.main(["patients", "link", D1.cx, "D1^^^&1.2.3"])
    assert exit_.value.code == 2


def test_a_database_not_created_is_named(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("XDS_DATABASE_URL", f"sqlite:///{tmp_path / 'none.sqlite3'}")
    monkeypatch.setenv("XDS_AFFINITY_DOMAIN", DOMAIN)
    assert cli.main(["patients", "candidates"]) == 2
    err = capsys.readouterr().err
    assert "is it created (`xds db upgrade`)?" in err and "Traceback" not in err


# --- the real command -------------------------------------------------------------------------

def test_the_xds_command_in_a_subprocess(engine, database_url, tmp_path):
    env = dict(os.environ, XDS_DATABASE_URL=database_url, XDS_DATA_DIR=str(tmp_path / "var"),
               XDS_AFFINITY_DOMAIN=DOMAIN)
    env.pop("XDS_CONFIG", None)

    def xds(*argv):
        return subprocess.run([sys.executable, "-m", "xds.cli", *argv], env=env, capture_output=True,
                              text=True, encoding="utf-8", timeout=120)

    added = xds("patients", "add", D1.cx, "--family", "山田", "--given", "太郎", "--family", "ﾔﾏﾀﾞ", "--given", "ﾀﾛｳ",
                "--birth", "19710101", "--gender", "M")
    assert added.returncode == 0, added.stderr
    found = xds("patients", "search", "やまだ", "--gender", "M")
    assert found.returncode == 0, found.stderr
    assert D1.cx in found.stdout and "山田 太郎" in found.stdout and "ﾔﾏﾀﾞ ﾀﾛｳ" in found.stdout
    shown = xds("patients", "show", D1.cx, "--json")
    assert json.loads(shown.stdout)["record"]["names"][1]["family"] == ["ﾔﾏﾀﾞ"]
    bad = xds("patients", "link", D1.cx, "not-an-id")
    assert bad.returncode == 2 and "not of the form id^^^&OID&ISO" in bad.stderr and "Traceback" not in bad.stderr


def test_table_widths_count_wide_characters_twice():
    table = command._table(["id", "kanji", "kana", "x"], [["1", "山田 太郎", "ﾔﾏﾀﾞ", ""], ["22", "佐藤", "サトウ", ""]])
    lines = table.splitlines()
    assert lines[0] == "id  kanji      kana"  # the empty column is left out
    assert command._width("山田 太郎") == 9 and command._width("ﾔﾏﾀﾞ") == 4 and command._width("葛\U000e0100") == 2
    assert {command._width(line[:line.index(k)]) for line, k in zip(lines, ["kana", "ﾔ", "サ"])} == {15}


def test_notifications_lists_requeues_and_drops_parked_ones(xds, engine, monkeypatch):
    """`xds patients notifications`: what PIX Consumers refused, sent again or dropped."""
    monkeypatch.setenv("XDS_PIX_CONSUMERS", f"http://127.0.0.1:9/pix={DOMAIN}")
    monkeypatch.setenv("XDS_HL7V3_DEVICE_ID", "1.2.392.200119.6.102.1")
    assert xds("patients", "add", D1.cx).code == 0
    assert xds("patients", "notifications").out.strip() == "no parked notifications"

    def park(session):
        session.execute(update(PixNotificationRow).values(status="parked", last_error="AE: unknown domain"))
    write(engine, park)
    listed = xds("patients", "notifications", "--json")
    rows = json.loads(listed.out)
    assert [(r["consumer"], r["ids"], r["reason"]) for r in rows] == [
        ("http://127.0.0.1:9/pix", [D1.cx], "AE: unknown domain")]

    requeued = xds("patients", "notifications", "--requeue", str(rows[0]["id"]))
    assert (requeued.code, requeued.out.strip()) == (0, "1 notification(s) queued again")
    statuses = read(engine, lambda s: list(s.scalars(select(PixNotificationRow.status))))
    assert statuses == ["waiting"]

    write(engine, park)
    assert xds("patients", "notifications", "--discard").out.strip() == "1 notification(s) dropped"
    assert xds("patients", "notifications").out.strip() == "no parked notifications"
    assert read(engine, lambda s: list(s.scalars(select(PixNotificationRow.status)))) == []
