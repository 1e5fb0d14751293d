"""The Japanese data set the identity tests feed, made here: names in kanji (IDE) and kana
(SYL), kana typed half-width, in hiragana or in katakana, old and new kanji forms (髙/高, 﨑/崎,
齋/斎, 𠮷/吉), and names outside the BMP and in JIS X 0213 (𠮷, 𩸽, 𠀋), an ideographic
variation sequence (葛󠄀). The tests below check the data set itself round-trips."""

from __future__ import annotations

import unicodedata

import jaconv

from xds.identity import records
from xds.model.person import Address, Identifier, PatientRecord, PersonName, Telecom

#: Assigning authorities: the affinity domain, two hospitals and a clinic of one network.
DOMAIN = "1.2.392.200119.6.102.11"
HOSPITAL_A = "1.2.392.200119.6.102.21"
HOSPITAL_B = "1.2.392.200119.6.102.22"
CLINIC = "1.2.392.200119.6.102.23"

#: (kanji family, kanji given, kana family, kana given)
PEOPLE = {
    "yamada": ("山田", "太郎", "ヤマダ", "タロウ"),
    "takahashi_old": ("髙橋", "京子", "タカハシ", "キョウコ"),
    "takahashi_new": ("高橋", "京子", "タカハシ", "キョウコ"),
    "yamasaki_old": ("山﨑", "花子", "ヤマサキ", "ハナコ"),
    "saito_old": ("齋藤", "一郎", "サイトウ", "イチロウ"),
    "yoshida_bmp2": ("𠮷田", "𩸽子", "ヨシダ", "ホッケコ"),  # both outside the BMP
    "katsushika": ("葛\U000e0100飾", "𠀋", "カツシカ", "ジョウ"),  # an IVS; 𠀋: JIS X 0213 plane 2
    "sato": ("佐藤", "花子", "サトウ", "ハナコ"),
}


def pid(extension: str, root: str = DOMAIN) -> Identifier:
    return Identifier(root, extension)


def japanese(extension: str, who: str = "yamada", *, root: str = DOMAIN, birth: str | None = "19710101",
             gender: str | None = "M", kana: str = "katakana", other_ids: tuple[Identifier, ...] = (),
             sender: str = "1.2.392.200119.6.102.99", **fields) -> PatientRecord:
    """A patient of PEOPLE, kanji name (IDE) and kana name (SYL); `kana` says how the kana is
    typed: "katakana", "hiragana", "halfwidth" (half-width katakana), or "none"."""
    kf, kg, sf, sg = PEOPLE[who]
    names = [PersonName(family=(kf,), given=(kg,), uses=("L", "IDE"))]
    if kana != "none":
        convert = {"katakana": lambda s: s, "hiragana": jaconv.kata2hira, "halfwidth": jaconv.z2h}[kana]
        names.append(PersonName(family=(convert(sf),), given=(convert(sg),), uses=("L", "SYL")))
    return PatientRecord(ids=[Identifier(root, extension)], other_ids=list(other_ids), names=names,
                         gender=gender, birth_time=birth, sender=sender, **fields)


def western(extension: str, family: str, given: str, *, root: str = HOSPITAL_A, birth: str | None = "19400101",
            gender: str | None = "F", **fields) -> PatientRecord:
    return PatientRecord(ids=[Identifier(root, extension)], names=[PersonName(family=(family,), given=(given,))],
                         gender=gender, birth_time=birth, **fields)


def many(count: int, *, root: str = HOSPITAL_B, start: int = 0) -> list[PatientRecord]:
    """`count` distinct patients (different birth dates), cycling through PEOPLE and through the
    ways kana is typed."""
    whos = list(PEOPLE)
    kinds = ["katakana", "hiragana", "halfwidth"]
    result = []
    for n in range(start, start + count):
        year, day = 1930 + n % 80, 1 + n % 28
        result.append(japanese(f"M{n:06d}", whos[n % len(whos)], root=root, birth=f"{year}01{day:02d}",
                               gender="MF"[n % 2], kana=kinds[n % 3]))
    return result


FULL = japanese(
    "F1", "yoshida_bmp2", root=HOSPITAL_A,
    addresses=[Address(street_lines=("番町１丁目１－１",), city="高松市", state="香川県", postal_code="760-0017",
                       country="JP", uses=("H",))],
    telecoms=[Telecom("tel:087-831-1111", ("HP",)), Telecom("mailto:yoshida@example.jp")],
    mothers_maiden_name=PersonName(family=("齋藤",), uses=("IDE",)),
    multiple_birth=True, multiple_birth_order=2, deceased=False, provider_organization="1.2.392.200119.6.102.21",
)


def test_the_data_set_has_what_it_says():
    chars = "".join("".join(p) for p in PEOPLE.values())
    assert any(ord(c) > 0xFFFF for c in chars)  # outside the BMP
    assert "\U000e0100" in chars  # an ideographic variation selector
    halfwidth = japanese("X", kana="halfwidth").names[1].family[0]
    assert halfwidth == "ﾔﾏﾀﾞ" and unicodedata.normalize("NFKC", halfwidth) == "ヤマダ"
    assert japanese("X", kana="hiragana").names[1].family[0] == "やまだ"


def test_every_field_round_trips_through_json_unchanged():
    text = records.to_json(FULL)
    assert "𠮷田" in text and "𩸽子" in text  # stored as given, not escaped
    assert records.from_json(text) == FULL
    for who in PEOPLE:
        record = japanese("X", who, kana="halfwidth")
        assert records.from_json(records.to_json(record)) == record
