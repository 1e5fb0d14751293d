"""ebRIM 3.0 versioning as the Metadata Update option uses it (ITI TF-3 4.1.x, ITI TF-2b 3.57).

What belongs here: the names Update Document Set (ITI-57) gives its parts in ebRIM - the lid
attribute and rim:VersionInfo of a DocumentEntry or Folder, the slots of the SubmissionSet's
HasMember (PreviousVersion, AssociationPropagation) and of an UpdateAvailabilityStatus
association (OriginalStatus, NewStatus), the association types of the option - and writing a
version into an object's element. What does not: deciding what an update means
(xds.registry.update).

A registry object's versions share its logicalID (the `lid` attribute; the first version's is
its own entryUUID) and are told apart by rim:VersionInfo/@versionName ("1", "2", ...; the
registry numbers them, ebRIM 3.0 4.3.2).
"""

from __future__ import annotations

from lxml import etree

from xds.ebrim.slots import DESCRIPTION, NAME, SLOT, VERSION_INFO
from xds.model import Association

#: ITI TF-2b 3.57.4.1.3.3.2 and .3.4: the association that changes a status.
UPDATE_AVAILABILITY_STATUS = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"
#: The NIST toolkit's form of "the SubmissionSet brings this new Association" (its tests 20001 and
#: 20100a); the TF's is a HasMember from the SubmissionSet. Both are read as the same operation.
SUBMIT_ASSOCIATION = "urn:ihe:iti:2010:AssociationType:SubmitAssociation"
#: The association types only Update Document Set sends.
UPDATE_ASSOCIATION_TYPES = frozenset({UPDATE_AVAILABILITY_STATUS, SUBMIT_ASSOCIATION})

PREVIOUS_VERSION = "PreviousVersion"
ASSOCIATION_PROPAGATION = "AssociationPropagation"
ORIGINAL_STATUS = "OriginalStatus"
NEW_STATUS = "NewStatus"
#: The slots an ITI-42 association never carries.
UPDATE_SLOTS = (PREVIOUS_VERSION, ORIGINAL_STATUS, NEW_STATUS)

#: ebRIM 3.0 RegistryObjectType: Slot*, Name?, Description?, VersionInfo?, Classification*, ...
_BEFORE_VERSION_INFO = frozenset({SLOT, NAME, DESCRIPTION})


def slot_values(association: Association, name: str) -> list[str] | None:
    """The values of the association's slot `name`, None when it has none."""
    for slot in association.extra_slots:
        if slot.name == name:
            return slot.values
    return None


def propagates(association: Association) -> bool:
    """Whether the new version a SubmissionSet HasMember brings takes over the associations of
    the version it replaces (ITI TF-2b 3.57.4.1.3.3.1.5: yes unless AssociationPropagation is
    "no")."""
    values = slot_values(association, ASSOCIATION_PROPAGATION) or []
    return not any(value.strip().lower() == "no" for value in values)


def set_version(element: etree._Element, logical_id: str, version: str) -> None:
    """Make `element` (a stored ExtrinsicObject or RegistryPackage) version `version` of the
    object `logical_id`: its lid attribute and its rim:VersionInfo, placed where the schema
    wants it; a VersionInfo the submitter sent is replaced (the registry numbers versions)."""
    element.set("lid", logical_id)
    info = element.find(VERSION_INFO)
    if info is None:
        position = 0
        for index, child in enumerate(element):
            if child.tag in _BEFORE_VERSION_INFO:
                position = index + 1
        info = etree.Element(VERSION_INFO)
        element.insert(position, info)
    info.attrib.clear()
    info.set("versionName", version)
