"""The replacement rules (ITI TF-3 4.2.2.2), in process, on SQLite and PostgreSQL: what a
replacement (RPLC, XFRM_RPLC) deprecates and what it leaves, for each association type a
document may have to the one it replaces, and the replacements and relationships refused.

The picture every test starts from (`family`): an original DocumentEntry with an addendum
(APND), a transformation (XFRM), a signature (signs) and a document that is only a member of
the same folder; the addendum has an addendum of its own."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests import submissions as s
from tests.queries import APPROVED, DEPRECATED, ask, find_documents, quote_list, register
from xds.errors import XdsError
from xds.registry import service
from xds.rules import RULES
from xds.store import registry as store
from xds.store.tables import AssociationRow

REPLACING = ["RPLC", "XFRM_RPLC"]
BOTH = ("$XDSDocumentEntryStatus", quote_list([APPROVED, DEPRECATED]))


@pytest.fixture
def stored(registry):
    return service.stored_query_for(registry)


@pytest.fixture
def family(registry):
    """{name: entryUUID} of the original and the documents related to it."""
    first = register(registry, s.document("original", s.new_oid()), s.folder("f", s.new_oid()),
                     s.association("f-original", "HasMember", "f", "original"),
                     s.association("ss-f-original", "HasMember", "ss", "f-original"))
    original, folder = first["original"], first["f"]
    related = register(
        registry,
        s.document("addendum", s.new_oid()), s.document("transform", s.new_oid()),
        s.document("signature", s.new_oid()), s.document("neighbour", s.new_oid()),
        s.association("apnd", "APND", "addendum", original),
        s.association("xfrm", "XFRM", "transform", original),
        s.association("signs", "signs", "signature", original),
        s.association("f-neighbour", "HasMember", folder, "neighbour"),
        s.association("ss-f-neighbour", "HasMember", "ss", "f-neighbour"),
    )
    second_level = register(registry, s.document("addendum2", s.new_oid()),
                            s.association("apnd2", "APND", "addendum2", related["addendum"]))
    return {"original": original, "folder": folder, **{k: related[k] for k in
            ("addendum", "transform", "signature", "neighbour")}, "addendum2": second_level["addendum2"]}


def status(registry, *uuids: str) -> dict[str, str]:
    with registry.sessions() as session:
        found = store.find_entries_by_uuid(session, uuids)
    return {u: found[u].status.rsplit(":", 1)[-1] for u in uuids}


def replace(registry, kind: str, target: str, *extra: str) -> list[XdsError]:
    xml = s.request(
        s.submission_set("SubmissionSet01", s.new_oid()),
        s.document("Replacement", s.new_oid()),
        s.association("as01", "HasMember", "SubmissionSet01", "Replacement", "Original"),
        s.association("rel", kind, "Replacement", target),
        *extra,
    )
    return [p for p in registry.register(s.element(xml)) if p.is_error]


def only_rule(problems: list[XdsError], rule_id: str, *words: str) -> XdsError:
    rule = RULES[rule_id]
    assert [p.code for p in problems] == [rule.code], problems
    for word in words:
        assert word in problems[0].context, problems[0].context
    return problems[0]


# --- what a replacement deprecates ----------------------------------------------------------------


@pytest.mark.parametrize("kind", REPLACING)
def test_replacement_deprecates_the_original_its_addenda_and_transformations(registry, family, kind):
    assert replace(registry, kind, family["original"]) == []
    assert status(registry, family["original"], family["addendum"], family["transform"]) == {
        family["original"]: "Deprecated", family["addendum"]: "Deprecated", family["transform"]: "Deprecated"}


@pytest.mark.parametrize("kind", REPLACING)
def test_replacement_leaves_signatures_members_and_second_level_addenda(registry, family, kind):
    """Only the replaced document's own APND and XFRM are named by the rule: a signature of
    it, another member of its folder, and an addendum of its addendum stay Approved."""
    assert replace(registry, kind, family["original"]) == []
    kept = (family["signature"], family["neighbour"], family["addendum2"])
    assert status(registry, *kept) == {u: "Approved" for u in kept}


@pytest.mark.parametrize("kind", ["APND", "XFRM", "signs"])
def test_relationships_that_do_not_replace_deprecate_nothing(registry, family, kind):
    assert replace(registry, kind, family["original"]) == []
    related = (family["original"], family["addendum"], family["transform"])
    assert status(registry, *related) == {u: "Approved" for u in related}


@pytest.mark.parametrize("kind", REPLACING)
def test_a_replaced_addendum_deprecates_only_itself(registry, family, kind):
    """Replacing an addendum deprecates it (and its own addendum), not the document it amends."""
    assert replace(registry, kind, family["addendum"]) == []
    assert status(registry, family["addendum"], family["addendum2"], family["original"]) == {
        family["addendum"]: "Deprecated", family["addendum2"]: "Deprecated", family["original"]: "Approved"}


@pytest.mark.parametrize("kind", REPLACING)
def test_stored_queries_see_the_deprecation(registry, family, stored, kind):
    """The status is patched into the stored XML: LeafClass answers and status filters agree."""
    assert replace(registry, kind, family["original"]) == []
    approved = find_documents(stored).kind("DocumentEntry") | find_documents(stored).kind("ObjectRef")
    assert family["original"] not in approved and family["addendum"] not in approved
    assert family["transform"] not in approved and family["signature"] in approved
    answer = ask(stored, "GetDocuments", ("$XDSDocumentEntryEntryUUID",
                                          quote_list([family["addendum"], family["transform"]])),
                 return_type="LeafClass")
    assert {answer.element_of(u).get("status") for u in (family["addendum"], family["transform"])} == {DEPRECATED}
    everything = find_documents(stored, status=BOTH)
    assert {family["original"], family["addendum"], family["transform"]} <= everything.kind("ObjectRef")


def test_a_replacement_joins_the_folder_and_the_associations_stay(registry, family, session_factory):
    """Deprecation changes statuses only: the APND and XFRM associations are kept (GetRelated
    Documents still finds them), and the replacement joins the original's folder."""
    assert replace(registry, "RPLC", family["original"]) == []
    with session_factory() as session:
        kinds = set(session.scalars(select(AssociationRow.type).where(AssociationRow.target == family["original"])))
        members = set(session.scalars(select(AssociationRow.target).where(AssociationRow.source == family["folder"])))
    assert {"urn:ihe:iti:2007:AssociationType:APND", "urn:ihe:iti:2007:AssociationType:XFRM"} <= kinds
    assert len(members) == 3  # original, neighbour, and the replacement


# --- what is refused --------------------------------------------------------------------------------


@pytest.mark.parametrize("first", REPLACING)
@pytest.mark.parametrize("second", REPLACING)
def test_replacing_a_replaced_document_fails(registry, family, first, second):
    assert replace(registry, first, family["original"]) == []
    only_rule(replace(registry, second, family["original"]), "association.deprecated-target",
              family["original"], "Deprecated")


@pytest.mark.parametrize("kind", [*REPLACING, "APND", "XFRM"])
def test_relating_to_an_addendum_deprecated_with_its_document_fails(registry, family, kind):
    """An addendum deprecated by the replacement of its document is not Approved any more:
    replacing it, appending to it or transforming it is refused as for any Deprecated one."""
    assert replace(registry, "RPLC", family["original"]) == []
    only_rule(replace(registry, kind, family["addendum"]), "association.deprecated-target", family["addendum"])
    assert status(registry, family["addendum"]) == {family["addendum"]: "Deprecated"}


@pytest.mark.parametrize("kind", ["APND", "XFRM"])
@pytest.mark.parametrize("target", ["original", "addendum"])
def test_relating_to_what_the_same_submission_deprecates_fails(registry, family, kind, target):
    """One submission replaces the original and also appends to (or transforms) the original or
    its addendum: the new relationship would point at a document the submission deprecates."""
    other = (s.document("Other", s.new_oid()),
             s.association("as02", "HasMember", "SubmissionSet01", "Other", "Original"),
             s.association("other-rel", kind, "Other", family[target]))
    # The codeContext says why: replaced by the submission's document, or amended/transformed
    # from the document it replaces.
    why = "'Replacement'" if target == "original" else family["original"]
    problem = only_rule(replace(registry, "RPLC", family["original"], *other),
                        "association.target-deprecated-by-replacement", family[target], why)
    assert problem.location == "other-rel"
    # Nothing was stored: the original and its addendum are still Approved.
    assert status(registry, family["original"], family["addendum"]) == {
        family["original"]: "Approved", family["addendum"]: "Approved"}


def test_a_failed_replacement_deprecates_nothing(registry, family):
    """A replacement refused for another reason (an unknown patient) leaves every status."""
    xml = s.request(
        s.submission_set("SubmissionSet01", s.new_oid(), "NOBODY^^^&1.2.3&ISO"),
        s.document("Replacement", s.new_oid(), "NOBODY^^^&1.2.3&ISO"),
        s.association("as01", "HasMember", "SubmissionSet01", "Replacement", "Original"),
        s.association("rel", "RPLC", "Replacement", family["original"]),
    )
    assert any(p.is_error for p in registry.register(s.element(xml)))
    related = (family["original"], family["addendum"], family["transform"])
    assert status(registry, *related) == {u: "Approved" for u in related}
