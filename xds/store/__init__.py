"""Persistence: SQLAlchemy tables, engine and sessions, migrations.

    db        make_engine, make_sessionmaker, write_session, upgrade, ping
    tables    the schema (one table per registry object kind, side tables for query values)
    registry  what the register step (ITI-42) reads and writes
    patients  the patient ids the registry knows
"""
