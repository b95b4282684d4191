"""Citizens' replies to an invitation SMS (短信评价): what they really send, turned into stars.

The invitation asks for a digit 1–5 (5 = 非常满意) or the level in words. People answer with:

- a digit: ``5``, ``５`` (full-width), ``五``, ``5分``, ``5星``, ``【5】``;
- the level in words, or a common variant: ``非常满意``, ``很满意``, ``满意``, ``还行``, ``一般``, ``差``,
  ``不满意``, ``很不满意``, ``太差了``; traditional characters too (``滿意``);
- a level followed by their own words: ``2 等了两个小时``, ``不满意，等了两个小时``;
- their own words alone: ``窗口的人态度很好`` (kept as text, no level: it is not guessed).

:func:`parse_reply` never raises: every reply gives a :class:`SmsReply`, with ``stars`` set or
``None`` and the reason in words, so the caller can keep what could not be read.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from haochaping.domain.contract import Level

MAX_TEXT = 2000


@dataclass(frozen=True, slots=True)
class SmsReply:
    stars: int | None  # 1–5 (5 best), or None when the reply names no level
    text: str | None  # the citizen's own words after the level (or the whole reply), if any
    reason: str | None  # why no level was read; None when stars is set

    @property
    def level(self) -> Level | None:
        return None if self.stars is None else Level(self.stars)


# Longest first, so 非常不满意 is not read as 不满意 or 满意. Variants seen in SMS replies: 很/特别/十分/
# 太 for 非常, 不太满意 for 不满意, 一般/还行/还可以/凑合 for 基本满意, 好/很好 for 满意, 差/太差 for 差评.
_WORDS: tuple[tuple[str, int], ...] = tuple(
    sorted(
        {
            "非常不满意": 1,
            "很不满意": 1,
            "特别不满意": 1,
            "十分不满意": 1,
            "极不满意": 1,
            "太不满意": 1,
            "非常差": 1,
            "很差": 1,
            "太差": 1,
            "极差": 1,
            "差评": 2,
            "不满意": 2,
            "不太满意": 2,
            "不大满意": 2,
            "差": 2,
            "基本满意": 3,
            "比较满意": 4,
            "还算满意": 3,
            "一般": 3,
            "还行": 3,
            "还可以": 3,
            "凑合": 3,
            "满意": 4,
            "好评": 5,
            "很好": 5,
            "非常好": 5,
            "非常满意": 5,
            "很满意": 5,
            "特别满意": 5,
            "十分满意": 5,
            "超级满意": 5,
            "太满意": 5,
            "差不多": 3,
            "不错": 4,
            "挺好": 4,
            "挺满意": 4,
            "很不错": 5,
        }.items(),
        key=lambda item: -len(item[0]),
    )
)
_CHINESE_DIGITS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}
# Traditional forms of the characters the level words use (replies from Hong Kong / Taiwan phones).
_TRADITIONAL = str.maketrans({"滿": "满", "極": "极", "還": "还", "湊": "凑", "評": "评", "較": "较"})
# Brackets, quotes and punctuation that wrap or follow a level: 【5】, "5", 5。
_WRAPPERS = "【】[]()（）<>《》「」『』\"'“”‘’"
_SEPARATORS = " \t\r\n,.;:!?，。；：！？、~～-—…·/"
# A digit and an optional unit: 5, 5分, 5星. A Chinese numeral only with a unit or alone (五星, 五), so
# that 一般 or 两个小时 are not read as a level.
_DIGIT = re.compile(r"^([1-5])\s*(?:分|星|颗星|星级)?(?![0-9])")
_CHINESE_DIGIT = re.compile(r"^([一二两三四五])\s*(?:分|星|颗星|星级|(?=[\s,.;:!?，。；：！？、]|$))")
_NOT_A_LEVEL_DIGIT = re.compile(r"^[0-9]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _fold(raw: str) -> str:
    # NFKC turns full-width digits and letters (５, Ａ) into ASCII and full-width spaces into spaces.
    text = unicodedata.normalize("NFKC", raw)
    text = _CONTROL.sub("", text).translate(_TRADITIONAL)
    return text.strip()


def _strip_leading(text: str) -> str:
    return text.lstrip(_SEPARATORS + _WRAPPERS)


def _rest(text: str) -> str | None:
    rest = text.strip(_SEPARATORS + _WRAPPERS + " ").strip()
    return rest[:MAX_TEXT] or None


def parse_reply(raw: str) -> SmsReply:
    """Read the level and the citizen's words from one SMS reply."""
    text = _fold(raw)
    if not text:
        return SmsReply(None, None, "the reply is empty")
    body = _strip_leading(text)

    digit = _DIGIT.match(body)
    if digit:
        return SmsReply(int(digit.group(1)), _rest(body[digit.end() :]), None)
    if _NOT_A_LEVEL_DIGIT.match(body):
        number = re.match(r"^[0-9]+", body)
        assert number is not None
        return SmsReply(
            None,
            _rest(text),
            f"the reply starts with {number.group(0)!r}, not a level: reply 1–5 (5 = 非常满意, 1 = 非常不满意)",
        )

    for word, stars in _WORDS:
        if body.startswith(word):
            return SmsReply(stars, _rest(body[len(word) :]), None)

    numeral = _CHINESE_DIGIT.match(body)
    if numeral:
        return SmsReply(_CHINESE_DIGITS[numeral.group(1)], _rest(body[numeral.end() :]), None)

    return SmsReply(
        None,
        _rest(text),
        "no level found at the start of the reply: expected 1–5 or one of 非常满意, 满意, 基本满意, 不满意, 非常不满意",
    )
