"""Node authentication (ATNA secure node, ITI-19): the TLS contexts every connection of this
server uses, built from one identity (tls_certificate, tls_private_key) and one trust store
(tls_ca_certificates). TLS 1.2 or newer both ways; the peer must present a certificate that the
trust store vouches for, on either side of the connection.

Also here, so that the TLS policy and its words stay in one place: the peer's certificate
subject as the audit records write it (`peer_subject`), the peer's certificate itself
(`peer_certificate`), and why a handshake was refused, in words an operator reads in a Security
Alert (`refusal_reason`)."""

from __future__ import annotations

import ssl

from xds.config import Settings


def _with_identity(context: ssl.SSLContext, settings: Settings) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # OpenSSL's errors do not say which file: these do, by the setting's name.
    try:
        if settings.tls_certificate:
            context.load_cert_chain(settings.tls_certificate, settings.tls_private_key or None)
    except OSError as exc:
        raise OSError(f"tls_certificate {settings.tls_certificate} / tls_private_key "
                      f"{settings.tls_private_key or '(in the certificate file)'}: {exc.strerror or exc}") from None
    try:
        if settings.tls_ca_certificates:
            context.load_verify_locations(cafile=settings.tls_ca_certificates)
    except OSError as exc:
        raise OSError(f"tls_ca_certificates {settings.tls_ca_certificates}: {exc.strerror or exc}") from None
    return context


def server_context(settings: Settings) -> ssl.SSLContext:
    """For a listening socket: our certificate; client certificates required and verified."""
    if not (settings.tls_certificate and settings.tls_ca_certificates):
        raise ValueError("mutual TLS needs tls_certificate (with tls_private_key) and tls_ca_certificates")
    context = _with_identity(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), settings)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(settings: Settings) -> ssl.SSLContext:
    """For an outgoing connection: the server is verified (against tls_ca_certificates when
    set, else the system's store) and our certificate is offered when we have one."""
    context = ssl.create_default_context(cafile=settings.tls_ca_certificates or None)
    return _with_identity(context, Settings(tls_certificate=settings.tls_certificate,
                                            tls_private_key=settings.tls_private_key))


def context_for(url: str, settings: Settings) -> ssl.SSLContext | None:
    """The client context for an https:// URL; None for anything else (nothing to offer)."""
    return client_context(settings) if url.lower().startswith("https:") else None


# -- the peer -------------------------------------------------------------------------------------

# RFC 4514 2.3: the short names a string representation uses. Other attributes keep OpenSSL's
# long name (getpeercert() gives no OIDs), which readers of an audit record understand better
# than a dotted number anyway.
_SHORT_NAMES = {
    "commonName": "CN", "localityName": "L", "stateOrProvinceName": "ST", "organizationName": "O",
    "organizationalUnitName": "OU", "countryName": "C", "streetAddress": "STREET",
    "domainComponent": "DC", "userId": "UID",
}


def _escape(value: str) -> str:
    # RFC 4514 2.4, as cryptography's Name.rfc4514_string escapes (so both spell a subject alike).
    for char in "\\\"+,;<>":
        value = value.replace(char, "\\" + char)
    value = value.replace("\0", "\\00")
    if value[:1] in ("#", " "):
        value = "\\" + value
    if value.endswith(" "):
        value = value[:-1] + "\\ "
    return value


def subject_string(subject) -> str:
    """RFC 4514 string of a subject as ssl.SSLSocket.getpeercert() gives it (RDNs from the
    root down, each a tuple of (name, value)): most specific RDN first, e.g.
    ``CN=hospital-a,O=Kagawa``."""
    return ",".join("+".join(f"{_SHORT_NAMES.get(name, name)}={_escape(value)}" for name, value in rdn)
                    for rdn in reversed(subject))


def peer_subject(environ) -> str | None:
    """The subject of the client certificate the request came with (RFC 4514), or None when
    the connection was not TLS or carried no verified certificate. Reads the connection
    gunicorn hands the application (``gunicorn.socket``): the handshake that checked the
    certificate is done by the time the application runs."""
    sock = environ.get("gunicorn.socket")
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return None
    try:
        certificate = getpeercert()
    except (ValueError, OSError):  # not connected, or the handshake never finished
        return None
    subject = (certificate or {}).get("subject")
    return subject_string(subject) if subject else None


def peer_certificate(environ) -> bytes | None:
    """The client certificate the request came with, DER, or None (see peer_subject): what an
    XUA holder-of-key assertion is confirmed against (xds.security.xua)."""
    getpeercert = getattr(environ.get("gunicorn.socket"), "getpeercert", None)
    if getpeercert is None:
        return None
    try:
        return getpeercert(binary_form=True) or None
    except (ValueError, OSError):
        return None


def handshake_done(sock) -> bool:
    """Whether a TLS connection finished its handshake (version() is None until it has)."""
    version = getattr(sock, "version", None)
    try:
        return version is not None and version() is not None
    except (ValueError, OSError):
        return False


# OpenSSL's reason codes for the refusals an operator meets, in their words.
_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate",
    "HTTP_REQUEST": "plain HTTP sent to the TLS port",
    "HTTPS_PROXY_REQUEST": "an HTTP proxy request sent to the TLS port",
    "WRONG_VERSION_NUMBER": "not TLS, or a TLS version this node does not speak",
    "UNSUPPORTED_PROTOCOL": "TLS version below 1.2",
    "NO_PROTOCOLS_AVAILABLE": "TLS version below 1.2",
    "NO_SHARED_CIPHER": "no cipher suite in common",
}


def refusal_reason(exc: ssl.SSLError) -> str:
    """Why a TLS handshake failed, for a Security Alert and the log: the certificate check's
    verdict (expired, unknown issuer...) when that was it, else OpenSSL's reason, named in
    words where we know them and always with its code so that it can be looked up."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"client certificate refused: {exc.verify_message}"
    code = getattr(exc, "reason", None)
    if code and code in _REASONS:
        return f"{_REASONS[code]} ({code})"
    if code:
        # e.g. TLSV1_ALERT_UNKNOWN_CA: the peer refused our certificate and said so.
        return f"TLS handshake failed: {code.replace('_', ' ').lower()} ({code})"
    return f"TLS handshake failed: {exc}"
