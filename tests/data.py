"""Where the public test material lives: ../shared/conformance-data beside the checkout."""

import re
from pathlib import Path

import pytest
from lxml import etree

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance-data"

needs_conformance_data = pytest.mark.skipif(
    not CONFORMANCE.is_dir(),
    reason=f"the public conformance data is not at {CONFORMANCE} (see ../shared/DESIGN.md, 'Test material')",
)

PARSER = etree.XMLParser(resolve_entities=False, no_network=True)
# Only for a captured envelope whose SOAP header uses an undeclared prefix (see sample_message).
LENIENT_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, recover=True)
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
XOP = "http://www.w3.org/2004/08/xop/include"


def standalone(element: etree._Element) -> etree._Element:
    """The element as the root of a document of its own (namespace declarations kept)."""
    return etree.fromstring(etree.tostring(element, with_tail=False), PARSER)


def sample_message(path: Path) -> etree._Element:
    """The ebRS / XDS.b message of a sample file.

    A file is either the message itself, or an HTTP capture / MIME body around a SOAP envelope:
    then the message is the first child of the envelope's Body. An MTOM xop:Include becomes
    empty base64 content: for the schema, any attachment's base64 is as valid as none.
    """
    data = path.read_bytes()
    if data.lstrip().startswith(b"<"):
        return etree.fromstring(data, PARSER)
    start = re.search(rb"<(?:([\w.-]+):)?Envelope[\s>]", data)
    if start is None:
        raise ValueError(f"{path}: neither XML nor a SOAP envelope")
    prefix = start.group(1) + b":" if start.group(1) else b""
    end = re.compile(rb"</" + re.escape(prefix) + rb"Envelope\s*>").search(data, start.end())
    if end is None:
        raise ValueError(f"{path}: the SOAP envelope does not end")
    envelope_bytes = data[start.start():end.end()]
    try:
        envelope = etree.fromstring(envelope_bytes, PARSER)
    except etree.XMLSyntaxError as error:
        # The ehealthsuisse ITI-41 capture uses wsse:Security in its header without declaring
        # wsse. Namespace errors are read leniently; _standalone below parses the Body's
        # message strictly again, so an error there still fails.
        # (The exception's own message, not error_log: that log is shared with earlier parses.)
        if not str(error).startswith("Namespace prefix"):
            raise
        envelope = etree.fromstring(envelope_bytes, LENIENT_PARSER)
    for include in envelope.iter(f"{{{XOP}}}Include"):
        holder = include.getparent()
        holder.remove(include)
        holder.text = ""
    body = envelope.find(f"{{{SOAP12}}}Body")
    return standalone(body[0])


