"""PIX Manager and PDQ Supplier: the patient identity store, linking, merges, queries.

Protocol logic without I/O beyond the database: every function takes the caller's SQLAlchemy
session (a write session, xds.store.db.write_session, for those that write) and an
IdentityPolicy (the settings: affinity domain, linking rules, name normaliser, clock). The
HL7v3 messages (xds.hl7v3) are read into xds.model.person records before they get here, and
answers are written from the results returned.

    policy     IdentityPolicy.from_settings(settings)
    feed       add, revise, merge (ITI-44) -> FeedResult; IdentityError for what is refused
    links      the linking rules; candidates, link, unlink, dismiss (the administrator's)
    pix        query (ITI-45) -> PixAnswer; known_domains
    pdq        search (ITI-47) -> PdqPage of PdqMatch, with scores and paging
    directory  IdentityDirectory: the Document Registry's patient directory (resolve, aliases)
    names      Normaliser: the search keys (NFKC, case, kana, kanji variants)
    records    PatientRecord <-> JSON, as stored
    store      the tables row by row; the locks that serialise feeds of one person; history,
               person_of, rebuild_keys
"""
