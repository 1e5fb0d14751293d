"""POST /null: the benchmark's floor (bench/). Off unless null_endpoint is set; when on, any
SOAP action gets a constant RegistryResponse Success and the registry is not touched."""

from __future__ import annotations

from lxml import etree

from tests import submissions as s
from xds import config
from xds.app import create_app
from xds.soap import build_envelope

try:
    from tests.soap_helpers import call, environ
except ImportError:  # tests/ is not a package: pytest put the folder itself on sys.path
    from soap_helpers import call, environ

REGISTER = "urn:ihe:iti:2007:RegisterDocumentSet-b"
STORED_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
MESSAGE_ID = "urn:uuid:0f4b7a52-0000-4000-8000-00000000a11c"


def _app(tmp_path, **env):
    settings = config.load(env={"XDS_DATA_DIR": str(tmp_path / "var"), **env})
    return create_app(settings)


def _post(app, action: str):
    xml, _ = s.submission()
    body = build_envelope(s.element(xml), action, to="http://localhost/null", message_id=MESSAGE_ID)
    return call(app, environ(body, f'application/soap+xml; charset=UTF-8; action="{action}"', PATH_INFO="/null"))


def test_null_endpoint_is_off_by_default(tmp_path):
    assert config.load(env={}).null_endpoint is False
    result = _post(_app(tmp_path), REGISTER)
    assert result.status == 404


def test_null_endpoint_answers_any_action_with_success(tmp_path):
    app = _app(tmp_path, XDS_NULL_ENDPOINT="1")
    for action in (REGISTER, STORED_QUERY, "urn:example:AnythingElse"):
        result = _post(app, action)
        assert result.status == 200
        message = result.message
        assert message.action == action + "Response"
        assert message.relates_to == MESSAGE_ID
        assert message.body.tag == f"{{{RS}}}RegistryResponse"
        assert message.body.get("status") == "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
        assert len(message.body) == 0, etree.tostring(message.body)


def test_null_endpoint_still_parses_the_envelope(tmp_path):
    app = _app(tmp_path, XDS_NULL_ENDPOINT="true")
    result = call(app, environ(b"<not-xml", PATH_INFO="/null"))
    assert result.status == 400
