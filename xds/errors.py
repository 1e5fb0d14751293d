"""The one error type of the project: an XDS error code, a codeContext a person can act on,
and a location (the id of the object at fault, or a parameter name)."""

from __future__ import annotations

from dataclasses import dataclass

ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
WARNING = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"


@dataclass
class XdsError(Exception):
    code: str
    context: str
    location: str = ""
    severity: str = ERROR

    def __str__(self) -> str:
        where = f" [{self.location}]" if self.location else ""
        return f"{self.code}: {self.context}{where}"

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR


class XdsErrors(Exception):
    """Several errors at once: a validator raises this with everything it found."""

    def __init__(self, errors: list[XdsError]):
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors
