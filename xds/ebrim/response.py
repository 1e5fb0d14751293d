"""rs:RegistryResponse: the answer of every XDS.b submission (ebRS 3.0, ITI TF-3 4.2.4)."""

from __future__ import annotations

from collections.abc import Iterable

from lxml import etree

from xds.ebrim import ns
from xds.errors import ERROR, WARNING, XdsError

_RS = f"{{{ns.RS}}}"


def registry_response(errors: Iterable[XdsError] = ()) -> etree._Element:
    """A RegistryResponse: Failure if any error has severity Error, Success otherwise
    (warnings alone, such as XDSExtraMetadataNotSaved, leave the status at Success)."""
    errors = list(errors)
    failed = any(e.severity == ERROR for e in errors)
    root = etree.Element(f"{_RS}RegistryResponse", nsmap={"rs": ns.RS})
    root.set("status", ns.FAILURE if failed else ns.SUCCESS)
    if errors:
        root.append(registry_error_list(errors))
    return root


def registry_error_list(errors: list[XdsError]) -> etree._Element:
    element = etree.Element(f"{_RS}RegistryErrorList", nsmap={"rs": ns.RS})
    element.set("highestSeverity", ERROR if any(e.severity == ERROR for e in errors) else WARNING)
    for e in errors:
        item = etree.SubElement(element, f"{_RS}RegistryError")
        item.set("errorCode", e.code)
        item.set("codeContext", e.context)
        item.set("severity", e.severity)
        if e.location:
            item.set("location", e.location)
    return element


def read_registry_response(element: etree._Element) -> tuple[str, list[XdsError]]:
    """The status and errors of a RegistryResponse (for clients: the CLI, the repository)."""
    errors = [
        XdsError(
            e.get("errorCode", ""),
            e.get("codeContext", ""),
            e.get("location", ""),
            e.get("severity", ERROR),
        )
        for e in element.iter(f"{_RS}RegistryError")
    ]
    return element.get("status", ""), errors
