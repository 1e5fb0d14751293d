"""Concurrent feeds of one person from two processes make one person, not two.

How it is serialised (xds.identity.store): a feed locks every value its decision depends on
(each id of the record, its birth date) before it reads; on PostgreSQL with transaction-level
advisory locks, on SQLite by the write transaction's database lock (BEGIN IMMEDIATE). So of two
feeds that could link to each other, the second waits for the first to commit and then sees it.
"""

from __future__ import annotations

import multiprocessing

from tests.test_identity_data import HOSPITAL_A, HOSPITAL_B, japanese, pid
from tests.test_identity_feed import POLICY, read
from xds.identity import feed, pix

ROUNDS = 12


def _records(side: str, n: int):
    birth = f"19{50 + n:02d}0{1 + n % 9}1{n % 10}"
    if side == "A":
        # Even rounds: the same demographics; odd rounds: A names B as an other id, and only that ties them.
        other = (pid(f"B{n}", HOSPITAL_B),) if n % 2 else ()
        return japanese(f"A{n}", "yamada", root=HOSPITAL_A, birth=birth, other_ids=other)
    who = "yamada" if n % 2 == 0 else "sato"
    return japanese(f"B{n}", who, root=HOSPITAL_B, birth=birth, kana="halfwidth")


def _feeder(database_url: str, side: str, barrier, results) -> None:
    from xds.store import db

    engine = db.make_engine(database_url)
    try:
        for n in range(ROUNDS):
            barrier.wait(timeout=60)
            with db.write_session(engine) as session:
                feed.add(session, _records(side, n), POLICY)
        results.put("ok")
    except Exception as e:  # reported to the test, which fails on it
        results.put(f"{type(e).__name__}: {e}")
    finally:
        engine.dispose()


def test_two_processes_feeding_one_person_make_one_person(engine, database_url):
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_feeder, args=(database_url, side, barrier, results)) for side in "AB"]
    for w in workers:
        w.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    assert outcomes == ["ok", "ok"]
    for n in range(ROUNDS):
        answer = read(engine, pix.query, pid(f"A{n}", HOSPITAL_A), [], POLICY)
        assert set(answer.ids) == {pid(f"A{n}", HOSPITAL_A), pid(f"B{n}", HOSPITAL_B)}, n
