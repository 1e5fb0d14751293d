"""What the identity actors are configured with: the affinity domain, the linking rules, the
name normaliser, the clock. Built once from the settings and passed to every call (protocol
logic without I/O: the database session and this are all a function is given)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from xds.identity.names import Normaliser, parse_variants

#: The linking rules a rule set may name, in the order they are tried when named.
IDENTIFIER, DEMOGRAPHICS = "identifier", "demographics"
RULES = (IDENTIFIER, DEMOGRAPHICS)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def parse_rules(text: str) -> tuple[str, ...]:
    """The setting pix_linking_rules ("identifier,demographics") as a tuple; unknown names
    raise ValueError."""
    rules = tuple(r.strip().lower() for r in text.replace(" ", ",").split(",") if r.strip())
    for rule in rules:
        if rule not in RULES:
            raise ValueError(f"unknown linking rule {rule!r} (known: {', '.join(RULES)})")
    return tuple(dict.fromkeys(rules))


@dataclass(frozen=True)
class IdentityPolicy:
    #: The assigning authority OID whose ids the Document Registry accepts ("" : none).
    affinity_domain: str = ""
    #: The linking rules, tried in order (IDENTIFIER, DEMOGRAPHICS).
    rules: tuple[str, ...] = RULES
    normaliser: Normaliser = field(default_factory=Normaliser)
    clock: Callable[[], datetime] = utc_now

    @classmethod
    def from_settings(cls, settings, clock: Callable[[], datetime] = utc_now) -> "IdentityPolicy":
        """From xds.config.Settings (affinity_domain, pix_linking_rules, name_kanji_variants,
        name_fold_small_kana)."""
        return cls(
            affinity_domain=settings.affinity_domain.strip(),
            rules=parse_rules(settings.pix_linking_rules),
            normaliser=Normaliser(parse_variants(settings.name_kanji_variants),
                                  fold_small_kana=settings.name_fold_small_kana),
            clock=clock,
        )
