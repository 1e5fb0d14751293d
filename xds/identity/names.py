"""Search keys: the normalised copies of names, addresses and telecoms that PDQ searches and
demographic linking compare. The values themselves are never changed (a record is stored as it
was sent, characters outside the BMP and JIS X 0213 ones included); only these keys are.

What makes two names the same here:

* NFKC, then case folding (and NFKC again, as Unicode's NFKC_Casefold does): full-width and
  half-width forms are one (ＡＢＣ = abc, ｶﾀｶﾅ = カタカナ, ｶﾞ = ガ), so are compatibility
  ideographs and their unified forms.
* hiragana are katakana (jaconv): かたかな = カタカナ. NFKC alone does not do that.
* small kana are large ones (キョウコ = キヨウコ), unless turned off: old systems that wrote
  half-width kana had no small letters.
* old and new kanji forms configured as equivalents are one (髙橋 = 高橋, 山﨑 = 山崎).
* ideographic variation selectors (U+E0100...) are dropped: 葛󠄀 (an IVS) = 葛.
* spaces, punctuation and control characters are dropped (山田　太郎 = 山田太郎, 760-0001 = 7600001).

A kanji query then matches the ideographic (IDE) name, a kana query the syllabic (SYL) name,
without looking at the name's use codes: the keys of a kana name are kana. This module knows
nothing of the database; xds.identity.store writes the keys it makes.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

import jaconv

from xds.model.person import Address, PatientRecord, PersonName

#: Small kana and their large forms (katakana: hiragana are folded to katakana first).
SMALL_KANA = str.maketrans("ァィゥェォッャュョヮヵヶㇰㇱㇲㇳㇴㇵㇶㇷㇸㇹㇺㇻㇼㇽㇾㇿ",
                           "アイウエオツヤユヨワカケクシストヌハヒフヘホムラリルレロ")

#: The longest key stored (the column's size); longer values are cut, which only makes a long
#: value match its first 512 characters.
KEY_LENGTH = 512

# Search key kinds (IdentityKeyRow.kind).
FAMILY, GIVEN, NAME = "family", "given", "name"
MMN_FAMILY, MMN_GIVEN, MMN_NAME = "mmn_family", "mmn_given", "mmn_name"
STREET, CITY, STATE, POSTAL, COUNTRY = "street", "city", "state", "postal", "country"
TELECOM = "telecom"

#: The representation codes of a Japanese name (EntityNameUse).
IDEOGRAPHIC, SYLLABIC, ALPHABETIC = "IDE", "SYL", "ABC"


def parse_variants(pairs: str) -> dict[str, str]:
    """The setting name_kanji_variants ("髙/高 﨑/崎 ...") as a mapping old -> new. Each
    pair is two characters with '/' (or '=') between them, pairs separated by spaces or commas."""
    mapping: dict[str, str] = {}
    for token in pairs.replace(",", " ").split():
        old, sep, new = token.replace("=", "/").partition("/")
        if not sep or not old or not new:
            raise ValueError(f"kanji variant {token!r} is not of the form OLD/NEW")
        for value in (old, new):
            if len(value) != 1:
                raise ValueError(f"kanji variant {token!r}: {value!r} is not one character")
        mapping[unicodedata.normalize("NFKC", old)] = unicodedata.normalize("NFKC", new)
    # A chain (a/b, b/c) folds a to c as well.
    for old in list(mapping):
        seen, new = {old}, mapping[old]
        while new in mapping and new not in seen:
            seen.add(new)
            new = mapping[new]
        mapping[old] = new
    return mapping


def _dropped(ch: str) -> bool:
    if "\ufe00" <= ch <= "\ufe0f" or "\U000e0100" <= ch <= "\U000e01ef":
        return True  # variation selectors (standardised and ideographic)
    category = unicodedata.category(ch)
    # Separators, punctuation, controls and format characters; private use (gaiji) stays.
    return category[0] in "ZP" or category in ("Cc", "Cf")


@dataclass(frozen=True)
class Normaliser:
    """Turns text into search keys (see the module's docstring)."""

    variants: dict[str, str] = field(default_factory=dict)
    fold_small_kana: bool = True

    def __post_init__(self) -> None:
        table = {ord(old): new for old, new in self.variants.items()}
        object.__setattr__(self, "_variants", table)

    def key(self, text: str | None) -> str:
        """The search key of `text` ("" when nothing is left)."""
        if not text:
            return ""
        s = unicodedata.normalize("NFKC", text)
        s = unicodedata.normalize("NFKC", s.casefold())
        s = jaconv.hira2kata(s)
        if self.fold_small_kana:
            s = s.translate(SMALL_KANA)
        s = s.translate(self._variants)  # type: ignore[attr-defined]
        s = "".join(ch for ch in s if not _dropped(ch))
        return s[:KEY_LENGTH]

    def telecom_key(self, value: str | None) -> str:
        """A telecom URL's key: its scheme kept (tel:, mailto:), case and spaces dropped, and
        in a number (tel:, fax:) separators too."""
        if not value:
            return ""
        scheme, sep, rest = value.strip().partition(":")
        if not sep:
            scheme, rest = "", value
        scheme = scheme.strip().lower()
        if scheme in ("tel", "fax", "modem", "sms", ""):
            rest = self.key(rest)  # a number: separators do not count
        else:
            rest = "".join(unicodedata.normalize("NFKC", rest).casefold().split())
        return (f"{scheme}:{rest}" if scheme else rest)[:KEY_LENGTH]

    # --- what a record is searched by --------------------------------------------------

    def name_keys(self, name: PersonName) -> tuple[list[str], list[str], list[str]]:
        """(family keys, given keys, whole-name keys) of one name. A name given as text only
        has whole-name keys; a name with parts has one whole-name key family-then-given, and
        for an alphabetic name also given-then-family (John Smith = Smith John)."""
        family = [k for k in (self.key(p) for p in name.family) if k]
        given = [k for k in (self.key(p) for p in name.given) if k]
        whole: list[str] = []
        if family or given:
            whole.append(("".join(family) + "".join(given))[:KEY_LENGTH])
            if family and given and self.script(name) == ALPHABETIC:
                whole.append(("".join(given) + "".join(family))[:KEY_LENGTH])
        if name.text:
            whole.append(self.key(name.text))
        return family, given, [k for k in dict.fromkeys(whole) if k]

    def script(self, name: PersonName) -> str:
        """IDE, SYL or ABC: from the name's use codes, else from its characters (any
        ideograph: IDE; else any kana: SYL; else ABC)."""
        for use in name.uses:
            if use in (IDEOGRAPHIC, SYLLABIC, ALPHABETIC):
                return use
        return script_of(" ".join([*name.family, *name.given, name.text]))

    def record_keys(self, record: PatientRecord) -> list[tuple[int, str, str]]:
        """Every (seq, kind, key) a record is searched by, without duplicates. Names are seq
        0, 1, ...; the mother's maiden name, addresses and telecoms follow."""
        keys: dict[tuple[int, str, str], None] = {}
        seq = 0
        for name in record.names:
            self._name(keys, seq, name, FAMILY, GIVEN, NAME)
            seq += 1
        if record.mothers_maiden_name is not None:
            self._name(keys, seq, record.mothers_maiden_name, MMN_FAMILY, MMN_GIVEN, MMN_NAME)
            seq += 1
        for address in record.addresses:
            for kind, values in self.address_parts(address):
                for value in values:
                    keys[(seq, kind, value)] = None
            seq += 1
        for telecom in record.telecoms:
            key = self.telecom_key(telecom.value)
            if key:
                keys[(seq, TELECOM, key)] = None
        return list(keys)

    def _name(self, keys: dict, seq: int, name: PersonName, f: str, g: str, n: str) -> None:
        family, given, whole = self.name_keys(name)
        for kind, values in ((f, family), (g, given), (n, whole)):
            for value in values:
                keys[(seq, kind, value)] = None

    def address_parts(self, address: Address) -> list[tuple[str, list[str]]]:
        """(kind, keys) of each part an address has."""
        parts = [
            (STREET, [k for k in (self.key(line) for line in address.street_lines) if k]),
            (CITY, [self.key(address.city)]),
            (STATE, [self.key(address.state)]),
            (POSTAL, [self.key(address.postal_code)]),
            (COUNTRY, [self.key(address.country)]),
        ]
        return [(kind, [v for v in values if v]) for kind, values in parts if any(values)]

    def names_by_script(self, record: PatientRecord) -> dict[str, set[str]]:
        """The whole-name keys of a record's names by representation (IDE, SYL, ABC): what
        demographic linking compares."""
        result: dict[str, set[str]] = {}
        for name in record.names:
            whole = self.name_keys(name)[2]
            if whole:
                result.setdefault(self.script(name), set()).update(whole)
        return result


def script_of(text: str) -> str:
    """IDE if `text` has an ideograph, else SYL if it has kana, else ABC."""
    kana = False
    for ch in text:
        name = unicodedata.name(ch, "")
        if name.startswith(("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH")) or ch in "々〆ヶ":
            return IDEOGRAPHIC
        if name.startswith(("HIRAGANA", "KATAKANA", "HALFWIDTH KATAKANA")):
            kana = True
    return SYLLABIC if kana else ALPHABETIC


def prefix_upper(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with `prefix`, in code point
    order (key >= prefix AND key < prefix_upper(prefix) is a prefix search on an index).
    None when there is none (a prefix of U+10FFFF only)."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates are not characters
                nxt = 0xE000
            return "".join(chars) + chr(nxt)
    return None


def birth_date(birth_time: str | None) -> str | None:
    """The digits of an HL7 TS up to the day: 19710101 from 197101011230+0900, 1971 from 1971;
    None when there are none."""
    if not birth_time:
        return None
    digits = []
    for ch in birth_time.strip():
        if not ch.isdigit() or len(digits) == 8:
            break
        digits.append(ch)
    return "".join(digits) or None
