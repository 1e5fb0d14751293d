"""Search keys (xds.identity.names): what makes two Japanese names the same."""

from __future__ import annotations

import pytest

from xds.config import Settings
from xds.identity.names import (ALPHABETIC, IDEOGRAPHIC, SYLLABIC, Normaliser, birth_date, parse_variants,
                                prefix_upper, script_of)
from xds.identity.policy import IdentityPolicy, parse_rules
from xds.model.person import PersonName

N = IdentityPolicy.from_settings(Settings()).normaliser


@pytest.mark.parametrize("typed", ["ｶﾀｶﾅ", "カタカナ", "かたかな", "ｶﾀかな", " カタ　カナ "])
def test_kana_matches_kana_whatever_the_width_and_kind(typed):
    assert N.key(typed) == "カタカナ"


def test_voiced_half_width_kana_compose():
    assert N.key("ﾔﾏﾀﾞ ｼﾞﾛｳ") == N.key("やまだじろう") == "ヤマダジロウ"


def test_full_width_latin_and_case():
    assert N.key("ＹＡＭＡＤＡ Taro") == N.key("yamada taro") == "yamadataro"
    assert N.key("STRASSE") == N.key("Straße")


@pytest.mark.parametrize("old, new", [("髙橋", "高橋"), ("山﨑", "山崎"), ("齋藤", "斎藤"), ("𠮷田", "吉田"),
                                      ("渡邊", "渡辺"), ("渡邉", "渡辺"), ("澤田", "沢田")])
def test_old_and_new_kanji_are_one_by_default(old, new):
    assert N.key(old) == N.key(new)


def test_variants_are_configurable():
    plain = Normaliser(parse_variants(""))
    assert plain.key("髙橋") != plain.key("高橋")
    own = Normaliser(parse_variants("髙/高, 齊=斉"))
    assert own.key("髙橋") == own.key("高橋") and own.key("齊藤") == own.key("斉藤")
    assert own.key("山﨑") != own.key("山崎")
    assert parse_variants("a/b b/c") == {"a": "c", "b": "c"}  # chains fold to the end
    for bad in ("髙高", "髙/", "髙橋/高橋"):
        with pytest.raises(ValueError):
            parse_variants(bad)


def test_settings_build_the_policy():
    settings = Settings(affinity_domain=" 1.2.3 ", pix_linking_rules="demographics", name_kanji_variants="",
                        name_fold_small_kana=False)
    policy = IdentityPolicy.from_settings(settings)
    assert policy.affinity_domain == "1.2.3" and policy.rules == ("demographics",)
    assert policy.normaliser.key("髙") != policy.normaliser.key("高")
    assert policy.normaliser.key("キョウコ") != policy.normaliser.key("キヨウコ")
    assert parse_rules("") == () and parse_rules("identifier, demographics") == ("identifier", "demographics")
    with pytest.raises(ValueError):
        parse_rules("soundex")


def test_small_kana_fold_to_large_unless_turned_off():
    assert N.key("ｷｮｳｺ") == N.key("キヨウコ") == N.key("きょうこ")
    assert Normaliser(fold_small_kana=False).key("キョウコ") == "キョウコ"


def test_variation_selectors_are_dropped_but_not_other_characters():
    assert N.key("葛\U000e0100飾") == N.key("葛飾") == "葛飾"
    assert N.key("𩸽") == "𩸽"  # outside the BMP, no fold: kept as it is
    assert N.key("\ue000") == "\ue000"  # private use (gaiji) is a character too


def test_punctuation_and_spaces_do_not_count():
    assert N.key("760-0017") == "7600017"
    assert N.key("ヤマダ・タロウ") == "ヤマダタロウ"
    assert N.key("O'Brien") == "obrien"
    assert N.key("") == N.key(None) == N.key("・ ") == ""


def test_telecom_keys_keep_the_scheme():
    assert N.telecom_key("tel:087-831-1111") == N.telecom_key("TEL: 087 831 1111") == "tel:0878311111"
    assert N.telecom_key("mailto:A@Example.jp") == "mailto:a@example.jp"
    assert N.telecom_key("tel:1") != N.telecom_key("fax:1")


def test_name_keys():
    family, given, whole = N.name_keys(PersonName(family=("山田",), given=("太郎",), uses=("IDE",)))
    assert (family, given, whole) == (["山田"], ["太郎"], ["山田太郎"])
    # An alphabetic name is also whole in given-family order; a text name has only a whole key.
    assert N.name_keys(PersonName(family=("Smith",), given=("John",)))[2] == ["smithjohn", "johnsmith"]
    assert N.name_keys(PersonName(text="山田 太郎")) == ([], [], ["山田太郎"])


def test_script_from_uses_else_from_characters():
    assert N.script(PersonName(family=("やまだ",), uses=("IDE",))) == IDEOGRAPHIC
    assert script_of("山田はな") == IDEOGRAPHIC
    assert script_of("ﾔﾏﾀﾞ") == SYLLABIC and script_of("やまだ") == SYLLABIC
    assert script_of("Yamada") == ALPHABETIC
    assert script_of("𠮷") == IDEOGRAPHIC


def test_prefix_upper_bounds_every_extension_in_code_point_order():
    for prefix in ["ab", "山", "𠮷", "\ud7ff", "a\U0010ffff"]:
        upper = prefix_upper(prefix)
        for longer in [prefix, prefix + "a", prefix + "\U0010fffe", prefix + "𩸽"]:
            assert prefix <= longer < upper
    assert prefix_upper("\U0010ffff") is None
    assert prefix_upper("\ud7ff") == "\ue000"  # over the surrogates


@pytest.mark.parametrize("ts, expected", [("19710101", "19710101"), ("197101011230+0900", "19710101"),
                                          ("1971", "1971"), ("", None), (None, None), ("x", None)])
def test_birth_date(ts, expected):
    assert birth_date(ts) == expected
