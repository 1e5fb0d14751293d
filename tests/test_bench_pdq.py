"""The PDQ benchmark (bench/pdq.py) on a tiny corpus, so that it does not rot: the generator,
the bulk loader's equality with the Patient Identity Feed (on SQLite and PostgreSQL), and the
answers the benchmark checks before it measures (SQLite). A few seconds; the benchmark's own
`python -m bench.pdq_load --verify [--database URL]` runs the equality check on 3,000 patients."""

from __future__ import annotations

import jaconv
import pytest

from bench import pdq as bench_pdq
from bench.pdq_corpus import CLINIC, DOMAIN, FAMILIES, HOSPITAL_B, KINDS, Corpus, expected, query_for
from bench.pdq_load import TABLES, dump, feed_all, load
from xds.store import db


@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'identity.sqlite3'}"
    db.upgrade(url)
    return url


def test_the_corpus_is_what_its_docstring_says():
    corpus = Corpus(2_000)
    records = list(corpus.records(0, corpus.patients))
    assert [int(r.ids[0].extension) for r in records] == list(range(corpus.patients))
    assert records[0].ids[0].root == DOMAIN and not records[0].other_ids
    linked = [r for r in records if r.ids[0].root != DOMAIN]
    assert 0.25 < len(linked) / len(records) < 0.5  # persons have 1-3 ids
    assert all(r.other_ids[0].root == DOMAIN for r in linked)
    clinic = next(r for r in records if r.ids[0].root == CLINIC)
    assert [n.uses for n in clinic.names] == [("L", "SYL")]
    assert clinic.names[0].family[0] == jaconv.z2h(clinic.names[0].family[0])  # half-width kana
    assert any(r.names[0].family[0] in {f.old for f in FAMILIES if f.old} for r in records
               if r.ids[0].root == HOSPITAL_B)  # old kanji forms (髙橋, 𠮷田 ...)
    sato = sum(1 for f, *_ in corpus.table if FAMILIES[f].kanji == "佐藤") / corpus.patients
    assert 0.02 < sato < 0.06  # the commonest name, as skewed as the docstring says
    assert Corpus(2_000).record(1234) == corpus.record(1234)  # deterministic


def test_the_bulk_loader_stores_what_the_feed_stores(engine, database_url):
    # Few birth dates: namesakes born the same day, so the demographic rule lists candidates.
    # On SQLite and on PostgreSQL (COPY, and the sequences set after it).
    corpus = Corpus(100, birth_dates=2)
    feed_all(database_url, corpus)
    fed = dump(database_url)
    with engine.begin() as connection:
        for table in [*TABLES, "patient"]:
            connection.exec_driver_sql(f"DELETE FROM {table}")
    load(database_url, corpus, workers=1, quiet=True)
    loaded = dump(database_url)
    assert fed["identity_candidate"], "the corpus should give the demographic rule candidates"
    for table in fed:
        assert fed[table] == loaded[table], table
    # Feeds after the load get the next ids (on PostgreSQL: the sequences were moved on).
    feed_all(database_url, Corpus(110, birth_dates=2), first=100)
    after = dump(database_url)
    patients, persons = after["identity_patient"], after["identity_person"]
    assert [(row[0], row[2]) for row in patients[-10:]] == [(n + 1, f"{n:07d}") for n in range(100, 110)]
    assert [row[0] for row in persons] == list(range(1, len(persons) + 1))


def test_the_answers_the_benchmark_checks(sqlite_url):
    corpus = Corpus(500)
    url = sqlite_url
    load(url, corpus, workers=1, quiet=True)
    engine = db.make_engine(url)
    try:
        assert bench_pdq.check_answers(engine, corpus, samples=3, page=20) == 3 * len(KINDS)
    finally:
        engine.dispose()
    assert bench_pdq.is_loaded(url, corpus) and not bench_pdq.is_loaded(url, Corpus(499))


def test_a_check_fails_when_the_database_answers_otherwise(sqlite_url):
    corpus = Corpus(300)
    url = sqlite_url
    load(url, corpus, workers=1, quiet=True)
    engine = db.make_engine(url)
    try:
        with engine.begin() as connection:  # the given names' search keys lost
            connection.exec_driver_sql("DELETE FROM identity_key WHERE kind = 'given'")
        with pytest.raises(AssertionError, match="family_given"):
            bench_pdq.check_answers(engine, corpus, samples=3, page=20)
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", KINDS)
def test_each_query_kind_finds_its_own_patient(kind):
    corpus = Corpus(300)
    for n in (0, 1, 2, 150):
        exact, prefix = expected(kind, n, corpus)
        source = corpus.patient(n).source
        carries = {"family_kanji": source != CLINIC, "family_given": source != CLINIC,
                   "name_birth": source != CLINIC, "family_alphabetic": source == DOMAIN}.get(kind, True)
        assert (n in exact + prefix) == carries, (kind, n, query_for(kind, n, corpus))


@pytest.mark.parametrize("kind", KINDS)
def test_the_http_bodies_ask_what_the_in_process_queries_ask(kind):
    # What the supplier reads from bench/pdq_http.py's PRPA_IN201305UV02 is the query measured
    # in process (xds.identity.service.search_query: the service's own mapping).
    from lxml import etree

    from bench import pdq_http
    from xds.hl7v3.pdq import read_pdq_query
    from xds.identity.service import search_query

    corpus = Corpus(300)
    query = query_for(kind, 7, corpus)
    envelope = etree.fromstring(pdq_http.fresh(pdq_http.body(query, "/pdq")))
    message = envelope.find("{http://www.w3.org/2003/05/soap-envelope}Body")[0]
    read = read_pdq_query(message)
    assert read.ok, read.problems
    assert search_query(read) == query


def test_the_feed_bodies_add_a_new_patient_per_request_that_no_measured_query_finds():
    # bench/pdq_http.py's ITI-44 bodies: a valid feed, a new id per request (the client's nonce),
    # and a name and birth date no corpus patient has, so the answers the bench checks never change.
    from lxml import etree

    from bench import pdq_http
    from bench.pdq_corpus import YEARS
    from xds.hl7v3.feed import read_patient_feed

    corpus = Corpus(300)
    body = pdq_http.feed_body(7, corpus, "/pix", "0a0b0c0d")
    fed = []
    for _ in range(2):
        envelope = etree.fromstring(pdq_http.fresh(body))
        feed = read_patient_feed(envelope.find("{http://www.w3.org/2003/05/soap-envelope}Body")[0])
        assert feed.ok, feed.problems
        fed.append(feed.patient)
    [first, second] = fed
    assert first.ids[0].root == pdq_http.FEED_DOMAIN and first.ids[0].extension.startswith("0a0b0c0d")
    assert first.ids[0] != second.ids[0] and first.names[0].given != second.names[0].given
    families = {f for family in FAMILIES for f in (family.kanji, family.old, family.kana, family.romaji)}
    assert not {name.family[0] for name in first.names} & families
    assert int(first.birth_time[:4]) < min(YEARS)
