"""The PDQ benchmark's patients: a regional network's Patient Identity Feeds, generated from the
patient number, and what each benchmark query must answer.

    corpus = Corpus(1_000_000)
    corpus.record(n)          # the n-th record fed (0-based): a PatientRecord, as ITI-44 carries it
    corpus.expected(query)    # the extensions a PdqQuery must find, in the order PDQ gives them

Persons and their ids. Every person has an id in the affinity domain (the regional id, fed
first), and 45% of them one or two more at a hospital or clinic of the network, fed right after
it with the regional id among their other ids (asOtherIDs): the PIX Manager links them by its
identifier rule. Patient number n (the feed order, and so identity_patient.pk = n + 1 on a fresh
database) is the n-th id fed; its extension is n written with 7 digits, unique in every domain.

What each source sends (how Japanese systems differ):

| source | names |
| --- | --- |
| affinity domain (regional id) | kanji (L IDE), full-width katakana (L SYL), romaji (L ABC, passport style: SATO, OTA) |
| hospital A | kanji, half-width katakana (an older system) |
| hospital B | kanji, sometimes in the old form (髙橋, 𠮷田: 30% of those who have one), hiragana |
| clinic | half-width katakana only |

Family names: 156 of the commonest, with weights from their national frequency (佐藤 3.6%, 鈴木
3.5%, 高橋 2.7% of this corpus: the list covers some 40% of Japan, so each is a larger share
here than nationally), and 10 rare ones (小鳥遊, 四月一日, 勅使河原). Homophones are there as in life
(斎藤 / 斉藤 サイトウ, 菊地 / 菊池 キクチ, 渡辺 / 渡部 ワタナベ; in romaji 大野 / 小野 ONO).
Given names: about 70 per gender, weighted. Birth dates: 1925-2024, older years more frequent
(a hospital's patients); a date per person, kept by all its ids. Addresses in the 47
prefectures by population; a telephone number.

Deterministic: record n depends only on the seed and on the person it belongs to (a random
generator seeded per person), so worker processes make any slice of the corpus alone.
"""

from __future__ import annotations

import bisect
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import jaconv

from xds.identity.pdq import PdqQuery
from xds.model.person import Address, Identifier, PatientRecord, PersonName, Telecom

DOMAIN = "1.2.392.200119.6.102.11"       # the affinity domain (regional ids)
HOSPITAL_A = "1.2.392.200119.6.102.21"
HOSPITAL_B = "1.2.392.200119.6.102.22"
CLINIC = "1.2.392.200119.6.102.23"
SOURCES = (DOMAIN, HOSPITAL_A, HOSPITAL_B, CLINIC)
SENDERS = {DOMAIN: "1.2.392.200119.6.102.91", HOSPITAL_A: "1.2.392.200119.6.102.92",
           HOSPITAL_B: "1.2.392.200119.6.102.93", CLINIC: "1.2.392.200119.6.102.94"}
#: Which extra sources a person's further ids come from, and how likely.
EXTRA_SOURCES = ((HOSPITAL_A, 45), (HOSPITAL_B, 35), (CLINIC, 20))
#: How many ids a person has: 1 (55%), 2 (30%), 3 (15%).
IDS_PER_PERSON = ((1, 55), (2, 30), (3, 15))
OLD_FORM_SHARE = 0.3

# kanji, katakana, weight (people per 10,000 in Japan, rounded), old form if any. A trailing
# group of rare names (weight < 1) makes the long tail.
FAMILY_NAMES = """
佐藤 サトウ 149; 鈴木 スズキ 144; 高橋 タカハシ 113 髙橋; 田中 タナカ 107; 伊藤 イトウ 86; 渡辺 ワタナベ 85 渡邊;
山本 ヤマモト 85; 中村 ナカムラ 84; 小林 コバヤシ 82; 加藤 カトウ 71; 吉田 ヨシダ 67 𠮷田; 山田 ヤマダ 65;
佐々木 ササキ 54; 山口 ヤマグチ 51; 松本 マツモト 50; 井上 イノウエ 49; 木村 キムラ 46; 林 ハヤシ 44;
斎藤 サイトウ 44 齋藤; 清水 シミズ 43; 山崎 ヤマザキ 38 山﨑; 森 モリ 37; 池田 イケダ 36; 橋本 ハシモト 36;
阿部 アベ 36; 石川 イシカワ 34; 山下 ヤマシタ 34; 中島 ナカジマ 33 中嶋; 石井 イシイ 32; 小川 オガワ 32;
前田 マエダ 32; 岡田 オカダ 32; 長谷川 ハセガワ 31; 藤田 フジタ 31; 後藤 ゴトウ 31; 近藤 コンドウ 30;
村上 ムラカミ 29; 遠藤 エンドウ 28; 青木 アオキ 27; 坂本 サカモト 27; 斉藤 サイトウ 26 齊藤; 福田 フクダ 26;
太田 オオタ 26; 西村 ニシムラ 26; 藤井 フジイ 26; 金子 カネコ 25; 岡本 オカモト 25; 藤原 フジワラ 25;
中野 ナカノ 25; 三浦 ミウラ 25; 原田 ハラダ 24; 中川 ナカガワ 24; 松田 マツダ 24; 竹内 タケウチ 24;
小野 オノ 24; 田村 タムラ 23; 中山 ナカヤマ 23; 和田 ワダ 22; 石田 イシダ 22; 森田 モリタ 22;
上田 ウエダ 22; 原 ハラ 22; 内田 ウチダ 22; 柴田 シバタ 22; 酒井 サカイ 22; 宮崎 ミヤザキ 22 宮﨑;
横山 ヨコヤマ 21; 高木 タカギ 21 髙木; 安藤 アンドウ 21; 宮本 ミヤモト 21; 大野 オオノ 21; 小島 コジマ 20 小嶋;
谷口 タニグチ 20; 今井 イマイ 20; 工藤 クドウ 20; 高田 タカダ 19 髙田; 増田 マスダ 19 增田; 丸山 マルヤマ 19;
杉山 スギヤマ 19; 村田 ムラタ 19; 大塚 オオツカ 19; 新井 アライ 19; 小山 コヤマ 18; 平野 ヒラノ 18;
藤本 フジモト 18; 河野 コウノ 18; 上野 ウエノ 18; 野口 ノグチ 18; 武田 タケダ 18; 松井 マツイ 18;
千葉 チバ 18; 岩崎 イワサキ 18 岩﨑; 菅原 スガワラ 18; 木下 キノシタ 18; 久保 クボ 17; 佐野 サノ 17;
野村 ノムラ 17; 松尾 マツオ 17; 市川 イチカワ 17; 菊地 キクチ 17; 杉本 スギモト 17; 古川 フルカワ 17;
大西 オオニシ 17; 島田 シマダ 17 嶋田; 水野 ミズノ 17; 桜井 サクライ 17 櫻井; 高野 タカノ 16 髙野; 渡部 ワタナベ 16;
吉川 ヨシカワ 16; 山内 ヤマウチ 16; 西田 ニシダ 16; 飯田 イイダ 16; 菊池 キクチ 16; 西川 ニシカワ 16;
小松 コマツ 15; 北村 キタムラ 15; 安田 ヤスダ 15; 五十嵐 イガラシ 15; 川口 カワグチ 15; 平田 ヒラタ 15;
関 セキ 15; 中田 ナカタ 15; 久保田 クボタ 15; 服部 ハットリ 15; 東 ヒガシ 15; 岩田 イワタ 15;
土屋 ツチヤ 14; 川村 カワムラ 14; 永井 ナガイ 14; 松下 マツシタ 14; 浜田 ハマダ 14 濱田; 大橋 オオハシ 14;
沢田 サワダ 14 澤田; 広瀬 ヒロセ 13 廣瀬; 辻 ツジ 13; 福島 フクシマ 13; 秋山 アキヤマ 13; 伊東 イトウ 12;
大川 オオカワ 12; 桑原 クワハラ 12 桒原; 本田 ホンダ 12; 須藤 スドウ 12; 宮田 ミヤタ 12; 荒木 アラキ 12;
徳永 トクナガ 11 德永; 富田 トミタ 11 冨田; 星野 ホシノ 11; 吉村 ヨシムラ 11; 浅野 アサノ 11 淺野; 真鍋 マナベ 10 眞鍋;
嶋村 シマムラ 6; 瀬戸 セト 6 瀨戸; 峰岸 ミネギシ 5 峯岸; 舘野 タテノ 4 館野; 槙田 マキタ 4 槇田; 滝沢 タキザワ 9 瀧澤;
蛭子 エビス 0.5; 小鳥遊 タカナシ 0.1; 四月一日 ワタヌキ 0.1; 勅使河原 テシガワラ 0.3; 東海林 ショウジ 0.8;
五月女 ソウトメ 0.3; 一 ニノマエ 0.05; 百目鬼 ドウメキ 0.2; 栗花落 ツユリ 0.05; 御手洗 ミタライ 0.6
"""

# kanji, katakana, weight (relative). Male, then female.
MALE_NAMES = """
太郎 タロウ 8; 一郎 イチロウ 8; 健一 ケンイチ 9; 誠 マコト 12; 隆 タカシ 10; 浩 ヒロシ 12; 茂 シゲル 9;
博 ヒロシ 8; 清 キヨシ 9; 和夫 カズオ 9; 正 タダシ 7; 勇 イサム 7; 進 ススム 6; 明 アキラ 9; 昭 アキラ 5;
豊 ユタカ 6; 稔 ミノル 5; 実 ミノル 5; 弘 ヒロシ 6; 勝 マサル 6; 義男 ヨシオ 5; 正雄 マサオ 6; 武 タケシ 6;
敏夫 トシオ 6; 和彦 カズヒコ 5; 孝 タカシ 5; 修 オサム 6; 学 マナブ 5; 直樹 ナオキ 9; 哲也 テツヤ 8;
達也 タツヤ 8; 和也 カズヤ 8; 秀樹 ヒデキ 6; 剛 ツヨシ 6; 亮 リョウ 5; 涼 リョウ 4; 翼 ツバサ 5; 大樹 ダイキ 7;
健二 ケンジ 6; 雄一 ユウイチ 5; 浩二 コウジ 6; 幸一 コウイチ 5; 俊介 シュンスケ 5; 拓也 タクヤ 9; 大輔 ダイスケ 10;
健太 ケンタ 8; 翔 ショウ 6; 翔太 ショウタ 8; 拓海 タクミ 6; 優斗 ユウト 5; 悠斗 ユウト 4; 颯太 ソウタ 5;
蓮 レン 6; 大翔 ヒロト 5; 悠真 ユウマ 4; 陽翔 ハルト 4; 湊 ミナト 4; 樹 イツキ 4; 大和 ヤマト 3; 陸 リク 4;
航 ワタル 3; 淳 ジュン 4; 純一 ジュンイチ 4; 慎一 シンイチ 4; 恭平 キョウヘイ 4; 祐介 ユウスケ 5; 亮介 リョウスケ 5;
翔平 ショウヘイ 5; 康介 コウスケ 5; 光 ヒカル 2; 薫 カオル 1; 惠一 ケイイチ 1
"""

FEMALE_NAMES = """
花子 ハナコ 5; 陽子 ヨウコ 10; 恵子 ケイコ 11; 京子 キョウコ 9; 幸子 サチコ 10; 和子 カズコ 10; 洋子 ヨウコ 9;
美智子 ミチコ 9; 節子 セツコ 7; 久美子 クミコ 8; 由美子 ユミコ 8; 真由美 マユミ 7; 智子 トモコ 9; 裕子 ユウコ 8;
優子 ユウコ 7; 直美 ナオミ 7; 明美 アケミ 7; 美香 ミカ 6; 愛 アイ 6; 恵 メグミ 7; 舞 マイ 5; 彩 アヤ 5;
葵 アオイ 5; 結衣 ユイ 5; 陽菜 ヒナ 5; 凛 リン 4; 結愛 ユア 3; 芽依 メイ 3; 咲良 サクラ 3; さくら サクラ 3;
美咲 ミサキ 6; 七海 ナナミ 4; 莉子 リコ 4; 紗希 サキ 3; 麻衣 マイ 4; 千尋 チヒロ 4; 沙織 サオリ 5; 香織 カオリ 6;
奈々 ナナ 3; 由紀 ユキ 5; 雅子 マサコ 6; 文子 フミコ 6; 敏子 トシコ 6; 静香 シズカ 4; 絵美 エミ 4; 瞳 ヒトミ 5;
純子 ジュンコ 7; 千代 チヨ 4; ハル ハル 3; キヨ キヨ 3; トメ トメ 2; 和美 カズミ 5; 薫 カオル 3; 忍 シノブ 3;
光 ヒカル 2; 春香 ハルカ 4; 里美 サトミ 4; 亜希子 アキコ 4; 明子 アキコ 5; 朋子 トモコ 3; 典子 ノリコ 6;
弘子 ヒロコ 7; 順子 ジュンコ 5; 清美 キヨミ 4; 靜子 シズコ 1; 惠美子 エミコ 1; 榮子 エイコ 1
"""

# prefecture, capital and a second city, population (10,000s), postal code's first three digits
PREFECTURES = """
北海道 札幌市 旭川市 522 060; 青森県 青森市 八戸市 124 030; 岩手県 盛岡市 一関市 121 020; 宮城県 仙台市 石巻市 230 980;
秋田県 秋田市 横手市 96 010; 山形県 山形市 鶴岡市 107 990; 福島県 福島市 郡山市 183 960; 茨城県 水戸市 つくば市 287 310;
栃木県 宇都宮市 小山市 193 320; 群馬県 前橋市 高崎市 194 371; 埼玉県 さいたま市 川越市 734 330; 千葉県 千葉市 船橋市 628 260;
東京都 新宿区 八王子市 1404 160; 神奈川県 横浜市 川崎市 923 220; 新潟県 新潟市 長岡市 220 950; 富山県 富山市 高岡市 103 930;
石川県 金沢市 白山市 113 920; 福井県 福井市 坂井市 77 910; 山梨県 甲府市 甲斐市 81 400; 長野県 長野市 松本市 204 380;
岐阜県 岐阜市 大垣市 198 500; 静岡県 静岡市 浜松市 363 420; 愛知県 名古屋市 豊田市 750 450; 三重県 津市 四日市市 177 514;
滋賀県 大津市 草津市 141 520; 京都府 京都市 宇治市 255 600; 大阪府 大阪市 堺市 878 530; 兵庫県 神戸市 姫路市 540 650;
奈良県 奈良市 橿原市 132 630; 和歌山県 和歌山市 田辺市 92 640; 鳥取県 鳥取市 米子市 54 680; 島根県 松江市 出雲市 66 690;
岡山県 岡山市 倉敷市 187 700; 広島県 広島市 福山市 276 730; 山口県 山口市 下関市 133 753; 徳島県 徳島市 阿南市 71 770;
香川県 高松市 丸亀市 94 760; 愛媛県 松山市 今治市 131 790; 高知県 高知市 南国市 68 780; 福岡県 福岡市 北九州市 511 810;
佐賀県 佐賀市 唐津市 80 840; 長崎県 長崎市 佐世保市 128 850; 熊本県 熊本市 八代市 172 860; 大分県 大分市 別府市 111 870;
宮崎県 宮崎市 都城市 106 880; 鹿児島県 鹿児島市 霧島市 157 890; 沖縄県 那覇市 沖縄市 147 900
"""
TOWNS = ("本町", "中央", "栄町", "緑町", "旭町", "東町", "西町", "南町", "北町", "幸町", "桜町", "若葉", "青葉台", "寿町",
         "番町", "大手町", "元町", "新町", "昭和町", "宮前")


@dataclass(frozen=True)
class Name:
    kanji: str
    kana: str       # full-width katakana
    weight: float
    old: str = ""   # the old kanji form, when there is one

    @cached_property
    def romaji(self) -> str:
        """Passport style: long vowels not written (サトウ SATO, オオタ OTA, ユウコ YUKO)."""
        text = jaconv.kana2alphabet(jaconv.kata2hira(self.kana))
        # A long vowel is a vowel before a syllable of its own (イノウエ stays INOUE).
        return re.sub(r"(?:ou|oo)(?![aiueo])", "o", re.sub(r"uu(?![aiueo])", "u", text)).upper()


def _names(table: str) -> list[Name]:
    result = []
    for item in table.replace("\n", " ").split(";"):
        fields = item.split()
        if fields:
            result.append(Name(fields[0], fields[1], float(fields[2]), fields[3] if len(fields) > 3 else ""))
    return result


FAMILIES = _names(FAMILY_NAMES)
GIVEN = {"M": _names(MALE_NAMES), "F": _names(FEMALE_NAMES)}


@dataclass(frozen=True)
class Prefecture:
    name: str
    cities: tuple[str, str]
    weight: int
    postal: str


PREFECTURE_LIST = [Prefecture(f[0], (f[1], f[2]), int(f[3]), f[4])
                   for f in (item.split() for item in PREFECTURES.replace("\n", " ").split(";")) if f]


def _cumulative(weights) -> list[float]:
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return out


_FAMILY_CUM = _cumulative(n.weight for n in FAMILIES)
_GIVEN_CUM = {g: _cumulative(n.weight for n in names) for g, names in GIVEN.items()}
_PREF_CUM = _cumulative(p.weight for p in PREFECTURE_LIST)
_COUNT_CUM = _cumulative(w for _, w in IDS_PER_PERSON)
#: Birth years 1925-2024, weighted as a hospital's patients are (more old than young).
YEARS = list(range(1925, 2025))
_YEAR_CUM = _cumulative((3.0 if y < 1945 else 4.0 if y < 1960 else 3.0 if y < 1980 else 2.0) for y in YEARS)


def _pick(rng: random.Random, cumulative: list[float]) -> int:
    return bisect.bisect_right(cumulative, rng.random() * cumulative[-1])


@dataclass(frozen=True)
class Person:
    """What a person is, whatever source feeds it: indexes into FAMILIES and GIVEN[gender]."""

    number: int
    family: int
    given: int
    gender: str
    birth: str                  # YYYYMMDD
    prefecture: int
    city: int
    street: str
    postal: str
    phone: str
    sources: tuple[str, ...]    # DOMAIN first
    old_form: tuple[bool, ...]  # per source: the family name in its old form (hospital B only)


@dataclass(frozen=True)
class Patient:
    """Patient number `number` (the feed order): one id of a person."""

    number: int
    person: Person
    source: str

    @property
    def extension(self) -> str:
        return f"{self.number:07d}"

    @property
    def identifier(self) -> Identifier:
        return Identifier(self.source, self.extension)


class Corpus:
    """`patients` patient records (ids) of about patients / 1.6 persons. `birth_dates` (for
    the equality check of the loader) draws every birth date from that many days only, so that
    namesakes born the same day are frequent and the demographic linking rule has work."""

    def __init__(self, patients: int, seed: int = 20261208, birth_dates: int | None = None):
        self.patients = patients
        self.seed = seed
        self.birth_dates = birth_dates
        # Person p's first patient number: the ids per person come from the person's own
        # generator, so this table is the only sequential step (0.6 s per million).
        starts, n, p = [], 0, 0
        while n < patients:
            starts.append(n)
            n += self._count(p)
            p += 1
        self._starts = starts

    @property
    def persons(self) -> int:
        return len(self._starts)

    def _rng(self, person: int) -> random.Random:
        return random.Random(self.seed * 1_000_003 + person)

    def _count(self, person: int) -> int:
        return IDS_PER_PERSON[_pick(self._rng(person), _COUNT_CUM)][0]

    def person(self, p: int) -> Person:
        rng = self._rng(p)
        count = IDS_PER_PERSON[_pick(rng, _COUNT_CUM)][0]  # the same draw as _count
        gender = "M" if rng.random() < 0.49 else "F"
        family = _pick(rng, _FAMILY_CUM)
        given = _pick(rng, _GIVEN_CUM[gender])
        if self.birth_dates:
            day = rng.randrange(self.birth_dates)
            birth = f"{1950 + day // 300}{1 + day // 28 % 10:02d}{1 + day % 28:02d}"
        else:
            birth = f"{YEARS[_pick(rng, _YEAR_CUM)]}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        prefecture = _pick(rng, _PREF_CUM)
        city = 0 if rng.random() < 0.6 else 1
        street = f"{TOWNS[rng.randrange(len(TOWNS))]}{rng.randint(1, 9)}丁目{rng.randint(1, 30)}-{rng.randint(1, 20)}"
        postal = f"{PREFECTURE_LIST[prefecture].postal}-{rng.randrange(10_000):04d}"
        phone = f"tel:0{rng.randint(3, 99)}-{rng.randint(100, 999)}-{rng.randrange(10_000):04d}"
        extra = [s for s, _ in EXTRA_SOURCES]
        weights = [w for _, w in EXTRA_SOURCES]
        sources = [DOMAIN]
        while len(sources) < count:
            s = rng.choices(extra, weights)[0]
            if s not in sources:
                sources.append(s)
        old = tuple(s == HOSPITAL_B and bool(FAMILIES[family].old) and rng.random() < OLD_FORM_SHARE for s in sources)
        return Person(p, family, given, gender, birth, prefecture, city, street, postal, phone, tuple(sources), old)

    def patient(self, n: int) -> Patient:
        if not 0 <= n < self.patients:
            raise IndexError(n)
        p = bisect.bisect_right(self._starts, n) - 1
        person = self.person(p)
        return Patient(n, person, person.sources[n - self._starts[p]])

    def patients_of(self, first: int, last: int) -> Iterator[Patient]:
        """Patients first..last-1 (each person made once)."""
        n = first
        while n < min(last, self.patients):
            p = bisect.bisect_right(self._starts, n) - 1
            person = self.person(p)
            for k, source in enumerate(person.sources):
                m = self._starts[p] + k
                if first <= m < min(last, self.patients):
                    yield Patient(m, person, source)
            n = self._starts[p] + len(person.sources)

    def first_patient(self, person: int) -> int:
        return self._starts[person]

    # --- the record a source feeds ------------------------------------------------------

    def record(self, n: int) -> PatientRecord:
        return record_of(self.patient(n), self)

    def records(self, first: int, last: int) -> Iterator[PatientRecord]:
        for patient in self.patients_of(first, last):
            yield record_of(patient, self)

    # --- every patient's searchable facts, for the expected answers ---------------------

    @cached_property
    def table(self) -> list[tuple[int, int, str, str, str, bool]]:
        """Per patient number: (family, given, gender, birth, source, old form). About 3 s
        per million."""
        rows = []
        for patient in self.patients_of(0, self.patients):
            person = patient.person
            k = person.sources.index(patient.source)
            rows.append((person.family, person.given, person.gender, person.birth, patient.source, person.old_form[k]))
        return rows


def record_of(patient: Patient, corpus: Corpus) -> PatientRecord:
    person, source = patient.person, patient.source
    family, given = FAMILIES[person.family], GIVEN[person.gender][person.given]
    old = person.old_form[person.sources.index(source)]
    kanji_family = family.old if old else family.kanji
    names = []
    if source != CLINIC:
        names.append(PersonName(family=(kanji_family,), given=(given.kanji,), uses=("L", "IDE")))
    kana = {DOMAIN: str, HOSPITAL_A: jaconv.z2h, HOSPITAL_B: jaconv.kata2hira, CLINIC: jaconv.z2h}[source]
    names.append(PersonName(family=(kana(family.kana),), given=(kana(given.kana),), uses=("L", "SYL")))
    if source == DOMAIN:
        names.append(PersonName(family=(family.romaji,), given=(given.romaji,), uses=("L", "ABC")))
    prefecture = PREFECTURE_LIST[person.prefecture]
    address = Address(street_lines=(person.street,), city=prefecture.cities[person.city], state=prefecture.name,
                      postal_code=person.postal, country="JP", uses=("H",))
    other = [] if source == DOMAIN else [Identifier(DOMAIN, f"{corpus.first_patient(person.number):07d}")]
    return PatientRecord(ids=[patient.identifier], other_ids=other, names=names, gender=person.gender,
                         birth_time=person.birth, addresses=[address], telecoms=[Telecom(person.phone, ("HP",))],
                         provider_organization=source, sender=SENDERS[source])


# --- the benchmark's queries and their answers -------------------------------------------------------

#: Query kinds: what a PDQ Consumer asks (ITI TF-2b 3.47.4.1.2), built from a random patient.
KINDS = ("family_kanji", "family_kana_halfwidth", "family_alphabetic", "family_given", "name_birth",
         "birth_range_gender", "id", "srch_prefix")


def query_for(kind: str, n: int, corpus: Corpus) -> PdqQuery:
    """A query of `kind` built from patient n's person (n itself among the matches, except
    for kinds its own source's names do not carry)."""
    person = corpus.patient(n).person
    family, given = FAMILIES[person.family], GIVEN[person.gender][person.given]
    if kind == "family_kanji":
        return PdqQuery(names=[PersonName(family=(family.kanji,))])
    if kind == "family_kana_halfwidth":
        return PdqQuery(names=[PersonName(family=(jaconv.z2h(family.kana),))])
    if kind == "family_alphabetic":
        return PdqQuery(names=[PersonName(family=(family.romaji.capitalize(),))])
    if kind == "family_given":
        return PdqQuery(names=[PersonName(family=(family.kanji,), given=(given.kanji,))])
    if kind == "name_birth":
        return PdqQuery(names=[PersonName(family=(family.kanji,), given=(given.kanji,))], birth_time=person.birth)
    if kind == "birth_range_gender":
        month = person.birth[:6]  # bounds at the month's precision: the whole month
        return PdqQuery(birth_time_low=month, birth_time_high=month, gender=person.gender)
    if kind == "id":
        return PdqQuery(ids=[corpus.patient(n).identifier])
    if kind == "srch_prefix":
        return PdqQuery(names=[PersonName(family=(family.kana[:2],), uses=("SRCH",))])
    raise ValueError(kind)


def expected(kind: str, n: int, corpus: Corpus) -> tuple[list[int], list[int]]:
    """The patient numbers query_for(kind, n) must find: (exact matches, prefix-only matches),
    each in feed order (PDQ gives the first, then the second). Computed from what the corpus
    says of each patient (which name, which source writes which script), not from the
    normalised keys."""
    person = corpus.patient(n).person
    family, given = FAMILIES[person.family], GIVEN[person.gender][person.given]
    table = corpus.table
    exact: list[int] = []
    prefix: list[int] = []
    if kind == "id":
        # The patient of the id, then the records that name it among their other ids: a person's
        # hospital and clinic records name its regional id (asOtherIDs), and xds.identity.pdq
        # finds a patient by an id its record names.
        first = corpus.first_patient(person.number)
        if n != first:
            return [n], []
        return list(range(first, min(first + len(person.sources), corpus.patients))), []
    for m, (f, g, gender, birth, source, _old) in enumerate(table):
        fam = FAMILIES[f]
        kanji = source != CLINIC
        if kind == "family_kanji":
            ok = kanji and fam.kanji == family.kanji
        elif kind == "family_kana_halfwidth":
            ok = fam.kana == family.kana
        elif kind == "family_alphabetic":
            ok = source == DOMAIN and fam.romaji == family.romaji
        elif kind in ("family_given", "name_birth"):
            ok = kanji and fam.kanji == family.kanji and GIVEN[gender][g].kanji == given.kanji
            if kind == "name_birth":
                ok = ok and birth == person.birth
        elif kind == "birth_range_gender":
            ok = birth[:6] == person.birth[:6] and gender == person.gender
        elif kind == "srch_prefix":
            # The prefix query's kana matches the syllabic names (every source has one).
            if fam.kana == family.kana[:2]:
                exact.append(m)
            elif fam.kana.startswith(family.kana[:2]):
                prefix.append(m)
            continue
        else:
            raise ValueError(kind)
        if ok:
            exact.append(m)
    return exact, prefix
